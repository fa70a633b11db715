"""UniQA demo (a Hugging Face Space): image quality and aesthetics scores in the browser.

    python spaces/app.py [--model DIR] [--port 7860]

The model is `--model`, else `$UNIQA_MODEL`, else the bundled `models/uniqa-tiny` of a source checkout. The app
binds 127.0.0.1 unless `$GRADIO_SERVER_NAME` says otherwise (a hosted Space sets it). All scoring goes through
`UniQAModel.score` (quality maps: `UniQAModel.score_map`); this file only validates inputs and lays out results.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import functools
import itertools
import os
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import torch
from gradio.processing_utils import save_file_to_cache
from gradio.utils import get_upload_folder
from PIL import Image
from tqdm.auto import tqdm

from modeling_uniqa import UniQAModel, load_image
from modeling_uniqa.configuration_uniqa import LEVEL_NAMES
from modeling_uniqa.tools.batch_scoring import IMAGE_SUFFIXES, RowWriter, pixel_chunks, result_row, score_chunk
from modeling_uniqa.tools.cli import default_model
from modeling_uniqa.tools.quality_map import render_quality_map

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
MAX_FILE_MB = 20  # per uploaded file (also enforced by the server: launch(max_file_size=...))
MAX_PIXELS = 40_000_000  # per image, checked from the header before decoding
MAX_BATCH_FILES = 500  # rows per Batch run (files + zip members)
MAX_COMPARE_FILES = 24
MAX_REQUEST_MB = 1024  # per Batch run: bytes uploaded plus bytes unpacked from zips, all files together
MAX_TEXT_CHARS = 4000  # per text field (the custom prompts), checked before any other work
UNZIP_CHUNK = 2**16  # zip entries are decompressed this many bytes at a time
DELETE_CACHE = (600, 3600)  # every 10 minutes, Gradio deletes the uploads and results older than an hour
BATCH_CHUNK = 16  # Batch: at most this many images decoded and scored at a time
CHUNK_PIXELS = 40_000_000  # Compare and Batch: decoded pixels one request holds at a time (a larger image goes alone)
MAX_JOBS = 2  # requests running at once, all tabs together; each holds at most max(CHUNK_PIXELS, MAX_PIXELS) decoded
SCORING_QUEUE = "scoring"  # the concurrency group of every tab's event, so that MAX_JOBS bounds them all together

# Zero-shot attribute cues. Sharpness and noise come from the groups of the paper's 20-prompt ensemble (read from
# the model's `ensemble20` prompt set); the others are this app's antonym pairs, worst first. Every cue is scored
# with evenly spaced levels, so it reads 0 (first prompt) .. 1 (last prompt).
ENSEMBLE_CUES = {"sharpness": "sharpness", "low noise": "noise"}  # cue -> group of `ensemble20`
ANTONYM_CUES: dict[str, list[str]] = {
    "exposure": ["a badly exposed photo, too dark or too bright", "a well-exposed photo"],
    "colour": ["a photo with dull, washed-out colours", "a photo with vivid, natural colours"],
    "contrast": ["a flat, low-contrast photo", "a photo with crisp contrast"],
    "compression": ["a photo with blocky compression artifacts", "a clean photo without compression artifacts"],
    "lighting": ["a photo taken in poor light", "a photo taken in good light"],
}
CUE_NAMES = (*ENSEMBLE_CUES, *ANTONYM_CUES)
TQDM_PROGRESS = gr.Progress(track_tqdm=True)  # the Batch tab's progress bar follows its tqdm loop


class InputError(ValueError):
    """A user input that cannot be scored; its message is shown to the user as it is."""


def error_message(error: Exception) -> str:
    """An error's message without server paths: an `OSError` names its file by its base name only."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{Path(os.fsdecode(error.filename)).name}: {error.strerror}"
    return str(error)


