"""Protocol `compare`: a model against simple baselines, on the same random splits of an image + MOS table.

    uniqa protocols compare --model DIR --table labels.csv --image-root IMGS --mos-range 0 100 --out R \\
        --cache-dir cache/features

Scorers, each tested on the test part of every split (`protocols.make_splits`: 10 seeded 80/20 splits by image):

- `zero-shot <prompt set>`: the model's zero-shot prompt sets (`--prompt-sets`, default: its quality sets); no
  training.
- `adapter (per split)`: a new multi-cue adapter on the frozen backbone, trained on the training part with its
  checkpoint selected on a validation part carved from it (`protocols.train_and_test`, the recipe of `--config`).
- `sharpness`: the gradient energy of the grey image (`baselines.gradient_energy`); no training.
- `BRISQUE + SVR`: BRISQUE's features and a support-vector regression trained on the same training part, its
  hyper-parameters selected on the same validation part (`baselines.BrisqueRegressor`).

Per scorer: the median, quartiles, minimum and maximum over splits of the test SRCC and PLCC. Distortion curves:
in each split, `--curve-photos` test photos (MOS at least the table's median; none the model records as
pre-training its backbone) are distorted by every type of `datasets_scripts.synthetic` at levels 1-5; per photo and
type the Spearman correlation of level and score (-1: every stronger level scores lower), its mean over photos,
and the median of that over splits. The model's features are computed once (the feature cache, `--cache-dir`), as
are the baselines' (in memory). Writes `<out>/compare.json` and `<out>/compare.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling_uniqa import UniQAModel
from .baselines import BrisqueRegressor, brisque_features, gradient_energy
from .finetuning import (
    AdapterArguments,
    CachedFeatureScorer,
    FeatureCache,
    FinetuneTrainingArguments,
    Table,
    feature_scores,
    normalize_mos,
)
from .metrics import iqa_metrics
from .pretraining import level_curves
from .protocols import _subset, carve_validation, markdown_table, protocol_splits, train_and_test
from .provenance import PRETRAINED, overlap, seen_images

ADAPTER, SHARPNESS, BRISQUE = "adapter (per split)", "sharpness (gradient energy)", "BRISQUE + SVR"
SPREAD = ("median", "q1", "q3", "min", "max")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, minimum and maximum of `values` (NaN left out)."""
    v = np.asarray([x for x in values if x == x], dtype=np.float64)
    if not v.size:
        return dict.fromkeys(SPREAD, float("nan"))
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max())}


def weights_sha256(model_dir: str | Path) -> str | None:
    """SHA-256 of a model folder's `model.safetensors` (which model a result belongs to), `None` if absent."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclasses.dataclass
class Features:
    """What the scorers need of a list of images: the model's test-time crop features (`FeatureCache`), the
    sharpness score and the BRISQUE features."""

    crops: list[torch.Tensor]
    sharpness: np.ndarray
    brisque: np.ndarray

    @classmethod
    def of(
        cls, images: Sequence[Any], cache: FeatureCache, adapter_args: AdapterArguments, progress: bool = False
    ) -> Features:
        crops = cache.eval_features(images, adapter_args.eval_crop_mode, adapter_args.eval_crops, adapter_args.max_side)
        return cls(
            crops,
            np.array([gradient_energy(image) for image in images]),
            np.stack([brisque_features(image) for image in tqdm(images, "BRISQUE", disable=not progress)]),
        )

    @classmethod
    def joined(cls, parts: Sequence[Features]) -> Features:
        return cls(
            [c for part in parts for c in part.crops],
            np.concatenate([part.sharpness for part in parts]),
            np.concatenate([part.brisque for part in parts]),
        )


def draw(candidates: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` of `candidates` (all if fewer), drawn with `seed`, in sorted order."""
    candidates = sorted(candidates)
    chosen = np.random.default_rng(seed).choice(len(candidates), min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(chosen)]


