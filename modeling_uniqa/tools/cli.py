"""The `uniqa` command line: score images, inspect and convert model folders."""

from __future__ import annotations

import argparse
import ast
import contextlib
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .batch_scoring import (
    SCORE_FIELDS,
    RowWriter,
    decoded_chunks,
    distributed_world,
    escape_text,
    expand_inputs,
    join_process_group,
    output_format,
    read_rows,
    result_row,
    run_fingerprint,
    score_chunk,
    shard_path,
    split_done,
)


@cache
def model_code_constant(module: str, name: str) -> Any:
    """A literal constant of the model's code (`TASKS` in configuration_uniqa.py, ...), read from its source: the
    parser needs the names, and importing that code (torch, transformers) would take seconds before `--help`."""
    source = Path(__file__).resolve().parents[1] / f"{module}.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{source} defines no constant {name}")


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


@contextlib.contextmanager
def loading_from(source: str) -> Iterator[None]:
    """Loading a model from `source` (a folder or Hub id): a source that is neither, or that cannot be loaded
    (missing, offline, not a UniQA model), is a `ValueError` of one line instead of a traceback."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.isfile(source):
        raise ValueError(f"cannot load a model from {source}: a file, not a model folder")
    if not os.path.exists(source):
        try:
            validate_repo_id(source)
        except HFValidationError:
            raise ValueError(f"cannot load a model from {source}: no such folder, and not a Hub id") from None
    try:
        yield
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load a model from {source}: {reason}") from error


def load_model(args: argparse.Namespace):
    """The model of `--model` (default: `default_model()`), in eval mode, from safetensors only; see
    `loading_from` for the errors."""
    from ..modeling_uniqa import UniQAModel

    source = args.model or default_model()
    with loading_from(source):
        return UniQAModel.from_pretrained(source, use_safetensors=True).eval()


def check_device(device: str | None) -> None:
    """A `--device` that does not parse or is not available here is a `ValueError` before any work starts."""
    import torch

    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"--device {device}: not a device ({error})") from error
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {device}: no such CUDA device is available here")
    if parsed.type not in ("cpu", "cuda") and not getattr(torch, parsed.type).is_available():
        raise ValueError(f"--device {device}: not available here")


def score_options(args: argparse.Namespace) -> dict[str, Any]:
    """`model.score`'s keyword arguments from `uniqa score`'s crop, precision, device and worker options."""
    options = {"crop_mode": args.crop_mode, "crops": args.crops, "max_side": args.max_side, "seed": args.seed}
    options |= {"dtype": args.dtype, "device": args.device, "num_workers": args.num_workers, "compile": args.compile}
    return options


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def check_output(args: argparse.Namespace) -> None:
    """`--output`'s folder exists, and an existing file is replaced only with `--overwrite` (or continued with
    `--resume`); else a `ValueError` of one line, before any work starts."""
    if args.output is None:
        if args.resume:
            raise ValueError("--resume needs --output")
        return
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise ValueError(f"--output {args.output}: the folder {folder} does not exist")
    if os.path.exists(args.output) and not (args.resume or args.overwrite):
        raise ValueError(f"--output {args.output} exists: add --resume to continue it or --overwrite to replace it")


def score_command(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        require_extra("datasets", "uniqa score --dataset")
        from .dataset_scoring import score_dataset_command

        return score_dataset_command(args)
    args.output = None if args.output == "-" else args.output  # `-`: standard output
    args.format = output_format(args.output, args.format)
    if distributed_world()[1] > 1 and not getattr(args, "shard", False):
        return sharded_score_command(args)
    paths = expand_inputs(args.inputs)
    if not paths:
        print("uniqa: no input images (give files, folders, globs or -, or --dataset)", file=sys.stderr)
        return 2
    if args.quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
    check_output(args)  # before the device check, which imports torch (seconds): a wrong --output answers at once
    check_device(args.device)
    model = load_model(args)
    task, adapter, prompt_set = model.resolve(args.task, args.adapter, args.prompt_set)
    options = score_options(args)
    run = run_fingerprint(model, options)
    try:  # the tower now: a precision or device that cannot run here fails in one line, before any work
        model.image_tower(args.dtype, args.device, args.compile)
    except (ValueError, ImportError, RuntimeError) as error:
        print(f"uniqa: {error}", file=sys.stderr)
        return 1
    remaining, done = list(paths), []
    if args.resume:
        try:
            rows = read_rows(args.output, args.format) if os.path.exists(args.output) else []
            remaining, done = split_done(paths, rows, (task, adapter, prompt_set), run)
        except ValueError as error:
            print(f"uniqa: cannot resume: {error}", file=sys.stderr)
            return 1
    failures = sum(1 for row in done if row.get("error"))
    writer = RowWriter(args.format, args.output, append=args.resume, fields=SCORE_FIELDS)
    try:
        failures += score_files(args, model, (task, adapter, prompt_set), options, run, remaining, done, writer)
    except KeyboardInterrupt:  # Ctrl-C: the rows written so far are complete and synced (the writer was closed)
        written = len(done) + writer.rows
        if getattr(args, "shard", False):  # one process of several: the sharded command speaks for all of them
            pass
        elif args.output is None:
            print(f"uniqa: interrupted after {written} of {len(paths)} rows", file=sys.stderr)
        else:
            print(
                f"uniqa: interrupted: {written} of {len(paths)} rows are in {args.output}; "
                "the same command with --resume scores the rest",
                file=sys.stderr,
            )
        return 130
    if failures:
        print(f"uniqa: {failures} of {len(paths)} inputs could not be scored (see the error column)", file=sys.stderr)
    return 2 if failures else 0


def score_files(
    args: argparse.Namespace,
    model: Any,
    request: tuple[str, str | None, str],
    options: dict[str, Any],
    run: str,
    remaining: list[str],
    done: list[dict[str, Any]],
    writer: RowWriter,
) -> int:
    """Score `remaining` in chunks (`decoded_chunks`), writing each row to `writer` (closed at the end, also when
    interrupted) -> how many rows are errors."""
    from tqdm.auto import tqdm

    failures = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(writer)
        progress = stack.enter_context(
            tqdm(total=len(done) + len(remaining), initial=len(done), unit="img", file=sys.stderr, disable=args.quiet)
        )
        if args.decode == "processes":  # paths go as they are to the decoding processes
            from ..image_processing_uniqa import default_num_workers
            from .decoding import decoding_processes

            workers = args.num_workers if args.num_workers is not None else default_num_workers()
            options["decode"] = stack.enter_context(decoding_processes(workers))
        loaded = decoded_chunks(
            model.image_processor, remaining, args.batch_size, args.num_workers, decode=args.decode != "processes"
        )
        for chunk, images, errors in loaded:  # within a budget of decoded pixels (MAX_PIXELS_IN_FLIGHT)
            scores = score_chunk(model, images, errors, request, args.batch_size, options)
            for path in chunk:
                row = result_row(path, request, scores.get(path), errors.get(path), run)
                failures += row["error"] is not None
                writer.write(row)
            writer.sync()
            progress.update(len(chunk))
    return failures


# -------------------------------------------------------------------------------------------------------------
# Scale-out (docs/performance.md).


def sharded_score_command(args: argparse.Namespace) -> int:
    """`uniqa score` in one of several processes: score inputs `rank::world`, then process 0 merges the shards.

    Every process expands the same inputs (and, with `--resume`, skips the same finished rows), scores every
    `world`-th remaining input into its shard file, and waits at a barrier; process 0 then writes all rows to
    `--output` in input order and deletes the shards. On GPUs each process uses `cuda:LOCAL_RANK`; on CPUs the
    cores are split between the processes of a machine.
    """
    import torch
    import torch.distributed as dist

    rank, world = distributed_world()
    if args.output is None:
        print("uniqa: scoring with several processes needs --output (shards are written beside it)", file=sys.stderr)
        return 1
    if "-" in args.inputs:
        print("uniqa: reading inputs from standard input (-) needs a single process", file=sys.stderr)
        return 1
    check_output(args)
    args.device = join_process_group(args.device)
    paths, done = expand_inputs(args.inputs), []
    if args.resume and os.path.exists(args.output):
        model = load_model(args)
        request = model.resolve(args.task, args.adapter, args.prompt_set)
        run = run_fingerprint(model, score_options(args))
        try:
            paths, done = split_done(paths, read_rows(args.output, args.format), request, run)
        except ValueError as error:
            print(f"uniqa: cannot resume: {error}", file=sys.stderr)
            return 1
    shard = shard_path(args.output, rank, world)
    shard_args = argparse.Namespace(**vars(args))
    shard_args.inputs, shard_args.output, shard_args.format = paths[rank::world], shard, "jsonl"
    shard_args.quiet, shard_args.shard = args.quiet or rank != 0, True
    # A shard left by an interrupted run is continued with --resume (the same inputs fall to the same shard), and
    # scored again without it.
    shard_args.resume, shard_args.overwrite = args.resume, not args.resume
    status = score_command(shard_args) if shard_args.inputs else 0
    interrupted = torch.tensor([int(status == 130)])
    dist.all_reduce(interrupted)  # also the barrier before merging: every shard is finished, or one was interrupted
    if interrupted.item():  # Ctrl-C (in any process): keep the shards for --resume, merge nothing
        if rank == 0:
            shards = [shard_path(args.output, r, world) for r in range(world)]
            written = sum(len(read_rows(shard, "jsonl")) for shard in shards if os.path.exists(shard))
            print(
                f"uniqa: interrupted: {len(done) + written} of {len(done) + len(paths)} rows are scored "
                f"({written} in the shard files beside {args.output}); the same command with --resume scores the rest",
                file=sys.stderr,
            )
        dist.destroy_process_group()
        return 130
    if rank == 0:
        shards = [read_rows(shard_path(args.output, r, world), "jsonl") for r in range(world)]
        with RowWriter(args.format, args.output, append=bool(done), fields=SCORE_FIELDS) as writer:
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
            dtype=args.dtype,
        )
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"uniqa export: {error}", file=sys.stderr)
        return 1
    checked = sidecar.get("max_abs_difference")
    note = f" (onnxruntime vs PyTorch: max |difference| {checked:.1e})" if checked is not None else ""
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}{note}")
    return 0


def model_record(model: str) -> dict[str, Any]:
    """Everything `uniqa info` knows about a model folder: towers, levels, prompt sets, adapters (with their
    metadata: dataset, MOS scale, metrics, training settings) and test-time crops."""
    from ..configuration_uniqa import UniQAConfig
    from ..image_processing_uniqa import UniQAImageProcessor

    config = UniQAConfig.from_pretrained(model)
    processor = UniQAImageProcessor.from_pretrained(model)
    vision, text = config.vision_config, config.text_config
    return {
        "model": model,
        "vision_tower": {
            "layers": vision.num_hidden_layers,
            "width": vision.hidden_size,
            "patch_size": vision.patch_size,
            "image_size": vision.image_size,
        },
        "text_tower": {"layers": text.num_hidden_layers, "width": text.hidden_size},
        "projection_dim": config.projection_dim,
        "levels": config.levels,
        "prompt_sets": config.prompt_sets,
        "task_prompt_sets": config.task_prompt_sets,
        "adapters": config.adapters,
        "test_time_crops": {
            "crop_mode": processor.crop_mode,
            "crops": processor.crops,
            "crop_size": processor.crop_size,
            "max_side": processor.max_side,
        },
    }


ADAPTER_SUMMARY_KEYS = ("task", "prompt_set", "bottleneck_dim", "dataset", "mos_range", "higher_is_better")


def adapter_summary(meta: dict[str, Any]) -> list[str]:
    """An adapter's metadata in one or two short lines (its full record: `uniqa info --json`)."""
    parts = [meta["task"], f"prompt set {meta.get('prompt_set')}", f"bottleneck {meta.get('bottleneck_dim')}"]
    if meta.get("mos_range"):
        low, high = meta["mos_range"]
        parts.append(f"MOS {low:g}-{high:g}, {'higher' if meta.get('higher_is_better', True) else 'lower'} is better")
    scalars = (str, int, float, bool)
    parts += [f"{k}={v}" for k, v in meta.items() if k not in ADAPTER_SUMMARY_KEYS and isinstance(v, scalars)]
    lines = ["; ".join(parts)] + ([f"trained on {meta['dataset']}"] if meta.get("dataset") else [])
    metrics, training = meta.get("metrics") or {}, meta.get("training") or {}
    shown = [f"{k.upper()} {metrics[k]:.3f}" for k in ("srcc", "plcc", "krcc", "rmse") if metrics.get(k) is not None]
    if shown or training:
        epoch = f" at epoch {metrics['best_epoch']:g}" if metrics.get("best_epoch") is not None else ""
        split = (
            f"; {training['train_images']} training / {training['validation_images']} validation images"
            if {"train_images", "validation_images"} <= set(training)
            else ""
        )
        lines.append(f"validation {', '.join(shown) or 'metrics not recorded'}{epoch}{split}")
    return lines