def user_errors(function: Callable) -> Callable:
    """Turn `InputError`/`ValueError`/`OSError` raised by a handler into a `gr.Error` (a message without server
    paths, never a stack trace)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, OSError) as error:
            raise gr.Error(error_message(error), print_exception=False) from error

    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# What the model offers


@dataclass(frozen=True)
class Scorer:
    """One way of scoring: a trained adapter or a zero-shot prompt set (keyword arguments of `UniQAModel.score`)."""

    key: str
    label: str
    task: str
    adapter: str | None = None
    prompt_set: str | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"task": self.task, "adapter": self.adapter, "prompt_set": self.prompt_set}


def available_scorers(model: UniQAModel) -> dict[str, Scorer]:
    """The model's adapters (first) and zero-shot prompt sets, keyed `adapter:NAME` / `prompts:NAME`."""
    config = model.config
    scorers: dict[str, Scorer] = {}
    for name, meta in config.adapters.items():
        dataset = f", trained on {meta['dataset']}" if meta.get("dataset") else ""
        scorers[f"adapter:{name}"] = Scorer(
            f"adapter:{name}", f"adapter '{name}' ({meta['task']}{dataset})", meta["task"], adapter=name
        )
    for name, prompt_set in config.prompt_sets.items():
        default = ", default" if config.task_prompt_sets.get(prompt_set["task"]) == name else ""
        scorers[f"prompts:{name}"] = Scorer(
            f"prompts:{name}",
            f"zero-shot '{name}' ({prompt_set['task']}{default})",
            prompt_set["task"],
            prompt_set=name,
        )
    return scorers


def default_scorer(model: UniQAModel, scorers: dict[str, Scorer], task: str) -> str | None:
    """Key of the model's first adapter for `task`, else of the task's default prompt set, else None."""
    adapters = [s.key for s in scorers.values() if s.task == task and s.adapter]
    prompt_set = model.config.task_prompt_sets.get(task)
    if adapters:
        return adapters[0]
    return f"prompts:{prompt_set}" if f"prompts:{prompt_set}" in scorers else None


def level_names(count: int) -> list[str]:
    """Names of `count` levels, worst first: bad ... perfect for the usual five."""
    return list(LEVEL_NAMES) if count == len(LEVEL_NAMES) else [f"level {k + 1}" for k in range(count)]


# ----------------------------------------------------------------------------------------------------------------
# Input validation


def image_pixels(path: str | os.PathLike, name: str | None = None) -> int:
    """Validate an uploaded file (type, size, pixel count) from its header, without decoding it; its pixel count.

    Raises `InputError` naming the file and the reason.
    """
    path = Path(path)
    name = name or path.name
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        kinds = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
        raise InputError(f"{name}: not an image file type ({path.suffix or 'no extension'}); use one of {kinds}")
    size_mb = path.stat().st_size / 2**20
    if size_mb > MAX_FILE_MB:
        raise InputError(f"{name}: file is {size_mb:.1f} MB, the limit is {MAX_FILE_MB} MB")
    try:
        with Image.open(path) as header:
            width, height = header.size
    except Image.DecompressionBombError as error:
        raise InputError(f"{name}: too many pixels ({error})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{name}: not a readable image ({type(error).__name__})") from error
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, the limit is {MAX_PIXELS / 1e6:.0f}"
        )
    return width * height


def check_image_file(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """Validate an uploaded file with `image_pixels` and load it as upright RGB with `load_image`.

    Raises `InputError` naming the file and the reason.
    """
    image_pixels(path, name)
    path = Path(path)
    try:
        return load_image(path)
    except ValueError as error:
        raise InputError(str(error).replace(str(path), name or path.name)) from error


def checked_image(**kwargs) -> gr.Image:
    """A `gr.Image` whose undecodable uploads give a readable message instead of a preprocessing error.

    (Its `preprocess` is wrapped on the instance: subclassing a Gradio component would make Gradio write a
    `.pyi` stub beside this file.)
    """
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError) as error:
            name = getattr(payload, "orig_name", None) or "the upload"
            raise gr.Error(f"{name}: not a readable image ({type(error).__name__})", print_exception=False) from error

    image.preprocess = checked
    return image


