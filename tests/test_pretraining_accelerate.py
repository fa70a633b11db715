"""`accelerate launch` with the shipped DDP and FSDP configs: 2 CPU processes train to the same weights as one
process that sees the same global batches (the all-gathered loss, averaged gradients, accelerate's batch dispatch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from tiny_clip import TINY_TEXT, TINY_VISION, build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path, per_device_batch: int) -> Path:
    """12 distinct images with 2 captions each, and a config that trains the tiny random init for 3 steps."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for i in range(12):
            Image.fromarray((rng.random((40, 48, 3)) * 200 + i * 4).astype(np.uint8)).save(images / f"{i}.png")
            corpus.write(json.dumps({"image_path": f"{i}.png", "prompt": [f"photo {i}", f"level {i % 3}"]}) + "\n")
    config = {
        "seed": 0,
        "model": {"text_config": TINY_TEXT, "vision_config": TINY_VISION, "projection_dim": 16},
        "pretraining": {
            "epochs": 1,
            "per_device_train_batch_size": per_device_batch,
            "learning_rate": 1e-2,
            "warmup_steps": 0,
            "save_strategy": "no",
            "logging_steps": 1,
            "use_cpu": True,
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def pretrain_command(folder: Path) -> list[str]:
    return [
        "-m", "training.pretrain", "--config", str(folder / "config.yaml"), "--corpus", str(folder / "corpus.jsonl"),
        "--image-root", str(folder / "images"), "--output-dir", str(folder / "out"),
    ]  # fmt: skip


def run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> Path:
    one = write_run(tmp_path_factory.mktemp("one"), per_device_batch=4)
    run([sys.executable, *pretrain_command(one)], one)
    return one


@pytest.mark.parametrize("config", ["accelerate_ddp.yaml", "accelerate_fsdp.yaml"])
def test_two_accelerate_processes_train_like_one(config, single_process, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    one, two = single_process, write_run(tmp_path / "two", per_device_batch=2)
    launcher = [str(accelerate), "launch", "--config_file", str(ROOT / "training" / "configs" / config)]
    # no --cpu: with these configs accelerate would then start a single process; on a CPU machine they use gloo
    launcher += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0"]
    run([*launcher, *pretrain_command(two)], two)
    logs = [json.loads((folder / "out" / "result.json").read_text())["log_history"] for folder in (one, two)]
    losses = [[row["loss"] for row in log if "loss" in row] for log in logs]
    assert len(losses[0]) == len(losses[1]) == 3  # 12 pairs, global batch 4
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    weights = [load_file(folder / "out" / "final" / "model.safetensors") for folder in (one, two)]
    for key, value in weights[0].items():
        assert torch.allclose(value, weights[1][key], atol=1e-5), key
    initial = build_tiny_model(tmp_path / "tok").state_dict()  # the config's sizes and seed: the runs' start
    patches = "clip.vision_model.embeddings.patch_embedding.weight"
    assert not torch.allclose(initial[patches], weights[0][patches], atol=1e-3)  # and training moved it
