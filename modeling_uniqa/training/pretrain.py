"""Contrastive pre-training of UniQA's CLIP towers on an image-text corpus.

    python -m training.pretrain --config training/configs/pretrain_vitb16.yaml --corpus corpus.jsonl \
        --image-root /data/images --output-dir out/pretrain [--model models/uniqa-vitb16] [--resume]
    accelerate launch --config_file training/configs/accelerate_ddp.yaml -m training.pretrain ...   # several GPUs
    accelerate launch ... -m modeling_uniqa.tools.cli pretrain ...   # the same, from an installed wheel
    python -m training.pretrain ... --streaming --corpus "corpus/*.jsonl" [--shuffle-buffer 10000]   # too big for RAM

The config's `pretraining:` section holds `epochs`, `eval_every_steps` and any `transformers.TrainingArguments`
(defaults: the authors' optimiser, see `modeling_uniqa.training.pretraining.AUTHORS_OPTIMIZER`); its `model:`
section the tower sizes of a random init when `--model` is not given. `--streaming` reads JSONL / Parquet shards
lazily (one entry per line, lines of one image not merged) and needs `max_steps` in `pretraining:`;
`epochs` is then ignored.
`group_size: N` in `pretraining:` batches up to N entries of the same `group` (a corpus field, e.g. the source
photo of synthetic distortions) together: content-matched negatives. `ranking_weight: W` (with `group_size` >= 2)
adds W times a ranking of each run's distortions by their zero-shot quality, for entries with a `level` (0: the
undistorted photo) and a `distortion` (`rank_across_distortions: true`: levels of different distortions compared
too); `anchored_runs` / `runs_by_distortion` choose what a run holds (docs/pretraining.md).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uniqa pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML with `pretraining:` (and `model:` for a random init)")
    parser.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        help="corpus JSON list or JSONL of {image_path, prompt}; with --streaming: JSONL/Parquet shards or globs",
    )
    parser.add_argument("--streaming", action="store_true", help="stream the corpus (needs max_steps in the config)")
    parser.add_argument("--shuffle-buffer", type=int, default=10_000, help="streaming: index entries held to shuffle")
    parser.add_argument("--image-root", required=True, help="folder the corpus image paths are relative to")
    parser.add_argument("--output-dir", required=True, help="checkpoints; the trained model goes to OUTPUT/final")
    parser.add_argument("--model", help="start from this UniQA/converted CLIP folder instead of a random init")
    parser.add_argument("--eval-table", help="CSV/JSONL (image, mos) scored zero-shot before/during/after training")
    parser.add_argument("--eval-image-root", help="image folder of --eval-table (default: its folder)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, help="resume (from the last or a checkpoint)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from ..modeling_uniqa import UniQAModel
    from .finetuning import read_mos_table
    from .pretraining import (
        build_model,
        pretrain,
        pretraining_arguments,
        read_corpus,
        read_corpus_stream,
        split_pretraining_config,
    )

    config = yaml.safe_load(Path(args.config).read_text())
    options, settings = split_pretraining_config(config.get("pretraining"))
    seed = int(config.get("seed", settings.get("seed", 0)))
    if args.streaming:
        if int(settings.get("max_steps", -1)) <= 0:
            parser.error(
                "--streaming needs `max_steps` in the config's `pretraining:` section (a stream has no length)"
            )
        if options["epochs"] != 1:
            print(f"--streaming: ignoring epochs={options['epochs']}; the run lasts max_steps={settings['max_steps']}")
        corpus = read_corpus_stream(args.corpus, shuffle_buffer=args.shuffle_buffer)
        options["epochs"] = 1
    elif len(args.corpus) > 1:
        parser.error("several --corpus files need --streaming (or concatenate them into one JSONL)")
    else:
        corpus = read_corpus(args.corpus[0])
    if args.model:
        model = UniQAModel.from_pretrained(args.model)
    elif "model" in config:
        sizes = config["model"]
        model = build_model(
            sizes["text_config"],
            sizes["vision_config"],
            sizes["projection_dim"],
            tokenizer_dir=Path(args.output_dir) / "tokenizer",
            seed=seed,
        )
    else:
        parser.error("give --model or a `model:` section in the config")
    tables = None
    if args.eval_table:
        table = read_mos_table(args.eval_table, image_root=args.eval_image_root)
        tables = {"validation": ([p for p, _ in table], [m for _, m in table])}
    training_args = pretraining_arguments(args.output_dir, seed=seed, data_seed=seed, **settings)
    result = pretrain(
        model,
        corpus,
        args.image_root,
        training_args,
        eval_tables=tables,
        resume_from_checkpoint=args.resume,
        **options,
    )
    if training_args.process_index == 0:
        (Path(args.output_dir) / "result.json").write_text(json.dumps(result, indent=1, default=str))
        print(json.dumps({"train": result["train"], "zero_shot": result["zero_shot"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
