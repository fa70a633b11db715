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
    AdapterArguments,
    CachedFeatureDataset,
    CachedFeatureScorer,
    FeatureCache,
    FinetuneTrainingArguments,
    augmented_crops,
    collate_features,
    copy_adapter_state,
    crop_for_epoch,
    finetune_adapter,
    finetune_arguments,
    normalize_mos,
    read_mos_table,
    split_table,
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


QUICK = {"num_train_epochs": 3, "crops_per_image": 2, "eval_crops": 4, "disable_tqdm": True}


def quick(**overrides) -> dict:
    """`finetune_adapter`'s `args` and `adapter_args` for a short run (QUICK + overrides)."""
    adapter_args, args = finetune_arguments({**QUICK, **overrides})
    return {"args": args, "adapter_args": adapter_args}


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
    # not content-seeded: two images of one size get the same windows and flips from one seed
    images = [np.asarray(Image.open(blur_table[i][0]).convert("RGB")) for i in (0, 3)]
    shared = [augmented_crops(processor, image, crops=6, seed=3, content_seeded=False) for image in images]
    raw = [processor.crop_image(image, "random", 6, seed=3, content_seeded=False) for image in images]
    flips = [[not torch.equal(c, r) for c, r in zip(s, r0, strict=True)] for s, r0 in zip(shared, raw, strict=True)]
    assert flips[0] == flips[1] and any(flips[0]) and not torch.equal(shared[0], shared[1])


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


def test_recipe_defaults_come_from_trainer_arguments_and_can_be_overridden():
    adapter_args, args = finetune_arguments({})
    assert (args.learning_rate, args.per_device_train_batch_size, args.num_train_epochs, args.seed) == (
        2e-4,
        8,
        50,
        123,
    )
    assert (args.lr_scheduler_type, args.optim) == ("cosine", "adamw_torch")
    assert args.weight_decay == 0 and args.warmup_steps == 0
    assert (args.eval_strategy, args.save_strategy, args.metric_for_best_model) == ("epoch", "epoch", "srcc")
    assert args.load_best_model_at_end and args.greater_is_better and args.output_dir is None
    assert adapter_args == AdapterArguments() and adapter_args.crops_per_image == 8 and adapter_args.cache_features
    assert FinetuneTrainingArguments().to_dict() == args.to_dict()  # the same defaults from Python
    _, args = finetune_arguments({"num_train_epochs": 20, "learning_rate": 1e-4, "output_dir": "runs/x"})
    assert (args.num_train_epochs, args.learning_rate, args.output_dir) == (20, 1e-4, "runs/x")
    with pytest.raises(ValueError, match="epochs"):  # unknown keys are refused, not ignored
        finetune_arguments({"epochs": 3})


