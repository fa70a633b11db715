"""Streaming pre-training corpora: coverage per epoch, determinism, process split, bad lines, training and resume."""

from __future__ import annotations

import json
import logging
import shutil
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from tiny_clip import build_tiny_model

from modeling_uniqa.training.pretraining import (
    StreamingCorpusDataset,
    pretrain,
    pretraining_arguments,
    read_corpus_stream,
)

N = 9  # entries, over 2 JSONL shards


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    """`N` distinct 40x48 images, entry `i` captioned `c<i>` / `c<i> again`, written as shards 0.jsonl (4 lines) and
    1.jsonl (5 lines, one with an extra key and a plain-string prompt); returns (corpus folder, image folder)."""
    folder = tmp_path_factory.mktemp("stream")
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(N):
        Image.fromarray((rng.random((40, 48, 3)) * 200 + i * 5).astype(np.uint8)).save(images / f"{i}.png")
        lines.append(json.dumps({"image_path": f"{i}.png", "prompt": [f"c{i}", f"c{i} again"]}) + "\n")
    lines[4] = json.dumps({"image_path": "4.png", "task": "aesthetics", "prompt": "c4"}) + "\n"  # other columns
    (folder / "0.jsonl").write_text("".join(lines[:4]))
    (folder / "1.jsonl").write_text("".join(lines[4:]))
    return folder, images


def entry_id(item: dict) -> int:
    return int(item["caption"].split()[0][1:])


def epochs_of(dataset: StreamingCorpusDataset, epochs: int) -> list[list[dict]]:
    """The items of the first `epochs` epochs (the stream is endless: stop at the first item of the next one)."""
    out: list[list[dict]] = [[] for _ in range(epochs)]
    for item in dataset:
        if item["stream_state"][1] == epochs:
            return out
        out[item["stream_state"][1]].append(item)
    raise AssertionError("unreachable: the stream is endless")


def test_every_entry_once_per_epoch_and_reshuffled(tiny_model, shards):
    folder, images = shards
    stream = read_corpus_stream(folder / "*.jsonl", shuffle_buffer=4)
    assert [Path(f).name for f in stream.files] == ["0.jsonl", "1.jsonl"]
    first, second = epochs_of(StreamingCorpusDataset(stream, images, tiny_model.image_processor, seed=0), 2)
    assert sorted(map(entry_id, first)) == list(range(N))
    assert sorted(map(entry_id, second)) == list(range(N))
    assert [entry_id(i) for i in first] != [entry_id(i) for i in second]  # reshuffled per epoch
    assert first[0]["pixel_values"].shape == (3, 32, 32)
    # without a shuffle buffer: file order
    ordered = epochs_of(
        StreamingCorpusDataset(read_corpus_stream(stream.files, 0), images, tiny_model.image_processor), 1
    )
    assert [entry_id(i) for i in ordered[0]] == list(range(N))


def test_stream_is_deterministic_given_the_seed(tiny_model, shards):
    folder, images = shards
    stream = read_corpus_stream([folder / "0.jsonl", folder / "1.jsonl"], shuffle_buffer=4)
    a, b, c = (
        list(islice(StreamingCorpusDataset(stream, images, tiny_model.image_processor, seed=s), 2 * N))
        for s in (3, 3, 4)
    )
    assert [i["caption"] for i in a] == [i["caption"] for i in b]
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) for x, y in zip(a, b, strict=True))
    assert [i["caption"] for i in a] != [i["caption"] for i in c]


@pytest.mark.parametrize("world_size", [2, 3])  # 2: one shard per process; 3: every 3rd line per process
def test_processes_get_disjoint_parts_that_cover_the_corpus(tiny_model, shards, world_size):
    folder, images = shards
    stream = read_corpus_stream(folder / "*.jsonl", shuffle_buffer=4)
    parts = [
        [entry_id(i) for i in epochs_of(StreamingCorpusDataset(stream, images, tiny_model.image_processor, 0, rank=r,
                                                               world_size=world_size), 1)[0]]
        for r in range(world_size)
    ]  # fmt: skip
    assert all(parts)
    assert sorted(sum(parts, [])) == list(range(N))  # disjoint (no id twice) and covering


