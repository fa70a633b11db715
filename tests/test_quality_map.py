"""Quality maps (`UniQAModel.score_map`, `uniqa map`, the Space's Quality map tab): the map finds the damaged half of
a photo, is deterministic, agrees with `score` on the grid crops, and is drawn at the image's size (through remote
code: tests/test_remote_code.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa.tools.cli import main
from modeling_uniqa.tools.quality_map import COLOUR_STOPS, colourize, pixel_scores, render_quality_map

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "uniqa-tiny"
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def tiny():
    from modeling_uniqa import UniQAModel

    return UniQAModel.from_pretrained(MODEL_DIR).eval()


def two_copies(name: str, distortion: str, damaged: str) -> np.ndarray:
    """A 448x224 image: two copies side by side of the 224x224 centre of examples/<name>.png, the `damaged`
    ("left"/"right") one replaced by the same pixels of examples/<name>_<distortion>.png (blur or noise, level 3)."""
    clean = np.asarray(Image.open(EXAMPLES / f"{name}.png").convert("RGB"))[16:240, 16:240]
    distorted = np.asarray(Image.open(EXAMPLES / f"{name}_{distortion}.png").convert("RGB"))[16:240, 16:240]
    return np.concatenate([distorted, clean] if damaged == "left" else [clean, distorted], axis=1)


@pytest.mark.parametrize("distortion", ["blur", "noise"])
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_the_damaged_half_scores_lower(tiny, name, distortion):
    for damaged in ("left", "right"):
        score_map = tiny.score_map(two_copies(name, distortion, damaged))
        # default geometry: windows of the crop size (112 px), half overlapping, evenly over 448x224
        assert (score_map.window, score_map.stride) == (112, 56)
        assert score_map.lefts == [0, 56, 112, 168, 224, 280, 336] and score_map.tops == [0, 56, 112]
        # columns 0-2 lie in the left copy, 4-6 at the same places of the right copy (column 3 straddles both)
        left, right = score_map.scores[:, :3].mean(), score_map.scores[:, 4:].mean()
        worse, better = (left, right) if damaged == "left" else (right, left)
        assert worse < better - 0.005, (damaged, float(worse), float(better))


def test_map_is_deterministic(tiny):
    image = two_copies("chelsea", "noise", "right")
    first = tiny.score_map(image)
    second = tiny.score_map(image)
    assert torch.equal(first.scores, second.scores) and first.score == second.score
    assert torch.allclose(first.scores, tiny.score_map(image, batch_size=5).scores, atol=1e-6)


@pytest.mark.parametrize(("size", "options"), [((256, 256), {}), ((333, 250), {"adapter": "livec"})])
def test_windows_at_the_grid_crops_average_to_the_score(tiny, size, options):
    image = Image.open(EXAMPLES / "coffee.png").convert("RGB").resize(size, Image.BICUBIC)
    width, height = size
    crop = tiny.image_processor.crop_size
    stride = math.ceil((max(width, height) - crop) / 2)  # 3 positions per axis: the default 9-crop grid
    score_map = tiny.score_map(image, window=crop, stride=stride, **options)
    grid = tiny.image_processor.crop_boxes(image, "grid", 9, 0)
    assert [(left, top) for top in score_map.tops for left in score_map.lefts] == grid
    score = float(tiny.score(image, **options)[0])
    assert abs(float(score_map.scores.mean()) - score) <= 1e-6
    assert abs(score_map.score - score) <= 1e-6
    on_mos = tiny.score_map(image, window=crop, stride=stride, mos_range=(0, 100), **options)
    assert abs(on_mos.score - float(tiny.score(image, mos_range=(0, 100), **options)[0])) <= 1e-4  # float32 at 0-100
    assert abs(float(on_mos.scores.mean()) - on_mos.score) <= 1e-4


def test_geometry_of_windows_and_large_images(tiny):
    image = Image.open(EXAMPLES / "astronaut.png").convert("RGB").resize((2000, 1000), Image.BICUBIC)
    score_map = tiny.score_map(image, max_windows=40)
    rows, cols = score_map.scores.shape
    assert rows * cols <= 40 and (rows, cols) == (len(score_map.tops), len(score_map.lefts))
    width, height = score_map.analysed_size
    assert score_map.image_size == (2000, 1000) and width < 2000 and abs(width / height - 2) < 0.02
    # evenly spread, at most `stride` apart, the first at 0 and the last ending at the edge
    assert score_map.lefts[0] == 0 and score_map.lefts[-1] + score_map.window == width
    assert max(np.diff(score_map.lefts)) <= score_map.stride and max(np.diff(score_map.tops)) <= score_map.stride
    assert score_map.cell_box(0, 0)[:2] == (0.0, 0.0)
    assert score_map.cell_box(rows - 1, cols - 1)[2:] == pytest.approx((2000, 1000))
    low, high = tiny.score_range()
    assert bool(((score_map.scores >= low) & (score_map.scores <= high)).all())
    # a window larger than the image shrinks to its short side; one larger than a crop is resized to it
    small = tiny.score_map(EXAMPLES / "coffee.png", window=1000)
    assert small.window == 256 and small.scores.shape == (1, 1)
    assert tiny.score_map(EXAMPLES / "coffee.png", window=200, stride=56).scores.shape == (2, 2)
    with pytest.raises(ValueError, match="must be >= 1"):
        tiny.score_map(EXAMPLES / "coffee.png", stride=0)


def test_rendering_follows_the_windows(tiny):
    image = two_copies("coffee", "blur", "right")
    score_map = tiny.score_map(image)
    dense = pixel_scores(score_map)
    assert dense.shape == (224, 448)
    assert dense[5, 5] == pytest.approx(float(score_map.scores[0, 0]))  # covered by the first window only
    assert dense[220, 445] == pytest.approx(float(score_map.scores[-1, -1]))
    assert (colourize(np.array([0.0, 1.0])) == COLOUR_STOPS[[0, -1]]).all()
    picture = render_quality_map(image, score_map)
    assert picture.size == (448, 224) and picture.mode == "RGB"
    with pytest.raises(ValueError, match="the map was made from"):
        render_quality_map(np.zeros((100, 100, 3), np.uint8), score_map)


def test_cli_writes_pngs_and_raw_scores(tiny, tmp_path, capsys):
    source = tmp_path / "half.png"
    Image.fromarray(two_copies("chelsea", "blur", "left")).save(source)
    (tmp_path / "notes.txt").write_text("not an image")
    out = tmp_path / "maps"
    args = [str(source), str(tmp_path / "missing.png"), str(tmp_path / "notes.txt"), "--output", str(out)]
    assert main(["map", *args, "--raw", "csv", "--model", str(MODEL_DIR)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"uniqa map: {tmp_path / 'missing.png'}: cannot read image: no such file" in err
    assert any(line.startswith(f"uniqa map: {tmp_path / 'notes.txt'}: ") for line in err)
    with Image.open(out / "half_map.png") as picture:
        assert picture.size == (448, 224) and picture.format == "PNG"
    raw = np.loadtxt(out / "half_map.csv", delimiter=",")
    assert np.allclose(raw, tiny.score_map(source).scores.numpy(), atol=1e-6)

    single = tmp_path / "one.png"
    assert main(["map", str(EXAMPLES / "coffee.png"), "--output", str(single), "--raw", "--model", str(MODEL_DIR)]) == 0
    assert "coffee.png: score " in capsys.readouterr().out
    with Image.open(single) as picture:
        assert picture.size == (256, 256)
    assert np.array_equal(np.load(tmp_path / "one.npy"), tiny.score_map(EXAMPLES / "coffee.png").scores.numpy())
    assert main(["map", str(source), str(single), "--output", str(tmp_path / "x.png")]) == 1
    assert "names one PNG for 2 images" in capsys.readouterr().err


def test_space_tab_returns_the_map(space_app, model, reference_images):
    space = space_app.UniQASpace(model)
    path = str(reference_images["astronaut"])
    picture, summary = space.quality_map(path)
    assert isinstance(picture, Image.Image) and picture.size == Image.open(path).size
    assert f"{float(model.score(path, adapter='tiny')[0]):.4f}" in summary
    with pytest.raises(space_app.gr.Error, match="Upload, paste or pick an image first"):
        space.quality_map(None)


@pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")  # gradio vs pandas 3
def test_space_map_endpoint(space_url, reference_images):
    from gradio_client import Client, handle_file

    path = reference_images["coffee"]
    picture, summary = Client(space_url, verbose=False).predict(handle_file(str(path)), None, api_name="/map")
    with Image.open(picture) as served, Image.open(path) as original:
        assert served.size == original.size
    assert summary.startswith("**Score: ")
