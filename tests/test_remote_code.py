"""A saved model folder loads as Hub remote code in a process that cannot import this package.

Also run by CI under transformers 4.57 (`make test-remote-457`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

LOADER = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling_uniqa"] = None  # any import of the installed package now fails
    from transformers import AutoImageProcessor, AutoModel, pipeline

    model_dir, images = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    names = list(images)
    paths = [images[n] for n in names]
    pixels = processor(paths)["pixel_values"]
    pipe = pipeline("image-quality-assessment", model=model_dir, trust_remote_code=True)
    print(json.dumps({
        "module": type(model).__module__,
        "processor_module": type(processor).__module__,
        "names": names,
        "image_embeds": model.get_image_features(pixels).tolist(),
        "zero_shot_quality_5": model.score(paths, prompt_set="level5").tolist(),
        "zero_shot_quality_20": model.score(paths, prompt_set="ensemble20").tolist(),
        "adapter_score": model.score(paths, adapter="tiny").tolist(),
        "pipeline": pipe(paths[:2], adapter="tiny"),
        "score_map": model.score_map(paths[0], adapter="tiny").scores.tolist(),
    }))
    """
)


def test_remote_code_load_matches_reference(tmp_path, model_dir, model, reference, reference_images):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    images = {name: str(path) for name, path in reference_images.items()}
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(model_dir), json.dumps(images)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["module"].startswith("transformers_modules.")
    assert out["processor_module"].startswith("transformers_modules.")
    for key in ("zero_shot_quality_5", "zero_shot_quality_20", "adapter_score"):
        for name, value in zip(out["names"], out[key], strict=True):
            assert abs(value - reference["images"][name][key]) <= 1e-5, (key, name)
    for name, embeds in zip(out["names"], out["image_embeds"], strict=True):
        expected = reference["images"][name]["image_embeds"]
        assert max(abs(a - b) for a, b in zip(embeds, expected, strict=True)) <= 1e-5, name
    first = out["names"][0]
    assert out["pipeline"][0]["task"] == "quality"
    assert abs(out["pipeline"][0]["score"] - reference["images"][first]["adapter_score"]) <= 1e-5
    expected_map = model.score_map(str(reference_images[first]), adapter="tiny").scores  # quality maps (issue 20)
    assert torch.allclose(torch.tensor(out["score_map"]), expected_map, atol=1e-6)