def required_image(path: str | None) -> Image.Image:
    if not path:
        raise InputError("Upload, paste or pick an image first.")
    return check_image_file(path)


def uploaded_files(files: Sequence[Any] | None) -> list[Path]:
    """Gradio's file values (paths or objects with `.name`) -> paths."""
    return [Path(getattr(f, "name", f)) for f in files or []]


class UploadBudget:
    """The bytes one Batch run may still read and unpack: the size of each uploaded file and every byte decompressed
    from its zips count, whatever the archives declare (`MAX_REQUEST_MB` for all the files together)."""

    def __init__(self) -> None:
        self.left = int(MAX_REQUEST_MB * 2**20)

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise InputError(f"over the limit of {MAX_REQUEST_MB} MB uploaded and unpacked per run, all files together")


ZIP_DECOMPRESSORS: dict[int, Callable[[], Any]] = {
    zipfile.ZIP_DEFLATED: lambda: zlib.decompressobj(-zlib.MAX_WBITS),
    zipfile.ZIP_BZIP2: bz2.BZ2Decompressor,
}


def zip_entry_pieces(archive: Any, member: zipfile.ZipInfo) -> Iterator[bytes]:
    """The bytes of one entry of the open zip file `archive`, decompressed as a stream in pieces of at most
    `UNZIP_CHUNK` bytes (stored, deflate or bzip2 entries).

    No size the archive declares is trusted: compressed bytes are read `UNZIP_CHUNK` at a time from the entry's local
    header on, and each decompressor call returns at most `UNZIP_CHUNK` bytes, so nothing is decompressed ahead of
    the reader, who stops when its budget is spent. Raises `InputError` with the reason the entry cannot be read.
    """
    if member.flag_bits & 0x1:
        raise InputError("encrypted zip entry (password-protected)")
    method = member.compress_type
    if method != zipfile.ZIP_STORED and method not in ZIP_DECOMPRESSORS:
        kind = zipfile.compressor_names.get(method, f"method {method}")
        raise InputError(f"unsupported zip compression ({kind}); store, deflate or bzip2 entries are read")
    archive.seek(member.header_offset)
    header = archive.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise InputError("corrupt zip entry (no local file header)")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    archive.seek(member.header_offset + 30 + name_length + extra_length)
    left = member.compress_size

    def read() -> bytes:
        nonlocal left
        data = archive.read(min(UNZIP_CHUNK, left))
        left = left - len(data) if data else 0
        return data

    if method == zipfile.ZIP_STORED:
        while piece := read():
            yield piece
        return
    decompressor = ZIP_DECOMPRESSORS[method]()
    pending = b""
    while not decompressor.eof:
        if not pending and getattr(decompressor, "needs_input", True):  # bzip2 says so; zlib keeps a tail
            pending = read()
        try:
            piece = decompressor.decompress(pending, UNZIP_CHUNK)
        except (zlib.error, OSError) as error:
            raise InputError(f"corrupt zip entry ({error})") from error
        pending = getattr(decompressor, "unconsumed_tail", b"")
        if not piece and not pending and not left and not decompressor.eof:
            raise InputError("truncated zip entry")
        yield piece


def unzip_entry(archive: Any, member: zipfile.ZipInfo, target: Path, budget: UploadBudget) -> None:
    """Decompress one zip entry into `target` as a stream, charging each piece to `budget`; an entry that unpacks
    to more than `MAX_FILE_MB` or past the budget is refused as soon as it gets there. Raises `InputError`."""
    size = crc = 0
    with open(target, "wb") as out:
        for piece in zip_entry_pieces(archive, member):
            budget.spend(len(piece))
            size += len(piece)
            if size > MAX_FILE_MB * 2**20:
                raise InputError(f"unpacks to more than {MAX_FILE_MB} MB, the limit per file")
            out.write(piece)
            crc = zlib.crc32(piece, crc)
    if size != member.file_size or crc != member.CRC:
        raise InputError("corrupt zip entry (its size or checksum does not match the archive's record)")


