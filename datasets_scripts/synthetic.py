"""Graded synthetic distortions of pristine images, with a text description of each result.

``distort(image, "gaussian_blur", level=3, seed=0)`` returns a new RGB image; levels run
1 (slight) .. 5 (extreme) and the same (image, distortion, level, seed) always gives the same
pixels. Spatial strengths scale with the image's short side (reference: 512 px), so a level
looks alike on small and large images. Only numpy, scipy.ndimage and Pillow are used.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, features
from scipy import ndimage
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Array = np.ndarray  # float32, HxWx3, values in [0, 1]
LEVELS = (1, 2, 3, 4, 5)
ADVERBS = ("slightly", "moderately", "noticeably", "heavily", "extremely")
ADJECTIVES = ("slight", "moderate", "noticeable", "strong", "extreme")
QUALITY_WORDS = ("good", "fair", "poor", "bad", "very bad")


def _scale(x: Array) -> float:
    return max(1.0, min(x.shape[:2]) / 512.0)


def _pick(values: Sequence[float], level: int) -> float:
    return values[level - 1]


def _gaussian_blur(x: Array, lv: int, rng: np.random.Generator) -> Array:
    s = _pick((0.6, 1.2, 2.0, 3.2, 5.0), lv) * _scale(x)
    return ndimage.gaussian_filter(x, sigma=(s, s, 0))


def _convolve(x: Array, kernel: Array) -> Array:
    kernel = kernel / kernel.sum()
    return np.stack([ndimage.convolve(x[..., c], kernel, mode="reflect") for c in range(3)], -1)


def _motion_blur(x: Array, lv: int, rng: np.random.Generator) -> Array:
    length = max(3, int(round(_pick((3, 6, 10, 15, 22), lv) * _scale(x))))
    angle = rng.uniform(0, np.pi)
    size = length | 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    for t in np.linspace(-c, c, 4 * size):
        kernel[int(round(c + t * np.sin(angle))), int(round(c + t * np.cos(angle)))] = 1.0
    return _convolve(x, kernel)


def _lens_blur(x: Array, lv: int, rng: np.random.Generator) -> Array:
    r = _pick((1.0, 2.0, 3.0, 4.5, 6.5), lv) * _scale(x)
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    return _convolve(x, (xx**2 + yy**2 <= r * r + 0.5).astype(np.float32))


def _gaussian_noise(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return x + rng.normal(0, _pick((0.02, 0.04, 0.07, 0.11, 0.16), lv), x.shape)


def _poisson_noise(x: Array, lv: int, rng: np.random.Generator) -> Array:
    peak = _pick((200.0, 80.0, 30.0, 12.0, 5.0), lv)
    return rng.poisson(np.clip(x, 0, 1) * peak) / peak


def _impulse_noise(x: Array, lv: int, rng: np.random.Generator) -> Array:
    p = _pick((0.01, 0.03, 0.06, 0.1, 0.16), lv)
    u = rng.random(x.shape[:2])
    out = x.copy()
    out[u < p / 2] = 0.0
    out[(u >= p / 2) & (u < p)] = 1.0
    return out


def _encode(x: Array, fmt: str, **kwargs: Any) -> Array:
    buf = io.BytesIO()
    to_pil(x).save(buf, format=fmt, **kwargs)
    buf.seek(0)
    return from_pil(Image.open(buf))


def _jpeg(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return _encode(x, "JPEG", quality=int(_pick((55, 35, 20, 10, 4), lv)))


def _jpeg2000(x: Array, lv: int, rng: np.random.Generator) -> Array:
    rate = _pick((40.0, 80.0, 160.0, 320.0, 640.0), lv)
    if features.check("jpg_2000"):
        return _encode(x, "JPEG2000", quality_mode="rates", quality_layers=[rate], irreversible=True)
    # Pillow without OpenJPEG: approximate the wavelet blur by a down/up resampling.
    h, w = x.shape[:2]
    f = np.sqrt(rate) / 4
    small = to_pil(x).resize((max(1, int(w / f)), max(1, int(h / f))), Image.Resampling.BICUBIC)
    return from_pil(small.resize((w, h), Image.Resampling.BICUBIC))


def _exposure_under(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return x * _pick((0.75, 0.55, 0.4, 0.27, 0.15), lv)


def _exposure_over(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return x * _pick((1.3, 1.6, 2.0, 2.6, 3.4), lv) + _pick((0.0, 0.03, 0.06, 0.1, 0.15), lv)


def _contrast(x: Array, factor: float) -> Array:
    mean = x.mean(axis=(0, 1), keepdims=True)
    return mean + (x - mean) * factor


def _contrast_decrease(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return _contrast(x, _pick((0.75, 0.55, 0.4, 0.25, 0.12), lv))


def _contrast_increase(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return _contrast(x, _pick((1.3, 1.6, 2.0, 2.6, 3.4), lv))


def _saturation(x: Array, factor: float) -> Array:
    gray = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    return gray + (x - gray) * factor


def _saturation_decrease(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return _saturation(x, _pick((0.7, 0.5, 0.3, 0.15, 0.0), lv))


def _saturation_increase(x: Array, lv: int, rng: np.random.Generator) -> Array:
    return _saturation(x, _pick((1.4, 1.8, 2.4, 3.2, 4.5), lv))


def _color_shift(x: Array, lv: int, rng: np.random.Generator) -> Array:
    direction = rng.normal(size=3)
    direction -= direction.mean()  # a tint, not a brightness change
    direction /= np.abs(direction).max() + 1e-8
    return x + direction * _pick((0.03, 0.06, 0.1, 0.15, 0.22), lv)


def _pixelation(x: Array, lv: int, rng: np.random.Generator) -> Array:
    f = _pick((2, 3, 5, 8, 12), lv) * _scale(x)
    h, w = x.shape[:2]
    small = to_pil(x).resize((max(1, int(round(w / f))), max(1, int(round(h / f)))), Image.Resampling.BOX)
    return from_pil(small.resize((w, h), Image.Resampling.NEAREST))


def _quantization(x: Array, lv: int, rng: np.random.Generator) -> Array:
    q = _pick((24, 12, 7, 4, 3), lv) - 1
    return np.round(np.clip(x, 0, 1) * q) / q


def _vignetting(x: Array, lv: int, rng: np.random.Generator) -> Array:
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    gain = 1 - _pick((0.2, 0.35, 0.5, 0.7, 0.9), lv) * np.clip(r2 / 2, 0, 1)
    return x * gain[..., None]


def _oversharpen(x: Array, lv: int, rng: np.random.Generator) -> Array:
    s = 1.5 * _scale(x)
    blurred = ndimage.gaussian_filter(x, sigma=(s, s, 0))
    return x + _pick((1.0, 2.0, 3.5, 5.5, 8.0), lv) * (x - blurred)


_FUNCS: dict[str, Callable[[Array, int, np.random.Generator], Array]] = {
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "lens_blur": _lens_blur,
    "gaussian_noise": _gaussian_noise,
    "poisson_noise": _poisson_noise,
    "impulse_noise": _impulse_noise,
    "jpeg": _jpeg,
    "jpeg2000": _jpeg2000,
    "exposure_under": _exposure_under,
    "exposure_over": _exposure_over,
    "contrast_decrease": _contrast_decrease,
    "contrast_increase": _contrast_increase,
    "saturation_decrease": _saturation_decrease,
    "saturation_increase": _saturation_increase,
    "color_shift": _color_shift,
    "pixelation": _pixelation,
    "quantization": _quantization,
    "vignetting": _vignetting,
    "oversharpen": _oversharpen,
}
DISTORTIONS: tuple[str, ...] = tuple(_FUNCS)

# "{adv}" -> slightly/.../extremely, "{adj}" -> slight/.../extreme
_PHRASES: dict[str, str] = {
    "gaussian_blur": "{adv} blurred photo",
    "motion_blur": "photo with {adj} motion blur",
    "lens_blur": "{adv} out-of-focus photo",
    "gaussian_noise": "photo with {adj} noise",
    "poisson_noise": "photo with {adj} grainy sensor noise",
    "impulse_noise": "photo with {adj} salt-and-pepper noise",
    "jpeg": "photo with {adj} JPEG compression artifacts",
    "jpeg2000": "photo with {adj} JPEG 2000 compression blur and ringing",
    "exposure_under": "{adv} underexposed, dark photo",
    "exposure_over": "{adv} overexposed, washed-out photo",
    "contrast_decrease": "{adv} low-contrast, flat photo",
    "contrast_increase": "photo with {adj} harsh over-contrast",
    "saturation_decrease": "{adv} desaturated, dull photo",
    "saturation_increase": "{adv} oversaturated photo",
    "color_shift": "photo with {adj} colour cast",
    "pixelation": "{adv} pixelated photo",
    "quantization": "photo with {adj} colour banding",
    "vignetting": "photo with {adj} vignetting",
    "oversharpen": "{adv} oversharpened photo with halos",
}


def _check(distortion: str, level: int) -> None:
    if distortion not in _FUNCS:
        raise KeyError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def from_pil(image: Image.Image) -> Array:
    """PIL image -> float32 HxWx3 array in [0, 1]."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_pil(x: Array) -> Image.Image:
    """Float HxWx3 array (clipped to [0, 1]) -> RGB PIL image."""
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def distort(image: Image.Image, distortion: str, level: int, seed: int = 0) -> Image.Image:
    """Apply one distortion at ``level`` 1..5; deterministic for a given seed."""
    _check(distortion, level)
    rng = np.random.default_rng((seed, DISTORTIONS.index(distortion), level))
    return to_pil(_FUNCS[distortion](from_pil(image), level, rng).astype(np.float32))


