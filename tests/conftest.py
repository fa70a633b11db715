"""Shared fixtures: the tiny reference checkpoint (copied from ../shared/reference) converted once per session."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SPACE_APP = Path(__file__).resolve().parents[1] / "spaces" / "app.py"


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
def blur_csv(tmp_path_factory, reference_images):
    """A folder with `labels.csv`: 16 images (8 scenes x 2 blur levels, 224x224: one test-time crop each), MOS 0-100
    falling with blur; and `quick.yaml`, fine-tuning settings for a fast run."""
    from PIL import Image, ImageFilter

    folder = tmp_path_factory.mktemp("protocol_data")
    lines = ["image,mos"]
    for name, path in reference_images.items():
        base = Image.open(path).convert("RGB")
        for level in range(2):
            base.filter(ImageFilter.GaussianBlur(4 * level)).save(folder / f"{name}_{level}.png")
            lines.append(f"{name}_{level}.png,{80 - 40 * level + len(name) % 7}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    (folder / "quick.yaml").write_text("num_train_epochs: 2\ncrops_per_image: 1\neval_crops: 1\n")
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny_checkpoint, adapter_checkpoint) -> Path:
    """The tiny reference checkpoint + its adapter (named `tiny`), converted into a model folder."""
    from modeling_uniqa.tools.conversion import convert_checkpoint

    out = tmp_path_factory.mktemp("models") / "uniqa-tiny-reference"
    convert_checkpoint(tiny_checkpoint, out, adapter=adapter_checkpoint, adapter_name="tiny", adapter_dataset="toy")
    return out


@pytest.fixture(scope="session")
def model(model_dir):
    from modeling_uniqa import UniQAModel

    return UniQAModel.from_pretrained(model_dir).eval()


@pytest.fixture(scope="session")
def space_app():
    """`spaces/app.py`, imported as a module (skips without gradio)."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings
    spec = importlib.util.spec_from_file_location("uniqa_space_app", SPACE_APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def space_url(space_app, model):
    """The Space serving the tiny reference model on a free loopback port (one server for the session)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = space_app.build_demo(model, "uniqa-tiny-reference (test model: untrained weights)")
    options = space_app.launch_options()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, **options)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
