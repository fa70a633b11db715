"""The `uniqa` command line and the transformers pipeline (installed package, no remote code)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

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


def test_image_extensions_match_in_any_case(image_dir):
    (image_dir / "coffee.png").rename(image_dir / "coffee.PNG")
    (image_dir / "nested" / "rocket.png").rename(image_dir / "nested" / "rocket.Png")
    assert expand_inputs([str(image_dir / "c*.png")]) == [str(image_dir / "chelsea.png"), str(image_dir / "coffee.PNG")]
    assert expand_inputs([str(image_dir / "**" / "r*.png")]) == [str(image_dir / "nested" / "rocket.Png")]
    assert str(image_dir / "coffee.PNG") in expand_inputs([str(image_dir)])
    assert expand_inputs([str(image_dir / "C*.png")]) == [str(image_dir / "C*.png")]  # names stay case-sensitive


def test_dash_reads_inputs_from_stdin_and_urls_are_named(image_dir, model_dir, monkeypatch, capsys):
    listing = io.StringIO(f"{image_dir / 'astronaut.png'}\n\n{image_dir / 'nested'}\r\n")
    expected = [str(image_dir / "astronaut.png"), str(image_dir / "nested" / "rocket.png")]
    assert expand_inputs(["-"], stdin=listing) == expected
    inputs = [str(image_dir / "coffee.png"), "https://example.com/a.jpg", "file:///tmp/a.jpg"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(inputs) + "\n"))
    assert main(["score", "-", "--model", str(model_dir), "--quiet"]) == 2
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [row["path"] for row in rows] == inputs and rows[0]["score"]
    assert rows[1]["error"].endswith("a https:// URL: only local files are read (download the image first)")
    assert rows[2]["error"].endswith("a file:// URL: only local files are read (give the path itself)")
    # several processes would each read their own standard input: refused before any work
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", "-", "--model", str(model_dir), "--output", str(image_dir / "out.csv")]) == 1
    assert "standard input (-) needs a single process" in capsys.readouterr().err


def test_pipeline_without_remote_code_never_prompts(model_dir, reference_images):
    # the documented call, in a process without a terminal: no "run the custom code? [y/N]" question
    code = (
        "import sys, modeling_uniqa\n"
        "from transformers import pipeline\n"
        "pipe = pipeline('image-quality-assessment', model=sys.argv[1],"
        " pipeline_class=modeling_uniqa.ImageQualityAssessmentPipeline)\n"
        "print(pipe(sys.argv[2])['score'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(reference_images["coffee"])],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "custom code" not in result.stdout + result.stderr
    assert 0.2 <= float(result.stdout.split()[-1]) <= 1.0


def test_pipeline_without_a_model_uses_the_bundled_model(reference_images, monkeypatch, tmp_path):
    import modeling_uniqa
    from modeling_uniqa import UniQAModel, bundled_model_path

    pipe = pipeline("image-quality-assessment")
    assert Path(pipe.model.name_or_path) == bundled_model_path()
    expected = UniQAModel.from_pretrained(bundled_model_path()).eval().score(reference_images["coffee"]).item()
    assert pipe(str(reference_images["coffee"]))["score"] == pytest.approx(expected, abs=1e-6)
    # where the bundled model is absent, the error says so
    monkeypatch.setattr(modeling_uniqa, "BUNDLED_MODEL_CANDIDATES", (tmp_path / "nowhere",))
    task = PIPELINE_REGISTRY.supported_tasks["image-quality-assessment"]
    monkeypatch.setitem(task, "default", modeling_uniqa._pipeline_default())
    with pytest.raises(FileNotFoundError, match="uses the bundled model uniqa-tiny, which is not installed"):
        pipeline("image-quality-assessment")


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
    assert "tiny: quality; prompt set level5; bottleneck 32" in out
    assert "trained on toy" in out and "{" not in out  # a readable summary, not the adapter's dict


def test_info_json_is_the_full_record(capsys):
    assert main(["info", "--json"]) == 0  # the bundled model: its adapter has metrics and training settings
    record = json.loads(capsys.readouterr().out)
    adapter = record["adapters"]["livec"]
    assert adapter["metrics"]["srcc"] > 0 and adapter["training"]["train_images"] > 0
    assert record["test_time_crops"]["crop_mode"] == "grid" and "ensemble20" in record["prompt_sets"]
    main(["info"])
    summary = capsys.readouterr().out
    assert f"SRCC {adapter['metrics']['srcc']:.3f}" in summary and "'training'" not in summary


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
    assert result.stdout.splitlines()[0] == "path,score,task,adapter,prompt_set,error,run"
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


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (["export", "model", "out.onnx"], "onnxruntime", "export"),
        (["evaluate", "--data", "t.csv"], "scipy", "datasets"),
        (["finetune", "--help"], "peft", "train"),
        (["pretrain", "--help"], "accelerate", "train"),
    ],
)
def test_a_missing_extra_is_named_in_one_line_before_work_starts(argv, missing, extra, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f'uniqa {argv[0]} needs the [{extra}] extra ({missing} missing): pip install "uniqa[{extra}]"'
    )


def test_version_and_training_commands_are_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("uniqa ")
    for command in ("pretrain", "caption", "purify", "protocols"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: uniqa {command}")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--batch-size", "-3"], "argument --batch-size: must be at least 1, not -3"),
        (["--crops", "0"], "argument --crops: must be at least 1, not 0"),
        (["--max-side", "0"], "argument --max-side: must be at least 1, not 0"),
    ],
)
def test_bad_numbers_are_refused_before_work_starts(options, message, model_dir, reference_images, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(reference_images["coffee"]), "--model", str(model_dir), *options])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and message in captured.err and captured.out == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda:7"], "--device cuda:7: no such CUDA device is available here"),
        (["--device", "quantum"], "--device quantum: not a device"),
        (["--model", "/nonexistent/model"], "uniqa: cannot load a model from /nonexistent/model: "),
        (["--output", "/nonexistent/folder/out.csv"], "the folder /nonexistent/folder does not exist"),
    ],
)
def test_unusable_device_model_or_output_is_one_line(options, message, model_dir, reference_images, capsys):
    argv = ["score", str(reference_images["coffee"]), "--quiet"]
    argv += options if "--model" in options else ["--model", str(model_dir), *options]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and message in captured.err
