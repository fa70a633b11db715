"""Scale-out: `accelerate launch ... -m modeling_uniqa.tools.cli score` with 2 CPU processes = one process."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_uniqa.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_dir(reference_images, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shard_images")
    for name, path in reference_images.items():
        shutil.copy(path, folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def launch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
    return subprocess.run(
        [*command, "-m", "modeling_uniqa.tools.cli", "score", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_two_processes_give_the_same_rows_as_one(image_dir, model_dir, tmp_path, capsys):
    common = [str(image_dir), "--model", str(model_dir), "--adapter", "tiny", "--quiet", "--batch-size", "3"]
    assert main(["score", *common, "--output", str(tmp_path / "one.csv")]) == 2
    capsys.readouterr()
    result = launch([*common, "--output", str(tmp_path / "two.csv")], tmp_path)
    assert (tmp_path / "two.csv").exists(), result.stderr[-3000:]
    one, two = (list(csv.DictReader((tmp_path / name).read_text().splitlines())) for name in ("one.csv", "two.csv"))
    assert len(one) == 9 and [row["path"] for row in two] == [row["path"] for row in one]  # 8 images + 1 error
    for a, b in zip(one, two, strict=True):
        assert (a["error"], a["task"], a["adapter"]) == (b["error"], b["task"], b["adapter"])
        assert (a["score"] == b["score"] == "") or abs(float(a["score"]) - float(b["score"])) <= 1.5e-6  # 6 decimals
    assert sum(1 for row in two if row["error"]) == 1
    assert result.returncode != 0  # one input could not be scored: status 2, reported by the launcher
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv", "two.csv"]  # shards merged and removed


def test_sharded_run_needs_an_output_file(image_dir, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", str(image_dir), "--model", str(model_dir)]) == 1
    assert "needs --output" in capsys.readouterr().err
