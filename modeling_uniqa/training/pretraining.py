"""Contrastive vision-language pre-training of UniQA's CLIP towers (docs/method.md, "Pre-training").

Symmetric InfoNCE on (image, caption) pairs with both towers trained, run by `transformers.Trainer` (gradient
accumulation, bf16/fp16 autocast, gradient checkpointing, checkpoints every N steps, exact resume) and by
`accelerate launch` across processes: features are all-gathered *with their gradients*, so the negatives of the
loss are the whole global batch and scale with the number of GPUs.

Training-only: imported by `training/pretrain.py`, never by `modeling_uniqa.py`.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from transformers import CLIPTextConfig, CLIPVisionConfig, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ..configuration_uniqa import BOS_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID, UniQAConfig
from ..modeling_uniqa import UniQAModel
from ..tools.conversion import write_tokenizer
from .metrics import iqa_metrics

logger = logging.getLogger(__name__)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100

# The authors' optimiser (docs/method.md, "Pre-training"): Adam(W) lr 5e-6, betas (0.9, 0.98), eps 1e-6, weight
# decay 0.2. Right for fine-tuning a pre-trained ViT-B/16; a model trained from a random init needs a far higher lr
# (set it in its config).
AUTHORS_OPTIMIZER = {
    "learning_rate": 5e-6,
    "adam_beta1": 0.9,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-6,
    "weight_decay": 0.2,
    "optim": "adamw_torch",
}


# ------------------------------------------------------------------------------------------------------------------
# Loss.


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """`(n, D)` local features -> `(world * n, D)` features of all processes, rank order, gradients kept.

    Uses `torch.distributed.nn.functional.all_gather`, whose backward sums each process's gradient
    contributions back to their owner. Single process (or no process group): returns `features` unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(features.contiguous()), dim=0)


def gather_ids(ids: torch.Tensor) -> torch.Tensor:
    """`(n,)` integer ids of this process -> `(world * n,)` ids of all processes, rank order (no gradient)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids
    gathered = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, ids.contiguous())
    return torch.cat(gathered)


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    caption_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) over the global batch.

    Args:
        image_embeds, text_embeds: `(n, D)` raw embeddings of this process's `n` matching pairs (all processes
            must hold the same `n`: drop the last incomplete batch).
        logit_scale: scalar log-temperature (clamped at ln 100).
        caption_ids: optional `(n,)` integer id of each caption's text. Pairs whose captions are the same text are
            then all positives of each other (the target spreads evenly over them) instead of false negatives —
            which matters with templated captions, where a batch repeats "bad image" many times. Without it (or
            with all ids distinct) this is CLIP's loss.

    Returns:
        The mean over this process's rows of `(CE(image -> all texts) + CE(text -> all images)) / 2`. Averaged over
        processes (as DDP does with gradients) it equals the single-process loss on the concatenated batch.
    """
    image_embeds = nn.functional.normalize(image_embeds.float(), dim=-1)
    text_embeds = nn.functional.normalize(text_embeds.float(), dim=-1)
    all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    logits_per_image = scale * image_embeds @ all_texts.t()
    logits_per_text = scale * text_embeds @ all_images.t()
    if caption_ids is None:
        labels = torch.arange(len(image_embeds), device=image_embeds.device) + rank * len(image_embeds)
        loss_images = nn.functional.cross_entropy(logits_per_image, labels)
        return (loss_images + nn.functional.cross_entropy(logits_per_text, labels)) / 2
    same = (caption_ids.view(-1, 1) == gather_ids(caption_ids).view(1, -1)).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_images = -(targets * logits_per_image.log_softmax(dim=1)).sum(dim=1).mean()
    return (loss_images - (targets * logits_per_text.log_softmax(dim=1)).sum(dim=1).mean()) / 2


RANKING_KEYS = ("group", "distortion", "level")
RANKING_PROMPTS = ("bad image", "perfect image")  # the ends of the `level5` prompt set


