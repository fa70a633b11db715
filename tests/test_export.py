"""ONNX export: one graph from crops to scores, matching PyTorch within 1e-4, usable without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_uniqa.tools.cli import main

onnxruntime = pytest.importorskip("onnxruntime")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


@pytest.fixture(scope="module")
def adapter_export(model_dir, tmp_path_factory) -> Path:
    from modeling_uniqa.tools.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    sidecar = export_onnx(model_dir, out, adapter="tiny")
    assert sidecar["max_abs_difference"] <= 1e-4
    return out


def crops_of(model, images) -> torch.Tensor:
    return torch.cat([model.image_processor.crop_image(image) for image in images])


def test_onnx_matches_pytorch_for_any_batch(model, adapter_export, reference_images):
    session = onnxruntime.InferenceSession(str(adapter_export), providers=["CPUExecutionProvider"])
    pixels = crops_of(model, list(reference_images.values()))
    with torch.no_grad():
        model.set_multicue_adapter("tiny")
        expected = model(pixels)
        model.set_multicue_adapter(None)
    for batch in (1, 3, len(pixels)):
        for start in range(0, len(pixels), batch):
            scores, probs = session.run(None, {"pixel_values": pixels[start : start + batch].numpy()})
            assert np.abs(scores - expected.scores[start : start + batch].numpy()).max() <= 1e-4
            assert np.abs(probs - expected.level_probs[start : start + batch].numpy()).max() <= 1e-4
    sidecar = json.loads(adapter_export.with_suffix(".json").read_text())
    assert sidecar["adapter"] == "tiny" and sidecar["score_range"] == [0.0, 1.0]
    assert sidecar["crop_size"] == 224 and sidecar["crop_mode"] == "grid"


def test_cli_exports_zero_shot_graph(model, model_dir, reference_images, tmp_path, capsys):
    out = tmp_path / "zero_shot.onnx"
    assert main(["export", "--format", "onnx", str(model_dir), str(out), "--prompt-set", "level5"]) == 0
    assert "wrote" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = crops_of(model, [reference_images["coffee"], reference_images["rocket"]])
    scores, probs = session.run(None, {"pixel_values": pixels.numpy()})
    expected = model(pixels, prompt_embeds=model.prompt_embeds("level5"))
    assert probs.shape == (2, 1, 5)
    assert np.abs(scores - expected.scores.detach().numpy()).max() <= 1e-4
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "x.onnx")]) == 1
    assert "not a model folder" in capsys.readouterr().err


def test_documented_runtime_works_without_torch(model, adapter_export, tmp_path):
    """The docs' onnxruntime + numpy + Pillow snippet, run in a process where `import torch` fails."""
    text = DOCS.read_text()
    snippet = re.search(r"<!-- onnx-without-torch -->\n```python\n(.*?)```", text, re.S).group(1)
    photo = tmp_path / "photo.jpg"
    canvas = np.zeros((300, 420, 3), dtype=np.uint8)
    canvas[:, :, 0] = np.linspace(0, 255, 420, dtype=np.uint8)
    canvas[100:200, 50:300] = (30, 200, 90)
    from PIL import Image

    Image.fromarray(canvas).save(photo, quality=90)
    program = (
        "import sys\nsys.modules['torch'] = None\nsys.modules['transformers'] = None\n"
        f"import os\nos.chdir({str(adapter_export.parent)!r})\n"
        + snippet.replace('"uniqa.json"', f"{adapter_export.with_suffix('.json').name!r}").replace(
            '"uniqa.onnx"', f"{adapter_export.name!r}"
        )
        + f"\nprint(score({str(photo)!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = model.score(photo, adapter="tiny").item()
    assert abs(float(result.stdout.strip().splitlines()[-1]) - expected) <= 1e-4
