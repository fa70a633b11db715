"""The `uniqa` command line: score images, inspect and convert model folders."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .batch_scoring import (
    RowWriter,
    chunks,
    distributed_world,
    escape_text,
    expand_inputs,
    prefetch_images,
    read_rows,
    score_chunk,
    shard_path,
    split_done,
)


def default_model() -> str:
    """`$UNIQA_MODEL`, else the bundled default model (shipped in the wheel, or a checkout's `models/uniqa-tiny`)."""
    from .. import BUNDLED_MODEL_CANDIDATES, bundled_model_path

    if os.environ.get("UNIQA_MODEL"):
        return os.environ["UNIQA_MODEL"]
    bundled = bundled_model_path()
    if bundled is not None:
        return str(bundled)
    raise SystemExit(
        "uniqa: no --model given, $UNIQA_MODEL is unset and no bundled model was found (looked in "
        f"{', '.join(map(str, BUNDLED_MODEL_CANDIDATES))}). Convert a checkpoint first: "
        "`uniqa convert UniQA_weight.pt --out MODEL_DIR`."
    )


def score_command(args: argparse.Namespace) -> int:
    from ..modeling_uniqa import UniQAModel

    if distributed_world()[1] > 1 and not getattr(args, "shard", False):
        return sharded_score_command(args)
    paths = expand_inputs(args.inputs)
    if not paths:
        print("uniqa: no input images", file=sys.stderr)
        return 2
    if args.quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
    model = UniQAModel.from_pretrained(args.model or default_model(), use_safetensors=True).eval()
    task, adapter, prompt_set = model.resolve(args.task, args.adapter, args.prompt_set)
    options = {"crop_mode": args.crop_mode, "crops": args.crops, "max_side": args.max_side, "seed": args.seed}
    options |= {"dtype": args.dtype, "device": args.device, "num_workers": args.num_workers, "compile": args.compile}
    remaining, done = list(paths), []
    if args.resume:
        if args.output is None:
            print("uniqa: --resume needs --output", file=sys.stderr)
            return 1
        try:
            rows = read_rows(args.output, args.format) if os.path.exists(args.output) else []
            remaining, done = split_done(paths, rows, (task, adapter, prompt_set))
        except ValueError as error:
            print(f"uniqa: cannot resume: {error}", file=sys.stderr)
            return 1
    failures = sum(1 for row in done if row.get("error"))
    with (
        RowWriter(args.format, args.output, append=args.resume) as writer,
        tqdm(total=len(paths), initial=len(done), unit="img", file=sys.stderr, disable=args.quiet) as progress,
    ):
        loaded = prefetch_images(model.image_processor, remaining, args.num_workers, args.batch_size)
        for chunk in chunks(remaining, args.batch_size):
            images, errors = {}, {}
            for path, (image, error) in zip(chunk, itertools.islice(loaded, len(chunk)), strict=True):
                if error is None:
                    images[path] = image
                else:
                    errors[path] = error
            scores = score_chunk(model, images, errors, (task, adapter, prompt_set), args.batch_size, options)
            for path in chunk:
                row = {"path": path, "task": task, "adapter": adapter, "prompt_set": prompt_set}
                if path in scores:
                    row["score"] = round(float(scores[path]), 6)
                else:
                    row["error"] = errors[path]
                    failures += 1
                writer.write(row)
            writer.sync()
            progress.update(len(chunk))
    if failures:
        print(f"uniqa: {failures} of {len(paths)} inputs could not be scored (see the error column)", file=sys.stderr)
    return 2 if failures else 0


# -------------------------------------------------------------------------------------------------------------
# Scale-out (docs/performance.md).


def sharded_score_command(args: argparse.Namespace) -> int:
    """`uniqa score` in one of several processes: score inputs `rank::world`, then process 0 merges the shards.

    Every process expands the same inputs (and, with `--resume`, skips the same finished rows), scores every
    `world`-th remaining input into its shard file, and waits at a barrier; process 0 then writes all rows to
    `--output` in input order and deletes the shards. On GPUs each process uses `cuda:LOCAL_RANK`; on CPUs the
    cores are split between the processes of a machine.
    """
    import datetime

    import torch
    import torch.distributed as dist

    from ..modeling_uniqa import UniQAModel

    rank, world = distributed_world()
    if args.output is None:
        print("uniqa: scoring with several processes needs --output (shards are written beside it)", file=sys.stderr)
        return 1
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if args.device is None and torch.cuda.is_available():
        args.device = f"cuda:{local_rank}"
    if args.device is None or args.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))  # shards may take days
    paths, done = expand_inputs(args.inputs), []
    if args.resume and os.path.exists(args.output):
        model = UniQAModel.from_pretrained(args.model or default_model(), use_safetensors=True)
        request = model.resolve(args.task, args.adapter, args.prompt_set)
        try:
            paths, done = split_done(paths, read_rows(args.output, args.format), request)
        except ValueError as error:
            print(f"uniqa: cannot resume: {error}", file=sys.stderr)
            return 1
    shard = shard_path(args.output, rank, world)
    shard_args = argparse.Namespace(**vars(args))
    shard_args.inputs, shard_args.output, shard_args.format = paths[rank::world], shard, "jsonl"
    shard_args.resume, shard_args.quiet, shard_args.shard = False, args.quiet or rank != 0, True
    status = score_command(shard_args) if shard_args.inputs else 0
    dist.barrier()
    if rank == 0:
        shards = [read_rows(shard_path(args.output, r, world), "jsonl") for r in range(world)]
        with RowWriter(args.format, args.output, append=bool(done)) as writer:
            for i, path in enumerate(paths):
                row = shards[i % world][i // world]
                if row["path"] != escape_text(path):
                    raise RuntimeError(f"shard {i % world} row {i // world} is {row['path']!r}, expected {path!r}")
                writer.write(row)
            writer.sync()
        for r in range(world):
            os.remove(shard_path(args.output, r, world))
        failures = sum(1 for row in [*done, *itertools.chain(*shards)] if row.get("error"))
        status = 2 if failures else 0
    dist.barrier()
    dist.destroy_process_group()
    return status


def export_command(args: argparse.Namespace) -> int:
    from .export import export_onnx

    try:
        sidecar = export_onnx(
            args.model,
            args.out,
            task=args.task,
            adapter=args.adapter,
            prompt_set=args.prompt_set,
            opset=args.opset,
            check=not args.no_check,
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"uniqa export: {error}", file=sys.stderr)
        return 1
    checked = sidecar.get("max_abs_difference")
    note = f" (onnxruntime vs PyTorch: max |difference| {checked:.1e})" if checked is not None else ""
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}{note}")
    return 0


