"""Named adapters: parity, switching, save/load in PEFT's layout, hub push to a local folder, LoRA through peft."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Trainer

from modeling_uniqa import UniQAModel
from modeling_uniqa.training.finetuning import FinetuneTrainingArguments, add_lora, collate_pixels

TOL = 1e-5


@pytest.fixture
def fresh(model_dir) -> UniQAModel:
    return UniQAModel.from_pretrained(model_dir).eval()


def _randomise(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1 + parameter)


def test_adapter_round_trip_is_bit_exact_and_keeps_parity(fresh, model_dir, tmp_path, reference, reference_images):
    fresh.config.adapters["tiny"]["metrics"] = {"srcc": 0.5}
    fresh.save_multicue_adapter(tmp_path / "tiny", "tiny")
    files = {p.name: p.stat().st_size for p in (tmp_path / "tiny").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert files["adapter_model.safetensors"] < 100_000
    saved = json.loads((tmp_path / "tiny" / "adapter_config.json").read_text())
    assert saved["adapter_type"] == "uniqa-multi-cue" and saved["dataset"] == "toy" and saved["embed_dim"] == 64
    assert saved["base_model_name_or_path"] == str(model_dir)

    other = UniQAModel.from_pretrained(model_dir).eval()
    other.delete_multicue_adapter("tiny")
    assert other.load_multicue_adapter(tmp_path / "tiny", "copy") == "copy"
    for key, value in fresh.adapters["tiny"].state_dict().items():
        assert torch.equal(value, other.adapters["copy"].state_dict()[key]), key
    assert other.config.adapters["copy"]["metrics"] == {"srcc": 0.5}
    assert other.config.adapters["copy"]["dataset"] == "toy"
    # the reloaded adapter still reproduces the original implementation's adapter scores
    names = list(reference["images"])
    scores = other.score([reference_images[n] for n in names], adapter="copy")
    expected = torch.tensor([reference["images"][n]["adapter_score"] for n in names])
    assert (scores - expected).abs().max().item() <= TOL


def test_from_pretrained_on_an_adapter_folder_loads_base_and_adapter(fresh, tmp_path):
    _randomise(fresh.add_multicue_adapter("extra", dataset="toy"), seed=3)
    fresh.save_multicue_adapter(tmp_path / "a", "extra")
    loaded = UniQAModel.from_pretrained(tmp_path / "a", dtype=torch.float64)  # keyword arguments reach the base
    assert set(loaded.config.adapters) == {"tiny", "extra"} and loaded.dtype == torch.float64
    for key, value in fresh.adapters["extra"].state_dict().items():
        assert torch.equal(loaded.adapters["extra"].state_dict()[key], value.double()), key


def test_multi_adapter_switching(fresh, reference_images):
    images = list(reference_images.values())[:3]
    second = fresh.add_multicue_adapter("second", task="aesthetics", dataset="ava-toy")
    _randomise(second, seed=1)
    tiny = fresh.score(images, adapter="tiny")
    other = fresh.score(images, adapter="second")
    assert not torch.allclose(tiny, other, atol=1e-4)
    pixels = fresh.image_processor(images, crop_mode="center")["pixel_values"]
    with torch.no_grad():
        fresh.set_multicue_adapter("second")
        active = fresh(pixels).scores
        fresh.set_multicue_adapter(None)
        zero_shot = fresh(pixels).scores
        second_module = fresh.adapters["second"]
        explicit = fresh.level_head(
            fresh.get_image_features(pixels),
            fresh.prompt_embeds("level5"),
            second_module.levels,
            fresh.clip.logit_scale,
            adapter=second_module,
        )[0]
    assert torch.equal(active, explicit) and not torch.allclose(active, zero_shot, atol=1e-4)
    assert fresh.resolve(adapter="second")[0] == "aesthetics"
    fresh.set_multicue_adapter("second")
    fresh.delete_multicue_adapter("second")
    assert (
        fresh.active_multicue_adapter is None
        and "second" not in fresh.config.adapters
        and "second" not in fresh.adapters
    )
    with pytest.raises(ValueError, match="unknown adapter 'second'"):
        fresh.set_multicue_adapter("second")
    with pytest.raises(ValueError, match="unknown adapter"):
        fresh.score(images, adapter="second")
    assert torch.equal(fresh.score(images, adapter="tiny"), tiny)  # the others are untouched


def test_load_adapter_errors(fresh, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json: missing"):
        fresh.load_multicue_adapter(tmp_path)
    fresh.save_multicue_adapter(tmp_path / "a", "tiny")
    with pytest.raises(ValueError, match="already exists"):
        fresh.load_multicue_adapter(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "embed_dim": 512}))
    with pytest.raises(ValueError, match="size 512, this model's are 64"):
        fresh.load_multicue_adapter(tmp_path / "a", "b")
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "bottleneck_dim": 16}))
    with pytest.raises(ValueError, match="weights do not fit"):
        fresh.load_multicue_adapter(tmp_path / "a", "c")
    assert "c" not in fresh.config.adapters


def test_custom_prompt_set_travels_with_the_adapter(fresh, model_dir, tmp_path):
    fresh.config.prompt_sets["mine"] = {"task": "quality", "groups": {"g": ["a", "b", "c", "d", "e"]}}
    fresh.add_multicue_adapter("m", prompt_set="mine")
    fresh.save_multicue_adapter(tmp_path / "m", "m")
    other = UniQAModel.from_pretrained(model_dir)
    other.load_multicue_adapter(tmp_path / "m")
    assert other.config.prompt_sets["mine"]["groups"] == {"g": ["a", "b", "c", "d", "e"]}


class LocalFolderApi:
    """Stands in for `huggingface_hub.HfApi`: repos are folders under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.created: list[tuple[str, bool | None]] = []

    def create_repo(self, repo_id: str, private: bool | None = None, exist_ok: bool = False) -> None:
        self.created.append((repo_id, private))
        (self.root / repo_id).mkdir(parents=True, exist_ok=exist_ok)

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str, revision: str | None = None) -> str:
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        return commit_message


