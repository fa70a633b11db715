"""int8 scoring on the CPU (onnxruntime) and decoding in worker processes (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from modeling_uniqa import UniQAModel, scoring_uniqa
from modeling_uniqa.image_processing_uniqa import ImageReadError
from modeling_uniqa.tools.cli import main
from modeling_uniqa.tools.decoding import decoding_processes

INSTALL_HINT = 'pip install "uniqa[export]"'


@pytest.fixture(scope="module")
def photos(reference_images, tmp_path_factory) -> list[str]:
    """26 image files: the 8 reference images (224x224, one crop each), each also blurred and with noise, and two
    larger images (several crops each)."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for name, path in reference_images.items():
        image = Image.open(path).convert("RGB")
        noisy = np.clip(np.asarray(image) + rng.normal(0, 25, (224, 224, 3)), 0, 255).astype(np.uint8)
        for kind, variant in (("", image), ("_blur", image.filter(ImageFilter.GaussianBlur(2))), ("_noise", noisy)):
            paths.append(folder / f"{name}{kind}.png")
            Image.fromarray(np.asarray(variant)).save(paths[-1])
    wide = Image.new("RGB", (500, 300), (90, 120, 60))
    for i, path in enumerate(list(reference_images.values())[:3]):
        wide.paste(Image.open(path).convert("RGB"), (i * 138, 40))
    wide.save(folder / "wide.jpg", quality=90)
    wide.resize((300, 420)).save(folder / "tall.png")
    return [str(p) for p in [*paths, folder / "wide.jpg", folder / "tall.png"]]