def quality_ranking_loss(
    image_embeds: torch.Tensor,
    prompt_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    levels: torch.Tensor,
    groups: torch.Tensor,
    distortions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise logistic ranking of synthetic distortions of the same photo by their zero-shot quality.

    Args:
        image_embeds: `(n, D)` raw image embeddings.
        prompt_embeds: `(2, D)` embeddings of a bad and a good prompt ([`RANKING_PROMPTS`]).
        logit_scale: scalar log-temperature (clamped at ln 100).
        levels: `(n,)` distortion level, 0 for the undistorted photo, -1 where unknown (never ranked).
        groups: `(n,)` integer id of each image's source photo.
        distortions: `(n,)` integer id of each image's distortion type; `None` compares levels across types too
            (for levels calibrated to mean the same severity whatever the distortion).

    Returns:
        The mean over ordered pairs `(i, j)` of the same group, where `j` is a distortion of the undistorted `i` or
        a stronger level of `i`'s distortion (of any distortion, without `distortions`), of `softplus(q_j - q_i)`,
        with `q = scale * (cos(image, good) - cos(image, bad))` the zero-shot log-odds of good over bad; 0 (with a
        graph) when the batch has no pair.
    """
    image_embeds = nn.functional.normalize(image_embeds.float(), dim=-1)
    prompt_embeds = nn.functional.normalize(prompt_embeds.float(), dim=-1)
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    quality = scale * image_embeds @ (prompt_embeds[1] - prompt_embeds[0])
    level_i, level_j = levels.view(-1, 1), levels.view(1, -1)
    better = (groups.view(-1, 1) == groups.view(1, -1)) & (level_i >= 0) & (level_j > level_i)
    if distortions is not None:
        better &= (distortions.view(-1, 1) == distortions.view(1, -1)) | (level_i == 0)
    if not better.any():
        return quality.sum() * 0.0
    return nn.functional.softplus(quality.view(1, -1) - quality.view(-1, 1))[better].mean()


class ContrastiveModel(nn.Module):
    """What `Trainer` trains: a [`UniQAModel`] whose forward is the contrastive loss, plus `ranking_weight` times
    [`quality_ranking_loss`] on batches that carry distortion levels (compared across distortion types with
    `rank_across_distortions`).

    `forward(pixel_values (N, 3, S, S), input_ids (N, L), attention_mask (N, L), ...) -> {"loss": scalar}`.
    """

    def __init__(self, model: UniQAModel, ranking_weight: float = 0.0, rank_across_distortions: bool = False):
        super().__init__()
        self.uniqa = model
        self.ranking_weight = ranking_weight
        self.rank_across_distortions = rank_across_distortions

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        levels: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
        distortions: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        image_embeds = self.uniqa.get_image_features(pixel_values)
        text_embeds = self.uniqa.get_text_features(input_ids, attention_mask)
        scale = self.uniqa.clip.logit_scale
        loss = contrastive_loss(image_embeds, text_embeds, scale, caption_ids)
        if self.ranking_weight and levels is not None:
            prompts = self.uniqa.encode_prompts(RANKING_PROMPTS)
            distortions = None if self.rank_across_distortions else distortions
            ranking = quality_ranking_loss(image_embeds, prompts, scale, levels, groups, distortions)
            loss = loss + self.ranking_weight * ranking
        return {"loss": loss}

    def activation_checkpointing_enable(self, **kwargs) -> None:
        """Checkpoint the towers' layers (transformers 5 `Trainer` calls this for `activation_checkpointing`)."""
        if hasattr(self.uniqa, "activation_checkpointing_enable"):
            self.uniqa.activation_checkpointing_enable(**kwargs)
        else:
            self.uniqa.gradient_checkpointing_enable(kwargs.get("activation_checkpointing_kwargs"))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        """The same, for transformers 4.x `Trainer`."""
        self.uniqa.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.uniqa.gradient_checkpointing_disable()


# ------------------------------------------------------------------------------------------------------------------
# Data.


def _entry_captions(prompt: Any) -> list[str]:
    """A corpus entry's `prompt` (one string or a list of strings) -> its non-blank captions."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, Sequence):
        return []
    return [p for p in prompt if isinstance(p, str) and p.strip()]


def _training_pair(
    entry: Mapping[str, Any],
    image_root: Path,
    image_processor,
    rng: np.random.Generator,
    flip: bool,
    crop_rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """One training item of `entry`: a caption drawn from its list (`rng`), then a random crop and a horizontal
    flip of its image (from `crop_rng`, else `rng`, in that order; a `crop_rng` window does not depend on the
    image's content, so images of one size drawn with equal `crop_rng`s get the same crop).
    `{"pixel_values": (3, S, S) float32 normalised, "caption": str}`, plus the entry's `group`, `distortion` and
    `level` when it has a `level`.
    Raises `ValueError` naming the file and the reason when the image cannot be read."""
    captions = _entry_captions(entry["prompt"])
    caption = captions[int(rng.integers(len(captions)))]
    shared_crop = crop_rng is not None
    crop_rng = crop_rng if shared_crop else rng
    crop_seed = int(crop_rng.integers(2**31))
    path = image_root / entry["image_path"]
    pixels = image_processor.crop_image(
        path, crop_mode="random", crops=1, seed=crop_seed, content_seeded=not shared_crop
    )[0]
    if flip and crop_rng.random() < 0.5:
        pixels = pixels.flip(-1)
    item = {"pixel_values": pixels, "caption": caption}
    if "level" in entry:
        item.update({key: entry.get(key) for key in RANKING_KEYS})
    return item


def read_corpus(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Corpus entries `{"image_path", "prompt": str | [str]}` from a JSON list or a JSONL file.

    Entries with the same `image_path` are merged (their captions pooled), so a JSONL written by several
    captioners (quality descriptions, purified comments) reads as one entry per image. An optional `group` (e.g.
    the undistorted photo a synthetic distortion was made from) is kept for [`CorpusDataset`]'s `group_size`, and an
    optional `level` (0: undistorted, larger: stronger) with its `distortion` for the ranking loss
    ([`quality_ranking_loss`]).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus file {path} does not exist") from None
    try:
        entries = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        )
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON / JSONL ({error})") from error
    merged: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "image_path" not in entry or "prompt" not in entry:
            raise ValueError(f"{path} entry {i}: expected keys 'image_path' and 'prompt'")
        item = merged.setdefault(str(entry["image_path"]), {"image_path": str(entry["image_path"]), "prompt": []})
        item["prompt"].extend(_entry_captions(entry["prompt"]))
        if entry.get("group") is not None:
            item.setdefault("group", str(entry["group"]))
        if entry.get("level") is not None:
            item.setdefault("level", int(entry["level"]))
            item.setdefault("distortion", str(entry.get("distortion", "")))
    return [item for item in merged.values() if item["prompt"]]


class CorpusDataset(Dataset):
    """Image-text pairs for contrastive training, laid out for `epochs` passes, fully deterministic.

    Item `k` belongs to epoch `k // len(entries)`; within an epoch the entries are shuffled by `(seed, epoch)`,
    and the crop, the horizontal flip and the one caption sampled from the entry's list are drawn from
    `(seed, k)`. So the stream depends only on the seed — not on worker processes or on where a run was
    interrupted — and a resumed run sees exactly the remaining items. Iterate it in order (`SequentialSampler`).

    `group_size > 1` lays each epoch out in runs of up to `group_size` entries of the same `group` (entries without
    one are runs of 1): each group's entries are shuffled and cut into runs, and the runs are shuffled. A batch then
    holds several distortions of the same photo, which the loss can only tell apart by their quality — not by their
    content (content-matched negatives). With `shared_crops` the entries of a run also share their crop and flip
    (drawn from `(seed, epoch, run)`): two distortions of a photo then differ only by the distortion, which the
    ranking loss compares (images of one group must have the same size). With `anchored_runs` every run of a group
    also holds the group's undistorted entries (`level` 0), so each run ranks its distortions against the original
    (an epoch then has more positions than entries); with `runs_by_distortion` a group's entries are cut into runs
    distortion type by type (types in random order), so a run holds whole level curves of one or two types.

    Items: `{"pixel_values": (3, S, S) float32 normalised, "caption": str}` (+ `group`, `distortion`, `level` for
    entries with a `level`).
    """

    def __init__(
        self,
        entries: Sequence[Mapping[str, Any]],
        image_root: str | os.PathLike,
        image_processor,
        epochs: int = 1,
        seed: int = 0,
        flip: bool = True,
        group_size: int = 1,
        shared_crops: bool = False,
        anchored_runs: bool = False,
        runs_by_distortion: bool = False,
    ):
        if not entries:
            raise ValueError("empty corpus")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.entries = list(entries)
        self.image_root = Path(image_root)
        self.processor = image_processor
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.flip = flip
        self.group_size = int(group_size)
        self.shared_crops = shared_crops
        self.anchored_runs = anchored_runs
        self.runs_by_distortion = runs_by_distortion
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # every epoch has the same length: how many runs a group makes does not depend on the shuffle
        self._epoch_length = len(self._order(0)[0]) if anchored_runs else len(self.entries)

    def __len__(self) -> int:
        return self.epochs * self._epoch_length

    def _locate(self, k: int) -> tuple[int, int]:
        """Item `k` -> (epoch, position in that epoch's order)."""
        return divmod(k, self._epoch_length)

    def _group_runs(self, members: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One group's entry indices -> its runs of at most `group_size` (see the class docstring)."""
        is_anchor = np.array([self.anchored_runs and self.entries[i].get("level") == 0 for i in members])
        anchors, others = members[is_anchor], members[~is_anchor]
        size = self.group_size - len(anchors)
        if size < 1 or not len(others):
            anchors, others, size = members[:0], members, self.group_size
        shuffled = others[rng.permutation(len(others))]
        if self.runs_by_distortion:
            kinds = [str(self.entries[i].get("distortion", "")) for i in shuffled]
            rank = {name: r for r, name in enumerate(rng.permutation(sorted(set(kinds))))}
            shuffled = shuffled[np.argsort([rank[kind] for kind in kinds], kind="stable")]
        return [np.concatenate([anchors, shuffled[start : start + size]]) for start in range(0, len(shuffled), size)]

    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Epoch `epoch` -> (entry index, run index) of each position."""
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch, 1])
            if self.group_size == 1:
                order = rng.permutation(len(self.entries))
                self._orders[epoch] = order, np.arange(len(order))
            else:
                groups: dict[Any, list[int]] = {}  # in order of first appearance; no group: a group of one
                for index, entry in enumerate(self.entries):
                    groups.setdefault(entry.get("group", ("entry", index)), []).append(index)
                runs = [run for members in groups.values() for run in self._group_runs(np.array(members), rng)]
                runs = [runs[i] for i in rng.permutation(len(runs))]
                run_index = np.concatenate([np.full(len(run), i) for i, run in enumerate(runs)])
                self._orders[epoch] = np.concatenate(runs), run_index
        return self._orders[epoch]

    def __getitem__(self, k: int) -> dict[str, Any]:
        epoch, position = self._locate(int(k))
        order, run_index = self._order(epoch)
        entry = self.entries[int(order[position])]
        rng = np.random.default_rng([self.seed, int(k), 2])
        crop_rng = np.random.default_rng([self.seed, epoch, int(run_index[position]), 3]) if self.shared_crops else None
        return _training_pair(entry, self.image_root, self.processor, rng, self.flip, crop_rng)


STREAM_FORMATS = {".jsonl": "text", ".json": "text", ".parquet": "parquet"}


@dataclass
class CorpusStream:
    """A corpus index read lazily from shard files (JSONL or Parquet, one entry `{"image_path", "prompt"}` per
    line / row), never held in memory: build it with [`read_corpus_stream`], train on it with [`pretrain`]."""

    files: list[str]
    shuffle_buffer: int = 10_000

    @functools.cached_property
    def dataset(self):
        """The shards as a `datasets.IterableDataset`, reshuffled per epoch (`shuffle(seed, buffer)` + `set_epoch`)
        by [`StreamingCorpusDataset`]. JSONL rows are `{"text": line}`, parsed per line by [`parse_stream_row`]."""
        from datasets import load_dataset

        builder = STREAM_FORMATS[Path(self.files[0]).suffix.lower()]
        kwargs = {"columns": ["image_path", "prompt"]} if builder == "parquet" else {}
        return load_dataset(builder, data_files=self.files, split="train", streaming=True, **kwargs)


def read_corpus_stream(
    paths: str | os.PathLike | Sequence[str | os.PathLike], shuffle_buffer: int = 10_000
) -> CorpusStream:
    """A streaming corpus from shard files: paths or glob patterns (`corpus/*.jsonl`), all JSONL or all Parquet.

    Unlike [`read_corpus`], lines of the same image are *not* merged (that needs the whole index): each line is one
    entry. `shuffle_buffer` index entries (not images) are held to shuffle the stream (0: file order).
    """
    patterns = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[str] = []
    for pattern in map(str, patterns):
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise FileNotFoundError(f"corpus pattern {pattern} matches no file")
        files.extend(matches)
    for file in files:
        if not Path(file).is_file():
            raise FileNotFoundError(f"corpus file {file} does not exist")
        if Path(file).suffix.lower() not in STREAM_FORMATS:
            raise ValueError(f"corpus file {file}: a streaming corpus is JSONL (.jsonl/.json) or Parquet (.parquet)")
    if len({STREAM_FORMATS[Path(f).suffix.lower()] for f in files}) > 1:
        raise ValueError(f"corpus files {files}: mix JSONL and Parquet shards; convert them to one format")
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
    return CorpusStream(files, int(shuffle_buffer))


def parse_stream_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A streamed row (`{"text": JSONL line}` or a Parquet row) -> `{"image_path", "prompt": [str]}`.
    Raises `ValueError` with the reason for a line that is not one corpus entry."""
    entry = row
    if "text" in row:
        try:
            entry = json.loads(row["text"])
        except json.JSONDecodeError as error:
            raise ValueError(f"not a JSON object ({error}): {row['text'][:80]!r}") from None
    if not isinstance(entry, Mapping) or not entry.get("image_path"):
        raise ValueError(f"no 'image_path': {str(entry)[:80]!r}")
    captions = _entry_captions(entry.get("prompt"))
    if not captions:
        raise ValueError(f"no caption in 'prompt' for {entry['image_path']}")
    return {"image_path": str(entry["image_path"]), "prompt": captions}


class StreamingCorpusDataset(torch.utils.data.IterableDataset):
    """Image-text pairs streamed from a [`CorpusStream`], epoch after epoch without end (training stops at
    `max_steps`). Items as [`CorpusDataset`]'s, plus `stream_state`: `(worker, epoch, lines read)`.

    Per epoch the index is reshuffled with a buffer (`shuffle(seed, shuffle_buffer)`, `set_epoch(epoch)`) and split
    with `datasets.distributed.split_dataset_by_node` across `world_size` processes × dataloader workers (whole
    shards when their number divides evenly, else every `k`-th line), so every entry is read exactly once per epoch
    by one of them. The caption, crop and flip of an entry are drawn from `(seed, epoch, entry)` with
    [`CorpusDataset`]'s rules. Images are decoded only when their item is produced; an unreadable image or a malformed
    line is reported (file and reason, once per worker) and skipped. `resume_from` continues each worker from a
    saved position, re-reading only the index lines before it (no image is decoded).
    """

    def __init__(
        self,
        stream: CorpusStream,
        image_root: str | os.PathLike,
        image_processor,
        seed: int = 0,
        flip: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.stream = stream
        self.image_root = Path(image_root)
        self.processor = image_processor
        self.seed = int(seed)
        self.flip = flip
        self.rank, self.world_size = int(rank), int(world_size)
        self.positions: dict[int, tuple[int, int]] = {}  # worker -> (epoch, lines of that epoch already read)
        self.worker_offset = 0  # a resumed loader's worker `w` continues the stream of worker `w + offset`

    def resume_from(self, positions: Mapping[int, Sequence[int]], batches: int, workers: int) -> None:
        """Continue after `batches` batches, `positions[worker] = (epoch, lines read)` (see [`StreamPosition`])."""
        self.positions = {int(w): (int(p[0]), int(p[1])) for w, p in positions.items()}
        self.worker_offset = int(batches) % max(1, int(workers))

    def rows(self, epoch: int, node: int = 0, nodes: int = 1) -> Iterator[Mapping[str, Any]]:
        """The raw rows that node `node` of `nodes` (process × worker) reads in `epoch`, in stream order."""
        from datasets.distributed import split_dataset_by_node

        data = self.stream.dataset
        if self.stream.shuffle_buffer > 1:
            data = data.shuffle(seed=self.seed, buffer_size=self.stream.shuffle_buffer)
        if nodes > 1:
            data = split_dataset_by_node(data, rank=node, world_size=nodes)
        data.set_epoch(epoch)
        # `.iter()` (not `iter(data)`): inside a dataloader worker `datasets` would split the shards among workers a
        # second time; the split above already covers processes and workers.
        for batch in data.iter(batch_size=256):
            columns = list(batch)
            yield from (dict(zip(columns, values, strict=True)) for values in zip(*batch.values(), strict=True))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        worker = (worker + self.worker_offset) % workers
        node, nodes = self.rank * workers + worker, self.world_size * workers
        epoch, start = self.positions.get(worker, (0, 0))
        reported: set[str] = set()
        while True:
            produced = 0
            for line, row in enumerate(self.rows(epoch, node, nodes)):
                if line < start:  # resuming: these lines were used before the checkpoint
                    continue
                try:
                    entry = parse_stream_row(row)
                    key = zlib.crc32(json.dumps([entry["image_path"], entry["prompt"]]).encode())
                    rng = np.random.default_rng([self.seed, epoch, key, 3])
                    item = _training_pair(entry, self.image_root, self.processor, rng, self.flip)
                except ValueError as error:
                    if str(error) not in reported:
                        reported.add(str(error))
                        logger.warning("streaming corpus: skipping an entry: %s", error)
                    continue
                produced += 1
                yield {**item, "stream_state": (worker, epoch, line + 1)}
            if not produced and not start:
                raise ValueError(
                    f"corpus {self.stream.files[0]} (+{len(self.stream.files) - 1} files): process {self.rank}/"
                    f"{self.world_size}, dataloader worker "
                    f"{worker}/{workers} got no usable entry in epoch {epoch} (fewer entries than processes x workers, "
                    "or no readable image)"
                )
            epoch, start = epoch + 1, 0


class StreamPosition(TrainerCallback):
    """Where this process's dataloader workers are in a [`StreamingCorpusDataset`], from the batches the trainer
    consumed (their `stream_state`); saved as `stream_state-rank<R>.json` in every checkpoint, so that a resumed run
    continues each worker's stream exactly where the checkpoint left it."""

    def __init__(self, rank: int, world_size: int, workers: int):
        self.rank, self.world_size, self.workers = rank, world_size, max(1, workers)
        self.batches = 0
        self.positions: dict[int, list[int]] = {}

    def record(self, stream_state: torch.Tensor) -> None:
        """A consumed batch's `stream_state` `(3,)`: its worker, epoch and lines read after its last item."""
        worker, epoch, lines = (int(v) for v in stream_state.tolist())
        self.positions[worker] = [epoch, lines]
        self.batches += 1

    def file(self, checkpoint: str | os.PathLike) -> Path:
        return Path(checkpoint) / f"stream_state-rank{self.rank}.json"

    def on_save(self, args, state, control, **kwargs):
        path = self.file(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {"world_size": self.world_size, "workers": self.workers, "batches": self.batches}
        path.write_text(json.dumps({**saved, "positions": self.positions}))

    def load(self, checkpoint: str | os.PathLike) -> None:
        """Restore the position saved in `checkpoint`; the run must use the same processes and workers."""
        path = self.file(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {checkpoint} was not written by a streaming run")
        saved = json.loads(path.read_text())
        if (saved["world_size"], saved["workers"]) != (self.world_size, self.workers):
            raise ValueError(
                f"{path}: saved with {saved['world_size']} processes x {saved['workers']} dataloader workers; resume a "
                f"streaming run with the same (now {self.world_size} x {self.workers})"
            )
        self.batches = int(saved["batches"])
        self.positions = {int(w): p for w, p in saved["positions"].items()}


@dataclass
class ContrastiveCollator:
    """Stacks crops and tokenises captions (padded to the longest, truncated to the context length).

    With `caption_ids=True` it adds `caption_ids`: a CRC-32 of each caption's text, so the loss treats identical
    captions as shared positives (see [`contrastive_loss`]). Batches with items that carry a `level` add `levels`
    (-1 where an item has none) and CRC-32 ids of `groups` (an item without one is alone in its group) and
    `distortions` for [`quality_ranking_loss`]. Items
    from a [`StreamingCorpusDataset`] add the last item's `stream_state` `(3,)`, which the trainer takes out before
    the model.
    """

    tokenizer: Any
    max_length: int = 77
    caption_ids: bool = True

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            [item["caption"] for item in items],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {
            "pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }
        if self.caption_ids:
            batch["caption_ids"] = torch.tensor([zlib.crc32(item["caption"].encode()) for item in items])
        if any("level" in item for item in items):
            batch["levels"] = torch.tensor([int(item.get("level", -1)) for item in items])
            # an item without a group is a group of its own (negative ids: CRC-32s are not negative)
            batch["groups"] = torch.tensor(
                [
                    zlib.crc32(str(item["group"]).encode()) if item.get("group") else -1 - k
                    for k, item in enumerate(items)
                ]
            )
            batch["distortions"] = torch.tensor(
                [zlib.crc32(str(item.get("distortion", "")).encode()) for item in items]
            )
        if "stream_state" in items[-1]:
            batch["stream_state"] = torch.tensor(items[-1]["stream_state"])
        return batch


# ------------------------------------------------------------------------------------------------------------------
# Zero-shot evaluation.


def zero_shot_srcc(
    model: UniQAModel,
    images: Sequence[Any],
    targets: Sequence[float],
    prompt_sets: Sequence[str] = ("level5", "ensemble20"),
    crops: int = 1,
    batch_size: int = 64,
) -> dict[str, float]:
    """SRCC between zero-shot scores and `targets` (higher = better) for each prompt set: `{"srcc_level5": ...}`."""
    was_training = model.training
    model.eval()
    try:
        results = {}
        for name in prompt_sets:
            scores = model.score(list(images), prompt_set=name, crop_mode="center" if crops == 1 else "grid",
                                 crops=crops, batch_size=batch_size)  # fmt: skip
            results[f"srcc_{name}"] = iqa_metrics(scores.tolist(), targets)["srcc"]
        return results
    finally:
        model.train(was_training)


def level_srcc(model: UniQAModel, rows: Iterable[Mapping[str, Any]], **score_kwargs) -> dict[str, Any]:
    """How scores follow synthetic distortion levels.

    Args:
        rows: `{"image", "distortion", "level", "reference_id"}` as yielded by
            `datasets_scripts.synthetic.iter_synthetic(..., include_reference=True)`: level 0 (`"none"`) is the
            undistorted photo and starts every distortion's curve.
        score_kwargs: passed to `model.score` (task, adapter, prompt_set, crops, ...).

    Returns:
        `per_type`: `{distortion: mean over photos of SRCC(level 0..5, score)}` (-1: the score falls with every
        level), `mean`: mean of `per_type`, `pooled`: `{distortion: SRCC over all photos' points together}`,
        `scores`: `{reference_id: {distortion: [score per level]}}`.
    """
    rows = list(rows)
    return level_curves(rows, model.score([row["image"] for row in rows], **score_kwargs).tolist())


def level_curves(rows: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> dict[str, Any]:
    """[`level_srcc`] for scores of any scorer: `rows` as there (`image` unused), `scores` one per row."""
    curves: dict[str, dict[str, dict[int, float]]] = {}
    pristine: dict[str, float] = {}
    for row, value in zip(rows, scores, strict=True):
        if int(row["level"]) == 0:
            pristine[row["reference_id"]] = value
        else:
            curves.setdefault(row["reference_id"], {}).setdefault(row["distortion"], {})[int(row["level"])] = value
    per_photo: dict[str, list[float]] = {}
    pooled: dict[str, tuple[list[int], list[float]]] = {}
    table: dict[str, dict[str, list[float]]] = {}
    for reference, by_type in curves.items():
        if reference not in pristine:
            raise ValueError(f"reference {reference!r} has no level-0 (undistorted) row")
        for distortion, by_level in by_type.items():
            levels = [0, *sorted(by_level)]
            values = [pristine[reference], *(by_level[lv] for lv in levels[1:])]
            table.setdefault(reference, {})[distortion] = values
            per_photo.setdefault(distortion, []).append(iqa_metrics(values, levels)["srcc"])
            pooled.setdefault(distortion, ([], []))
            pooled[distortion][0].extend(levels)
            pooled[distortion][1].extend(values)
    per_type = {d: float(np.nanmean(v)) for d, v in per_photo.items()}
    return {
        "per_type": per_type,
        "mean": float(np.nanmean(list(per_type.values()))),
        "pooled": {d: iqa_metrics(v, lv)["srcc"] for d, (lv, v) in pooled.items()},
        "scores": table,
    }


class ZeroShotEvalCallback(TrainerCallback):
    """Logs zero-shot SRCC on validation tables before training, every `every_steps` steps (0: never) and at the
    end. `tables`: `{name: (images, targets)}`, images as paths/PIL/arrays, targets higher = better. Results are
    kept in `history` and in the trainer's log history (`zeroshot_<table>_srcc_<prompt set>`)."""

    def __init__(
        self,
        model: UniQAModel,
        tables: Mapping[str, tuple[Sequence[Any], Sequence[float]]],
        every_steps: int = 0,
    ):
        self.model = model
        self.tables = {name: (list(images), list(targets)) for name, (images, targets) in tables.items()}
        self.every_steps = every_steps
        self.history: list[dict[str, float]] = []

    def _run(self, state, step: int) -> None:
        if not state.is_world_process_zero:
            return
        metrics: dict[str, float] = {}
        for name, (images, targets) in self.tables.items():
            for key, value in zero_shot_srcc(self.model, images, targets).items():
                metrics[f"zeroshot_{name}_{key}"] = value
        self.history.append({"step": step, **metrics})
        logger.info("step %d: %s", step, metrics)
        state.log_history.append({"step": step, **metrics})

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._run(state, 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_steps and state.global_step % self.every_steps == 0 and state.global_step < state.max_steps:
            self._run(state, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self._run(state, state.global_step)


# ------------------------------------------------------------------------------------------------------------------
# Model construction and training.


def build_model(
    text_config: Mapping[str, Any],
    vision_config: Mapping[str, Any],
    projection_dim: int,
    tokenizer_dir: str | os.PathLike,
    seed: int = 0,
    **config_kwargs,
) -> UniQAModel:
    """A randomly initialised UniQA model from tower sizes (CLIP defaults for what is not given), with the CLIP
    tokenizer written to `tokenizer_dir`. Seeded: the same arguments give the same weights."""
    text = {
        "eos_token_id": EOS_TOKEN_ID,
        "bos_token_id": BOS_TOKEN_ID,
        "pad_token_id": PAD_TOKEN_ID,
        "hidden_act": "quick_gelu",
    }
    vision = {"hidden_act": "quick_gelu"}
    text.update(text_config)
    vision.update(vision_config)
    text["projection_dim"] = vision["projection_dim"] = projection_dim
    config = UniQAConfig(
        text_config=CLIPTextConfig(**text),
        vision_config=CLIPVisionConfig(**vision),
        projection_dim=projection_dim,
        **config_kwargs,
    )
    torch.manual_seed(seed)
    model = UniQAModel(config)
    model.tokenizer = write_tokenizer(tokenizer_dir, context_length=text.get("max_position_embeddings", 77))
    return model


PRETRAIN_OPTIONS: dict[str, Any] = {
    "epochs": 1,
    "eval_every_steps": 0,
    "group_size": 1,
    "ranking_weight": 0.0,
    "rank_across_distortions": False,
    "anchored_runs": False,
    "runs_by_distortion": False,
}


def split_pretraining_config(section: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config's `pretraining:` section -> (the keyword arguments of [`pretrain`] in [`PRETRAIN_OPTIONS`], with
    their defaults and types; everything else: `TrainingArguments` overrides for [`pretraining_arguments`])."""
    overrides = dict(section or {})
    options = {key: type(default)(overrides.pop(key, default)) for key, default in PRETRAIN_OPTIONS.items()}
    return options, overrides


def pretraining_arguments(output_dir: str | os.PathLike, **overrides) -> TrainingArguments:
    """`TrainingArguments` with the authors' optimiser defaults and what contrastive training needs
    (drop the last incomplete batch, keep all columns); `overrides` win."""
    values: dict[str, Any] = {
        **AUTHORS_OPTIMIZER,
        "output_dir": str(output_dir),
        "lr_scheduler_type": "cosine",
        "dataloader_drop_last": True,
        "remove_unused_columns": False,
        "report_to": "none",
        "save_strategy": "steps",
        "logging_steps": 10,
        "seed": 0,
        "data_seed": 0,
    }
    values.update(overrides)
    return TrainingArguments(**values)


class ContrastiveTrainer(Trainer):
    """`Trainer` reading the (already shuffled, deterministic) [`CorpusDataset`] in order, so that resuming
    from a checkpoint continues with exactly the items an uninterrupted run would have seen.

    A [`StreamingCorpusDataset`] is read by a plain `DataLoader` (it splits itself across processes and workers:
    accelerate must not shard or dispatch it again), and `stream_position` records what each step consumed."""

    def __init__(self, *args, stream_position: StreamPosition | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream_position = stream_position

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def get_train_dataloader(self) -> DataLoader:
        if not isinstance(self.train_dataset, StreamingCorpusDataset):
            return super().get_train_dataloader()
        workers = self.args.dataloader_num_workers
        return DataLoader(
            self.train_dataset,
            batch_size=self.args.train_batch_size,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor if workers else None,
        )

    def compute_loss(self, model, inputs, *args, **kwargs):
        stream_state = inputs.pop("stream_state", None)
        if stream_state is not None and self.stream_position is not None:
            self.stream_position.record(stream_state)
        return super().compute_loss(model, inputs, *args, **kwargs)


def pretrain(
    model: UniQAModel,
    corpus: Sequence[Mapping[str, Any]] | CorpusStream,
    image_root: str | os.PathLike,
    args: TrainingArguments,
    epochs: int = 1,
    eval_tables: Mapping[str, tuple[Sequence[Any], Sequence[float]]] | None = None,
    eval_every_steps: int = 0,
    resume_from_checkpoint: str | bool | None = None,
    group_size: int = 1,
    ranking_weight: float = 0.0,
    rank_across_distortions: bool = False,
    anchored_runs: bool = False,
    runs_by_distortion: bool = False,
) -> dict[str, Any]:
    """Contrastively train both towers of `model` on `corpus` (entries `{"image_path", "prompt"}` under
    `image_root`) for `epochs` passes; `args.num_train_epochs` is ignored (the dataset holds the passes).
    `eval_tables` (`{name: (images, targets)}`) are scored zero-shot before, during and after training.
    `group_size > 1` puts entries of the same `group` together in batches (see [`CorpusDataset`]);
    `ranking_weight > 0` adds that times [`quality_ranking_loss`] over the entries with a `level` (runs then share
    their crops; levels of different distortions are compared too with `rank_across_distortions`);
    `anchored_runs` and `runs_by_distortion` choose what a run holds (see [`CorpusDataset`]).

    A [`CorpusStream`] (from [`read_corpus_stream`]) is streamed instead ([`StreamingCorpusDataset`], split across
    `args.world_size` processes): it has no length, so `args.max_steps` must be set and `epochs` does not apply; a
    resumed run continues every dataloader worker's stream from the checkpoint's `stream_state-rank<R>.json`.

    Saves the trained model (with tokenizer and processor) to `args.output_dir/final` on the main process and
    returns `{"train": trainer metrics, "zero_shot": [SRCC history], "log_history": [...]}`.
    """
    callbacks: list[TrainerCallback] = []
    stream_position = None
    if isinstance(corpus, CorpusStream):
        if args.max_steps <= 0:
            raise ValueError("a streaming corpus has no length: set max_steps > 0 (config `pretraining:` section)")
        if group_size != 1 or ranking_weight or anchored_runs or runs_by_distortion:
            raise ValueError(
                "group_size, ranking_weight, anchored_runs and runs_by_distortion apply to an in-memory corpus "
                "(read_corpus), not to a streaming one"
            )
        if epochs != 1:
            raise ValueError(f"epochs={epochs} does not apply to a streaming corpus: it is read until max_steps")
        dataset = StreamingCorpusDataset(
            corpus, image_root, model.image_processor, args.seed, rank=args.process_index, world_size=args.world_size
        )
        stream_position = StreamPosition(args.process_index, args.world_size, args.dataloader_num_workers)
        callbacks.append(stream_position)
        if resume_from_checkpoint:
            if resume_from_checkpoint is True:
                resume_from_checkpoint = get_last_checkpoint(args.output_dir)
                if resume_from_checkpoint is None:
                    raise ValueError(f"no checkpoint to resume from in {args.output_dir}")
            stream_position.load(resume_from_checkpoint)
            dataset.resume_from(stream_position.positions, stream_position.batches, stream_position.workers)
            args.ignore_data_skip = True  # the dataset skips what was used (index lines only, no image decoded)
    else:
        if (ranking_weight or anchored_runs or runs_by_distortion) and group_size < 2:
            raise ValueError(
                "ranking_weight, anchored_runs and runs_by_distortion arrange distortions of one photo: they need "
                "group_size >= 2"
            )
        dataset = CorpusDataset(
            corpus,
            image_root,
            model.image_processor,
            epochs=epochs,
            seed=args.seed,
            group_size=group_size,
            shared_crops=ranking_weight > 0,
            anchored_runs=anchored_runs,
            runs_by_distortion=runs_by_distortion,
        )
        args.num_train_epochs = 1
    model.train()
    zero_shot = None
    if eval_tables:
        zero_shot = ZeroShotEvalCallback(model, eval_tables, every_steps=eval_every_steps)
        callbacks.append(zero_shot)
    trainer = ContrastiveTrainer(
        model=ContrastiveModel(model, ranking_weight, rank_across_distortions),
        args=args,
        train_dataset=dataset,
        data_collator=ContrastiveCollator(model.tokenizer, model.config.text_config.max_position_embeddings),
        callbacks=callbacks,
        stream_position=stream_position,
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    with torch.no_grad():
        model.clip.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
    model.eval()
    if trainer.is_world_process_zero():
        model.save_pretrained(Path(args.output_dir) / "final")
    return {
        "train": result.metrics,
        "zero_shot": zero_shot.history if zero_shot else [],
        "log_history": trainer.state.log_history,
    }
