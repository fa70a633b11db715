"""Where and how `uniqa score` writes: `--output -`, the format from the extension, no silent overwrite, and CSV
that stays parseable and spreadsheet-safe for any file name, while `--resume` still reads the original paths."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa.tools.batch_scoring import csv_cell, csv_value
from modeling_uniqa.tools.cli import main

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def image(tmp_path) -> str:
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


def _score(*args: str, model_dir: Path) -> int:
    return main(["score", "--model", str(model_dir), "--quiet", *args])


def test_output_dash_writes_to_standard_output(image, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _score(image, "--output", "-", model_dir=model_dir) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,score,task,adapter,prompt_set,error,run" and lines[1].startswith(f"{image},")
    assert not (tmp_path / "-").exists()
    assert _score(image, "--output", "-", "--format", "jsonl", model_dir=model_dir) == 0
    assert json.loads(capsys.readouterr().out)["path"] == image


@pytest.mark.parametrize(
    ("name", "options", "fmt"),
    [
        ("out.csv", [], "csv"),
        ("out.jsonl", [], "jsonl"),
        ("out.json-lines", [], "jsonl"),
        ("OUT.JSONL", [], "jsonl"),
        ("out.txt", [], "csv"),
        ("out.jsonl", ["--format", "csv"], "csv"),
        ("out.csv", ["--format", "jsonl"], "jsonl"),
    ],
)
def test_format_follows_the_extension_unless_given(name, options, fmt, image, model_dir, tmp_path):
    out = tmp_path / name
    assert _score(image, "--output", str(out), *options, model_dir=model_dir) == 0
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        assert text.startswith("path,score,")
    else:
        assert json.loads(text)["path"] == image


def test_an_existing_output_is_not_overwritten_silently(image, model_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    out.write_text("precious\n")
    assert _score(image, "--output", str(out), model_dir=model_dir) == 1
    err = capsys.readouterr().err
    assert err == f"uniqa: --output {out} exists: add --resume to continue it or --overwrite to replace it\n"
    assert out.read_text() == "precious\n"
    assert _score(image, "--output", str(out), "--overwrite", model_dir=model_dir) == 0
    assert out.read_text().startswith("path,score,") and len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit):  # argparse: not allowed with each other
        _score(image, "--output", str(out), "--overwrite", "--resume", model_dir=model_dir)
    assert "not allowed with argument" in capsys.readouterr().err


NASTY_NAMES = [
    "new\nline.png",
    'quo"te, comma.png',
    "=HYPERLINK(1).png",
    "+1.png",
    "-x.png",
    "@SUM(1).png",
    "\ttab.png",
    "\rcr.png",
    "'quoted.png",
    "''two.png",
    os.fsdecode(b"latin1-caf\xe9.png"),  # not UTF-8: a lone surrogate in Python
]


def test_csv_is_parseable_and_spreadsheet_safe_for_any_file_name(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths: the cells start with the names themselves
    rng = np.random.default_rng(1)
    for name in NASTY_NAMES:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(os.fsencode(name), format="PNG")
    inputs = [*NASTY_NAMES, "=missing.png"]  # an error row starts with its path
    out = tmp_path / "scores.csv"
    assert _score("--output", str(out), "--", *inputs, model_dir=model_dir) == 2  # `--`: `-x.png` is an input
    data = out.read_bytes()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))  # always UTF-8, always parseable
    assert len(rows) == 1 + len(inputs) and all(len(row) == 7 for row in rows)
    for row in rows[1:]:
        assert not any(cell.startswith(FORMULA_STARTS) for cell in row), row
    assert rows[3][0] == "'=HYPERLINK(1).png" and rows[9][0] == "''quoted.png" and rows[10][0] == "'''two.png"
    assert rows[11][0] == "latin1-caf\\udce9.png"
    assert rows[-1][5].startswith("'=missing.png: ")
    # reading back for --resume gives the original paths: every input is done, nothing is scored or written again
    capsys.readouterr()
    assert _score("--output", str(out), "--resume", "--", *inputs, model_dir=model_dir) == 2
    assert out.read_bytes() == data


@pytest.mark.parametrize("text", ["", "plain", "=1+1", "-", "'", "''=x", "@a", "\t\r", "a=b", "-0.25"])
def test_csv_cells_read_back_as_written(text):
    assert csv_value(str(csv_cell(text))) == (text or None)
    assert csv_cell(-0.25) == -0.25  # a negative score stays a number