def distort_chain(image: Image.Image, steps: Iterable[tuple[str, int]], seed: int = 0) -> Image.Image:
    """Apply several ``(distortion, level)`` steps in order."""
    for k, (name, level) in enumerate(steps):
        image = distort(image, name, level, seed + 7919 * k)
    return image


def describe(distortion: str, level: int) -> str:
    """``describe("gaussian_blur", 4)`` -> ``"a heavily blurred photo of bad quality"``."""
    return describe_chain([(distortion, level)])


def describe_chain(steps: Sequence[tuple[str, int]]) -> str:
    """Text for one or more distortions, e.g. ``"a heavily blurred photo with strong noise,
    of bad quality"``; quality follows the strongest level."""
    if not steps:
        return "a pristine photo of perfect quality"
    for name, level in steps:
        _check(name, level)
    parts = [_PHRASES[n].format(adv=ADVERBS[lv - 1], adj=ADJECTIVES[lv - 1]) for n, lv in steps]
    head = parts[0]
    for p in parts[1:]:
        if p.startswith("photo with "):
            head += (" and " if " with " in head else " with ") + p.removeprefix("photo with ")
        else:
            head += " and " + p.replace(" photo", "", 1)
    art = "an" if head[0] in "aeiou" else "a"
    quality = QUALITY_WORDS[max(lv for _, lv in steps) - 1]
    sep = "," if len(steps) > 1 else ""
    return f"{art} {head}{sep} of {quality} quality"


