"""The installed user's contract: a wheel built from this checkout, installed into a fresh venv (torch pinned as the
Makefile pins it), used from a folder outside the repository.

- `uniqa --version` prints the version; `uniqa score photo.png` with no `--model` scores with the bundled model,
  which the wheel carries;
- with the base install, a command that needs an extra says which in one line, exits non-zero, no traceback;
- with `[train]`: `uniqa finetune --help` and `uniqa pretrain --help` work.
Slow (a venv and its packages from the registry, ~2-4 minutes), so one test walks the whole contract.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _torch_pin() -> str:
    """The Makefile's `TORCH_PIN ?= torch==X` (the setup every README command uses)."""
    return re.search(r"^TORCH_PIN \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_installs_and_keeps_the_installed_users_contract(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UNIQA_MODEL")}
    env["HF_HUB_OFFLINE"] = "1"
    # a clean checkout: the files git tracks (and untracked ones it does not ignore), nothing built or cached
    checkout = tmp_path / "checkout"
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT, env)
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."]
    built = _run(command, checkout, env)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = tmp_path.glob("uniqa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "modeling_uniqa/bundled/uniqa-tiny/model.safetensors" in names
    assert not any(name.startswith(("training/", "tests/", "models/")) for name in names)  # no generic top-level names

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env).returncode == 0
    python, uniqa = venv / "bin" / "python", venv / "bin" / "uniqa"
    install = _run([str(python), "-m", "pip", "install", "-q", _torch_pin(), str(wheel)], tmp_path, env)
    assert install.returncode == 0, install.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    photo = ROOT / "examples" / "chelsea.png"
    version = _run([str(uniqa), "--version"], outside, env)
    assert version.returncode == 0 and re.fullmatch(r"uniqa \d+\.\d+\.\d+\S*\n", version.stdout), version
    scored = _run([str(uniqa), "score", str(photo), "--quiet"], outside, env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    header, row = scored.stdout.splitlines()[:2]
    assert header.startswith("path,score") and 0.2 <= float(row.split(",")[1]) <= 1.0
    for command, extra in (
        (["evaluate", "--data", str(photo)], "datasets"),
        (["export", "x", "y.onnx"], "export"),
        (["finetune", "--help"], "train"),
    ):
        result = _run([str(uniqa), *command], outside, env)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f'pip install "uniqa[{extra}]"' in lines[0], (command, result.stderr)

    train = _run([str(python), "-m", "pip", "install", "-q", _torch_pin(), f"{wheel}[train]"], tmp_path, env)
    assert train.returncode == 0, train.stderr[-3000:]
    for command in ("finetune", "pretrain"):
        result = _run([str(uniqa), command, "--help"], outside, env)
        assert result.returncode == 0 and "usage: uniqa " + command in result.stdout, result.stderr[-3000:]