def test_push_multicue_adapter_to_hub_local_folder(fresh, model_dir, tmp_path):
    api = LocalFolderApi(tmp_path / "hub")
    message = fresh.push_multicue_adapter_to_hub("me/uniqa-tiny-adapter", "tiny", private=True, api=api)
    assert api.created == [("me/uniqa-tiny-adapter", True)] and "tiny" in message
    repo = tmp_path / "hub" / "me" / "uniqa-tiny-adapter"
    assert {p.name for p in repo.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    other = UniQAModel.from_pretrained(model_dir)
    other.delete_multicue_adapter("tiny")
    other.load_multicue_adapter(repo)
    assert all(
        torch.equal(v, other.adapters["tiny"].state_dict()[k]) for k, v in fresh.adapters["tiny"].state_dict().items()
    )


def test_lora_wrap_train_merge(fresh, reference_images, tmp_path):
    images = list(reference_images.values())
    pixels = fresh.image_processor(images, crop_mode="center")["pixel_values"]
    labels = torch.linspace(0.1, 0.9, len(images))
    with torch.no_grad():
        base_embeds = fresh.get_image_features(pixels)
        fresh.set_multicue_adapter("tiny")
        before = fresh(pixels).scores
    peft_model = add_lora(fresh, "tiny", rank=4, alpha=8)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "vision_model" in n for n in trainable)
    assert any("adapters.tiny" in n and "levels" in n for n in trainable)
    assert not any("text_model" in n for n in trainable)
    items = [{"pixel_values": pixels[i : i + 1], "labels": labels[i]} for i in range(len(images))]
    args = FinetuneTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=4,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = Trainer(model=peft_model, args=args, train_dataset=items, data_collator=collate_pixels)
    losses_before = peft_model(pixel_values=pixels, labels=labels).loss.item()
    trainer.train()
    peft_model.eval()
    with torch.no_grad():
        trained = peft_model(pixel_values=pixels, labels=labels)
    assert trained.loss.item() < losses_before
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, UniQAModel) and not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        after = merged(pixels).scores
        merged_embeds = merged.get_image_features(pixels)
    assert torch.allclose(after, trained.scores, atol=1e-5)  # merging keeps the trained model's outputs
    assert not torch.allclose(after, before, atol=1e-4)
    assert not torch.allclose(merged_embeds, base_embeds, atol=1e-4)  # the vision tower itself was tuned


def test_transformers_peft_integration_is_not_overridden():
    """The multi-cue adapters use names of their own: transformers' PEFT methods keep their contract."""
    from transformers.integrations.peft import PeftAdapterMixin

    for name in ("add_adapter", "load_adapter", "set_adapter", "delete_adapter", "active_adapters"):
        assert getattr(UniQAModel, name) is getattr(PeftAdapterMixin, name), name
    assert not callable(getattr(UniQAModel(UniQAModel.config_class()), "active_multicue_adapter", None))


def test_from_pretrained_hands_peft_folders_and_adapter_kwargs_to_transformers(fresh, model_dir, tmp_path, monkeypatch):
    """A LoRA folder saved by peft goes through transformers' own `load_adapter`, with `adapter_kwargs` intact
    (peft itself runs there only from transformers' minimum peft version on; here the call is recorded)."""
    add_lora(fresh, "tiny", rank=2).save_pretrained(tmp_path / "lora")
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    calls = []
    monkeypatch.setattr(UniQAModel, "load_adapter", lambda self, path, **kwargs: calls.append((path, kwargs)))
    loaded = UniQAModel.from_pretrained(tmp_path / "lora", adapter_kwargs={"revision": "abc123"})
    assert isinstance(loaded, UniQAModel) and "tiny" in loaded.adapters  # the base model named by the folder
    [(path, kwargs)] = calls
    assert str(path) == str(tmp_path / "lora") and kwargs["adapter_kwargs"]["revision"] == "abc123"
