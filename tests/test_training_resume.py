"""Interrupted fine-tuning: `finetune_adapter` killed with SIGKILL after a Trainer checkpoint and rerun with
`resume_from_checkpoint="latest"` ends with the same adapter weights, selected epoch, metrics and history as an
uninterrupted run — from cached features and through the backbone (`cache_features=False`).

No timing: the killed process stops itself (SIGSTOP) right after saving its epoch-2 checkpoint; the test waits for
the stop with `waitpid(WUNTRACED)` and then sends SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFilter
from transformers import TrainerCallback

from modeling_uniqa import UniQAModel
from modeling_uniqa.training.finetuning import copy_adapter_state, finetune_adapter, finetune_arguments

EPOCHS, TRAIN, VALIDATION, BATCH = 4, 12, 4, 4  # 3 steps per epoch, a checkpoint per epoch
KILL_AFTER_STEP = 6  # the end of epoch 2

DRIVER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from transformers import TrainerCallback
from test_training_resume import KILL_AFTER_STEP, run
class StopAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == KILL_AFTER_STEP:
            os.kill(os.getpid(), signal.SIGSTOP)
run(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1", callbacks=[StopAfterCheckpoint()])
"""


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def run(
    model_dir: str | Path,
    table: str | Path,
    output_dir: str | Path,
    cache_features: bool,
    resume: str | None = None,
    callbacks: list[TrainerCallback] = (),
) -> tuple[dict, dict[str, torch.Tensor]]:
    """A new adapter on the tiny model, trained as `finetune_adapter` does -> (its result, its weights)."""
    rows = json.loads(Path(table).read_text())
    adapter_args, args = finetune_arguments(
        {
            "num_train_epochs": EPOCHS,
            "per_device_train_batch_size": BATCH,
            "learning_rate": 2e-3,
            "crops_per_image": 3,
            "eval_crops": 2,
            "cache_features": cache_features,
            "output_dir": str(output_dir),
            "resume_from_checkpoint": resume,
            "disable_tqdm": True,
            "logging_strategy": "no",
        }
    )
    model = UniQAModel.from_pretrained(model_dir).eval()
    cache = Path(table).parent / "feature_cache"
    train, validation = rows[:TRAIN], rows[TRAIN:]
    result = finetune_adapter(
        model, train, validation, "resumable", (0, 100), args=args, adapter_args=adapter_args, cache_dir=cache,
        callbacks=list(callbacks),
    )  # fmt: skip
    return result, copy_adapter_state(model, "resumable")


@pytest.fixture(scope="module")
def table(tmp_path_factory, reference_images) -> Path:
    """16 images (8 scenes, sharp and blurred; the first 12 train, the last 4 validate), a JSON list of [path, mos]."""
    folder = tmp_path_factory.mktemp("resume_data")
    rows = []
    for name, path in reference_images.items():
        base = Image.open(path).convert("RGB").resize((160, 150))
        for level in range(2):
            out = folder / f"{name}_{level}.png"
            base.filter(ImageFilter.GaussianBlur(3 * level)).save(out)
            rows.append([str(out), 85.0 - 40 * level + len(name) % 5])
    (folder / "table.json").write_text(json.dumps(rows))
    return folder / "table.json"


def _kill_after_checkpoint(model_dir: Path, table: Path, output_dir: Path, cache_features: bool) -> None:
    tests = str(Path(__file__).parent)
    flag = "1" if cache_features else "0"
    command = [sys.executable, "-c", DRIVER, tests, str(model_dir), str(table), str(output_dir), flag]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"training ended before its checkpoint: {process.stderr.read().decode()[-2000:]}"
        os.kill(process.pid, signal.SIGKILL)
        _, status = os.waitpid(process.pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        process.returncode = -9  # reaped above
        process.stderr.close()


@pytest.mark.parametrize("cache_features", [True, False], ids=["cached", "uncached"])
def test_sigkill_then_resume_gives_the_same_adapter_and_metrics(model_dir, table, tmp_path, cache_features):
    straight, straight_weights = run(model_dir, table, tmp_path / "straight", cache_features)
    interrupted = tmp_path / "interrupted"
    _kill_after_checkpoint(model_dir, table, interrupted, cache_features)
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    counter = StepCounter()
    resumed, resumed_weights = run(model_dir, table, interrupted, cache_features, "latest", [counter])
    assert counter.steps == [7, 8, 9, 10, 11, 12]  # it continued from the epoch-2 checkpoint, not from the start
    assert (interrupted / f"checkpoint-{EPOCHS * TRAIN // BATCH}").is_dir()  # and went on to the end
    for name, value in straight_weights.items():
        assert torch.equal(resumed_weights[name], value), name
    # the selected epoch, its metrics, the untrained metrics and every epoch's validation, exactly
    assert resumed == straight
    assert [h["epoch"] for h in straight["history"]] == [1.0, 2.0, 3.0, 4.0]
    untrained = UniQAModel.from_pretrained(model_dir)
    torch.manual_seed(123)
    untrained.add_multicue_adapter("resumable")
    assert not torch.equal(untrained.adapters["resumable"].fc[0].weight, straight_weights["fc.0.weight"])  # trained
