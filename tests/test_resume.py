"""Interrupted batch scoring: `uniqa score --output ... --resume` after a real SIGKILL, and crash-safe row writing.

No test depends on timing: the killed process stops itself (SIGSTOP) right after writing its Nth row, the test
waits for that stop with `waitpid(WUNTRACED)` and only then sends SIGKILL.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa.tools.batch_scoring import RowWriter, read_rows
from modeling_uniqa.tools.cli import main

BATCH = 4
STOP_AFTER = 6  # rows: mid-way through the second chunk of BATCH images

# Runs the real CLI; after the STOP_AFTER-th row it stops itself, so the test can SIGKILL it at a known point.
DRIVER = """
import os, signal, sys
from modeling_uniqa.tools import batch_scoring, cli
write, count = batch_scoring.RowWriter.write, [0]
def stopping_write(self, row):
    write(self, row)
    count[0] += 1
    if count[0] == int(os.environ["STOP_AFTER"]):
        os.kill(os.getpid(), signal.SIGSTOP)
batch_scoring.RowWriter.write = stopping_write
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """15 distinct small images, a missing file and a duplicated path: 17 inputs."""
    folder = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(15):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return [*paths[:8], str(folder / "missing.png"), *paths[8:], paths[3]]


def _score_args(inputs: list[str], model_dir: Path, out: Path, fmt: str = "jsonl") -> list[str]:
    return ["score", *inputs, "--model", str(model_dir), "--format", fmt, "--output", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(inputs, model_dir, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("full")
    outputs = {fmt: folder / f"full.{fmt}" for fmt in ("jsonl", "csv")}
    for fmt, out in outputs.items():
        assert main([*_score_args(inputs, model_dir, out, fmt), "--batch-size", str(BATCH), "--quiet"]) == 2
    return outputs


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def _assert_same_results(rows: list[dict], reference: list[dict]) -> None:
    """Every input exactly once (as a multiset of paths) with the same score or error."""
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in reference)
    by_path = {}
    for row in reference:
        by_path[row["path"]] = row
    for row in rows:
        expected = by_path[row["path"]]
        assert (row["error"] is None) == (expected["error"] is None), row["path"]
        if row["score"] is None:
            assert expected["score"] is None
        else:  # batches differ after a resume; scores agree to the 6 written decimals (fp32, grid crops)
            assert float(row["score"]) == pytest.approx(float(expected["score"]), abs=1.5e-6), row["path"]


def test_sigkill_then_resume_gives_every_input_once(inputs, model_dir, uninterrupted, tmp_path):
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "STOP_AFTER": str(STOP_AFTER), "HF_HUB_OFFLINE": "1"}
    args = [*_score_args(inputs, model_dir, out), "--batch-size", str(BATCH), "--quiet"]
    process = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stderr=subprocess.PIPE)
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)  # returns when it stops itself (or dies)
        assert os.WIFSTOPPED(status), f"the scorer exited early: {process.stderr.read().decode()}"
        os.kill(process.pid, signal.SIGKILL)
        _, status = os.waitpid(process.pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        process.returncode = -9  # reaped above; keep Popen from waiting again
        process.stderr.close()
    killed = _jsonl(out)
    assert len(killed) == STOP_AFTER  # whole rows only: what was written before the kill

    # what a power loss or a full disk mid-write could leave: half a row without its newline
    with out.open("ab") as handle:
        handle.write(b'{"path": "/half/a/ro')
    assert main([*args, "--resume"]) == 2  # the missing input is an error row: exit status 2, as uninterrupted
    resumed = _jsonl(out)
    assert resumed[:STOP_AFTER] == killed  # kept as they were
    _assert_same_results(resumed, _jsonl(uninterrupted["jsonl"]))
    assert len(resumed) == len(inputs)

    # resuming a finished run scores nothing and leaves the file unchanged
    before = out.read_bytes()
    assert main([*args, "--resume"]) == 2
    assert out.read_bytes() == before


def test_csv_resume_after_a_crash_mid_row(inputs, model_dir, uninterrupted, tmp_path):
    full = uninterrupted["csv"].read_bytes()
    lines = full.split(b"\n")
    out = tmp_path / "out.csv"
    out.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][: len(lines[4]) // 2])  # header, 3 rows, half a row
    assert main([*_score_args(inputs, model_dir, out, "csv"), "--resume", "--quiet"]) == 2
    rows = list(csv.DictReader(out.open(newline="")))
    reference = list(csv.DictReader(uninterrupted["csv"].open(newline="")))
    assert len(rows) == len(inputs)
    _assert_same_results(
        [{**r, "score": r["score"] or None, "error": r["error"] or None} for r in rows],
        [{**r, "score": r["score"] or None, "error": r["error"] or None} for r in reference],
    )


def test_resume_without_an_output_file_scores_everything(inputs, model_dir, uninterrupted, tmp_path):
    out = tmp_path / "new.jsonl"
    assert main([*_score_args(inputs[:3], model_dir, out), "--resume", "--quiet"]) == 0
    assert [row["path"] for row in _jsonl(out)] == inputs[:3]


def test_resume_refuses_other_options_and_formats(inputs, model_dir, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_bytes(uninterrupted["jsonl"].read_bytes())
    assert main([*_score_args(inputs, model_dir, out), "--task", "aesthetics", "--resume", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "resume with the same options, or write to a new --output" in err
    assert main([*_score_args(inputs, model_dir, out, "csv"), "--resume", "--quiet"]) == 1
    assert "not a CSV results file" in capsys.readouterr().err
    out.write_text('{"path": "a.png", "score": 0.5}\nnot json\n{"path": "b.png"}\n')
    assert main([*_score_args(inputs, model_dir, out), "--resume", "--quiet"]) == 1
    assert "out.jsonl, line 2: not a JSON row" in capsys.readouterr().err
    assert main(["score", *inputs[:1], "--model", str(model_dir), "--resume"]) == 1
    assert "--resume needs --output" in capsys.readouterr().err


def test_read_rows_cuts_only_a_partial_last_line(tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_bytes(b'{"path": "a"}\n{"path": "b"}\n{"path": "c", "sco')
    assert [row["path"] for row in read_rows(str(out), "jsonl")] == ["a", "b"]
    assert out.read_bytes() == b'{"path": "a"}\n{"path": "b"}\n'


def test_a_failed_write_leaves_no_partial_row(tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    with RowWriter("jsonl", str(out)) as writer:
        writer.write({"path": "a.png", "score": 0.5})
        real = writer.file

        class FullDisk:  # writes part of the row, then the disk is full
            fileno, close = real.fileno, real.close

            def write(self, data) -> int:
                real.write(bytes(data[:10]))
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(writer, "file", FullDisk())
        with pytest.raises(OSError, match="No space left"):
            writer.write({"path": "b.png", "score": 0.25})
    assert [row["path"] for row in read_rows(str(out), "jsonl")] == ["a.png"]
    assert out.read_bytes().endswith(b"\n")


def test_ctrl_c_says_how_many_rows_were_written_and_exits_130(inputs, model_dir, uninterrupted, tmp_path):
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "STOP_AFTER": str(STOP_AFTER), "HF_HUB_OFFLINE": "1"}
    args = [*_score_args(inputs, model_dir, out), "--batch-size", str(BATCH), "--quiet"]
    process = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stderr=subprocess.PIPE, text=True)
    _, status = os.waitpid(process.pid, os.WUNTRACED)  # stopped itself after its 6th row
    assert os.WIFSTOPPED(status)
    os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends; delivered when it continues
    os.kill(process.pid, signal.SIGCONT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err == (
        f"uniqa: interrupted: {STOP_AFTER} of {len(inputs)} rows are in {out}; "
        "the same command with --resume scores the rest\n"
    )  # one line, no traceback
    assert len(_jsonl(out)) == STOP_AFTER
    assert main([*args, "--resume"]) == 2
    _assert_same_results(_jsonl(out), _jsonl(uninterrupted["jsonl"]))


def test_run_fingerprint_tells_models_and_options_apart(model, tmp_path):
    import torch

    from modeling_uniqa.tools.batch_scoring import run_fingerprint

    base = {"crop_mode": None, "crops": None, "max_side": None, "seed": 0, "dtype": None, "device": None}
    fingerprint = run_fingerprint(model, base)
    assert len(fingerprint) == 12 and fingerprint == run_fingerprint(model, {**base, "device": "cpu", "seed": 1})
    others = [{"crop_mode": "center"}, {"crops": 3}, {"max_side": 512}, {"dtype": "bf16"}]
    assert len({fingerprint, *(run_fingerprint(model, {**base, **other}) for other in others)}) == 1 + len(others)
    random = {**base, "crop_mode": "random"}
    assert run_fingerprint(model, random) != run_fingerprint(model, {**random, "seed": 1})
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # other weights, same config
    try:
        assert run_fingerprint(model, base) != fingerprint
    finally:
        with torch.no_grad():
            next(model.parameters()).sub_(1e-3)


def test_resume_refuses_rows_of_another_run_or_without_one(inputs, model_dir, uninterrupted, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_bytes(uninterrupted["jsonl"].read_bytes())
    for other in (["--crops", "2"], ["--max-side", "100"], ["--crop-mode", "center"]):
        assert main([*_score_args(inputs, model_dir, out), *other, "--resume", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("uniqa: cannot resume: ") and "resume with the same model and options" in err
    assert out.read_bytes() == uninterrupted["jsonl"].read_bytes()
    out.write_text('{"path": "a.png", "score": 0.5, "task": "quality", "adapter": null, "prompt_set": "ensemble20"}\n')
    assert main([*_score_args(inputs, model_dir, out), "--resume", "--quiet"]) == 1
    assert "(none recorded: an older uniqa)" in capsys.readouterr().err
    old_csv = tmp_path / "old.csv"
    old_csv.write_text("path,score,task,adapter,prompt_set,error\na.png,0.5,quality,,ensemble20,\n")
    assert main([*_score_args(inputs, model_dir, old_csv, "csv"), "--resume", "--quiet"]) == 1
    assert "no run column (written by an older `uniqa score` or the Space)" in capsys.readouterr().err