def test_bad_lines_are_reported_and_skipped(tiny_model, shards, tmp_path, caplog):
    folder, images = shards
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    bad = tmp_path / "bad.jsonl"
    good = (folder / "0.jsonl").read_text()
    extra = ['{"image_path": "broken.png", "prompt": "x"}', '{"image_path": "gone.png", "prompt": ["y"]}', "{oops"]
    bad.write_text(good + "\n".join(extra) + "\n")
    with caplog.at_level(logging.WARNING, logger="modeling_uniqa.training.pretraining"):
        (epoch,) = epochs_of(StreamingCorpusDataset(read_corpus_stream(bad, 0), images, tiny_model.image_processor), 1)
    assert [entry_id(i) for i in epoch] == [0, 1, 2, 3]
    assert "broken.png: cannot read image" in caplog.text
    assert "gone.png: cannot read image: no such file" in caplog.text
    assert "not a JSON object" in caplog.text and "{oops" in caplog.text
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        read_corpus_stream(tmp_path / "nothing-here*.jsonl")


def test_parquet_shards_stream(tiny_model, shards, tmp_path, monkeypatch):
    _, images = shards
    # datasets sleeps 5 s whenever a Parquet pass ends or is closed (its workaround for apache/arrow#45214)
    monkeypatch.setattr("datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    for k, ids in enumerate([[0, 1, 2], [3, 4]]):
        table = pa.table({"image_path": [f"{i}.png" for i in ids], "prompt": [[f"c{i}"] for i in ids]})
        pq.write_table(table, tmp_path / f"{k}.parquet")
    stream = read_corpus_stream(tmp_path / "*.parquet", shuffle_buffer=2)
    (epoch,) = epochs_of(StreamingCorpusDataset(stream, images, tiny_model.image_processor), 1)
    assert sorted(map(entry_id, epoch)) == [0, 1, 2, 3, 4]


def _train(tmp: Path, folder: Path, images: Path, resume: str | None = None, **overrides) -> dict[str, torch.Tensor]:
    model = build_tiny_model(tmp / "tok")
    values = {"per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_steps": 5, "save_steps": 3}
    args = pretraining_arguments(tmp / "run", logging_steps=1, use_cpu=True, seed=0, **{**values, **overrides})
    result = pretrain(model, read_corpus_stream(folder / "*.jsonl", shuffle_buffer=3), images, args,
                      resume_from_checkpoint=resume)  # fmt: skip
    assert result["train"]["train_loss"] > 0
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, shards, workers):
    """5 steps of batch 2 over 9 entries (so epochs 0 and 1), checkpoint after step 3; with 2 dataloader workers the
    3 consumed batches leave the round-robin on the second worker, and a broken line sits in the stream."""
    folder, images = shards
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(folder / "0.jsonl", corpus)
    (corpus / "1.jsonl").write_text((folder / "1.jsonl").read_text() + '{"image_path": "gone.png", "prompt": "z"}\n')
    uninterrupted = _train(tmp_path / "a", corpus, images, dataloader_num_workers=workers)
    assert (tmp_path / "a" / "run" / "final" / "model.safetensors").exists()
    checkpoint = tmp_path / "a" / "run" / "checkpoint-3"
    saved = json.loads((checkpoint / "stream_state-rank0.json").read_text())
    assert saved["batches"] == 3 and len(saved["positions"]) == max(1, workers)
    shutil.copytree(checkpoint, tmp_path / "b" / "run" / "checkpoint-3")
    resumed = _train(tmp_path / "b", corpus, images, resume=True, dataloader_num_workers=workers)
    initial = build_tiny_model(tmp_path / "tok").state_dict()
    assert any(not torch.equal(initial[k], uninterrupted[k]) for k in initial)  # training changed the weights
    for key, value in uninterrupted.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
    # resuming with another number of workers is refused rather than silently reading other items
    with pytest.raises(ValueError, match="same"):
        _train(tmp_path / "b", corpus, images, resume=str(checkpoint), dataloader_num_workers=1 if workers else 2)


def test_streaming_needs_max_steps_and_no_epochs(tmp_path, shards, tiny_model):
    folder, images = shards
    stream = read_corpus_stream(folder / "*.jsonl")
    with pytest.raises(ValueError, match="max_steps"):
        pretrain(tiny_model, stream, images, pretraining_arguments(tmp_path, use_cpu=True))
    with pytest.raises(ValueError, match="epochs"):
        pretrain(tiny_model, stream, images, pretraining_arguments(tmp_path, use_cpu=True, max_steps=2), epochs=3)
