"""Adapter fine-tuning: image + MOS tables, train-time augmentation, feature caching and the Trainer setup.

The backbone is frozen and the adapter sees only the pooled image embedding, so the default path computes the
embeddings of `crops_per_image` augmented crops (random 224 crop of the un-resized image + random horizontal flip)
per training image once, caches them (on disk when `cache_dir` is given, keyed by model + image + crop recipe),
and trains the adapter from the cache with `transformers.Trainer`. Each epoch shows every image once, as one of
its cached crops, chosen from (seed, image, epoch) alone. Trainer's own mechanisms do the rest: validation every
epoch (`compute_metrics`), the checkpoint with the best validation SRCC (`metric_for_best_model`,
`load_best_model_at_end`), and resuming an interrupted run (`resume_from_checkpoint`, `get_last_checkpoint`).
Training-only module.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType, get_last_checkpoint
from transformers.training_args import OptimizerNames

from ..image_processing_uniqa import UniQAImageProcessor
from ..modeling_uniqa import UniQAModel, UniQAOutput
from .metrics import METRIC_NAMES, compute_metrics, iqa_metrics

Table = list[tuple[str, float]]


@dataclass
class AdapterArguments:
    """What the multi-cue adapter and its features are (the Trainer settings are [`FinetuneTrainingArguments`])."""

    crops_per_image: int = field(default=8, metadata={"help": "K augmented crops per training image (cached)"})
    cache_features: bool = field(
        default=True, metadata={"help": "train from cached features (False: run the backbone on every step)"}
    )
    eval_crop_mode: str | None = field(default=None, metadata={"help": "validation crops (default: the model's)"})
    eval_crops: int | None = field(default=None, metadata={"help": "validation crops per image (default: the model's)"})
    max_side: int | None = field(default=None, metadata={"help": "downscale images larger than this first"})
    feature_batch_size: int = field(default=32, metadata={"help": "crops per backbone forward pass"})
    bf16_features: bool = field(default=False, metadata={"help": "compute features under bf16 autocast"})
    prompt_set: str = field(default="level5", metadata={"help": "the adapter's level prompts"})
    bottleneck_dim: int | None = field(default=None, metadata={"help": "adapter bottleneck (default: embed/2)"})

    def __post_init__(self) -> None:
        if self.crops_per_image < 1:
            raise ValueError("crops_per_image must be >= 1")


@dataclass
class FinetuneTrainingArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the authors' adapter recipe (docs/method.md, "Fine-tuning"):
    Adam (AdamW without weight decay) at 2e-4, batch 8, cosine to 0 without warm-up, 50 epochs, seed 123;
    validation and a checkpoint every epoch, the checkpoint with the best validation SRCC loaded at the end.
    Every field can be overridden as usual (`--num-train-epochs 20`, `--learning-rate 1e-4`, ...).

    `output_dir=None` (the default) keeps the checkpoints in a temporary folder that [`finetune_adapter`] removes;
    `resume_from_checkpoint` is a `checkpoint-N` folder or `latest` (the newest in `output_dir`).
    """

    output_dir: str | None = field(
        default=None, metadata={"help": "checkpoint folder (none: a temporary one, removed at the end)"}
    )
    num_train_epochs: float = field(default=50, metadata={"help": "training epochs (authors: LIVEC 50, KonIQ 20)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "Adam learning rate"})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "training batch size (images)"})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "validation batch size (images)"})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "annealed to 0 per step"})
    optim: OptimizerNames | str = field(default="adamw_torch", metadata={"help": "the optimizer (Adam(W))"})
    seed: int = field(default=123, metadata={"help": "seed of initialisation, crops, flips and batch order"})
    eval_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "validate every epoch"})
    save_strategy: SaveStrategy | str = field(default="epoch", metadata={"help": "a checkpoint every epoch"})
    logging_strategy: IntervalStrategy | str = field(default="epoch", metadata={"help": "log every epoch"})
    metric_for_best_model: str | None = field(default="srcc", metadata={"help": "validation metric selecting"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "end with the best checkpoint's adapter"})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "logging integrations"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "keep every item key"})

    def __post_init__(self) -> None:
        temporary = self.output_dir is None
        super().__post_init__()
        if temporary:  # TrainingArguments would write to ./trainer_output
            self.output_dir = None


