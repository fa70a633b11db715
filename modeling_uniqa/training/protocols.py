"""Evaluation protocols: 10 random 80/20 splits, few-label training, zero-shot prompt sets, the model vs baselines.

    uniqa protocols splits    --model DIR --table labels.csv --image-root IMGS --mos-range 0 100 --out R
    uniqa protocols few-label --model DIR --table labels.csv --image-root IMGS --mos-range 0 100 --out R
    uniqa protocols zero-shot --model DIR --table labels.csv --image-root IMGS --mos-range 0 100 --out R
    uniqa protocols compare   --model DIR --table labels.csv --image-root IMGS --mos-range 0 100 --out R

Each writes `<out>/<protocol>.json` and `<out>/<protocol>.md`. Splits are saved to `<out>/split_definitions.json`
and reused with `--splits FILE` (or `--split-pickle`: the original framework's split pickles, indices into the
table's rows). Fine-tuning settings: `--config FILE` (YAML/JSON of `AdapterArguments` and `TrainingArguments`
fields, the recipe's defaults for the rest). Flags take dashes or underscores.
The adapter's checkpoint is selected on a validation part carved from the training images, never on the test part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..modeling_uniqa import UniQAModel
from ..tools.evaluation import evaluate_table
from .finetuning import (
    AdapterArguments,
    CachedFeatureDataset,
    CachedFeatureScorer,
    FeatureCache,
    FinetuneTrainingArguments,
    Table,
    finetune_adapter,
    finetune_arguments,
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


def carve_validation(train: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """A seeded `fraction` (at least 3 images) of a training part set apart to select on -> `(fit, validation)`."""
    return split_table(train, max(fraction, 3 / len(train)), seed)


def train_and_test(
    model: UniQAModel,
    train: Table,
    test: Table,
    name: str,
    mos_range: tuple[float, float],
    higher_is_better: bool,
    args: FinetuneTrainingArguments,
    adapter_args: AdapterArguments,
    cache_dir: str | None,
    validation_fraction: float = 0.1,
    keep_adapter: bool = False,
) -> dict[str, Any]:
    """Fine-tune on `train` (checkpoint selected on a seeded `validation_fraction` of it, [`carve_validation`]),
    test on `test`; the adapter is deleted afterwards unless `keep_adapter`.
    -> `{"test": metrics, "validation": metrics, "best_epoch": ...}`."""
    fit, validation = carve_validation(train, validation_fraction, args.seed)
    result = finetune_adapter(
        model,
        fit,
        validation,
        name,
        mos_range,
        higher_is_better,
        args=args,
        adapter_args=adapter_args,
        cache_dir=cache_dir,
    )
    cache = FeatureCache(
        model, cache_dir, adapter_args.feature_batch_size, adapter_args.bf16_features, not args.disable_tqdm
    )
    images, mos = zip(*test, strict=True)
    features = cache.eval_features(images, adapter_args.eval_crop_mode, adapter_args.eval_crops, adapter_args.max_side)
    dataset = CachedFeatureDataset(features, normalize_mos(mos, mos_range, higher_is_better), train=False)
    test_metrics = evaluate_cached(CachedFeatureScorer(model, name), dataset)
    if not keep_adapter:
        model.delete_multicue_adapter(name)
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
    out: str | Path, protocol: str, results: dict[str, Any], rows: list[dict], columns: list[str], notes: str = ""
) -> None:
    """`<out>/<protocol>.json` (the results) and `<out>/<protocol>.md` (description, table, `notes`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{protocol}.json").write_text(json.dumps(results, indent=2) + "\n")
    header = f"# {protocol}\n\n{results.get('description', '')}\n\n"
    (out / f"{protocol}.md").write_text(header + markdown_table(rows, columns) + (f"\n{notes}" if notes else ""))


def protocol_splits(table: Table, options: argparse.Namespace) -> list[Split]:
    """The splits of `--splits` or `--split-pickle`, else `--count` new ones, saved to
    `<out>/split_definitions.json`."""
    if options.splits:
        return load_splits(options.splits)
    if options.split_pickle:
        return splits_from_pickle(table, options.split_pickle)
    splits = make_splits(table, options.count, options.test_fraction, options.split_seed)
    path = Path(options.out) / "split_definitions.json"
    save_splits(splits, path, seed=options.split_seed, test_fraction=options.test_fraction)
    return splits


def run_splits(model, table, options, args: FinetuneTrainingArguments, adapter_args) -> tuple[dict, list[dict]]:
    """Protocol (a): fine-tune and test on each random split; median and mean of the test metrics."""
    splits = protocol_splits(table, options)
    runs = []
    for i, split in enumerate(splits):
        run = train_and_test(
            model,
            _subset(table, split["train"]),
            _subset(table, split["test"]),
            f"split{i}",
            *options.scale,
            args,
            adapter_args,
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


def run_few_label(model, table, options, args: FinetuneTrainingArguments, adapter_args) -> tuple[dict, list[dict]]:
    """Protocol (b): train on N labelled images (N in `--labels`, several seeds), test on the held-out part."""
    pool, test = split_table(table, options.test_fraction, options.split_seed)
    runs = []
    for count in options.labels:
        for seed in options.seeds:
            labelled = split_table(pool, 1 - count / len(pool), seed)[0] if count < len(pool) else pool
            run_args = replace(args, seed=seed)
            name = f"few{count}_{seed}"
            run = train_and_test(
                model, labelled, test, name, *options.scale, run_args, adapter_args, options.cache_dir, 0.2
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


def run_zero_shot(model, table, options, args: FinetuneTrainingArguments, adapter_args) -> tuple[dict, list[dict]]:
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
            progress=not args.disable_tqdm,
        )
        results[name] = report["metrics"]
    rows = [{"prompt_set": name, **metrics} for name, metrics in results.items()]
    return {"description": f"Zero-shot prompt sets on all {len(table)} images.", "prompt_sets": results}, rows


def run_compare(model, table, options, args: FinetuneTrainingArguments, adapter_args) -> tuple[dict, list[dict]]:
    """Protocol (d): the model (zero-shot, and an adapter per split) against a sharpness score and BRISQUE + SVR
    on the same splits, with distortion curves ([`comparison.compare`])."""
    from .comparison import compare  # it builds on this module

    return compare(model, table, options, args, adapter_args)


PROTOCOLS = {"splits": run_splits, "few-label": run_few_label, "zero-shot": run_zero_shot, "compare": run_compare}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniqa protocols", description=__doc__.split("\n")[0])

    def option(name: str, **kwargs) -> None:  # `--name_x` and `--name-x`
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*flags, **kwargs)

    parser.add_argument("protocol", choices=list(PROTOCOLS))
    option("model", required=True, help="model folder")
    option("table", required=True, help="CSV/JSONL with image and MOS columns")
    option("image_root", help="folder relative image paths start from")
    option("mos_range", type=float, nargs=2, required=True, metavar=("LOW", "HIGH"))
    option("lower_is_better", action="store_true")
    option("out", required=True, help="results folder")
    option("count", type=int, default=10, help="number of random splits")
    option("test_fraction", type=float, default=0.2)
    option("split_seed", type=int, default=123)
    option("splits", help="reuse split_definitions.json written by an earlier run")
    option("split_pickle", help="original framework's split pickle (indices into the table rows)")
    option("labels", type=int, nargs="+", default=[50, 100, 200], help="few-label sizes")
    option("seeds", type=int, nargs="+", default=[123, 124, 125], help="few-label seeds")
    option("prompt_sets", nargs="+", help="zero-shot prompt sets (default: all; compare: the quality ones)")
    option("curve_photos", type=int, default=3, help="compare: test photos per split for the distortion curves")
    option("distortions", nargs="+", help="compare: distortion types of the curves (default: all)")
    option("cache_dir", help="feature cache folder (shared by all runs)")
    option("config", help="YAML/JSON of AdapterArguments and TrainingArguments fields (num_train_epochs, ...)")
    return parser


def read_config(path: str | None) -> tuple[AdapterArguments, FinetuneTrainingArguments]:
    """The fine-tuning settings of `--config` (YAML or JSON), without progress bars unless it asks for them."""
    values: dict[str, Any] = {}
    if path:
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}  # JSON is YAML
    return finetune_arguments({"disable_tqdm": True, **values})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    options = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    options.scale = (tuple(options.mos_range), not options.lower_is_better)
    adapter_args, args = read_config(options.config)
    table = read_mos_table(options.table, image_root=options.image_root)
    model = UniQAModel.from_pretrained(options.model).eval()
    results, rows = PROTOCOLS[options.protocol](model, table, options, args, adapter_args)
    columns = results.pop("columns", None) or [
        next(iter(rows[0])),
        *(c for c in rows[0] if c in ("runs",)),
        *METRIC_NAMES,
    ]
    finetune = {"adapter": asdict(adapter_args), "training": args.to_dict()}
    results["setup"] = {k: v for k, v in vars(options).items() if k != "scale"} | {"finetune": finetune}
    write_results(options.out, options.protocol, results, rows, columns, results.pop("notes", ""))
    print((Path(options.out) / f"{options.protocol}.md").read_text())
    return results


if __name__ == "__main__":
    main()
