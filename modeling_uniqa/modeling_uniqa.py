"""UniQA: CLIP towers + level prompts + named multi-cue adapters, scoring image quality and aesthetics."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput

from .adapter import LevelPromptHead, MultiCueAdapter
from .configuration_uniqa import TASKS, UniQAConfig
from .image_processing_uniqa import ImageInput, UniQAImageProcessor
from .pipeline_uniqa import ImageQualityAssessmentPipeline


@dataclass
class UniQAOutput(ModelOutput):
    """
    Output of [`UniQAModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): MSE between `scores` and `labels` when given.
        scores (`torch.FloatTensor` of shape `(N,)`): one score per input crop, higher is better.
        level_probs (`torch.FloatTensor` of shape `(N, G, K)`): softmax over the `K` level prompts of each of
            the `G` prompt groups.
        image_embeds (`torch.FloatTensor` of shape `(N, D)`): raw projected image embeddings (before the adapter).
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


@dataclass
class ScoreDetails:
    """Per-image results of `UniQAModel.score(..., return_details=True)`.

    Args:
        scores: `(N,)` image scores (crop means), higher is better.
        level_probs: `(N, G, K)` level-prompt probabilities per group, averaged over crops.
        groups: the `G` prompt-group names. levels: the `K` level values, worst first.
    """

    scores: torch.Tensor
    level_probs: torch.Tensor
    groups: list[str]
    levels: list[float]
    task: str
    adapter: str | None


PromptSetLike = str | Mapping[str, Any]


def _checked_prompt_set(prompt_set: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an ad-hoc prompt set and fill in evenly spaced levels in [0, 1]."""
    groups = {name: list(prompts) for name, prompts in dict(prompt_set.get("groups", {})).items()}
    sizes = {len(prompts) for prompts in groups.values()}
    if not groups or len(sizes) != 1 or min(sizes) < 2:
        raise ValueError("an ad-hoc prompt set needs 'groups' of at least 2 prompts each, all of the same size")
    size = sizes.pop()
    levels = [float(v) for v in prompt_set.get("levels", [i / (size - 1) for i in range(size)])]
    if len(levels) != size:
        raise ValueError(f"{len(levels)} levels for groups of {size} prompts")
    return {"groups": groups, "levels": levels, "task": prompt_set.get("task", "quality")}


def _pooled(output: torch.Tensor | ModelOutput) -> torch.Tensor:
    """CLIP's `get_*_features` return a tensor (transformers 4.x) or an output object (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class UniQAPreTrainedModel(PreTrainedModel):
    config_class = UniQAConfig
    base_model_prefix = "uniqa"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # The CLIP sub-model initialises itself; adapters keep PyTorch's default linear init and their levels.
        if isinstance(module, LevelPromptHead):
            return


class UniQAModel(UniQAPreTrainedModel):
    """UniQA model.

    `clip` holds the CLIP towers (transformers' `CLIPModel`); `adapters` holds the named [`MultiCueAdapter`]s.
    Scores are level-weighted prompt probabilities, in `[min(levels), max(levels)]`, higher is better.
    """

    higher_is_better = True

    def __init__(self, config: UniQAConfig):
        super().__init__(config)
        clip_config = CLIPConfig(
            text_config=config.text_config.to_dict(),
            vision_config=config.vision_config.to_dict(),
            projection_dim=config.projection_dim,
            logit_scale_init_value=config.logit_scale_init_value,
        )
        clip_config._attn_implementation = config._attn_implementation
        self.clip = CLIPModel(clip_config)
        self.level_head = LevelPromptHead()
        self.adapters = nn.ModuleDict(
            {
                name: MultiCueAdapter(config.projection_dim, meta.get("bottleneck_dim"), config.levels)
                for name, meta in config.adapters.items()
            }
        )
        self.active_adapter: str | None = None
        self._text_embeds_cache: dict[tuple, torch.Tensor] = {}
        self._tokenizer = None
        self._image_processor: UniQAImageProcessor | None = None
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------
    # Processing companions, loaded from the model folder on first use.

    @property
    def tokenizer(self):
        """The CLIP tokenizer saved with the model (loaded from `name_or_path` on first use)."""
        if self._tokenizer is None:
            if not self.name_or_path:
                raise ValueError("this model has no tokenizer: set `model.tokenizer = ...` or load it from a folder")
            self._tokenizer = CLIPTokenizerFast.from_pretrained(self.name_or_path)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._text_embeds_cache.clear()

    @property
    def image_processor(self) -> UniQAImageProcessor:
        """The image processor saved with the model, or one built from the config."""
        if self._image_processor is None:
            folder = self.name_or_path
            if folder and os.path.isfile(os.path.join(folder, "preprocessor_config.json")):
                self._image_processor = UniQAImageProcessor.from_pretrained(folder)
            else:
                self._image_processor = UniQAImageProcessor(
                    crop_size=self.config.vision_config.image_size,
                    crop_mode=self.config.crop_mode,
                    crops=self.config.crops,
                    max_side=self.config.max_side,
                )
        return self._image_processor

    @image_processor.setter
    def image_processor(self, image_processor: UniQAImageProcessor) -> None:
        self._image_processor = image_processor

    def train(self, mode: bool = True):
        self._text_embeds_cache.clear()
        return super().train(mode)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Save weights, config, code, the image processor, the tokenizer (when known) and the pipeline code."""
        super().save_pretrained(save_directory, *args, **kwargs)
        self.image_processor.save_pretrained(save_directory)
        if self._tokenizer is not None or self.name_or_path:
            self.tokenizer.save_pretrained(save_directory)
        custom_object_save(ImageQualityAssessmentPipeline, save_directory)

    # ----------------------------------------------------------------------------------------------------------
    # Features, as CLIP's.

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(N, 3, S, S)` normalised pixels -> `(N, projection_dim)` raw (unnormalised) image embeddings."""
        return _pooled(self.clip.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(N, L)` token ids -> `(N, projection_dim)` raw text embeddings (end-of-text token, projected)."""
        return _pooled(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> `(len(prompts), projection_dim)` L2-normalised text embeddings."""
        tokens = self.tokenizer(list(prompts), padding=True, return_tensors="pt").to(self.device)
        embeds = self.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def prompt_groups(self, prompt_set: PromptSetLike) -> dict[str, list[str]]:
        """`{group: prompts}` of a named prompt set or of an ad-hoc one (`{"groups": ..., "levels": ...}`)."""
        return dict(
            prompt_set["groups"] if isinstance(prompt_set, Mapping) else self.config.prompt_sets[prompt_set]["groups"]
        )

    def prompt_embeds(self, prompt_set: PromptSetLike) -> torch.Tensor:
        """A prompt set -> `(G, K, D)` normalised embeddings.

        Cached unless gradients flow into the text tower; the cache is cleared by `train()`/`eval()`.
        """
        groups = list(self.prompt_groups(prompt_set).values())
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.clip.text_model.parameters())
        # inference-mode tensors cannot enter autograd graphs, so they are cached apart
        prompts = tuple(p for group in groups for p in group)
        key = (prompts, self.device, self.dtype, torch.is_inference_mode_enabled())
        if not needs_grad and key in self._text_embeds_cache:
            return self._text_embeds_cache[key]
        with torch.set_grad_enabled(needs_grad):
            embeds = self.encode_prompts(prompts).view(len(groups), len(groups[0]), -1)
        if not needs_grad:
            self._text_embeds_cache[key] = embeds
        return embeds

    # ----------------------------------------------------------------------------------------------------------
    # Scoring.

    def resolve(
        self, task: str | None = None, adapter: str | None = None, prompt_set: PromptSetLike | None = None
    ) -> tuple[str, str | None, PromptSetLike]:
        """Check a (task, adapter, prompt set) request and fill in defaults -> `(task, adapter, prompt_set)`.

        `prompt_set` is a name from `config.prompt_sets` or an ad-hoc mapping `{"groups": {name: [prompts, worst
        first]}, "levels": [one value per prompt] (default: evenly spaced in [0, 1]), "task": ...}`.
        """
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        if isinstance(prompt_set, Mapping):
            return task or prompt_set.get("task") or "quality", adapter, _checked_prompt_set(prompt_set)
        if adapter is not None:
            if adapter not in self.config.adapters:
                known = ", ".join(self.config.adapters) or "none"
                raise ValueError(f"unknown adapter {adapter!r} (this model has: {known})")
            meta = self.config.adapters[adapter]
            if task is not None and task != meta["task"]:
                raise ValueError(f"adapter {adapter!r} scores {meta['task']}, not {task}")
            return meta["task"], adapter, prompt_set or meta.get("prompt_set", "level5")
        if prompt_set is None:
            task = task or "quality"
            if task not in self.config.task_prompt_sets:
                raise ValueError(
                    f"this model has no zero-shot prompt set for {task}; "
                    f"available prompt sets: {', '.join(self.config.prompt_sets)}"
                )
            return task, None, self.config.task_prompt_sets[task]
        if prompt_set not in self.config.prompt_sets:
            raise ValueError(
                f"unknown prompt set {prompt_set!r} (this model has: {', '.join(self.config.prompt_sets)})"
            )
        set_task = self.config.prompt_sets[prompt_set]["task"]
        if task is not None and task != set_task:
            raise ValueError(f"prompt set {prompt_set!r} scores {set_task}, not {task}")
        return set_task, None, prompt_set

    def levels_for(self, adapter: str | None, prompt_set: PromptSetLike | None = None) -> torch.Tensor:
        """`(K,)` level values: the adapter's learned levels, an ad-hoc prompt set's, or the config's."""
        if adapter is not None:
            return self.adapters[adapter].levels
        if isinstance(prompt_set, Mapping):
            return torch.tensor(prompt_set["levels"], device=self.device)
        return torch.tensor(self.config.levels, device=self.device)

    def score_range(
        self, task: str | None = None, adapter: str | None = None, prompt_set: PromptSetLike | None = None
    ) -> tuple[float, float]:
        """Smallest and largest score the model can give for this request (scores are convex level mixtures)."""
        _, adapter, prompt_set = self.resolve(task, adapter, prompt_set)
        levels = self.levels_for(adapter, prompt_set).detach()
        return float(levels.min()), float(levels.max())

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
        return_dict: bool | None = None,
    ) -> UniQAOutput | tuple:
        """Score crops.

        Args:
            pixel_values: `(N, 3, S, S)` normalised crops (see [`UniQAImageProcessor`]).
            labels: `(N,)` targets in the score's scale (normalised MOS in [0, 1]); adds an MSE `loss`.
            task, adapter, prompt_set: what to score (see [`~UniQAModel.score`]); `adapter` defaults to
                `model.active_adapter`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        task, adapter, prompt_set = self.resolve(task, adapter or self.active_adapter, prompt_set)
        image_embeds = self.get_image_features(pixel_values)
        adapted = self.adapters[adapter](image_embeds) if adapter is not None else image_embeds
        scores, level_probs = self.level_head(
            adapted, self.prompt_embeds(prompt_set), self.levels_for(adapter, prompt_set), self.clip.logit_scale
        )
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(scores.float(), labels.to(scores.device, torch.float32))
        if not return_dict:
            output = (scores, level_probs, image_embeds)
            return ((loss,) + output) if loss is not None else output
        return UniQAOutput(loss=loss, scores=scores, level_probs=level_probs, image_embeds=image_embeds)

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
    ) -> torch.Tensor | ScoreDetails:
        """Score images; higher is better.

        Args:
            images: one or several paths, PIL images or numpy arrays (any mode; EXIF orientation applied).
            task: `"quality"` (default) or `"aesthetics"`; implied by `adapter` or `prompt_set` when given.
            adapter: name of a trained adapter; `None` scores zero-shot with the task's prompt set.
            prompt_set: zero-shot prompt set: a name (`"level5"`, `"ensemble20"`, `"aesthetics20"`, ...) or an
                ad-hoc mapping such as `{"groups": {"light": ["a dark photo", "a bright photo"]}}` (see `resolve`).
            batch_size: crops per forward pass.
            crop_mode, crops, max_side, seed: test-time cropping (see [`UniQAImageProcessor`]); defaults come
                from the image processor. The score of an image is the mean of its crop scores.
            mos_range: `(low, high)` to map scores linearly onto a MOS scale. Adapter scores predict normalised
                MOS in [0, 1] and map as `low + s * (high - low)`; zero-shot scores map from `score_range()`.
            return_details: return a [`ScoreDetails`] with the per-group level probabilities too.

        Returns:
            `(len(images),)` float32 tensor on the CPU, in `score_range()` unless `mos_range` is given.
        """
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            images = [images]
        task, adapter, prompt_set = self.resolve(task, adapter, prompt_set)
        groups = self.prompt_groups(prompt_set)
        levels = self.levels_for(adapter, prompt_set).detach().float().cpu()
        sums = torch.zeros(len(images), dtype=torch.float64)
        prob_sums = torch.zeros(len(images), len(groups), len(levels), dtype=torch.float64)
        counts = torch.zeros(len(images), dtype=torch.float64)
        pending: list[tuple[int, torch.Tensor]] = []

        def flush() -> None:
            pixels = torch.cat([c for _, c in pending])
            owner = torch.cat([torch.full((len(c),), i) for i, c in pending])
            for start in range(0, len(pixels), batch_size):
                batch = pixels[start : start + batch_size].to(self.device, self.dtype)
                output = self(batch, task=task, adapter=adapter, prompt_set=prompt_set)
                index = owner[start : start + batch_size]
                sums.index_add_(0, index, output.scores.double().cpu())
                prob_sums.index_add_(0, index, output.level_probs.double().cpu())
                counts.index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
            pending.clear()

        processor = self.image_processor
        for i, image in enumerate(images):
            pending.append((i, processor.crop_image(image, crop_mode, crops, max_side, seed)))
            if sum(len(c) for _, c in pending) >= batch_size:
                flush()
        if pending:
            flush()
        scores = (sums / counts).float()
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

    # ----------------------------------------------------------------------------------------------------------
    # Adapters.

    def add_adapter(
        self,
        name: str,
        task: str = "quality",
        bottleneck_dim: int | None = None,
        prompt_set: str = "level5",
        **metadata,
    ) -> MultiCueAdapter:
        """Add a new, untrained adapter (levels initialised to the config's) and return it.

        `metadata` (e.g. `dataset`, `mos_range`, `metrics`) is stored in `config.adapters[name]`.
        """
        if name in self.config.adapters:
            raise ValueError(f"adapter {name!r} already exists")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        if prompt_set not in self.config.prompt_sets:
            raise ValueError(f"unknown prompt set {prompt_set!r}")
        module = MultiCueAdapter(self.config.projection_dim, bottleneck_dim, self.config.levels)
        self.adapters[name] = module.to(self.device)
        self.config.adapters[name] = {
            "task": task,
            "bottleneck_dim": module.bottleneck_dim,
            "prompt_set": prompt_set,
            **metadata,
        }
        return module


UniQAModel.register_for_auto_class("AutoModel")
