"""Shared fixtures: the tiny reference checkpoint (copied from ../shared/reference) converted once per session."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    """`../shared` beside the checkout (absent on a fresh clone elsewhere: tests using it skip)."""
    return SHARED


@pytest.fixture(scope="session")
def reference() -> dict:
    """The original implementation's golden outputs."""
    return json.loads((REFERENCE / "reference_outputs.json").read_text())


@pytest.fixture(scope="session")
def reference_images() -> dict[str, Path]:
    return {path.stem: path for path in sorted((REFERENCE / "images").glob("*.png"))}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """`tiny_uniqa_clip.pt`, decompressed: an OpenAI-format state dict with the released file's layout."""
    path = tmp_path_factory.mktemp("checkpoint") / "tiny_uniqa_clip.pt"
    with gzip.open(REFERENCE / "tiny_uniqa_clip.pt.gz") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="session")
def adapter_checkpoint() -> Path:
    return REFERENCE / "tiny_uniqa_adapter_pyiqa.pth"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_checkpoint, adapter_checkpoint) -> Path:
    """The tiny reference checkpoint + its adapter (named `tiny`), converted into a model folder."""
    from modeling_uniqa.conversion import convert_checkpoint

    out = tmp_path_factory.mktemp("models") / "uniqa-tiny-reference"
    convert_checkpoint(tiny_checkpoint, out, adapter=adapter_checkpoint, adapter_name="tiny", adapter_dataset="toy")
    return out


@pytest.fixture(scope="session")
def model(model_dir):
    from modeling_uniqa import UniQAModel

    return UniQAModel.from_pretrained(model_dir).eval()
