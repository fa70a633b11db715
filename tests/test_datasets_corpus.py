"""The UniQA image-text corpus: JSON -> Dataset, and exports that plain load_dataset reads."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets_scripts import export_imagefolder, export_parquet, load_corpus  # noqa: E402

SAMPLE = Path(__file__).parent / "fixtures" / "datasets" / "uniqa_corpus_sample.json"


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """The committed sample JSON plus generated 16x12 images for all but one entry."""
    root = tmp_path / "images"
    for i, entry in enumerate(json.loads(SAMPLE.read_text())):
        if "missing" in entry["image_path"]:
            continue
        path = root / entry["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 12), (40 * i, 255 - 40 * i, 7)).save(path, format="JPEG")
    return SAMPLE, root


def test_load_corpus_validates_and_reports(corpus, caplog) -> None:
    ds, report = load_corpus(*corpus, return_report=True)
    assert (report.entries, report.kept) == (6, 4)
    assert report.missing_images == ["flive/missing_0001.jpg"]
    assert report.without_captions == ["ava/empty.jpg"]
    assert "skipped 2 of 6 entries" in caplog.text
    assert ds.column_names == ["image", "image_path", "captions"]
    assert ds["image_path"][2] == "flive/AVA__14.jpg"
    assert ds["captions"][1] == ["Beautiful image, warm colours and a clean background."]
    assert [len(c) for c in ds["captions"]] == [2, 1, 1, 2]
    assert ds[3]["image"].size == (16, 12)


def test_load_corpus_rejects_bad_prompt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_path": "a.jpg", "prompt": 3}]))
    with pytest.raises(ValueError, match="entry 0: 'prompt' must be a string or a list"):
        load_corpus(bad, tmp_path)


def _check_loaded(loaded: datasets.Dataset, original: datasets.Dataset) -> None:
    assert len(loaded) == len(original)
    by_caption = {tuple(r["captions"]): r for r in loaded}
    for row in original:
        got = by_caption[tuple(row["captions"])]
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(row["image"]))


def test_imagefolder_export_loads_with_plain_load_dataset(corpus, tmp_path: Path) -> None:
    ds = load_corpus(*corpus)
    out = export_imagefolder(ds, tmp_path / "corpus_if")
    assert "configs:" in (out / "README.md").read_text()
    assert (out / "train" / "flive" / "EE__sub" / "0042.jpg").exists()
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert set(loaded.column_names) == {"image", "captions"}
    _check_loaded(loaded, ds)


def test_parquet_export_is_self_contained(corpus, tmp_path: Path) -> None:
    ds = load_corpus(*corpus)
    expected = [np.asarray(im) for im in ds["image"]]
    out = export_parquet(ds, tmp_path / "corpus_pq", max_rows_per_shard=3)
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    shutil.rmtree(corpus[1])  # images must be embedded, not referenced
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded["captions"] == ds["captions"]
    for got, want in zip(loaded["image"], expected, strict=False):
        np.testing.assert_array_equal(np.asarray(got), want)