RECIPE_FIELDS = (  # what `config.adapters[name]["training"]` records (not where the run was written)
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "optim",
    "seed",
    "metric_for_best_model",
)


def finetune_arguments(values: Mapping[str, Any]) -> tuple[AdapterArguments, FinetuneTrainingArguments]:
    """A flat mapping of [`AdapterArguments`] and `TrainingArguments` fields (a YAML/JSON config section) ->
    the two dataclasses, the recipe's defaults where a field is not given; unknown keys are an error."""
    return HfArgumentParser((AdapterArguments, FinetuneTrainingArguments)).parse_dict(dict(values))


# ----------------------------------------------------------------------------------------------------------------
# Tables.


def read_mos_table(
    path: str | os.PathLike,
    image_column: str = "image",
    mos_column: str = "mos",
    image_root: str | os.PathLike | None = None,
) -> Table:
    """A CSV or JSONL table of images and MOS -> `[(image path, mos)]` in file order.

    Relative image paths are resolved against `image_root` (default: the table's folder); every image must exist.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    table: Table = []
    for number, row in enumerate(rows, start=1):
        if image_column not in row or mos_column not in row:
            raise ValueError(f"{path}: row {number} lacks column {image_column!r} or {mos_column!r} (has {list(row)})")
        image = Path(str(row[image_column]))
        image = image if image.is_absolute() else root / image
        if not image.is_file():
            raise FileNotFoundError(f"{path}: row {number}: image {image} not found (image_root={root})")
        try:
            mos = float(row[mos_column])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: row {number}: MOS {row[mos_column]!r} is not a number") from error
        table.append((str(image), mos))
    if not table:
        raise ValueError(f"{path}: no rows")
    return table


def benchmark_table(name: str, data_dir: str | os.PathLike, split: str = "train", **config: Any) -> Table:
    """A split of a `datasets_scripts` benchmark -> `[(image path, mos)]` (original MOS scale)."""
    import datasets

    from datasets_scripts import load_benchmark

    ds = load_benchmark(name, str(data_dir), split=split, **config)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    return [(row["image"]["path"], float(row["mos"])) for row in ds.select_columns(["image", "mos"])]


def split_table(table: Table, test_fraction: float = 0.2, seed: int = 123) -> tuple[Table, Table]:
    """Seeded split by image name: rows sorted by path, permuted with `seed` -> `(train, held_out)`.

    The same set of images and seed always give the same split, whatever the input order.
    """
    rows = sorted(table)
    order = np.random.default_rng(seed).permutation(len(rows))
    n_held = int(round(len(rows) * test_fraction))
    held = sorted(rows[i] for i in order[:n_held])
    return sorted(rows[i] for i in order[n_held:]), held


def normalize_mos(mos: Sequence[float], mos_range: tuple[float, float], higher_is_better: bool = True) -> np.ndarray:
    """MOS -> `[0, 1]` targets, higher is better (the `BenchmarkSpec.normalize` of `datasets_scripts`)."""
    from datasets_scripts.specs import BenchmarkSpec

    spec = BenchmarkSpec("custom", "custom", "quality", float(mos_range[0]), float(mos_range[1]), higher_is_better)
    return np.atleast_1d(spec.normalize(np.asarray(mos, dtype=np.float64)))


# ----------------------------------------------------------------------------------------------------------------
# Crops and the feature cache.


def augmented_crops(
    processor: UniQAImageProcessor,
    image: Any,
    crops: int,
    seed: int,
    max_side: int | None = None,
    content_seeded: bool = True,
) -> torch.Tensor:
    """Train-time augmentation (the one crop + flip of this package): `crops` random crops of the un-resized
    image, each flipped horizontally with probability 1/2 -> `(crops, 3, S, S)`.

    Deterministic for an image's content and `seed`; with `content_seeded=False`, windows and flips depend on
    `seed` alone, so images of one size drawn with one seed get the same crops and flips."""
    pixels = processor.crop_image(
        image, crop_mode="random", crops=crops, max_side=max_side, seed=seed, content_seeded=content_seeded
    )
    flip_seed = [seed, zlib.crc32(pixels.numpy().tobytes())] if content_seeded else [seed]
    flip = torch.from_numpy(np.random.default_rng(flip_seed).random(len(pixels)) < 0.5)
    pixels[flip] = pixels[flip].flip(-1)
    return pixels


def model_fingerprint(model: UniQAModel) -> str:
    """SHA-1 of the vision tower's weights, the projection and the image processor's settings."""
    digest = hashlib.sha1()
    state = {k: v for k, v in model.clip.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    processor = model.image_processor
    digest.update(json.dumps([processor.crop_size, processor.image_mean, processor.image_std]).encode())
    return digest.hexdigest()


def image_digest(image: Any) -> str:
    """SHA-1 of an image file's bytes (or of a PIL image's / array's pixels)."""
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as handle:
            return hashlib.file_digest(handle, "sha1").hexdigest()
    data = image.tobytes() if hasattr(image, "tobytes") else np.asarray(image).tobytes()
    return hashlib.sha1(data).hexdigest()


