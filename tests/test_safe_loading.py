"""Safe loading: weights from safetensors only, no code from pickles, remote code that stays in its folder.

(The converter's `torch.load(weights_only=True)` refusing a pickle that carries code is tested in
tests/test_conversion.py.)
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_uniqa import UniQAModel

NETWORK_MODULES = {"socket", "ssl", "urllib", "http", "requests", "httpx", "aiohttp", "ftplib", "smtplib", "websockets"}
PROCESS_MODULES = {"subprocess", "multiprocessing", "pty", "ctypes"}
HUB_DOWNLOADS = {"hf_hub_download", "snapshot_download", "cached_file", "urlopen"}
EXPLICIT_HUB_METHODS = {"load_multicue_adapter", "push_multicue_adapter_to_hub"}  # act on a repo id the user passes

# Loads a model folder as remote code with every socket blocked and every file opened recorded (audit hook).
DRIVER = """
import json, os, socket, sys
model_dir, image = sys.argv[1], sys.argv[2]
import numpy, torch, transformers
from transformers import AutoModel
attempts, opened = [], []
def blocked(*args, **kwargs):
    attempts.append(repr(args)[:200])
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = blocked
def audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.path.realpath(os.fsdecode(args[0])))
    elif event.startswith("socket."):
        attempts.append(event)
