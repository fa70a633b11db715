"""Interrupted training: Trainer checkpoints + `resume_from_checkpoint` after a real SIGKILL give the same final
adapter weights as an uninterrupted run (the adapter trained from cached features, as `finetune_adapter` does).

No timing: the killed process stops itself (SIGSTOP) right after saving its epoch-2 checkpoint; the test waits for
the stop with `waitpid(WUNTRACED)` and then sends SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from modeling_uniqa import UniQAModel
from modeling_uniqa.training.finetuning import (
    CachedFeatureDataset,
    CachedFeatureScorer,
    FinetuneArguments,
    collate_features,
    training_arguments,
)

EPOCHS, IMAGES, BATCH = 4, 12, 4  # 3 steps per epoch, a checkpoint per epoch
KILL_AFTER_STEP = 6  # the end of epoch 2

DRIVER = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from transformers import TrainerCallback
from test_training_resume import KILL_AFTER_STEP, build_trainer
class StopAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == KILL_AFTER_STEP:
            os.kill(os.getpid(), signal.SIGSTOP)
trainer, _ = build_trainer(sys.argv[2], sys.argv[3], train_items=sys.argv[4] == "1", callbacks=[StopAfterCheckpoint()])
trainer.train()
"""


def build_trainer(
    model_dir: str | Path, output_dir: str | Path, train_items: bool, callbacks: list[TrainerCallback] = ()
) -> tuple[Trainer, torch.nn.Module]:
    """A new adapter on the tiny model, trained from fixed random 'cached features' of IMAGES images x 3 crops.

    `train_items=True` uses the training dataset of `finetune_adapter` (one crop per epoch); `False` its
    validation form (every item the mean of all its crops), which has no state of its own.
    """
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(3, 64, generator=generator) for _ in range(IMAGES)]
    labels = torch.rand(IMAGES, generator=generator).tolist()
    torch.manual_seed(0)
    model = UniQAModel.from_pretrained(model_dir).eval()
    model.requires_grad_(False)
    adapter = model.add_adapter("resumable")
    adapter.requires_grad_(True)
    args = FinetuneArguments(epochs=EPOCHS, batch_size=BATCH, learning_rate=2e-3, progress=False)
    trainer = Trainer(
        model=CachedFeatureScorer(model, "resumable"),
        args=training_arguments(args, str(output_dir), save_strategy="epoch", logging_strategy="no"),
        train_dataset=CachedFeatureDataset(features, labels, train=train_items, seed=1),
        data_collator=collate_features,
        callbacks=list(callbacks),
    )
    return trainer, adapter


def _kill_after_checkpoint(model_dir: Path, output_dir: Path, train_items: bool) -> None:
    tests = str(Path(__file__).parent)
    command = [sys.executable, "-c", DRIVER, tests, str(model_dir), str(output_dir), "1" if train_items else "0"]
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


def _final_weights(model_dir: Path, output_dir: Path, train_items: bool, resume: bool) -> dict[str, torch.Tensor]:
    trainer, adapter = build_trainer(model_dir, output_dir, train_items)
    trainer.train(resume_from_checkpoint=True if resume else None)
    return {k: v.detach().clone() for k, v in adapter.state_dict().items()}


def _killed_and_resumed(model_dir: Path, tmp_path: Path, train_items: bool) -> tuple[dict, dict]:
    uninterrupted = _final_weights(model_dir, tmp_path / "straight", train_items, resume=False)
    interrupted = tmp_path / "interrupted"
    _kill_after_checkpoint(model_dir, interrupted, train_items)
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    resumed = _final_weights(model_dir, interrupted, train_items, resume=True)
    assert (interrupted / f"checkpoint-{EPOCHS * IMAGES // BATCH}").is_dir()  # it went on to the end
    return uninterrupted, resumed


def test_sigkill_then_resume_gives_the_same_weights(model_dir, tmp_path):
    uninterrupted, resumed = _killed_and_resumed(model_dir, tmp_path, train_items=False)
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
    untrained = build_trainer(model_dir, tmp_path / "unused", train_items=False)[1].state_dict()
    assert not torch.equal(untrained["fc.0.weight"], uninterrupted["fc.0.weight"])  # training did change them


def test_sigkill_then_resume_with_one_crop_per_visit_gives_the_same_weights(model_dir, tmp_path):
    uninterrupted, resumed = _killed_and_resumed(model_dir, tmp_path, train_items=True)
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
