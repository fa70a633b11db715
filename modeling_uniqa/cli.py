"""The `uniqa` command line: score images, inspect and convert model folders."""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
BUNDLED_MODEL = Path(__file__).resolve().parent.parent / "models" / "uniqa-tiny"


def default_model() -> str:
    """`$UNIQA_MODEL`, else the bundled model folder of a source checkout."""
    if os.environ.get("UNIQA_MODEL"):
        return os.environ["UNIQA_MODEL"]
    if (BUNDLED_MODEL / "config.json").is_file():
        return str(BUNDLED_MODEL)
    raise SystemExit(
        "uniqa: no --model given, $UNIQA_MODEL is unset and no bundled model was found at "
        f"{BUNDLED_MODEL}. Convert a checkpoint first: `uniqa convert UniQA_weight.pt --out MODEL_DIR`."
    )


def expand_inputs(items: Sequence[str]) -> list[str]:
    """Paths, folders (searched recursively for image files) and glob patterns -> file paths, in order.

    Anything that matches nothing is kept as it is, so that it gets an error row instead of vanishing.
    """
    paths: list[str] = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()
            )
            paths.extend(found)
        elif not os.path.lexists(item) and glob.has_magic(item):
            paths.extend(sorted(glob.glob(item, recursive=True)) or [item])
        else:
            paths.append(item)
    return paths


class RowWriter:
    """Streams result rows as CSV or JSON lines, flushing each row."""

    fields = ("path", "score", "task", "adapter", "prompt_set", "error")

    def __init__(self, stream: IO[str], fmt: str):
        self.stream = stream
        self.fmt = fmt
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=self.fields, lineterminator="\n")
            self.csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        row = {field: row.get(field) for field in self.fields}
        if self.fmt == "csv":
            self.csv.writerow({k: "" if v is None else v for k, v in row.items()})
        else:
            self.stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.stream.flush()


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """The output file (written as rows arrive), or stdout."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        yield handle


def score_command(args: argparse.Namespace) -> int:
    from .modeling_uniqa import UniQAModel

    paths = expand_inputs(args.inputs)
    if not paths:
        print("uniqa: no input images", file=sys.stderr)
        return 2
    model = UniQAModel.from_pretrained(args.model or default_model()).eval()
    task, adapter, prompt_set = model.resolve(args.task, args.adapter, args.prompt_set)
    options = {"crop_mode": args.crop_mode, "crops": args.crops, "max_side": args.max_side, "seed": args.seed}
    failures = 0
    with (
        open_output(args.output) as output,
        tqdm(total=len(paths), unit="img", file=sys.stderr, disable=args.quiet) as progress,
    ):
        writer = RowWriter(output, args.format)
        for chunk in chunks(paths, args.batch_size):
            images, errors = {}, {}
            for path in chunk:
                try:
                    images[path] = model.image_processor.load_image(path)
                except (ValueError, OSError) as error:
                    errors[path] = str(error)
            scores = (
                model.score(list(images.values()), task, adapter, prompt_set, batch_size=args.batch_size, **options)
                if images
                else []
            )
            scores = dict(zip(images, scores, strict=True))
            for path in chunk:
                row = {"path": path, "task": task, "adapter": adapter, "prompt_set": prompt_set}
                if path in scores:
                    row["score"] = round(float(scores[path]), 6)
                else:
                    row["error"] = errors[path]
                    failures += 1
                writer.write(row)
            progress.update(len(chunk))
    if failures:
        print(f"uniqa: {failures} of {len(paths)} inputs could not be scored (see the error column)", file=sys.stderr)
    return 2 if failures else 0


def info_command(args: argparse.Namespace) -> int:
    from .configuration_uniqa import UniQAConfig

    config = UniQAConfig.from_pretrained(args.model or default_model())
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
    print(f"test-time crops: {config.crop_mode}, {config.crops} crops, max side {config.max_side or 'none'}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uniqa", description="Image quality and aesthetics scores with UniQA.")
    commands = parser.add_subparsers(dest="command", required=True)

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
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=score_command)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
