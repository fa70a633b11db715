"""Which images trained and which selected a model, and whether an evaluation reuses them.

A model folder records them in its `config.json`, each as `{digest: file name}` (the first 16 hex digits of the
SHA-1 of the file's bytes, [`image_digest`], so a renamed or copied file is still recognised and a file of another
dataset with the same name is not):

- `config.adapters[name]["images"]`: `{"trained": ..., "selected": ...}`, the images an adapter was trained on and
  those its checkpoint was selected on (`finetune_adapter` records both);
- `config.backbone_images`: the same for the backbone (the dataset images a build pre-trained it on and chose its
  recipe on; `training/build_default.py` records them).

An evaluation on images that trained or selected the model measures how well it fits what it saw, not how well it
generalises: [`overlap`] names them and [`overlap_warning`] says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .finetuning import image_digest

DIGEST_CHARS = 16
PRETRAINED = "pre-trained the backbone"  # the role of `config.backbone_images["trained"]`


def image_record(images: Iterable[Any]) -> dict[str, str | None]:
    """`{digest: file name}` of images (paths; a PIL image or array has no name: `None`)."""
    return {
        image_digest(image)[:DIGEST_CHARS]: Path(image).name if isinstance(image, (str, os.PathLike)) else None
        for image in images
    }


def seen_images(config: Any, adapter: str | None = None) -> dict[str, dict[str, str | None]]:
    """The recorded images of a model (its `UniQAConfig`) -> `{role: {digest: name}}`, roles such as
    `"pre-trained the backbone"` or `"selected adapter 'livec'"`; the adapter's only when `adapter` is given."""
    backbone = getattr(config, "backbone_images", None) or {}
    records = {
        PRETRAINED: backbone.get("trained"),
        "selected the backbone's recipe": backbone.get("selected"),
    }
    if adapter is not None:
        meta = (config.adapters.get(adapter) or {}).get("images") or {}
        records[f"trained adapter {adapter!r}"] = meta.get("trained")
        records[f"selected adapter {adapter!r}"] = meta.get("selected")
    return {role: dict(record) for role, record in records.items() if record}


def overlap(images: Sequence[Any], seen: Mapping[str, Mapping[str, str | None]]) -> dict[str, list[int]]:
    """`{role: [indices of images recorded under that role]}` (roles without any left out)."""
    if not seen:
        return {}
    digests = [image_digest(image)[:DIGEST_CHARS] for image in images]
    found = {role: [i for i, digest in enumerate(digests) if digest in record] for role, record in seen.items()}
    return {role: indices for role, indices in found.items() if indices}


def overlap_summary(found: Mapping[str, Sequence[int]]) -> str:
    """`{role: indices}` -> e.g. `"502 pre-trained the backbone; 125 selected adapter 'livec'"`."""
    return "; ".join(f"{len(indices)} {role}" for role, indices in found.items())


def overlap_warning(found: Mapping[str, Sequence[int]], total: int) -> str | None:
    """One sentence on how many of `total` evaluated images trained or selected the model (`None`: none did)."""
    if not found:
        return None
    union = set().union(*found.values())
    return (
        f"{len(union)} of the {total} evaluated images trained or selected this model ({overlap_summary(found)}): "
        "on them the metrics measure how well it fits what it saw, not how well it generalises (optimistic)"
    )


def without_seen(table: Sequence[tuple[Any, float]], seen: Mapping[str, Mapping[str, str | None]]):
    """`[(image, mos)]` -> `(rows of images not in `seen`, overlap(images, seen))`."""
    found = overlap([image for image, _ in table], seen)
    dropped = set().union(*found.values()) if found else set()
    return [row for i, row in enumerate(table) if i not in dropped], found
