r"""Fine-tune a UniQA adapter on an image + MOS table or a `datasets_scripts` benchmark (`uniqa finetune`).

    uniqa finetune --model MODEL_DIR --table labels.csv --image-root images/ --adapter-name mine \
        --mos-min 0 --mos-max 100 --output-dir runs/mine --save-model models/uniqa-mine
    uniqa finetune training/configs/livec_tiny_reference.yaml     # the same from a YAML/JSON file

The options are the data arguments below, [`AdapterArguments`] and every `transformers.TrainingArguments` field
(`--num-train-epochs 20`, `--learning-rate 1e-4`, ...), with the authors' recipe as defaults
([`FinetuneTrainingArguments`]); each flag is accepted with dashes or underscores. `--output-dir` keeps a
checkpoint every epoch; after an interruption, the same command with `--resume-from-checkpoint latest` (or a
`checkpoint-N` folder) finishes the run to the same adapter. `python -m training.finetune` is the same command.

Thin wrapper: argument parsing, then `modeling_uniqa.training.finetuning.finetune_adapter`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ..modeling_uniqa import UniQAModel
from .finetuning import (
    AdapterArguments,
    FinetuneTrainingArguments,
    benchmark_table,
    finetune_adapter,
    read_mos_table,
    split_table,
)


@dataclass
class DataArguments:
    """What to train on, and where the results go."""

    model: str = field(metadata={"help": "model folder (or hub id) holding the frozen backbone"})
    adapter_name: str = field(metadata={"help": "name of the new adapter"})
    table: str | None = field(default=None, metadata={"help": "CSV/JSONL table with image and MOS columns"})
    image_root: str | None = field(default=None, metadata={"help": "folder relative image paths start from"})
    image_column: str = field(default="image", metadata={"help": "image column of the table"})
    mos_column: str = field(default="mos", metadata={"help": "MOS column of the table"})
    validation_table: str | None = field(default=None, metadata={"help": "separate validation table"})
    validation_fraction: float = field(default=0.2, metadata={"help": "held-out fraction when splitting the table"})
    split_seed: int = field(default=123, metadata={"help": "seed of the split by image name"})
    benchmark: str | None = field(default=None, metadata={"help": "datasets_scripts benchmark name (instead of table)"})
    data_dir: str | None = field(default=None, metadata={"help": "the benchmark's local folder"})
    mos_min: float | None = field(default=None, metadata={"help": "lowest MOS of the scale (benchmarks: known)"})
    mos_max: float | None = field(default=None, metadata={"help": "highest MOS of the scale (benchmarks: known)"})
    lower_is_better: bool = field(default=False, metadata={"help": "the scale is a DMOS (lower is better)"})
    task: str = field(default="quality", metadata={"help": "quality or aesthetics"})
    dataset_name: str | None = field(default=None, metadata={"help": "dataset name stored with the adapter"})
    cache_dir: str | None = field(default=None, metadata={"help": "feature cache folder"})
    save_model: str | None = field(default=None, metadata={"help": "save the whole model (with the adapter) here"})
    save_adapter: str | None = field(default=None, metadata={"help": "save the adapter alone here (PEFT layout)"})
    results: str | None = field(default=None, metadata={"help": "write metrics and setup to this JSON file"})


def load_data(data: DataArguments):
    """-> `(train, validation, mos_range, higher_is_better, dataset_name)`."""
    if data.benchmark:
        from datasets_scripts import get_spec

        if not data.data_dir:
            raise SystemExit("finetune: --benchmark needs --data-dir")
        spec = get_spec(data.benchmark)
        train = benchmark_table(data.benchmark, data.data_dir, "train", split_seed=data.split_seed)
        validation = benchmark_table(data.benchmark, data.data_dir, "validation", split_seed=data.split_seed)
        return train, validation, (spec.mos_min, spec.mos_max), spec.higher_is_better, spec.display_name
    if not data.table:
        raise SystemExit("finetune: give --table (CSV/JSONL) or --benchmark with --data-dir")
    if data.mos_min is None or data.mos_max is None:
        raise SystemExit("finetune: a table needs --mos-min and --mos-max (the MOS scale)")
    table = read_mos_table(data.table, data.image_column, data.mos_column, data.image_root)
    if data.validation_table:
        validation = read_mos_table(data.validation_table, data.image_column, data.mos_column, data.image_root)
        train = table
    else:
        train, validation = split_table(table, data.validation_fraction, data.split_seed)
    name = data.dataset_name or Path(data.table).parent.name
    return train, validation, (data.mos_min, data.mos_max), not data.lower_is_better, name


def parse(argv: Sequence[str]) -> tuple[DataArguments, AdapterArguments, FinetuneTrainingArguments]:
    """Command-line flags, or one YAML/JSON file whose keys are the argument names."""
    parser = HfArgumentParser(
        (DataArguments, AdapterArguments, FinetuneTrainingArguments),
        prog="uniqa finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    return parser.parse_args_into_dataclasses(list(argv))


def main(argv: Sequence[str] | None = None) -> dict:
    data, adapter_args, args = parse(sys.argv[1:] if argv is None else argv)
    train, validation, mos_range, higher_is_better, dataset = load_data(data)
    model = UniQAModel.from_pretrained(data.model).eval()
    result = finetune_adapter(
        model,
        train,
        validation,
        data.adapter_name,
        mos_range,
        higher_is_better,
        task=data.task,
        dataset=data.dataset_name or dataset,
        args=args,
        adapter_args=adapter_args,
        cache_dir=data.cache_dir,
    )
    if data.save_model:
        model.save_pretrained(data.save_model)
    if data.save_adapter:
        model.save_multicue_adapter(data.save_adapter, data.adapter_name)
    summary = {k: v for k, v in result.items() if k != "history"}
    print(json.dumps(summary, indent=2))
    if data.results:
        Path(data.results).parent.mkdir(parents=True, exist_ok=True)
        recipe = model.config.adapters[data.adapter_name]["training"]
        report = {"data": asdict(data), "finetune": recipe, "train_images": len(train), **result}
        Path(data.results).write_text(json.dumps(report, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