def test_finetune_lowers_loss_and_tags_adapter(model_dir, blur_table, tmp_path, monkeypatch):
    model = fresh_model(model_dir)
    backbone = {k: v.clone() for k, v in model.clip.state_dict().items()}
    train, validation = split_table(blur_table, 0.33, seed=0)
    run_in = tmp_path / "cwd"
    run_in.mkdir()
    monkeypatch.chdir(run_in)
    settings = quick(num_train_epochs=8, learning_rate=2e-3)
    result = finetune_adapter(
        model, train, validation, "blur", (0, 100), dataset="blur-toy", cache_dir=tmp_path / "cache", **settings
    )
    assert list(run_in.iterdir()) == []  # without output_dir, the checkpoints went to a removed temporary folder
    assert result["loss"] < result["untrained"]["loss"]
    assert [h["epoch"] for h in result["history"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    best = max(result["history"], key=lambda h: h["srcc"])
    assert result["best_epoch"] == best["epoch"]  # Trainer's metric_for_best_model="srcc", greater is better
    for name in ("srcc", "plcc", "krcc", "rmse", "loss"):  # load_best_model_at_end: the best epoch's adapter
        assert result[name] == pytest.approx(best[name], abs=1e-6), name
    meta = model.config.adapters["blur"]
    assert meta["dataset"] == "blur-toy" and meta["mos_range"] == [0.0, 100.0] and meta["task"] == "quality"
    assert meta["metrics"]["srcc"] == pytest.approx(result["srcc"], abs=1e-6)
    assert meta["training"]["num_train_epochs"] == 8 and meta["training"]["learning_rate"] == 2e-3
    assert meta["training"]["crops_per_image"] == 2 and meta["training"]["train_images"] == len(train)
    assert "output_dir" not in meta["training"]
    assert all(torch.equal(v, backbone[k]) for k, v in model.clip.state_dict().items())  # backbone frozen
    assert all(p.requires_grad for p in model.clip.parameters())  # requires_grad flags untouched
    # scoring through the model gives the validation metrics the training loop computed from cached features
    scores = model.score([p for p, _ in validation], adapter="blur", crops=4)
    targets = np.array([m for _, m in validation]) / 100.0
    assert iqa_metrics(scores.numpy(), targets)["srcc"] == pytest.approx(result["srcc"], abs=1e-6)
    assert float(((scores.numpy() - targets) ** 2).mean()) == pytest.approx(result["loss"], abs=1e-5)
    # the untrained metrics are those of the freshly initialised adapter (the same seed)
    torch.manual_seed(settings["args"].seed)
    model.add_multicue_adapter("untrained", prompt_set="level5")
    untrained = model.score([p for p, _ in validation], adapter="untrained", crops=4).numpy()
    assert iqa_metrics(untrained, targets)["srcc"] == pytest.approx(result["untrained"]["srcc"], abs=1e-6)
    assert float(((untrained - targets) ** 2).mean()) == pytest.approx(result["untrained"]["loss"], abs=1e-5)
    with pytest.raises(ValueError, match="already exists"):
        finetune_adapter(model, train, validation, "blur", (0, 100), **settings)
    model.save_pretrained(tmp_path / "saved")  # the trained adapter and its tags survive a save/load
    reloaded = UniQAModel.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.config.adapters["blur"]["metrics"] == meta["metrics"]
    assert torch.equal(reloaded.score([p for p, _ in validation[:2]], adapter="blur", crops=4), scores[:2])


def test_validation_with_a_different_number_of_crops_per_image(model_dir, blur_table, tmp_path):
    """Trainer's evaluation of padded crop sets gives the metrics `model.score` gives (grid crops: 1 to 9)."""
    sizes = [(224, 224), (300, 224), (448, 300), (640, 480), (224, 500), (256, 240)]
    validation = []
    for (path, mos), size in zip(blur_table[::4], sizes, strict=True):
        out = tmp_path / f"{len(validation)}.png"
        Image.open(path).convert("RGB").resize(size).save(out)
        validation.append((str(out), mos))
    model = fresh_model(model_dir)
    counts = [len(f) for f in FeatureCache(model).eval_features([p for p, _ in validation], None, None, None)]
    assert len(set(counts)) >= 3, counts
    settings = quick(num_train_epochs=2, per_device_eval_batch_size=4, learning_rate=2e-3)
    settings["adapter_args"].eval_crops = None  # the model's grid
    result = finetune_adapter(model, blur_table[1::4], validation, "sizes", (0, 100), **settings)
    scores = model.score([p for p, _ in validation], adapter="sizes").numpy()
    targets = np.array([m for _, m in validation]) / 100.0
    expected = iqa_metrics(scores, targets)
    for name in ("srcc", "plcc", "krcc", "rmse"):
        assert result[name] == pytest.approx(expected[name], abs=1e-5), name
    assert result["loss"] == pytest.approx(float(((scores - targets) ** 2).mean()), abs=1e-5)


def test_cached_training_equals_uncached(model_dir, blur_table):
    train, validation = split_table(blur_table, 0.33, seed=0)
    states = []
    for cache_features in (True, False):
        model = fresh_model(model_dir)
        settings = quick(num_train_epochs=2, cache_features=cache_features)
        result = finetune_adapter(model, train[:10], validation[:4], "a", (0, 100), **settings)
        states.append((copy_adapter_state(model, "a"), result))
    (cached, r1), (uncached, r2) = states
    for key in cached:
        assert torch.allclose(cached[key], uncached[key], atol=1e-5), key
    untrained = fresh_model(model_dir)
    torch.manual_seed(123)  # the recipe's seed: finetune_adapter's initialisation
    untrained.add_multicue_adapter("a")
    assert not torch.equal(cached["fc.0.weight"], untrained.adapters["a"].fc[0].weight)  # both paths trained it
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
    model.add_multicue_adapter("epochs").requires_grad_(True)
    args = FinetuneTrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=epochs,
        per_device_train_batch_size=3,
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(
        model=CachedFeatureScorer(model, "epochs"),
        args=args,
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


class _Steps(TrainerCallback):
    def __init__(self):
        self.seen: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(state.global_step)


def test_finetune_resumes_an_interrupted_run_to_the_same_result(model_dir, blur_table, tmp_path):
    train, validation = split_table(blur_table, 0.33, seed=0)
    train, validation = train[:8], validation[:4]  # 2 steps per epoch
    cache = tmp_path / "cache"

    def run(output_dir, resume=None, callbacks=(), **overrides):
        settings = quick(
            num_train_epochs=4,
            per_device_train_batch_size=4,
            learning_rate=2e-3,
            output_dir=str(output_dir),
            resume_from_checkpoint=resume,
            **overrides,
        )
        model = fresh_model(model_dir)
        result = finetune_adapter(
            model, train, validation, "r", (0, 100), cache_dir=cache, callbacks=callbacks, **settings
        )
        return result, copy_adapter_state(model, "r"), model.config.adapters["r"]

    straight, straight_state, straight_meta = run(tmp_path / "straight")
    # precondition: the selected weights come from before the interruption, so they must survive it in the checkpoint
    assert straight["best_epoch"] <= 2, straight["history"]
    with pytest.raises(_Interrupt):
        run(tmp_path / "run", callbacks=[_InterruptAfterSave(step=4)])  # after the epoch-2 checkpoint
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_metric"] == pytest.approx(max(h["srcc"] for h in straight["history"][:2]))
    steps = _Steps()
    resumed, resumed_state, resumed_meta = run(tmp_path / "run", resume="latest", callbacks=[steps])
    assert steps.seen == [5, 6, 7, 8]  # it continued after the epoch-2 checkpoint (not from the start)
    assert (tmp_path / "run" / "checkpoint-8").is_dir()  # and went on to the end
    assert resumed == straight  # metrics, best epoch, untrained metrics and every epoch's history, exactly
    assert resumed_meta == straight_meta  # the adapter's tags (resume options are not part of the recipe)
    for key, value in straight_state.items():
        assert torch.equal(resumed_state[key], value), key
    # with save_total_limit=1 Trainer keeps the best checkpoint through the run and only it at the end
    limited, _, _ = run(tmp_path / "limited", save_total_limit=1)
    kept = [p.name for p in (tmp_path / "limited").glob("checkpoint-*")]
    assert limited == straight and kept == [f"checkpoint-{2 * int(straight['best_epoch'])}"]
    # a checkpoint cut off while saving (Trainer writes trainer_state.json last) is refused by Trainer
    (tmp_path / "run" / "checkpoint-8" / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-8/trainer_state\.json"):
        run(tmp_path / "run", resume="latest")
    with pytest.raises(FileNotFoundError, match="no checkpoint-N folder"):
        (tmp_path / "empty").mkdir()
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
        "num_train_epochs": 1,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = finetune.main([str(tmp_path / "config.json")])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["srcc"] == pytest.approx(result["srcc"]) and saved["train_images"] == 9
    assert saved["finetune"]["num_train_epochs"] == 1 and saved["finetune"]["crops_per_image"] == 2
    assert saved["data"]["split_seed"] == 123 and len(saved["history"]) == 1
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_uniqa_finetune_command_dashed_flags_checkpoints_and_resume(tmp_path, model_dir, blur_table):
    from modeling_uniqa.tools.cli import main as cli_main
    from modeling_uniqa.training.finetune import parse

    (tmp_path / "t.csv").write_text("image,mos\n" + "".join(f"{p},{m}\n" for p, m in blur_table[:12]))
    common = ["--model", str(model_dir), "--table", str(tmp_path / "t.csv"), "--mos-min", "0", "--mos-max", "100"]
    common += ["--validation-fraction", "0.25"]
    # dashes and underscores are the same flags; TrainingArguments' flags override the recipe
    dashed = parse([*common, "--adapter-name", "x", "--num-train-epochs", "2", "--no-cache-features"])
    plain = parse([*common, "--adapter_name", "x", "--num_train_epochs", "2", "--cache_features", "false"])
    assert dashed[0] == plain[0] and dashed[1] == plain[1] and dashed[2].to_dict() == plain[2].to_dict()
    assert dashed[2].num_train_epochs == 2 and dashed[2].learning_rate == 2e-4 and not dashed[1].cache_features
    run = [*common, "--adapter-name", "cli", "--num-train-epochs", "2", "--crops-per-image", "2", "--eval-crops", "2"]
    out = tmp_path / "run"
    run += ["--output-dir", str(out), "--disable-tqdm", "true", "--results", str(tmp_path / "r.json")]
    assert cli_main(["finetune", *run]) == 0
    first = json.loads((tmp_path / "r.json").read_text())
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # resuming a finished run from its last checkpoint trains nothing more and reports the same result
    assert cli_main(["finetune", *run, "--resume-from-checkpoint", "latest"]) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert {k: again[k] for k in ("srcc", "best_epoch", "history")} == {
        k: first[k] for k in ("srcc", "best_epoch", "history")
    }
