"""Image loading and test-time cropping for UniQA.

UniQA scores 224x224 windows of the un-resized image (docs/method.md, "Test-time crops"). `UniQAImageProcessor`
turns any image into such crops, deterministically by default, with CLIP's normalisation.
"""

from __future__ import annotations

import errno
import io
import math
import os
import re
import stat
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_MODES = ("grid", "random", "center")
MAX_CROP_SIZE, MAX_CROPS = 4_096, 1_024  # bounds on a model folder's settings, checked before any work

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8.

    uint16 is always divided by 257 (a dark 16-bit image stays dark); other integer types are taken as 8-bit when
    their maximum is at most 255, as 16-bit (divided by 257) when it is at most 65535, and otherwise as spanning
    their type's whole range (divided by (type maximum + 1) / 256: a 32-bit image's brightest value maps to 255);
    negative values become 0. Floats with a maximum <= 1 are taken as [0, 1], NaN as 0; an infinite value is a
    `ValueError`. Booleans map to 0/255.
    """
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if np.isinf(array).any():
            raise ValueError(f"float image holds infinite values ({array.dtype}): pixels must be finite")
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    peak = int(array.max(initial=0))
    if array.dtype == np.uint16 or 255 < peak <= 65535:
        divisor = 257.0
    elif peak > 65535:
        divisor = (int(np.iinfo(array.dtype).max) + 1) / 256.0
    else:
        divisor = 1.0
    return np.clip(array / divisor + 0.5, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent images (RGBA, LA, PA, palette with transparency) are composited on `background`;
    16-bit and 32-bit grey levels are scaled, not clipped; CMYK and YCbCr use Pillow's conversion.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_8bit(np.asarray(image)), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


# ISO-BMFF brands (bytes 8-12 of the file) of formats Pillow may lack a decoder for.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _sniff(source: str | bytes) -> str | None:
    """Name what a file (its path) or encoded image (its bytes) Pillow cannot identify holds, from its first bytes:
    `"empty"`, `"heif"`, `"avif"`, `"jxl"`, `"text"` or `None`."""
    if isinstance(source, bytes):
        head = source[:512]
    else:
        with open(source, "rb") as handle:
            head = handle.read(512)
    if not head:
        return "empty"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "heif" if brand in _HEIF_BRANDS else "avif" if brand in _AVIF_BRANDS else None
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "jxl"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if b"\x00" in head else "text"


def _register_heif_plugin() -> bool:
    """Register pillow-heif's opener if it is installed and not registered yet; True if HEIF can now be read."""
    if "HEIF" in Image.OPEN:
        return False  # registered already, so it is not the missing piece
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return "HEIF" in Image.OPEN


_UNSUPPORTED = {
    "empty": "empty file (0 bytes)",
    "text": "not an image: the file holds text",
    "heif": "HEIC/HEIF image: no HEIF decoder is installed (`pip install pillow-heif` adds one)",
    "avif": "AVIF image: this Pillow has no AVIF decoder (upgrade Pillow or install an AVIF plugin)",
    "jxl": "JPEG XL image: unsupported format (no decoder)",
}


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


class _NotRegularFileError(OSError):
    """A path that exists but is not a regular file or a folder."""


class ImageReadError(ValueError):
    """An input that cannot be read as an image; the message names the file and the reason."""


def _open_error_reason(path: str | bytes, error: BaseException) -> str:
    """A short, readable reason why `path` (or encoded image bytes) could not be read as an image."""
    if isinstance(error, FileNotFoundError):
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)!r})"
        url = _URL.match(path)
        if url:
            fix = "give the path itself" if url.group(1).lower() == "file" else "download the image first"
            return f"a {url.group(1)}:// URL: only local files are read ({fix})"
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        return "file name too long"
    if isinstance(error, Image.DecompressionBombError):
        return f"refused as a possible decompression bomb: {error}"
    if isinstance(error, UnidentifiedImageError):
        kind = _sniff(path)
        return _UNSUPPORTED.get(kind, "not a recognised image format (unknown or corrupt header)")
    if isinstance(error, _NotRegularFileError):
        return "not a regular file (a pipe, socket or device)"
    if isinstance(error, OSError) and "truncated" in str(error).lower():
        return f"truncated image data ({error})"
    return f"corrupt or unsupported image data ({type(error).__name__}: {error})"


