"""ECIQAD and AGIN builders on fake copies of their (partly assumed) layouts; see docs/datasets.md."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets_scripts import AGIN, ECIQAD, MissingFilesError, get_builder, get_spec, load_benchmark  # noqa: E402
from datasets_scripts.fakes import ECIQAD_METHODS, make_fake_benchmark  # noqa: E402


def _all_rows(data_dir: Path, name: str, cache: Path, **config) -> pd.DataFrame:
    dd = load_benchmark(name, str(data_dir), split=None, cache_dir=str(cache), **config)
    frames = [
        ds.select_columns([c for c in ds.column_names if c != "image"]).to_pandas().assign(split=split)
        for split, ds in dd.items()
    ]
    return pd.concat(frames, ignore_index=True).set_index("image_id")


# --- AGIN -----------------------------------------------------------------------------------------
def test_agin_mos_is_naturalness_and_every_dimension_is_a_column(tmp_path: Path) -> None:
    fake = make_fake_benchmark("agin", tmp_path / "data")
    table = pd.read_csv(fake.data_dir / "AGIN_MOS.csv").set_index("filename")
    df = _all_rows(fake.data_dir, "agin", tmp_path / "cache")

    assert sorted(df.index) == sorted(fake.mos)  # only images/, not AGIN_patch_partitioned/
    names = [i.split("/", 1)[1] for i in df.index]
    np.testing.assert_allclose(df["mos"], table.loc[names, "MOS_nat"], rtol=1e-6)
    np.testing.assert_allclose(df["mos_technical"], table.loc[names, "MOS_tech"], rtol=1e-6)
    np.testing.assert_allclose(df["mos_rationality"], table.loc[names, "MOS_rat"], rtol=1e-6)
    for dim in AGIN.TECHNICAL + AGIN.RATIONALITY:
        np.testing.assert_allclose(df[dim], table.loc[names, dim], rtol=1e-6)
    assert df["mos_std"].isna().all()

    spec = get_spec("AGIN")
    assert (spec.mos_min, spec.mos_max, spec.higher_is_better) == (0.0, 5.0, True)
    np.testing.assert_allclose(df["mos_normalized"], df["mos"] / 5.0, atol=1e-6)
    builder = get_builder("agin", str(fake.data_dir), cache_dir=str(tmp_path / "cache"))
    assert "naturalness MOS in [0, 5], higher is better" in builder.info.description


def test_agin_table_found_by_columns_and_optional_dimensions(tmp_path: Path, caplog) -> None:
    fake = make_fake_benchmark("agin", tmp_path / "data")
    table = pd.read_csv(fake.data_dir / "AGIN_MOS.csv")
    (fake.data_dir / "AGIN_MOS.csv").unlink()
    # another file name, a decoy table sorting first, only the three perspective scores, a blank row
    pd.DataFrame({"prompt": ["a cat"], "keyword": ["cat"]}).to_csv(fake.data_dir / "0_prompts.csv", index=False)
    table = table[["filename", "MOS_nat", "MOS_tech", "MOS_rat"]]
    table = pd.concat([table, pd.DataFrame([{"filename": "SDXL_99.png"}])], ignore_index=True)
    table.to_csv(fake.data_dir / "scores.csv", index=False)
    with caplog.at_level(logging.WARNING):
        df = _all_rows(fake.data_dir, "agin", tmp_path / "cache")
    assert "1 rows of" in caplog.text and "scores.csv lack an image name or a label" in caplog.text
    assert len(df) == 10 and df["mos_technical"].notna().all()
    assert df[list(AGIN.TECHNICAL + AGIN.RATIONALITY)].isna().all().all()


def test_agin_image_folder_found_and_patch_copies_skipped(tmp_path: Path) -> None:
    fake = make_fake_benchmark("agin", tmp_path / "data")
    # an unlisted folder name that sorts after AGIN_patch_partitioned/ (which holds the same names)
    shutil.move(fake.data_dir / "images", fake.data_dir / "resized")
    df = _all_rows(fake.data_dir, "agin", tmp_path / "cache")
    assert sorted(df.index) == sorted(k.replace("images/", "resized/") for k in fake.mos)


def test_agin_missing_table_names_the_expected_columns(tmp_path: Path) -> None:
    fake = make_fake_benchmark("agin", tmp_path / "data")
    (fake.data_dir / "AGIN_MOS.csv").unlink()
    with pytest.raises(MissingFilesError) as err:
        AGIN(data_dir=str(fake.data_dir), cache_dir=str(tmp_path / "cache")).download_and_prepare()
    msg = str(err.value)
    assert "label file not found" in msg and "'filename'" in msg and "'MOS_nat'" in msg
    assert "Expected layout" in msg and "MOS_tech" in msg


def test_agin_uses_the_seeded_split(tmp_path: Path) -> None:
    fake = make_fake_benchmark("agin", tmp_path / "data")
    a = _all_rows(fake.data_dir, "agin", tmp_path / "a")["split"]
    b = _all_rows(fake.data_dir, "agin", tmp_path / "b")["split"]
    c = _all_rows(fake.data_dir, "agin", tmp_path / "c", split_seed=5)["split"]
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    assert a.value_counts().to_dict() == {"train": 7, "test": 2, "validation": 1}
    with pytest.raises(ValueError, match="no official split"):
        load_benchmark("agin", str(fake.data_dir), cache_dir=str(tmp_path / "d"), split_source="official")


# --- ECIQAD ---------------------------------------------------------------------------------------
def test_eciqad_split_grouped_by_source_frame(tmp_path: Path, caplog) -> None:
    fake = make_fake_benchmark("eciqad", tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        df = _all_rows(fake.data_dir, "eciqad", tmp_path / "cache")
    assert sorted(df.index) == sorted(fake.mos) and len(fake.missing) == 1
    assert "1 of 18 labelled images are missing" in caplog.text
    np.testing.assert_allclose(df["mos"], [fake.mos[k] for k in df.index], rtol=1e-6)
    np.testing.assert_allclose(df["mos_std"], [fake.mos_std[k] for k in df.index], rtol=1e-6)
    np.testing.assert_allclose(df["mos_normalized"], df["mos"] / 5.0, atol=1e-6)
    assert (df["source_id"] == df.index.map(fake.group)).all()
    assert set(df["enhancement_method"]) == set(ECIQAD_METHODS)
    assert (df.groupby("source_id")["split"].nunique() == 1).all()  # no frame in two splits
    assert df.drop_duplicates("source_id")["split"].value_counts().to_dict() == {
        "train": 4, "test": 1, "validation": 1,
    }  # fmt: skip


def test_eciqad_flat_names_with_source_and_method_columns_xlsx(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    fake = make_fake_benchmark("eciqad", tmp_path / "data")
    table = pd.read_csv(fake.data_dir / "ECIQAD_MOS.csv")
    rows = []
    for name, mos in zip(table["image_name"], table["MOS"], strict=True):
        method, frame = name.split("/")
        flat = f"{frame[:-4]}_{method}.png"
        if (fake.data_dir / "images" / name).exists():
            (root / "Images").mkdir(parents=True, exist_ok=True)
            shutil.copy(fake.data_dir / "images" / name, root / "Images" / flat)
        rows.append({"Image": flat, "Source": frame[:-4], "Method": method, "Score": mos})
    pd.DataFrame(rows).to_excel(root / "labels.xlsx", index=False)
    df = _all_rows(root, "ECIQAD", tmp_path / "cache")
    assert len(df) == 17 and all(i.startswith("Images/") for i in df.index)
    assert df["mos_std"].isna().all()
    assert (df.groupby("source_id")["split"].nunique() == 1).all()
    assert df["source_id"].nunique() == 6
    first = df.loc["Images/001_LIME.png"]
    assert (first["source_id"], first["enhancement_method"]) == ("001", "LIME")


def test_eciqad_labels_off_the_assumed_scale_are_logged(tmp_path: Path, caplog) -> None:
    fake = make_fake_benchmark("eciqad", tmp_path / "data")
    table = pd.read_csv(fake.data_dir / "ECIQAD_MOS.csv")
    table["MOS"] = table["MOS"] * 20  # as if the release were on 0-100
    table.to_csv(fake.data_dir / "ECIQAD_MOS.csv", index=False)
    with caplog.at_level(logging.WARNING):
        df = _all_rows(fake.data_dir, "eciqad", tmp_path / "cache")
    assert "17 labels lie outside the expected MOS range [0, 5]" in caplog.text
    assert df["mos"].max() > 5 and df["mos_normalized"].max() == 1.0  # clipped, not rescaled


def test_eciqad_missing_table_error(tmp_path: Path) -> None:
    fake = make_fake_benchmark("eciqad", tmp_path / "data")
    (fake.data_dir / "ECIQAD_MOS.csv").unlink()
    with pytest.raises(MissingFilesError, match="label file not found") as err:
        ECIQAD(data_dir=str(fake.data_dir), cache_dir=str(tmp_path / "cache")).download_and_prepare()
    assert "Expected layout" in str(err.value) and "'image_name'" in str(err.value)
