"""`uniqa score --dataset` and `add_scores` bound their memory by decoded pixels, as `uniqa score` does for files
(tests/test_pixel_budget.py): an Arrow batch is scored in chunks within the budget, with the same output."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pixel_tracking import DecodedPixels

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

from modeling_uniqa.tools import batch_scoring, dataset_scoring  # noqa: E402
from modeling_uniqa.tools.cli import main  # noqa: E402

SIZES = [(120, 100), (100, 100), (150, 90), (90, 130), (110, 110), (100, 120)] * 2  # 9,000 to 13,500 pixels
BUDGET = 30_000  # pixels: two or three of these images
BROKEN = 5  # the row whose bytes are not an image
BATCH = 8  # rows per Arrow batch: 13 rows make two


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`load_dataset` caches what it builds under the test's folder, not the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def png_bytes(width: int, height: int, seed: int) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cells() -> list[dict]:
    """Twelve small noise PNGs of different sizes and one cell of broken bytes, as `datasets.Image` stores them."""
    images = [{"bytes": png_bytes(w, h, i), "path": None} for i, (w, h) in enumerate(SIZES)]
    images.insert(BROKEN, {"bytes": b"\x89PNG\r\n\x1a\n not really", "path": None})
    return images


@pytest.fixture(scope="module")
def parquet_folder(cells, tmp_path_factory) -> Path:
    """The cells as a Parquet dataset with an `id` column."""
    folder = tmp_path_factory.mktemp("parquet")
    features = datasets.Features({"id": datasets.Value("int64"), "image": datasets.Image()})
    table = datasets.Dataset.from_dict({"id": list(range(len(cells))), "image": cells}, features=features)
    (folder / "data").mkdir()
    table.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def score(source: Path, model_dir: Path, out: Path, budget: float, monkeypatch: pytest.MonkeyPatch) -> list[list]:
    """`uniqa score --dataset` with a pixel budget -> the rows of each table it wrote to parts (one per Arrow batch)."""
    monkeypatch.setattr(batch_scoring, "MAX_PIXELS_IN_FLIGHT", budget)
    parts: list[list] = []
    write_part = dataset_scoring.write_part

    def recorded_write_part(folder, tables):
        parts.append([table.to_pylist() for table in tables])
        write_part(folder, tables)

    monkeypatch.setattr(dataset_scoring, "write_part", recorded_write_part)
    argv = ["score", "--dataset", str(source), "--model", str(model_dir), "--output", str(out), "--quiet"]
    assert main([*argv, "--adapter", "tiny", "--batch-size", str(BATCH), "--num-workers", "2"]) == 2
    monkeypatch.setattr(dataset_scoring, "write_part", write_part)
    return parts


def assert_same_rows(rows: list[dict], expected: list[dict]) -> None:
    """The same rows in the same order, scores within 1e-6 (`model.score` packs the crops of consecutive images into
    forward passes, so chunking the rows moves float32 roundings; its documented tolerance)."""
    assert [{**row, "score": None} for row in rows] == [{**row, "score": None} for row in expected]
    assert [row["score"] for row in rows] == pytest.approx([row["score"] for row in expected], abs=1e-6)


@pytest.mark.parametrize("budget", [BUDGET, 1], ids=["budget", "one-image-chunks"])
def test_dataset_decoded_pixels_stay_within_the_budget_with_the_same_output(
    parquet_folder, model_dir, tmp_path, monkeypatch, budget
):
    expected_parts = score(parquet_folder, model_dir, tmp_path / "unbounded.parquet", float("inf"), monkeypatch)
    counter = DecodedPixels(monkeypatch, (dataset_scoring, "cell_image"), dataset_scoring)
    parts = score(parquet_folder, model_dir, tmp_path / "bounded.parquet", budget, monkeypatch)
    rows = pq.read_table(tmp_path / "bounded.parquet").to_pylist()
    assert_same_rows(rows, pq.read_table(tmp_path / "unbounded.parquet").to_pylist())
    assert rows[BROKEN]["error"].startswith(f"row {BROKEN}: cannot read image:")
    layout = [[len(table) for table in part] for part in parts]  # rows of each table of each part
    assert layout == [[len(table) for table in part] for part in expected_parts] == [[BATCH, len(rows) - BATCH]]
    assert_same_rows(
        [row for part in parts for table in part for row in table],
        [row for part in expected_parts for table in part for row in table],
    )
    assert sum(map(len, counter.chunks)) == len(SIZES)  # every readable image scored once
    largest = max(w * h for w, h in SIZES)
    assert all(sum(chunk) <= max(budget, largest) for chunk in counter.chunks)
    assert 0 < counter.peak <= 2 * max(budget, largest)  # the chunk being scored + the images decoded ahead


def test_add_scores_keeps_decoded_pixels_within_the_budget(cells, model, monkeypatch):
    features = datasets.Features({"id": datasets.Value("int64"), "image": datasets.Image()})
    dataset = datasets.Dataset.from_dict({"id": list(range(len(cells))), "image": cells}, features=features)
    monkeypatch.setattr(batch_scoring, "MAX_PIXELS_IN_FLIGHT", float("inf"))
    expected = dataset_scoring.add_scores(dataset, model, adapter="tiny", batch_size=BATCH, num_workers=2)
    counter = DecodedPixels(monkeypatch, (dataset_scoring, "cell_image"), dataset_scoring)
    monkeypatch.setattr(batch_scoring, "MAX_PIXELS_IN_FLIGHT", BUDGET)
    scored = dataset_scoring.add_scores(dataset, model, adapter="tiny", batch_size=BATCH, num_workers=2)
    assert_same_rows(scored.remove_columns("image").to_list(), expected.remove_columns("image").to_list())
    assert scored["error"][BROKEN].startswith(f"row {BROKEN}: cannot read image:")
    assert all(sum(chunk) <= BUDGET for chunk in counter.chunks) and sum(map(len, counter.chunks)) == len(SIZES)
    assert 0 < counter.peak <= 2 * BUDGET


def test_cell_pixels_reads_sizes_without_decoding(cells, tmp_path):
    from modeling_uniqa.tools.dataset_scoring import cell_pixels

    path = tmp_path / "image.png"
    path.write_bytes(png_bytes(30, 20, 0))
    assert cell_pixels(cells[0]) == cell_pixels(cells[0]["bytes"]) == 120 * 100
    assert cell_pixels({"bytes": None, "path": str(path)}) == cell_pixels(str(path)) == cell_pixels(path) == 600
    assert cell_pixels(Image.new("RGB", (7, 5))) == cell_pixels(np.zeros((5, 7, 3), np.uint8)) == 35
    unknown = [cells[BROKEN], None, {"bytes": None, "path": None}, "hf://datasets/x/y.png", str(tmp_path / "none")]
    assert [cell_pixels(cell) for cell in unknown] == [0] * len(unknown)
