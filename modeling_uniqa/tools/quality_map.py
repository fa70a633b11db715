"""`uniqa map`: where an image loses quality, drawn as a heat map over the image (PNG), with the raw window scores.

The scores come from `UniQAModel.score_map` (see [`ScoreMap`] for the geometry); this module only draws them, with
Pillow and numpy, so it works with the base install. The Space reuses `render_quality_map`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # torch and transformers load with the command, not with `uniqa --help`
    from ..image_processing_uniqa import ImageInput
    from ..scoring_uniqa import ScoreMap

# Viridis at 0, 1/4, 1/2, 3/4 and 1 (perceptually ordered, readable with colour-vision deficiencies): the worst
# window of a map is purple, the best yellow.
COLOUR_STOPS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
COLOUR_WEIGHT = 0.55  # the overlay: 55% colour over 45% of the image


def colourize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped), any shape `S` -> uint8 RGB colours of shape `S + (3,)`, purple (0) to yellow (1)."""
    position = np.clip(values, 0.0, 1.0) * (len(COLOUR_STOPS) - 1)
    lower = np.minimum(position.astype(int), len(COLOUR_STOPS) - 2)
    fraction = (position - lower)[..., None]
    colours = COLOUR_STOPS[lower] * (1 - fraction) + COLOUR_STOPS[lower + 1] * fraction
    return np.round(colours).astype(np.uint8)


