"""The bundled default model `models/uniqa-tiny`: it loads, scores deterministically, and ranks held-out synthetic
distortions of photos it never trained on below their undistorted versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "uniqa-tiny"
EXAMPLES = ROOT / "examples"
HELDOUT = ("astronaut", "chelsea", "coffee")  # training/configs/uniqa_tiny.yaml: data.skimage_heldout


@pytest.fixture(scope="module")
def tiny():
    from modeling_uniqa import UniQAModel

    assert (MODEL_DIR / "config.json").is_file(), f"{MODEL_DIR} is missing: run `python -m training.build_default`"
    return UniQAModel.from_pretrained(MODEL_DIR).eval()


def test_folder_is_complete_and_small():
    names = {p.name for p in MODEL_DIR.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "README.md"}
    assert expected <= names
    assert {"modeling_uniqa.py", "configuration_uniqa.py", "pipeline_uniqa.py"} <= names  # remote code
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 25 * 2**20
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert "livec" in config["adapters"] and config["adapters"]["livec"]["mos_range"] == [0.0, 100.0]
    assert config["adapters"]["livec"]["metrics"]["srcc"] > 0.3  # measured on the livec validation split


def test_scores_are_deterministic(tiny):
    images = sorted(EXAMPLES.glob("*.png"))
    first = tiny.score(images)
    assert torch.equal(first, tiny.score(images))
    assert torch.allclose(first, tiny.score(images, batch_size=3), atol=1e-6)
    low, high = tiny.score_range()
    assert ((first >= low) & (first <= high)).all()
    adapter = tiny.score(images, adapter="livec", mos_range=(0, 100))
    assert torch.equal(adapter, tiny.score(images, adapter="livec", mos_range=(0, 100)))


def test_aesthetics_is_declared_unavailable(tiny):
    assert "aesthetics" not in tiny.config.task_prompt_sets
    assert "UniQA weights" in tiny.config.unavailable_tasks["aesthetics"]
    with pytest.raises(ValueError, match="aesthetics"):
        tiny.score(EXAMPLES / "astronaut.png", task="aesthetics")


@pytest.mark.parametrize("version", ["blur", "noise", "jpeg"])
def test_sharp_example_outranks_its_degraded_version(tiny, version):
    for name in HELDOUT:
        scores = tiny.score([EXAMPLES / f"{name}.png", EXAMPLES / f"{name}_{version}.png"])
        assert scores[0] > scores[1], (name, scores.tolist())


def test_score_falls_with_distortion_level_on_held_out_photos(tiny):
    """Issue 6: Spearman(level, score) <= -0.7 averaged over the distortion types (all 19, levels 0-5)."""
    import skimage.data
    from PIL import Image

    from datasets_scripts.synthetic import iter_synthetic
    from modeling_uniqa.training.pretraining import level_srcc

    photos = []
    for name in HELDOUT:
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = 224 / min(image.size)  # one or two 224 crops per image keeps the test fast
        photos.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC))
    rows = list(iter_synthetic(photos, reference_ids=list(HELDOUT), seed=5, include_reference=True))
    curves = level_srcc(tiny, rows)  # default scoring
    assert len(curves["per_type"]) == 19
    assert np.mean([v < 0 for v in curves["per_type"].values()]) > 0.5  # most types fall
    assert curves["mean"] <= -0.7, curves["per_type"]


def test_auto_model_with_remote_code_matches(tiny, tmp_path):
    """The folder works as Hub remote code, in a process that cannot import the package."""
    script = (
        "import json, sys\n"
        "sys.modules['modeling_uniqa'] = None\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "print(json.dumps([type(m).__module__, m.score(sys.argv[2]).tolist()]))\n"
    )
    image = str(EXAMPLES / "coffee.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script, str(MODEL_DIR), image],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    module, remote = json.loads(done.stdout.strip().splitlines()[-1])
    assert module.startswith("transformers_modules.")
    assert remote == pytest.approx(tiny.score(image).tolist(), abs=1e-6)


def test_cli_uses_the_bundled_model_without_flags():
    done = subprocess.run(
        [sys.executable, "-m", "modeling_uniqa.tools.cli", "score", str(EXAMPLES / "chelsea.png"), "--format", "jsonl"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "UNIQA_MODEL": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0.2 <= row["score"] <= 1.0


def test_bundled_code_matches_the_package():
    """The remote-code copy in the model folder is the package's current code (refresh it with save_pretrained
    or by copying modeling_uniqa/*_uniqa.py and adapter.py)."""
    package = ROOT / "modeling_uniqa"
    for copy in sorted(MODEL_DIR.glob("*.py")):
        assert copy.read_text() == (package / copy.name).read_text(), f"{copy} is out of date"