def upload_entries(files: Sequence[Path], workdir: Path) -> Iterator[tuple[str, Path | None, str | None]]:
    """Uploaded images and zips -> `(display name, path or None, error or None)`, one per image or zip entry, zip
    entries unpacked into `workdir` as they are drawn (never under their own names: nothing is written outside it).

    A file or entry that cannot be used gets its own error and the others go on; the whole run is charged to one
    `UploadBudget`.
    """
    budget = UploadBudget()
    for file_index, path in enumerate(files):
        try:
            budget.spend(path.stat().st_size)
        except (InputError, OSError) as error:
            yield path.name, None, error_message(error)
            continue
        if path.suffix.lower() != ".zip":
            yield path.name, path, None
            continue
        try:
            with open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
                members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
                for member_index, member in enumerate(members):
                    display = f"{path.name}/{member.filename}"
                    suffix = Path(member.filename).suffix.lower()
                    if suffix not in IMAGE_SUFFIXES:
                        yield display, None, f"not an image file type ({suffix or 'no extension'})"
                        continue
                    target = workdir / f"{file_index:04d}-{member_index:06d}{suffix}"
                    try:
                        unzip_entry(raw, member, target, budget)
                    except InputError as error:
                        yield display, None, str(error)
                        continue
                    yield display, target, None
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            yield path.name, None, f"cannot read zip ({error_message(error)})"


def parse_prompt_pairs(text: str) -> dict[str, list[str]]:
    """Lines `[name:] worse prompt | better prompt` -> `{name: [worse, better]}` (an ad-hoc prompt set's groups).
    A text over `MAX_TEXT_CHARS` is refused before it is read."""
    text = text or ""
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the prompts are {len(text)} characters long, the limit is {MAX_TEXT_CHARS}")
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prompts = [p.strip() for p in line.split("|")]
        name, colon, worse = prompts[0].partition(":")
        if colon:
            prompts[0] = worse.strip()
        if len(prompts) != 2 or not all(prompts):
            raise InputError(
                f"line {number}: write 'worse prompt | better prompt' (optionally 'name: ...'), got {line!r}"
            )
        groups[name.strip() if colon else f"pair {len(groups) + 1}"] = prompts
    if not groups:
        raise InputError("Write at least one prompt pair: 'a blurry photo | a sharp photo'.")
    if len(groups) > 10:
        raise InputError(f"{len(groups)} prompt pairs: the limit is 10")
    return groups


# ----------------------------------------------------------------------------------------------------------------
# Handlers


