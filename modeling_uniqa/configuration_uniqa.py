"""Configuration of UniQA: two CLIP towers, prompt sets, the level vector and named adapters."""

from __future__ import annotations

import copy
import math
import os
from typing import Any

from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

# CLIP's tokenizer: start-of-text, end-of-text (its position pools the text tower) and padding ids.
BOS_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID = 49406, 49407, 0
TASKS = ("quality", "aesthetics")
LEVEL_NAMES = ("bad", "poor", "fair", "good", "perfect")
DEFAULT_LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)

# Prompt sets: each group holds one prompt per level, worst first. A group is scored with a softmax over
# its prompts; a set's score is the mean of its group scores (docs/method.md, "Scores").
DEFAULT_PROMPT_SETS: dict[str, dict[str, Any]] = {
    "level5": {
        "task": "quality",
        "groups": {"overall": ["bad image", "poor image", "fair image", "good image", "perfect image"]},
    },
    "ensemble20": {
        "task": "quality",
        "groups": {
            "overall": ["bad image", "poor image", "fair image", "good image", "perfect image"],
            "sharpness": [
                "extremely blurry image",
                "blurry image",
                "fair image",
                "sharp image",
                "extremely sharp image",
            ],
            "noise": [
                "extremely noisy image",
                "noisy image",
                "fair image",
                "noise-free image",
                "extremely noise-free image",
            ],
            "quality": [
                "extremely low-quality image",
                "low-quality image",
                "fair image",
                "high-quality image",
                "extremely high-quality image",
            ],
        },
    },
    # Zero-shot aesthetics prompts are not specified by the UniQA authors; this set is this project's design:
    # overall appeal plus three cues photographers judge (composition, light, colour).
    "aesthetics20": {
        "task": "aesthetics",
        "groups": {
            "appeal": [
                "an ugly photo",
                "an unattractive photo",
                "an ordinary photo",
                "an attractive photo",
                "a beautiful photo",
            ],
            "composition": [
                "a photo with terrible composition",
                "a photo with poor composition",
                "a photo with ordinary composition",
                "a photo with good composition",
                "a photo with excellent composition",
            ],
            "lighting": [
                "a photo with terrible lighting",
                "a photo with dull lighting",
                "a photo with ordinary lighting",
                "a photo with good lighting",
                "a photo with stunning lighting",
            ],
            "colour": [
                "a photo with ugly colours",
                "a photo with dull colours",
                "a photo with ordinary colours",
                "a photo with pleasing colours",
                "a photo with vivid, harmonious colours",
            ],
        },
    },
}
DEFAULT_TASK_PROMPT_SETS = {"quality": "ensemble20", "aesthetics": "aesthetics20"}

# Bounds on tower sizes, checked before any weight is allocated: a config from a stranger with a billion layers or
# a 10^6-pixel input is refused with the field's name instead of hanging the machine. Generous for real CLIPs
# (ViT-bigG: width 1664, 48 layers, 16 heads; text context 77).
SIZE_LIMITS = {
    "hidden_size": 16_384,
    "intermediate_size": 65_536,
    "num_hidden_layers": 256,
    "num_attention_heads": 1_024,
    "image_size": 4_096,
    "patch_size": 1_024,
    "vocab_size": 1_000_000,
    "max_position_embeddings": 65_536,
    "projection_dim": 16_384,
}


