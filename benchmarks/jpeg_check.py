"""The JPEG completeness check (`_check_jpeg_complete`): what it costs, what it catches, and its false alarms.

    .venv/bin/python benchmarks/jpeg_check.py [--runs 15]

- **Cost**: `load_image` with the check vs Pillow's plain full decode of the same bytes (`Image.open` + `load`), and
  the check alone, medians of `--runs` interleaved runs, on a 4000x3000 baseline JPEG, the same progressive, and a
  500x500 LIVEC photo (../shared/data/livec_jpg; else a 500x500 pattern).
- **False alarms**: every LIVEC photo, plus generated complete JPEGs of every kind (sizes 1x1 to 4000x3000,
  qualities 1 to 100, 4:4:4 / 4:2:2 / 4:2:0, greyscale, CMYK, progressive, optimised tables, restart markers), each
  also with bytes after its end marker: how many `load_image` refuses as truncated (should be 0).
- **Catches**: JPEGs cut 1, 2, 5, 10 and 50 bytes before their end marker and closed by a new one (what a
  truncated download closed by a careless tool looks like: Pillow decodes all of them without an error), on the
  first 100 LIVEC photos and on small generated JPEGs of 8 kinds; and every cut position in the last 80 bytes of
  those small JPEGs. Counts how many `load_image` refuses as truncated.
Writes `benchmarks/results/jpeg-check.json`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from run import LIVEC, machine_name

from modeling_uniqa.image_processing_uniqa import ImageReadError, _check_jpeg_complete, load_image

RESULT = Path(__file__).resolve().parent / "results" / "jpeg-check.json"
CUTS = (1, 2, 5, 10, 50)
KINDS = {  # mode, Pillow's JPEG options
    "4:2:0": ("RGB", {}),
    "4:4:4": ("RGB", {"subsampling": 0}),
    "4:2:2": ("RGB", {"subsampling": 1}),
    "grey": ("L", {}),
    "CMYK": ("CMYK", {}),
    "progressive": ("RGB", {"progressive": True}),
    "restart every row": ("RGB", {"restart_marker_rows": 1}),
    "restart every block": ("RGB", {"restart_marker_blocks": 1}),
}


def textured(width: int, height: int, seed: int) -> Image.Image:
    """A smooth gradient with noise: photo-like content that keeps every block busy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width, 1), y * 255 / max(height, 1), (x + y) * 127 / max(width + height, 1)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def encode(image: Image.Image, mode: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def refused_as_truncated(data: bytes) -> bool:
    try:
        load_image(data)
    except ImageReadError as error:
        if "truncated image data" in str(error):
            return True
        raise
    return False


def cut(data: bytes, count: int) -> bytes:
    """`data` without the last `count` bytes of its entropy-coded data, closed by an end-of-image marker."""
    return data[: len(data) - 2 - count] + b"\xff\xd9"


def plain_decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def check_seconds(data: bytes) -> float:
    """Seconds `_check_jpeg_complete` takes on an already decoded JPEG."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        start = time.perf_counter()
        _check_jpeg_complete(image, data)
        return time.perf_counter() - start


def cost(data: bytes, runs: int) -> dict[str, float]:
    plain, loaded, check = [], [], []
    for _ in range(runs):  # interleaved, so the machine's load affects all three alike
        start = time.perf_counter()
        plain_decode(data)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        load_image(data)
        loaded.append(time.perf_counter() - start)
        check.append(check_seconds(data))
    result = {
        "plain_decode_ms": statistics.median(plain) * 1000,
        "load_image_ms": statistics.median(loaded) * 1000,
        "check_ms": statistics.median(check) * 1000,
    }
    result["check_over_plain_decode"] = result["check_ms"] / result["plain_decode_ms"]
    return {key: round(value, 3) for key, value in result.items()}


def generated_complete() -> tuple[list[tuple[str, bytes]], list[str]]:
    """Complete JPEGs of every kind, size and quality, each also with bytes after its end marker; and the
    combinations Pillow could not encode."""
    sizes = [(1, 1), (8, 8), (17, 33), (35, 36), (96, 80), (500, 375), (1021, 767), (4000, 3000)]
    qualities = (1, 10, 50, 75, 90, 100)
    made, unencodable = [], []
    for (width, height), (kind, (mode, options)) in itertools.product(sizes, KINDS.items()):
        image = textured(width, height, width * height)
        for quality in qualities if width * height <= 1_000_000 else (90,):
            for optimize in (False, True):
                name = f"{width}x{height} {kind} q{quality}{' optimised' if optimize else ''}"
                try:
                    data = encode(image, mode, quality=quality, optimize=optimize, **options)
                except OSError:  # libjpeg refuses some combinations (e.g. optimised tables of a tiny progressive)
                    unencodable.append(name)
                    continue
                made += [(name, data), (f"{name} + trailing bytes", data + b"\x00trailing")]
    return made, unencodable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    livec = sorted(LIVEC.glob("*.JPG")) if LIVEC.is_dir() else []
    big = textured(4000, 3000, 0)
    photo = livec[0].read_bytes() if livec else encode(textured(500, 500, 1), "RGB", quality=90)
    costs = {
        "4000x3000 baseline": cost(encode(big, "RGB", quality=90), args.runs),
        "4000x3000 progressive": cost(encode(big, "RGB", quality=90, progressive=True), args.runs),
        f"500x500 {'LIVEC ' + livec[0].name if livec else 'pattern'}": cost(photo, args.runs),
    }
    print(json.dumps(costs, indent=1))

    livec_alarms = [path.name for path in livec if refused_as_truncated(path.read_bytes())]
    generated, unencodable = generated_complete()
    generated_alarms = [name for name, data in generated if refused_as_truncated(data)]

    small = {kind: encode(textured(96, 80, 7), mode, quality=90, **options) for kind, (mode, options) in KINDS.items()}
    cut_sources = [(path.name, path.read_bytes()) for path in livec[:100]] + list(small.items())
    caught = {count: sum(refused_as_truncated(cut(data, count)) for _, data in cut_sources) for count in CUTS}
    sweep = [(kind, count) for kind, data in small.items() for count in range(1, 81) if count < len(data) - 300]
    missed_in_sweep = [
        f"{kind}, cut {count}" for kind, count in sweep if not refused_as_truncated(cut(small[kind], count))
    ]
    result = {
        "machine": machine_name(),
        "runs": args.runs,
        "cost": costs,
        "false_alarms": {
            "livec_photos": len(livec),
            "livec_refused": livec_alarms,
            "generated_jpegs": len(generated),
            "generated_refused": generated_alarms,
            "not_encodable_by_pillow": unencodable,
        },
        "cuts_closed_by_an_end_marker": {
            "sources": f"{min(len(livec), 100)} LIVEC photos + 96x80 JPEGs of {len(small)} kinds ({', '.join(small)})",
            "per_cut": {str(count): f"{caught[count]} of {len(cut_sources)} refused" for count in CUTS},
            "sweep_last_80_bytes_of_the_small_jpegs": f"{len(sweep) - len(missed_in_sweep)} of {len(sweep)} refused",
            "sweep_missed": missed_in_sweep,
        },
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("false_alarms", "cuts_closed_by_an_end_marker")}, indent=1))


if __name__ == "__main__":
    main()
