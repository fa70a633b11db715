"""The scoring engine behind `UniQAModel.score`: images in, one score per image out.

Images are decoded and cropped in worker threads while the vision tower runs; crops of consecutive images share
batches; uint8 crops travel to the tower's device and are normalised there; embeddings are scored in large chunks
by the model's level-prompt head. The vision tower can run in another precision or on another device through a
converted copy, made once per model and rebuilt when the model's weights change (docs/method.md, "Test-time crops";
docs/performance.md).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .image_processing_uniqa import ImageInput, default_num_workers, map_in_threads

if TYPE_CHECKING:
    from .modeling_uniqa import PromptSetLike, UniQAModel

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """`"fp32"`/`"bf16"`/`"fp16"` (or their long names, or a `torch.dtype`) -> `torch.dtype`; `None` stays `None`."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, not {dtype!r}")
    return DTYPES[dtype]


def full_device(device: str | torch.device) -> torch.device:
    """`"cuda"` -> `cuda:<current index>`, so that it compares equal to a parameter's device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _converted(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A frozen copy of a parameter or buffer on `device`; floating-point tensors in `dtype`."""
    converted = tensor.detach().to(device, dtype if tensor.is_floating_point() else tensor.dtype)
    return nn.Parameter(converted, requires_grad=False) if isinstance(tensor, nn.Parameter) else converted


@dataclass
class ScoreDetails:
    """Per-image results of `UniQAModel.score(..., return_details=True)`.

    Args:
        scores: `(N,)` image scores (crop means), higher is better.
        level_probs: `(N, G, K)` level-prompt probabilities per group, averaged over crops.
        groups: the `G` prompt-group names. levels: the `K` level values, worst first.
        task: the task scored. adapter: the multi-cue adapter used, or `None` (zero-shot).
    """

    scores: torch.Tensor
    level_probs: torch.Tensor
    groups: list[str]
    levels: list[float]
    task: str
    adapter: str | None