class UniQAConfig(PretrainedConfig):
    r"""
    Configuration of a [`UniQAModel`]: a CLIP text tower and vision tower with projections, the prompt sets
    used for zero-shot scoring, the level vector and the named adapters.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The text tower. Defaults to CLIP ViT-B/16's (width 512, 12 layers, 8 heads, context 77).
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The vision tower. Defaults to ViT-B/16 at 224 px (width 768, 12 layers, 12 heads).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the joint image-text embedding.
        logit_scale_init_value (`float`, *optional*, defaults to ln(100)):
            Initial value of the learnable temperature (its `exp` multiplies cosine similarities).
        levels (`list[float]`, *optional*, defaults to `[0.2, 0.4, 0.6, 0.8, 1.0]`):
            Value of each level prompt (worst to best) in zero-shot scoring.
        prompt_sets (`dict`, *optional*):
            `{name: {"task": "quality"|"aesthetics", "groups": {group: [one prompt per level]}}}`.
        task_prompt_sets (`dict`, *optional*):
            The zero-shot prompt set used for each task when none is named.
        adapters (`dict`, *optional*):
            Metadata of the named adapters: `{name: {"task", "bottleneck_dim", "prompt_set", "dataset",
            "mos_range", "metrics"}}`. Their weights live in the model's state dict.
        unavailable_tasks (`dict`, *optional*):
            `{task: reason}` for tasks this model cannot score (e.g. a model trained without aesthetic data); asking
            for one raises an error with the reason.

    Test-time cropping (protocol, number of crops, downscaling) is the image processor's
    ([`UniQAImageProcessor`], saved as `preprocessor_config.json`); its crop size is the vision tower's input size.
    """

    model_type = "uniqa"
    sub_configs = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict | CLIPTextConfig | None = None,
        vision_config: dict | CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 4.605170249938965,
        levels: list[float] | None = None,
        prompt_sets: dict[str, dict[str, Any]] | None = None,
        task_prompt_sets: dict[str, str] | None = None,
        adapters: dict[str, dict[str, Any]] | None = None,
        unavailable_tasks: dict[str, str] | None = None,
        **kwargs,
    ):
        if isinstance(text_config, dict):
            text_config = CLIPTextConfig(**text_config)
        if isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        self.text_config = (
            text_config
            if text_config is not None
            else CLIPTextConfig(
                eos_token_id=EOS_TOKEN_ID,
                bos_token_id=BOS_TOKEN_ID,
                pad_token_id=PAD_TOKEN_ID,
                hidden_act="quick_gelu",
                projection_dim=512,
            )
        )
        self.vision_config = (
            vision_config
            if vision_config is not None
            else CLIPVisionConfig(
                hidden_size=768, patch_size=16, image_size=224, hidden_act="quick_gelu", projection_dim=512
            )
        )
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.initializer_factor = kwargs.pop("initializer_factor", 1.0)
        self.levels = list(levels if levels is not None else DEFAULT_LEVELS)
        self.prompt_sets = copy.deepcopy(prompt_sets if prompt_sets is not None else DEFAULT_PROMPT_SETS)
        self.task_prompt_sets = dict(task_prompt_sets if task_prompt_sets is not None else DEFAULT_TASK_PROMPT_SETS)
        self.adapters = copy.deepcopy(adapters) if adapters is not None else {}
        self.unavailable_tasks = dict(unavailable_tasks or {})
        for legacy in ("crop_mode", "crops", "max_side"):  # written by earlier versions; the image processor's now
            kwargs.pop(legacy, None)
        kwargs.setdefault(
            "custom_pipelines",
            {
                "image-quality-assessment": {
                    "impl": "pipeline_uniqa.ImageQualityAssessmentPipeline",
                    "pt": ["AutoModel"],
                    "type": "image",
                }
            },
        )
        super().__init__(**kwargs)
        self._validate_sizes()
        self._validate_prompt_sets()

    def _validate_sizes(self) -> None:
        """Refuse sizes outside `SIZE_LIMITS` and non-finite scalars, naming the field."""
        fields = [("projection_dim", self.projection_dim)]
        for tower in ("vision_config", "text_config"):
            sub = getattr(self, tower)
            fields += [(f"{tower}.{name}", getattr(sub, name, None)) for name in SIZE_LIMITS if hasattr(sub, name)]
        for name, value in fields:
            limit = SIZE_LIMITS[name.rsplit(".", 1)[-1]]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise ValueError(f"{name} = {value!r}: must be an integer from 1 to {limit}")
        vision = self.vision_config
        if vision.image_size % vision.patch_size:
            raise ValueError(f"vision_config.image_size {vision.image_size} is not a multiple of patch_size")
        numbers = {"logit_scale_init_value": [self.logit_scale_init_value], "levels": self.levels}
        for name, values in numbers.items():
            if not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise ValueError(f"{name} = {values!r}: must be finite numbers")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PretrainedConfig.from_pretrained`; a malformed or absurd `config.json` raises a `ValueError` that
        names the file and the field."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            where = os.path.join(os.fspath(pretrained_model_name_or_path), "config.json")
            raise ValueError(f"{where}: {error}") from error

    def _validate_prompt_sets(self) -> None:
        for name, prompt_set in self.prompt_sets.items():
            if not isinstance(prompt_set, dict) or not isinstance(prompt_set.get("groups"), dict):
                raise ValueError(f"prompt set {name!r}: must be {{'task': ..., 'groups': {{name: [prompts]}}}}")
            if prompt_set.get("task") not in TASKS:
                raise ValueError(f"prompt set {name!r}: task must be one of {TASKS}, not {prompt_set.get('task')!r}")
            for group, prompts in prompt_set["groups"].items():
                if len(prompts) != len(self.levels):
                    raise ValueError(
                        f"prompt set {name!r}, group {group!r}: {len(prompts)} prompts for {len(self.levels)} levels"
                    )
        for task, name in self.task_prompt_sets.items():
            if name not in self.prompt_sets:
                raise ValueError(f"task {task!r} names unknown prompt set {name!r}")

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        for key in ("text_config", "vision_config"):
            value = getattr(self, key)
            output[key] = value.to_dict() if hasattr(value, "to_dict") else value
        return output


UniQAConfig.register_for_auto_class()
