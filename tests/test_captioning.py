"""Captioning: template captions, resumable JSONL output, and the MLLM path with a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modeling_uniqa.training.captioning import (
    CaptionRequest,
    MLLMCaptioner,
    TemplateCaptioner,
    caption_to_jsonl,
    level_index,
)


def test_levels_from_mos_and_distortions():
    assert [level_index(v) for v in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == [0, 0, 1, 2, 3, 4, 4]
    assert CaptionRequest("x", mos_normalized=0.9).level() == 4
    assert CaptionRequest("x", distortions=[("jpeg", 1)]).level() == 3
    assert CaptionRequest("x", mos_normalized=0.9, distortions=[("jpeg", 2), ("gaussian_blur", 5)]).level() == 0
    assert CaptionRequest("x", mos_normalized=0.3, distortions=[("jpeg", 1)]).level() == 1  # the MOS caps it
    with pytest.raises(ValueError, match="no MOS"):
        CaptionRequest("x").level()


def test_template_captions_describe_what_is_known():
    captioner = TemplateCaptioner()
    pristine = captioner.caption(CaptionRequest("a.png", mos_normalized=1.0))
    assert (
        "perfect image" in pristine and "extremely sharp image" in pristine and "extremely noise-free image" in pristine
    )
    blurred = captioner.caption(
        CaptionRequest("b.png", distortions=[("gaussian_blur", 4)], description="a heavily blurred photo")
    )
    assert "bad image" in blurred and "extremely blurry image" in blurred and "a heavily blurred photo" in blurred
    assert not any("noise" in c for c in blurred)  # a blur says nothing about noise
    noisy = captioner.caption(CaptionRequest("c.png", distortions=[("gaussian_noise", 2)]))
    assert "fair image" in noisy and not any("blurry" in c or "sharp" in c for c in noisy)
    assert len(noisy) == len(set(noisy))
    dark = captioner.caption(CaptionRequest("d.png", mos_normalized=0.5, attributes={"brightness": 0.05}))
    assert "a very dark photo" in dark and "The quality of image is fair." in dark
    aesthetic = captioner.caption(CaptionRequest("e.png", task="aesthetics", mos_normalized=0.85))
    assert "beautiful image" in aesthetic
    with pytest.raises(ValueError, match="no caption templates"):
        captioner.caption(CaptionRequest("f.png", task="humour", mos_normalized=0.5))


def test_request_from_table_row():
    row = {"image_path": "s/x.png", "distortion": "jpeg", "level": 3, "mos_normalized": "", "description": "d"}
    request = CaptionRequest.from_row(row)
    assert request.distortions == [("jpeg", 3)] and request.mos_normalized is None and request.description == "d"
    assert CaptionRequest.from_row({"image_path": "p.png", "distortion": "none", "level": 0}).distortions == []
    with pytest.raises(ValueError, match="image_path"):
        CaptionRequest.from_row({"mos": 3})


class CountingCaptioner(TemplateCaptioner):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __call__(self, requests):
        self.seen += [r.image_path for r in requests]
        return super().__call__(requests)


def test_caption_resume_without_duplicates(tmp_path):
    requests = [CaptionRequest(f"img{i}.png", mos_normalized=i / 10) for i in range(10)]
    output = tmp_path / "captions.jsonl"
    first = CountingCaptioner()
    assert caption_to_jsonl(requests, first, output, batch_size=2, limit=5)["written"] == 5  # "killed" after 5
    with output.open("a") as handle:  # and a line torn by the kill
        handle.write('{"image_path": "img5.png", "task": "quali')
    second = CountingCaptioner()
    stats = caption_to_jsonl(requests + requests[:3], second, output, batch_size=3)
    assert stats["written"] == 5
    assert second.seen == [f"img{i}.png" for i in range(5, 10)]  # only the missing ones were captioned
    entries = [json.loads(line) for line in output.read_text().splitlines()]
    assert [e["image_path"] for e in entries] == [f"img{i}.png" for i in range(10)]
    assert entries[9]["prompt"][0] == "perfect image" and entries[0]["prompt"][0] == "bad image"
    # a third run has nothing to do
    assert caption_to_jsonl(requests, CountingCaptioner(), output)["written"] == 0


def _tiny_llava(tmp_path):
    """A random LLaVA-style image-text-to-text model + processor, built from configs (no download)."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from modeling_uniqa.tools.conversion import write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "tok")
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    template = (
        "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %} answer:{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=49406,
            eos_token_id=49407,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config), processor


def test_mllm_captioner_runs_a_tiny_image_text_to_text_model(tmp_path):
    model, processor = _tiny_llava(tmp_path)
    captioner = MLLMCaptioner(model, processor, max_new_tokens=4)
    assert "rated good" in captioner._prompt(CaptionRequest("a.png", mos_normalized=0.7))
    requests = [
        CaptionRequest("a.png", mos_normalized=0.9, image=np.zeros((40, 48, 3), np.uint8)),
        CaptionRequest("b.png", mos_normalized=0.1, image=np.full((50, 40, 3), 200, np.uint8)),
    ]
    captions = captioner(requests)
    assert len(captions) == 2
    assert captions[0][-1] == "perfect image" and captions[1][-1] == "bad image"
    assert all(len(c) == 2 and c[0].strip() for c in captions)  # generated text + the level caption
    assert captioner(requests) == captions  # greedy decoding: reproducible
    output = tmp_path / "mllm.jsonl"
    assert caption_to_jsonl(requests, captioner, output, batch_size=2)["written"] == 2
