"""Protocols (splits, few-label, zero-shot) and `uniqa evaluate`, on a tiny blur table and the tiny model."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image, ImageFilter

from modeling_uniqa.tools.cli import main as cli_main
from modeling_uniqa.training import protocols
from modeling_uniqa.training.metrics import iqa_metrics


@pytest.fixture(scope="module")
def blur_csv(tmp_path_factory, reference_images):
    """A CSV of 16 images (8 scenes x 2 blur levels, 224x224: one test-time crop each), MOS 0-100 falling with
    blur."""
    folder = tmp_path_factory.mktemp("protocol_data")
    lines = ["image,mos"]
    for name, path in reference_images.items():
        base = Image.open(path).convert("RGB")
        for level in range(2):
            base.filter(ImageFilter.GaussianBlur(4 * level)).save(folder / f"{name}_{level}.png")
            lines.append(f"{name}_{level}.png,{80 - 40 * level + len(name) % 7}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    (folder / "quick.yaml").write_text("epochs: 2\ncrops_per_image: 1\neval_crops: 1\nprogress: false\n")
    return folder


def test_splits_are_seeded_saved_and_reloaded(tmp_path, blur_csv):
    table = protocols.read_mos_table(blur_csv / "labels.csv")
    splits = protocols.make_splits(table, count=3, test_fraction=0.25, seed=5)
    assert splits == protocols.make_splits(list(reversed(table)), count=3, test_fraction=0.25, seed=5)
    assert len({tuple(s["test"]) for s in splits}) == 3
    for split in splits:
        assert len(split["test"]) == 4 and set(split["train"]).isdisjoint(split["test"])
        assert set(split["train"]) | set(split["test"]) == {image for image, _ in table}
    protocols.save_splits(splits, tmp_path / "splits.json", seed=5)
    assert protocols.load_splits(tmp_path / "splits.json") == splits
    # the original framework's pickles: row indices into the meta-info table
    with open(tmp_path / "split.pkl", "wb") as handle:
        pickle.dump({1: {"train": [0, 1, 2], "val": [3], "test": [4, 5]}}, handle)
    (from_pickle,) = protocols.splits_from_pickle(table, tmp_path / "split.pkl", indices=[1])
    assert from_pickle == {"train": [table[i][0] for i in (0, 1, 2, 3)], "test": [table[4][0], table[5][0]]}


def test_split_protocol_end_to_end(tmp_path, model_dir, blur_csv):
    common = ["--model", str(model_dir), "--table", str(blur_csv / "labels.csv"), "--mos_range", "0", "100"]
    out = tmp_path / "results"
    extra = ["--count", "2", "--config", str(blur_csv / "quick.yaml"), "--cache_dir", str(tmp_path / "cache")]
    results = protocols.main(["splits", *common, "--out", str(out), *extra])
    assert len(results["runs"]) == 2
    srcc = [run["test"]["srcc"] for run in results["runs"]]
    assert results["summary"]["median"]["srcc"] == pytest.approx(float(np.median(srcc)))
    assert results["summary"]["mean"]["srcc"] == pytest.approx(float(np.mean(srcc)))
    assert {p.name for p in out.iterdir()} == {"split_definitions.json", "splits.json", "splits.md"}
    assert (out / "splits.md").read_text().count("\n| ") >= 4  # header + 2 runs + median + mean
    saved = json.loads((out / "split_definitions.json").read_text())
    assert saved["seed"] == 123 and len(protocols.load_splits(out / "split_definitions.json")) == 2
    # reusing the saved splits gives the same test metrics (same splits, same seeds, cached features)
    again = protocols.main(
        ["splits", *common, "--out", str(tmp_path / "again"), "--splits", str(out / "split_definitions.json"), *extra]
    )
    assert [r["test"]["srcc"] for r in again["runs"]] == pytest.approx(srcc)


def test_zero_shot_protocol_and_cli_evaluate(tmp_path, model_dir, model, blur_csv):
    table = protocols.read_mos_table(blur_csv / "labels.csv")
    common = ["--model", str(model_dir), "--table", str(blur_csv / "labels.csv"), "--mos_range", "0", "100"]
    results = protocols.main(["zero-shot", *common, "--out", str(tmp_path), "--prompt_sets", "level5", "ensemble20"])
    images = [image for image, _ in table]
    targets = np.array([mos for _, mos in table]) / 100
    expected = iqa_metrics(model.score(images, prompt_set="level5").numpy(), targets)
    assert results["prompt_sets"]["level5"] == pytest.approx(expected)
    assert "ensemble20" in (tmp_path / "zero-shot.md").read_text()

    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_dir), "--adapter", "tiny", "--data", str(blur_csv / "labels.csv")]
    assert cli_main([*args, "--mos-range", "0", "100", "--output", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    expected = iqa_metrics(model.score(images, adapter="tiny").numpy(), targets)
    assert report["metrics"] == pytest.approx(expected)
    assert report["setup"]["adapter"] == "tiny" and len(report["predictions"]) == len(images)
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli_main(["evaluate", "--model", str(model_dir), "--data", "nope", "--output", str(out)]) == 1
