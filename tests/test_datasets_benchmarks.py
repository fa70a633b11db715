"""Benchmark builders on fake copies of each dataset's on-disk layout (and on real LIVEC)."""

from __future__ import annotations

import logging
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets_scripts import (  # noqa: E402
    BUILDERS,
    MissingFilesError,
    PyIQAMetaInfo,
    get_builder,
    get_spec,
    load_benchmark,
)
from datasets_scripts.base import random_split  # noqa: E402
from datasets_scripts.fakes import make_fake_benchmark  # noqa: E402

SHARED_LIVEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "livec_jpg"


def _prepared(name: str, data_dir: Path, cache: Path, **config):
    builder = get_builder(name, str(data_dir), cache_dir=str(cache), **config)
    builder.download_and_prepare()
    return builder


def _table(builder) -> pd.DataFrame:
    """All splits as one frame (images not decoded), with a ``split`` column."""
    frames = []
    for split in builder.info.splits:
        ds = builder.as_dataset(split)
        cols = [c for c in ds.column_names if c not in ("image", "reference")]
        df = ds.select_columns(cols).to_pandas()
        df["split"] = split
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_builder_reads_its_fake_layout(name: str, tmp_path: Path) -> None:
    fake = make_fake_benchmark(name, tmp_path / "data")
    builder = _prepared(name, fake.data_dir, tmp_path / "cache")
    spec = get_spec(name)
    df = _table(builder)

    # every present labelled image is a row, once; missing ones are reported
    assert len(df) == len(fake.mos)
    assert sorted(df["image_id"]) == sorted(fake.mos)
    assert sorted(builder.last_report.missing) == sorted(fake.missing)

    # MOS parsed on the original scale, normalised to [0, 1] higher-is-better
    got = dict(zip(df["image_id"], df["mos"], strict=False))
    for key, mos in fake.mos.items():
        assert got[key] == pytest.approx(mos, rel=1e-5, abs=1e-5), key
    np.testing.assert_allclose(df["mos_normalized"], spec.normalize(df["mos"].to_numpy()), atol=1e-6)
    assert df["mos_normalized"].between(0, 1).all()
    order = np.argsort(df["mos"].to_numpy())
    norm = df["mos_normalized"].to_numpy()[order]
    assert (np.diff(norm) >= -1e-6).all() if spec.higher_is_better else (np.diff(norm) <= 1e-6).all()
    for key, std in fake.mos_std.items():
        assert df.set_index("image_id").loc[key, "mos_std"] == pytest.approx(std, rel=1e-5)

    # splits: the official one where the layout has it, else a seeded 70/10/20 by group
    split_of = dict(zip(df["image_id"], df["split"], strict=False))
    if fake.official:
        for key, split in fake.official.items():
            assert split_of[key] == split, key
        assert {split_of[k] for k in fake.mos if k not in fake.official} <= {"train", "validation"}
    else:
        if fake.group:  # e.g. ECIQAD: grouped by source frame
            groups = df["image_id"].map(fake.group)
        else:
            groups = df["reference_id"] if spec.full_reference else df["image_id"]
        per_group = df.assign(g=groups).groupby("g")["split"].nunique()
        assert (per_group == 1).all(), "a group (reference image, source frame) straddles two splits"
        n = groups.nunique()
        counts = df.assign(g=groups).drop_duplicates("g")["split"].value_counts()
        assert counts.get("test", 0) == max(1, round(0.2 * n))
        assert counts.get("validation", 0) == max(1, round(0.1 * n))

    # rows decode: images (and references) open
    first = builder.as_dataset(df["split"].iloc[0])[0]
    assert first["image"].size == (8, 8)
    if spec.full_reference:
        assert first["reference"].size == (8, 8)
        assert first["reference_id"]


