"""Conversion of OpenAI-format checkpoints: parity with the original implementation, and clear errors."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_uniqa import UniQAModel
from modeling_uniqa.tools.conversion import (
    MERGES_FILE,
    VOCAB_FILE,
    CheckpointError,
    build_clip_vocab,
    convert_checkpoint,
    infer_config,
    load_checkpoint,
)

TOL = 1e-5


def test_infers_sizes_from_shapes(tiny_checkpoint):
    config = infer_config(load_checkpoint(tiny_checkpoint))
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (128, 2)
    assert (config.vision_config.num_attention_heads, config.vision_config.patch_size) == (2, 16)
    assert config.vision_config.image_size == 224
    assert (config.text_config.hidden_size, config.text_config.num_attention_heads) == (128, 2)
    assert (config.text_config.max_position_embeddings, config.text_config.vocab_size) == (77, 49408)
    assert config.projection_dim == 64


def test_image_embeddings_match_reference(model, reference, reference_images):
    for name, expected in reference["images"].items():
        pixels = model.image_processor([Image.open(reference_images[name])])["pixel_values"]
        assert pixels.shape == (1, 3, 224, 224)  # a 224x224 image is used as it is
        with torch.no_grad():
            embeds = model.get_image_features(pixels)[0]
        assert torch.allclose(embeds, torch.tensor(expected["image_embeds"]), atol=TOL, rtol=0), name


def test_text_embeddings_and_tokens_match_reference(model, reference):
    for prompts_key, embeds_key in (("prompts_5", "text_embeds_5"), ("prompts_20", "text_embeds_20")):
        tokens = model.tokenizer(reference[prompts_key], padding=True, return_tensors="pt")
        with torch.no_grad():
            embeds = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        assert torch.allclose(embeds, torch.tensor(reference[embeds_key]), atol=TOL, rtol=0)
    ids = model.tokenizer(reference["prompts_5"], padding="max_length", max_length=8)["input_ids"]
    assert ids == reference["tokens_5"]
    ids20 = model.tokenizer(reference["prompts_20"])["input_ids"]
    assert [row.index(49407) for row in ids20] == reference["tokens_20_eot_index"]


@pytest.mark.parametrize(
    ("key", "options"),
    [
        ("zero_shot_quality_5", {"prompt_set": "level5"}),
        ("zero_shot_quality_20", {"prompt_set": "ensemble20"}),
        ("adapter_score", {"adapter": "tiny"}),
    ],
)
def test_scores_match_reference(model, reference, reference_images, key, options):
    names = list(reference["images"])
    scores = model.score([reference_images[n] for n in names], **options)
    expected = torch.tensor([reference["images"][n][key] for n in names])
    assert (scores - expected).abs().max().item() <= TOL


def test_converted_constants(model, reference):
    assert model.clip.logit_scale.item() == pytest.approx(reference["logit_scale"], abs=1e-6)
    assert model.adapters["tiny"].levels.tolist() == pytest.approx(reference["adapter_levels"])
    assert model.config.levels == pytest.approx(reference["default_levels"])


def test_model_folder_contents(model_dir):
    names = {p.name for p in model_dir.iterdir()}
    expected = {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "README.md",
        "configuration_uniqa.py",
        "modeling_uniqa.py",
        "adapter.py",
        "image_processing_uniqa.py",
        "pipeline_uniqa.py",
    }
    assert expected <= names
    config = json.loads((model_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_uniqa.UniQAConfig",
        "AutoModel": "modeling_uniqa.UniQAModel",
    }
    assert "image-quality-assessment" in config["custom_pipelines"]
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\nlicense: other\nlibrary_name: transformers\n")
    assert "higher is better" in card and "sha256" in card and "tiny_uniqa_clip.pt" in card


def test_wrapped_and_prefixed_checkpoints_convert_identically(tmp_path, tiny_checkpoint, model):
    state = torch.load(tiny_checkpoint, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    converted = convert_checkpoint(wrapped, tmp_path / "out")
    for key, value in converted.clip.state_dict().items():
        assert torch.equal(value, model.clip.state_dict()[key]), key


def test_unexpected_and_missing_keys_are_named(tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["visual.extra_head.weight"] = torch.zeros(2)
    del state["ln_final.bias"]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"unexpected keys: visual\.extra_head\.weight") as error:
        convert_checkpoint(bad, tmp_path / "out")
    assert "missing keys: ln_final.bias" in str(error.value)


def test_shape_mismatch_is_reported(tmp_path, tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["visual.ln_post.weight"] = torch.ones(7)
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"vision_model\.post_layernorm\.weight: checkpoint \(7,\)"):
        convert_checkpoint(bad, tmp_path / "out")


def test_bad_adapter_checkpoint_names_keys(tmp_path, tiny_checkpoint):
    bad = tmp_path / "adapter.pth"
    torch.save({"params": {"adapter.fc.0.weight": torch.zeros(32, 64), "head.bias": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="missing keys: adapter.fc.2.weight, score_level"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "out", adapter=bad)


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_carrying_code_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"visual.conv1.weight": _Exploit()}, handle)
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        load_checkpoint(evil)


def test_shipped_tokenizer_files_match_openai_bpe(shared):
    bpe = shared / "reference" / "bpe_simple_vocab_16e6.txt.gz"
    if not bpe.is_file():
        pytest.skip(f"OpenAI's BPE file is not at {bpe} (../shared is absent): cannot re-derive the vocabulary")
    vocab, merges = build_clip_vocab(bpe)
    assert json.loads(VOCAB_FILE.read_text(encoding="utf-8")) == vocab
    assert MERGES_FILE.read_text(encoding="utf-8").split("\n")[1:-1] == merges
    with gzip.open(bpe, "rt", encoding="utf-8") as handle:
        assert len(handle.read().split("\n")) > len(merges)


def test_roundtrip_save_and_load(tmp_path, model):
    model.save_pretrained(tmp_path / "copy")
    reloaded = UniQAModel.from_pretrained(tmp_path / "copy")
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert reloaded.config.adapters == model.config.adapters


def test_companions_load_from_the_same_revision(model_dir, monkeypatch):
    from transformers import CLIPTokenizerFast

    from modeling_uniqa import UniQAImageProcessor

    seen = []
    for cls in (CLIPTokenizerFast, UniQAImageProcessor):
        original = cls.from_pretrained.__func__
        monkeypatch.setattr(
            cls,
            "from_pretrained",
            classmethod(lambda c, path, _o=original, **kw: seen.append((c.__name__, kw)) or _o(c, path, **kw)),
        )
    model = UniQAModel.from_pretrained(model_dir, revision="main", local_files_only=True)
    assert [kw for _, kw in seen] == [{"revision": "main", "local_files_only": True}] * 2
    assert len(model.tokenizer) == 49408


def test_folder_without_tokenizer_files_says_so(tmp_path, model):
    model.save_pretrained(tmp_path / "copy")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        (tmp_path / "copy" / name).unlink(missing_ok=True)
    reloaded = UniQAModel.from_pretrained(tmp_path / "copy")
    with pytest.raises(ValueError, match="this model has no tokenizer"):
        reloaded.score(np.zeros((224, 224, 3), dtype=np.uint8))
