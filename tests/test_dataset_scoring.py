"""Scoring Hugging Face datasets: `uniqa score --dataset` (Parquet output, errors, --min-score, --resume, streaming,
2 processes) and the Python API `add_scores`, on tiny local datasets built here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")

from modeling_uniqa.tools import dataset_scoring  # noqa: E402
from modeling_uniqa.tools.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["astronaut", "chelsea", "broken", "coffee", "rocket"]  # row order; "broken" is not an image
LABELS = [10, 20, 30, 40, 50]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """`load_dataset` caches what it builds under the test's folder, not the user's cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def image_folder(reference_images, tmp_path_factory) -> Path:
    """An ImageFolder dataset: 4 images and a corrupt file, with a `label` column from metadata.csv."""
    folder = tmp_path_factory.mktemp("imagefolder")
    for name in NAMES:
        if name == "broken":
            (folder / "broken.png").write_bytes(b"not an image at all")
        else:
            shutil.copy(reference_images[name], folder / f"{name}.png")
    rows = "\n".join(f"{name}.png,{label}" for name, label in zip(NAMES, LABELS, strict=True))
    (folder / "metadata.csv").write_text(f"file_name,label\n{rows}\n")
    return folder


def image_bytes(image_folder: Path) -> list[bytes]:
    return [(image_folder / f"{name}.png").read_bytes() for name in NAMES]


@pytest.fixture(scope="module")
def parquet_folder(image_folder, tmp_path_factory) -> Path:
    """The same rows as a Parquet dataset with the images' bytes embedded and no file names."""
    folder = tmp_path_factory.mktemp("parquet")
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()})
    cells = [{"bytes": data, "path": None} for data in image_bytes(image_folder)]
    table = datasets.Dataset.from_dict({"id": NAMES, "image": cells}, features=features)
    (folder / "data").mkdir()
    table.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def saved_folder(image_folder, tmp_path_factory) -> Path:
    """The rows as a `save_to_disk` DatasetDict with one split, `test` (file names kept, bytes embedded)."""
    folder = tmp_path_factory.mktemp("saved") / "dataset"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    contents = zip(NAMES, image_bytes(image_folder), strict=True)
    cells = [{"bytes": data, "path": f"{name}.png"} for name, data in contents]
    split = datasets.Dataset.from_dict({"image": cells, "label": LABELS}, features=features)
    datasets.DatasetDict({"test": split}).save_to_disk(str(folder))
    return folder


def score(source: Path, model_dir: Path, out: Path, *extra: str) -> int:
    argv = ["score", "--dataset", str(source), "--model", str(model_dir), "--output", str(out), "--quiet"]
    return main([*argv, "--adapter", "tiny", "--batch-size", "2", *extra])


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_imagefolder_rows_keep_order_and_columns_with_errors_in_place(image_folder, model, model_dir, tmp_path):
    out = tmp_path / "scores.parquet"
    assert score(image_folder, model_dir, out) == 2  # one row could not be scored
    rows = read(out)
    assert [row["label"] for row in rows] == LABELS
    assert list(rows[0]) == ["label", "score", "error"]  # the image column is dropped by default
    expected = model.score([str(image_folder / f"{name}.png") for name in NAMES if name != "broken"], adapter="tiny")
    scored = [row for row in rows if row["error"] is None]
    assert [row["score"] for row in scored] == pytest.approx(expected.tolist(), abs=1e-6)
    broken = rows[NAMES.index("broken")]
    assert broken["score"] is None
    assert broken["error"].startswith(f"{image_folder / 'broken.png'}: cannot read image: not an image")
    assert sorted(os.listdir(tmp_path)) == ["hf-cache", "scores.parquet"]  # the parts were merged and removed


def test_parquet_bytes_keep_images_and_name_the_row_without_a_file(parquet_folder, image_folder, model_dir, tmp_path):
    out = tmp_path / "scores.parquet"
    assert score(parquet_folder, model_dir, out, "--keep-images") == 2
    rows = read(out)
    assert [row["id"] for row in rows] == NAMES
    assert [row["image"]["bytes"] for row in rows] == image_bytes(image_folder)
    assert rows[2]["error"].startswith("row 2: cannot read image:")
    reloaded = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert isinstance(reloaded.features["image"], datasets.Image)  # the features travel in the file
    assert reloaded[0]["image"].size == (224, 224)


def test_save_to_disk_split_min_score_and_streaming(saved_folder, model_dir, tmp_path, capsys):
    full = tmp_path / "full.parquet"
    assert score(saved_folder, model_dir, full, "--split", "test") == 2
    rows = read(full)
    assert [row["label"] for row in rows] == LABELS
    assert rows[2]["error"].startswith("broken.png: cannot read image:")  # the stored file name
    cut = sorted(row["score"] for row in rows if row["score"] is not None)[1]  # keeps 3 of the 4 scores
    kept = tmp_path / "kept.parquet"
    assert score(saved_folder, model_dir, kept, "--split", "test", "--min-score", str(cut)) == 2
    assert read(kept) == [row for row in rows if row["score"] is not None and row["score"] >= cut]
    assert "kept 3 of 5 rows" in capsys.readouterr().err
    streamed = tmp_path / "streamed.parquet"
    assert score(saved_folder, model_dir, streamed, "--split", "test", "--streaming") == 2
    assert read(streamed) == rows
    assert score(saved_folder, model_dir, tmp_path / "x.parquet", "--split", "validation") == 1
    assert "no split 'validation' (its splits: test)" in capsys.readouterr().err