def info_command(args: argparse.Namespace) -> int:
    from ..configuration_uniqa import UniQAConfig
    from ..image_processing_uniqa import UniQAImageProcessor

    config = UniQAConfig.from_pretrained(args.model or default_model())
    processor = UniQAImageProcessor.from_pretrained(args.model or default_model())
    vision, text = config.vision_config, config.text_config
    print(f"model: {args.model or default_model()}")
    print(
        f"vision tower: {vision.num_hidden_layers} layers, width {vision.hidden_size}, patch {vision.patch_size}, "
        f"{vision.image_size} px; text tower: {text.num_hidden_layers} layers, width {text.hidden_size}; "
        f"embedding {config.projection_dim}"
    )
    print(
        f"zero-shot levels: {config.levels} (scores in [{min(config.levels):g}, {max(config.levels):g}], "
        "higher is better)"
    )
    print("prompt sets:")
    for name, prompt_set in config.prompt_sets.items():
        default = (
            " (default for " + prompt_set["task"] + ")"
            if config.task_prompt_sets.get(prompt_set["task"]) == name
            else ""
        )
        groups = ", ".join(prompt_set["groups"])
        print(f"  {name}: {prompt_set['task']}{default}; groups: {groups}")
    print("adapters:" if config.adapters else "adapters: none")
    for name, meta in config.adapters.items():
        extras = ", ".join(f"{k}={v}" for k, v in meta.items() if k != "task" and v is not None)
        print(f"  {name}: {meta['task']}; {extras}")
    print(
        f"test-time crops: {processor.crop_mode}, {processor.crops} crops of {processor.crop_size} px, "
        f"max side {processor.max_side or 'none'}"
    )
    return 0


