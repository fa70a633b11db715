"""UniQA: CLIP towers + level prompts + named multi-cue adapters, scoring image quality and aesthetics."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections import OrderedDict
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
from .scoring_uniqa import ScoreDetails, ScoreMap, ScoringEngine


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
        prompt_embeds (`torch.FloatTensor` of shape `(G, K, D)`): the L2-normalised prompt embeddings scored against.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    level_probs: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    prompt_embeds: torch.FloatTensor | None = None


PromptSetLike = str | Mapping[str, Any]
PROMPT_CACHE_SIZE = 64  # prompt sets whose embeddings a model keeps


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

    `clip` holds the CLIP towers (transformers' `CLIPModel`); `level_head` scores image embeddings against level
    prompts; `adapters` holds the named [`MultiCueAdapter`]s, the paper's trained heads, managed with the
    `*_multicue_adapter` methods. These names are UniQA's own: transformers' PEFT integration (`add_adapter`,
    `load_adapter`, `set_adapter`, ... for LoRA through `peft`) works on the same model, untouched.
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
        self.active_multicue_adapter: str | None = None  # the adapter `forward` and `score` use by default
        self._text_embeds_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # least recently used first
        self._tokenizer = None
        self._image_processor: UniQAImageProcessor | None = None
        self.scoring_engine = ScoringEngine(self)  # batched image scoring; holds converted copies of the tower
        self.post_init()

    # ----------------------------------------------------------------------------------------------------------
    # Processing companions, loaded with the model from the same folder or Hub revision.

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        """As `PreTrainedModel.from_pretrained`; also loads the tokenizer and image processor saved with the model,
        from the same place and `revision`. A multi-cue adapter folder (written by `save_multicue_adapter`) loads
        its base model (with the same keyword arguments) and then the adapter; PEFT adapter folders and
        `adapter_kwargs` go to transformers' PEFT integration as usual."""
        hub = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "subfolder") if k in kwargs}
        adapter_config = _multicue_adapter_config(pretrained_model_name_or_path, hub)
        if adapter_config is not None:
            model = cls.from_pretrained(adapter_config["base_model_name_or_path"], *model_args, **kwargs)
            model.load_multicue_adapter(
                pretrained_model_name_or_path, revision=hub.get("revision"), token=hub.get("token")
            )
            return model
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        finite = [torch.isfinite(model.clip.logit_scale).all()] + [
            torch.isfinite(adapter.levels).all() for adapter in model.adapters.values()
        ]
        if not all(finite):
            raise ValueError(
                f"{pretrained_model_name_or_path}: the weights hold a non-finite logit_scale or adapter levels "
                "(every score would be NaN)"
            )
        try:
            tokenizer = CLIPTokenizerFast.from_pretrained(pretrained_model_name_or_path, **hub)
        except (OSError, ValueError, TypeError):
            tokenizer = None
        # without tokenizer files, transformers 5 builds a near-empty vocabulary instead of failing: refuse it
        if tokenizer is not None and len(tokenizer) == model.config.text_config.vocab_size:
            model._tokenizer = tokenizer
        with contextlib.suppress(OSError):  # no preprocessor_config.json: built from the config on first use
            model._image_processor = UniQAImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub)
        return model

    @property
    def tokenizer(self):
        """The CLIP tokenizer saved with the model."""
        if self._tokenizer is None:
            raise ValueError(
                "this model has no tokenizer: load it from a folder holding tokenizer files, or set "
                "`model.tokenizer = CLIPTokenizerFast.from_pretrained(...)`"
            )
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._text_embeds_cache.clear()

    @property
    def image_processor(self) -> UniQAImageProcessor:
        """The image processor saved with the model, or a default one for the vision tower's input size. It is the
        one place that holds the test-time crop settings."""
        if self._image_processor is None:
            self._image_processor = UniQAImageProcessor(crop_size=self.config.vision_config.image_size)
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
        if self._tokenizer is not None:
            self._tokenizer.save_pretrained(save_directory)
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

        Cached unless gradients flow into the text tower: the `PROMPT_CACHE_SIZE` most recently used prompt sets
        (ad-hoc prompts from users cannot grow it without bound); the cache is cleared by `train()`/`eval()`.
        """
        groups = list(self.prompt_groups(prompt_set).values())
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.clip.text_model.parameters())
        # inference-mode tensors cannot enter autograd graphs, so they are cached apart
        prompts = tuple(p for group in groups for p in group)
        key = (prompts, self.device, self.dtype, torch.is_inference_mode_enabled())
        cache = self._text_embeds_cache
        cached = None if needs_grad else cache.get(key)
        if cached is not None:
            cache.move_to_end(key)
            return cached
        with torch.set_grad_enabled(needs_grad):
            embeds = self.encode_prompts(prompts).view(len(groups), len(groups[0]), -1)
        if not needs_grad:
            cache[key] = embeds
            while len(cache) > PROMPT_CACHE_SIZE:
                cache.popitem(last=False)
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
            meta = self.check_multicue_adapter(adapter)
            if task is not None and task != meta["task"]:
                raise ValueError(f"adapter {adapter!r} scores {meta['task']}, not {task}")
            return meta["task"], adapter, prompt_set or meta.get("prompt_set", "level5")
        if prompt_set is None:
            task = task or "quality"
            if task in self.config.unavailable_tasks:
                raise ValueError(f"this model does not score {task}: {self.config.unavailable_tasks[task]}")
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
        prompt_input_ids: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> UniQAOutput | tuple:
        """Score crops against groups of level prompts, through the active multi-cue adapter if one is set.

        Args:
            pixel_values: `(N, 3, S, S)` normalised crops (see [`UniQAImageProcessor`]).
            prompt_input_ids: `(G, K, L)` token ids of `G` groups of `K` level prompts, worst first (e.g. from
                `model.tokenizer`); `prompt_attention_mask` of the same shape.
            prompt_embeds: `(G, K, D)` L2-normalised prompt embeddings instead of ids (e.g. `model.prompt_embeds(
                "level5")`, cached). With neither, the prompt set of the active adapter (or the quality task's) is
                encoded with the model's tokenizer.
            labels: `(N,)` targets in the score's scale (normalised MOS in [0, 1]); adds an MSE `loss`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        adapter = self.active_multicue_adapter
        if prompt_embeds is None and prompt_input_ids is not None:
            groups, levels_count, length = prompt_input_ids.shape
            mask = prompt_attention_mask.reshape(-1, length) if prompt_attention_mask is not None else None
            text = self.get_text_features(prompt_input_ids.reshape(-1, length), mask)
            prompt_embeds = (text / text.norm(dim=-1, keepdim=True)).view(groups, levels_count, -1)
        if prompt_embeds is None:
            _, _, prompt_set = self.resolve(adapter=adapter)
            prompt_embeds = self.prompt_embeds(prompt_set)
        levels = self.levels_for(adapter)
        if len(levels) != prompt_embeds.shape[1]:
            raise ValueError(f"{prompt_embeds.shape[1]} prompts per group for {len(levels)} levels")
        image_embeds = self.get_image_features(pixel_values)
        scores, level_probs = self.level_head(
            image_embeds,
            prompt_embeds,
            levels,
            self.clip.logit_scale,
            adapter=self.adapters[adapter] if adapter is not None else None,
        )
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(scores.float(), labels.to(scores.device, torch.float32))
        if not return_dict:
            output = (scores, level_probs, image_embeds, prompt_embeds)
            return ((loss,) + output) if loss is not None else output
        return UniQAOutput(
            loss=loss, scores=scores, level_probs=level_probs, image_embeds=image_embeds, prompt_embeds=prompt_embeds
        )

    # ----------------------------------------------------------------------------------------------------------
    # Scoring images: the engine in `scoring_uniqa.py`.

    def image_tower(
        self, dtype: str | torch.dtype | None = None, device: str | torch.device | None = None, compile: bool = False
    ) -> nn.Module:
        """The vision tower and its projection as one module: `(N, 3, S, S)` pixels -> `(N, D)` raw embeddings.

        In the model's own dtype and device it shares the model's weights. Another `dtype` (`"bf16"`, `"fp16"`,
        `"fp32"` or a `torch.dtype`) or `device` gives a converted copy, made once and kept until the weights
        change (so `score(dtype="bf16")` leaves the model itself in fp32). `compile=True` wraps it in
        `torch.compile` (compiled once per shape; inductor caches the kernels on disk across runs). `"int8"` (CPU
        only) gives the tower exported to ONNX with int8 linear layers, run by onnxruntime (`uniqa[export]`).
        """
        return self.scoring_engine.image_tower(dtype, device, compile)

    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
        **options: Any,
    ) -> torch.Tensor | ScoreDetails:
        """Score images; higher is better. Runs [`ScoringEngine.score`]; `options` are its keyword arguments from
        `batch_size` on.

        Args:
            images: one or several paths, encoded image bytes, PIL images or numpy arrays (any mode; EXIF
                orientation applied).
            task: `"quality"` (default) or `"aesthetics"`; implied by `adapter` or `prompt_set` when given.
            adapter: name of a trained multi-cue adapter (default: `active_multicue_adapter`); `None` scores
                zero-shot with the task's prompt set.
            prompt_set: zero-shot prompt set: a name (`"level5"`, `"ensemble20"`, `"aesthetics20"`, ...) or an
                ad-hoc mapping such as `{"groups": {"light": ["a dark photo", "a bright photo"]}}` (see `resolve`).
            batch_size: crops per forward pass. Crops of consecutive images share batches, so every batch but
                the last is full; scores do not depend on it (within 1e-6 in fp32).
            crop_mode, crops, max_side, seed: test-time cropping (see [`UniQAImageProcessor`]); defaults come
                from the image processor. The score of an image is the mean of its crop scores.
            mos_range: `(low, high)` to map scores linearly onto a MOS scale. Adapter scores predict normalised
                MOS in [0, 1] and map as `low + s * (high - low)`; zero-shot scores map from `score_range()`.
            return_details: return a [`ScoreDetails`] with the per-group level probabilities too.
            dtype: precision of the vision tower (`"fp32"`, `"bf16"`, `"fp16"`, `"int8"` or a `torch.dtype`;
                default: the model's). The adapter and the prompt head stay in the model's dtype. bf16 suits CPUs
                with AVX-512 BF16/AMX and GPUs; fp16 suits GPUs; int8 (CPUs with VNNI or AMX, needs
                `pip install "uniqa[export]"`) runs the tower's linear layers with int8 weights and activations in
                onnxruntime (the first call quantises it: seconds).
            device: where the vision tower runs (default: the model's device), e.g. `"cuda"`.
            num_workers: threads or processes that decode and crop images ahead of the model (default:
                `min(4, cpu count)`; threads only: 0 decodes in the calling thread).
            compile: run the vision tower through `torch.compile`.
            decode: `"threads"` (default) or a `concurrent.futures.Executor` the caller owns, e.g. worker processes
                from `modeling_uniqa.tools.decoding.decoding_processes(n)`. Processes pay off where decoding limits
                the speed (a fast GPU); on a CPU the tower limits it and threads suffice. Same scores either way.

        Returns:
            `(len(images),)` float32 tensor on the CPU, in `score_range()` unless `mos_range` is given.
        """
        return self.scoring_engine.score(images, task, adapter, prompt_set, **options)

    def score_map(self, image: ImageInput, **options: Any) -> ScoreMap:
        """A quality map of one image: the scores of overlapping square windows, higher is better, and the image's
        overall score. Runs [`ScoringEngine.score_map`], whose keyword arguments (`options`) are:

        Args:
            image: a path, PIL image or numpy array (as in `score`).
            window: window side in pixels of the analysed image (default: the vision tower's input size, e.g. 112
                for the bundled model, 224 for ViT-B/16); a window larger than the image's short side shrinks to it.
                Windows of another size are resized to the input size before scoring.
            stride: the largest step between neighbouring windows (default: `window // 2`, so neighbours overlap
                by half). Windows are spread evenly: the first at 0, the last ending at the image's edge.
            task, adapter, prompt_set: what to score, as in `score`.
            max_side: downscale the image first, as in `score`.
            max_windows: the cap on windows (default 256): a larger image is downscaled, aspect ratio kept, until
                its windows fit (so `window` then covers more of the original image; see `ScoreMap.cell_box`).
            mos_range, batch_size, dtype, device, compile: as in `score`.

        Returns:
            a [`ScoreMap`]: `scores` `(rows, cols)` float32, row `r` / column `c` starting at `tops[r]` /
            `lefts[c]` of the analysed image of `analysed_size`; `score` equals `score(image, ...)` with the same
            options. With `window` = the crop size and the grid crops' positions (`stride=ceil((W - window) / 2)` on a
            `W` x `W` image gives the default 3 x 3 grid), the map's mean equals the overall score.
        """
        return self.scoring_engine.score_map(image, **options)

    # ----------------------------------------------------------------------------------------------------------
    # Multi-cue adapters (UniQA's named heads; LoRA goes through transformers' PEFT integration instead).

    def check_multicue_adapter(self, name: str) -> dict[str, Any]:
        """The metadata of adapter `name`; a `ValueError` naming the known adapters if there is none."""
        if name not in self.config.adapters:
            known = ", ".join(self.config.adapters) or "none"
            raise ValueError(f"unknown adapter {name!r} (this model has: {known})")
        return self.config.adapters[name]

    def add_multicue_adapter(
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

    def set_multicue_adapter(self, name: str | None) -> None:
        """Make `name` the adapter `forward` and `score` use when none is named (`None`: zero-shot)."""
        if name is not None:
            self.check_multicue_adapter(name)
        self.active_multicue_adapter = name

    def delete_multicue_adapter(self, name: str) -> None:
        """Remove an adapter's weights and metadata."""
        self.check_multicue_adapter(name)
        del self.adapters[name]
        del self.config.adapters[name]
        if self.active_multicue_adapter == name:
            self.active_multicue_adapter = None

    def save_multicue_adapter(self, save_directory: str | os.PathLike, name: str) -> None:
        """Save one adapter alone in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors` (+ a card).

        The config holds the adapter's metadata, its sizes, its prompt set's definition and the base model's
        name; the weights are the adapter module's state dict (`fc.0.weight`, `fc.2.weight`, `levels`).
        """
        from safetensors.torch import save_file

        meta = copy.deepcopy(self.check_multicue_adapter(name))
        prompt_set = meta.get("prompt_set", "level5")
        config = {
            "adapter_type": MULTICUE_ADAPTER_TYPE,
            "adapter_name": name,
            "base_model_name_or_path": str(self.name_or_path or ""),
            "embed_dim": self.config.projection_dim,
            "prompt_set_definition": copy.deepcopy(self.config.prompt_sets.get(prompt_set)),
            **meta,
        }
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, ADAPTER_CONFIG_NAME), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.adapters[name].state_dict().items()}
        save_file(state, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
        with open(os.path.join(save_directory, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(_adapter_card(name, config))

    def load_multicue_adapter(
        self,
        path_or_repo_id: str | os.PathLike,
        name: str | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
    ) -> str:
        """Load an adapter saved by `save_multicue_adapter`, from a folder or a Hub repo id; returns its name.

        `name` defaults to the saved one. A prompt set the model lacks is added from the saved definition. Also
        called by `UniQAModel.from_pretrained(adapter_folder)`, which loads the base model first.
        """
        folder = os.fspath(path_or_repo_id)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(
                folder, revision=revision, token=token, allow_patterns=[ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
            )
        config_path = os.path.join(folder, ADAPTER_CONFIG_NAME)
        weights_path = os.path.join(folder, ADAPTER_WEIGHTS_NAME)
        for path in (config_path, weights_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path}: missing; an adapter folder holds {ADAPTER_CONFIG_NAME} and "
                    f"{ADAPTER_WEIGHTS_NAME} (written by `save_multicue_adapter`)"
                )
        try:
            with open(config_path, encoding="utf-8") as handle:
                config = json.load(handle)
            adapter_type, embed_dim = config.get("adapter_type"), config["embed_dim"]
            saved_name = config["adapter_name"]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{config_path}: not a readable adapter config ({type(error).__name__}: {error})"
            ) from error
        if adapter_type != MULTICUE_ADAPTER_TYPE:
            raise ValueError(
                f"{config_path}: not a UniQA multi-cue adapter (adapter_type={adapter_type!r}); "
                "PEFT adapters (LoRA) load with `model.load_adapter`"
            )
        if embed_dim != self.config.projection_dim:
            raise ValueError(
                f"{config_path}: adapter for embeddings of size {embed_dim}, "
                f"this model's are {self.config.projection_dim}"
            )
        name = name or saved_name
        definition = config.pop("prompt_set_definition", None)
        prompt_set = config.get("prompt_set", "level5")
        new_prompt_set = prompt_set not in self.config.prompt_sets
        if new_prompt_set and definition is None:
            raise ValueError(f"{config_path}: prompt set {prompt_set!r} is unknown to this model and not saved")
        from safetensors.torch import load_file

        state = load_file(weights_path)
        meta = {k: v for k, v in config.items() if k not in _ADAPTER_FILE_KEYS}
        if new_prompt_set:  # needed by add_multicue_adapter; removed again if the adapter does not load
            self.config.prompt_sets[prompt_set] = definition
        try:
            module = self.add_multicue_adapter(name, **meta)
        except (TypeError, ValueError) as error:
            if new_prompt_set:
                del self.config.prompt_sets[prompt_set]
            raise ValueError(f"{config_path}: {error}") from error
        try:
            module.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        except RuntimeError as error:
            self.delete_multicue_adapter(name)
            if new_prompt_set:
                del self.config.prompt_sets[prompt_set]
            raise ValueError(f"{weights_path}: weights do not fit the adapter ({error})") from error
        return name

    def push_multicue_adapter_to_hub(
        self,
        repo_id: str,
        name: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        api: Any | None = None,
    ) -> Any:
        """Save adapter `name` with `save_multicue_adapter` and upload the folder to the Hub repo `repo_id`
        (created if needed). `api` is a `huggingface_hub.HfApi` (default: a new one with `token`)."""
        import tempfile

        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_multicue_adapter(folder, name)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload UniQA adapter {name}",
                revision=revision,
            )


ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
MULTICUE_ADAPTER_TYPE = "uniqa-multi-cue"
_ADAPTER_FILE_KEYS = ("adapter_type", "adapter_name", "base_model_name_or_path", "embed_dim")


def _multicue_adapter_config(path_or_repo_id: str | os.PathLike, hub: dict[str, Any]) -> dict[str, Any] | None:
    """The `adapter_config.json` of a multi-cue adapter folder or repo, or `None` for anything else."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            os.fspath(path_or_repo_id),
            ADAPTER_CONFIG_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub,
        )
    except OSError:
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    return config if config.get("adapter_type") == MULTICUE_ADAPTER_TYPE else None


def _adapter_card(name: str, config: dict[str, Any]) -> str:
    """A short model card for an adapter folder."""
    metrics = config.get("metrics") or {}
    lines = [
        f"# UniQA adapter `{name}`",
        "",
        f"Multi-cue adapter (UniQA, arXiv 2406.01069) scoring **{config.get('task', 'quality')}**, trained on "
        f"{config.get('dataset') or 'an unnamed dataset'}; "
        f"base model `{config.get('base_model_name_or_path') or '?'}`.",
        "",
        "```python",
        "model = UniQAModel.from_pretrained(BASE_MODEL)",
        f'model.load_multicue_adapter(THIS_FOLDER_OR_REPO)  # adds "{name}"',
        f'model.score("image.jpg", adapter="{name}", mos_range={config.get("mos_range") or (0, 1)})',
        "```",
    ]
    if metrics:
        lines += ["", "Validation metrics: " + ", ".join(f"{k} {v}" for k, v in metrics.items()) + "."]
    return "\n".join(lines) + "\n"


UniQAModel.register_for_auto_class("AutoModel")