def test_resume_after_a_crash_scores_only_the_missing_rows(image_folder, model_dir, tmp_path, monkeypatch, capsys):
    whole = tmp_path / "whole.parquet"
    assert score(image_folder, model_dir, whole) == 2
    capsys.readouterr()
    monkeypatch.setattr(dataset_scoring, "PART_ROWS", 2)
    write_part = dataset_scoring.write_part

    def crash_after_first_part(folder, tables):
        write_part(folder, tables)
        Path(folder, "part-00000001.parquet.tmp").write_bytes(b"half a part")  # a write cut short
        raise KeyboardInterrupt

    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(dataset_scoring, "write_part", crash_after_first_part)
    assert score(image_folder, model_dir, out) == 130  # Ctrl-C: one line, no traceback
    folder = f"{out}.shard-00000-of-00001.parts"
    assert capsys.readouterr().err == (
        f"uniqa: interrupted: 2 rows are in {folder}; the same command with --resume scores the rest\n"
    )
    assert not out.exists()
    monkeypatch.setattr(dataset_scoring, "write_part", write_part)
    assert score(image_folder, model_dir, out, "--resume", "--crops", "4") == 1  # other options: refused
    assert "scored with other options (crops None, now 4)" in capsys.readouterr().err
    scored_rows = []
    score_cells = dataset_scoring.score_cells
    monkeypatch.setattr(
        dataset_scoring, "score_cells", lambda model, rows, *a: scored_rows.extend(rows) or score_cells(model, rows, *a)
    )
    assert score(image_folder, model_dir, out, "--resume") == 2
    assert scored_rows == [2, 3, 4]  # rows 0-1 were in the part written before the crash
    assert read(out) == read(whole)
    assert score(image_folder, model_dir, out, "--resume") == 2
    assert "is complete (5 rows): nothing to resume" in capsys.readouterr().err
    assert scored_rows == [2, 3, 4]


def test_add_scores_on_a_dataset_and_an_iterable_dataset(saved_folder, model, tmp_path):
    from modeling_uniqa.tools.dataset_scoring import add_scores

    split = datasets.load_from_disk(str(saved_folder))["test"]
    scored = add_scores(split, model, adapter="tiny", batch_size=2)
    assert scored.column_names == ["image", "label", "score", "error"]
    assert scored.features["image"] == datasets.Image()  # still decodes to PIL
    assert scored[0]["image"].size == (224, 224) and scored["label"] == LABELS
    assert scored["score"][2] is None and scored["error"][2].startswith("broken.png: cannot read image:")
    good = scored.filter(lambda score: score is not None and score >= 0.0, input_columns="score")
    good.save_to_disk(str(tmp_path / "good"))
    assert datasets.load_from_disk(str(tmp_path / "good"))["label"] == [10, 20, 40, 50]
    lazy = add_scores(split.to_iterable_dataset(), model, adapter="tiny", batch_size=3)
    streamed = list(lazy.remove_columns("image"))  # iterating the images would decode the broken one
    assert [row["score"] for row in streamed] == pytest.approx(scored["score"], abs=1e-6)
    assert [row["error"] for row in streamed] == scored["error"]
    with pytest.raises(ValueError, match="no column 'picture'"):
        add_scores(split, model, column="picture")
    with pytest.raises(ValueError, match="already has a column 'score'"):
        add_scores(scored, model)


def test_interleave_refuses_parts_that_do_not_fit_a_round_robin_split():
    import pyarrow as pa

    merged = list(dataset_scoring.interleave([[pa.table({"i": [0, 2, 4]})], [pa.table({"i": [1, 3]})]]))
    assert pa.concat_tables(merged)["i"].to_pylist() == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match=r"rows per process \[3, 1\]"):
        list(dataset_scoring.interleave([[pa.table({"i": [0, 2, 4]})], [pa.table({"i": [1]})]]))


def test_missing_datasets_extra_is_named_in_one_line(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasets" else real(name, *a))
    assert main(["score", "--dataset", "some/dataset", "--output", "x.parquet"]) == 3
    assert capsys.readouterr().err.strip() == (
        'uniqa score --dataset needs the [datasets] extra (datasets missing): pip install "uniqa[datasets]"'
    )


@pytest.mark.parametrize("streaming", [False, True], ids=["contiguous", "streaming"])
def test_two_processes_write_what_one_process_writes(saved_folder, model_dir, tmp_path, streaming, capsys):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    extra = ["--split", "test", "--keep-images", *(["--streaming"] if streaming else [])]
    assert score(saved_folder, model_dir, tmp_path / "one.parquet", *extra) == 2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf-cache")
    launch = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
    argv = ["score", "--dataset", str(saved_folder), "--model", str(model_dir), "--adapter", "tiny", "--quiet"]
    argv += ["--output", str(tmp_path / "two.parquet"), "--batch-size", "2", *extra]
    result = subprocess.run(
        [*launch, "-m", "modeling_uniqa.tools.cli", *argv], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (tmp_path / "two.parquet").exists(), result.stderr[-3000:]
    one, two = read(tmp_path / "one.parquet"), read(tmp_path / "two.parquet")
    assert [{**row, "score": None} for row in two] == [{**row, "score": None} for row in one]
    assert [row["score"] for row in two] == pytest.approx([row["score"] for row in one], abs=1e-6, nan_ok=True)
    assert not list(tmp_path.glob("*.shard-*"))  # the processes' parts were merged and removed