def convert_command(args: argparse.Namespace) -> int:
    from .conversion import CheckpointError, convert_checkpoint

    try:
        convert_checkpoint(
            args.checkpoint,
            args.out,
            adapter=args.adapter,
            adapter_name=args.adapter_name,
            adapter_task=args.adapter_task,
            adapter_dataset=args.adapter_dataset,
            license=args.license,
        )
    except (CheckpointError, FileNotFoundError) as error:
        print(f"uniqa convert: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from ..modeling_uniqa import UniQAModel
    from ..training.finetuning import benchmark_table, read_mos_table
    from .evaluation import evaluate_table, write_report

    mos_range, higher_is_better = (tuple(args.mos_range) if args.mos_range else None), not args.lower_is_better
    try:
        if os.path.isfile(args.data):
            table = read_mos_table(args.data, args.image_column, args.mos_column, args.image_root)
        else:
            from datasets_scripts import get_spec

            if not args.data_dir:
                print(f"uniqa evaluate: {args.data} is not a file; a benchmark name needs --data-dir", file=sys.stderr)
                return 1
            table = benchmark_table(args.data, args.data_dir, args.split)
            spec = get_spec(args.data)
            mos_range, higher_is_better = mos_range or (spec.mos_min, spec.mos_max), spec.higher_is_better
    except (OSError, ValueError, KeyError) as error:
        print(f"uniqa evaluate: {error}", file=sys.stderr)
        return 1
    model = UniQAModel.from_pretrained(args.model or default_model(), use_safetensors=True).eval()
    report = evaluate_table(
        model,
        table,
        adapter=args.adapter,
        task=args.task,
        prompt_set=args.prompt_set,
        mos_range=mos_range,
        higher_is_better=higher_is_better,
        batch_size=args.batch_size,
        progress=not args.quiet,
        crop_mode=args.crop_mode,
        crops=args.crops,
        max_side=args.max_side,
    )
    out = Path(args.output)
    write_report(report, out / "report.json", None if args.no_plot else out / "scatter.png")
    for name, value in report["metrics"].items():
        print(f"{name}: {value:.4f}")
    print(f"wrote {out / 'report.json'}" + ("" if args.no_plot else f" and {out / 'scatter.png'}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = argparse.ArgumentParser(prog="uniqa", description="Image quality and aesthetics scores with UniQA.")
    try:
        parser.add_argument("--version", action="version", version=f"uniqa {version('uniqa')}")
    except PackageNotFoundError:  # a checkout that was never installed
        parser.add_argument("--version", action="version", version="uniqa (not installed)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in TRAINING_COMMANDS.items():  # parsed by the command itself (`uniqa NAME --help`)
        commands.add_parser(name, help=f"{summary} [train]", add_help=False)

    score = commands.add_parser("score", help="score images (files, folders, globs)")
    score.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    score.add_argument("--model", help="model folder or hub id (default: $UNIQA_MODEL or the bundled model)")
    score.add_argument("--task", choices=["quality", "aesthetics"], help="default: quality, or the adapter's task")
    score.add_argument("--adapter", help="trained adapter name (default: zero-shot prompts)")
    score.add_argument("--prompt-set", help="zero-shot prompt set (see `uniqa info`)")
    score.add_argument("--batch-size", type=int, default=32, help="crops per forward pass and images per chunk")
    score.add_argument("--crop-mode", choices=["grid", "random", "center"], help="default: the model's (grid)")
    score.add_argument("--crops", type=int, help="crops per image (default: the model's)")
    score.add_argument("--max-side", type=int, help="downscale images whose longer side exceeds this")
    score.add_argument("--seed", type=int, default=0, help="seed of the random crop protocol")
    score.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    score.add_argument("--output", help="write results here instead of stdout")
    score.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep --output's complete rows and score only the inputs it lacks",
    )
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="vision tower precision (default: fp32)")
    score.add_argument("--device", help="where the vision tower runs, e.g. cuda, cuda:1, cpu (default: cpu)")
    score.add_argument("--num-workers", type=int, help="image decoding threads (default: min(4, CPU count))")
    score.add_argument("--compile", action="store_true", help="torch.compile the vision tower")
    score.set_defaults(func=score_command)

    export = commands.add_parser("export", help="export a model folder as one ONNX graph, pixels to scores")
    export.add_argument("model", help="model folder")
    export.add_argument("out", help="the .onnx file to write")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--task", choices=["quality", "aesthetics"], help="default: quality, or the adapter's task")
    export.add_argument("--adapter", help="trained adapter to bake in (default: zero-shot prompts)")
    export.add_argument("--prompt-set", help="zero-shot prompt set to bake in")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    export.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    export.set_defaults(func=export_command)

    info = commands.add_parser("info", help="describe a model folder")
    info.add_argument("model", nargs="?", help="model folder or hub id (default: the bundled model)")
    info.set_defaults(func=info_command)

    convert = commands.add_parser("convert", help="convert an OpenAI-format CLIP/UniQA checkpoint")
    convert.add_argument("checkpoint", help="e.g. UniQA_weight.pt")
    convert.add_argument("--out", required=True, help="model folder to write")
    convert.add_argument("--adapter", help="adapter checkpoint of the original training framework (.pth)")
    convert.add_argument("--adapter-name", default="default")
    convert.add_argument("--adapter-task", choices=["quality", "aesthetics"], default="quality")
    convert.add_argument("--adapter-dataset", help="dataset the adapter was trained on (for the model card)")
    convert.add_argument("--license", default="other", help="licence id for the model card")
    convert.set_defaults(func=convert_command)

    evaluate = commands.add_parser("evaluate", help="metrics (SRCC, PLCC, KRCC, RMSE) on an image + MOS table")
    evaluate.add_argument("--model", help="model folder or hub id (default: $UNIQA_MODEL or the bundled model)")
    evaluate.add_argument("--data", required=True, help="CSV/JSONL table (image,mos) or a benchmark name")
    evaluate.add_argument("--image-root", help="folder the table's relative image paths start from")
    evaluate.add_argument("--image-column", default="image")
    evaluate.add_argument("--mos-column", default="mos")
    evaluate.add_argument("--data-dir", help="the benchmark's local folder (with a benchmark name)")
    evaluate.add_argument("--split", default="test", help="benchmark split (default: test)")
    evaluate.add_argument("--mos-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="MOS scale")
    evaluate.add_argument("--lower-is-better", action="store_true", help="the table holds DMOS")
    evaluate.add_argument("--task", choices=["quality", "aesthetics"])
    evaluate.add_argument("--adapter", help="trained adapter name (default: zero-shot prompts)")
    evaluate.add_argument("--prompt-set", help="zero-shot prompt set")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--crop-mode", choices=["grid", "random", "center"])
    evaluate.add_argument("--crops", type=int)
    evaluate.add_argument("--max-side", type=int)
    evaluate.add_argument("--output", default="evaluation", help="folder for report.json and scatter.png")
    evaluate.add_argument("--no-plot", action="store_true", help="skip the scatter plot")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=evaluate_command)
    return parser


# Commands that live in the training library: `uniqa NAME ARGS...` runs `modeling_uniqa.training.NAME.main(ARGS)`.
TRAINING_COMMANDS = {
    "finetune": "train a multi-cue adapter on an image + MOS table or a benchmark",
    "pretrain": "contrastive pre-training of the CLIP towers on an image-text corpus",
    "caption": "write quality/aesthetics captions for an image table (template or multimodal LLM)",
    "purify": "keep the comments of an aesthetics corpus that fit their image (AVA purification)",
    "protocols": "10-split / few-label / zero-shot evaluation protocols",
}
# The optional dependency group each command needs beyond the base install, and the modules that group brings.
COMMAND_EXTRAS = {"export": "export", "evaluate": "datasets", **dict.fromkeys(TRAINING_COMMANDS, "train")}
EXTRA_MODULES = {
    "datasets": {"datasets", "scipy", "pandas", "openpyxl", "matplotlib"},
    "train": {"datasets", "scipy", "pandas", "accelerate", "peft", "evaluate", "matplotlib", "yaml", "skimage"},
    "export": {"onnx", "onnxruntime", "onnxscript"},
}


def missing_extra(command: str, error: ModuleNotFoundError) -> str | None:
    """The extra that would bring the module `error` names, if `command` needs that extra."""
    extra = COMMAND_EXTRAS.get(command)
    module = (error.name or "").split(".")[0]
    return extra if extra is not None and module in EXTRA_MODULES[extra] else None


def run_training_command(name: str, argv: Sequence[str]) -> int:
    import importlib

    module = importlib.import_module(f"..training.{name}", __package__)
    result = module.main(list(argv))
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `uniqa` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    try:
        if command in TRAINING_COMMANDS:
            return run_training_command(command, argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ModuleNotFoundError as error:
        extra = missing_extra(command or "", error)
        if extra is None:
            raise
        print(
            f"uniqa {command}: needs the [{extra}] extra (module {error.name!r} is missing): "
            f'pip install "uniqa[{extra}]"',
            file=sys.stderr,
        )
        return 3
    except ValueError as error:  # a request the model cannot serve (unknown adapter, unavailable task, ...)
        print(f"uniqa: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
