"""Evaluation protocols: 10 random 80/20 splits, few-label training, zero-shot prompt sets.

    python -m training.protocols splits    --model DIR --table labels.csv --image_root IMGS --mos_range 0 100 --out R
    python -m training.protocols few-label --model DIR --table labels.csv --image_root IMGS --mos_range 0 100 --out R
    python -m training.protocols zero-shot --model DIR --table labels.csv --image_root IMGS --mos_range 0 100 --out R

Each writes `<out>/<protocol>.json` and `<out>/<protocol>.md`. Splits are saved to `<out>/split_definitions.json`
and reused with `--splits FILE` (or `--split_pickle`: the original framework's split pickles, indices into the
table's rows).
The adapter's checkpoint is selected on a validation part carved from the training images, never on the test part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..modeling_uniqa import UniQAModel
from ..tools.evaluation import evaluate_table
from .finetuning import (
    CachedFeatureDataset,
    CachedFeatureScorer,
    FeatureCache,
    FinetuneArguments,
    Table,
    finetune_adapter,
    normalize_mos,
    read_mos_table,
    split_table,
)
from .finetuning import evaluate_features as evaluate_cached
from .metrics import METRIC_NAMES

Split = dict[str, list[str]]


def make_splits(table: Table, count: int = 10, test_fraction: float = 0.2, seed: int = 123) -> list[Split]:
    """`count` seeded random splits by image (split `i` uses seed `seed + i`) -> `[{"train": [...], "test": [...]}]`."""
    splits = []
    for i in range(count):
        train, test = split_table(table, test_fraction, seed + i)
        splits.append({"train": [image for image, _ in train], "test": [image for image, _ in test]})
    return splits


def save_splits(splits: list[Split], path: str | Path, **setup: Any) -> None:
    """Write splits (image paths) and how they were drawn to a JSON file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**setup, "splits": splits}, indent=1) + "\n")


def load_splits(path: str | Path) -> list[Split]:
    """Read splits written by `save_splits`."""
    return json.loads(Path(path).read_text())["splits"]


def splits_from_pickle(table: Table, path: str | Path, indices: Sequence[int] = tuple(range(1, 11))) -> list[Split]:
    """The original framework's split pickle (`{index: {"train", "val", "test": [row numbers]}}`, rows of its
    meta-info table = `table`'s rows in order); its validation rows join `train` (validation is carved here)."""
    from datasets_scripts.pyiqa import read_split_pickle

    splits = []
    for index in indices:
        rows = read_split_pickle(path, index)
        train = [table[i][0] for i in list(rows.get("train", [])) + list(rows.get("validation", []))]
        splits.append({"train": train, "test": [table[i][0] for i in rows["test"]]})
    return splits


def _subset(table: Table, images: Sequence[str]) -> Table:
    lookup = dict(table)
    missing = [image for image in images if image not in lookup]
    if missing:
        raise ValueError(f"{len(missing)} split images are not in the table, e.g. {missing[0]}")
    return [(image, lookup[image]) for image in images]


