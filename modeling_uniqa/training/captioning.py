"""Quality / aesthetics captions for images, for the pre-training corpus.

See docs/method.md, "Captions and comment purification".

Two captioners with one interface, `captioner(requests) -> list[list[str]]` (captions per request):

* [`TemplateCaptioner`]: deterministic descriptions from what is known of an image — its MOS level, its synthetic
  distortions and their levels, dataset attributes (e.g. SPAQ's brightness). Runs anywhere, offline.
* [`MLLMCaptioner`]: any transformers `image-text-to-text` model, asked for a description conditioned on the
  image's MOS level.

[`caption_to_jsonl`] runs a captioner over a table and appends corpus entries (`image_path`, `prompt` list) to a
JSONL file as it goes; a killed run resumes without duplicates. Training-only module.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..configuration_uniqa import LEVEL_NAMES
from ..image_processing_uniqa import load_image

# Prompt templates. `{level}` is a level name (bad .. perfect); the `cues` pick one word per level, worst first.
DEFAULT_CAPTION_CONFIG: dict[str, Any] = {
    "quality": {
        "templates": [
            "{level} image",
            "The quality of image is {level}.",
            "a photo of {level} quality",
            "{quality} image",
        ],
        "cues": {
            "quality": [
                "extremely low-quality",
                "low-quality",
                "fair",
                "high-quality",
                "extremely high-quality",
            ],
            "sharpness": ["extremely blurry", "blurry", "fair", "sharp", "extremely sharp"],
            "noise": ["extremely noisy", "noisy", "fair", "noise-free", "extremely noise-free"],
        },
        # which cue describes a distortion family; pristine images get every cue
        "distortion_cues": {
            "blur": "sharpness",
            "noise": "noise",
        },
        "cue_template": "{word} image",
    },
    "aesthetics": {
        "templates": ["{level} image", "The aesthetics of the image is {level}.", "{appeal} image"],
        "cues": {"appeal": ["ugly", "unattractive", "ordinary", "attractive", "beautiful"]},
        "distortion_cues": {},
        "cue_template": "{word} image",
    },
    # attribute value in [0, 1] -> one phrase per level (worst/lowest first)
    "attributes": {
        "brightness": [
            "a very dark photo",
            "a dark photo",
            "a normally lit photo",
            "a bright photo",
            "a very bright photo",
        ],
        "colorfulness": [
            "a colourless photo",
            "a dull photo",
            "a photo with natural colours",
            "a colourful photo",
            "a vividly colourful photo",
        ],
    },
    # MLLM prompts: `{level}` is the image's MOS level name
    "mllm_prompts": {
        "quality": (
            "The overall quality of this image has been rated {level} (bad, poor, fair, good or perfect). "
            "In one or two sentences, describe its technical quality (sharpness, noise, exposure, colour, "
            "compression) in a way that explains this rating."
        ),
        "aesthetics": (
            "The aesthetic appeal of this image has been rated {level} (bad, poor, fair, good or perfect). "
            "In one or two sentences, describe its aesthetics (composition, lighting, colour, content) in a way "
            "that explains this rating."
        ),
    },
}

# A distortion name -> its family, for the cue words (names as in `datasets_scripts.synthetic.DISTORTIONS`).
DISTORTION_FAMILIES = {
    "gaussian_blur": "blur",
    "motion_blur": "blur",
    "lens_blur": "blur",
    "jpeg2000": "blur",
    "pixelation": "blur",
    "gaussian_noise": "noise",
    "poisson_noise": "noise",
    "impulse_noise": "noise",
}


def level_index(mos_normalized: float, n_levels: int = len(LEVEL_NAMES)) -> int:
    """Normalised MOS in [0, 1] (higher is better) -> level index 0 (bad) .. n-1 (perfect), equal-width bins."""
    if not np.isfinite(mos_normalized):
        raise ValueError(f"MOS must be finite, got {mos_normalized}")
    return int(min(n_levels - 1, max(0, int(mos_normalized * n_levels))))


def distortion_level_index(level: int) -> int:
    """Synthetic distortion level 0 (pristine) .. 5 (extreme) -> quality level index 4 (perfect) .. 0 (bad)."""
    return max(0, 4 - int(level))


@dataclass
class CaptionRequest:
    """What is known of one image.

    Args:
        image_path: path relative to the corpus image root (the corpus key).
        task: `"quality"` or `"aesthetics"`.
        mos_normalized: MOS in [0, 1], higher is better (None if unknown).
        distortions: `[(name, level 1..5)]` applied synthetically (empty for an untouched image).
        description: a known description of the distortions (e.g. `datasets_scripts.synthetic.describe_chain`).
        attributes: dataset attributes normalised to [0, 1], e.g. `{"brightness": 0.7}`.
        image: the image (path/PIL/array) for MLLM captioners; `image_path` under the root when None.
    """

    image_path: str
    task: str = "quality"
    mos_normalized: float | None = None
    distortions: list[tuple[str, int]] = field(default_factory=list)
    description: str | None = None
    attributes: dict[str, float] = field(default_factory=dict)
    image: Any = None

    def level(self) -> int:
        """Level index 0..4: from the MOS, capped by the worst synthetic distortion."""
        candidates = []
        if self.mos_normalized is not None:
            candidates.append(level_index(self.mos_normalized))
        candidates += [distortion_level_index(level) for _, level in self.distortions]
        if not candidates:
            raise ValueError(f"{self.image_path}: no MOS and no distortion level: cannot condition a caption")
        return min(candidates)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CaptionRequest:
        """From a table row (`image_path` required; `task`, `mos_normalized`, `distortion` + `level` or
        `distortions`, `description`, attributes under `attributes`)."""
        if "image_path" not in row:
            raise ValueError(f"caption table row without 'image_path': {dict(row)!r:.120}")
        distortions = [tuple(d) for d in row.get("distortions") or []]
        if row.get("distortion") not in (None, "", "none") and int(row.get("level") or 0) > 0:
            distortions.append((str(row["distortion"]), int(row["level"])))
        mos = row.get("mos_normalized")
        return cls(
            image_path=str(row["image_path"]),
            task=str(row.get("task") or "quality"),
            mos_normalized=None if mos in (None, "") else float(mos),
            distortions=[(str(n), int(lv)) for n, lv in distortions],
            description=row.get("description") or None,
            attributes=dict(row.get("attributes") or {}),
        )


class TemplateCaptioner:
    """Deterministic captions from templates (see `DEFAULT_CAPTION_CONFIG`; pass `config` to override parts).

    Per request: every level template, the cue phrases that fit (blur -> sharpness words, noise -> noise words,
    an undistorted image -> all cues), the known distortion description and attribute phrases.
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config = copy.deepcopy(DEFAULT_CAPTION_CONFIG)
        for key, value in (config or {}).items():
            self.config[key] = value

    def caption(self, request: CaptionRequest) -> list[str]:
        task_config = self.config.get(request.task)
        if task_config is None:
            raise ValueError(f"{request.image_path}: no caption templates for task {request.task!r}")
        index = request.level()
        cues = task_config["cues"]
        words = {name: values[index] for name, values in cues.items()}
        captions = [t.format(level=LEVEL_NAMES[index], **words) for t in task_config["templates"]]
        families = {DISTORTION_FAMILIES.get(name) for name, _ in request.distortions}
        cue_names = list(cues) if not request.distortions else [task_config["distortion_cues"].get(f) for f in families]
        for name in cue_names:
            if name in words:
                captions.append(task_config["cue_template"].format(word=words[name]))
        if request.description:
            captions.append(request.description)
        for name, value in request.attributes.items():
            phrases = self.config["attributes"].get(name)
            if phrases:
                captions.append(phrases[level_index(float(value), len(phrases))])
        return list(dict.fromkeys(captions))  # unique, in order

    def __call__(self, requests: Sequence[CaptionRequest]) -> list[list[str]]:
        return [self.caption(request) for request in requests]