sys.addaudithook(audit)
model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
score = model.score(image).item()
report = {"module": type(model).__module__, "score": score, "attempts": attempts, "opened": sorted(set(opened))}
print(json.dumps(report))
"""


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _code_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.py"))
    assert {f.name for f in files} >= {"modeling_uniqa.py", "configuration_uniqa.py", "image_processing_uniqa.py"}
    return files


def _imported(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return {node.module.split(".")[0]} | {alias.name for alias in node.names}
    return set()


def test_remote_code_imports_no_network_or_process_modules(model_dir):
    """No network or process module anywhere; the Hub client only inside the explicit Hub methods (a user passes
    them a repo id), which take a `revision` to pin."""
    for file in _code_files(model_dir):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        hub_functions = {}
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef) and any(
                "huggingface_hub" in _imported(n) for n in ast.walk(function)
            ):
                hub_functions[function.name] = [a.arg for a in function.args.args + function.args.kwonlyargs]
        assert set(hub_functions) <= EXPLICIT_HUB_METHODS, (file.name, hub_functions)
        assert all("revision" in arguments for arguments in hub_functions.values()), (file.name, hub_functions)
        for node in ast.walk(tree):
            modules = _imported(node)
            assert not modules & (NETWORK_MODULES | PROCESS_MODULES), (file.name, node.lineno)
            assert "modeling_uniqa" not in modules, f"{file.name}:{node.lineno} imports the package, not its folder"
        for node in tree.body:  # nothing at import time
            assert not _imported(node) & ({"huggingface_hub"} | HUB_DOWNLOADS), (file.name, node.lineno)


def test_remote_code_names_no_absolute_paths(model_dir):
    for file in _code_files(model_dir):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.strip()
                assert not text.startswith(("/", "~/", "\\\\")) and text[1:3] != ":\\", (file.name, node.lineno, text)


def test_remote_code_load_makes_no_network_call_and_reads_only_its_folder(model_dir, model, reference_images, tmp_path):
    hf_home = tmp_path / "hf"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(hf_home)  # the remote-code module cache goes here
    image = reference_images["coffee"]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(model_dir), str(image)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["module"].startswith("transformers_modules.")  # the folder's code ran, not the installed package
    assert report["attempts"] == []
    allowed = [
        os.path.realpath(p)
        for p in (model_dir, hf_home, image, sys.prefix, sys.base_prefix, "/proc", "/sys", "/dev", "/etc/localtime")
    ]
    # (paths that do not exist read nothing: e.g. the path-hook marker of an editable install on sys.path)
    outside = [
        p
        for p in report["opened"]
        if os.path.exists(p) and not any(p == a or p.startswith(a + os.sep) for a in allowed)
    ]
    assert outside == [], f"files read outside the model folder and the Python installation: {outside}"
    assert any(p.startswith(os.path.realpath(model_dir)) for p in report["opened"])  # the recording works
    assert report["score"] == pytest.approx(model.score(image).item(), abs=1e-6)


@pytest.fixture
def pickle_only_folder(model_dir, tmp_path) -> Path:
    """The model folder with its safetensors replaced by a (harmless) pickle `pytorch_model.bin`."""
    folder = tmp_path / "pickled"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").unlink()
    return folder


def test_pickle_weights_carrying_code_are_refused(pickle_only_folder, tmp_path):
    marker = tmp_path / "code-ran"
    with open(pickle_only_folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"clip.logit_scale": _Exploit(marker)}, handle, protocol=2)
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        UniQAModel.from_pretrained(pickle_only_folder)
    assert not marker.exists()


def test_safetensors_win_over_a_pickle_file(model_dir, model, pickle_only_folder):
    zeros = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save(zeros, pickle_only_folder / "pytorch_model.bin")
    shutil.copy(model_dir / "model.safetensors", pickle_only_folder / "model.safetensors")
    loaded = UniQAModel.from_pretrained(pickle_only_folder)
    expected = model.clip.visual_projection.weight
    assert torch.equal(loaded.clip.visual_projection.weight, expected) and expected.abs().sum() > 0


def test_use_safetensors_refuses_a_pickle_only_folder(model, pickle_only_folder):
    torch.save(model.state_dict(), pickle_only_folder / "pytorch_model.bin")
    assert UniQAModel.from_pretrained(pickle_only_folder).clip.logit_scale.item() == model.clip.logit_scale.item()
    with pytest.raises(OSError, match="model.safetensors"):
        UniQAModel.from_pretrained(pickle_only_folder, use_safetensors=True)


def _stranger_folder(model_dir: Path, tmp_path: Path, file: str, edit) -> Path:
    folder = tmp_path / "stranger"
    shutil.copytree(model_dir, folder)
    values = json.loads((folder / file).read_text())
    edit(values)
    (folder / file).write_text(json.dumps(values))
    return folder


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("config.json", lambda c: c["vision_config"].update(num_hidden_layers=100_000), "num_hidden_layers = 100000"),
        ("config.json", lambda c: c["text_config"].update(hidden_size=10**9), "hidden_size = 1000000000"),
        ("config.json", lambda c: c.update(levels=[0.2, float("nan"), 0.6, 0.8, 1.0]), "levels"),
        ("config.json", lambda c: c.update(prompt_sets={"x": "not a prompt set"}), "prompt set 'x'"),
        ("preprocessor_config.json", lambda c: c.update(crops=10**9), "crops = 1000000000"),
        ("preprocessor_config.json", lambda c: c.update(image_std=[0.2, 0.0, 0.3]), "image_std"),
        ("preprocessor_config.json", lambda c: c.update(crop_size=10**6), "crop_size = 1000000"),
    ],
)
def test_absurd_model_folders_are_refused_naming_file_and_field(model_dir, tmp_path, file, edit, message):
    """Refused before any weight or crop is allocated (these used to hang), with a ValueError naming both."""
    from modeling_uniqa import UniQAModel

    folder = _stranger_folder(model_dir, tmp_path, file, edit)
    with pytest.raises(ValueError, match=re.escape(str(folder / file))) as error:
        UniQAModel.from_pretrained(folder)
    assert message in str(error.value)


def test_non_finite_weights_are_a_load_time_error(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from modeling_uniqa import UniQAModel

    folder = tmp_path / "nan"
    shutil.copytree(model_dir, folder)
    state = load_file(folder / "model.safetensors")
    state["clip.logit_scale"] = torch.tensor(float("nan"))
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="non-finite logit_scale"):
        UniQAModel.from_pretrained(folder)


def test_a_failed_adapter_load_leaves_the_config_unchanged(model_dir, tmp_path):
    from modeling_uniqa import UniQAModel

    model = UniQAModel.from_pretrained(model_dir)
    model.add_multicue_adapter("m", prompt_set="level5")
    model.config.prompt_sets["mine"] = {"task": "quality", "groups": {"g": ["a", "b", "c", "d", "e"]}}
    model.config.adapters["m"]["prompt_set"] = "mine"
    model.save_multicue_adapter(tmp_path / "m", "m")
    config = json.loads((tmp_path / "m" / "adapter_config.json").read_text())
    (tmp_path / "m" / "adapter_config.json").write_text(json.dumps({**config, "bottleneck_dim": 7}))
    fresh = UniQAModel.from_pretrained(model_dir)
    before = fresh.config.to_dict()
    with pytest.raises(ValueError, match="weights do not fit"):
        fresh.load_multicue_adapter(tmp_path / "m")
    assert fresh.config.to_dict() == before and "m" not in fresh.adapters
    (tmp_path / "m" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: not a readable adapter config"):
        fresh.load_multicue_adapter(tmp_path / "m")
    del config["embed_dim"]
    (tmp_path / "m" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not a readable adapter config .KeyError"):
        fresh.load_multicue_adapter(tmp_path / "m")
