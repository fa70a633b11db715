"""Scoring Hugging Face datasets: `add_scores` (a score column for a `Dataset` / `IterableDataset`) and
`uniqa score --dataset` (`score_dataset_command`: a Parquet file in the dataset's row order, resumable, split across
processes).

Both score batches of rows with `scored_rows`: each batch in chunks within a budget of decoded pixels
(`batch_scoring.MAX_PIXELS_IN_FLIGHT`, as `uniqa score` on files), images decoded ahead in worker threads within the
same budget (`batch_scoring.prefetch_images`) and scored with the scoring engine (`model.score`, through
`batch_scoring.score_chunk`). A row whose image cannot be decoded or scored gets no score and the reason in its
`error` column; the run goes on.

The command writes each process's rows to a folder of Parquet parts beside `--output` (`shard_path(...,
".parts")`), one part at least every `PART_SECONDS`, so `--resume` continues after the last complete part; process
0 then merges the parts in the dataset's order into `--output` (applying `--min-score`) and removes them.
"""

from __future__ import annotations

import argparse
import glob
import inspect
import itertools
import json
import operator
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from . import batch_scoring
from .batch_scoring import (
    distributed_world,
    join_process_group,
    pixel_chunks,
    prefetch_images,
    run_fingerprint,
    score_chunk,
    shard_path,
    split_loaded,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Dataset, Features, IterableDataset
    from PIL import Image

    from ..image_processing_uniqa import UniQAImageProcessor
    from ..modeling_uniqa import UniQAModel

SCORE_COLUMNS = ("score", "error")
PART_ROWS = 1024  # rows in one Parquet part at most
PART_SECONDS = 60.0  # a part is written at least this often: the most work an interrupted run loses
MERGE_ROWS = 1024  # rows read from each process's parts at a time while merging
RECORD_KEY = "uniqa"  # the output file's key-value metadata entry describing the run (JSON)


def score_features() -> Features:
    """The two columns scoring adds: `score` (float32, higher is better; null where there is none) and `error`
    (null, or why the row has no score)."""
    from datasets import Features, Value

    return Features({"score": Value("float32"), "error": Value("string")})


def cell_image(processor: UniQAImageProcessor, row: int, cell: Any) -> Image.Image:
    """One cell of an image column -> an upright RGB PIL image.

    A cell is what `datasets.Image(decode=False)` stores, `{"bytes": ..., "path": ...}` (the bytes when present,
    else the file, local or remote such as `hf://...`), a file path, encoded bytes, a PIL image or an array. Raises
    `ValueError` naming the stored file (or else the row) and the reason.
    """
    name = None
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data is None and not path:
            raise ValueError(f"row {row}: no image (the cell has neither bytes nor a path)")
        source, name = (data, path) if data is not None else (path, None)
    elif cell is None:
        raise ValueError(f"row {row}: no image (empty cell)")
    else:
        source = cell
    if is_remote(source):
        source, name = fetch(source), source
    try:
        return processor.load_image(source)
    except ValueError as error:
        if isinstance(source, bytes):  # the reason names no file: name the stored one, or the row
            raise ValueError(f"{name or f'row {row}'}: {error}") from error
        raise


def is_remote(source: Any) -> bool:
    """Whether a cell's source is a remote file (`hf://`, `https://`, any fsspec URL), fetched when decoded."""
    return isinstance(source, str) and "://" in source and not os.path.exists(source)


def cell_pixels(cell: Any) -> int:
    """The pixels (width x height) a cell of an image column (see `cell_image`) decodes to, known without decoding
    it: encoded bytes or a local file from their header (`file_pixels`), a PIL image or an array from its size. 0
    where that is unknown before decoding: a remote file (fetched only when decoded), an empty cell, a header that
    cannot be read (decoding reports why) or an image over Pillow's pixel limit (refused unread)."""
    import numpy as np
    from PIL import Image

    from ..image_processing_uniqa import file_pixels

    if isinstance(cell, dict):
        cell = cell.get("bytes") if cell.get("bytes") is not None else cell.get("path")
    if isinstance(cell, (bytes, str, os.PathLike)):
        return 0 if is_remote(cell) else file_pixels(cell)
    if isinstance(cell, Image.Image):
        return cell.width * cell.height
    if isinstance(cell, np.ndarray) and cell.ndim >= 2:
        return cell.shape[0] * cell.shape[1]
    return 0


def fetch(url: str) -> bytes:
    """The bytes of a remote file (`hf://`, `https://`, any fsspec URL) through `datasets`' file opener, which
    uses the Hub token of the session. Raises `ValueError` naming the URL and the reason."""
    from datasets.utils.file_utils import xopen

    try:
        with xopen(url, "rb") as handle:
            return handle.read()
    except Exception as error:  # network, permission, missing file: a per-row error, not the end of the run
        raise ValueError(f"{url}: cannot read image: cannot fetch it ({type(error).__name__}: {error})") from error


def score_cells(
    model: UniQAModel,
    rows: Sequence[int],
    loaded: Iterable[tuple[Any, str | None]],
    request: tuple[str, str | None, Any],
    batch_size: int,
    options: dict[str, Any],
) -> tuple[list[float | None], list[str | None]]:
    """Decoded images of `rows` (`(image, None)` or `(None, reason)` each, from `prefetch_images`) -> their scores
    and errors, two lists in row order: a score, or `None` and the reason."""
    labels = [f"row {row}" for row in rows]
    images, errors = split_loaded(labels, loaded)
    scores = score_chunk(model, images, errors, request, batch_size, options)
    return [scores.get(label) for label in labels], [errors.get(label) for label in labels]


def scored_rows(
    model: UniQAModel,
    batches: Iterable[tuple[Sequence[int], Sequence[Any]]],
    request: tuple[str, str | None, Any],
    batch_size: int,
    options: dict[str, Any],
    max_pixels: float | None = None,
) -> Iterator[tuple[list[float | None], list[str | None]]]:
    """Batches of rows, `(row numbers, image cells)` each -> each batch's scores and errors (see `score_cells`).

    A batch is scored in consecutive chunks whose images have at most `max_pixels` decoded pixels together
    (`pixel_chunks`; default `batch_scoring.MAX_PIXELS_IN_FLIGHT`; sizes from `cell_pixels`, so a remote file counts
    0; one image, however large, always makes a chunk). While a chunk is scored, the next cells (of this batch or
    the following ones) are decoded in `options["num_workers"]` threads within the same budget, as `uniqa score`
    does for files: about `2 * max_pixels` decoded pixels are alive at most. Row numbers name rows in errors.
    """
    processor = model.image_processor
    budget = batch_scoring.MAX_PIXELS_IN_FLIGHT if max_pixels is None else max_pixels

    def plan() -> Iterator[list[list[tuple[tuple[int, Any], float]]]]:
        for rows, cells in batches:
            items = zip(rows, cells, strict=True)
            yield list(pixel_chunks(items, batch_size, budget, lambda item: cell_pixels(item[1])))

    planned, ahead = itertools.tee(plan())
    loaded = prefetch_images(
        processor,
        (item for chunks in ahead for chunk in chunks for item in chunk),
        options.get("num_workers"),
        batch_size,
        read=lambda item: cell_image(processor, *item[0]),
        pixels=operator.itemgetter(1),
        max_pixels=budget,
    )
    for chunks in planned:
        scores: list[float | None] = []
        errors: list[str | None] = []
        for chunk in chunks:
            rows = [row for (row, _), _ in chunk]
            chunk_scores, chunk_errors = score_cells(
                model, rows, itertools.islice(loaded, len(chunk)), request, batch_size, options
            )
            scores += chunk_scores
            errors += chunk_errors
        yield scores, errors


def add_scores(
    dataset: Dataset | IterableDataset,
    model: UniQAModel,
    column: str = "image",
    *,
    task: str | None = None,
    adapter: str | None = None,
    prompt_set: Any = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    **options: Any,
) -> Dataset | IterableDataset:
    """Add the columns `score` and `error` to a dataset's rows, scoring the images of `column` with `model`.

    Built on `dataset.map(batched=True)`: computed now for a `Dataset` (cached like any `map`), lazily while
    iterating an `IterableDataset`. Rows keep their order and their other columns; `column` keeps its feature.

    Args:
        dataset: a `datasets.Dataset` or `IterableDataset`.
        model: a [`UniQAModel`].
        column: the image column: `datasets.Image` (decoded or not; it is read undecoded, so a corrupt image is an
            error row, not an exception), file paths, encoded bytes, PIL images or arrays.
        task, adapter, prompt_set: what to score, as in `model.score`.
        batch_size: rows per `map` batch and crops per forward pass.
        num_workers: image decoding and cropping threads (default: `min(4, CPU count)`).
        **options: more keyword arguments of `model.score`: `crop_mode`, `crops`, `max_side`, `seed`, `mos_range`,
            `dtype`, `device`, `compile`.

    Returns:
        The dataset with `score` (float32, higher is better, in `model.score_range(...)` or on `mos_range`;
        null where the row has none) and `error` (null, or the reason naming the file or the row: `row i` is the
        row's position in `dataset`).
    """
    from datasets import Dataset, Features, Image
    from datasets.fingerprint import generate_random_fingerprint

    features = dataset.features
    if features is not None:
        if column not in features:
            raise ValueError(f"the dataset has no column {column!r} (its columns: {', '.join(features)})")
        clash = [name for name in SCORE_COLUMNS if name in features]
        if clash:
            raise ValueError(f"the dataset already has a column {clash[0]!r}: remove or rename it before scoring")
    image_feature = features[column] if features is not None else None
    decoded = isinstance(image_feature, Image) and image_feature.decode
    if decoded:
        dataset = dataset.cast_column(column, Image(decode=False))
    request = model.resolve(task, adapter, prompt_set)
    options = {**options, "num_workers": num_workers}

    def score_batch(cells: list[Any], indices: list[int]) -> dict[str, list[Any]]:
        [(scores, errors)] = scored_rows(model, [(indices, cells)], request, batch_size, options)
        return {"score": scores, "error": errors}

    out_features = None if dataset.features is None else Features({**dataset.features, **score_features()})
    # a Dataset's map fingerprints its function; hashing a model is slow, and a retrained model must not hit a cache
    extra = {"new_fingerprint": generate_random_fingerprint()} if isinstance(dataset, Dataset) else {}
    scored = dataset.map(
        score_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        input_columns=[column],
        features=out_features,
        **extra,
    )
    return scored.cast_column(column, image_feature) if decoded else scored


# -------------------------------------------------------------------------------------------------------------
# `uniqa score --dataset`


def open_dataset(
    source: str, config: str | None, split: str, streaming: bool
) -> tuple[Dataset | IterableDataset, int | None]:
    """`source` (a `save_to_disk` folder, or anything `datasets.load_dataset` reads) -> `(split, rows if known)`."""
    import datasets

    if os.path.isdir(source) and any(
        os.path.exists(os.path.join(source, name)) for name in ("state.json", "dataset_dict.json")
    ):
        if config is not None:
            raise ValueError(f"{source}: --config does not apply to a save_to_disk folder")
        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{source}: no split {split!r} (its splits: {', '.join(loaded)})")
            loaded = loaded[split]
        return (loaded.to_iterable_dataset() if streaming else loaded), len(loaded)
    loaded = datasets.load_dataset(source, config, split=split, streaming=streaming)
    if isinstance(loaded, datasets.Dataset):
        return loaded, len(loaded)
    known = loaded.info.splits.get(split) if loaded.info.splits else None
    return loaded, (known.num_examples if known is not None and known.num_examples else None)


def check_image_column(features: Features | None, column: str) -> None:
    """Raise `ValueError` unless `column` holds images, encoded bytes or file paths (unknown features pass)."""
    from datasets import Image, Value

    if features is None:
        return
    if column not in features:
        raise ValueError(f"the dataset has no column {column!r} (its columns: {', '.join(features)})")
    feature = features[column]
    readable = isinstance(feature, Image) or (
        isinstance(feature, Value) and feature.dtype in ("string", "large_string", "binary", "large_binary")
    )
    if not readable:
        raise ValueError(f"column {column!r} holds {feature}, not images, image bytes or file paths (--image-column)")


def scored_batches(
    model: UniQAModel,
    batches: Iterable[pa.Table],
    column: str,
    row_numbers: Iterator[int],
    request: tuple[str, str | None, Any],
    batch_size: int,
    options: dict[str, Any],
) -> Iterator[tuple[pa.Table, list[float | None], list[str | None]]]:
    """Arrow batches of rows -> `(batch, scores, errors)`, within a budget of decoded pixels (see `scored_rows`).
    `row_numbers` names the rows in error messages."""
    pending: deque[pa.Table] = deque()

    def rows_and_cells() -> Iterator[tuple[list[int], list[Any]]]:
        for batch in batches:
            if batch.num_rows:
                pending.append(batch)
                yield list(itertools.islice(row_numbers, batch.num_rows)), batch.column(column).to_pylist()

    for scores, errors in scored_rows(model, rows_and_cells(), request, batch_size, options):
        yield pending.popleft(), scores, errors


def rechunk(tables: Iterable[pa.Table], size: int) -> Iterator[pa.Table]:
    """The rows of `tables`, in order, as tables of `size` rows (the last may be shorter)."""
    import pyarrow as pa

    buffer, count = [], 0
    for table in tables:
        buffer.append(table)
        count += table.num_rows
        while count >= size:
            joined = pa.concat_tables(buffer)
            yield joined.slice(0, size)
            buffer, count = [joined.slice(size)], count - size
    if count:
        yield pa.concat_tables(buffer)


def interleave(streams: Sequence[Iterable[pa.Table]]) -> Iterator[pa.Table]:
    """Rows dealt round-robin to `len(streams)` processes (row `i` to process `i % n`, as
    `split_dataset_by_node(strategy="examples")` deals them) back in their original order."""
    import pyarrow as pa

    for pieces in itertools.zip_longest(*(rechunk(stream, MERGE_ROWS) for stream in streams)):
        counts = [0 if piece is None else piece.num_rows for piece in pieces]
        if any(a < b for a, b in itertools.pairwise(counts)) or counts[0] - counts[-1] > 1:
            raise RuntimeError(f"the processes' parts do not fit a round-robin split (rows per process {counts})")
        starts = list(itertools.accumulate(counts, initial=0))
        order = [starts[r] + j for j in range(counts[0]) for r in range(len(counts)) if j < counts[r]]
        yield pa.concat_tables([piece for piece in pieces if piece is not None]).take(order)


def part_files(folder: str) -> list[str]:
    """A process's complete Parquet parts, in the order written."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".parquet"))


def read_parts(folder: str) -> Iterator[pa.Table]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in part_files(folder):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=MERGE_ROWS):
            yield pa.Table.from_batches([batch])


def write_part(folder: str, tables: list[pa.Table]) -> None:
    """Write `tables` as the folder's next part, whole or not at all (written aside, fsync'd, renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = os.path.join(folder, f"part-{len(part_files(folder)):08d}.parquet")
    pq.write_table(pa.concat_tables(tables), path + ".tmp")
    with open(path + ".tmp", "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)


def merge_parts(
    output: str, world: int, round_robin: bool, min_score: float | None, schema: pa.Schema, record: dict[str, Any]
) -> tuple[int, int, int]:
    """Process 0: every process's parts -> `output` in the dataset's order (only rows scoring at least `min_score`,
    if given), written aside and renamed; the parts are then removed. -> `(rows, failures, rows written)`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folders = [shard_path(output, rank, world, ".parts") for rank in range(world)]
    streams = [read_parts(folder) for folder in folders]
    tables = interleave(streams) if round_robin else itertools.chain.from_iterable(streams)
    rows = failures = written = 0
    with pq.ParquetWriter(output + ".tmp", schema) as writer:
        for table in tables:
            rows += table.num_rows
            failures += table.num_rows - table["error"].null_count
            if min_score is not None:
                table = table.filter(pc.greater_equal(table["score"], min_score))  # null scores are dropped
            written += table.num_rows
            writer.write_table(table.cast(schema))
        record = {**record, "rows": rows, "failures": failures, "rows_written": written}
        writer.add_key_value_metadata({RECORD_KEY: json.dumps(record)})
    os.replace(output + ".tmp", output)
    for folder in folders:
        shutil.rmtree(folder)
    return rows, failures, written


def split_round_robin(dataset: IterableDataset, rank: int, world: int) -> IterableDataset:
    """A streaming dataset's rows `rank::world`, with `datasets.distributed.split_dataset_by_node`."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    if "strategy" not in inspect.signature(split_dataset_by_node).parameters:
        raise ValueError(
            "--streaming with several processes needs split_dataset_by_node(strategy=...), which datasets "
            f"{datasets.__version__} lacks: upgrade datasets, or score without --streaming"
        )
    return split_dataset_by_node(dataset, rank, world, strategy="examples")


def run_record(args: argparse.Namespace, request: tuple[str, str | None, Any], run: str) -> dict[str, Any]:
    """What a run scores and how (`run`: the model and scoring options' fingerprint, as `uniqa score` records it
    for files): a resumed run must match it."""
    task, adapter, prompt_set = request
    return {
        "run": run,
        "dataset": args.dataset,
        "config": args.config,
        "split": args.split,
        "image_column": args.image_column,
        "task": task,
        "adapter": adapter,
        "prompt_set": prompt_set,
        "crop_mode": args.crop_mode,
        "crops": args.crops,
        "max_side": args.max_side,
        "seed": args.seed,
        "keep_images": args.keep_images,
    }


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    """`key 'old', now 'new'` for each entry of `wanted` that `stored` does not share."""
    changed = [key for key, value in wanted.items() if stored.get(key) != value]
    if len(changed) > 1:  # the run fingerprint follows from the options named beside it: name those alone
        changed = [key for key in changed if key != "run"]
    return ", ".join(f"{key} {stored.get(key)!r}, now {wanted[key]!r}" for key in changed)


def resume_problem(folders: Sequence[str], world: int, record: dict[str, Any]) -> str | None:
    """Why the parts `folders` of an interrupted run cannot be continued by this one, or `None`."""
    for folder in folders:
        processes = int(folder.rsplit("-of-", 1)[1].removesuffix(".parts"))
        if processes != world:
            return f"{folder} is from a run with {processes} processes: resume with {processes}, or start anew"
        try:
            with open(os.path.join(folder, "run.json")) as handle:
                stored = json.load(handle)
        except (OSError, ValueError) as error:
            return f"{folder}: unreadable run.json ({error}); start anew without --resume"
        if stored != record:
            return (
                f"{folder} was scored with other options ({differences(stored, record)}): resume with the same "
                "options, or write to a new --output"
            )
    return None


def finished_run(output: str, record: dict[str, Any]) -> int:
    """`--resume` of a run whose output is complete: check it is this run's and report -> the exit status."""
    import pyarrow.parquet as pq

    stored = json.loads((pq.read_metadata(output).metadata or {}).get(RECORD_KEY.encode(), b"null"))
    if not isinstance(stored, dict):
        raise ValueError(f"cannot resume: {output} was not written by `uniqa score --dataset`; write a new --output")
    if any(stored.get(key) != value for key, value in record.items()):
        raise ValueError(f"cannot resume: {output} was scored with other options ({differences(stored, record)})")
    print(f"uniqa: {output} is complete ({stored['rows']} rows): nothing to resume", file=sys.stderr)
    return 2 if stored["failures"] else 0


def score_dataset_command(args: argparse.Namespace) -> int:
    """`uniqa score --dataset`: score a dataset's images into `--output` (Parquet) -> the exit status (0: every
    row scored, 2: some rows have an error, 1: nothing done).

    The output keeps the dataset's columns (the image column only with `--keep-images`) and adds `score` and
    `error`, in the dataset's row order; `--min-score S` keeps only rows scoring at least S. Under `accelerate
    launch` / `torchrun`, process `r` of `n` scores a contiguous `1/n` of a `Dataset`, or rows `r::n` of a streamed
    one; each writes its own parts and process 0 merges them, so the output is the one a single process writes.
    """
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch.distributed as dist
    from datasets.distributed import split_dataset_by_node
    from datasets.table import embed_table_storage

    from .cli import check_device, load_model, score_options

    if args.inputs:
        raise ValueError("give image files or --dataset, not both")
    if args.decode == "processes":
        raise ValueError("--dataset decodes images in threads: drop --decode processes")
    if args.output is None:
        raise ValueError("--dataset needs --output, the Parquet file to write")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise ValueError(f"--output {args.output}: the folder {parent} does not exist")
    rank, world = distributed_world()
    if args.quiet:
        from transformers.utils import logging

        logging.disable_progress_bar()
        datasets.disable_progress_bars()
    check_device(args.device)
    if world > 1:
        args.device = join_process_group(args.device)
    column = args.image_column
    try:
        dataset, total = open_dataset(args.dataset, args.config, args.split, args.streaming)
    except (OSError, ValueError) as error:  # missing path or hub id, unknown split or config, unreadable files
        print(f"uniqa: cannot load dataset {args.dataset!r}: {error}", file=sys.stderr)
        return 1
    check_image_column(dataset.features, column)
    model = load_model(args)
    request = model.resolve(args.task, args.adapter, args.prompt_set)
    try:  # a precision or device that cannot run here fails in one line, before any work
        model.image_tower(args.dtype, args.device, args.compile)
    except (ImportError, RuntimeError) as error:
        raise ValueError(str(error)) from error
    options = score_options(args)
    record = run_record(args, request, run_fingerprint(model, options))
    found = sorted(glob.glob(glob.escape(args.output) + ".shard-*.parts"))
    if args.resume:
        if not found and os.path.exists(args.output):
            return finished_run(args.output, {**record, "min_score": args.min_score})
        problem = resume_problem(found, world, record)
        if problem:
            raise ValueError(f"cannot resume: {problem}")
    elif rank == 0:
        for stale in found:
            shutil.rmtree(stale)
    if world > 1:
        dist.barrier()
    folder = shard_path(args.output, rank, world, ".parts")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "run.json"), "w") as handle:
        json.dump(record, handle)
    done = sum(pq.read_metadata(path).num_rows for path in part_files(folder))

    if isinstance(dataset, datasets.Dataset):  # contiguous shards
        sizes = [len(split_dataset_by_node(dataset, r, world)) for r in range(world)]
        mine = split_dataset_by_node(dataset, rank, world).skip(done)
        rows, total = itertools.count(sum(sizes[:rank]) + done), sizes[rank]
    else:  # rows rank::world of the stream
        mine = dataset.skip(done * world)
        mine = split_round_robin(mine, rank, world) if world > 1 else mine
        rows = itertools.count(rank + done * world, world)
        total = None if total is None else len(range(rank, total, world))
    features = dataset.features
    out_features = None
    if features is not None:
        kept = {name: feature for name, feature in features.items() if name != column or args.keep_images}
        out_features = datasets.Features({**kept, **score_features()})

    def output_table(batch: pa.Table, scores: list[float | None], errors: list[str | None]) -> pa.Table:
        table = batch if args.keep_images else batch.drop_columns([column])
        table = table.append_column("score", pa.array(scores, pa.float32()))
        table = table.append_column("error", pa.array(errors, pa.string()))
        if out_features is None:
            return table
        table = table.cast(out_features.arrow_schema)
        return embed_table_storage(table) if args.keep_images else table  # image files' bytes into the rows

    batches = mine.with_format("arrow").iter(batch_size=args.batch_size)
    failures, buffered, count, last = 0, [], 0, time.monotonic()
    try:
        with tqdm(total=total, initial=done, unit="img", file=sys.stderr, disable=args.quiet or rank != 0) as progress:
            for batch, scores, errors in scored_batches(
                model, batches, column, rows, request, args.batch_size, options
            ):
                buffered.append(output_table(batch, scores, errors))
                count += batch.num_rows
                failures += sum(error is not None for error in errors)
                progress.update(batch.num_rows)
                if count >= PART_ROWS or time.monotonic() - last >= PART_SECONDS:
                    write_part(folder, buffered)
                    buffered, count, last = [], 0, time.monotonic()
            if buffered:
                write_part(folder, buffered)
    except KeyboardInterrupt:  # Ctrl-C: complete parts are kept (a part is written aside, then renamed)
        kept = sum(pq.read_metadata(path).num_rows for path in part_files(folder))
        print(
            f"uniqa: interrupted: {kept} rows are in {folder}; the same command with --resume scores the rest",
            file=sys.stderr,
        )
        return 130
    if world > 1:
        dist.barrier()
    status = 2 if failures else 0
    if rank == 0:
        if out_features is not None:
            schema = out_features.arrow_schema
        else:  # features unknown: the first part's, or the score columns alone when there were no rows
            parts = [path for r in range(world) for path in part_files(shard_path(args.output, r, world, ".parts"))]
            schema = pq.read_schema(parts[0]) if parts else score_features().arrow_schema
        round_robin = world > 1 and not isinstance(dataset, datasets.Dataset)
        record = {**record, "min_score": args.min_score}
        scored, failures, written = merge_parts(args.output, world, round_robin, args.min_score, schema, record)
        if args.min_score is not None:
            print(f"uniqa: kept {written} of {scored} rows scoring at least {args.min_score:g}", file=sys.stderr)
        if failures:
            print(f"uniqa: {failures} of {scored} rows could not be scored (see the error column)", file=sys.stderr)
        status = 2 if failures else 0
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return status