class MLLMCaptioner:
    """Captions from a transformers `image-text-to-text` model, conditioned on each image's MOS level.

    Args:
        model: a model name/path (loaded with `AutoModelForImageTextToText` + `AutoProcessor`), or a loaded model.
        processor: the model's processor (required when `model` is an object).
        image_root: folder the requests' `image_path`s are relative to (when `request.image` is None).
        prompts: `{task: prompt template}` with `{level}`; defaults to `DEFAULT_CAPTION_CONFIG["mllm_prompts"]`.
        max_new_tokens: generation length. keep_level_caption: also keep the plain "{level} image" caption.
        generate_kwargs: passed to `generate` (greedy decoding by default, so captions are reproducible).
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        image_root: str | os.PathLike = ".",
        prompts: Mapping[str, str] | None = None,
        max_new_tokens: int = 60,
        keep_level_caption: bool = True,
        **generate_kwargs,
    ):
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForImageTextToText, AutoProcessor

            processor = processor or AutoProcessor.from_pretrained(model)
            model = AutoModelForImageTextToText.from_pretrained(model)
        if processor is None:
            raise ValueError("MLLMCaptioner: pass the processor with a loaded model")
        self.model, self.processor = model.eval(), processor
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched generation of a decoder-only model continues after the prompt
        self.image_root = Path(image_root)
        self.prompts = dict(prompts or DEFAULT_CAPTION_CONFIG["mllm_prompts"])
        self.max_new_tokens = max_new_tokens
        self.keep_level_caption = keep_level_caption
        self.generate_kwargs = {"do_sample": False, **generate_kwargs}

    def _prompt(self, request: CaptionRequest) -> str:
        if request.task not in self.prompts:
            raise ValueError(f"{request.image_path}: no MLLM prompt for task {request.task!r}")
        question = self.prompts[request.task].format(level=LEVEL_NAMES[request.level()])
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    @torch.inference_mode()
    def __call__(self, requests: Sequence[CaptionRequest]) -> list[list[str]]:
        images = [load_image(r.image if r.image is not None else self.image_root / r.image_path) for r in requests]
        inputs = self.processor(
            images=images, text=[self._prompt(r) for r in requests], padding=True, return_tensors="pt"
        ).to(self.model.device)
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **self.generate_kwargs)
        texts = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        results = []
        for request, text in zip(requests, texts, strict=True):
            captions = [" ".join(text.split())] if text.strip() else []
            if self.keep_level_caption or not captions:
                captions.append(f"{LEVEL_NAMES[request.level()]} image")
            results.append(captions)
        return results


def _done_keys(path: Path) -> set[tuple[str, str]]:
    """`(image_path, task)` of the complete lines of a JSONL output; a torn last line (a killed run) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(data))
    keys = set()
    for number, line in enumerate(data.decode().splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number}: not JSON ({error}); fix or delete the file") from error
            keys.add((entry["image_path"], entry.get("task", "quality")))
    return keys


