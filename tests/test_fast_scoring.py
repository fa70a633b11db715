"""Fast scoring: threaded decoding, full batches across images, reduced precision, tower copies, CLI options."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa.image_processing_uniqa import UniQAImageProcessor, map_in_threads
from modeling_uniqa.tools.cli import main


@pytest.fixture(scope="module")
def images(reference_images) -> list[Image.Image]:
    """Eight images: 224x224 references (one crop each) and two larger ones (several crops each)."""
    base = [Image.open(path).convert("RGB") for path in reference_images.values()]
    wide = Image.new("RGB", (500, 300))
    for i, image in enumerate(base[:3]):
        wide.paste(image, (i * 138, 40))
    return [*base[:6], wide, base[6].resize((300, 260))]


def test_map_in_threads_keeps_order_bounds_work_and_reraises():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def work(x: int) -> int:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.002 * (x % 3))
        with lock:
            in_flight -= 1
        if x == 7:
            raise ValueError("seven")
        return x * x

    stream = map_in_threads(work, range(20), num_workers=3, lookahead=4)
    assert [next(stream) for _ in range(7)] == [x * x for x in range(7)]
    with pytest.raises(ValueError, match="seven"):
        next(stream)
    assert peak <= 3
    assert list(map_in_threads(work, range(5), num_workers=0)) == [0, 1, 4, 9, 16]

    submitted = []
    consumer = map_in_threads(submitted.append, range(1000), num_workers=2, lookahead=5)
    next(consumer)
    consumer.close()
    assert len(submitted) <= 6  # lookahead bounds what is taken from the input


def test_threaded_preprocess_equals_serial(images):
    processor = UniQAImageProcessor()
    serial = processor.preprocess(images)
    threaded = processor.preprocess(images, num_workers=3)
    assert torch.equal(serial["pixel_values"], threaded["pixel_values"])
    assert torch.equal(serial["image_index"], threaded["image_index"])


def test_crop_normalisation_matches_definition(images):
    processor = UniQAImageProcessor()
    image = images[6]
    pixels = processor.crop_image(image)
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    for crop, (left, top) in zip(pixels, processor.crop_boxes(image, "grid", 9, 0), strict=True):
        window = torch.tensor(np.array(image.crop((left, top, left + 224, top + 224))))
        expected = (window.permute(2, 0, 1).float() / 255.0 - mean) / std
        assert torch.allclose(crop, expected, atol=2e-6, rtol=0)


def test_batches_are_full_across_images_and_scores_do_not_change(model, images):
    sizes: list[int] = []
    hook = model.clip.vision_model.register_forward_hook(
        lambda module, args, output: sizes.append(len(output.last_hidden_state))
    )
    try:
        reference = model.score(images, batch_size=1, num_workers=0)
        sizes.clear()
        batched = model.score(images, batch_size=4, num_workers=2)
    finally:
        hook.remove()
    total = sum(len(model.image_processor.crop_image(image)) for image in images)
    assert sum(sizes) == total and all(size == 4 for size in sizes[:-1]) and len(sizes) == -(-total // 4)
    assert (batched - reference).abs().max().item() <= 1e-6
    assert (model.score(images, batch_size=5, num_workers=1) - reference).abs().max().item() <= 1e-6


def test_image_tower_shares_weights_or_caches_a_converted_copy(model_dir, images):
    from modeling_uniqa import UniQAModel

    model = UniQAModel.from_pretrained(model_dir).eval()
    pixels = model.image_processor.crop_image(images[0])
    with torch.no_grad():
        expected = model.get_image_features(pixels)
        assert torch.equal(model.image_tower()(pixels), expected)
        bf16 = model.image_tower("bf16")
        assert next(bf16.parameters()).dtype == torch.bfloat16 and model.dtype == torch.float32
        assert model.image_tower(torch.bfloat16) is bf16  # cached
        assert torch.allclose(bf16(pixels.bfloat16()).float(), expected, atol=0.05 * expected.abs().max().item())
        model.clip.visual_projection.weight.mul_(2.0)  # weights change -> the copy is rebuilt
        rebuilt = model.image_tower("bf16")
        assert rebuilt is not bf16
        assert torch.allclose(rebuilt(pixels.bfloat16()).float(), 2 * expected, atol=0.1 * expected.abs().max().item())
    with pytest.raises(ValueError, match="dtype must be one of"):
        model.image_tower("int4")


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_scores_track_fp32(model, images, dtype):
    fp32 = model.score(images[4:], adapter="tiny", batch_size=8)
    low = model.score(images[4:], adapter="tiny", batch_size=8, dtype=dtype)
    assert model.dtype == torch.float32 and low.dtype == torch.float32
    assert (low - fp32).abs().max().item() <= 0.01
    assert not torch.equal(low, fp32)  # the reduced-precision path really ran


def test_details_and_mos_range_with_options(model, images):
    details = model.score(images[:3], return_details=True, dtype="bf16", num_workers=2, batch_size=3)
    assert details.level_probs.shape == (3, 4, 5)
    assert torch.allclose(details.level_probs.sum(-1), torch.ones(3, 4), atol=1e-5)
    scaled = model.score(images[:3], adapter="tiny", mos_range=(0, 100), dtype="bf16")
    plain = model.score(images[:3], adapter="tiny", dtype="bf16")
    assert torch.allclose(scaled, plain * 100, atol=1e-4)


@pytest.mark.skipif(not os.environ.get("UNIQA_TEST_COMPILE"), reason="torch.compile takes minutes on a small CPU")
def test_compiled_tower_matches_eager(model, images):
    eager = model.score(images[:2], batch_size=4)
    compiled = model.score(images[:2], batch_size=4, compile=True)
    assert (compiled - eager).abs().max().item() <= 1e-5


def test_cli_speed_options(model_dir, reference_images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        (folder / f"{name}.png").write_bytes(reference_images[name].read_bytes())
    (folder / "broken.jpg").write_bytes(b"not an image")
    common = [str(folder), "--model", str(model_dir), "--adapter", "tiny", "--quiet", "--format", "jsonl"]
    assert main(["score", *common, "--output", str(tmp_path / "fp32.jsonl"), "--num-workers", "0"]) == 2
    fast = ["--dtype", "bf16", "--num-workers", "2", "--device", "cpu", "--batch-size", "2"]
    assert main(["score", *common, "--output", str(tmp_path / "bf16.jsonl"), *fast]) == 2
    rows = [
        [json.loads(line) for line in (tmp_path / f).read_text().splitlines()] for f in ("fp32.jsonl", "bf16.jsonl")
    ]
    assert [r["path"] for r in rows[0]] == [r["path"] for r in rows[1]]
    assert [r["error"] is None for r in rows[1]] == [True, False, True, True]  # broken.jpg sorts second
    for a, b in zip(*rows, strict=True):
        if a["score"] is not None:
            assert abs(a["score"] - b["score"]) <= 0.01
    with pytest.raises(SystemExit):
        main(["score", *common, "--dtype", "int4"])
    capsys.readouterr()
