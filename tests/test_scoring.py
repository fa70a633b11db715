"""`model.score`: inputs of every form and mode, deterministic crops, options and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa import UniQAImageProcessor, load_image


@pytest.fixture(scope="module")
def photo(reference_images) -> Image.Image:
    """A 500x380 RGB photo-like image made by tiling reference crops (larger than one crop)."""
    canvas = Image.new("RGB", (500, 380))
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket", "camera_gray", "coffee_noise"]):
        canvas.paste(Image.open(reference_images[name]), ((i % 3) * 180, (i // 3) * 170))
    return canvas


def test_input_forms_agree(model, photo, tmp_path):
    path = tmp_path / "photo.png"
    photo.save(path)
    scores = model.score([photo, str(path), path, np.asarray(photo)])
    assert torch.allclose(scores, scores[0].expand(4), atol=1e-6, rtol=0)


def test_single_image_gives_one_score(model, photo):
    assert model.score(photo).shape == (1,)


def test_same_scores_for_any_batch_size_and_run(model, photo, reference_images):
    images = [photo, *reference_images.values(), photo.rotate(90, expand=True)]
    runs = [model.score(images, batch_size=b) for b in (1, 7, 32, 32)]
    for other in runs[1:]:
        assert (other - runs[0]).abs().max().item() <= 1e-6


def test_default_crops_are_a_deterministic_grid(photo):
    processor = UniQAImageProcessor()
    boxes = processor.crop_boxes(photo, "grid", 9, seed=0)
    assert boxes == [(x, y) for y in (0, 78, 156) for x in (0, 138, 276)]
    assert processor.crop_image(photo).shape == (9, 3, 224, 224)


def test_224_image_is_scored_as_it_is(reference_images):
    image = Image.open(reference_images["astronaut"])
    pixels = UniQAImageProcessor().crop_image(image)
    assert pixels.shape == (1, 3, 224, 224)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255.0 - mean) / std
    assert torch.allclose(pixels[0], expected, atol=1e-6)


def test_small_images_are_upscaled_to_one_crop():
    processor = UniQAImageProcessor()
    assert processor.crop_image(Image.new("RGB", (16, 16), "red")).shape == (1, 3, 224, 224)
    assert processor.crop_image(Image.new("RGB", (300, 20), "red")).shape == (3, 3, 224, 224)


def test_max_side_downscales_first(photo):
    processor = UniQAImageProcessor()
    assert processor.resize_for_crops(photo, max_side=250).size == (295, 224)  # 250x190, then short side to 224
    assert processor.resize_for_crops(photo, max_side=None).size == photo.size


def test_random_protocol_is_seeded(model, photo):
    first = model.score(photo, crop_mode="random", crops=10, seed=1)
    assert torch.equal(first, model.score(photo, crop_mode="random", crops=10, seed=1))
    boxes = UniQAImageProcessor().crop_boxes(photo, "random", 10, seed=1)
    assert boxes != UniQAImageProcessor().crop_boxes(photo, "random", 10, seed=2)
    assert len(boxes) == 10 and all(0 <= x <= 276 and 0 <= y <= 156 for x, y in boxes)


def test_image_score_is_mean_of_crop_scores(model, photo):
    pixels = model.image_processor.crop_image(photo)
    with torch.no_grad():
        crop_scores = model(pixels).scores
    assert model.score(photo).item() == pytest.approx(crop_scores.mean().item(), abs=1e-6)


def test_modes_convert_to_rgb_correctly():
    rgb = load_image(np.full((4, 4, 3), (10, 200, 30), dtype=np.uint8))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (10, 200, 30)
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert load_image(grey16).getpixel((0, 0)) == (255, 255, 255)
    half16 = load_image(np.full((4, 4), 32896, dtype=np.uint16))
    assert half16.getpixel((0, 0)) == (128, 128, 128)
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(transparent).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    half = Image.new("LA", (4, 4), (0, 128))
    assert load_image(half).getpixel((0, 0)) == (127, 127, 127)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.info["transparency"] = 0
    assert load_image(palette).getpixel((0, 0)) == (255, 255, 255)
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    assert load_image(cmyk).getpixel((0, 0)) == (255, 0, 0)
    floats = load_image(np.full((4, 4, 3), 0.5, dtype=np.float32))
    assert floats.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = load_image(path)
    assert upright.size == (20, 40)
    red, green, blue = upright.getpixel((10, 2))
    assert red > 200 and green < 60 and blue < 60  # the red strip is now on top


def test_unreadable_file_error_names_the_file(tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="not-an-image.jpg: cannot read image"):
        load_image(bad)


def test_tasks_prompt_sets_and_adapters(model, photo):
    aesthetics = model.score(photo, task="aesthetics")
    quality = model.score(photo)
    assert not torch.equal(aesthetics, quality)
    assert torch.equal(model.score(photo, prompt_set="aesthetics20"), aesthetics)
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        model.score(photo, adapter="nope")
    with pytest.raises(ValueError, match="scores quality, not aesthetics"):
        model.score(photo, adapter="tiny", task="aesthetics")
    with pytest.raises(ValueError, match="unknown prompt set"):
        model.score(photo, prompt_set="missing")


def test_score_range_and_mos_rescaling(model, photo):
    low, high = model.score_range()
    assert (low, high) == pytest.approx((0.2, 1.0))
    score = model.score(photo, prompt_set="level5")
    assert low <= score.item() <= high
    rescaled = model.score(photo, prompt_set="level5", mos_range=(0, 100))
    assert rescaled.item() == pytest.approx((score.item() - 0.2) / 0.8 * 100, abs=1e-4)
    adapted = model.score(photo, adapter="tiny")
    assert model.score(photo, adapter="tiny", mos_range=(1, 5)).item() == pytest.approx(1 + 4 * adapted.item())
    assert model.score_range(adapter="tiny") == pytest.approx((0.1, 0.95), abs=1e-6)
    assert model.higher_is_better


def test_text_features_are_computed_once(model, photo, monkeypatch):
    model.score(photo)  # fills the cache
    calls = []
    original = model.get_text_features
    monkeypatch.setattr(model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    model.score([photo, photo], batch_size=2)
    assert calls == []


def test_forward_loss_for_training(model):
    pixels = torch.randn(2, 3, 224, 224)
    model.set_multicue_adapter("tiny")
    try:
        output = model(pixels, labels=torch.tensor([0.2, 0.9]))
    finally:
        model.set_multicue_adapter(None)
    assert output.loss.shape == () and output.scores.shape == (2,)
    assert output.level_probs.shape == (2, 1, 5)
    assert output.loss.item() == pytest.approx(((output.scores - torch.tensor([0.2, 0.9])) ** 2).mean().item())


def test_forward_on_tensors_works_on_a_model_built_from_its_config(model):
    """No tokenizer: prompt token ids (or cached prompt embeddings) are tensors like the pixels."""
    from modeling_uniqa import UniQAModel

    bare = UniQAModel(model.config).eval()
    bare.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="no tokenizer"):
        bare(torch.randn(1, 3, 224, 224))
    prompts = model.config.prompt_sets["level5"]["groups"]["overall"]
    tokens = model.tokenizer(prompts, padding=True, return_tensors="pt")
    pixels = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        by_ids = bare(
            pixels, prompt_input_ids=tokens["input_ids"][None], prompt_attention_mask=tokens["attention_mask"][None]
        )
        by_embeds = bare(pixels, prompt_embeds=model.prompt_embeds("level5"))
        reference = model(pixels, prompt_embeds=model.prompt_embeds("level5"))
    assert by_ids.prompt_embeds.shape == (1, 5, model.config.projection_dim)
    assert torch.allclose(by_ids.scores, reference.scores, atol=1e-6)
    assert torch.allclose(by_embeds.scores, reference.scores, atol=1e-6)
    assert torch.allclose(
        by_ids.scores,
        model.level_head(
            reference.image_embeds, model.prompt_embeds("level5"), model.levels_for(None), model.clip.logit_scale
        )[0],
        atol=1e-6,
    )


def test_adapter_trains_after_inference_scoring(model_dir, photo):
    from modeling_uniqa import UniQAModel

    model = UniQAModel.from_pretrained(model_dir)
    model.requires_grad_(False)
    model.adapters["tiny"].requires_grad_(True)
    model.score(photo, adapter="tiny")  # caches inference-mode text features
    model.set_multicue_adapter("tiny")
    output = model(model.image_processor.crop_image(photo), labels=torch.full((9,), 0.5))
    output.loss.backward()
    assert model.adapters["tiny"].fc[0].weight.grad is not None
    assert model.clip.text_model.embeddings.token_embedding.weight.grad is None


def test_custom_prompt_pairs_and_details(model, photo):
    pair = {"groups": {"light": ["a dark photo", "a bright photo"]}}
    details = model.score([photo, photo.point(lambda v: v // 4)], prompt_set=pair, return_details=True)
    assert details.groups == ["light"] and details.levels == [0.0, 1.0]
    assert details.level_probs.shape == (2, 1, 2)
    assert torch.allclose(details.level_probs.sum(-1), torch.ones(2, 1), atol=1e-5)
    assert torch.allclose(details.scores, details.level_probs[:, 0, 1], atol=1e-5)  # levels 0/1: P(bright)
    assert model.score_range(prompt_set=pair) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        model.score(photo, prompt_set={"groups": {"x": ["only one"]}})


def test_details_of_named_prompt_set(model, photo):
    details = model.score(photo, return_details=True)
    assert details.task == "quality" and len(details.groups) == 4
    expected = (details.level_probs * torch.tensor(details.levels)).sum(-1).mean(-1)
    assert torch.allclose(details.scores, expected, atol=1e-5)


def test_extreme_aspect_ratio_is_refused_before_upscaling():
    with pytest.raises(ValueError, match="aspect ratio too extreme to crop: 100000x2"):
        UniQAImageProcessor().crop_image(np.zeros((2, 100000, 3), dtype=np.uint8))
