"""The UniQA image-text pre-training corpus.

Released format: a JSON list ``[{"image_path": <path relative to an image root>,
"prompt": <str or list of str>}, ...]``. :func:`load_corpus` turns it into a ``datasets.Dataset``
with ``image`` (Image), ``image_path`` (str) and ``captions`` (list of str, >= 1); the exports
write folders that plain ``datasets.load_dataset(DIR, split="train")`` loads with no code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from datasets.table import embed_table_storage
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

CORPUS_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_path": datasets.Value("string"),
        "captions": datasets.Sequence(datasets.Value("string")),
    }
)


@dataclass
class CorpusReport:
    """Entries read, kept, and skipped (missing image / no caption) by :func:`load_corpus`."""

    entries: int
    kept: int
    missing_images: list[str] = field(default_factory=list)
    without_captions: list[str] = field(default_factory=list)


def _captions(prompt: Any, where: str) -> list[str]:
    if isinstance(prompt, str):
        caps = [prompt]
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        caps = list(prompt)
    else:
        raise ValueError(f"{where}: 'prompt' must be a string or a list of strings, got {prompt!r:.80}")
    return [c.strip() for c in caps if c.strip()]


def load_corpus(
    json_path: str | Path, image_root: str | Path, return_report: bool = False
) -> datasets.Dataset | tuple[datasets.Dataset, CorpusReport]:
    """Read the corpus JSON against ``image_root``; entries whose image is missing (or that have
    no non-empty caption) are skipped, counted and reported with a warning."""
    json_path, image_root = Path(json_path), Path(image_root)
    try:
        entries = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"corpus file {json_path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path} is not valid JSON: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a JSON list of {{image_path, prompt}} objects")
    report = CorpusReport(entries=len(entries), kept=0)
    cols: dict[str, list[Any]] = {"image": [], "image_path": [], "captions": []}
    for i, entry in enumerate(tqdm(entries, desc="checking corpus images", leave=False)):
        where = f"{json_path} entry {i}"
        if not isinstance(entry, dict) or "image_path" not in entry or "prompt" not in entry:
            raise ValueError(f"{where}: expected keys 'image_path' and 'prompt', got {entry!r:.80}")
        rel = str(entry["image_path"])
        caps = _captions(entry["prompt"], where)
        path = image_root / rel
        if not caps:
            report.without_captions.append(rel)
        elif not path.is_file():
            report.missing_images.append(rel)
        else:
            cols["image"].append(str(path))
            cols["image_path"].append(Path(rel).as_posix())
            cols["captions"].append(caps)
    report.kept = len(cols["image"])
    skipped = len(report.missing_images) + len(report.without_captions)
    if skipped:
        logger.warning(
            "corpus %s: skipped %d of %d entries (%d images missing under %s, e.g. %s; %d without "
            "captions)",
            json_path, skipped, report.entries, len(report.missing_images), image_root,
            ", ".join(report.missing_images[:3]), len(report.without_captions),
        )  # fmt: skip
    ds = datasets.Dataset.from_dict(cols, features=CORPUS_FEATURES)
    return (ds, report) if return_report else ds


def dataset_card(title: str, data_path: str, summary: str, extra: str = "") -> str:
    """README.md with the ``configs:`` YAML that makes ``load_dataset(DIR)`` work."""
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: "{data_path}"
task_categories:
- image-to-text
- zero-shot-image-classification
tags:
- image-quality-assessment
- image-aesthetics-assessment
- uniqa
---

# {title}

{summary}

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder", split="train")
```
{extra}
Credit the source image datasets (e.g. AVA, FLIVE) and the UniQA paper (Zhou et al., 2024) when
sharing; the images keep their original licences.
"""


def _summary(n: int) -> str:
    return (
        f"Image-text pairs for UniQA pre-training: {n} images, each with a list of quality or\n"
        "aesthetics captions (column `captions`; pre-training samples one caption per step)."
    )


def _corpus_rows(ds: datasets.Dataset) -> datasets.Dataset:
    if "captions" not in ds.column_names or "image" not in ds.column_names:
        raise ValueError(f"expected a corpus dataset with image and captions, got {ds.column_names}")
    return ds


def export_imagefolder(ds: datasets.Dataset, out_dir: str | Path, link: bool = True) -> Path:
    """Write ``out_dir/train/<image_path>`` + ``train/metadata.jsonl`` + ``README.md``.

    Images are hard-linked when possible (``link``), else copied; rows whose image is held
    as bytes are written as files.
    """
    ds = _corpus_rows(ds)
    out, train = Path(out_dir), Path(out_dir) / "train"
    train.mkdir(parents=True, exist_ok=True)
    raw = ds.cast_column("image", datasets.Image(decode=False))
    with (train / "metadata.jsonl").open("w") as meta:
        for i, row in enumerate(tqdm(raw, desc="exporting imagefolder", leave=False)):
            rel = row.get("image_path") or Path(row["image"]["path"] or f"{i:08d}.png").name
            dest = train / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = row["image"]["path"]
            if row["image"]["bytes"] is not None:
                dest.write_bytes(row["image"]["bytes"])
            elif link:
                try:
                    if dest.exists():
                        dest.unlink()
                    os.link(src, dest)
                except OSError:
                    shutil.copy2(src, dest)
            else:
                shutil.copy2(src, dest)
            meta.write(json.dumps({"file_name": Path(rel).as_posix(), "captions": row["captions"]}) + "\n")
    (out / "README.md").write_text(dataset_card("UniQA image-text corpus (ImageFolder)", "train/**", _summary(len(ds))))
    return out


def export_parquet(ds: datasets.Dataset, out_dir: str | Path, max_rows_per_shard: int = 1000) -> Path:
    """Write ``out_dir/data/train-0000k-of-0000n.parquet`` (image bytes embedded) + ``README.md``."""
    ds = _corpus_rows(ds)
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(ds) // max_rows_per_shard))
    for k in tqdm(range(n), desc="writing parquet shards", leave=False):
        shard = ds.shard(num_shards=n, index=k, contiguous=True)
        table = shard.with_format("arrow")[:].cast(shard.features.arrow_schema)
        pq.write_table(embed_table_storage(table), out / "data" / f"train-{k:05d}-of-{n:05d}.parquet")
    (out / "README.md").write_text(
        dataset_card("UniQA image-text corpus (Parquet)", "data/train-*.parquet", _summary(len(ds)))
    )
    return out