# A marker that ends a scan's entropy-coded data: 0xFF followed by neither a stuffed 0x00, a restart marker nor fill.
_SCAN_END = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")
# Bytes a decoder reads as entropy-coded data (no 0xFF). The first bit is 1, so a scan lacking even one bit of its
# last code decodes it differently from libjpeg's fill of zero bits.
_FILLER = b"\xa5\x3c\xc3\x96\x69\x0f\x5a" * 40


def _with_filler_after_scans(data: bytes) -> bytes | None:
    """The JPEG `data` with `_FILLER`, the restart marker the scan would expect next and `_FILLER` again inserted at
    the end of every scan's entropy-coded data (before the marker that ends it and any 0xFF fill bytes before that
    marker), walking the marker segments from the start; `None` if the structure cannot be followed. The restart
    marker makes a scan cut at the end of a restart interval read filler too: there a decoder skips to the next
    restart marker."""
    parts, start, position = [], 0, 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0xD9:  # end of image: the first frame is complete
            break
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        segment_end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker != 0xDA:
            position = segment_end
            continue
        end = _SCAN_END.search(data, segment_end)
        if end is None:
            return None
        stop = end.start()
        while stop > segment_end and data[stop - 1] == 0xFF:  # a cut that left a lone 0xFF: fill, not data
            stop -= 1
        restart = bytes((0xFF, 0xD0 + len(_RESTART.findall(data, segment_end, stop)) % 8))
        parts += [data[start:stop], _FILLER, restart, _FILLER]
        start, position = stop, end.start()
    if not parts:
        return None
    parts.append(data[start:])
    return b"".join(parts)


def _check_jpeg_complete(opened: Image.Image, source: str | bytes) -> None:
    """Raise if a decoded JPEG's data ended before its last pixels (cut short but closed by an end marker, or a
    header declaring more rows than the data hold): libjpeg only warns, Pillow silences the warning, and the missing
    part is decoded as flat grey (every sample 128; 127 in inverted CMYK), as blur in a progressive JPEG, or, when
    only the last bytes are gone, as slightly wrong last blocks.

    Every JPEG is decoded a second time, at full size, with filler bytes at the end of every scan: a complete scan
    ignores them, a short one decodes them into the bits it lacks, so the pixels change exactly when missing data
    mattered. Nothing cheaper is exact: a reduced-scale decode drops the coefficients that a cut in the last block
    damages, and libjpeg reads ahead of the bits it uses, so running out of data proves nothing."""
    if not isinstance(source, bytes):
        with open(source, "rb") as handle:
            source = handle.read()
    filled = _with_filler_after_scans(source)
    if filled is None:
        return
    try:
        with Image.open(io.BytesIO(filled)) as check:
            check.load()
            width, height = opened.size
            bands = [(0, top, width, min(height, top + 64)) for top in range(0, height, 64)]  # no full-size diff copy
            same_shape = check.size == opened.size and check.mode == opened.mode
            changed = same_shape and any(check.crop(box).tobytes() != opened.crop(box).tobytes() for box in bands)
    except Exception:  # the filled copy is only a probe: a failure to decode it proves nothing
        return
    if changed:
        raise OSError(
            "image file is truncated: its JPEG data end before the image does (a decoder fills in the rest: grey, "
            "blurred or wrong pixels)"
        )


def _open_source(source: str | bytes, background: tuple[int, int, int]) -> Image.Image:
    """Decode the first frame of an image file (its path) or encoded image (its bytes) fully, upright, as RGB;
    refuse images over the pixel limit."""
    if not isinstance(source, bytes):
        mode = os.stat(source).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", source)
        if not stat.S_ISREG(mode):  # opening a FIFO would block forever
            raise _NotRegularFileError(source)
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
        limit = Image.MAX_IMAGE_PIXELS
        width, height = opened.size
        if limit and width * height > limit:
            raise Image.DecompressionBombError(
                f"{width}x{height} = {width * height} pixels, over the limit of {limit} "
                "(PIL.Image.MAX_IMAGE_PIXELS; raise it, or set it to None, for larger trusted images)"
            )
        opened.seek(0)
        opened.load()
        if opened.format in ("JPEG", "MPO"):
            _check_jpeg_complete(opened, source)
        image = ImageOps.exif_transpose(opened)
        image.load()
    return to_rgb(image, background)


