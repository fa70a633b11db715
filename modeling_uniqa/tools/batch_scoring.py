"""Scoring many image files to a results file: inputs, result rows, resume, chunks, prefetching and sharding.

The machinery behind `uniqa score` (and the Space's batch tab): `RowWriter` writes complete CSV / JSON-lines rows
only, `read_rows` + `split_done` resume an interrupted run, `score_chunk` isolates an image that breaks scoring,
`prefetch_images` decodes ahead of the model, `decoded_chunks` hands it chunks of images within a budget of decoded
pixels, `distributed_world` / `shard_path` split a run across processes.
"""

from __future__ import annotations

import csv
import glob
import io
import itertools
import json
import math
import operator
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

# Decoded pixels (width x height) that `uniqa score` holds in the chunk being scored, and again in the images decoded
# ahead of it (`decoded_chunks`); Pillow keeps 4 bytes a pixel of RGB, so about 1 GB each. Two images at Pillow's
# limit (PIL.Image.MAX_IMAGE_PIXELS, 89.5 M pixels) fit, a third does not; 32 photos of 8 M pixels (3264x2448) do.
# Peak memory, measured: benchmarks/results/prefetch-memory.json.
MAX_PIXELS_IN_FLIGHT = 256_000_000
Item = TypeVar("Item")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}


def expand_inputs(items: Sequence[str], stdin: IO[str] | None = None) -> list[str]:
    """Paths, folders (searched recursively for image files) and glob patterns -> file paths, in order.

    Image extensions match in any case, in folders and at the end of a glob (`*.jpg` finds `.JPG`); the rest of a
    glob is matched as Python's `glob` does (case-sensitive on Linux; `**` spans folders). `-` reads more inputs
    from `stdin` (default: standard input), one per line, expanded the same way. Anything that matches nothing (a
    missing path, an empty glob, a folder without image files) is kept as it is, so that it gets an error row
    instead of vanishing.
    """
    paths: list[str] = []
    for item in items:
        if item == "-":
            lines = (stdin or sys.stdin).read().split("\n")
            paths.extend(expand_inputs([line.removesuffix("\r") for line in lines if line.strip()]))
        elif os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()
            )
            paths.extend(found or [item])
        elif not os.path.lexists(item) and glob.has_magic(item):
            paths.extend(sorted(glob.glob(any_case_suffix(item), recursive=True)) or [item])
        else:
            paths.append(item)
    return paths


def any_case_suffix(pattern: str) -> str:
    """A glob whose image extension matches in any case: `*.jpg` -> `*.[jJ][pP][gG]`; other patterns as they are."""
    stem, dot, suffix = pattern.rpartition(".")
    if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES:
        return pattern
    return stem + "." + "".join(f"[{char.lower()}{char.upper()}]" for char in suffix)


def result_row(
    path: str,
    request: tuple[str, str | None, str],
    score: float | None = None,
    error: str | None = None,
    run: str | None = None,
) -> dict[str, Any]:
    """One result row of `uniqa score` and of the Space's batch table: the input, its score (6 decimals) or the
    reason it has none, how it was scored (`request`: the task, adapter and prompt set of `model.resolve`) and by
    what (`run`: the `run_fingerprint` of the model and options, which `--resume` checks)."""
    task, adapter, prompt_set = request
    score = None if score is None else round(float(score), 6)
    return {
        "path": path,
        "score": score,
        "task": task,
        "adapter": adapter,
        "prompt_set": prompt_set,
        "error": error,
        "run": run,
    }