def distorted_features(
    photos: Sequence[str], distortions: Sequence[str], cache: FeatureCache, adapter_args: AdapterArguments
) -> tuple[list[dict[str, Any]], list[Features]]:
    """Each photo undistorted and at levels 1-5 of every distortion -> `(rows: distortion, level, reference_id;
    their Features, one part per photo)`, one photo's images in memory at a time."""
    from datasets_scripts.synthetic import iter_synthetic

    rows, parts, chunk = [], [], []
    stream = iter_synthetic(list(photos), distortions, seed=0, include_reference=True, reference_ids=list(photos))
    for row in itertools.chain(stream, [None]):  # None: the end of the last photo
        if chunk and (row is None or row["reference_id"] != chunk[-1]["reference_id"]):
            parts.append(Features.of([r.pop("image") for r in chunk], cache, adapter_args))
            rows += chunk
            chunk = []
        if row is not None:
            chunk.append(row)
    return rows, parts


def curves_of(rows: list[dict], scores: np.ndarray, photos: Sequence[str]) -> dict[str, Any]:
    """`level_curves` of the rows of `photos` -> `{"per_type": ..., "mean": ...}`."""
    keep = [i for i, row in enumerate(rows) if row["reference_id"] in set(photos)]
    curves = level_curves([rows[i] for i in keep], [float(scores[i]) for i in keep])
    return {"per_type": curves["per_type"], "mean": curves["mean"]}


