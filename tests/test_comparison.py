"""The model-vs-baselines protocol (`uniqa protocols compare`) in miniature, the baselines' features, the record of
which images trained and selected a model (and `uniqa evaluate`'s warning), and the model card's `model-index`."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from modeling_uniqa.tools.cli import main as cli_main
from modeling_uniqa.tools.model_card import front_matter
from modeling_uniqa.training import baselines, protocols
from modeling_uniqa.training.comparison import ADAPTER, BRISQUE, SHARPNESS
from modeling_uniqa.training.metrics import iqa_metrics
from modeling_uniqa.training.provenance import PRETRAINED, image_record, overlap, seen_images

ROOT = Path(__file__).resolve().parents[1]


def read_front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def with_config(model_dir: Path, folder: Path, **changes) -> Path:
    """A copy of a model folder whose config.json has `changes` (merged into `adapters` for that key)."""
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if key == "adapters" else value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Baselines.


def test_sharpness_ranks_a_blurred_image_below_its_original(reference_images):
    for path in reference_images.values():
        image = Image.open(path).convert("RGB")
        sharp = baselines.gradient_energy(image)
        blurred = [baselines.gradient_energy(image.filter(ImageFilter.GaussianBlur(r))) for r in (1, 2, 4)]
        assert sharp > blurred[0] > blurred[1] > blurred[2] > 0


def test_generalised_gaussian_fits_recover_known_shapes():
    rng = np.random.default_rng(0)
    shape, variance = baselines.ggd_fit(rng.normal(0, 2, 200_000))
    assert shape == pytest.approx(2.0, abs=0.05) and variance == pytest.approx(4.0, rel=0.02)
    assert baselines.ggd_fit(rng.laplace(size=200_000))[0] == pytest.approx(1.0, abs=0.05)
    # an asymmetric Gaussian: left scale 0.5, right 1 (each side's mass proportional to its scale)
    magnitude = np.abs(rng.normal(size=300_000))
    left = rng.random(300_000) < 1 / 3
    shape, mean, left_var, right_var = baselines.aggd_fit(np.where(left, -0.5 * magnitude, magnitude))
    assert shape == pytest.approx(2.0, abs=0.05) and left_var == pytest.approx(0.25, rel=0.03)
    assert right_var == pytest.approx(1.0, rel=0.03) and mean == pytest.approx(0.5 * np.sqrt(2 / np.pi), rel=0.05)


def test_brisque_features_are_36_finite_numbers_that_tell_a_photo_from_noise(reference_images):
    image = Image.open(reference_images["astronaut"]).convert("RGB")
    features = baselines.brisque_features(image)
    assert features.shape == (36,) and np.isfinite(features).all()
    assert np.array_equal(features, baselines.brisque_features(reference_images["astronaut"]))  # path or image
    # a photo's neighbouring MSCN coefficients are positively correlated (horizontal and vertical products have a
    # positive mean); white noise has none of that structure, and a far larger MSCN variance
    noise = np.random.default_rng(0).normal(128, 20, (256, 256)).clip(0, 255).astype(np.uint8)
    white = baselines.brisque_features(Image.fromarray(noise))
    assert features[3] > 0 and features[7] > 0 and white[3] < 0 and white[7] < 0
    assert white[1] > 2 * features[1]
    grey = baselines.brisque_features(Image.new("RGB", (64, 48), (120, 120, 120)))  # flat: no structure at all
    assert grey.shape == (36,) and np.isfinite(grey).all()


def test_brisque_regressor_selects_its_hyper_parameters_on_validation():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(80, 36))
    targets = 0.5 + 0.1 * features[:, 0] - 0.05 * features[:, 3] ** 2
    regressor = baselines.BrisqueRegressor().fit(features[:60], targets[:60], features[60:], targets[60:])
    assert set(regressor.selection) == {"C", "gamma", "validation_srcc"}
    assert regressor.selection["C"] in regressor.C_GRID and regressor.selection["gamma"] in regressor.GAMMA_GRID
    assert regressor.selection["validation_srcc"] == pytest.approx(
        iqa_metrics(regressor.predict(features[60:]), targets[60:])["srcc"]
    )
    assert regressor.selection["validation_srcc"] > 0.7
    with pytest.raises(RuntimeError, match="before fit"):
        baselines.BrisqueRegressor().predict(features)


# ----------------------------------------------------------------------------------------------------------------
# Which images trained and selected a model.


def test_finetune_records_the_images_an_adapter_trained_and_was_selected_on(model, blur_csv):
    table = protocols.read_mos_table(blur_csv / "labels.csv", image_root=blur_csv)
    _, args = protocols.read_config(str(blur_csv / "quick.yaml"))
    adapter_args, _ = protocols.read_config(str(blur_csv / "quick.yaml"))
    train, test = protocols.split_table(table, 0.25, 1)
    protocols.train_and_test(model, train, test, "kept", (0, 100), True, args, adapter_args, None, keep_adapter=True)
    try:
        fit, validation = protocols.carve_validation(train, 0.1, args.seed)
        images = model.config.adapters["kept"]["images"]
        assert images == {
            "trained": image_record(p for p, _ in fit),
            "selected": image_record(p for p, _ in validation),
        }
        assert sorted(images["trained"].values()) == sorted(Path(p).name for p, _ in fit)
        seen = seen_images(model.config, "kept")
        assert set(seen) == {"trained adapter 'kept'", "selected adapter 'kept'"}
        found = overlap([p for p, _ in table], seen)
        assert {table[i][0] for i in found["trained adapter 'kept'"]} == {p for p, _ in fit}
        assert overlap([p for p, _ in test], seen) == {}
    finally:
        model.delete_multicue_adapter("kept")


def test_evaluate_warns_when_the_images_trained_or_selected_the_model(tmp_path, model_dir, blur_csv, capsys):
    table = protocols.read_mos_table(blur_csv / "labels.csv", image_root=blur_csv)
    images = [p for p, _ in table]
    records = {"images": {"trained": image_record(images[:5]), "selected": image_record(images[5:7])}}
    folder = with_config(
        model_dir, tmp_path / "model", adapters={"tiny": {**json.loads((model_dir / "config.json").read_text())[
            "adapters"]["tiny"], **records}}, backbone_images={"trained": image_record(images[:3])}
    )  # fmt: skip
    args = ["evaluate", "--model", str(folder), "--data", str(blur_csv / "labels.csv"), "--mos-range", "0", "100"]
    assert cli_main([*args, "--adapter", "tiny", "--output", str(tmp_path / "a"), "--no-plot", "--quiet"]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    warning = report["warnings"][-1]
    assert warning.startswith("7 of the 16 evaluated images trained or selected this model (")
    assert "3 pre-trained the backbone; 5 trained adapter 'tiny'; 2 selected adapter 'tiny'" in warning
    assert warning in capsys.readouterr().err
    assert report["overlap"]["selected adapter 'tiny'"] == [str(p) for p in images[5:7]]
    assert len(report["predictions"]) == 16  # a table the user chose is evaluated whole, with the warning
    # zero-shot: only the backbone's record counts
    assert cli_main([*args, "--output", str(tmp_path / "z"), "--no-plot", "--quiet"]) == 0
    report = json.loads((tmp_path / "z" / "report.json").read_text())
    assert report["warnings"][-1].startswith("3 of the 16 evaluated images") and list(report["overlap"]) == [PRETRAINED]
    # the tiny model records nothing: no warning
    assert cli_main([*args[:2], str(model_dir), *args[3:], "--output", str(tmp_path / "n"), "--no-plot"]) == 0
    assert json.loads((tmp_path / "n" / "report.json").read_text())["warnings"] == []


def test_evaluate_on_a_benchmark_leaves_out_the_images_the_model_saw(tmp_path, model_dir, capsys):
    pytest.importorskip("datasets")
    from datasets_scripts.fakes import make_fake_benchmark
    from modeling_uniqa.training.finetuning import benchmark_table

    fake = make_fake_benchmark("livec", tmp_path / "data")
    split = [p for p, _ in benchmark_table("livec", fake.data_dir, "train")]
    assert len(split) >= 5
    common = ["evaluate", "--data", "livec", "--data-dir", str(fake.data_dir), "--split", "train", "--no-plot"]
    common += ["--quiet", "--mos-range", "0", "100"]
    partly = with_config(model_dir, tmp_path / "partly", backbone_images={"selected": image_record(split[:2])})
    assert cli_main([*common, "--model", str(partly), "--output", str(tmp_path / "p")]) == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["images"] == [str(p) for p in split[2:]] and report["setup"]["left_out_seen"] == 2
    assert f"left out 2 of the {len(split)} images of livec's train split" in capsys.readouterr().err
    # every image of the split selected the model: nothing disjoint is left, and the command says so
    wholly = with_config(model_dir, tmp_path / "wholly", backbone_images={"selected": image_record(split)})
    assert cli_main([*common, "--model", str(wholly), "--output", str(tmp_path / "w")]) == 1
    error = capsys.readouterr().err
    assert f"{len(split)} of the {len(split)} images" in error and "no disjoint test set in this copy" in error
    assert "--include-seen" in error
    assert cli_main([*common, "--model", str(wholly), "--output", str(tmp_path / "i"), "--include-seen"]) == 0
    report = json.loads((tmp_path / "i" / "report.json").read_text())
    assert len(report["images"]) == len(split) and report["warnings"][-1].startswith(f"{len(split)} of the")


def test_bundled_model_records_its_livec_split():
    from modeling_uniqa import bundled_model_path
    from modeling_uniqa.configuration_uniqa import UniQAConfig

    config = UniQAConfig.from_pretrained(bundled_model_path())
    manifest = json.loads((ROOT / "training" / "results" / "uniqa-tiny" / "manifest.json").read_text())
    for record in (config.backbone_images, config.adapters["livec"]["images"]):
        assert sorted(record["trained"].values()) == sorted(manifest["livec_train"])
        assert sorted(record["selected"].values()) == sorted(manifest["livec_validation"])


# ----------------------------------------------------------------------------------------------------------------
# The protocol in miniature.


def test_compare_protocol_in_miniature(tmp_path, model_dir, model, blur_csv):
    table = protocols.read_mos_table(blur_csv / "labels.csv", image_root=blur_csv)
    pretrained = [p for p, mos in table if mos >= 60][:3]  # recorded as pre-training the backbone: no curve photo
    folder = with_config(model_dir, tmp_path / "model", backbone_images={"trained": image_record(pretrained)})
    out = tmp_path / "results"
    argv = ["compare", "--model", str(folder), "--table", str(blur_csv / "labels.csv"), "--mos-range", "0", "100"]
    argv += ["--out", str(out), "--count", "2", "--test-fraction", "0.25", "--curve-photos", "2"]
    argv += ["--distortions", "gaussian_blur", "jpeg", "--config", str(blur_csv / "quick.yaml")]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--prompt-sets", "level5", "ensemble20"]
    results = protocols.main([*argv, "--image-root", str(blur_csv)])
    scorers = ["zero-shot level5", "zero-shot ensemble20", ADAPTER, SHARPNESS, BRISQUE]
    assert list(results["summary"]) == scorers and len(results["runs"]) == 2
    splits = protocols.load_splits(out / "split_definitions.json")
    mos = dict(table)
    median_mos = statistics.median(mos.values())
    for run, split in zip(results["runs"], splits, strict=True):
        test = split["test"]
        targets = np.array([mos[p] for p in test]) / 100
        assert set(run["metrics"]) == set(scorers) and run["test_images"] == len(test) == 4
        # zero-shot from cached features = `model.score`; the sharpness baseline = `gradient_energy`
        expected = iqa_metrics(model.score(test, prompt_set="level5").numpy(), targets)
        assert run["metrics"]["zero-shot level5"] == pytest.approx(expected, abs=1e-5)
        sharp = iqa_metrics([baselines.gradient_energy(p) for p in test], targets)
        assert run["metrics"][SHARPNESS] == pytest.approx(sharp)
        assert run["test_images_seen_by_model"] == {PRETRAINED: len(set(test) & set(pretrained))}
        # curve photos: test photos with MOS >= the median, never one that pre-trained the backbone
        names = {Path(p).name: p for p in test}
        assert run["curve_photos"] and set(run["curve_photos"]) <= set(names)
        assert all(mos[names[n]] >= median_mos and names[n] not in pretrained for n in run["curve_photos"])
        for key in scorers:
            assert set(run["curves"][key]["per_type"]) == {"gaussian_blur", "jpeg"}
            assert -1 <= run["curves"][key]["mean"] <= 1
        assert run["curves"][SHARPNESS]["per_type"]["gaussian_blur"] == -1.0  # blur always lowers gradient energy
        assert set(run["brisque_selection"]) == {"C", "gamma", "validation_srcc"}
    for key in scorers:
        srcc = [run["metrics"][key]["srcc"] for run in results["runs"]]
        assert results["summary"][key]["srcc"]["median"] == pytest.approx(statistics.median(srcc))
        assert results["summary"][key]["srcc"]["min"] == min(srcc) and results["summary"][key]["srcc"]["max"] == max(
            srcc
        )
    assert results["model_weights_sha256"] and set(results["curves"][ADAPTER]) == {
        "gaussian_blur",
        "jpeg",
        "mean over types",
    }
    markdown = (out / "compare.md").read_text()
    assert "| scorer | SRCC | PLCC |" in markdown and "## Distortion curves" in markdown and "**Caveat**" in markdown
    assert json.loads((out / "compare.json").read_text())["summary"] == results["summary"]


# ----------------------------------------------------------------------------------------------------------------
# The model card.


def protocol_fixture(brisque_srcc: float) -> dict:
    """A `compare.json`-shaped record: every scorer's SRCC median 0.3 but BRISQUE's."""

    def spread(median: float) -> dict:
        return {"median": median, "q1": median - 0.01, "q3": median + 0.01, "min": median - 0.02, "max": median + 0.02}

    keys = ["zero-shot ensemble20", "zero-shot level5", ADAPTER, SHARPNESS, BRISQUE]
    summary = {key: {"srcc": spread(brisque_srcc if key == BRISQUE else 0.3), "plcc": spread(0.35)} for key in keys}
    curves = {
        "zero-shot ensemble20": {"gaussian_blur": spread(-0.9), "jpeg": spread(-0.1), "mean over types": spread(-0.5)}
    }
    run = {"test_images": 125, "test_images_seen_by_model": {PRETRAINED: 100}, "curve_photos": ["1.JPG"]}
    return {"summary": summary, "curves": curves, "runs": [run] * 10, "description": "d"}


def test_model_index_parses_back_with_protocol_medians():
    from training.model_card import MODEL_SCORERS, model_index

    protocol = protocol_fixture(0.5)
    (entry,) = read_front_matter(front_matter("other", "x", model_index("uniqa-tiny", protocol)) + "\n")["model-index"]
    assert entry["name"] == "uniqa-tiny"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-quality-assessment" and result["dataset"]["type"] == "livec"
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [
        (metric, protocol["summary"][key][metric]["median"]) for key in MODEL_SCORERS for metric in ("srcc", "plcc")
    ]
    note = "; its backbone was pre-trained on 100 of a split's 125 test images (medians)"
    assert all(m["name"].startswith(f"{m['type'].upper()}, median over 10 random 80/20") for m in result["metrics"])
    assert all(m["name"].endswith(note) for m in result["metrics"])


def test_verdict_says_whether_the_model_beats_the_learned_baseline():
    from training.model_card import verdict

    losing = verdict(protocol_fixture(0.5), None)
    assert losing.startswith("**On real photos this model does not beat a classical baseline.**")
    assert (
        "gaussian_blur" in losing.split("**Good for**")[1].split("**Misses**")[0]
        and "jpeg" in losing.split("**Misses**")[1]
    )
    assert "uniqa convert" in losing and "uniqa finetune" in losing
    assert verdict(protocol_fixture(0.2), None).startswith("**On real photos this model beats")


def test_bundled_card_carries_the_committed_protocol_medians():
    from training.model_card import MODEL_SCORERS

    protocol = json.loads((ROOT / "training" / "results" / "real-protocol" / "compare.json").read_text())
    card = (ROOT / "models" / "uniqa-tiny" / "README.md").read_text()
    (entry,) = read_front_matter(card)["model-index"]
    values = {(m["type"], m["name"]): m["value"] for m in entry["results"][0]["metrics"]}
    assert len(values) == 2 * len(MODEL_SCORERS)
    medians = sorted(round(protocol["summary"][key][m]["median"], 4) for key in MODEL_SCORERS for m in ("srcc", "plcc"))
    assert sorted(values.values()) == medians
    from modeling_uniqa.training.comparison import weights_sha256

    assert protocol["model_weights_sha256"] == weights_sha256(ROOT / "models" / "uniqa-tiny")
    body = card.split("---\n", 2)[2]
    verdict = body.split("\n\n")[1]  # the first lines after the title
    brisque = protocol["summary"][BRISQUE]["srcc"]["median"]
    assert verdict.startswith("**On real photos this model does not beat a classical baseline.**")
    assert f"{brisque:.3f} for BRISQUE + SVR" in verdict and "535" in verdict
    # the selection split's numbers are not reported as accuracy
    assert "livec_jpg validation SRCC" not in body and "Challenge validation SRCC" not in body