def caption_to_jsonl(
    requests: Iterable[CaptionRequest],
    captioner: Callable[[Sequence[CaptionRequest]], list[list[str]]],
    output: str | os.PathLike,
    batch_size: int = 8,
    limit: int | None = None,
) -> dict[str, int]:
    """Caption `requests` in batches and append `{"image_path", "task", "prompt": [captions]}` lines to `output`.

    Requests already in `output` (same `image_path` and `task`) are skipped, so re-running after a kill
    continues where it stopped, without duplicates. `limit` stops after that many new entries.
    Returns `{"written": n, "skipped": n}`.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = _done_keys(output)
    todo = [r for r in requests if (r.image_path, r.task) not in done]
    skipped = 0
    pending: list[CaptionRequest] = []
    seen: set[tuple[str, str]] = set()
    for request in todo:
        key = (request.image_path, request.task)
        if key in seen:
            skipped += 1
            continue
        seen.add(key)
        pending.append(request)
    if limit is not None:
        pending = pending[:limit]
    written = 0
    with output.open("a") as handle, tqdm(total=len(pending), desc="captioning", leave=False) as bar:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            for request, captions in zip(batch, captioner(batch), strict=True):
                entry = {"image_path": request.image_path, "task": request.task, "prompt": captions}
                handle.write(json.dumps(entry) + "\n")
                written += 1
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    return {"written": written, "skipped": skipped + len(done)}