def test_livec_drops_training_images_and_reports_missing(tmp_path: Path, caplog) -> None:
    fake = make_fake_benchmark("livec", tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        builder = _prepared("livec", fake.data_dir, tmp_path / "cache")
    ids = set(_table(builder)["image_id"])
    assert not any(Path(i).name.startswith("t") for i in ids)
    assert len(fake.missing) == 2 and "2 of 11 labelled images are missing" in caplog.text


def test_missing_label_file_error_names_expected_files(tmp_path: Path) -> None:
    fake = make_fake_benchmark("koniq10k", tmp_path / "data")
    (fake.data_dir / "koniq10k_scores_and_distributions.csv").unlink()
    (fake.data_dir / "koniq10k_distributions_sets.csv").unlink()
    with pytest.raises(MissingFilesError) as err:
        _prepared("koniq10k", fake.data_dir, tmp_path / "cache")
    msg = str(err.value)
    assert "koniq10k_scores_and_distributions.csv" in msg and "Expected layout" in msg


def test_no_images_at_all_is_an_error(tmp_path: Path) -> None:
    fake = make_fake_benchmark("agiqa3k", tmp_path / "data")
    for p in (fake.data_dir / "AGIQA-3K").iterdir():
        p.unlink()
    with pytest.raises(MissingFilesError, match="none of the 10 labelled images"):
        _prepared("agiqa3k", fake.data_dir, tmp_path / "cache")


def test_load_benchmark_registry_aliases_and_random_split(tmp_path: Path) -> None:
    fake = make_fake_benchmark("koniq10k", tmp_path / "data")
    kw = {"cache_dir": str(tmp_path / "cache"), "split_source": "random", "variant": "512x384"}
    train = load_benchmark("KonIQ-10k", str(fake.data_dir), split="train", **kw)
    everything = load_benchmark("koniq", str(fake.data_dir), split="train+validation+test", **kw)
    assert len(everything) == 10 and len(train) == 7  # 10 images: 2 test, 1 validation
    assert all(i.startswith("512x384/") for i in everything["image_id"])
    other = load_benchmark("koniq10k", str(fake.data_dir), split="train", split_seed=7, **kw)
    assert sorted(train["image_id"]) != sorted(other["image_id"])
    dd = load_benchmark("koniq10k", str(fake.data_dir), split=None, **kw)
    assert {k: len(v) for k, v in dd.items()} == {"train": 7, "validation": 1, "test": 2}


def test_random_split_is_seeded_and_sized() -> None:
    groups = [f"g{i}" for i in range(100)]
    a = random_split(groups, seed=123, val=0.1, test=0.2)
    assert a == random_split(list(reversed(groups)), seed=123, val=0.1, test=0.2)
    assert a != random_split(groups, seed=124, val=0.1, test=0.2)
    assert sorted(pd.Series(a).value_counts().items()) == [("test", 20), ("train", 70), ("validation", 10)]


def test_specs_state_range_and_direction() -> None:
    csiq, kadid = get_spec("csiq"), get_spec("KADID-10k")
    assert not csiq.higher_is_better and csiq.normalize(0.0) == 1.0 and csiq.normalize(1.0) == 0.0
    assert kadid.normalize(3.0) == pytest.approx(0.5) and kadid.normalize(9.0) == 1.0  # clipped
    x = np.linspace(0, 1, 5)
    for name in BUILDERS:
        np.testing.assert_allclose(get_spec(name).normalize(get_spec(name).denormalize(x)), x, atol=1e-9)
    with pytest.raises(KeyError, match="unknown benchmark"):
        get_spec("imagenet")


def test_ava_streams_with_flat_memory(tmp_path: Path) -> None:
    fake = make_fake_benchmark("ava", tmp_path / "data")  # layout + official test list
    from datasets_scripts.fakes import fake_ava

    big = fake_ava(tmp_path / "big", n=4000, image_every=4000)
    stream = load_benchmark("ava", str(big.data_dir), split="train", streaming=True, val_fraction=0.0)
    it = iter(stream)
    for _ in range(200):
        row = next(it)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    n = 200
    for row in it:
        n += 1
        assert len(row["votes"]) == 10 and 1 <= row["mos"] <= 10
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == sum(1 for k in big.mos if k not in big.official)
    assert current - base < 2_000_000, f"memory grew by {current - base} bytes while streaming"
    small = load_benchmark("ava", str(fake.data_dir), split="test", streaming=True)
    assert sorted(r["image_id"] for r in small) == sorted(fake.official)


def test_pyiqa_meta_info_and_split_pickle(tmp_path: Path) -> None:
    fake = make_fake_benchmark("kadid10k", tmp_path / "data")
    rows = pd.read_csv(fake.data_dir / "dmos.csv")
    meta = tmp_path / "meta_info_KADID10kDataset.csv"
    pd.DataFrame({"ref_name": rows["ref_img"], "dist_name": rows["dist_img"], "dmos": rows["dmos"]}).to_csv(
        meta, index=False
    )
    split = tmp_path / "kadid_seed123.pkl"
    idx = list(range(len(rows)))
    with split.open("wb") as fh:
        pickle.dump({1: {"train": idx[:12], "val": idx[12:16], "test": idx[16:]}, 2: {}}, fh)
    builder = PyIQAMetaInfo(
        data_dir=str(fake.data_dir / "images"),
        meta_info_file=str(meta),
        split_file=str(split),
        benchmark="kadid10k",
        cache_dir=str(tmp_path / "cache"),
    )
    builder.download_and_prepare()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
        "train": 12, "validation": 4, "test": 4,
    }  # fmt: skip
    test = builder.as_dataset("test")
    assert test["mos"] == pytest.approx(rows["dmos"].iloc[16:].tolist())
    assert test[0]["reference"].size == (8, 8)

    nr = tmp_path / "meta_info_nr.csv"
    pd.DataFrame(
        {"img_name": rows["dist_img"], "mos": rows["dmos"], "ratio802_seed123_split_01": ["train"] * 15 + ["test"] * 5}
    ).to_csv(nr, index=False)
    nr_builder = PyIQAMetaInfo(
        data_dir=str(fake.data_dir / "images"),
        meta_info_file=str(nr),
        split_column="ratio802_seed123_split_01",
        benchmark="kadid10k",
        cache_dir=str(tmp_path / "cache2"),
    )
    nr_builder.download_and_prepare()
    assert nr_builder.info.splits["train"].num_examples == 15
    assert "reference" not in nr_builder.info.features


@pytest.mark.skipif(
    not (SHARED_LIVEC / "labels.csv").exists(),
    reason=f"the shared partial LIVEC copy is not at {SHARED_LIVEC} (outside the repo)",
)
def test_livec_real_partial_copy(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        builder = _prepared("livec", SHARED_LIVEC, tmp_path / "cache")
    report = builder.last_report
    assert report.labelled == 1162 and report.present == 627 and len(report.missing) == 535
    assert "535 of 1162 labelled images are missing" in caplog.text
    df = _table(builder)
    labels = pd.read_csv(SHARED_LIVEC / "labels.csv")
    expected = dict(zip("ChallengeDB_release/Images/" + labels["image"], labels["mos"], strict=False))
    assert len(df) == 627 and set(df["image_id"]) == set(expected)
    np.testing.assert_allclose(df["mos"], [expected[k] for k in df["image_id"]], rtol=1e-5)
    std = dict(zip("ChallengeDB_release/Images/" + labels["image"], labels["mos_std"], strict=False))
    np.testing.assert_allclose(df["mos_std"], [std[k] for k in df["image_id"]], rtol=1e-5)
    assert builder.as_dataset("test")[0]["image"].size == (500, 500)
