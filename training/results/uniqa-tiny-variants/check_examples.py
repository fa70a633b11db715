"""Two checks of `tests/test_default_model.py`, run on any model folder, written as JSON (for comparing variants).

    python training/results/uniqa-tiny-variants/check_examples.py NAME=MODEL_DIR ... > checks.json

Per folder: does each held-out example photo outrank its blurred / noisy / JPEG versions (`examples/`), by how much
(`margins`: original's score minus the version's; entries before 2026-11-26's JPEG work lack them), and
Spearman(level, score) on the test's 3 scikit-image photos at 224 px: mean over distortion types, and JPEG's.
"""

import json
import sys
from pathlib import Path

import skimage.data
import torch
from PIL import Image

from datasets_scripts.synthetic import iter_synthetic
from modeling_uniqa import UniQAModel
from modeling_uniqa.training.pretraining import level_srcc

ROOT = Path(__file__).resolve().parents[3]
HELDOUT = ("astronaut", "chelsea", "coffee")


def check(folder: str) -> dict:
    model = UniQAModel.from_pretrained(folder).eval()
    ranked, margins = {}, {}
    for name in HELDOUT:
        scores = model.score([ROOT / "examples" / f"{name}{s}.png" for s in ("", "_blur", "_noise", "_jpeg")])
        ranked[name] = bool(scores[0] > scores[1:].max())
        margins[name] = {v: float(scores[0] - scores[k]) for k, v in enumerate(("blur", "noise", "jpeg"), 1)}
    photos = []
    for name in HELDOUT:
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = 224 / min(image.size)
        photos.append(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC))
    rows = list(iter_synthetic(photos, reference_ids=list(HELDOUT), seed=5, include_reference=True))
    curves = level_srcc(model, rows)
    return {
        "examples_ranked": ranked,
        "margins": margins,
        "test_photos_level_mean": curves["mean"],
        "test_photos_jpeg": curves["per_type"]["jpeg"],
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({arg.split("=", 1)[0]: check(arg.split("=", 1)[1]) for arg in sys.argv[1:]}, indent=1))