def info_command(args: argparse.Namespace) -> int:
    source = args.model or default_model()
    with loading_from(source):
        record = model_record(source)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    vision, text, levels = record["vision_tower"], record["text_tower"], record["levels"]
    print(f"model: {record['model']}")
    print(
        f"vision tower: {vision['layers']} layers, width {vision['width']}, patch {vision['patch_size']}, "
        f"{vision['image_size']} px; text tower: {text['layers']} layers, width {text['width']}; "
        f"embedding {record['projection_dim']}"
    )
    print(f"zero-shot levels: {levels} (scores in [{min(levels):g}, {max(levels):g}], higher is better)")
    print("prompt sets:")
    for name, prompt_set in record["prompt_sets"].items():
        task = prompt_set["task"]
        default = f" (default for {task})" if record["task_prompt_sets"].get(task) == name else ""
        print(f"  {name}: {task}{default}; groups: {', '.join(prompt_set['groups'])}")
    print("adapters:" if record["adapters"] else "adapters: none")
    for name, meta in record["adapters"].items():
        first, *rest = adapter_summary(meta)
        print(f"  {name}: {first}")
        for line in rest:
            print(f"    {line}")
    crops = record["test_time_crops"]
    print(
        f"test-time crops: {crops['crop_mode']}, {crops['crops']} crops of {crops['crop_size']} px, "
        f"max side {crops['max_side'] or 'none'}"
    )
    if record["adapters"]:
        print("(uniqa info --json: the full record, with each adapter's metrics and training settings)")
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
    model = load_model(args)
    left_out = 0
    if not os.path.isfile(args.data) and not args.include_seen:  # a benchmark split: only images the model never saw
        from ..training.provenance import overlap_summary, seen_images, without_seen

        kept, found = without_seen(table, seen_images(model.config, args.adapter))
        left_out, where = len(table) - len(kept), f"{args.data}'s {args.split} split in {args.data_dir}"
        if len(kept) < 3:
            print(
                f"uniqa evaluate: {left_out} of the {len(table)} images of {where} trained or selected this model "
                f"({overlap_summary(found)}), {len(kept)} did not: no disjoint test set in this copy of the data "
                "(3 images needed). Evaluate on images the model never saw, or pass --include-seen to evaluate on "
                "these anyway (an optimistic number).",
                file=sys.stderr,
            )
            return 1
        if left_out:
            print(
                f"uniqa evaluate: left out {left_out} of the {len(table)} images of {where}: they trained or "
                f"selected this model ({overlap_summary(found)}); evaluating the other {len(kept)} "
                "(--include-seen keeps them)",
                file=sys.stderr,
            )
        table = kept
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
    report["setup"]["left_out_seen"] = left_out
    out = Path(args.output)
    write_report(report, out / "report.json", None if args.no_plot else out / "scatter.png")
    for name, value in report["metrics"].items():
        print(f"{name}: {value:.4f}")
    for warning in report["warnings"]:
        print(f"uniqa evaluate: {warning}", file=sys.stderr)
    print(f"wrote {out / 'report.json'}" + ("" if args.no_plot else f" and {out / 'scatter.png'}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    tasks = model_code_constant("configuration_uniqa", "TASKS")
    crop_modes = model_code_constant("image_processing_uniqa", "CROP_MODES")
    parser = argparse.ArgumentParser(prog="uniqa", description="Image quality and aesthetics scores with UniQA.")
    try:
        parser.add_argument("--version", action="version", version=f"uniqa {version('uniqa')}")
    except PackageNotFoundError:  # a checkout that was never installed
        parser.add_argument("--version", action="version", version="uniqa (not installed)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in TRAINING_COMMANDS.items():  # parsed by the command itself (`uniqa NAME --help`)
        commands.add_parser(name, help=f"{summary} [train]", add_help=False)

    score = commands.add_parser("score", help="score images (files, folders, globs) or a dataset's image column")
    score.add_argument(
        "inputs",
        nargs="*",
        help="image files, folders (searched recursively), glob patterns (quote them; image extensions match in any "
        "case), or - to read these from standard input, one per line",
    )
    score.add_argument("--model", help="model folder or hub id (default: $UNIQA_MODEL or the bundled model)")
    score.add_argument("--task", choices=tasks, help="default: quality, or the adapter's task")
    score.add_argument("--adapter", help="trained adapter name (default: zero-shot prompts)")
    score.add_argument("--prompt-set", help="zero-shot prompt set (see `uniqa info`)")
    score.add_argument(
        "--batch-size", type=positive_int, default=32, help="crops per forward pass and images per chunk"
    )
    score.add_argument("--crop-mode", choices=crop_modes, help="default: the model's (grid)")
    score.add_argument("--crops", type=positive_int, help="crops per image (default: the model's)")
    score.add_argument("--max-side", type=positive_int, help="downscale images whose longer side exceeds this")
    score.add_argument("--seed", type=int, default=0, help="seed of the random crop protocol")
    score.add_argument(
        "--format",
        choices=["csv", "jsonl"],
        help="default: jsonl when --output ends in .jsonl or .json-lines, else csv",
    )
    score.add_argument("--output", help="write results to this file (default, or -: standard output)")
    existing = score.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: keep --output's complete rows and score only the inputs it lacks",
    )
    existing.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16", "int8"],
        help="vision tower precision (default: fp32; int8: CPUs with VNNI/AMX, needs uniqa[export])",
    )
    score.add_argument("--device", help="where the vision tower runs, e.g. cuda, cuda:1, cpu (default: cpu)")
    score.add_argument(
        "--num-workers", type=int, help="image decoding threads or processes (default: min(4, CPU count))"
    )
    score.add_argument(
        "--decode",
        choices=["threads", "processes"],
        default="threads",
        help="decode and crop images in worker threads (default) or worker processes (to feed a GPU)",
    )
    score.add_argument("--compile", action="store_true", help="torch.compile the vision tower")
    scored = score.add_argument_group("datasets (instead of inputs; writes Parquet to --output) [datasets]")
    scored.add_argument("--dataset", help="a hub id, a local folder of Parquet/image files, or a save_to_disk folder")
    scored.add_argument("--config", help="the dataset's configuration name")
    scored.add_argument("--split", default="train", help="default: train")
    scored.add_argument("--image-column", default="image", help="images, image bytes or file paths (default: image)")
    scored.add_argument("--streaming", action="store_true", help="stream the rows instead of loading the dataset")
    scored.add_argument("--min-score", type=float, help="write only the rows scoring at least this")
    scored.add_argument("--keep-images", action="store_true", help="keep the image column in the output")
    score.set_defaults(func=score_command)

    from .quality_map import add_map_parser  # `uniqa map`: quality-map PNGs

    add_map_parser(commands, tasks)

    export = commands.add_parser("export", help="export a model folder as one ONNX graph, pixels to scores")
    export.add_argument("model", help="model folder")
    export.add_argument("out", help="the .onnx file to write")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--task", choices=tasks, help="default: quality, or the adapter's task")
    export.add_argument("--adapter", help="trained adapter to bake in (default: zero-shot prompts)")
    export.add_argument("--prompt-set", help="zero-shot prompt set to bake in")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    export.add_argument(
        "--dtype", choices=["fp32", "int8"], default="fp32", help="int8: the vision tower's linear layers quantised"
    )
    export.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    export.set_defaults(func=export_command)

    info = commands.add_parser("info", help="describe a model folder")
    info.add_argument("model", nargs="?", help="model folder or hub id (default: the bundled model)")
    info.add_argument("--json", action="store_true", help="print the full record as JSON (adapters' metrics too)")
    info.set_defaults(func=info_command)

    convert = commands.add_parser("convert", help="convert an OpenAI-format CLIP/UniQA checkpoint")
    convert.add_argument("checkpoint", help="e.g. UniQA_weight.pt")
    convert.add_argument("--out", required=True, help="model folder to write")
    convert.add_argument("--adapter", help="adapter checkpoint of the original training framework (.pth)")
    convert.add_argument("--adapter-name", default="default")
    convert.add_argument("--adapter-task", choices=tasks, default="quality")
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
    evaluate.add_argument(
        "--split",
        default="test",
        help="benchmark split (default: test), less the images the model records as having trained or selected it",
    )
    evaluate.add_argument(
        "--include-seen",
        action="store_true",
        help="keep a benchmark split's images that trained or selected the model (any overlap is still warned of)",
    )
    evaluate.add_argument(
        "--mos-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="the MOS scale: targets become MOS normalised to [0, 1] (RMSE needs it when the MOS lie outside the "
        "scores' range; SRCC, KRCC and PLCC do not)",
    )
    evaluate.add_argument("--lower-is-better", action="store_true", help="the table holds DMOS")
    evaluate.add_argument("--task", choices=tasks)
    evaluate.add_argument("--adapter", help="trained adapter name (default: zero-shot prompts)")
    evaluate.add_argument("--prompt-set", help="zero-shot prompt set")
    evaluate.add_argument("--batch-size", type=positive_int, default=32)
    evaluate.add_argument("--crop-mode", choices=crop_modes)
    evaluate.add_argument("--crops", type=positive_int)
    evaluate.add_argument("--max-side", type=positive_int)
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
    "protocols": "10-split / few-label / zero-shot evaluation protocols; the model vs baselines (compare)",
}
# The optional dependency group each command needs beyond the base install, and the modules that group brings.
COMMAND_EXTRAS = {"export": "export", "evaluate": "datasets", **dict.fromkeys(TRAINING_COMMANDS, "train")}
EXTRA_MODULES = {
    "datasets": ("datasets", "scipy", "pandas", "matplotlib"),
    "train": ("datasets", "scipy", "pandas", "matplotlib", "accelerate", "peft", "evaluate", "yaml", "skimage")
    + ("sklearn",),
    "export": ("onnx", "onnxruntime"),
}


class MissingExtraError(Exception):
    """A command needs an optional dependency group that is not installed."""


def require_extra(extra: str, what: str) -> None:
    """Raise [`MissingExtraError`] naming `pip install "uniqa[extra]"` if a module of `extra` is not importable."""
    import importlib.util

    missing = [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f'{what} needs the [{extra}] extra ({", ".join(missing)} missing): pip install "uniqa[{extra}]"'
        )


def run_training_command(name: str, argv: Sequence[str]) -> int:
    import importlib

    module = importlib.import_module(f"..training.{name}", __package__)
    result = module.main(list(argv))
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `uniqa` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # File names that are not valid UTF-8 (Python holds their bytes as surrogates) are printed escaped, as on
        # standard error, instead of failing the command in a strict UTF-8 locale.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if command in COMMAND_EXTRAS:  # checked before any work starts
            require_extra(COMMAND_EXTRAS[command], f"uniqa {command}")
        if command in TRAINING_COMMANDS:
            return run_training_command(command, argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except MissingExtraError as error:
        print(error, file=sys.stderr)
        return 3
    except ValueError as error:  # a request the model cannot serve (unknown adapter, unavailable task, ...)
        print(f"uniqa: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside the scoring loop (which says what it wrote): loading, merging, ...
        print("uniqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