def srcc(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [np.argsort(np.argsort(x.numpy())) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def needs_int8() -> None:
    pytest.importorskip("onnxruntime", reason='int8 needs onnxruntime (pip install "uniqa[export]")')
    if not scoring_uniqa.cpu_int8_support():
        pytest.skip("this CPU has no int8 dot-product instructions (VNNI/AMX)")


# ---------------------------------------------------------------------------------------------------------------
# int8


def test_int8_scores_rank_like_fp32(model, photos):
    needs_int8()
    for adapter in (None, "tiny"):
        fp32 = model.score(photos, adapter=adapter)
        int8 = model.score(photos, adapter=adapter, dtype="int8")
        assert int8.dtype == torch.float32 and model.dtype == torch.float32
        # the tiny test model (random weights, width 64) quantises worse than trained ones: measured SRCC 0.981
        # zero-shot and 0.990 with the adapter, max |delta| 0.008 and 0.009 (the bundled model on real photos:
        # docs/performance.md)
        assert srcc(fp32, int8) >= 0.95
        assert (int8 - fp32).abs().max().item() <= 0.02
        assert not torch.equal(int8, fp32)  # the int8 graph really ran
    tower = model.image_tower("int8")
    assert isinstance(tower, scoring_uniqa.Int8ImageTower) and model.image_tower("int8") is tower  # built once
    details = model.score(photos[:3], dtype="int8", return_details=True, batch_size=2)
    assert torch.allclose(details.level_probs.sum(-1), torch.ones(3, 4), atol=1e-5)


def test_int8_tower_follows_the_weights(model_dir, photos):
    needs_int8()
    fresh = UniQAModel.from_pretrained(model_dir).eval()
    pixels = fresh.image_processor.crop_image(photos[0])
    with torch.no_grad():
        expected = fresh.get_image_features(pixels)
        tower = fresh.image_tower("int8")
        assert torch.allclose(tower(pixels), expected, atol=0.05 * expected.abs().max().item())
        fresh.clip.visual_projection.weight.mul_(2.0)
        rebuilt = fresh.image_tower("int8")
        assert rebuilt is not tower
        assert torch.allclose(rebuilt(pixels), 2 * expected, atol=0.1 * expected.abs().max().item())


def test_int8_unavailable_is_a_clear_error(model_dir, photos, monkeypatch, capsys):
    fresh = UniQAModel.from_pretrained(model_dir).eval()
    with pytest.raises(ValueError, match="on the CPU with onnxruntime, not on meta"):
        fresh.score(photos[:1], dtype="int8", device="meta")
    with pytest.raises(ValueError, match="not with compile=True"):
        fresh.image_tower("int8", compile=True)
    if importlib.util.find_spec("onnxruntime") is not None:  # a CPU without VNNI/AMX
        monkeypatch.setattr(scoring_uniqa, "cpu_int8_support", lambda: False)
        with pytest.raises(RuntimeError, match="needs a CPU with int8 dot-product instructions"):
            fresh.score(photos[:1], dtype="int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # onnxruntime not installed
    with pytest.raises(ImportError, match=re.escape(INSTALL_HINT)):
        fresh.score(photos[:1], dtype="int8")
    assert main(["score", photos[0], "--model", str(model_dir), "--dtype", "int8", "--quiet"]) == 1
    out, err = capsys.readouterr()
    messages = [line for line in err.splitlines() if line.startswith("uniqa")]  # (not the weights' progress bar)
    assert out == "" and len(messages) == 1 and INSTALL_HINT in messages[0]  # one line, before any row


def score_rows(arguments: list[str], output: Path) -> list[dict]:
    assert main(["score", *arguments, "--quiet", "--format", "jsonl", "--output", str(output)]) in (0, 2)
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_cli_int8_scores_and_export(model, model_dir, photos, tmp_path):
    needs_int8()
    import onnx
    import onnxruntime

    common = [*photos[:6], "--model", str(model_dir), "--adapter", "tiny", "--batch-size", "4"]
    fp32 = score_rows(common, tmp_path / "fp32.jsonl")
    int8 = score_rows([*common, "--dtype", "int8"], tmp_path / "int8.jsonl")
    assert [r["path"] for r in int8] == [r["path"] for r in fp32] and all(r["error"] is None for r in int8)
    assert max(abs(a["score"] - b["score"]) for a, b in zip(fp32, int8, strict=True)) <= 0.02

    out = tmp_path / "tiny-int8.onnx"
    assert main(["export", str(model_dir), str(out), "--adapter", "tiny", "--dtype", "int8"]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["dtype"] == "int8" and sidecar["adapter"] == "tiny"
    nodes = onnx.load(str(out)).graph.node
    quantised = [n.name for n in nodes if n.op_type == "MatMulInteger"]
    assert quantised and all(name.startswith("/tower/") for name in quantised)
    assert any(n.op_type == "MatMul" and n.name.startswith("/level_head/adapter/") for n in nodes)  # adapter: fp32
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = torch.cat([model.image_processor.crop_image(path) for path in photos[:6]])  # one crop each
    scores, _ = session.run(None, {"pixel_values": pixels.numpy()})
    expected = model.score(photos[:6], adapter="tiny").numpy()
    assert np.abs(scores - expected).max() <= 0.02 and not np.array_equal(scores, expected)


# ---------------------------------------------------------------------------------------------------------------
# Decoding in worker processes


class KillsTheWorker:
    """An input whose unpickling ends the worker process that receives it (as a crash or the OOM killer would)."""

    def __reduce__(self):
        return os._exit, (1,)


def test_processes_score_exactly_like_threads(model, photos, tmp_path):
    inputs = [*photos, Image.open(photos[0]), np.asarray(Image.open(photos[-1]))]  # paths, a PIL image, an array
    options = {"batch_size": 5, "num_workers": 2, "return_details": True}
    threads = model.score(inputs, **options)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with decoding_processes(2) as pool:
        processes = model.score(inputs, decode=pool, **options)
        assert torch.equal(processes.scores, threads.scores)
        assert torch.equal(processes.level_probs, threads.level_probs)
        random_crops = {"crop_mode": "random", "crops": 4, "seed": 3, "num_workers": 2, "adapter": "tiny"}
        again = model.score(photos[-4:], decode=pool, **random_crops)  # the caller's pool serves several calls
        assert torch.equal(again, model.score(photos[-4:], **random_crops))
        reasons = []
        for decode in ("threads", pool):
            with pytest.raises(ImageReadError, match="broken.jpg: cannot read image") as error:
                model.score([photos[0], str(broken)], decode=decode, num_workers=2)
            reasons.append(str(error.value))
        assert reasons[0] == reasons[1]
    with pytest.raises(ValueError, match="decode must be"):
        model.score(photos[:1], decode="fibers")


def test_a_dead_decoding_process_breaks_only_its_pool(model, photos):
    from concurrent.futures.process import BrokenProcessPool

    with decoding_processes(1) as pool, pytest.raises(BrokenProcessPool):
        model.score([photos[0], KillsTheWorker()], decode=pool, num_workers=1)
    with decoding_processes(1) as pool:  # a new pool works, with the same scores
        assert torch.equal(model.score(photos[:2], decode=pool, num_workers=1), model.score(photos[:2]))
    with pytest.raises(ValueError, match="num_workers >= 1"):
        decoding_processes(0)


def test_cli_decode_processes_writes_the_same_rows(model_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    common = [*photos[-5:], str(broken), "--model", str(model_dir), "--batch-size", "4", "--num-workers", "2"]
    threads = score_rows(common, tmp_path / "threads.jsonl")
    processes = score_rows([*common, "--decode", "processes"], tmp_path / "processes.jsonl")
    assert processes == threads
    assert threads[-1]["error"].startswith(f"{broken}: cannot read image")
