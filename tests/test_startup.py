"""Start-up and process-level behaviour of the `uniqa` command: `--help` and argument errors without torch or
transformers, registration by a bare `import modeling_uniqa`, Ctrl-C while the model loads, file names that are not
UTF-8 on a strict standard output, and model sources that do not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modeling_uniqa.configuration_uniqa import TASKS
from modeling_uniqa.image_processing_uniqa import CROP_MODES
from modeling_uniqa.tools.cli import main, model_code_constant

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("uniqa")  # the console script pip wrote for the package
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def imported_modules(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the `uniqa` console script under `python -X importtime` -> (the run, the top-level modules it imported)."""
    if not SCRIPT.exists():
        pytest.skip(f"the uniqa console script is not installed beside {sys.executable}")
    run = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), *args], env=ENV, capture_output=True, text=True
    )
    lines = [line.split("|")[-1] for line in run.stderr.splitlines() if line.startswith("import time:")]
    return run, {line.strip().split(".")[0] for line in lines[1:]}  # the first line is the header


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--help"], 0),
        (["score", "--help"], 0),
        (["map", "--help"], 0),
        (["score", "a.jpg", "--batch-size", "0"], 2),
        (["score", "a.jpg", "--task", "beauty"], 2),
        (["nonsense"], 2),
    ],
)
def test_help_and_argument_errors_need_neither_torch_nor_transformers(args, status):
    run, modules = imported_modules(args)
    assert run.returncode == status, run.stderr[-2000:]
    assert not modules & {"torch", "transformers", "safetensors", "tokenizers"}, sorted(modules)


def test_model_code_constants_are_read_from_the_model_code():
    assert model_code_constant("configuration_uniqa", "TASKS") == TASKS
    assert model_code_constant("image_processing_uniqa", "CROP_MODES") == CROP_MODES
    with pytest.raises(LookupError, match="defines no constant NOPE"):
        model_code_constant("configuration_uniqa", "NOPE")


def test_a_bare_import_still_registers_uniqa_with_transformers(model_dir):
    code = (
        "import modeling_uniqa\n"
        "from transformers import AutoConfig, AutoModel\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert 'image-quality-assessment' in PIPELINE_REGISTRY.get_supported_tasks()\n"
        f"model = AutoModel.from_pretrained({str(model_dir)!r})\n"
        "print(type(AutoConfig.for_model('uniqa')).__name__, type(model).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["UniQAConfig", "UniQAModel"]


# Runs the real CLI; the model's loading sends this process SIGINT, as Ctrl-C in a terminal would.
INTERRUPTED_LOAD = """
import os, signal, sys
from modeling_uniqa.modeling_uniqa import UniQAModel
from modeling_uniqa.tools import cli
def interrupted_load(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
UniQAModel.from_pretrained = interrupted_load
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["score", "map"])
def test_ctrl_c_while_the_model_loads_is_one_line_and_status_130(command, model_dir, tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 90, dtype=np.uint8)).save(image)
    args = [command, str(image), "--model", str(model_dir), "--output", str(tmp_path / "out")]
    run = subprocess.run([sys.executable, "-c", INTERRUPTED_LOAD, *args], env=ENV, capture_output=True, text=True)
    assert (run.returncode, run.stderr) == (130, "uniqa: interrupted\n")  # no traceback
    assert not (tmp_path / "out").exists()


def test_names_that_are_not_utf8_are_printed_escaped_on_a_strict_stdout(model_dir, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # latin-1 bytes: a lone surrogate in Python
    Image.fromarray(np.full((40, 40, 3), 90, dtype=np.uint8)).save(tmp_path / name)
    env = {**ENV, "PYTHONIOENCODING": "utf-8"}  # what a UTF-8 locale such as en_US.UTF-8 gives: errors="strict"
    args = ["map", str(tmp_path / name), "--model", str(model_dir), "--output", str(tmp_path / "maps")]
    code = "import sys; from modeling_uniqa.tools.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    assert b"caf\\udce9.png: score" in run.stdout
    assert (tmp_path / "maps" / os.fsdecode(b"caf\xe9_map.png")).is_file()


@pytest.mark.parametrize(
    "command", [["info"], ["score", "a.png", "--model"], ["map", "a.png", "--output", "o", "--model"]]
)
def test_a_model_source_that_is_neither_a_folder_nor_a_hub_id_is_one_line(command, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such" / "model")
    assert main([*command, missing]) == 1
    assert capsys.readouterr().err == (f"uniqa: cannot load a model from {missing}: no such folder, and not a Hub id\n")
