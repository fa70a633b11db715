"""A generator of hostile and unusual image inputs, and what `uniqa score` must do with each.

`write_corpus(folder)` writes every case into `folder` (nothing binary is committed) and returns the cases. A case
either must be *scored* as the image `expected` (pixels an independent decoder would give, compared within
`tolerance` grey levels; `wrong` is what a careless loader would produce instead, so a test can show the two
differ) or must give a per-file *error* whose reason contains `reason`. docs/reliability.md has the same table.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

ORIENTATION = 0x0112  # EXIF tag


@dataclass
class Case:
    """One corpus entry: `inputs` are the CLI arguments it contributes (a duplicated path appears twice)."""

    name: str
    path: str
    expect: str  # "score" or "error"
    reason: str = ""
    expected: np.ndarray | None = None  # (H, W, 3) uint8, upright, as it should be scored
    tolerance: float = 0.0  # max mean absolute difference in grey levels (lossy formats)
    wrong: np.ndarray | None = None
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.inputs = self.inputs or (self.path,)


def pattern(width: int, height: int, seed: int = 0) -> np.ndarray:
    """`(height, width, 3)` uint8 test picture: red ramp along x, green along y, a blue checkerboard (orientation
    and colour errors change it)."""
    y, x = np.mgrid[0:height, 0:width]
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    blue = ((x // 8 + y // 8 + seed) % 2) * 180 + 30 * seed
    return np.stack([red, green, blue % 256], axis=-1).astype(np.uint8)


def png_bytes(
    width: int, height: int, bit_depth: int, color_type: int, raw: bytes, ihdr_crc: int | None = None
) -> bytes:
    """A PNG file from scanlines `raw` (each starting with its filter byte), with an optional wrong IHDR CRC."""

    def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
        crc = zlib.crc32(kind + data) if crc is None else crc
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header, ihdr_crc)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: int = 255) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255.0
    return np.round(rgb * a + background * (1 - a)).astype(np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1).astype(np.uint8)


def write_corpus(folder: Path) -> list[Case]:
    """Write every case into `folder` (created) and return them."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def file(name: str | bytes, data: bytes) -> str:
        path = os.path.join(os.fsencode(folder), os.fsencode(name))
        with open(path, "wb") as handle:
            handle.write(data)
        return os.fsdecode(path)

    def score(name: str, data: bytes, expected: np.ndarray, filename: str | bytes | None = None, **kwargs) -> None:
        path = file(filename or name, data)
        cases.append(Case(name, path, "score", expected=expected, **kwargs))

    def error(name: str, path: str, reason: str) -> None:
        cases.append(Case(name, path, "error", reason=reason))

    photo = pattern(48, 40)
    photo_png = _encoded(Image.fromarray(photo), "PNG")
    jpeg = _encoded(Image.fromarray(pattern(96, 80)), "JPEG", quality=95)

    # --- files that are not (whole) images
    error("empty.jpg", file("empty.jpg", b""), "empty file (0 bytes)")
    error("text.jpg", file("text.jpg", b"just some notes, not a photo\n"), "not an image: the file holds text")
    error("truncated.jpg", file("truncated.jpg", jpeg[: len(jpeg) // 2]), "truncated image data")
    big_png = _encoded(Image.fromarray(pattern(256, 256)), "PNG")
    error("truncated.png", file("truncated.png", big_png[: len(big_png) // 2]), "truncated image data")
    # JPEGs whose data end early but which a decoder still "decodes" (libjpeg only warns and fills in grey)
    eoi = b"\xff\xd9"
    error("truncated_closed.jpg", file("truncated_closed.jpg", jpeg[: len(jpeg) // 2] + eoi), "truncated image data")
    scan_end = len(jpeg) - len(eoi)  # Pillow writes the end marker right after the scan's data
    tail = jpeg[: scan_end - 3] + eoi  # only the last blocks decode wrong: the corner stays in colour, not grey
    error("truncated_tail.jpg", file("truncated_tail.jpg", tail), "truncated image data")
    sof = jpeg.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    height = struct.unpack(">H", jpeg[sof + 5 : sof + 7])[0]
    tall = jpeg[: sof + 5] + struct.pack(">H", 2 * height) + jpeg[sof + 7 :]
    error("tall_header.jpg", file("tall_header.jpg", tall), "truncated image data")
    progressive = _encoded(Image.fromarray(pattern(96, 80)), "JPEG", quality=95, subsampling=0, progressive=True)
    cut = progressive[: len(progressive) * 2 // 3] + eoi  # inside a refinement scan: blurred, not grey
    error("truncated_progressive.jpg", file("truncated_progressive.jpg", cut), "truncated image data")
    error(
        "corrupt_header.jpg",
        file("corrupt_header.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
        "not a recognised image format",
    )
    raw = b"".join(b"\x00" + row.tobytes() for row in photo)
    error("bad_crc.png", file("bad_crc.png", png_bytes(48, 40, 8, 2, raw, ihdr_crc=0)), "unknown or corrupt header")
    error("bomb.png", file("bomb.png", png_bytes(100_000, 100_000, 8, 2, b"\x00")), "decompression bomb")
    error("bomb_moderate.png", file("bomb_moderate.png", png_bytes(10_000, 10_000, 8, 0, b"\x00")), "over the limit")
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + bytes(64)
    heif_reason = "corrupt or unsupported" if "HEIF" in Image.OPEN else "HEIC/HEIF image: no HEIF decoder"
    error("photo.heic", file("photo.heic", heic), heif_reason)

    # --- colour modes and bit depths
    cmyk = Image.fromarray(photo).convert("CMYK")
    score("cmyk.jpg", _encoded(cmyk, "JPEG", quality=95, subsampling=0), photo, tolerance=3.0)
    grey16 = (np.linspace(0, 65535, 48 * 40).reshape(40, 48)).astype(np.uint16)
    score(
        "grey16.png",
        _encoded(Image.fromarray(grey16), "PNG"),
        _grey(np.round(grey16 / 257.0)),
        wrong=_grey(np.clip(grey16, 0, 255)),
    )
    dark16 = (np.arange(48 * 40).reshape(40, 48) % 256).astype(np.uint16)  # a 16-bit image below 256: near black
    score("dark16.png", _encoded(Image.fromarray(dark16), "PNG"), _grey(np.round(dark16 / 257.0)), wrong=_grey(dark16))
    rgb16 = (photo.astype(np.uint16) * 256 + 77).astype(">u2")  # 16-bit RGB: Pillow keeps the high byte
    raw16 = b"".join(b"\x00" + row.tobytes() for row in rgb16)
    score("rgb16.png", png_bytes(48, 40, 16, 2, raw16), photo)
    score("grey.png", _encoded(Image.fromarray(photo[..., 1]), "PNG"), _grey(photo[..., 1]))
    index = (np.arange(48 * 40).reshape(40, 48) // 7 % 4).astype(np.uint8)
    palette = [(0, 0, 255), (200, 30, 30), (30, 200, 30), (250, 250, 20)]
    indexed = Image.fromarray(index, "P")
    indexed.putpalette([v for colour in palette for v in colour])
    colours = np.array(palette, dtype=np.uint8)[index]
    on_white = np.where(index[..., None] == 0, np.uint8(255), colours)
    score("palette_transparent.png", _encoded(indexed, "PNG", transparency=0), on_white, wrong=colours)
    alpha = np.linspace(0, 255, 48 * 40).reshape(40, 48).astype(np.uint8)
    rgba = np.dstack([photo, alpha])
    score(
        "rgba.png", _encoded(Image.fromarray(rgba, "RGBA"), "PNG"), _composite(photo, alpha), tolerance=0.5, wrong=photo
    )
    grey_alpha = Image.fromarray(np.dstack([photo[..., 0], alpha]), "LA")
    score(
        "grey_alpha.png", _encoded(grey_alpha, "PNG"), _grey(_composite(photo[..., 0:1], alpha)[..., 0]), tolerance=0.5
    )

    # --- sizes
    score("one_pixel.png", _encoded(Image.fromarray(pattern(1, 1)), "PNG"), pattern(1, 1))
    score("tiny16.png", _encoded(Image.fromarray(pattern(16, 16)), "PNG"), pattern(16, 16))
    wide = pattern(10_000, 20)
    score("wide_10000x20.png", _encoded(Image.fromarray(wide), "PNG"), wide)

    # --- animation, orientation, containers
    frames = [index, (index + 1) % 4]
    gif_frames = []
    for frame in frames:
        image = Image.fromarray(frame, "P")
        image.putpalette([v for colour in palette for v in colour])
        gif_frames.append(image)
    gif = _encoded(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], duration=100, loop=0)
    score("animated.gif", gif, colours, wrong=np.array(palette, dtype=np.uint8)[frames[1]])
    second = pattern(48, 40, seed=1)
    webp_frames = [Image.fromarray(photo), Image.fromarray(second)]
    webp = _encoded(webp_frames[0], "WEBP", save_all=True, append_images=webp_frames[1:], lossless=True, duration=100)
    score("animated.webp", webp, photo, wrong=second)
    stored = pattern(96, 80)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # displayed rotated 90 degrees clockwise
    rotated = _encoded(Image.fromarray(stored), "JPEG", quality=95, subsampling=0, exif=exif)
    score("exif_rotated.jpg", rotated, np.rot90(stored, k=-1).copy(), tolerance=3.0, wrong=stored)
    score("progressive.jpg", progressive, pattern(96, 80), tolerance=3.0)
    grey_corner = pattern(96, 80)
    grey_corner[-32:, -32:] = 128  # a real flat grey corner, as a grey-filled truncated JPEG ends: still scored
    grey_jpeg = _encoded(Image.fromarray(grey_corner), "JPEG", quality=95, subsampling=0)
    score("grey_corner.jpg", grey_jpeg, grey_corner, tolerance=3.0)
    score("lossless.webp", _encoded(Image.fromarray(photo), "WEBP", lossless=True), photo)
    score("photo.tiff", _encoded(Image.fromarray(photo), "TIFF"), photo)
    score("photo.bmp", _encoded(Image.fromarray(photo), "BMP"), photo)
    avif = (
        _encoded(Image.fromarray(pattern(96, 80)), "AVIF", quality=95, subsampling="4:4:4")
        if features.check("avif")
        else b""
    )
    if avif:
        score("photo.avif", avif, pattern(96, 80), tolerance=4.0)
    else:  # a hand-made AVIF header: what a file from a phone looks like to a Pillow without AVIF support
        error("photo.avif", file("photo.avif", struct.pack(">I", 24) + b"ftypavif" + bytes(72)), "AVIF image")

    # --- the file system
    (folder / "folder.jpg").mkdir(exist_ok=True)
    error("folder.jpg", str(folder / "folder.jpg"), "is a directory")
    locked = file("locked.png", photo_png)
    os.chmod(locked, 0)
    if os.geteuid() == 0:  # root reads files whatever their permissions: the image is scored
        cases.append(Case("locked.png", locked, "score", expected=photo))
    else:
        error("locked.png", locked, "permission denied")
    link = folder / "dangling.png"
    if not link.is_symlink():
        link.symlink_to(folder / "deleted.png")
    error("dangling.png", str(link), "broken symbolic link")
    fifo = folder / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    error("pipe.png", str(fifo), "not a regular file")
    error("missing.png", str(folder / "missing.png"), "no such file")
    error("https://…/photo.jpg", "https://example.com/photo.jpg", "a https:// URL: only local files are read")
    error("file://…/photo.png", f"file://{folder}/photo.png", "a file:// URL: only local files are read")
    # a latin-1 name, not valid UTF-8: Python holds it as "caf\udce9.png" (a lone surrogate)
    score("non_utf8_name", photo_png, photo, filename=b"latin1-caf\xe9.png")
    score("unicode_name", photo_png, photo, filename="unicode ünïcødé 写真 \u2028.png")
    score("newline_name", photo_png, photo, filename="line\nbreak.png")
    score("long_name", photo_png, photo, filename="long_" + "x" * 241 + ".png")  # 250 bytes, under NAME_MAX 255
    error("too_long.png", str(folder / ("y" * 300 + ".png")), "file name too long")
    duplicate = file("duplicate.png", photo_png)
    cases.append(Case("duplicate.png", duplicate, "score", expected=photo, inputs=(duplicate, duplicate)))
    return cases