def pixel_scores(score_map: ScoreMap) -> np.ndarray:
    """`(height, width)` float32 over the original image (`score_map.image_size`): at each pixel, the mean score of
    the windows that cover it (computed on the analysed image, then resized bilinearly)."""
    width, height = score_map.analysed_size
    sums = np.zeros((height, width), dtype=np.float64)
    counts = np.zeros((height, width), dtype=np.float64)
    window = score_map.window
    for row, top in enumerate(score_map.tops):
        for col, left in enumerate(score_map.lefts):
            sums[top : top + window, left : left + window] += float(score_map.scores[row, col])
            counts[top : top + window, left : left + window] += 1
    dense = Image.fromarray((sums / counts).astype(np.float32), mode="F")
    if dense.size != score_map.image_size:
        dense = dense.resize(score_map.image_size, Image.BILINEAR)
    return np.asarray(dense)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def render_quality_map(
    image: ImageInput, score_map: ScoreMap, value_range: tuple[float, float] | None = None
) -> Image.Image:
    """The image dimmed under its quality map, as an RGB image of the image's own size.

    Each pixel is coloured by the mean score of the windows covering it, from `value_range = (low, high)` — by
    default the map's own lowest and highest window scores — purple (low, worse) to yellow (high, better). A colour
    bar along the bottom edge is labelled with that range; the overall score (`score_map.score`) sits in the top-left
    corner. `image` is the one the map was made from (a path, PIL image or array, loaded upright as RGB).
    """
    from ..image_processing_uniqa import load_image

    image = load_image(image)
    if image.size != score_map.image_size:
        raise ValueError(f"the image is {image.size[0]}x{image.size[1]}, the map was made from {score_map.image_size}")
    scores = score_map.scores.numpy()
    low, high = value_range if value_range is not None else (float(scores.min()), float(scores.max()))
    dense = pixel_scores(score_map)
    unit = (dense - low) / (high - low) if high > low else np.full_like(dense, 0.5)
    blended = COLOUR_WEIGHT * colourize(unit) + (1 - COLOUR_WEIGHT) * np.asarray(image, dtype=np.float64)
    result = Image.fromarray(np.round(blended).astype(np.uint8))

    width, height = result.size
    font_size = max(10, round(min(width, height) / 24))
    margin = max(2, font_size // 3)
    font = _font(font_size)
    draw = ImageDraw.Draw(result)
    label = f"score {score_map.score:.4f}"
    box = draw.textbbox((2 * margin, 2 * margin), label, font=font)
    draw.rectangle((box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin), fill=(20, 20, 20))
    draw.text((2 * margin, 2 * margin), label, fill=(255, 255, 255), font=font)

    low_label, high_label = f"{low:.4g}", f"{high:.4g}"
    low_width = draw.textlength(low_label, font=font)
    high_width = draw.textlength(high_label, font=font)
    panel_top = height - font_size - 2 * margin
    draw.rectangle((0, panel_top, width, height), fill=(20, 20, 20))
    bar_left = round(low_width) + 2 * margin
    bar_right = max(bar_left + 1, width - round(high_width) - 2 * margin)
    bar_top, bar_bottom = panel_top + margin, height - margin
    gradient = colourize(np.linspace(0.0, 1.0, bar_right - bar_left))
    result.paste(Image.fromarray(np.repeat(gradient[None], bar_bottom - bar_top, axis=0)), (bar_left, bar_top))
    text_top = panel_top + margin
    draw.text((margin, text_top), low_label, fill=(255, 255, 255), font=font)
    draw.text((width - margin - high_width, text_top), high_label, fill=(255, 255, 255), font=font)
    return result


def write_raw(score_map: ScoreMap, path: Path) -> None:
    """The window scores `(rows, cols)`: `.npy` (float32), or `.csv` (one line per row, the geometry in a comment)."""
    scores = score_map.scores.numpy()
    if path.suffix == ".npy":
        np.save(path, scores)
        return
    header = (
        f"window scores, rows x cols = {scores.shape[0]} x {scores.shape[1]}; window {score_map.window} px, stride "
        f"{score_map.stride}, image {score_map.image_size[0]}x{score_map.image_size[1]} analysed at "
        f"{score_map.analysed_size[0]}x{score_map.analysed_size[1]}; lefts {score_map.lefts}; tops {score_map.tops}"
    )
    np.savetxt(path, scores, fmt="%.6f", delimiter=",", header=header)


def output_paths(inputs: list[str], output: str) -> list[Path]:
    """Where each input's PNG goes: `output` itself for one input and an `output` ending in `.png`; otherwise
    `output/<stem>_map.png`, numbered (`<stem>-2_map.png`) where stems repeat."""
    if output.lower().endswith(".png"):
        if len(inputs) != 1:
            raise ValueError(f"--output {output} names one PNG for {len(inputs)} images; give a folder instead")
        return [Path(output)]
    folder, taken, paths = Path(output), set(), []
    for item in inputs:
        stem, number = Path(item).stem, 1
        name = f"{stem}_map.png"
        while name in taken:
            number += 1
            name = f"{stem}-{number}_map.png"
        taken.add(name)
        paths.append(folder / name)
    return paths


def map_command(args: argparse.Namespace) -> int:
    """`uniqa map`: one heat-map PNG (and with `--raw`, the numbers) per input; exit 2 if any input failed."""
    from .batch_scoring import expand_inputs
    from .cli import load_model

    paths = expand_inputs(args.inputs)
    if not paths:
        print("uniqa map: no input images", file=sys.stderr)
        return 2
    try:
        targets = output_paths(paths, args.output)
    except ValueError as error:
        print(f"uniqa map: {error}", file=sys.stderr)
        return 1
    model = load_model(args)
    model.resolve(args.task, args.adapter, args.prompt_set)  # an unknown adapter or prompt set fails before any work
    options = {"window": args.window, "stride": args.stride, "max_windows": args.max_windows, "max_side": args.max_side}
    options |= {"task": args.task, "adapter": args.adapter, "prompt_set": args.prompt_set}
    options |= {"batch_size": args.batch_size, "dtype": args.dtype, "device": args.device}
    value_range = tuple(args.range) if args.range else None
    failures = 0
    for path, target in zip(paths, targets, strict=True):
        try:
            image = model.image_processor.load_image(path)
            score_map = model.score_map(image, **options)
        except (ValueError, OSError) as error:
            reason = str(error)
            print(f"uniqa map: {reason if reason.startswith(path) else f'{path}: {reason}'}", file=sys.stderr)
            failures += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        render_quality_map(image, score_map, value_range).save(target)
        written = [str(target)]
        if args.raw:
            write_raw(score_map, target.with_suffix(f".{args.raw}"))
            written.append(str(target.with_suffix(f".{args.raw}")))
        rows, cols = score_map.scores.shape
        print(
            f"{path}: score {score_map.score:.4f}, {rows}x{cols} windows of {score_map.window} px (stride "
            f"{score_map.stride}) -> {', '.join(written)}"
        )
    if failures:
        print(f"uniqa map: {failures} of {len(paths)} inputs failed", file=sys.stderr)
    return 2 if failures else 0


def add_map_parser(commands: argparse._SubParsersAction, tasks: Sequence[str]) -> None:
    """Register `uniqa map` on the `uniqa` command's subparsers (`tasks`: the `--task` choices)."""
    parser = commands.add_parser("map", help="quality maps: where an image loses quality, as heat-map PNGs")
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument(
        "--output", required=True, help="OUT.png (one image) or a folder (written as <stem>_map.png, created)"
    )
    parser.add_argument(
        "--raw",
        nargs="?",
        const="npy",
        choices=["npy", "csv"],
        help="also write the window scores beside each PNG (default format: npy)",
    )
    parser.add_argument("--model", help="model folder or hub id (default: $UNIQA_MODEL or the bundled model)")
    parser.add_argument("--task", choices=tasks, help="default: quality, or the adapter's task")
    parser.add_argument("--adapter", help="trained adapter name (default: zero-shot prompts)")
    parser.add_argument("--prompt-set", help="zero-shot prompt set (see `uniqa info`)")
    parser.add_argument("--window", type=int, help="window side in pixels (default: the model's crop size)")
    parser.add_argument("--stride", type=int, help="largest step between windows (default: half the window)")
    parser.add_argument(
        "--max-windows", type=int, default=256, help="downscale larger images until this many windows cover them"
    )
    parser.add_argument("--max-side", type=int, help="downscale images whose longer side exceeds this first")
    parser.add_argument(
        "--range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="fixed colour scale (default: each map's own lowest..highest window score)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="vision tower precision (default: fp32)")
    parser.add_argument("--device", help="where the vision tower runs, e.g. cuda, cpu (default: cpu)")
    parser.set_defaults(func=map_command)
