"""The `uniqa` command line and the transformers pipeline (installed package, no remote code)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
from transformers import pipeline

from modeling_uniqa import ImageQualityAssessmentPipeline
from modeling_uniqa.tools.batch_scoring import expand_inputs
from modeling_uniqa.tools.cli import main


@pytest.fixture
def image_dir(tmp_path, reference_images):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in ("astronaut", "coffee", "chelsea"):
        shutil.copy(reference_images[name], folder / f"{name}.png")
    shutil.copy(reference_images["rocket"], folder / "nested" / "rocket.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    return folder


def test_expand_inputs(image_dir):
    found = expand_inputs([str(image_dir)])
    assert [p.split("photos/")[1] for p in found] == [
        "astronaut.png",
        "broken.jpg",
        "chelsea.png",
        "coffee.png",
        "nested/rocket.png",
    ]
    assert expand_inputs([str(image_dir / "c*.png")]) == [str(image_dir / "chelsea.png"), str(image_dir / "coffee.png")]
    assert expand_inputs(["missing.png"]) == ["missing.png"]


def test_score_folder_to_csv_with_error_rows(image_dir, model_dir, model, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = main(
        [
            "score",
            str(image_dir),
            str(tmp_path / "missing.png"),
            "--model",
            str(model_dir),
            "--adapter",
            "tiny",
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert code == 2  # some inputs failed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in rows}
    assert "cannot read image" in by_name["broken.jpg"]["error"] and by_name["broken.jpg"]["score"] == ""
    assert "missing.png" in by_name["missing.png"]["error"]
    expected = model.score([image_dir / "astronaut.png"], adapter="tiny").item()
    assert float(by_name["astronaut.png"]["score"]) == pytest.approx(expected, abs=1e-6)
    assert by_name["astronaut.png"]["task"] == "quality" and by_name["astronaut.png"]["adapter"] == "tiny"
    assert "2 of 6 inputs could not be scored" in capsys.readouterr().err


def test_score_jsonl_all_good_exits_zero(image_dir, model_dir, capsys):
    code = main(
        [
            "score",
            str(image_dir / "*.png"),
            "--model",
            str(model_dir),
            "--format",
            "jsonl",
            "--task",
            "aesthetics",
            "--quiet",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert all(r["task"] == "aesthetics" and r["prompt_set"] == "aesthetics20" and r["error"] is None for r in rows)


def test_info(model_dir, capsys):
    assert main(["info", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "ensemble20: quality (default for quality)" in out
    assert "tiny: quality" in out and "bottleneck_dim=32" in out


def test_convert_reports_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert main(["convert", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert "bad.pt: not a loadable weights-only checkpoint" in capsys.readouterr().err


def test_console_script_streams_progress_to_stderr(image_dir, model_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeling_uniqa.tools.cli",
            "score",
            str(image_dir / "astronaut.png"),
            "--model",
            str(model_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "path,score,task,adapter,prompt_set,error"
    assert "1/1" in result.stderr  # tqdm progress bar


def test_pipeline_installed(model_dir, model, reference_images):
    # installed package, no remote code: name the (registered) pipeline class
    pipe = pipeline("image-quality-assessment", model=str(model_dir), pipeline_class=ImageQualityAssessmentPipeline)
    assert type(pipe.model).__module__ == "modeling_uniqa.modeling_uniqa"
    single = pipe(str(reference_images["coffee"]))
    assert single["task"] == "quality"
    assert single["score"] == pytest.approx(model.score(reference_images["coffee"]).item(), abs=1e-6)
    many = pipe([str(reference_images["coffee"]), str(reference_images["rocket"])], task="aesthetics")
    assert [r["task"] for r in many] == ["aesthetics", "aesthetics"]
    with pytest.raises(TypeError, match="unexpected argument"):
        pipe(str(reference_images["coffee"]), temperature=2)