class UniQASpace:
    """The app's handlers around one loaded model. Each returns the values of its tab's output components."""

    def __init__(self, model: UniQAModel):
        self.model = model
        self.scorers = available_scorers(model)

    def scorer(self, key: str | None, task: str | None = None) -> Scorer:
        key = key or default_scorer(self.model, self.scorers, task or "quality")
        if key not in self.scorers:
            raise InputError(f"unknown scorer {key!r}; this model offers: {', '.join(self.scorers)}")
        return self.scorers[key]

    def describe(self, scorer: Scorer, score: float) -> dict[str, Any]:
        low, high = self.model.score_range(**scorer.kwargs)
        return {"score": score, "range": [round(low, 4), round(high, 4)], "scorer": scorer.label}

    def cues(self, image: Image.Image) -> dict[str, float]:
        """Zero-shot attribute cues, each in [0, 1] (0 = its first prompt, 1 = its last)."""
        ensemble = self.model.config.prompt_sets.get("ensemble20", {}).get("groups", {})
        prompt_sets = [{"groups": {cue: ensemble[group] for cue, group in ENSEMBLE_CUES.items() if group in ensemble}}]
        prompt_sets.append({"groups": ANTONYM_CUES})
        values: dict[str, float] = {}
        for prompt_set in prompt_sets:
            if not prompt_set["groups"]:
                continue
            details = self.model.score(image, prompt_set=prompt_set, return_details=True)
            group_values = details.level_probs[0] @ torch.tensor(details.levels)
            values.update({g: round(float(v), 4) for g, v in zip(details.groups, group_values, strict=True)})
        return values

    @user_errors
    def score_image(
        self, image_path: str | None, quality_key: str | None = None, aesthetics_key: str | None = None
    ) -> tuple[float | None, float | None, str, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """Score tab -> quality, aesthetics (None where the model has no scorer), a summary, the level
        probabilities of the quality score (mean over prompt groups), the attribute cues, and everything as JSON."""
        image = required_image(image_path)
        result: dict[str, Any] = {}
        level_probs = pd.DataFrame({"level": [], "probability": []})
        for task, key in (("quality", quality_key), ("aesthetics", aesthetics_key)):
            if not key and default_scorer(self.model, self.scorers, task) is None:
                continue
            scorer = self.scorer(key, task)
            details = self.model.score(image, **scorer.kwargs, return_details=True)
            result[task] = self.describe(scorer, round(float(details.scores[0]), 4))
            if task == "quality" or "quality" not in result:
                probs = details.level_probs[0].mean(dim=0)
                result["level_probabilities"] = {
                    name: round(float(p), 4) for name, p in zip(level_names(len(probs)), probs, strict=True)
                }
                level_probs = pd.DataFrame(
                    {"level": list(result["level_probabilities"]), "probability": probs.tolist()}
                )
        result["cues"] = self.cues(image)
        cues = pd.DataFrame({"cue": list(result["cues"]), "value": list(result["cues"].values())})
        lines = [
            f"**{task.capitalize()}: {info['score']:.4f}** on a {info['range'][0]:g}–{info['range'][1]:g} scale "
            f"(higher is better) · {info['scorer']}"
            for task, info in result.items()
            if task in ("quality", "aesthetics")
        ]
        summary = "  \n".join(lines + [f"Image: {image.width}×{image.height} px"])
        quality = result.get("quality", {}).get("score")
        aesthetics = result.get("aesthetics", {}).get("score")
        return quality, aesthetics, summary, level_probs, cues, result

    @user_errors
    def compare(
        self, files: Sequence[Any] | None, key: str | None = None
    ) -> tuple[list[tuple[str, str]], pd.DataFrame]:
        """Compare tab -> a gallery ranked best first (captions: rank, score, name) and the ranking as a table.

        Every header is checked before anything is decoded; images are then decoded and scored in `pixel_chunks`,
        each chunk dropped before the next is decoded."""
        paths = uploaded_files(files)
        if len(paths) < 2:
            raise InputError("Upload at least two images to compare.")
        if len(paths) > MAX_COMPARE_FILES:
            raise InputError(f"{len(paths)} images: the limit is {MAX_COMPARE_FILES} (use the Batch tab for more)")
        scorer = self.scorer(key)
        pixels = {path: image_pixels(path) for path in paths}
        scores: list[float] = []
        for chunk in pixel_chunks(paths, MAX_COMPARE_FILES, CHUNK_PIXELS, pixels.__getitem__):
            scores += self.model.score([check_image_file(path) for path, _ in chunk], **scorer.kwargs).tolist()
        ranked = sorted(zip(scores, paths, strict=True), key=lambda item: -item[0])
        gallery = [(str(path), f"#{rank} · {score:.4f} · {path.name}") for rank, (score, path) in enumerate(ranked, 1)]
        table = pd.DataFrame(
            {
                "rank": range(1, len(ranked) + 1),
                "file": [path.name for _, path in ranked],
                "score": [round(score, 4) for score, _ in ranked],
            }
        )
        return gallery, table

    @user_errors
    def batch(
        self, files: Sequence[Any] | None, key: str | None = None, progress: gr.Progress = TQDM_PROGRESS
    ) -> tuple[pd.DataFrame, str]:
        """Batch tab: images and zips -> a table with a row per image (the `uniqa score` CSV columns; unreadable
        files get their reason in `error`) and the path of the same table as CSV (in Gradio's cache, which
        `DELETE_CACHE` empties). Images are decoded and scored in `pixel_chunks` of at most `BATCH_CHUNK`, one chunk
        held at a time. The run's unpacked files are deleted when it ends, whether it succeeds or fails."""
        paths = uploaded_files(files)
        if not paths:
            raise InputError("Upload images or a zip of images.")
        scorer = self.scorer(key)
        request = self.model.resolve(**scorer.kwargs)
        workdir = Path(tempfile.mkdtemp(prefix="uniqa-batch-"))
        try:
            with contextlib.closing(upload_entries(paths, workdir)) as stream:
                entries = list(itertools.islice(stream, MAX_BATCH_FILES + 1))
            if len(entries) > MAX_BATCH_FILES:
                gr.Warning(f"Only the first {MAX_BATCH_FILES} images are scored.")
                del entries[MAX_BATCH_FILES:]
            pixels: list[int] = []  # declared by each image's header: 0 where the entry has an error
            for index, (name, path, error) in enumerate(entries):
                try:
                    pixels.append(0 if error else image_pixels(path, name))
                except InputError as problem:
                    entries[index] = (name, None, str(problem).removeprefix(f"{name}: "))
                    pixels.append(0)
            rows: list[dict[str, Any]] = []
            planned = pixel_chunks(range(len(entries)), BATCH_CHUNK, CHUNK_PIXELS, pixels.__getitem__)
            for chunk in tqdm([[entries[i] for i, _ in run] for run in planned], desc="scoring", unit="chunk"):
                images: dict[int, Image.Image] = {}  # drops the previous chunk's images before any is decoded
                errors = {index: error for index, (_, _, error) in enumerate(chunk) if error is not None}
                for index, (name, path, error) in enumerate(chunk):
                    if error is None:
                        try:
                            images[index] = check_image_file(path, name)
                        except InputError as problem:
                            errors[index] = str(problem).removeprefix(f"{name}: ")
                scores = score_chunk(self.model, images, errors, request, BATCH_CHUNK, {})
                errors = {i: e.removeprefix(f"{i}: ") for i, e in errors.items()}  # score_chunk's "key: reason"
                for index, (name, _, _) in enumerate(chunk):
                    rows.append(result_row(name, request, scores.get(index), errors.get(index)))
            csv_path = workdir / "uniqa_scores.csv"
            with RowWriter("csv", str(csv_path)) as writer:
                for row in rows:
                    writer.write(row)
            return pd.DataFrame(rows, columns=list(RowWriter.fields)), save_file_to_cache(csv_path, get_upload_folder())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    @user_errors
    def custom(self, image_path: str | None, pairs_text: str) -> tuple[float, pd.DataFrame, dict[str, Any]]:
        """Custom prompts tab: antonym pairs -> the zero-shot score in [0, 1] (mean over pairs; 1 = every better
        prompt wins) and each pair's value."""
        groups = parse_prompt_pairs(pairs_text)
        image = required_image(image_path)
        details = self.model.score(image, prompt_set={"groups": groups}, return_details=True)
        values = details.level_probs[0] @ torch.tensor(details.levels)
        table = pd.DataFrame(
            {
                "pair": list(groups),
                "worse prompt": [p[0] for p in groups.values()],
                "better prompt": [p[1] for p in groups.values()],
                "value": [round(float(v), 4) for v in values],
            }
        )
        score = round(float(details.scores[0]), 4)
        return (
            score,
            table,
            {"score": score, "range": [0.0, 1.0], "pairs": dict(zip(groups, table["value"], strict=True))},
        )

    @user_errors
    def quality_map(self, image_path: str | None, key: str | None = None) -> tuple[Image.Image, str]:
        """Quality map tab -> the image dimmed under its map of window scores (`UniQAModel.score_map`, drawn by
        `render_quality_map`: purple = the map's worst windows, yellow = its best) and a summary."""
        image = required_image(image_path)
        scorer = self.scorer(key)
        score_map = self.model.score_map(image, **scorer.kwargs)
        rows, cols = score_map.scores.shape
        summary = (
            f"**Score: {score_map.score:.4f}** · {rows}×{cols} windows of {score_map.window} px, stride "
            f"{score_map.stride} · window scores {float(score_map.scores.min()):.4f} (purple) to "
            f"{float(score_map.scores.max()):.4f} (yellow) · {scorer.label}"
        )
        return render_quality_map(image, score_map), summary


# ----------------------------------------------------------------------------------------------------------------
# Layout


def example_images() -> list[str]:
    return [str(p) for p in sorted(EXAMPLES_DIR.glob("*.png"))]


def scorer_dropdown(space: UniQASpace, task: str | None, label: str) -> gr.Dropdown:
    scorers = [s for s in space.scorers.values() if task is None or s.task == task]
    default = default_scorer(space.model, space.scorers, task or "quality")
    return gr.Dropdown(
        choices=[(s.label, s.key) for s in scorers],
        value=default,
        label=label,
        visible=bool(scorers),
        interactive=True,
    )


def build_demo(model: UniQAModel, model_name: str = "") -> gr.Blocks:
    """The Gradio app for `model` (queued: at most `MAX_JOBS` requests run at a time, all tabs together)."""
    space = UniQASpace(model)
    examples = example_images()
    with gr.Blocks(title="UniQA — image quality and aesthetics", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# UniQA — image quality and aesthetics\n"
            "CLIP-based quality and aesthetics scores (Zhou et al., "
            "[arXiv 2406.01069](https://arxiv.org/abs/2406.01069)); **higher is better**. "
            f"Model: `{model_name or model.name_or_path}`. Scores are comparable within one scorer, "
            "not across scorers or models."
        )
        with gr.Tab("Score"):
            with gr.Row():
                with gr.Column():
                    image = checked_image(
                        type="filepath",
                        image_mode=None,
                        format="png",
                        sources=["upload", "clipboard"],
                        label="Image (upload or paste)",
                        elem_id="score-image",
                    )
                    quality_scorer = scorer_dropdown(space, "quality", "Quality scorer")
                    aesthetics_scorer = scorer_dropdown(space, "aesthetics", "Aesthetics scorer")
                    score_button = gr.Button("Score", variant="primary", elem_id="score-button")
                    if examples:
                        gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples")
                with gr.Column():
                    with gr.Row():
                        quality = gr.Number(label="Quality", elem_id="quality-score", interactive=False)
                        aesthetics = gr.Number(
                            label="Aesthetics",
                            elem_id="aesthetics-score",
                            interactive=False,
                            visible=aesthetics_scorer.visible,
                        )
                    summary = gr.Markdown(elem_id="score-summary")
                    levels = gr.BarPlot(
                        x="level",
                        y="probability",
                        sort=level_names(len(model.config.levels)),
                        y_lim=[0, 1],
                        label="Level-prompt probabilities of the quality score (mean over prompt groups)",
                        height=250,
                    )
                    cues = gr.BarPlot(
                        x="cue",
                        y="value",
                        sort=list(CUE_NAMES),
                        y_lim=[0, 1],
                        label="Zero-shot attribute cues (0 = worse prompt wins, 1 = better prompt wins)",
                        height=250,
                    )
                    with gr.Accordion("All results (JSON)", open=False):
                        details = gr.JSON(elem_id="score-json")
            score_button.click(
                space.score_image,
                inputs=[image, quality_scorer, aesthetics_scorer],
                outputs=[quality, aesthetics, summary, levels, cues, details],
                api_name="score",
                concurrency_id=SCORING_QUEUE,
            )
        with gr.Tab("Compare"):
            compare_files = gr.File(
                file_count="multiple", file_types=["image"], label=f"Images (2–{MAX_COMPARE_FILES})"
            )
            compare_scorer = scorer_dropdown(space, None, "Scorer")
            compare_button = gr.Button("Rank", variant="primary")
            gallery = gr.Gallery(label="Best first", columns=4, height="auto")
            ranking = gr.Dataframe(label="Ranking", interactive=False)
            compare_button.click(
                space.compare,
                inputs=[compare_files, compare_scorer],
                outputs=[gallery, ranking],
                api_name="compare",
                concurrency_id=SCORING_QUEUE,
            )
        with gr.Tab("Batch"):
            batch_files = gr.File(
                file_count="multiple",
                file_types=["image", ".zip"],
                label=f"Images or zips of images (up to {MAX_BATCH_FILES} images)",
            )
            batch_scorer = scorer_dropdown(space, None, "Scorer")
            batch_button = gr.Button("Score all", variant="primary")
            table = gr.Dataframe(label="Scores (unreadable files: reason in `error`)", interactive=False)
            csv_file = gr.File(label="CSV")
            batch_button.click(
                space.batch,
                inputs=[batch_files, batch_scorer],
                outputs=[table, csv_file],
                api_name="batch",
                concurrency_id=SCORING_QUEUE,
            )
        with gr.Tab("Custom prompts"):
            with gr.Row():
                with gr.Column():
                    custom_image = checked_image(
                        type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"], label="Image"
                    )
                    pairs = gr.Textbox(
                        lines=4,
                        max_length=MAX_TEXT_CHARS,
                        label="Antonym prompt pairs, one per line: [name:] worse prompt | better prompt",
                        value="light: a dark photo | a bright photo\nmood: a gloomy photo | a cheerful photo",
                    )
                    custom_button = gr.Button("Score with my prompts", variant="primary")
                    if examples:
                        gr.Examples(examples=[[p] for p in examples], inputs=[custom_image], label="Examples")
                with gr.Column():
                    custom_score = gr.Number(label="Score (0–1, mean over pairs)", interactive=False)
                    custom_table = gr.Dataframe(label="Per pair (1 = better prompt wins)", interactive=False)
                    custom_json = gr.JSON(visible=False)
            custom_button.click(
                space.custom,
                inputs=[custom_image, pairs],
                outputs=[custom_score, custom_table, custom_json],
                api_name="custom",
                concurrency_id=SCORING_QUEUE,
            )
        with gr.Tab("Quality map"):
            with gr.Row():
                with gr.Column():
                    map_image = checked_image(
                        type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"], label="Image"
                    )
                    map_scorer = scorer_dropdown(space, None, "Scorer")
                    map_button = gr.Button("Map", variant="primary")
                    if examples:
                        gr.Examples(examples=[[p] for p in examples], inputs=[map_image], label="Examples")
                with gr.Column():
                    map_picture = gr.Image(type="pil", format="png", label="Where the image loses quality")
                    map_summary = gr.Markdown()
            map_button.click(
                space.quality_map,
                inputs=[map_image, map_scorer],
                outputs=[map_picture, map_summary],
                api_name="map",
                concurrency_id=SCORING_QUEUE,
            )
    return demo.queue(default_concurrency_limit=MAX_JOBS, max_size=64)


def launch_options() -> dict[str, Any]:
    """`demo.launch` options shared by `main` and the tests: limits, theme, served folders."""
    return {
        "max_file_size": f"{MAX_FILE_MB}mb",
        "theme": gr.themes.Soft(),
        "allowed_paths": [str(EXAMPLES_DIR)],
        "show_error": True,
    }


def load_model(path: str | os.PathLike) -> UniQAModel:
    try:
        return UniQAModel.from_pretrained(path, use_safetensors=True).eval()
    except (OSError, ValueError) as error:
        raise SystemExit(f"spaces/app.py: cannot load a UniQA model from {path}: {error}") from error


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="UniQA Gradio demo")
    parser.add_argument("--model", help="model folder or hub id (default: $UNIQA_MODEL, else the bundled model)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    path = args.model or default_model()
    demo = build_demo(load_model(path), str(path))
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=args.port, **launch_options()
    )


if __name__ == "__main__":
    main(sys.argv[1:])
