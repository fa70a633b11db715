"""`uniqa score` bounds its memory by decoded pixels, not by file count (docs/reliability.md, "Memory")."""

from __future__ import annotations

import csv
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pixel_tracking import DecodedPixels

from modeling_uniqa.image_processing_uniqa import UniQAImageProcessor, map_in_order
from modeling_uniqa.tools import batch_scoring, cli

SIZES = [(120, 100), (100, 100), (150, 90), (90, 130), (110, 110), (100, 120)] * 2  # 9,000 to 13,500 pixels
BUDGET = 30_000  # pixels: two or three of these images


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """Twelve small noise PNGs of different sizes and one broken file, in scoring order."""
    folder = tmp_path_factory.mktemp("budget")
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate(SIZES):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths.insert(5, str(folder / "broken.png"))
    return paths


def score(paths: list[str], output: Path, budget: float, monkeypatch: pytest.MonkeyPatch) -> str:
    """`uniqa score` (the bundled model) with a pixel budget -> the CSV it writes."""
    monkeypatch.setattr(batch_scoring, "MAX_PIXELS_IN_FLIGHT", budget, raising=False)
    argv = ["score", *paths, "--output", str(output), "--batch-size", "8", "--num-workers", "2", "--quiet"]
    assert cli.main(argv) == 2  # the broken file
    return output.read_text()


def assert_same_rows(rows: str, expected: str) -> None:
    """Same rows in the same order with the same errors; scores within the 6 written decimals (other chunks put
    other crops in a forward pass, which may move fp32 results by ~1e-7)."""
    parsed, wanted = (list(csv.DictReader(io.StringIO(text))) for text in (rows, expected))
    assert [(r["path"], r["error"], r["run"]) for r in parsed] == [(r["path"], r["error"], r["run"]) for r in wanted]
    for row, want in zip(parsed, wanted, strict=True):
        assert (row["score"] == want["score"] == "") or abs(float(row["score"]) - float(want["score"])) <= 1.5e-6


def test_decoded_pixels_in_flight_and_chunks_stay_within_the_budget(photos, tmp_path, monkeypatch):
    expected = score(photos, tmp_path / "unbounded.csv", float("inf"), monkeypatch)
    counter = DecodedPixels(monkeypatch, (UniQAImageProcessor, "load_image"), cli)
    rows = score(photos, tmp_path / "bounded.csv", BUDGET, monkeypatch)
    assert_same_rows(rows, expected)
    assert [len(chunk) for chunk in counter.chunks] and all(sum(chunk) <= BUDGET for chunk in counter.chunks)
    assert sum(map(len, counter.chunks)) == len(SIZES)  # every readable image scored once
    assert counter.peak <= 2 * BUDGET  # the chunk being scored + the images decoded ahead


def test_an_image_over_the_budget_is_scored_on_its_own(photos, tmp_path, monkeypatch):
    expected = score(photos, tmp_path / "unbounded.csv", float("inf"), monkeypatch)
    counter = DecodedPixels(monkeypatch, (UniQAImageProcessor, "load_image"), cli)
    assert_same_rows(score(photos, tmp_path / "bounded.csv", 1, monkeypatch), expected)
    assert [len(chunk) for chunk in counter.chunks if chunk] == [1] * len(SIZES)  # the broken file: a chunk of none
    assert counter.peak <= max(w * h for w, h in SIZES) * 2


def test_map_in_order_keeps_weights_in_flight_within_the_budget():
    weights = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]  # 9 is over the budget: it is in flight alone
    submitted: list[int] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, function, item):
            submitted.append(item)
            return super().submit(function, item)

    results = []
    with Recording(3) as pool:
        for i in map_in_order(pool, lambda i: i, range(len(weights)), 8, weights.__getitem__, 8):
            in_flight = submitted[len(results) :]  # submitted, not yet yielded (this one included)
            assert sum(weights[j] for j in in_flight) <= 8 or in_flight == [i]
            results.append(i)
    assert results == list(range(len(weights)))
