"""Adapter fine-tuning: tables, splits, augmentation, the feature cache and Trainer runs on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from transformers import Trainer, TrainerCallback

from modeling_uniqa import UniQAModel
from modeling_uniqa.training.finetuning import (
    CachedFeatureDataset,
    CachedFeatureScorer,
    FeatureCache,
    FinetuneArguments,
    ValidationSelector,
    augmented_crops,
    collate_features,
    copy_adapter_state,
    crop_for_epoch,
    finetune_adapter,
    normalize_mos,
    read_mos_table,
    split_table,
    training_arguments,
)
from modeling_uniqa.training.metrics import iqa_metrics


@pytest.fixture(scope="module")
def blur_table(tmp_path_factory, reference_images) -> list[tuple[str, float]]:
    """24 images 256x240 (8 scenes x 3 blur levels); MOS 0-100 falls with blur."""
    folder = tmp_path_factory.mktemp("blur")
    table = []
    for name, path in reference_images.items():
        base = Image.open(path).convert("RGB").resize((256, 240), Image.BICUBIC)
        for level in range(3):
            out = folder / f"{name}_{level}.png"
            base.filter(ImageFilter.GaussianBlur(3 * level)).save(out)
            table.append((str(out), 90.0 - 35.0 * level))
    return table


def fresh_model(model_dir) -> UniQAModel:
    return UniQAModel.from_pretrained(model_dir).eval()


QUICK = {"epochs": 3, "crops_per_image": 2, "eval_crops": 4, "progress": False}


def test_read_mos_table_csv_jsonl_and_errors(tmp_path, blur_table):
    root = tmp_path
    (root / "t.csv").write_text("image,mos\n" + "".join(f"{p},{m}\n" for p, m in blur_table[:3]))
    (root / "t.jsonl").write_text("".join(json.dumps({"file": p, "score": m}) + "\n" for p, m in blur_table[:3]))
    assert read_mos_table(root / "t.csv") == blur_table[:3]
    assert read_mos_table(root / "t.jsonl", image_column="file", mos_column="score") == blur_table[:3]
    (root / "bad.csv").write_text("image,mos\nnope.png,3\n")
    with pytest.raises(FileNotFoundError, match=r"bad\.csv: row 1: image .*nope\.png"):
        read_mos_table(root / "bad.csv")
    (root / "nomos.csv").write_text(f"image,mos\n{blur_table[0][0]},high\n")
    with pytest.raises(ValueError, match="not a number"):
        read_mos_table(root / "nomos.csv")


def test_split_is_seeded_and_order_independent(blur_table):
    train, held = split_table(blur_table, 0.25, seed=7)
    assert len(held) == 6 and len(train) == 18
    assert not set(train) & set(held) and set(train) | set(held) == set(blur_table)
    assert split_table(list(reversed(blur_table)), 0.25, seed=7) == (train, held)
    assert split_table(blur_table, 0.25, seed=8)[1] != held


def test_augmented_crops_are_deterministic_flipped_windows(model, blur_table):
    processor = model.image_processor
    crops = augmented_crops(processor, blur_table[0][0], crops=6, seed=3)
    assert crops.shape == (6, 3, 224, 224)
    assert torch.equal(crops, augmented_crops(processor, blur_table[0][0], crops=6, seed=3))
    assert not torch.equal(crops, augmented_crops(processor, blur_table[0][0], crops=6, seed=4))
    plain = processor.crop_image(blur_table[0][0], crop_mode="random", crops=6, seed=3)
    flipped = [not torch.equal(c, p) for c, p in zip(crops, plain, strict=True)]
    assert any(flipped) and not all(flipped)  # with this seed, some crops are flipped and some are not
    for crop, original, was_flipped in zip(crops, plain, flipped, strict=True):
        assert torch.equal(crop, original.flip(-1) if was_flipped else original)


def test_feature_cache_hits_and_keys(tmp_path, model, blur_table):
    images = [p for p, _ in blur_table[:3]]
    cache = FeatureCache(model, tmp_path)
    first = cache.train_features(images, crops=2, seed=1, max_side=None)
    assert cache.misses == 3 and first[0].shape == (2, model.config.projection_dim)
    again = FeatureCache(model, tmp_path)
    second = again.train_features(images, crops=2, seed=1, max_side=None)
    assert again.hits == 3 and again.misses == 0
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = again.train_features(images[:1], crops=2, seed=2, max_side=None)  # another recipe: another key
    assert again.misses == 1 and not torch.equal(other[0], first[0])
    with torch.no_grad():
        direct = model.get_image_features(augmented_crops(model.image_processor, images[0], 2, 1))
    assert torch.allclose(first[0], direct, atol=1e-5)


def test_finetune_lowers_loss_and_tags_adapter(model_dir, blur_table, tmp_path):
    model = fresh_model(model_dir)
    backbone = {k: v.clone() for k, v in model.clip.state_dict().items()}
    train, validation = split_table(blur_table, 0.33, seed=0)
    args = FinetuneArguments(**{**QUICK, "epochs": 8, "learning_rate": 2e-3})
    result = finetune_adapter(
        model, train, validation, "blur", (0, 100), dataset="blur-toy", args=args, cache_dir=tmp_path
    )
    assert result["loss"] < result["untrained"]["loss"]
    assert len(result["history"]) == 8 and result["best_epoch"] in [h["epoch"] for h in result["history"]]
    best = max(h["srcc"] for h in result["history"])
    assert result["srcc"] == pytest.approx(best)  # the selected checkpoint is the best validation epoch
    meta = model.config.adapters["blur"]
    assert meta["dataset"] == "blur-toy" and meta["mos_range"] == [0.0, 100.0] and meta["task"] == "quality"
    assert meta["metrics"]["srcc"] == pytest.approx(result["srcc"], abs=1e-6)
    assert all(torch.equal(v, backbone[k]) for k, v in model.clip.state_dict().items())  # backbone frozen
    assert all(p.requires_grad for p in model.clip.parameters())  # requires_grad flags restored
    # scoring through the model gives the validation metrics the training loop computed from cached features
    scores = model.score([p for p, _ in validation], adapter="blur", crops=4)
    targets = np.array([m for _, m in validation]) / 100.0
    assert iqa_metrics(scores.numpy(), targets)["srcc"] == pytest.approx(result["srcc"], abs=1e-6)
    assert float(((scores.numpy() - targets) ** 2).mean()) == pytest.approx(result["loss"], abs=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        finetune_adapter(model, train, validation, "blur", (0, 100), args=args)
    model.save_pretrained(tmp_path / "saved")  # the trained adapter and its tags survive a save/load
    reloaded = UniQAModel.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.config.adapters["blur"]["metrics"] == meta["metrics"]
    assert torch.equal(reloaded.score([p for p, _ in validation[:2]], adapter="blur", crops=4), scores[:2])


def test_cached_training_equals_uncached(model_dir, blur_table):
    train, validation = split_table(blur_table, 0.33, seed=0)
    states = []
    for use_cache in (True, False):
        model = fresh_model(model_dir)
        args = FinetuneArguments(**{**QUICK, "epochs": 2, "use_cache": use_cache})
        result = finetune_adapter(model, train[:10], validation[:4], "a", (0, 100), args=args)
        states.append((copy_adapter_state(model, "a"), result))
    (cached, r1), (uncached, r2) = states
    for key in cached:
        assert torch.allclose(cached[key], uncached[key], atol=1e-5), key
    assert r1["history"][0]["loss"] == pytest.approx(r2["history"][0]["loss"], abs=1e-6)


def test_trainer_shows_each_image_once_per_epoch_as_the_crop_of_that_epoch(model_dir, tmp_path):
    images, crops, epochs, seed = 6, 4, 3, 5
    # crop k of image i is the constant vector 10 i + k, so a batch tells which crop of which image it holds
    features = [torch.full((crops, 64), 10.0 * i) + torch.arange(crops, dtype=torch.float32)[:, None] for i in range(6)]
    seen: list[list[tuple[int, int]]] = []

    def collate(items):
        seen.append([divmod(int(item["image_embeds"][0, 0]), 10) for item in items])  # (i, k)
        return collate_features(items)

    model = fresh_model(model_dir)
    model.requires_grad_(False)
    model.add_adapter("epochs").requires_grad_(True)
    args = FinetuneArguments(epochs=epochs, batch_size=3, progress=False)
    Trainer(
        model=CachedFeatureScorer(model, "epochs"),
        args=training_arguments(args, str(tmp_path), logging_strategy="no"),
        train_dataset=CachedFeatureDataset(features, [0.5] * images, train=True, seed=seed),
        data_collator=collate,
    ).train()
    assert len(seen) == epochs * 2
    per_epoch = [sorted(seen[2 * e] + seen[2 * e + 1]) for e in range(epochs)]
    for epoch, shown in enumerate(per_epoch):
        assert shown == [(i, crop_for_epoch(seed, i, epoch, crops)) for i in range(images)], epoch
    assert len({tuple(shown) for shown in per_epoch}) == epochs  # the crops change from epoch to epoch


class _Interrupt(Exception):
    pass


class _InterruptAfterSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt


def test_finetune_resumes_an_interrupted_run_to_the_same_result(model_dir, blur_table, tmp_path):
    train, validation = split_table(blur_table, 0.33, seed=0)
    train, validation = train[:8], validation[:4]  # 2 steps per epoch
    quick = {**QUICK, "epochs": 4, "batch_size": 4, "learning_rate": 2e-3}
    cache = tmp_path / "cache"

    def run(output_dir, resume=None, callbacks=()):
        args = FinetuneArguments(**quick, output_dir=str(output_dir), resume_from_checkpoint=resume)
        model = fresh_model(model_dir)
        result = finetune_adapter(
            model, train, validation, "r", (0, 100), args=args, cache_dir=cache, callbacks=callbacks
        )
        return result, copy_adapter_state(model, "r"), model.config.adapters["r"]

    straight, straight_state, straight_meta = run(tmp_path / "straight")
    # precondition: the selected weights come from before the interruption, so they must survive it in the checkpoint
    assert straight["best_epoch"] <= 2, straight["history"]
    with pytest.raises(_Interrupt):
        run(tmp_path / "run", callbacks=[_InterruptAfterSave(step=4)])  # after the epoch-2 checkpoint
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "run" / "checkpoint-4" / ValidationSelector.STATE).is_file()
    resumed, resumed_state, resumed_meta = run(tmp_path / "run", resume="latest")
    assert (tmp_path / "run" / "checkpoint-8").is_dir()  # it went on to the end
    assert resumed == straight  # metrics, best epoch, untrained metrics and every epoch's history, exactly
    assert resumed_meta == straight_meta  # the adapter's tags (resume options are not part of the recipe)
    for key, value in straight_state.items():
        assert torch.equal(resumed_state[key], value), key
    # a checkpoint without the selection (not finetune_adapter's, or killed while saving) is refused
    (tmp_path / "run" / "checkpoint-4" / ValidationSelector.STATE).unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-4/best_adapter\.json not found"):
        run(tmp_path / "run", resume=str(tmp_path / "run" / "checkpoint-4"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run(tmp_path / "empty", resume="latest")


def test_mos_normalisation_flips_lower_is_better_scales():
    assert normalize_mos([0, 25, 100], (0, 100)).tolist() == [0.0, 0.25, 1.0]
    assert normalize_mos([1, 2, 5], (1, 5), higher_is_better=False).tolist() == [1.0, 0.75, 0.0]
    assert normalize_mos([-10, 120], (0, 100)).tolist() == [0.0, 1.0]  # clipped, as the dataset builders do


def test_finetune_script_from_json_config(tmp_path, model_dir, blur_table):
    from modeling_uniqa.training import finetune

    (tmp_path / "t.csv").write_text("image,mos\n" + "".join(f"{p},{m}\n" for p, m in blur_table[:12]))
    config = {
        "model": str(model_dir),
        "adapter_name": "cfg",
        "table": str(tmp_path / "t.csv"),
        "mos_min": 0,
        "mos_max": 100,
        "validation_fraction": 0.25,
        "save_adapter": str(tmp_path / "adapter"),
        "results": str(tmp_path / "results.json"),
        **QUICK,
        "epochs": 1,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = finetune.main([str(tmp_path / "config.json")])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["srcc"] == pytest.approx(result["srcc"]) and saved["train_images"] == 9
    assert saved["finetune"]["epochs"] == 1 and saved["data"]["split_seed"] == 123
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
