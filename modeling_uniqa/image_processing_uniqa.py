"""Image loading and test-time cropping for UniQA.

UniQA scores 224x224 windows of the un-resized image (method.md §5). `UniQAImageProcessor` turns any image
into such crops, deterministically by default, with CLIP's normalisation.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_MODES = ("grid", "random", "center")

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8: 16-bit ranges are divided by 257, floats in [0, 1] by 1/255."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(array) * scale + 0.5, 0, 255).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    divisor = 257.0 if int(array.max(initial=0)) > 255 else 1.0
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


def load_image(image: ImageInput, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Load a path, PIL image or array as an upright 8-bit RGB PIL image.

    Paths are decoded fully (so a truncated file fails here, naming the file) and EXIF orientation is applied.
    Arrays: `(H, W)`, `(H, W, 1|3|4)`; uint8, uint16 or floats in [0, 1]. Animated files give their first frame.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with Image.open(path) as opened:
                opened.seek(0)
                opened.load()
                image = ImageOps.exif_transpose(opened)
                image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: cannot read image ({type(error).__name__}: {error})") from error
        return to_rgb(image, background)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"array image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}")
        return to_rgb(Image.fromarray(_to_8bit(array)), background)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image), background)
    raise TypeError(f"unsupported image type {type(image).__name__}: pass a path, a PIL image or a numpy array")


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
        if (width, height) != image.size:
            image = image.resize((width, height), Image.BICUBIC)
        return image

    def crop_boxes(self, image: Image.Image, crop_mode: str, crops: int, seed: int) -> list[tuple[int, int]]:
        """Top-left corners `(left, top)` of the crops of an image already sized by `resize_for_crops`."""
        width, height = image.size
        size = self.crop_size
        if crop_mode == "center":
            return [((width - size) // 2, (height - size) // 2)]
        if crop_mode == "grid":
            per_axis = max(1, math.ceil(math.sqrt(crops)))
            lefts = sorted({round(v) for v in np.linspace(0, width - size, per_axis)})
            tops = sorted({round(v) for v in np.linspace(0, height - size, per_axis)})
            return [(left, top) for top in tops for left in lefts]
        if crop_mode == "random":
            content_key = zlib.crc32(image.tobytes())
            rng = np.random.default_rng([seed, content_key])
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
    ) -> torch.Tensor:
        """One image -> `(n_crops, 3, crop_size, crop_size)` float32, normalised."""
        crop_mode = crop_mode or self.crop_mode
        crops = crops or self.crops
        image = self.resize_for_crops(self.load_image(image), max_side if max_side is not None else self.max_side)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        size = self.crop_size
        windows = [
            pixels[top : top + size, left : left + size] for left, top in self.crop_boxes(image, crop_mode, crops, seed)
        ]
        return torch.from_numpy(np.ascontiguousarray(np.stack(windows).transpose(0, 3, 1, 2)))

    def preprocess(
        self,
        images: ImageInput | Sequence[ImageInput],
        crop_mode: str | None = None,
        crops: int | None = None,
        max_side: int | None = None,
        seed: int = 0,
        **kwargs,
    ) -> BatchFeature:
        """Images -> `pixel_values` `(total_crops, 3, S, S)` and `image_index` `(total_crops,)` (which image each
        crop came from)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        per_image = [self.crop_image(image, crop_mode, crops, max_side, seed) for image in images]
        image_index = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(per_image)])
        return BatchFeature({"pixel_values": torch.cat(per_image), "image_index": image_index})


UniQAImageProcessor.register_for_auto_class("AutoImageProcessor")
