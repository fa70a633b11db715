"""Synthetic distortions: determinism, graded severity, descriptions, dataset and export."""

from __future__ import annotations

import os
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets_scripts.synthetic import (  # noqa: E402
    DISTORTIONS,
    build_synthetic_dataset,
    describe,
    describe_chain,
    distort,
    distort_chain,
    export_synthetic_imagefolder,
    iter_synthetic,
)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photograph (scikit-image's astronaut), 96x96."""
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut()).resize((96, 96), Image.Resampling.LANCZOS)


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def test_all_requested_kinds_exist() -> None:
    wanted = {
        "gaussian_blur", "motion_blur", "lens_blur", "gaussian_noise", "poisson_noise",
        "impulse_noise", "jpeg", "jpeg2000", "exposure_under", "exposure_over",
        "contrast_decrease", "saturation_decrease", "color_shift", "pixelation",
        "quantization", "vignetting", "oversharpen",
    }  # fmt: skip
    assert wanted <= set(DISTORTIONS)


@pytest.mark.parametrize("name", DISTORTIONS)
def test_distortion_is_deterministic_and_graded(photo: Image.Image, name: str) -> None:
    outs = [distort(photo, name, level, seed=3) for level in range(1, 6)]
    assert all(o.size == photo.size and o.mode == "RGB" for o in outs)
    np.testing.assert_array_equal(np.asarray(outs[2]), np.asarray(distort(photo, name, 3, seed=3)))
    dist = [_mad(photo, o) for o in outs]
    assert dist[0] > 0.2, f"level 1 of {name} barely changes the image"
    assert dist[4] > 1.5 * dist[0], f"{name}: level 5 not clearly stronger than level 1: {dist}"
    assert sum(b >= a * 0.95 for a, b in zip(dist, dist[1:], strict=False)) >= 3, f"{name} not graded: {dist}"


def test_seed_changes_random_distortions_only(photo: Image.Image) -> None:
    a, b = distort(photo, "gaussian_noise", 2, seed=0), distort(photo, "gaussian_noise", 2, seed=1)
    assert _mad(a, b) > 1
    assert _mad(distort(photo, "jpeg", 2, seed=0), distort(photo, "jpeg", 2, seed=1)) == 0


def test_blur_removes_detail(photo: Image.Image) -> None:
    def detail(im: Image.Image) -> float:
        g = np.asarray(im.convert("L"), np.float32)
        return float(np.abs(np.diff(g, axis=1)).mean())

    levels = [detail(distort(photo, "gaussian_blur", lv)) for lv in range(1, 6)]
    assert all(a > b for a, b in zip([detail(photo), *levels], levels, strict=False))
    dark = np.asarray(distort(photo, "exposure_under", 4)).mean()
    bright = np.asarray(distort(photo, "exposure_over", 4)).mean()
    assert dark < np.asarray(photo).mean() < bright


def test_descriptions() -> None:
    assert describe("gaussian_blur", 4) == "a heavily blurred photo of bad quality"
    assert describe("gaussian_noise", 1) == "a photo with slight noise of good quality"
    two = describe_chain([("gaussian_blur", 4), ("gaussian_noise", 4)])
    assert two == "a heavily blurred photo with strong noise, of bad quality"
    three = describe_chain([("jpeg", 2), ("pixelation", 1), ("vignetting", 1)])
    assert three.startswith("a photo with moderate JPEG compression artifacts and slightly pixelated")
    assert three.endswith("and slight vignetting, of fair quality")
    assert len({describe(d, lv) for d in DISTORTIONS for lv in range(1, 6)}) == 5 * len(DISTORTIONS)
    with pytest.raises(ValueError):
        describe("jpeg", 6)
    with pytest.raises(KeyError):
        distort(Image.new("RGB", (4, 4)), "rain", 1)


def test_chain(photo: Image.Image) -> None:
    out = distort_chain(photo, [("gaussian_blur", 3), ("jpeg", 4)], seed=0)
    assert _mad(out, photo) > _mad(distort(photo, "gaussian_blur", 3), photo)


def test_dataset_and_imagefolder_export(photo: Image.Image, tmp_path: Path) -> None:
    images = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    ds = build_synthetic_dataset(
        images, distortions=["jpeg", "lens_blur"], levels=[1, 5], reference_ids=["a", "b"],
        include_reference=True, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert len(ds) == 2 * (2 * 2 + 1)
    assert ds.column_names == ["image", "distortion", "level", "reference_id", "description"]
    row = ds[1]
    assert (row["distortion"], row["level"], row["reference_id"]) == ("jpeg", 1, "a")
    assert row["description"] == describe("jpeg", 1)
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(distort(photo, "jpeg", 1, 0)))

    out = export_synthetic_imagefolder(iter_synthetic(images[:1], ["pixelation"], [2, 3]), tmp_path / "syn")
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["level"]) == [2, 3] and set(loaded["distortion"]) == {"pixelation"}
    assert loaded[0]["image"].size == (96, 96)