class ImageTower(nn.Module):
    """CLIP's vision transformer and visual projection: `(N, 3, S, S)` pixels -> `(N, D)` raw image embeddings,
    the same as `CLIPModel.get_image_features`."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


class ScoringEngine:
    """Scores images with one [`UniQAModel`]; owns the converted copies of its vision tower.

    A copy is keyed by `(dtype, device, compile)` and stamped with the weights' identity and in-place version
    counters (`Tensor._version`, the counter autograd uses to detect in-place edits): weights loaded, trained or
    merged in place (e.g. LoRA's `merge_and_unload`) make the next call rebuild it.
    """

    def __init__(self, model: UniQAModel):
        self.model = model
        self._towers: dict[tuple, tuple[tuple, nn.Module]] = {}

    def image_tower(
        self, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None, compile: bool = False
    ) -> nn.Module:
        """The vision tower and its projection as one module: `(N, 3, S, S)` pixels -> `(N, D)` raw embeddings.

        In the model's own dtype and device it shares the model's weights; another `dtype` or `device` gives a
        converted copy. `compile=True` wraps it in `torch.compile` (compiled once per shape)."""
        model = self.model
        dtype = resolve_dtype(dtype) or model.dtype
        device = full_device(device) if device is not None else model.device
        parts = ImageTower(model.clip.vision_model, model.clip.visual_projection)
        same = dtype == model.dtype and device == model.device
        if same and not compile:
            return parts
        stamp = tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in parts.state_dict().values())
        key = (dtype, str(device), compile)
        if key in self._towers and self._towers[key][0] == stamp:
            return self._towers[key][1]
        tower = parts
        if not same:  # convert tensor by tensor into the copy (no transient full-precision duplicate)
            memo = {id(t): _converted(t, device, dtype) for t in (*parts.parameters(), *parts.buffers())}
            tower = copy.deepcopy(parts, memo).eval()
        if compile:
            tower = torch.compile(tower)
        self._towers[key] = (stamp, tower)
        return tower

    @torch.inference_mode()
    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
        batch_size: int = 32,
        crop_mode: str | None = None,
        crops: int | None = None,
        max_side: int | None = None,
        seed: int = 0,
        mos_range: tuple[float, float] | None = None,
        return_details: bool = False,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        compile: bool = False,
    ) -> torch.Tensor | ScoreDetails:
        """See [`UniQAModel.score`]."""
        model = self.model
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        task, adapter, prompt_set = model.resolve(task, adapter or model.active_multicue_adapter, prompt_set)
        groups = model.prompt_groups(prompt_set)
        adapter_module = model.adapters[adapter] if adapter is not None else None
        levels = model.levels_for(adapter, prompt_set).detach()
        text_embeds = model.prompt_embeds(prompt_set)
        tower = self.image_tower(dtype, device, compile)
        tower_param = next(tower.parameters())
        pin = tower_param.device.type == "cuda"
        sums = torch.zeros(len(images), dtype=torch.float64)
        prob_sums = torch.zeros(len(images), len(groups), len(levels), dtype=torch.float64)
        counts = torch.zeros(len(images), dtype=torch.float64)

        # The prompt head's small ops cost more in thread wake-ups than in arithmetic (10x on a busy 2-core CPU),
        # so embeddings are gathered and scored in chunks of `head_chunk` crops.
        head_chunk = max(batch_size, 4096)
        gathered: list[tuple[torch.Tensor, torch.Tensor]] = []

        def score_gathered() -> None:
            embeds = torch.cat([e for e, _ in gathered]).to(model.device, model.dtype)
            owner = torch.cat([o for _, o in gathered])
            gathered.clear()
            scores, probs = model.level_head(
                embeds, text_embeds, levels, model.clip.logit_scale, adapter=adapter_module
            )
            sums.index_add_(0, owner, scores.double().cpu())
            prob_sums.index_add_(0, owner, probs.double().cpu())
            counts.index_add_(0, owner, torch.ones(len(owner), dtype=torch.float64))

        def run(pixels: torch.Tensor, owner: torch.Tensor) -> None:
            # uint8 crops travel to the tower's device and are normalised there (4x fewer bytes to copy)
            pixels = pixels.pin_memory() if pin else pixels
            pixels = processor.normalize(pixels.to(tower_param.device, non_blocking=pin))
            gathered.append((tower(pixels.to(tower_param.dtype)), owner))
            if sum(len(o) for _, o in gathered) >= head_chunk:
                score_gathered()

        processor = model.image_processor
        workers = default_num_workers() if num_workers is None else num_workers
        crop_stream = map_in_threads(
            lambda image: processor.crop_image(image, crop_mode, crops, max_side, seed, normalize=False),
            images,
            workers,
        )
        buffered: list[torch.Tensor] = []
        owners: list[torch.Tensor] = []
        count = 0
        for i, pixels in enumerate(crop_stream):
            buffered.append(pixels)
            owners.append(torch.full((len(pixels),), i))
            count += len(pixels)
            if count < batch_size:
                continue
            pixels, owner = torch.cat(buffered), torch.cat(owners)
            full = count - count % batch_size
            for start in range(0, full, batch_size):
                run(pixels[start : start + batch_size], owner[start : start + batch_size])
            buffered, owners, count = [pixels[full:]], [owner[full:]], count - full
        if count:
            run(torch.cat(buffered), torch.cat(owners))
        if gathered:
            score_gathered()
        scores = (sums / counts).float()
        levels = levels.float().cpu()
        if mos_range is not None:
            low, high = mos_range
            lo, hi = (0.0, 1.0) if adapter is not None else (float(levels.min()), float(levels.max()))
            scores = low + (scores - lo) / (hi - lo) * (high - low)
        if not return_details:
            return scores
        return ScoreDetails(
            scores=scores,
            level_probs=(prob_sums / counts.view(-1, 1, 1)).float(),
            groups=list(groups),
            levels=levels.tolist(),
            task=task,
            adapter=adapter,
        )
