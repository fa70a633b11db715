"""Contrastive pre-training: the loss, its all-gather across processes, the data stream, training and exact resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clip import build_tiny_model

from modeling_uniqa.training.pretraining import (
    ContrastiveCollator,
    ContrastiveModel,
    CorpusDataset,
    contrastive_loss,
    pretrain,
    pretraining_arguments,
    read_corpus,
)

CAPTIONS = ["a sharp photo", "a blurry photo", "a noisy photo", "a dark photo", "a bright photo", "a red photo"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[dict], Path]:
    """Six distinct 40x48 images with one or two captions each."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    entries = []
    for i, caption in enumerate(CAPTIONS):
        array = (rng.random((40, 48, 3)) * 60 + 40 * i).astype(np.uint8)
        Image.fromarray(array).save(root / f"{i}.png")
        entries.append({"image_path": f"{i}.png", "prompt": [caption, f"{caption}, indeed"]})
    return entries, root


def test_loss_is_symmetric_infonce():
    torch.manual_seed(0)
    images, texts = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(np.log(10.0))
    logits = 10.0 * torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(texts, dim=-1).t()
    labels = torch.arange(5)
    expected = (
        torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.t(), labels)
    ) / 2
    assert torch.allclose(contrastive_loss(images, texts, scale), expected, atol=1e-6)
    # matching pairs give a lower loss than shuffled ones
    assert contrastive_loss(images, images, scale) < contrastive_loss(images, images.roll(1, 0), scale)
    # distinct caption ids: CLIP's loss; repeated captions: their pairs share the target
    assert torch.allclose(contrastive_loss(images, texts, scale, torch.arange(5)), expected, atol=1e-6)
    ids = torch.tensor([7, 7, 1, 2, 3])
    targets = (ids[:, None] == ids[None, :]).float()
    targets /= targets.sum(1, keepdim=True)
    soft = -(targets * logits.log_softmax(1)).sum(1).mean() - (targets * logits.t().log_softmax(1)).sum(1).mean()
    assert torch.allclose(contrastive_loss(images, texts, scale, ids), soft / 2, atol=1e-6)