class FeatureCache:
    """Image embeddings of crops, computed once per (model, image, crop recipe).

    Args:
        model: the backbone (only its vision tower runs).
        cache_dir: folder for `<model fingerprint>/<key>.safetensors` files; `None` keeps features in memory only.
        batch_size: crops per forward pass. bf16: compute under bf16 autocast (features stored as float32).
        progress: show a progress bar while computing.
    """

    def __init__(
        self,
        model: UniQAModel,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        bf16: bool = False,
        progress: bool = True,
    ):
        self.model = model
        self.progress = progress
        self.batch_size = batch_size
        self.bf16 = bf16
        self.folder = Path(cache_dir) / model_fingerprint(model)[:20] if cache_dir is not None else None
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(N, 3, S, S)` crops -> `(N, D)` float32 raw image embeddings on the CPU (the backbone is frozen)."""
        outputs = []
        for start in range(0, len(pixels), self.batch_size):
            batch = pixels[start : start + self.batch_size].to(self.model.device, self.model.dtype)
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                outputs.append(self.model.get_image_features(batch).float().cpu())
        return torch.cat(outputs)

    def features(self, images: Sequence[Any], recipe: dict[str, Any], crop_fn, desc: str) -> list[torch.Tensor]:
        """Features of `crop_fn(image)` for each image -> `[(n_crops_i, D)]`, from the cache where present."""
        recipe_key = json.dumps({**recipe, "bf16": self.bf16}, sort_keys=True)
        results: list[torch.Tensor] = []
        for image in tqdm(images, desc=desc, unit="img", disable=not self.progress or len(images) < 2):
            path = None
            if self.folder is not None:
                key = hashlib.sha1(f"{image_digest(image)}|{recipe_key}".encode()).hexdigest()
                path = self.folder / f"{key}.safetensors"
                if path.is_file():
                    results.append(load_file(path)["features"])
                    self.hits += 1
                    continue
            features = self.embed(crop_fn(image))
            self.misses += 1
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                save_file({"features": features.contiguous()}, str(tmp), metadata={"recipe": recipe_key})
                os.replace(tmp, path)
            results.append(features)
        return results

    def train_features(self, images: Sequence[Any], crops: int, seed: int, max_side: int | None) -> list[torch.Tensor]:
        """`crops` augmented crops per image (see [`augmented_crops`]) -> `[(crops, D)]`."""
        processor = self.model.image_processor
        recipe = {"kind": "train", "crops": crops, "seed": seed, "max_side": max_side}
        return self.features(
            images, recipe, lambda im: augmented_crops(processor, im, crops, seed, max_side), "train features"
        )

    def eval_features(
        self, images: Sequence[Any], crop_mode: str | None, crops: int | None, max_side: int | None, seed: int = 0
    ) -> list[torch.Tensor]:
        """Test-time crops (the image processor's protocol, as `score` uses) -> `[(n_crops_i, D)]`."""
        processor = self.model.image_processor
        crop_mode, crops = crop_mode or processor.crop_mode, crops or processor.crops
        max_side = max_side if max_side is not None else processor.max_side
        recipe = {"kind": "eval", "crop_mode": crop_mode, "crops": crops, "seed": seed, "max_side": max_side}
        return self.features(
            images, recipe, lambda im: processor.crop_image(im, crop_mode, crops, max_side, seed), "eval features"
        )


# ----------------------------------------------------------------------------------------------------------------
# Datasets, collators and the feature-level scorer.


def crop_for_epoch(seed: int, index: int, epoch: int, crops: int) -> int:
    """The crop of image `index` shown in `epoch` (0-based): `rng([seed, index, epoch]).integers(crops)`, a
    function of its arguments alone, so cached and uncached runs and resumed runs pick the same crops."""
    return int(np.random.default_rng([seed, index, epoch]).integers(crops))


class _OneCropPerEpoch(torch.utils.data.Dataset):
    """A training dataset showing one crop of each image per epoch ([`crop_for_epoch`]).

    `Trainer` sets the epoch at the start of each one through `set_epoch` (accelerate's data loader forwards it to
    the dataset); with `dataloader_num_workers > 0` the workers must be re-created per epoch (the default)."""

    seed: int
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pick(self, index: int, crops: int) -> int:
        return crop_for_epoch(self.seed, index, self.epoch, crops)


class CachedFeatureDataset(_OneCropPerEpoch):
    """Items `{"image_embeds": (C, D), "labels": ()}`.

    `train=True`: one cached crop per epoch (C = 1, [`crop_for_epoch`]); otherwise all of an image's crops (its
    score is their mean).
    """

    def __init__(self, features: Sequence[torch.Tensor], labels: Sequence[float], train: bool, seed: int = 123):
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature sets for {len(labels)} labels")
        self.features = list(features)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        self.train, self.seed = train, seed

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        features = self.features[index]
        if self.train:
            k = self.pick(index, len(features))
            features = features[k : k + 1]
        return {"image_embeds": features, "labels": self.labels[index]}


class AugmentedImageDataset(_OneCropPerEpoch):
    """Uncached training items `{"pixel_values": (1, 3, S, S), "labels": ()}`, the same crops as the cache's."""

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[float],
        processor: UniQAImageProcessor,
        crops: int,
        seed: int = 123,
        max_side: int | None = None,
    ):
        self.images = list(images)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        self.processor, self.crops, self.seed, self.max_side = processor, crops, seed, max_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = augmented_crops(self.processor, self.images[index], self.crops, self.seed, self.max_side)
        k = self.pick(index, len(pixels))
        return {"pixel_values": pixels[k : k + 1], "labels": self.labels[index]}


def collate_features(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pads crop sets -> `image_embeds (B, C, D)`, `crop_mask (B, C)` (True = real crop), `labels (B,)`."""
    longest = max(len(item["image_embeds"]) for item in items)
    dim = items[0]["image_embeds"].shape[-1]
    embeds = torch.zeros(len(items), longest, dim)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for row, item in enumerate(items):
        n = len(item["image_embeds"])
        embeds[row, :n] = item["image_embeds"]
        mask[row, :n] = True
    return {"image_embeds": embeds, "crop_mask": mask, "labels": torch.stack([item["labels"] for item in items])}


def collate_pixels(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One crop per item -> `pixel_values (B, 3, S, S)`, `labels (B,)`."""
    return {
        "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        "labels": torch.stack([item["labels"] for item in items]),
    }


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """[`collate_pixels`] for image items, [`collate_features`] for feature items (one Trainer collates both)."""
    return collate_pixels(items) if "pixel_values" in items[0] else collate_features(items)


class CachedFeatureScorer(nn.Module):
    """Scores image embeddings with one of `model`'s multi-cue adapters through `model.level_head`, the model's
    one adapter -> level-prompt scoring. The adapter module is shared with `model` (training it trains the
    model's adapter, and it is all a checkpoint holds); the prompt embeddings and the temperature are frozen
    copies. `adapter_name=None` scores zero-shot with `prompt_set` (the model's levels), as `model.score` does.

    `embed`: a function `(N, 3, S, S) pixels -> (N, D)` raw embeddings (e.g. [`FeatureCache.embed`]), for items
    that carry `pixel_values` instead of cached `image_embeds` (training without the cache).
    """

    def __init__(
        self,
        model: UniQAModel,
        adapter_name: str | None,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        prompt_set: str | None = None,
    ):
        super().__init__()
        _, _, prompt_set = model.resolve(adapter=adapter_name, prompt_set=prompt_set)
        self.adapter = model.adapters[adapter_name] if adapter_name is not None else None
        self.level_head = model.level_head  # stateless
        self.embed = embed
        with torch.no_grad():
            text_embeds = model.prompt_embeds(prompt_set).detach().clone().float()
            self.register_buffer("text_embeds", text_embeds, persistent=False)
            self.register_buffer("logit_scale", model.clip.logit_scale.detach().clone().float(), persistent=False)
            self.register_buffer("zero_shot_levels", model.levels_for(None).detach().clone().float(), persistent=False)

    def forward(
        self,
        image_embeds: torch.Tensor | None = None,
        crop_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> UniQAOutput:
        """`image_embeds (B, C, D)` (or `(B, D)`, or `pixel_values (B, 3, S, S)`), `crop_mask (B, C)` -> per-image
        `scores (B,)` (mean over crops) and the MSE `loss` against `labels (B,)`."""
        if pixel_values is not None:
            image_embeds = self.embed(pixel_values)
        if image_embeds.dim() == 2:
            image_embeds = image_embeds[:, None]
        levels = self.adapter.levels if self.adapter is not None else self.zero_shot_levels
        mask = image_embeds.new_ones(image_embeds.shape[:2], dtype=torch.bool) if crop_mask is None else crop_mask
        mask = mask.to(levels.device)
        real = image_embeds.to(levels.device, levels.dtype)[mask]  # padding is never scored (it would be 0/0)
        crop_scores, _ = self.level_head(real, self.text_embeds, levels, self.logit_scale, self.adapter)
        scores = crop_scores.new_zeros(mask.shape)
        scores[mask] = crop_scores
        scores = scores.sum(-1) / mask.sum(-1).to(scores.dtype)
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(scores.float(), labels.to(scores.device, torch.float32))
        return UniQAOutput(loss=loss, scores=scores)


@torch.no_grad()
def feature_scores(scorer: CachedFeatureScorer, features: Sequence[torch.Tensor]) -> torch.Tensor:
    """`scorer`'s per-image scores (the mean over each image's crops) of cached features `[(n_crops_i, D)]` ->
    `(N,)` float32 on the CPU."""
    device = scorer.text_embeds.device
    batch = collate_features([{"image_embeds": f, "labels": torch.zeros(())} for f in features])
    return scorer(batch["image_embeds"].to(device), batch["crop_mask"].to(device)).scores.float().cpu()


@torch.no_grad()
def evaluate_features(scorer: CachedFeatureScorer, dataset: CachedFeatureDataset) -> dict[str, float]:
    """Metrics of `scorer`'s per-image crop-mean scores against `dataset.labels`, plus the MSE `loss` (for a
    dataset outside a Trainer run, e.g. a protocol's test split)."""
    scores = feature_scores(scorer, dataset.features)
    loss = nn.functional.mse_loss(scores, dataset.labels)
    return {**iqa_metrics(scores.numpy(), dataset.labels.numpy()), "loss": float(loss)}


# ----------------------------------------------------------------------------------------------------------------
# Training.


def checkpoint_to_resume(args: TrainingArguments) -> str | None:
    """`args.resume_from_checkpoint` -> what `Trainer.train(resume_from_checkpoint=...)` takes: `latest` (or
    `true`) is the newest `checkpoint-N` of `args.output_dir` (`get_last_checkpoint`); a folder stays as given;
    `None`/"" -> `None` (a fresh run)."""
    value = args.resume_from_checkpoint
    if value is not True and str(value).lower() not in ("latest", "true"):
        return value or None
    last = get_last_checkpoint(args.output_dir) if args.output_dir and os.path.isdir(args.output_dir) else None
    if last is None:
        raise FileNotFoundError(f"resume_from_checkpoint=latest: no checkpoint-N folder in {args.output_dir}")
    return last


def _validation_metrics(logs: Mapping[str, float]) -> dict[str, float]:
    """A Trainer evaluation log -> `{srcc, plcc, plcc_logistic, krcc, rmse, loss}` (no prefix, no timings)."""
    return {name: logs[f"eval_{name}"] for name in (*METRIC_NAMES, "loss")}


def finetune_adapter(
    model: UniQAModel,
    train: Sequence[tuple[Any, float]],
    validation: Sequence[tuple[Any, float]],
    adapter_name: str,
    mos_range: tuple[float, float],
    higher_is_better: bool = True,
    task: str = "quality",
    dataset: str | None = None,
    args: TrainingArguments | None = None,
    adapter_args: AdapterArguments | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train a new multi-cue adapter `adapter_name` on `model`'s frozen backbone with `transformers.Trainer`.

    Args:
        model: the backbone; the adapter is added to it (the name must be new: `delete_multicue_adapter` first to
            retrain).
        train, validation: `[(image, mos)]`, images as paths (or PIL images / arrays), MOS on the dataset's scale.
        mos_range: `(low, high)` of the MOS scale; targets are the MOS normalised to `[0, 1]`, higher is better
            (flipped when `higher_is_better=False`).
        task, dataset: stored with the adapter in `model.config.adapters[adapter_name]`, with the images it was
            trained and selected on (`images`: `{"trained", "selected"}`, see `modeling_uniqa.training.provenance`).
        args: the Trainer settings (default: [`FinetuneTrainingArguments`], the authors' recipe). Its
            `eval_strategy`, `metric_for_best_model` and `load_best_model_at_end` select the checkpoint;
            `resume_from_checkpoint` (a `checkpoint-N` folder or `latest`) continues an interrupted run to the
            same weights and metrics as an uninterrupted one; `output_dir=None` checkpoints to a temporary folder.
        adapter_args: [`AdapterArguments`] (crops, feature cache, prompt set, bottleneck).
        cache_dir: where features are cached on disk (reused across runs); `None` keeps them in memory.
        callbacks: extra Trainer callbacks.

    Returns:
        Validation metrics of the adapter as it ends (the selected checkpoint's; targets in `[0, 1]`): `srcc`,
        `plcc`, `plcc_logistic`, `krcc`, `rmse` (normalised scale), `loss`, plus `best_epoch`, `untrained` (the
        same metrics before training) and `history` (every validation: `epoch`, `step` and the metrics). The
        adapter stays in the model; the model's train/eval mode is restored and its other weights are untouched.
    """
    args = args if args is not None else FinetuneTrainingArguments()
    adapter_args = adapter_args or AdapterArguments()
    resume = checkpoint_to_resume(args)
    if len(train) < 1 or len(validation) < 3:
        raise ValueError(f"need training images and >= 3 validation images (got {len(train)}, {len(validation)})")
    train_images, train_mos = zip(*train, strict=True)
    val_images, val_mos = zip(*validation, strict=True)
    train_labels = normalize_mos(train_mos, mos_range, higher_is_better)
    val_labels = normalize_mos(val_mos, mos_range, higher_is_better)
    torch.manual_seed(args.seed)
    adapter = model.add_multicue_adapter(
        adapter_name,
        task=task,
        bottleneck_dim=adapter_args.bottleneck_dim,
        prompt_set=adapter_args.prompt_set,
        dataset=dataset,
        mos_range=[float(mos_range[0]), float(mos_range[1])],
        higher_is_better=higher_is_better,
    )
    adapter.requires_grad_(True)
    was_training = model.training
    model.eval()
    cache = FeatureCache(
        model, cache_dir, adapter_args.feature_batch_size, adapter_args.bf16_features, not args.disable_tqdm
    )
    val_features = cache.eval_features(
        val_images, adapter_args.eval_crop_mode, adapter_args.eval_crops, adapter_args.max_side
    )
    val_set = CachedFeatureDataset(val_features, val_labels, train=False)
    if adapter_args.cache_features:
        train_features = cache.train_features(
            train_images, adapter_args.crops_per_image, args.seed, adapter_args.max_side
        )
        train_set = CachedFeatureDataset(train_features, train_labels, train=True, seed=args.seed)
    else:  # the same crops, through the backbone on every step
        train_set = AugmentedImageDataset(
            train_images,
            train_labels,
            model.image_processor,
            adapter_args.crops_per_image,
            args.seed,
            adapter_args.max_side,
        )
    scorer = CachedFeatureScorer(model, adapter_name, embed=cache.embed)
    try:
        with tempfile.TemporaryDirectory(prefix="uniqa-finetune-") as scratch:
            run_args = args if args.output_dir else dataclasses.replace(args, output_dir=scratch)
            trainer = Trainer(
                model=scorer,
                args=run_args,
                train_dataset=train_set,
                eval_dataset=val_set,
                data_collator=collate,
                compute_metrics=compute_metrics,
                callbacks=list(callbacks),
            )
            untrained = _validation_metrics(trainer.evaluate())
            trainer.train(resume_from_checkpoint=resume)
            history = [
                {"epoch": logs["epoch"], "step": logs["step"], **_validation_metrics(logs)}
                for logs in trainer.state.log_history
                if "eval_loss" in logs
            ]
            metrics = _validation_metrics(trainer.evaluate())
    finally:
        model.train(was_training)
        adapter.to(model.device)
    best_step = trainer.state.best_global_step
    best_epoch = next((h["epoch"] for h in history if h["step"] == best_step), None)
    metrics = {**metrics, "best_epoch": best_epoch}
    model.config.adapters[adapter_name]["metrics"] = {k: round(v, 6) for k, v in metrics.items() if v is not None}
    recipe = run_args.to_dict()
    model.config.adapters[adapter_name]["training"] = {
        **{key: recipe[key] for key in RECIPE_FIELDS},
        **dataclasses.asdict(adapter_args),
        "train_images": len(train),
        "validation_images": len(validation),
    }
    from .provenance import image_record  # provenance imports this module

    model.config.adapters[adapter_name]["images"] = {
        "trained": image_record(train_images),
        "selected": image_record(val_images),
    }
    return {**metrics, "untrained": untrained, "history": history}


def copy_adapter_state(model: UniQAModel, name: str) -> dict[str, torch.Tensor]:
    """A detached copy of an adapter's weights (for comparisons and rollbacks)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.adapters[name].state_dict().items()})


# ----------------------------------------------------------------------------------------------------------------
# LoRA on the CLIP towers (beyond the paper).

VISION_ATTENTION = r".*vision_model\..*\.(q_proj|v_proj)"


def add_lora(
    model: UniQAModel,
    adapter_name: str,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = VISION_ATTENTION,
):
    """Wrap `model` in a `peft.PeftModel` with LoRA on `target_modules` (default: the vision tower's query and
    value projections) and the multi-cue adapter `adapter_name` fully trainable (`modules_to_save`).

    The adapter becomes the active one, so `peft_model(pixel_values=..., labels=...)` trains both; after training,
    `peft_model.merge_and_unload()` returns the plain `UniQAModel` with LoRA merged into its weights.
    """
    from peft import LoraConfig, get_peft_model

    model.set_multicue_adapter(adapter_name)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        modules_to_save=[f"adapters.{adapter_name}"],
        bias="none",
    )
    return get_peft_model(model, config)