def compare(
    model: UniQAModel,
    table: Table,
    options: argparse.Namespace,
    args: FinetuneTrainingArguments,
    adapter_args: AdapterArguments,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the protocol (see the module's docstring) -> `(results, rows of the summary table)`; `results` also
    holds `columns` and `notes` (the distortion-curve table) for `protocols.write_results`."""
    from datasets_scripts.synthetic import DISTORTIONS

    progress = not args.disable_tqdm
    mos_range, higher_is_better = options.scale
    splits = protocol_splits(table, options)
    images = [image for image, _ in table]
    targets = normalize_mos([mos for _, mos in table], mos_range, higher_is_better)
    index = {str(image): i for i, image in enumerate(images)}
    cache = FeatureCache(
        model, options.cache_dir, adapter_args.feature_batch_size, adapter_args.bf16_features, progress
    )
    features = Features.of(images, cache, adapter_args, progress)
    seen = overlap(images, seen_images(model.config))  # {role: indices}
    pretrained = set(seen.get(PRETRAINED, []))
    median_mos = float(np.median([mos for _, mos in table]))
    eligible = {str(image) for i, (image, mos) in enumerate(table) if i not in pretrained and mos >= median_mos}
    photos_of = [
        draw([str(image) for image in split["test"] if str(image) in eligible], options.curve_photos, split_seed)
        for split_seed, split in enumerate(splits, start=options.split_seed)
    ]
    curve_photos = sorted({photo for photos in photos_of for photo in photos})
    rows, parts = distorted_features(curve_photos, options.distortions or DISTORTIONS, cache, adapter_args)
    # one list of inputs: the table's images [0, n), then the distorted photos' rows [n, n + len(rows))
    everything, n = Features.joined([features, *parts]), len(images)

    prompt_sets = options.prompt_sets or [
        name for name, prompt_set in model.config.prompt_sets.items() if prompt_set["task"] == "quality"
    ]
    zero_shot = {
        f"zero-shot {name}": feature_scores(CachedFeatureScorer(model, None, prompt_set=name), everything.crops)
        for name in prompt_sets
    }
    runs = []
    for i, split in enumerate(splits):
        train, test = _subset(table, split["train"]), _subset(table, split["test"])
        test_idx = [index[str(image)] for image, _ in test]
        name = f"compare{i}"
        adapter_run = train_and_test(
            model, train, test, name, mos_range, higher_is_better, args, adapter_args, options.cache_dir,
            keep_adapter=True,
        )  # fmt: skip
        scores = {**zero_shot, ADAPTER: feature_scores(CachedFeatureScorer(model, name), everything.crops)}
        scores = {key: v.numpy() for key, v in scores.items()} | {SHARPNESS: everything.sharpness}
        model.delete_multicue_adapter(name)
        fit, validation = carve_validation(train, 0.1, args.seed)  # the adapter's validation part
        fit_idx, val_idx = ([index[str(image)] for image, _ in part] for part in (fit, validation))
        regressor = BrisqueRegressor().fit(
            features.brisque[fit_idx], targets[fit_idx], features.brisque[val_idx], targets[val_idx]
        )
        scores[BRISQUE] = regressor.predict(everything.brisque)
        metrics = {key: iqa_metrics(v[test_idx], targets[test_idx]) for key, v in scores.items()}
        photos = photos_of[i]
        runs.append(
            {
                "split": i,
                "test_images": len(test),
                "test_images_seen_by_model": {role: len(set(found) & set(test_idx)) for role, found in seen.items()},
                "metrics": metrics,
                "adapter_best_epoch": adapter_run["best_epoch"],
                "brisque_selection": regressor.selection,
                "curve_photos": [Path(photo).name for photo in photos],
                "curves": {key: curves_of(rows, v[n:], photos) for key, v in scores.items()} if photos else {},
            }
        )
        line = ", ".join(f"{key} {m['srcc']:.3f}" for key, m in metrics.items())
        print(f"split {i + 1}/{len(splits)}: test SRCC {line}", file=sys.stderr, flush=True)
    return summarise_runs(runs, prompt_sets, len(table), options)


def cell(values: dict[str, float]) -> str:
    """A `spread` as `median [q1, q3] (min to max)`."""
    return (
        f"{values['median']:.3f} [{values['q1']:.3f}, {values['q3']:.3f}] ({values['min']:.3f} to {values['max']:.3f})"
    )


def summarise_runs(runs, prompt_sets, table_size, options) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Spread of each scorer's test SRCC/PLCC over splits, median distortion curves, and the markdown."""
    scorers = list(runs[0]["metrics"])
    summary = {key: {m: spread([run["metrics"][key][m] for run in runs]) for m in ("srcc", "plcc")} for key in scorers}
    rows = [{"scorer": key, "SRCC": cell(s["srcc"]), "PLCC": cell(s["plcc"])} for key, s in summary.items()]
    with_curves = [run for run in runs if run["curves"]]
    types = sorted(with_curves[0]["curves"][scorers[0]]["per_type"]) if with_curves else []
    curves = {
        key: {
            **{t: spread([run["curves"][key]["per_type"][t] for run in with_curves]) for t in types},
            "mean over types": spread([run["curves"][key]["mean"] for run in with_curves]),
        }
        for key in (scorers if with_curves else [])
    }
    description = (
        f"{len(runs)} random {1 - options.test_fraction:.0%}/{options.test_fraction:.0%} splits by image of "
        f"{table_size} images (seed {options.split_seed} + i). Test metrics: median [quartiles] (min to max) over "
        "splits. Learned scorers (the adapter, BRISQUE + SVR) train on the training part and select on a 10% "
        "validation part carved from it; the others do not learn."
    )
    notes = []
    roles = {role for run in runs for role, count in run["test_images_seen_by_model"].items() if count}
    if roles:
        counts = "; ".join(
            f"{statistics.median(run['test_images_seen_by_model'].get(role, 0) for run in runs):g} {role}"
            for role in sorted(roles)
        )
        notes.append(
            "**Caveat**: the model's config records images of this table as having trained or selected it. Of a "
            f"split's {statistics.median(run['test_images'] for run in runs):g} test images (median over splits): "
            f"{counts}. The model's numbers (not the baselines') are optimistic on them.\n"
        )
    if curves:
        names = sorted({p for run in with_curves for p in run["curve_photos"]})
        notes.append(
            "## Distortion curves\n\nSpearman(level, score) per photo and type (-1: every stronger level scores "
            f"lower), mean over a split's photos, median over {len(with_curves)} splits. Photos: {len(names)} test "
            f"photos with MOS >= the median ({options.curve_photos} per split, none that pre-trained the model's "
            f"backbone): {', '.join(names)}.\n\n"
            + markdown_table(
                [
                    {"distortion": t, **{key: curves[key][t]["median"] for key in curves}}
                    for t in [*types, "mean over types"]
                ],
                ["distortion", *curves],
            )
        )
    results = {
        "description": description,
        "model_weights_sha256": weights_sha256(options.model),
        "prompt_sets": list(prompt_sets),
        "summary": summary,
        "curves": curves,
        "runs": runs,
        "columns": ["scorer", "SRCC", "PLCC"],
        "notes": "\n".join(notes),
    }
    return results, rows