SYNTHETIC_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "distortion": datasets.Value("string"),
        "level": datasets.Value("int32"),
        "reference_id": datasets.Value("string"),
        "description": datasets.Value("string"),
    }
)


def _load(image: Image.Image | str | Path) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.open(image)


def iter_synthetic(
    images: Sequence[Image.Image | str | Path],
    distortions: Sequence[str] = DISTORTIONS,
    levels: Sequence[int] = LEVELS,
    seed: int = 0,
    reference_ids: Sequence[str] | None = None,
    include_reference: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield rows ``image, distortion, level, reference_id, description`` for every
    (image, distortion, level); with ``include_reference`` also the pristine image (level 0)."""
    ids = (
        list(reference_ids)
        if reference_ids is not None
        else [Path(i).stem if isinstance(i, (str, Path)) else f"ref{k:05d}" for k, i in enumerate(images)]
    )
    total = len(images) * (len(distortions) * len(levels) + include_reference)
    bar = tqdm(total=total, desc="synthetic distortions", leave=False)
    for k, (img, rid) in enumerate(zip(images, ids, strict=False)):
        pristine = _load(img).convert("RGB")
        if include_reference:
            yield {"image": pristine, "distortion": "none", "level": 0, "reference_id": rid,
                   "description": describe_chain([])}  # fmt: skip
            bar.update()
        for name in distortions:
            for level in levels:
                out = distort(pristine, name, level, seed + 100003 * k)
                yield {"image": out, "distortion": name, "level": level, "reference_id": rid,
                       "description": describe(name, level)}  # fmt: skip
                bar.update()
    bar.close()


def build_synthetic_dataset(
    images: Sequence[Image.Image | str | Path], cache_dir: str | None = None, **kwargs: Any
) -> datasets.Dataset:
    """A ``datasets.Dataset`` of :func:`iter_synthetic` rows (written to an Arrow cache)."""
    # tuples, not lists: datasets would treat list arguments as shards and zip them
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return datasets.Dataset.from_generator(
        iter_synthetic,
        gen_kwargs={"images": tuple(images), **kwargs},
        features=SYNTHETIC_FEATURES,
        cache_dir=cache_dir,
    )


def export_synthetic_imagefolder(rows: Iterable[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write rows (from :func:`iter_synthetic` or a dataset) as ImageFolder + metadata.jsonl +
    a dataset card, loadable with ``datasets.load_dataset(out_dir, split="train")``."""
    from .corpus import dataset_card

    out = Path(out_dir)
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    n = 0
    with (train / "metadata.jsonl").open("w") as meta:
        for row in rows:
            name = f"{row['reference_id']}_{row['distortion']}_{row['level']}.png"
            _load(row["image"]).save(train / name)
            fields = {k: row[k] for k in ("distortion", "level", "reference_id", "description")}
            meta.write(json.dumps({"file_name": name, **fields}) + "\n")
            n += 1
    summary = (
        f"Synthetic distortions ({len(DISTORTIONS)} kinds x 5 levels) of {n} pristine-derived images; "
        "columns `distortion`, `level` (1 slight .. 5 extreme, 0 pristine), `reference_id`, "
        "`description`."
    )
    card = dataset_card("UniQA synthetic distortions", "train/**", summary)
    (out / "README.md").write_text(card)
    return out
