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


def launch(args: list[str], cwd: Path, script: Path | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` 2 CPU processes of `uniqa score ARGS` (or of `script ARGS`)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"]
    program = [str(script)] if script else ["-m", "modeling_uniqa.tools.cli", "score"]
    return subprocess.run([*command, *program, *args], cwd=cwd, env=env, capture_output=True, text=True)


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


# One process of the launch sends itself SIGINT (what Ctrl-C in a terminal sends) right after its 2nd row.
INTERRUPTING_RANK = """
import os, signal, sys
from modeling_uniqa.tools import batch_scoring, cli
write, count = batch_scoring.RowWriter.write, [0]
def interrupting_write(self, row):
    write(self, row)
    count[0] += 1
    if os.environ["RANK"] == "1" and count[0] == 2:
        os.kill(os.getpid(), signal.SIGINT)
batch_scoring.RowWriter.write = interrupting_write
sys.exit(cli.main(["score", *sys.argv[1:]]))
"""


def test_ctrl_c_in_one_process_keeps_the_shards_and_resume_finishes(image_dir, model_dir, tmp_path, capsys):
    common = [str(image_dir), "--model", str(model_dir), "--adapter", "tiny", "--quiet", "--batch-size", "3"]
    assert main(["score", *common, "--output", str(tmp_path / "one.csv")]) == 2
    capsys.readouterr()
    driver = tmp_path / "interrupting_rank.py"
    driver.write_text(INTERRUPTING_RANK)
    out = tmp_path / "two.csv"
    interrupted = launch([*common, "--output", str(out)], tmp_path, script=driver)
    assert interrupted.returncode != 0
    # rank 0 scored its 5 inputs, rank 1 stopped after 2 of its 4: nothing merged, the shards kept
    assert f"uniqa: interrupted: 7 of 9 rows are scored (7 in the shard files beside {out}); " in interrupted.stderr
    # no traceback of ours (the launcher prints its own report of a process that exited with 130)
    assert "KeyboardInterrupt" not in interrupted.stderr and "IndexError" not in interrupted.stderr
    assert not out.exists() and len(list(tmp_path.glob("two.csv.shard-*"))) == 2
    resumed = launch([*common, "--output", str(out), "--resume"], tmp_path)
    assert out.exists(), resumed.stderr[-3000:]
    one, two = (list(csv.DictReader((tmp_path / name).read_text().splitlines())) for name in ("one.csv", "two.csv"))
    assert [row["path"] for row in two] == [row["path"] for row in one]
    for a, b in zip(one, two, strict=True):
        assert a["error"] == b["error"]
        assert (a["score"] == b["score"] == "") or abs(float(a["score"]) - float(b["score"])) <= 1.5e-6
    assert not list(tmp_path.glob("two.csv.shard-*"))