def load_image(image: ImageInput, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Load a path, encoded image bytes (a file's contents), PIL image or array as an upright 8-bit RGB PIL image.

    Paths and bytes are decoded fully (so a truncated file fails here) and EXIF orientation is applied; animated
    files (GIF, WebP, APNG) give their first frame. Any file that cannot be read raises an `ImageReadError` (a
    `ValueError`) that names the file (bytes: no name) and the reason, including images over Pillow's
    decompression-bomb limit `PIL.Image.MAX_IMAGE_PIXELS` (refused before decoding) and formats without an installed
    decoder (HEIC without `pillow-heif`). Arrays: `(H, W)`, `(H, W, 1|3|4)`; uint8, uint16 or floats in [0, 1].
    """
    if isinstance(image, (str, os.PathLike, bytes)):
        source = image if isinstance(image, bytes) else os.fspath(image)
        name = "" if isinstance(image, bytes) else f"{source}: "
        try:
            return _open_source(source, background)
        except UnidentifiedImageError as error:
            if _sniff(source) == "heif" and _register_heif_plugin():
                return load_image(source, background)
            raise ImageReadError(f"{name}cannot read image: {_open_error_reason(source, error)}") from error
        except Exception as error:  # any decoder failure becomes a per-file error, never a crash of the batch
            raise ImageReadError(f"{name}cannot read image: {_open_error_reason(source, error)}") from error
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"array image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"array image is empty: {array.shape[1]}x{array.shape[0]} pixels (shape {array.shape})")
        return to_rgb(Image.fromarray(_to_8bit(array)), background)
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"PIL image is empty: {image.width}x{image.height} pixels")
        return to_rgb(ImageOps.exif_transpose(image), background)
    raise TypeError(
        f"unsupported image type {type(image).__name__}: pass a path, encoded bytes, a PIL image or a numpy array"
    )


def window_positions(extent: int, window: int, count: int) -> list[int]:
    """Start offsets of `count` evenly spaced windows of side `window` along an axis of `extent` pixels, the first at
    0 and the last ending at `extent` (rounded to whole pixels, duplicates dropped; `window <= extent`)."""
    return sorted({round(v) for v in np.linspace(0, extent - window, count)})


class UniQAImageProcessor(BaseImageProcessor):
    r"""
    Turns images into normalised `crop_size` crops for UniQA.

    Args:
        crop_size (`int`, defaults to 224): side of the square crops (the vision tower's input size).
        image_mean, image_std (`tuple[float]`): per-channel normalisation of pixels in [0, 1] (CLIP's).
        crop_mode (`str`, defaults to `"grid"`): `"grid"` — evenly spaced windows over the whole image,
            deterministic; `"random"` — the paper's random windows, seeded per image by its content and `seed`;
            `"center"` — one centre window.
        crops (`int`, defaults to 9): crops per image; a grid uses `ceil(sqrt(crops))` positions per axis
            (fewer where the image is no larger than a crop along that axis).
        max_side (`int`, *optional*): downscale images whose longer side exceeds it before cropping.
        background (`tuple[int]`, defaults to white): colour transparent images are composited on.

    Images smaller than a crop are upscaled (bicubic) so their short side equals `crop_size`; an image of exactly
    `crop_size` x `crop_size` is used as it is.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        crop_size: int = 224,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        crop_mode: str = "grid",
        crops: int = 9,
        max_side: int | None = None,
        background: Sequence[int] = (255, 255, 255),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.crop_mode = crop_mode
        self.crops = int(crops)
        self.max_side = max_side
        self.background = [int(v) for v in background]
        self._validate()

    def _validate(self) -> None:
        """Refuse settings that would hang, allocate without bound or give NaN scores, naming the field."""
        if not 1 <= self.crop_size <= MAX_CROP_SIZE:
            raise ValueError(f"crop_size = {self.crop_size}: must be from 1 to {MAX_CROP_SIZE}")
        if not 1 <= self.crops <= MAX_CROPS:
            raise ValueError(f"crops = {self.crops}: must be from 1 to {MAX_CROPS}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode = {self.crop_mode!r}: must be one of {CROP_MODES}")
        if self.max_side is not None and not (isinstance(self.max_side, int) and self.max_side >= 1):
            raise ValueError(f"max_side = {self.max_side!r}: must be a positive integer or null")
        for name, values in (("image_mean", self.image_mean), ("image_std", self.image_std)):
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} = {values}: must be 3 finite numbers")
        if not all(v > 0 for v in self.image_std):
            raise ValueError(f"image_std = {self.image_std}: must be positive (it divides the pixels)")
        if len(self.background) != 3 or not all(0 <= v <= 255 for v in self.background):
            raise ValueError(f"background = {self.background}: must be 3 values in 0..255")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `BaseImageProcessor.from_pretrained`; a malformed or absurd `preprocessor_config.json` raises a
        `ValueError` that names the file and the field."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            where = os.path.join(os.fspath(pretrained_model_name_or_path), "preprocessor_config.json")
            raise ValueError(f"{where}: {error}") from error

    def load_image(self, image: ImageInput) -> Image.Image:
        """See [`load_image`]; uses this processor's background colour."""
        return load_image(image, tuple(self.background))

    def resize_for_crops(self, image: Image.Image, max_side: int | None) -> Image.Image:
        """Downscale to `max_side` (if set) and upscale images smaller than a crop."""
        width, height = image.size
        if max_side and max(width, height) > max_side:
            ratio = max_side / max(width, height)
            width, height = max(1, round(width * ratio)), max(1, round(height * ratio))
        if min(width, height) < self.crop_size:
            ratio = self.crop_size / min(width, height)
            width, height = max(self.crop_size, round(width * ratio)), max(self.crop_size, round(height * ratio))
            if width * height > Image.MAX_IMAGE_PIXELS:  # e.g. 100000x2: the upscale alone would take gigabytes
                raise ValueError(
                    f"aspect ratio too extreme to crop: {image.size[0]}x{image.size[1]} would be upscaled to "
                    f"{width}x{height}, over PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS})"
                )
        if (width, height) != image.size:
            image = image.resize((width, height), Image.BICUBIC)
        return image

    def crop_boxes(
        self, image: Image.Image, crop_mode: str, crops: int, seed: int, content_seeded: bool = True
    ) -> list[tuple[int, int]]:
        """Top-left corners `(left, top)` of the crops of an image already sized by `resize_for_crops`. Random
        windows are drawn from `seed` and, if `content_seeded`, the image's content; without it, images of one size
        get the same windows for the same seed (e.g. distortions of one photo)."""
        width, height = image.size
        size = self.crop_size
        if crop_mode == "center":
            return [((width - size) // 2, (height - size) // 2)]
        if crop_mode == "grid":
            per_axis = max(1, math.ceil(math.sqrt(crops)))
            lefts, tops = window_positions(width, size, per_axis), window_positions(height, size, per_axis)
            return [(left, top) for top in tops for left in lefts]
        if crop_mode == "random":
            rng = np.random.default_rng([seed, zlib.crc32(image.tobytes())] if content_seeded else [seed])
            lefts = rng.integers(0, width - size + 1, size=crops)
            tops = rng.integers(0, height - size + 1, size=crops)
            return [(int(left), int(top)) for left, top in zip(lefts, tops, strict=True)]
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, not {crop_mode!r}")

    def crop_image(
        self,
        image: ImageInput,
        crop_mode: str | None = None,
        crops: int | None = None,
        max_side: int | None = None,
        seed: int = 0,
        normalize: bool = True,
        content_seeded: bool = True,
    ) -> torch.Tensor:
        """One image -> `(n_crops, 3, crop_size, crop_size)` float32, normalised; with `normalize=False`, the raw
        uint8 crops (4x less to move to a GPU; finish with [`~UniQAImageProcessor.normalize`] there).
        `content_seeded`: see [`~UniQAImageProcessor.crop_boxes`]."""
        crop_mode = crop_mode or self.crop_mode
        crops = crops or self.crops
        image = self.resize_for_crops(self.load_image(image), max_side if max_side is not None else self.max_side)
        size = self.crop_size
        boxes = self.crop_boxes(image, crop_mode, crops, seed, content_seeded)
        # cut by Pillow, window by window: no full-size array copy of the image (3 bytes a pixel) is made
        windows = np.stack([np.asarray(image.crop((left, top, left + size, top + size))) for left, top in boxes])
        windows = torch.from_numpy(np.ascontiguousarray(windows.transpose(0, 3, 1, 2)))
        return self.normalize(windows) if normalize else windows

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 crops `(N, 3, S, S)` -> float32 `(pixels / 255 - mean) / std`, on the crops' device."""
        std = torch.tensor(self.image_std, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
        mean = torch.tensor(self.image_mean, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
        return pixels.float() * (1.0 / (255.0 * std)) - mean / std

    def preprocess(
        self,
        images: ImageInput | Sequence[ImageInput],
        crop_mode: str | None = None,
        crops: int | None = None,
        max_side: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        **kwargs,
    ) -> BatchFeature:
        """Images -> `pixel_values` `(total_crops, 3, S, S)` and `image_index` `(total_crops,)` (which image each
        crop came from). `num_workers > 0` decodes and crops in that many threads (same output)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        per_image = list(
            map_in_threads(lambda image: self.crop_image(image, crop_mode, crops, max_side, seed), images, num_workers)
        )
        image_index = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(per_image)])
        return BatchFeature({"pixel_values": torch.cat(per_image), "image_index": image_index})


def default_num_workers() -> int:
    """Threads that decode and crop images ahead of the model: `min(4, CPU count)`."""
    return min(4, os.cpu_count() or 1)


def map_in_threads(
    function: Callable[[Any], Any],
    items: Iterable[Any],
    num_workers: int,
    lookahead: int | None = None,
    weight: Callable[[Any], float] | None = None,
    budget: float = math.inf,
) -> Iterator[Any]:
    """`map(function, items)` computed in `num_workers` threads, yielded in input order.

    At most `lookahead` (default `2 * num_workers + 2`) results are in flight, and with `weight` at most `budget`
    of their weights (see `map_in_order`), so memory stays flat however many items there are. Pillow's decoders
    and numpy release the GIL, so threads overlap image decoding with a model running in the calling thread.
    `num_workers <= 0` maps in the calling thread (one item in flight). Exceptions are re-raised when their item's
    turn comes.
    """
    if num_workers <= 0:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(num_workers, thread_name_prefix="uniqa-decode") as pool:
        yield from map_in_order(pool, function, items, max(1, lookahead or 2 * num_workers + 2), weight, budget)


def map_in_order(
    pool: Executor,
    function: Callable[[Any], Any],
    items: Iterable[Any],
    lookahead: int,
    weight: Callable[[Any], float] | None = None,
    budget: float = math.inf,
) -> Iterator[Any]:
    """`map(function, items)` run on `pool` (threads or processes), yielded in input order with at most
    `lookahead` items in flight (submitted, not yet yielded).

    With `weight` (what an item will hold once run, e.g. the pixels it decodes to, known before it runs), an item
    is submitted only when the weights in flight, its own included, stay within `budget`: results are yielded
    first until it fits, and an item alone in flight is submitted whatever its weight. Items are drawn from `items`
    one past those in flight. Exceptions are re-raised when their item's turn comes; a consumer that stops early
    (or an error) cancels what has not started."""
    pending: deque[tuple[Future, float]] = deque()
    try:
        for item in items:
            cost = 0.0 if weight is None else weight(item)
            while pending and (len(pending) >= lookahead or sum(w for _, w in pending) + cost > budget):
                yield pending.popleft()[0].result()
            pending.append((pool.submit(function, item), cost))
        while pending:
            yield pending.popleft()[0].result()
    finally:
        for future, _ in pending:
            future.cancel()


def file_pixels(source: str | os.PathLike | bytes) -> int:
    """The pixels (width x height) an image file (its path) or encoded image (its bytes) decodes to, read from its
    header without decoding it; 0 for one that `load_image` refuses before decoding (not a regular file, not an
    image, over the pixel limit)."""
    try:
        if not isinstance(source, bytes) and not stat.S_ISREG(os.stat(source).st_mode):
            return 0  # a folder, or a FIFO that opening would block on
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            pixels = opened.width * opened.height
    except UnidentifiedImageError:  # a HEIF image before `load_image` registered pillow-heif's opener?
        try:
            heif = _sniff(source if isinstance(source, bytes) else os.fspath(source)) == "heif"
        except OSError:
            return 0
        return file_pixels(source) if heif and _register_heif_plugin() else 0
    except Exception:  # unreadable: decoding it fails too, with the reason
        return 0
    limit = Image.MAX_IMAGE_PIXELS
    return 0 if limit and pixels > limit else pixels


UniQAImageProcessor.register_for_auto_class("AutoImageProcessor")
