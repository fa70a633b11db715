"""Adapter fine-tuning: image + MOS tables, train-time augmentation, feature caching and the Trainer setup.

The backbone is frozen and the adapter sees only the pooled image embedding, so the default path computes the
embeddings of `crops_per_image` augmented crops (random 224 crop of the un-resized image + random horizontal flip)
per training image once, caches them (on disk when `cache_dir` is given, keyed by model + image + crop recipe),
and trains the adapter from the cache with `transformers.Trainer`. Each epoch shows every image once, as one of
its cached crops, chosen from (seed, image, epoch) alone. The checkpoint with the best validation SRCC is kept.
With an `output_dir`, every epoch writes a Trainer checkpoint that also holds the best adapter so far, so an
interrupted run resumes (`resume_from_checkpoint`) to the same result. Training-only module.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..image_processing_uniqa import UniQAImageProcessor
from ..modeling_uniqa import UniQAModel, UniQAOutput
from .metrics import iqa_metrics

Table = list[tuple[str, float]]


@dataclass
class FinetuneArguments:
    """Adapter training settings; the defaults are the authors' recipe (method.md §5)."""

    epochs: int = field(default=50, metadata={"help": "training epochs (authors: LIVEC 50, KonIQ 20)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=8, metadata={"help": "training batch size (images)"})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name, annealed to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam weight decay (authors: none)"})
    seed: int = field(default=123, metadata={"help": "seed of initialisation, crops, flips and batch order"})
    crops_per_image: int = field(default=8, metadata={"help": "K augmented crops per training image (cached)"})
    use_cache: bool = field(default=True, metadata={"help": "train from cached features (False: run the backbone)"})
    eval_crop_mode: str | None = field(default=None, metadata={"help": "validation crops (default: the model's)"})
    eval_crops: int | None = field(default=None, metadata={"help": "validation crops per image"})
    max_side: int | None = field(default=None, metadata={"help": "downscale images larger than this first"})
    feature_batch_size: int = field(default=32, metadata={"help": "crops per backbone forward pass"})
    bf16_features: bool = field(default=False, metadata={"help": "compute features under bf16 autocast"})
    prompt_set: str = field(default="level5", metadata={"help": "the adapter's level prompts"})
    bottleneck_dim: int | None = field(default=None, metadata={"help": "adapter bottleneck (default embed/2)"})
    metric_for_best: str = field(default="srcc", metadata={"help": "validation metric selecting the checkpoint"})
    output_dir: str | None = field(
        default=None, metadata={"help": "checkpoint folder: a checkpoint every epoch (default: none, temporary)"}
    )
    save_total_limit: int | None = field(default=None, metadata={"help": "keep only the newest N checkpoints"})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "resume from this checkpoint folder, or 'latest' (True) in output_dir"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.crops_per_image < 1:
            raise ValueError("epochs, batch_size and crops_per_image must be >= 1")


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
    processor: UniQAImageProcessor, image: Any, crops: int, seed: int, max_side: int | None = None
) -> torch.Tensor:
    """Train-time augmentation: `crops` random crops of the un-resized image, each flipped horizontally with
    probability 1/2 -> `(crops, 3, S, S)`. Deterministic for an image's content and `seed`."""
    pixels = processor.crop_image(image, crop_mode="random", crops=crops, max_side=max_side, seed=seed)
    flips = np.random.default_rng([seed, zlib.crc32(pixels.numpy().tobytes())]).random(len(pixels)) < 0.5
    flip = torch.from_numpy(flips)
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

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(N, 3, S, S)` crops -> `(N, D)` float32 raw image embeddings on the CPU."""
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


class CachedFeatureScorer(nn.Module):
    """Scores cached image embeddings with one of `model`'s adapters, exactly as `UniQAModel.forward` does after
    the vision tower. The adapter module is shared with `model` (training it trains the model's adapter); the
    prompt embeddings and the temperature are frozen copies."""

    def __init__(self, model: UniQAModel, adapter_name: str):
        super().__init__()
        self.adapter = model.adapters[adapter_name]
        self.level_head = model.level_head
        with torch.no_grad():
            prompt_set = model.config.adapters[adapter_name].get("prompt_set", "level5")
            self.register_buffer("text_embeds", model.prompt_embeds(prompt_set).detach().clone().float())
            self.register_buffer("logit_scale", model.clip.logit_scale.detach().clone().float())

    def forward(
        self, image_embeds: torch.Tensor, crop_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> UniQAOutput:
        """`image_embeds (B, C, D)` (or `(B, D)`), `crop_mask (B, C)` -> per-image `scores (B,)` (mean over crops)
        and the MSE `loss` against `labels (B,)`."""
        if image_embeds.dim() == 2:
            image_embeds = image_embeds[:, None]
        batch, crops, dim = image_embeds.shape
        flat = image_embeds.reshape(batch * crops, dim).to(self.adapter.levels.dtype)
        scores, _ = self.level_head(self.adapter(flat), self.text_embeds, self.adapter.levels, self.logit_scale)
        scores = scores.view(batch, crops)
        if crop_mask is None:
            crop_mask = torch.ones_like(scores, dtype=torch.bool)
        weights = crop_mask.to(scores.dtype)
        scores = (scores * weights).sum(-1) / weights.sum(-1)
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(scores.float(), labels.to(scores.device, torch.float32))
        return UniQAOutput(loss=loss, scores=scores)


class ValidationSelector(TrainerCallback):
    """Validates from cached features at the end of every epoch and keeps a copy of the adapter's weights at its
    best `metric` (higher is better); `history` lists every epoch's metrics.

    Every Trainer checkpoint gets the selection so far (`best_adapter.safetensors`, the weights, and
    `best_adapter.json`, the metric, best value and epoch, and the history); `load` restores it on resume."""

    WEIGHTS, STATE = "best_adapter.safetensors", "best_adapter.json"

    def __init__(self, scorer: CachedFeatureScorer, validation: CachedFeatureDataset, metric: str = "srcc"):
        self.scorer = scorer
        self.validation = validation
        self.metric = metric
        self.best = -math.inf
        self.best_epoch: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def on_epoch_end(self, args, state, control, **kwargs):
        metrics = evaluate_features(self.scorer, self.validation)
        self.history.append({"epoch": state.epoch, **metrics})
        value = metrics[self.metric]
        if math.isfinite(value) and value > self.best:
            self.best, self.best_epoch = value, state.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.scorer.adapter.state_dict().items()}

    def on_save(self, args, state, control, **kwargs):
        self.save(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")

    def save(self, folder: str | os.PathLike) -> None:
        """Write the selection into a checkpoint folder (the JSON last: its presence marks a complete save)."""
        folder = Path(folder)
        weights = {k: v.detach().cpu().contiguous() for k, v in (self.best_state or {}).items()}
        save_file(weights, str(folder / self.WEIGHTS))
        state = {"metric": self.metric, "best": self.best, "best_epoch": self.best_epoch, "history": self.history}
        tmp = folder / f"{self.STATE}.tmp"
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, folder / self.STATE)

    def load(self, folder: str | os.PathLike) -> None:
        """Restore the selection saved in a checkpoint folder by [`save`]."""
        folder = Path(folder)
        if not (folder / self.STATE).is_file():
            raise FileNotFoundError(
                f"{folder / self.STATE} not found: {folder} was not written by finetune_adapter, or the run was "
                "killed while saving it; resume from an earlier checkpoint"
            )
        state = json.loads((folder / self.STATE).read_text())
        if state["metric"] != self.metric:
            raise ValueError(f"{folder}: the checkpoint selects on {state['metric']!r}, not {self.metric!r}")
        self.best, self.best_epoch, self.history = state["best"], state["best_epoch"], state["history"]
        weights = load_file(str(folder / self.WEIGHTS))
        self.best_state = weights or None

    def restore(self) -> None:
        """Load the best weights back into the adapter."""
        if self.best_state is not None:
            self.scorer.adapter.load_state_dict(self.best_state)


@torch.no_grad()
def evaluate_features(scorer: CachedFeatureScorer, dataset: CachedFeatureDataset) -> dict[str, float]:
    """Metrics of `scorer`'s per-image crop-mean scores against `dataset.labels`, plus the MSE `loss`."""
    device = scorer.adapter.levels.device
    batch = collate_features([dataset[i] for i in range(len(dataset))])
    output = scorer(batch["image_embeds"].to(device), batch["crop_mask"].to(device), batch["labels"].to(device))
    return {**iqa_metrics(output.scores.float().cpu().numpy(), dataset.labels.numpy()), "loss": float(output.loss)}


# ----------------------------------------------------------------------------------------------------------------
# Training.


RUN_ONLY_ARGUMENTS = ("output_dir", "save_total_limit", "resume_from_checkpoint", "progress")  # not the recipe


def training_arguments(args: FinetuneArguments, output_dir: str, **overrides: Any) -> TrainingArguments:
    """The Trainer settings of the recipe: Adam (AdamW, no weight decay), cosine to 0, per-step schedule; a
    checkpoint every epoch when `args.output_dir` is set (none otherwise)."""
    options: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": max(args.batch_size, 32),
        "lr_scheduler_type": args.lr_scheduler,
        "warmup_steps": 0,
        "weight_decay": args.weight_decay,
        "optim": "adamw_torch",
        "seed": args.seed,
        "data_seed": args.seed,
        "save_strategy": "epoch" if args.output_dir else "no",
        "save_total_limit": args.save_total_limit,
        "logging_strategy": "epoch",
        "report_to": [],
        "disable_tqdm": not args.progress,
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
    }
    options.update(overrides)
    return TrainingArguments(**options)


def checkpoint_to_resume(args: FinetuneArguments) -> str | None:
    """`args.resume_from_checkpoint` -> a checkpoint folder: a path as given; `True`/"latest"/"true" the newest
    complete `checkpoint-*` of `args.output_dir` (one holding the best-adapter selection, written last);
    `None`/`False`/"" -> `None` (a fresh run)."""
    value = args.resume_from_checkpoint
    if value is None or value is False or value == "":
        return None
    if value is True or str(value).lower() in ("latest", "true"):
        if not args.output_dir:
            raise ValueError("resume_from_checkpoint='latest' needs output_dir (the folder holding the checkpoints)")
        folder = Path(args.output_dir)
        steps = {
            int(p.name.rsplit("-", 1)[1]): p
            for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
            if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()
        }
        complete = [steps[n] for n in sorted(steps, reverse=True) if (steps[n] / ValidationSelector.STATE).is_file()]
        if not complete:
            raise FileNotFoundError(f"{folder}: no complete {PREFIX_CHECKPOINT_DIR}-* folder to resume from")
        return str(complete[0])
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint: {value} is not a checkpoint folder")
    return str(value)


def _freeze_all_but(model: nn.Module, trainable: nn.Module) -> dict[str, bool]:
    """Freeze `model` except `trainable`; returns the previous `requires_grad` flags."""
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    trainable.requires_grad_(True)
    return before


def finetune_adapter(
    model: UniQAModel,
    train: Sequence[tuple[Any, float]],
    validation: Sequence[tuple[Any, float]],
    adapter_name: str,
    mos_range: tuple[float, float],
    higher_is_better: bool = True,
    task: str = "quality",
    dataset: str | None = None,
    args: FinetuneArguments | None = None,
    cache_dir: str | os.PathLike | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Train a new multi-cue adapter `adapter_name` on `model`'s frozen backbone.

    Args:
        model: the backbone; the adapter is added to it (the name must be new: `delete_adapter` first to retrain).
        train, validation: `[(image, mos)]`, images as paths (or PIL images / arrays), MOS on the dataset's scale.
        mos_range: `(low, high)` of the MOS scale; targets are the MOS normalised to `[0, 1]`, higher is better
            (flipped when `higher_is_better=False`).
        task, dataset: stored with the adapter in `model.config.adapters[adapter_name]`.
        args: [`FinetuneArguments`] (defaults: the authors' recipe). With `args.output_dir`, a checkpoint (Trainer
            state + the best adapter so far) is written every epoch; `args.resume_from_checkpoint` continues an
            interrupted run from one, to the same weights and metrics as an uninterrupted run.
        cache_dir: where features are cached on disk (reused across runs); `None` keeps them in memory.
        callbacks: extra Trainer callbacks (run after the validation/selection one).

    Returns:
        Validation metrics of the selected checkpoint (best `args.metric_for_best` over epochs, targets in
        `[0, 1]`): `srcc`, `plcc`, `plcc_logistic`, `krcc`, `rmse` (normalised scale), `loss`, plus `best_epoch`,
        `untrained` (the same metrics before training) and `history` (every epoch's). The adapter stays in the
        model; the model's train/eval mode and `requires_grad` flags are restored.
    """
    args = args or FinetuneArguments()
    resume = checkpoint_to_resume(args)
    if len(train) < 1 or len(validation) < 3:
        raise ValueError(f"need training images and >= 3 validation images (got {len(train)}, {len(validation)})")
    train_images, train_mos = zip(*train, strict=True)
    val_images, val_mos = zip(*validation, strict=True)
    train_labels = normalize_mos(train_mos, mos_range, higher_is_better)
    val_labels = normalize_mos(val_mos, mos_range, higher_is_better)
    torch.manual_seed(args.seed)
    adapter = model.add_adapter(
        adapter_name,
        task=task,
        bottleneck_dim=args.bottleneck_dim,
        prompt_set=args.prompt_set,
        dataset=dataset,
        mos_range=[float(mos_range[0]), float(mos_range[1])],
        higher_is_better=higher_is_better,
    )
    was_training = model.training
    flags = _freeze_all_but(model, adapter)
    model.eval()
    cache = FeatureCache(model, cache_dir, args.feature_batch_size, args.bf16_features, args.progress)
    val_features = cache.eval_features(val_images, args.eval_crop_mode, args.eval_crops, args.max_side)
    val_set = CachedFeatureDataset(val_features, val_labels, train=False)
    scorer = CachedFeatureScorer(model, adapter_name)
    selector = ValidationSelector(scorer, val_set, args.metric_for_best)
    untrained = evaluate_features(scorer, val_set)
    if args.use_cache:
        train_features = cache.train_features(train_images, args.crops_per_image, args.seed, args.max_side)
        train_set = CachedFeatureDataset(train_features, train_labels, train=True, seed=args.seed)
        trainer_model, collator = scorer, collate_features
    else:
        train_set = AugmentedImageDataset(
            train_images, train_labels, model.image_processor, args.crops_per_image, args.seed, args.max_side
        )
        model.active_adapter = adapter_name
        trainer_model, collator = model, collate_pixels
    try:
        if resume is not None:
            selector.load(resume)
        with tempfile.TemporaryDirectory() as scratch:
            trainer = Trainer(
                model=trainer_model,
                args=training_arguments(args, args.output_dir or scratch),
                train_dataset=train_set,
                data_collator=collator,
                callbacks=[selector, *callbacks],
            )
            trainer.train(resume_from_checkpoint=resume)
        selector.restore()
        metrics = evaluate_features(scorer, val_set)
    finally:
        model.active_adapter = None
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags.get(name, parameter.requires_grad))
        model.train(was_training)
        adapter.to(model.device)
    metrics = {**metrics, "best_epoch": selector.best_epoch}
    model.config.adapters[adapter_name]["metrics"] = {k: round(v, 6) for k, v in metrics.items() if v is not None}
    model.config.adapters[adapter_name]["training"] = {
        **{k: v for k, v in asdict(args).items() if k not in RUN_ONLY_ARGUMENTS},
        "train_images": len(train),
        "validation_images": len(validation),
    }
    return {**metrics, "untrained": untrained, "history": selector.history}


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

    model.set_adapter(adapter_name)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        modules_to_save=[f"adapters.{adapter_name}"],
        bias="none",
    )
    return get_peft_model(model, config)
