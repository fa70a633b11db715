"""Model cards (the README.md of a model folder): one front matter for every UniQA model folder, and the card of a
converted checkpoint. The bundled model's card (`training/model_card.py`) adds the numbers its build measured to the
same front matter; an adapter folder's short card is written with the adapter (`UniQAModel.save_multicue_adapter`)."""

from __future__ import annotations

from typing import Any

import yaml

from ..modeling_uniqa import UniQAModel


def front_matter(
    license: str = "other", license_name: str | None = None, model_index: list[dict[str, Any]] | None = None
) -> str:
    """The Hub's YAML header of a UniQA model card; `model_index`: the Hub's `model-index` results, if any
    (`[{"name": ..., "results": [{"task": ..., "dataset": ..., "metrics": [...]}]}]`)."""
    licence = f"license: {license}" + (f"\nlicense_name: {license_name}" if license_name else "")
    index = yaml.safe_dump({"model-index": model_index}, sort_keys=False, allow_unicode=True, width=1000)
    index = "\n" + index.rstrip() if model_index else ""
    return f"""---
{licence}
library_name: transformers
pipeline_tag: image-feature-extraction
tags:
- image-quality-assessment
- image-aesthetics-assessment
- uniqa
- clip{index}
---"""


def converted_model_card(model: UniQAModel, provenance: dict[str, str], license: str = "other") -> str:
    """A Hub model card (YAML header + usage) for a converted model."""
    config = model.config
    tasks = sorted({s["task"] for s in config.prompt_sets.values()} | {a["task"] for a in config.adapters.values()})
    low, high = model.score_range()
    adapters = (
        "\n".join(
            f"| `{name}` | {meta['task']} | {meta.get('dataset') or 'unknown'} | {meta.get('source', '')} |"
            for name, meta in config.adapters.items()
        )
        or "| (none) | | | |"
    )
    prompt_sets = "\n".join(
        f"| `{name}` | {s['task']} | {', '.join(s['groups'])} |" for name, s in config.prompt_sets.items()
    )
    vision = config.vision_config
    return f"""{front_matter(license)}

# UniQA ({vision.num_hidden_layers}-layer ViT, patch {vision.patch_size}, {vision.image_size} px)

A UniQA model (Zhou et al., "UniQA: Unified Vision-Language Pre-training for Image Quality and Aesthetic
Assessment", arXiv 2406.01069) in the `modeling_uniqa` format. Tasks: {", ".join(tasks)}.

## Scores
- One score per image, **higher is better**. Zero-shot scores lie in [{low:.2f}, {high:.2f}]: the level-weighted
  probabilities of the level prompts (bad, poor, fair, good, perfect = {", ".join(f"{v:g}" for v in config.levels)}).
- Adapter scores predict the MOS of their training dataset normalised to [0, 1]; `mos_range=(low, high)` maps
  them back onto that dataset's scale.

| prompt set | task | groups |
|---|---|---|
{prompt_sets}

| adapter | task | trained on | source |
|---|---|---|---|
{adapters}

## Preprocessing
Pixels in [0, 1], CLIP mean/std normalisation, {vision.image_size}x{vision.image_size} crops of the un-resized
image (images smaller than a crop are upscaled). Default: a deterministic grid of up to {
        model.image_processor.crops
    } crops, the
image score being the mean crop score; the paper's random 10-crop protocol is `crop_mode="random", crops=10`.

## Use
```python
from transformers import AutoModel
model = AutoModel.from_pretrained("PATH_OR_HUB_ID", trust_remote_code=True)
model.score(["photo.jpg"])                  # zero-shot quality
model.score(["photo.jpg"], task="aesthetics")
```
or `uniqa score photos/ --model PATH_OR_HUB_ID`.

## Provenance
Converted with `uniqa convert` from `{provenance["source"]}` (sha256 `{provenance["sha256"]}`){
        f", adapter `{provenance['adapter']}` (sha256 `{provenance['adapter_sha256']}`)"
        if "adapter" in provenance
        else ""
    }.
Tokenizer: OpenAI CLIP's byte-pair encoding (MIT licence, Copyright (c) 2021 OpenAI). Check the licence of the
source weights before use: the original UniQA release is for non-commercial research.
"""