def test_loss_decreases_on_a_tiny_model(tiny_model, corpus):
    entries, root = corpus
    dataset = CorpusDataset(entries, root, tiny_model.image_processor, epochs=1, seed=0)
    batch = ContrastiveCollator(tiny_model.tokenizer)([dataset[i] for i in range(len(dataset))])
    assert len(set(batch["caption_ids"].tolist())) == 6
    model = ContrastiveModel(tiny_model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from modeling_uniqa.training.pretraining import contrastive_loss
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    n = 8 // world
    mine_i = images[rank * n:(rank + 1) * n].clone().requires_grad_()
    mine_t = texts[rank * n:(rank + 1) * n].clone().requires_grad_()
    loss = contrastive_loss(mine_i, mine_t, torch.tensor(2.0))
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    ids = torch.tensor([1, 2, 1, 3, 4, 2, 5, 1])[rank * n:(rank + 1) * n]
    shared = contrastive_loss(images[rank * n:(rank + 1) * n], texts[rank * n:(rank + 1) * n], torch.tensor(2.0), ids)
    dist.all_reduce(shared)
    out = {"loss": total.item() / world, "grad_images": mine_i.grad.tolist(), "grad_texts": mine_t.grad.tolist(),
           "shared": shared.item() / world}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    dist.destroy_process_group()
    """
)


def test_all_gather_loss_equals_single_process_loss(tmp_path):
    """2 CPU processes (torchrun, gloo), 4 pairs each == one process with the 8 pairs: loss and gradients."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 6, generator=g).requires_grad_()
    texts = torch.randn(8, 6, generator=g).requires_grad_()
    loss = contrastive_loss(images, texts, torch.tensor(2.0))
    loss.backward()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["loss"] == pytest.approx(loss.item(), abs=1e-6)
    ids = torch.tensor([1, 2, 1, 3, 4, 2, 5, 1])  # repeated captions across the two processes' halves
    shared = contrastive_loss(images.detach(), texts.detach(), torch.tensor(2.0), ids)
    assert ranks[0]["shared"] == pytest.approx(shared.item(), abs=1e-6)
    # each process's features get the gradient of the global loss x world size (DDP then averages over processes)
    grad_images = torch.tensor([row for r in ranks for row in r["grad_images"]]) / 2
    grad_texts = torch.tensor([row for r in ranks for row in r["grad_texts"]]) / 2
    assert torch.allclose(grad_images, images.grad, atol=1e-6)
    assert torch.allclose(grad_texts, texts.grad, atol=1e-6)


def test_corpus_dataset_is_deterministic_and_covers_every_entry(tiny_model, corpus):
    entries, root = corpus
    a = CorpusDataset(entries, root, tiny_model.image_processor, epochs=2, seed=3)
    b = CorpusDataset(entries, root, tiny_model.image_processor, epochs=2, seed=3)
    assert len(a) == 12
    for k in (0, 5, 11):
        assert a[k]["caption"] == b[k]["caption"]
        assert torch.equal(a[k]["pixel_values"], b[k]["pixel_values"])
        assert a[k]["pixel_values"].shape == (3, 32, 32)
    first_epoch = {a[k]["caption"].removesuffix(", indeed") for k in range(6)}
    assert first_epoch == set(CAPTIONS)  # each entry once per epoch
    c = CorpusDataset(entries, root, tiny_model.image_processor, epochs=2, seed=4)
    assert any(a[k]["caption"] != c[k]["caption"] for k in range(12))


def test_group_size_batches_entries_of_one_group_together(tiny_model, corpus):
    entries, root = corpus
    grouped = [{**entry, "group": f"photo{i // 3}"} for i, entry in enumerate(entries)]  # 2 groups of 3
    for seed in (0, 1, 2):
        dataset = CorpusDataset(grouped, root, tiny_model.image_processor, epochs=2, seed=seed, group_size=3)
        order = [CAPTIONS.index(dataset[k]["caption"].removesuffix(", indeed")) for k in range(12)]
        for epoch in (order[:6], order[6:]):
            assert sorted(epoch) == list(range(6))  # every entry once per epoch
            assert {i // 3 for i in epoch[:3]} != {i // 3 for i in epoch[3:]}  # each run of 3 is one photo's
            assert len({i // 3 for i in epoch[:3]}) == 1
    ungrouped = CorpusDataset(entries, root, tiny_model.image_processor, epochs=1, seed=0, group_size=3)
    assert [ungrouped[k]["caption"] for k in range(6)] == [  # no `group`: runs of 1, the plain shuffle
        CorpusDataset(entries, root, tiny_model.image_processor, epochs=1, seed=0)[k]["caption"] for k in range(6)
    ]
    with pytest.raises(ValueError, match="group_size"):
        CorpusDataset(entries, root, tiny_model.image_processor, group_size=0)


def test_read_corpus_merges_jsonl_entries(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [
        {"image_path": "a.png", "prompt": ["x", "y"]},
        {"image_path": "b.png", "prompt": "z"},
        {"image_path": "a.png", "task": "aesthetics", "prompt": ["w"], "group": "photo1"},
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert read_corpus(path) == [
        {"image_path": "a.png", "prompt": ["x", "y", "w"], "group": "photo1"},
        {"image_path": "b.png", "prompt": ["z"]},
    ]
    (tmp_path / "list.json").write_text(json.dumps(lines[:2]))
    assert len(read_corpus(tmp_path / "list.json")) == 2
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_corpus(tmp_path / "missing.jsonl")


def _train(tmp: Path, entries, root, resume: str | None = None, **overrides) -> dict[str, torch.Tensor]:
    model = build_tiny_model(tmp / "tok")
    args = pretraining_arguments(
        tmp / "run",
        per_device_train_batch_size=3,
        learning_rate=1e-3,
        save_steps=2,
        logging_steps=1,
        use_cpu=True,
        seed=0,
        **overrides,
    )
    pretrain(model, entries, root, args, epochs=2, resume_from_checkpoint=resume)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, corpus):
    entries, root = corpus
    uninterrupted = _train(tmp_path / "a", entries, root)
    # the interrupted run: its checkpoint after step 2 (of 4), resumed in a fresh model
    checkpoint = tmp_path / "a" / "run" / "checkpoint-2"
    assert checkpoint.is_dir()
    shutil.copytree(checkpoint, tmp_path / "b" / "run" / "checkpoint-2")
    resumed = _train(tmp_path / "b", entries, root, resume=str(tmp_path / "b" / "run" / "checkpoint-2"))
    initial = build_tiny_model(tmp_path / "tok").state_dict()
    assert any(not torch.equal(initial[k], uninterrupted[k]) for k in initial)  # training changed the weights
    for key, value in uninterrupted.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
    final = tmp_path / "a" / "run" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()


def test_gradient_checkpointing_and_bf16_run(tmp_path, corpus):
    entries, root = corpus
    weights = _train(tmp_path, entries, root, bf16=True, gradient_checkpointing=True, gradient_accumulation_steps=2)
    assert all(torch.isfinite(v).all() for v in weights.values())
