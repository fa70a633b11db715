"""Protocols (splits, few-label, zero-shot) and `uniqa evaluate`, on a tiny blur table (`blur_csv`) and the tiny
model."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from modeling_uniqa.tools.cli import main as cli_main
from modeling_uniqa.training import protocols
from modeling_uniqa.training.metrics import iqa_metrics


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
    common = ["--model", str(model_dir), "--table", str(blur_csv / "labels.csv"), "--mos-range", "0", "100"]
    out = tmp_path / "results"
    extra = ["--count", "2", "--config", str(blur_csv / "quick.yaml"), "--cache-dir", str(tmp_path / "cache")]
    results = protocols.main(["splits", *common, "--out", str(out), *extra])
    assert len(results["runs"]) == 2
    finetune = results["setup"]["finetune"]  # the config's fields over the recipe's defaults
    assert finetune["training"]["num_train_epochs"] == 2 and finetune["training"]["learning_rate"] == 2e-4
    assert finetune["adapter"]["crops_per_image"] == 1 and finetune["training"]["disable_tqdm"] is True
    assert all(run["best_epoch"] in (1.0, 2.0) for run in results["runs"])
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


def test_few_label_protocol_seeds_and_test_metrics(tmp_path, model_dir, blur_csv):
    common = ["--model", str(model_dir), "--table", str(blur_csv / "labels.csv"), "--mos_range", "0", "100"]
    extra = ["--labels", "5", "8", "--seeds", "1", "2", "--config", str(blur_csv / "quick.yaml")]
    results = protocols.main(["few-label", *common, "--out", str(tmp_path), "--test_fraction", "0.25", *extra])
    assert results["test_images"] == 4
    assert [(r["labels"], r["seed"]) for r in results["runs"]] == [(5, 1), (5, 2), (8, 1), (8, 2)]
    # each run's test metrics are those of its adapter on the 4 held-out images, and seeds change the adapter
    assert results["runs"][0]["test"] != results["runs"][1]["test"]
    for run in results["runs"]:
        assert -1 <= run["test"]["srcc"] <= 1 and run["test"]["rmse"] > 0 and run["best_epoch"] in (1.0, 2.0)
    table = (tmp_path / "few-label.md").read_text()
    assert "| 5 | 2 |" in table and "| 8 | 2 |" in table


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


def test_evaluate_leaves_out_rmse_when_scores_and_mos_have_different_scales(tmp_path, model_dir, blur_csv, capsys):
    args = ["evaluate", "--model", str(model_dir), "--data", str(blur_csv / "labels.csv"), "--prompt-set", "level5"]
    assert cli_main([*args, "--output", str(tmp_path / "raw"), "--no-plot", "--quiet"]) == 0
    captured = capsys.readouterr()
    report = json.loads((tmp_path / "raw" / "report.json").read_text())
    assert set(report["metrics"]) == {"srcc", "krcc", "plcc", "plcc_logistic"} and "rmse:" not in captured.out
    (warning,) = report["warnings"]
    assert warning.startswith("RMSE left out: the scores lie in [0.2, 1] and the MOS in [40, 86]")
    assert warning in captured.err and "SRCC, KRCC and PLCC do not depend on the scales" in warning
    # with the MOS scale, targets are normalised to [0, 1] and RMSE is reported
    assert cli_main([*args, "--mos-range", "0", "100", "--output", str(tmp_path / "scaled"), "--no-plot"]) == 0
    report = json.loads((tmp_path / "scaled" / "report.json").read_text())
    assert "rmse" in report["metrics"] and report["warnings"] == []