def train_and_test(
    model: UniQAModel,
    train: Table,
    test: Table,
    name: str,
    mos_range: tuple[float, float],
    higher_is_better: bool,
    args: FinetuneArguments,
    cache_dir: str | None,
    validation_fraction: float = 0.1,
) -> dict[str, Any]:
    """Fine-tune on `train` (checkpoint selected on a seeded `validation_fraction` of it), test on `test`; the
    adapter is deleted afterwards. -> `{"test": metrics, "validation": metrics, "best_epoch": ...}`."""
    fit, validation = split_table(train, max(validation_fraction, 3 / len(train)), args.seed)  # >= 3 images
    result = finetune_adapter(model, fit, validation, name, mos_range, higher_is_better, args=args, cache_dir=cache_dir)
    cache = FeatureCache(model, cache_dir, args.feature_batch_size, args.bf16_features, args.progress)
    images, mos = zip(*test, strict=True)
    features = cache.eval_features(images, args.eval_crop_mode, args.eval_crops, args.max_side)
    dataset = CachedFeatureDataset(features, normalize_mos(mos, mos_range, higher_is_better), train=False)
    test_metrics = evaluate_cached(CachedFeatureScorer(model, name), dataset)
    model.delete_adapter(name)
    validation_metrics = {k: result[k] for k in (*METRIC_NAMES, "loss")}
    return {"test": test_metrics, "validation": validation_metrics, "best_epoch": result["best_epoch"]}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and mean of each test metric over runs."""
    return {
        stat: {m: float(fn([run["test"][m] for run in runs])) for m in METRIC_NAMES}
        for stat, fn in (("median", statistics.median), ("mean", statistics.fmean))
    }


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows of dicts -> a Markdown table (floats with 4 decimals)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    out: str | Path, protocol: str, results: dict[str, Any], rows: list[dict], columns: list[str]
) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{protocol}.json").write_text(json.dumps(results, indent=2) + "\n")
    header = f"# {protocol}\n\n{results.get('description', '')}\n\n"
    (out / f"{protocol}.md").write_text(header + markdown_table(rows, columns))


def run_splits(model, table, options, args: FinetuneArguments) -> tuple[dict, list[dict]]:
    """Protocol (a): fine-tune and test on each random split; median and mean of the test metrics."""
    out = Path(options.out)
    if options.splits:
        splits = load_splits(options.splits)
    elif options.split_pickle:
        splits = splits_from_pickle(table, options.split_pickle)
    else:
        splits = make_splits(table, options.count, options.test_fraction, options.split_seed)
        save_splits(
            splits, out / "split_definitions.json", seed=options.split_seed, test_fraction=options.test_fraction
        )
    runs = []
    for i, split in enumerate(splits):
        run = train_and_test(
            model,
            _subset(table, split["train"]),
            _subset(table, split["test"]),
            f"split{i}",
            *options.scale,
            args,
            options.cache_dir,
        )
        runs.append({"split": i, **run})
    summary = summarise(runs)
    rows = [{"split": r["split"], **r["test"]} for r in runs]
    rows += [{"split": stat, **values} for stat, values in summary.items()]
    description = (
        f"{len(splits)} random {1 - options.test_fraction:.0%}/{options.test_fraction:.0%} splits by image "
        f"(seed {options.split_seed} + i); checkpoint selected on 10% of each training part; test metrics."
    )
    return {"description": description, "runs": runs, "summary": summary}, rows


def run_few_label(model, table, options, args: FinetuneArguments) -> tuple[dict, list[dict]]:
    """Protocol (b): train on N labelled images (N in `--labels`, several seeds), test on the held-out part."""
    pool, test = split_table(table, options.test_fraction, options.split_seed)
    runs = []
    for count in options.labels:
        for seed in options.seeds:
            labelled = split_table(pool, 1 - count / len(pool), seed)[0] if count < len(pool) else pool
            run_args = replace(args, seed=seed)
            run = train_and_test(
                model, labelled, test, f"few{count}_{seed}", *options.scale, run_args, options.cache_dir, 0.2
            )
            runs.append({"labels": len(labelled), "seed": seed, **run})
    rows = []
    for count in options.labels:
        group = [r for r in runs if r["labels"] == min(count, len(pool))]
        rows.append({"labels": count, "runs": len(group), **summarise(group)["median"]})
    description = (
        f"Few-label: N labelled images drawn from the training part (seeds {list(options.seeds)}; 20% of them "
        f"validate), test on the held-out {options.test_fraction:.0%} (seed {options.split_seed}); medians."
    )
    return {"description": description, "runs": runs, "test_images": len(test)}, rows


def run_zero_shot(model, table, options, args: FinetuneArguments) -> tuple[dict, list[dict]]:
    """Protocol (c): every (or each named) zero-shot prompt set on the whole table."""
    names = options.prompt_sets or list(model.config.prompt_sets)
    results = {}
    for name in names:
        report = evaluate_table(
            model,
            table,
            prompt_set=name,
            mos_range=options.scale[0],
            higher_is_better=options.scale[1],
            progress=args.progress,
        )
        results[name] = report["metrics"]
    rows = [{"prompt_set": name, **metrics} for name, metrics in results.items()]
    return {"description": f"Zero-shot prompt sets on all {len(table)} images.", "prompt_sets": results}, rows


PROTOCOLS = {"splits": run_splits, "few-label": run_few_label, "zero-shot": run_zero_shot}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.protocols", description=__doc__.split("\n")[0])
    parser.add_argument("protocol", choices=list(PROTOCOLS))
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--table", required=True, help="CSV/JSONL with image and MOS columns")
    parser.add_argument("--image_root", help="folder relative image paths start from")
    parser.add_argument("--mos_range", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"))
    parser.add_argument("--lower_is_better", action="store_true")
    parser.add_argument("--out", required=True, help="results folder")
    parser.add_argument("--count", type=int, default=10, help="number of random splits")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--split_seed", type=int, default=123)
    parser.add_argument("--splits", help="reuse split_definitions.json written by an earlier run")
    parser.add_argument("--split_pickle", help="original framework's split pickle (indices into the table rows)")
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 100, 200], help="few-label sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[123, 124, 125], help="few-label seeds")
    parser.add_argument("--prompt_sets", nargs="+", help="zero-shot prompt sets (default: all)")
    parser.add_argument("--cache_dir", help="feature cache folder (shared by all runs)")
    parser.add_argument("--config", help="YAML/JSON file of FinetuneArguments fields (epochs, crops_per_image, ...)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    options.scale = (tuple(options.mos_range), not options.lower_is_better)
    args = FinetuneArguments(progress=False)
    if options.config:
        from transformers import HfArgumentParser

        parse = HfArgumentParser(FinetuneArguments)
        reader = parse.parse_json_file if options.config.endswith(".json") else parse.parse_yaml_file
        (args,) = reader(options.config)
    table = read_mos_table(options.table, image_root=options.image_root)
    model = UniQAModel.from_pretrained(options.model).eval()
    results, rows = PROTOCOLS[options.protocol](model, table, options, args)
    columns = [next(iter(rows[0])), *(c for c in rows[0] if c in ("runs",)), *METRIC_NAMES]
    results["setup"] = {k: v for k, v in vars(options).items() if k != "scale"} | {"finetune": vars(args)}
    write_results(options.out, options.protocol, results, rows, columns)
    print((Path(options.out) / f"{options.protocol}.md").read_text())
    return results


if __name__ == "__main__":
    main()