def run_fingerprint(model: Any, options: dict[str, Any]) -> str:
    """12 hex digits that differ between runs whose scores differ: a hash of the model's config and weights (with
    its adapters) and of the crop and precision options of `model.score` (`crop_mode`, `crops`, `max_side`,
    `dtype`, and `seed` for random crops). Hashing the weights reads them once (about a second for ViT-B/16)."""
    import hashlib

    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    chosen = {k: options.get(k) for k in ("crop_mode", "crops", "max_side", "dtype")}
    if options.get("crop_mode") == "random":
        chosen["seed"] = options.get("seed")
    digest = hashlib.blake2b(digest_size=6)
    digest.update(json.dumps([config, chosen], sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def output_format(output: str | None, fmt: str | None) -> str:
    """`--format` if given, else from `--output`'s extension: `.jsonl` / `.json-lines` -> JSON lines, anything
    else (`.csv`, standard output) -> CSV."""
    if fmt is not None:
        return fmt
    return "jsonl" if output is not None and output.lower().endswith((".jsonl", ".json-lines")) else "csv"


# A CSV cell starting with one of these runs as a formula in spreadsheets; `'` marks a cell made safe (and is itself
# escaped), so that `csv_value(csv_cell(text)) == text` for every text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: Any) -> Any:
    """A value -> a CSV cell that a spreadsheet shows as text: text starting with `= + - @`, tab, CR or `'` gets a
    leading `'`; numbers (a negative score) stay numbers; `None` -> empty."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def csv_value(cell: str) -> str | None:
    """The inverse of `csv_cell` on a cell read back: empty -> `None`, a leading `'` removed."""
    if cell == "":
        return None
    return cell[1:] if cell.startswith("'") else cell


def escape_text(text: str) -> str:
    """Make `text` encodable as UTF-8: undecodable bytes of file names (lone surrogates in Python) -> `\\udcXX`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RowWriter:
    """Writes result rows as CSV or JSON lines so that an interrupted run leaves only complete rows.

    Each row is encoded to one complete line and handed to the OS in a single write. A file is written unbuffered
    and cut back to its last complete row if a write fails (e.g. disk full); `sync()` fsyncs it (the CLI syncs
    after every chunk of images). A text stream (stdout) is flushed after every row. Undecodable bytes in paths
    are written as `\\udcXX` escapes (JSON reads them back as the original name), so the output is always UTF-8.
    CSV cells that a spreadsheet would run as formulas are written as text (`csv_cell`). `rows` counts the rows
    written. `fields` are the columns: by default the Space's batch table; `uniqa score` adds `run` (`SCORE_FIELDS`).
    """

    fields = ("path", "score", "task", "adapter", "prompt_set", "error")

    def __init__(
        self, fmt: str, output: str | IO[str] | None = None, append: bool = False, fields: Sequence[str] = fields
    ):
        self.fmt = fmt
        self.fields = tuple(fields)
        self.stream: IO[str] | None = None
        self.file = None
        if output is None or not isinstance(output, (str, os.PathLike)):
            self.stream = output or sys.stdout
        else:
            self.file = open(output, "ab" if append else "wb", buffering=0)  # noqa: SIM115 (closed by close())
        self.size = os.fstat(self.file.fileno()).st_size if self.file else 0
        self.rows = 0
        if fmt == "csv" and self.size == 0:
            self._write_line(",".join(self.fields) + "\n")

    def format(self, row: dict[str, Any]) -> str:
        """One row -> one line ending in a newline (CSV quoting or JSON; no raw newlines inside)."""
        values = [row.get(field) for field in self.fields]
        if self.fmt == "csv":
            buffer = io.StringIO()
            # "\r\n" makes the writer quote cells holding a CR as well as a LF; the row then ends in "\n" alone
            csv.writer(buffer, lineterminator="\r\n").writerow([csv_cell(v) for v in values])
            return escape_text(buffer.getvalue().removesuffix("\r\n") + "\n")
        return escape_text(json.dumps(dict(zip(self.fields, values, strict=True)), ensure_ascii=False)) + "\n"

    def _write_line(self, line: str) -> None:
        if self.stream is not None:
            self.stream.write(line)
            self.stream.flush()
            return
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                data = data[self.file.write(data) :]
        except BaseException:
            os.ftruncate(self.file.fileno(), self.size)  # never leave a partial row behind
            raise
        self.size += len(line.encode("utf-8"))

    def write(self, row: dict[str, Any]) -> None:
        self._write_line(self.format(row))
        self.rows += 1

    def sync(self) -> None:
        """Make the rows written so far durable (fsync); a no-op on streams."""
        if self.file is not None:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.sync()
            self.file.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


SCORE_FIELDS = (*RowWriter.fields, "run")  # the columns of `uniqa score`'s output


def read_rows(path: str, fmt: str) -> list[dict[str, Any]]:
    """The complete rows of an output file written by `RowWriter` (for `--resume`).

    A partial last line (a crash or power loss mid-write) is cut off the file; any other unreadable line is an
    error naming the file and line. CSV cells are read back as strings (`csv_value`), empty cells as `None`.
    """
    with open(path, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            handle.truncate(end)
            print(f"uniqa: {path}: dropped a partial last line ({len(data) - end} bytes)", file=sys.stderr)
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 results file ({error})") from error
    lines = text.split("\n")[:-1]  # rows end in "\n"; other line breaks (U+2028, \r) may occur inside paths
    if fmt == "csv":
        if lines and lines[0] == ",".join(RowWriter.fields):
            raise ValueError(
                f"{path}: no run column (written by an older `uniqa score` or the Space): its model is unknown"
            )
        if lines and lines[0] != ",".join(SCORE_FIELDS):
            raise ValueError(f"{path}: not a CSV results file of `uniqa score` (header {lines[0][:80]!r})")
        rows = csv.DictReader(io.StringIO(text, newline=""))
        return [{k: csv_value(v) for k, v in row.items()} for row in rows]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON row ({error}); was it written as CSV?") from error
        if not isinstance(row, dict) or "path" not in row:
            raise ValueError(f"{path}, line {number}: not a row of `uniqa score` (no 'path')")
        rows.append(row)
    return rows


def split_done(
    paths: Sequence[str], rows: Sequence[dict[str, Any]], request: tuple[str, str | None, str], run: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Inputs not yet in `rows` (each occurrence of a duplicated input counts once) and the rows that are inputs'.

    Raises `ValueError` if a row was scored with another task, adapter or prompt set than `request`, or by another
    model or crop / precision options (its `run` is not `run`; a row without one comes from an older version).
    """
    wanted = tuple("" if v is None else str(v) for v in request)
    pending: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        got = tuple("" if row.get(k) is None else str(row.get(k)) for k in ("task", "adapter", "prompt_set"))
        if got != wanted:
            raise ValueError(
                f"{row['path']} was scored with task/adapter/prompt set {got}, this run asks for {wanted}: "
                "resume with the same options, or write to a new --output"
            )
        if row.get("run") != run:
            raise ValueError(
                f"{row['path']} was scored by run {row.get('run') or '(none recorded: an older uniqa)'}, this run is "
                f"{run}: another model, adapter weights, --crop-mode, --crops, --max-side or --dtype; resume with the "
                "same model and options, or write to a new --output"
            )
        pending.setdefault(escape_text(str(row["path"])), []).append(row)
    remaining, done = [], []
    for path in paths:
        matches = pending.get(escape_text(path))
        if matches:
            done.append(matches.pop())
        else:
            remaining.append(path)
    return remaining, done


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def score_chunk(
    model: Any,
    images: dict[str, Any],
    errors: dict[str, str],
    request: tuple[str, str | None, str],
    batch_size: int,
    options: dict[str, Any],
) -> dict[str, float]:
    """Loaded images `{path: image}` -> `{path: score}` with `model.score`.

    If scoring the chunk raises, its images are scored one by one, so an image that breaks scoring (out of
    memory, say) gets a reason in `errors` instead of sinking the chunk or the run. Images may be paths that
    `model.score` reads itself (`--decode processes`): one it cannot read gets the reading error's own message.
    """
    from ..image_processing_uniqa import ImageReadError

    task, adapter, prompt_set = request

    def run(batch: list[Any]) -> list[float]:
        return model.score(batch, task, adapter, prompt_set, batch_size=batch_size, **options).tolist()

    if not images:
        return {}
    try:
        return dict(zip(images, run(list(images.values())), strict=True))
    except Exception:  # retried image by image below
        pass
    scores = {}
    for path, image in images.items():
        try:
            scores[path] = run([image])[0]
        except ImageReadError as error:
            errors[path] = str(error)
        except Exception as error:
            errors[path] = f"{path}: cannot score image ({type(error).__name__}: {error})"
    return scores


def prefetch_images(
    processor: Any,
    paths: Iterable[Any],
    num_workers: int | None,
    lookahead: int,
    read: Callable[[Any], Any] | None = None,
    pixels: Callable[[Any], float] | None = None,
    max_pixels: float = math.inf,
) -> Iterator[tuple[Any, str | None]]:
    """Decode `paths` in worker threads ahead of the model -> `(image, None)` or `(None, reason)`, in order.

    `read` turns one item into an image (default: `processor.load_image`); its `ValueError` / `OSError` is the
    item's reason. `paths` may be a lazy iterable: items are drawn about `lookahead` ahead of the consumer, and with
    `pixels` (an item's decoded pixels, known before decoding it) only while the pixels of the items being decoded
    or decoded and not yet taken stay within `max_pixels` (`map_in_order`; one item is always decoded).
    """
    from ..image_processing_uniqa import default_num_workers, map_in_threads

    read = read or processor.load_image

    def load(item: Any) -> tuple[Any, str | None]:
        try:
            return read(item), None
        except (ValueError, OSError) as error:
            return None, str(error)

    workers = default_num_workers() if num_workers is None else num_workers
    return map_in_threads(load, paths, workers, max(lookahead, 2 * workers), pixels, max_pixels)


def pixel_chunks(
    items: Iterable[Item], batch_size: int, max_pixels: float, pixels: Callable[[Item], float]
) -> Iterator[list[tuple[Item, float]]]:
    """Images (paths, upload entries) -> consecutive chunks of `(item, its pixels)`: at most `batch_size` of them,
    whose pixels sum to at most `max_pixels`; an image over `max_pixels` makes a chunk of its own. Used by
    `uniqa score` and the Space."""
    chunk: list[tuple[Item, float]] = []
    for item in items:
        area = pixels(item)
        if chunk and (len(chunk) == batch_size or sum(a for _, a in chunk) + area > max_pixels):
            yield chunk
            chunk = []
        chunk.append((item, area))
    if chunk:
        yield chunk


def split_loaded(
    keys: Iterable[str], loaded: Iterable[tuple[Any, str | None]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Keys and their `(image, None)` / `(None, reason)` -> `{key: image}` and `{key: reason}` (a key given twice
    keeps its last)."""
    images, errors = {}, {}
    for key, (image, error) in zip(keys, loaded, strict=True):
        if error is None:
            images[key] = image
        else:
            errors[key] = error
    return images, errors


def decoded_chunks(
    processor: Any,
    paths: Sequence[str],
    batch_size: int,
    num_workers: int | None,
    decode: bool = True,
    max_pixels: float | None = None,
) -> Iterator[tuple[list[str], dict[str, Any], dict[str, str]]]:
    """Image files -> the chunks `uniqa score` scores, in order: `(paths, {path: image}, {path: reason})`.

    A chunk holds at most `batch_size` paths whose images have at most `max_pixels` decoded pixels together
    (default `MAX_PIXELS_IN_FLIGHT`; sizes read from the files' headers; one image, however large, always makes a
    chunk). While the caller scores a chunk, the next images are decoded in `num_workers` threads within the
    same budget, so about `2 * max_pixels` decoded pixels are alive at most; asking for the next chunk releases
    this one's images. With `decode=False` (`model.score` decodes in worker processes) the images are the paths
    themselves, `batch_size` to a chunk.
    """
    from ..image_processing_uniqa import file_pixels

    if not decode:
        for chunk in chunks(paths, batch_size):
            yield list(chunk), {path: path for path in chunk}, {}
        return
    budget = MAX_PIXELS_IN_FLIGHT if max_pixels is None else max_pixels
    planned, ahead = itertools.tee(pixel_chunks(paths, batch_size, budget, file_pixels))
    loaded = prefetch_images(
        processor,
        itertools.chain.from_iterable(ahead),
        num_workers,
        batch_size,
        read=lambda item: processor.load_image(item[0]),
        pixels=operator.itemgetter(1),
        max_pixels=budget,
    )
    for chunk in planned:
        names = [path for path, _ in chunk]
        images, errors = split_loaded(names, itertools.islice(loaded, len(chunk)))
        yield names, images, errors
        images.clear()


def distributed_world() -> tuple[int, int]:
    """`(rank, world size)` from the launcher's environment (`accelerate launch`, `torchrun`); `(0, 1)` alone."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard_path(output: str, rank: int, world: int, suffix: str = ".jsonl") -> str:
    """Where a process writes its shard's rows, beside `output`: a JSON-lines file (`uniqa score` on files), or
    with `suffix=".parts"` a folder of Parquet parts (`uniqa score --dataset`)."""
    return f"{output}.shard-{rank:05d}-of-{world:05d}{suffix}"


def join_process_group(device: str | None) -> str | None:
    """In one of several processes (`accelerate launch`, `torchrun`): join the gloo process group and pick where
    this process scores -> the device (`cuda:LOCAL_RANK` when `device` is unset and GPUs exist; on CPUs the
    machine's cores are split between its processes)."""
    import datetime

    import torch
    import torch.distributed as dist

    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if device is None and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    if device is None or device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))  # shards may take days
    return device
