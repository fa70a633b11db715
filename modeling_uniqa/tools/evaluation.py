"""Evaluate a model (zero-shot or with an adapter) on an image + MOS table: metrics, JSON report, scatter plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..modeling_uniqa import UniQAModel
from ..training.finetuning import normalize_mos
from ..training.metrics import iqa_metrics
from ..training.provenance import overlap, overlap_warning, seen_images


def evaluate_table(
    model: UniQAModel,
    table: Sequence[tuple[Any, float]],
    adapter: str | None = None,
    task: str | None = None,
    prompt_set: str | None = None,
    mos_range: tuple[float, float] | None = None,
    higher_is_better: bool = True,
    batch_size: int = 32,
    chunk: int = 64,
    progress: bool = True,
    **score_options: Any,
) -> dict[str, Any]:
    """Score `[(image, mos)]` and compare with the MOS.

    Targets are the MOS normalised to `[0, 1]` (higher is better) when a MOS range is known — `mos_range`, else
    the adapter's stored `mos_range` — and the raw MOS otherwise. SRCC, KRCC and PLCC (raw and logistic) do not
    depend on the scales; RMSE does: with raw MOS outside the scores' range (`model.score_range`, e.g. zero-shot
    scores in [0.2, 1] against a 0-100 MOS) RMSE is left out of `metrics` and `warnings` says why. Images the
    model records as having trained or selected it (its backbone, or `adapter`) are listed in `overlap` by role,
    and `warnings` says the metrics are then optimistic (`modeling_uniqa.training.provenance`).
    `score_options` go to `UniQAModel.score` (`crop_mode`, `crops`, `max_side`, `seed`).

    Returns:
        `{"metrics": {...}, "predictions": [...], "targets": [...], "images": [...], "setup": {...},
        "warnings": [...], "overlap": {role: [images]}}`.
    """
    task, adapter, prompt_set = model.resolve(task, adapter, prompt_set)
    if mos_range is None and adapter is not None:
        meta = model.config.adapters[adapter]
        mos_range = tuple(meta["mos_range"]) if meta.get("mos_range") else None
        higher_is_better = meta.get("higher_is_better", higher_is_better)
    images = [image for image, _ in table]
    mos = np.array([value for _, value in table], dtype=np.float64)
    targets = normalize_mos(mos, mos_range, higher_is_better) if mos_range is not None else mos
    scores = []
    with tqdm(total=len(images), desc="evaluate", unit="img", disable=not progress) as bar:
        for start in range(0, len(images), chunk):
            part = images[start : start + chunk]
            scores.append(model.score(part, task, adapter, prompt_set, batch_size=batch_size, **score_options))
            bar.update(len(part))
    predictions = np.concatenate([s.numpy() for s in scores]).astype(np.float64)
    metrics, warnings = iqa_metrics(predictions, targets), []
    low, high = model.score_range(task, adapter, prompt_set)
    if mos_range is None and (mos.min() < low - 1e-6 or mos.max() > high + 1e-6):
        del metrics["rmse"]
        warnings.append(
            f"RMSE left out: the scores lie in [{low:g}, {high:g}] and the MOS in [{mos.min():g}, {mos.max():g}], "
            "different scales; give the MOS scale (mos_range, or --mos-range LOW HIGH) to compare on [0, 1]. "
            "SRCC, KRCC and PLCC do not depend on the scales."
        )
    found = overlap(images, seen_images(model.config, adapter))
    if found:
        warnings.append(overlap_warning(found, len(images)))
    return {
        "metrics": metrics,
        "warnings": warnings,
        "overlap": {role: [str(images[i]) for i in indices] for role, indices in found.items()},
        "predictions": predictions.tolist(),
        "targets": targets.tolist(),
        "images": [str(image) for image in images],
        "setup": {
            "model": str(model.name_or_path),
            "task": task,
            "adapter": adapter,
            "prompt_set": prompt_set if isinstance(prompt_set, str) else "custom",
            "mos_range": list(mos_range) if mos_range is not None else None,
            "higher_is_better": higher_is_better,
            "targets": "normalised MOS in [0, 1]" if mos_range is not None else "raw MOS",
            "images": len(images),
            **{k: v for k, v in score_options.items() if v is not None},
        },
    }


def scatter_plot(report: dict[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """Predicted score vs target (MOS) scatter as PNG, with SRCC/PLCC in the title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = report["metrics"]
    figure, axes = plt.subplots(figsize=(5, 5), dpi=100)
    axes.scatter(report["targets"], report["predictions"], s=8, alpha=0.6)
    axes.set_xlabel("MOS" + (" (normalised)" if report["setup"]["mos_range"] else ""))
    axes.set_ylabel("predicted score")
    setup = report["setup"]
    label = title or f"{setup['adapter'] or setup['prompt_set']} ({setup['images']} images)"
    axes.set_title(f"{label}\nSRCC {metrics['srcc']:.3f}  PLCC {metrics['plcc']:.3f}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(report: dict[str, Any], json_path: str | os.PathLike, png_path: str | os.PathLike | None) -> None:
    """Write the JSON report and, if `png_path` is given, the scatter plot."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if png_path is not None:
        scatter_plot(report, png_path)
