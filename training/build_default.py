"""Build the bundled default model `models/uniqa-tiny` from scratch: the whole reproducible recipe.

    python -m training.build_default [--config training/configs/uniqa_tiny.yaml] [--fresh]

Stages (each writes under `work_dir` and is skipped when its output exists; `--fresh` deletes `work_dir` first):
1. photos    sources resized to `short_side`: livec *training* photos with high MOS, scikit-image and Debian photos;
             held-out photos (scikit-image's astronaut/chelsea/coffee and livec *validation* photos) kept apart.
2. corpus    synthetic distortions of the sources (`datasets_scripts.synthetic`) + the livec training photos
             themselves with their real MOS -> a caption table.
3. captions  the template captioner -> `corpus/captions.jsonl` (corpus format).
4. pretrain  a CLIP from the config (random init), contrastive pre-training (`modeling_uniqa.training.pretraining`).
5. adapter   the multi-cue adapter `livec` on the livec training split, selected on the validation split
             (`modeling_uniqa.training.finetuning.finetune_adapter`).
6. evaluate  livec validation SRCC/PLCC, SRCC of score vs. distortion level per type on held-out photos, CPU speed.
7. examples  `examples_dir` (`examples/`): held-out scikit-image photos and blurred / noisy / JPEG versions.
8. export    the model folder (`output`), recording which dataset images trained and selected it.
9. protocol  `uniqa protocols compare` on the exported model (config `protocol:`): the model zero-shot and with an
             adapter per split against a sharpness score and BRISQUE + SVR, on random 80/20 splits of livec_jpg
             (`modeling_uniqa.training.comparison`), with distortion curves. How a recipe is judged.
10. card     the model card, from the measured numbers (`training.model_card`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from training.model_card import BUILD_FILES, read_records, write_model_card

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("build_default")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """The build config (YAML)."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"build config {path} does not exist") from None


def resolve(path: str | os.PathLike) -> Path:
    """A config path, relative to the repository root."""
    return Path(path) if Path(path).is_absolute() else ROOT / path


def livec_split(config: dict[str, Any]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The documented livec_jpg split: `split_table` over image names, seeded -> `(train, validation)`.

    Optional `data.max_livec_train` / `data.max_livec_validation` keep only the first N of each (miniature builds).
    """
    from modeling_uniqa.training.finetuning import read_mos_table, split_table

    data = config["data"]
    livec = resolve(data["livec_dir"])
    table = read_mos_table(livec / "labels.csv", image_root=livec / "ChallengeDB_release" / "Images")
    train, validation = split_table(table, data["livec_validation_fraction"], data["livec_split_seed"])
    return train[: data.get("max_livec_train")], validation[: data.get("max_livec_validation")]


def resized(image, short_side: int):
    """PIL image -> RGB, downscaled so its short side is `short_side` (never upscaled)."""
    from modeling_uniqa import load_image

    image = load_image(image)
    scale = short_side / min(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), 3)
    return image


def skimage_photo(name: str):
    import skimage.data

    array = getattr(skimage.data, name)()
    return np.stack([array] * 3, -1) if array.ndim == 2 else array


# ----------------------------------------------------------------------------------------------------------------
# Stages.


def stage_photos(config: dict[str, Any], work: Path) -> dict[str, Any]:
    """Write `photos/train/*.png` and `photos/heldout/*.png`; returns the manifest."""
    data = config["data"]
    train, validation = livec_split(config)
    short = data["short_side"]
    sources: dict[str, Any] = {}
    good_train = [path for path, mos in train if mos >= data["source_min_mos"]]
    for path in good_train[: data.get("max_livec_sources")]:  # optional cap (miniature builds)
        sources[f"livec_{Path(path).stem}"] = path
    for name in data["skimage_train"]:
        sources[f"skimage_{name}"] = skimage_photo(name)
    debian = Path(data.get("debian_backgrounds") or "/nonexistent")
    debian_files = sorted(debian.glob("*.jpg")) + [Path(p) for p in data.get("extra_debian_photos", [])]
    debian_files = [p for p in debian_files if p.is_file()]
    if not debian_files:
        logger.warning("no Debian background photos found under %s: apt-get install mate-backgrounds", debian)
    for path in debian_files:
        sources[f"debian_{path.stem}"] = path
    heldout: dict[str, Any] = {f"skimage_{n}": skimage_photo(n) for n in data["skimage_heldout"]}
    good_val = [(p, m) for p, m in validation if m >= data["source_min_mos"]]
    for path, _ in good_val[: data["heldout_livec_photos"]]:
        heldout[f"livec_{Path(path).stem}"] = path
    for split, photos in (("train", sources), ("heldout", heldout)):
        folder = work / "photos" / split
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in tqdm(photos.items(), desc=f"photos ({split})"):
            resized(image, short).save(folder / f"{name}.png")
    manifest = {
        "train_sources": sorted(sources),
        "heldout": sorted(heldout),
        "debian_photos": [str(p) for p in debian_files],
        "livec_train": [Path(p).name for p, _ in train],
        "livec_validation": [Path(p).name for p, _ in validation],
    }
    (work / "photos" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def stage_corpus(config: dict[str, Any], work: Path) -> Path:
    """Synthetic distortions of the training sources + the livec training photos -> `corpus/table.jsonl`.

    `mos_normalized`: livec sources and their distortions keep the photo's real MOS (the captioner caps it by the
    distortion level), the other undistorted sources count as perfect (1.0), their distortions have none."""
    from PIL import Image

    from datasets_scripts.synthetic import LEVELS, describe, distort

    corpus = work / "corpus"
    images = corpus / "images"
    (images / "synthetic").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config["seed"], 11])
    train, _ = livec_split(config)
    mos_by_name = {Path(p).stem: m / 100.0 for p, m in train}
    counts = levels_per_type(config)  # {distortion type: levels per source}, in the build's type order
    rows = []
    sources = sorted((work / "photos" / "train").glob("*.png"))
    for k, path in enumerate(tqdm(sources, desc="synthetic corpus")):
        pristine = Image.open(path).convert("RGB")
        name = f"synthetic/{path.stem}.png"
        pristine.save(images / name)
        mos = mos_by_name[path.stem.removeprefix("livec_")] if path.stem.startswith("livec_") else None
        rows.append(
            {
                "image_path": name,
                "level": 0,
                "distortion": "none",
                "mos_normalized": 1.0 if mos is None else mos,
                "source": path.stem,
            }
        )
        for distortion, count in counts.items():
            chosen = rng.choice(LEVELS, size=count, replace=False)
            for level in sorted(int(v) for v in chosen):
                name = f"synthetic/{path.stem}_{distortion}_{level}.png"
                distort(pristine, distortion, level, seed=config["seed"] + 1009 * k).save(images / name)
                row = {
                    "image_path": name,
                    "distortion": distortion,
                    "level": level,
                    "description": describe(distortion, level),
                    "source": path.stem,
                }
                rows.append(row if mos is None else {**row, "mos_normalized": mos})
    (images / "livec").mkdir(exist_ok=True)
    for path, mos in train:
        link = images / "livec" / Path(path).name
        if not link.exists():
            os.symlink(os.path.abspath(path), link)
        rows.append({"image_path": f"livec/{Path(path).name}", "mos_normalized": mos / 100.0, "source": "livec"})
    table = corpus / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return table


def stage_captions(config: dict[str, Any], work: Path) -> Path:
    from modeling_uniqa.training.captioning import CaptionRequest, TemplateCaptioner, caption_to_jsonl

    rows = [json.loads(line) for line in (work / "corpus" / "table.jsonl").read_text().splitlines()]
    output = work / "corpus" / "captions.jsonl"
    caption_to_jsonl([CaptionRequest.from_row(r) for r in rows], TemplateCaptioner(), output, batch_size=256)
    return output


def distortion_types(config: dict[str, Any]) -> tuple[str, ...]:
    """The synthetic distortion types of the build: optional `data.distortions`, else all of `DISTORTIONS`."""
    from datasets_scripts.synthetic import DISTORTIONS

    chosen = config["data"].get("distortions")
    chosen = DISTORTIONS if chosen is None else tuple(chosen)
    unknown = [name for name in chosen if name not in DISTORTIONS]
    if unknown or not chosen:
        raise ValueError(f"data.distortions: {unknown or 'empty'}; choose from {', '.join(DISTORTIONS)}")
    return chosen


def levels_per_type(config: dict[str, Any]) -> dict[str, int]:
    """How many distinct random levels (1..5) each distortion type gets per source photo: `data.levels_per_type`
    overrides `data.levels_per_distortion` for the types it names."""
    from datasets_scripts.synthetic import LEVELS

    data = config["data"]
    distortions = distortion_types(config)
    counts = {name: data["levels_per_distortion"] for name in distortions}
    overrides = dict(data.get("levels_per_type") or {})
    unknown = [name for name in overrides if name not in distortions]
    if unknown:
        raise ValueError(f"data.levels_per_type: {', '.join(unknown)} not among this build's distortion types")
    counts.update(overrides)
    wrong = {name: n for name, n in counts.items() if not 1 <= n <= len(LEVELS)}
    if wrong:
        raise ValueError(f"levels per distortion type must be 1..{len(LEVELS)}, got {wrong}")
    return counts


def heldout_rows(config: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """Every distortion type at levels 0..5 of each held-out photo (`iter_synthetic` rows)."""
    from datasets_scripts.synthetic import iter_synthetic

    photos = sorted((work / "photos" / "heldout").glob("*.png"))
    return list(iter_synthetic(photos, distortion_types(config), seed=config["seed"] + 777, include_reference=True))


def stage_pretrain(config: dict[str, Any], work: Path, resume: bool) -> Path:
    from modeling_uniqa.training.pretraining import (
        build_model,
        pretrain,
        pretraining_arguments,
        read_corpus,
        split_pretraining_config,
    )

    options, settings = split_pretraining_config(config["pretraining"])
    model = build_model(
        config["model"]["text_config"],
        config["model"]["vision_config"],
        config["model"]["projection_dim"],
        tokenizer_dir=work / "tokenizer",
        seed=config["seed"],
        logit_scale_init_value=config["model"].get("logit_scale_init_value", 2.6592),
    )
    corpus = read_corpus(work / "corpus" / "captions.jsonl")
    # a synthetic image's group is the photo it was made from (for `group_size`: content-matched batches), and its
    # distortion and level (0: the undistorted photo) are what the ranking loss compares
    table = [json.loads(line) for line in (work / "corpus" / "table.jsonl").read_text().splitlines()]
    synthetic = {
        row["image_path"]: {"group": row["source"], "distortion": row["distortion"], "level": row["level"]}
        for row in table
        if row["image_path"].startswith("synthetic/")
    }
    corpus = [{**entry, **synthetic.get(entry["image_path"], {})} for entry in corpus]
    _, validation = livec_split(config)
    skimage_rows = [r for r in heldout_rows(config, work) if r["reference_id"].startswith("skimage_")]
    tables = {
        "heldout_distortions": ([r["image"] for r in skimage_rows], [-float(r["level"]) for r in skimage_rows]),
        "livec_validation": ([p for p, _ in validation], [m for _, m in validation]),
    }
    args = pretraining_arguments(
        work / "pretrain", seed=config["seed"], data_seed=config["seed"], use_cpu=True, **settings
    )
    checkpoints = sorted((work / "pretrain").glob("checkpoint-*"))
    started = time.time()
    result = pretrain(
        model,
        corpus,
        work / "corpus" / "images",
        args,
        eval_tables=tables,
        resume_from_checkpoint=True if (resume and checkpoints) else None,
        **options,
    )
    result["wall_seconds"] = time.time() - started
    result["corpus_entries"] = len(corpus)
    (work / "pretrain" / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return work / "pretrain" / "final"


def stage_adapter(config: dict[str, Any], work: Path) -> Path:
    from modeling_uniqa import UniQAModel
    from modeling_uniqa.training.finetuning import finetune_adapter, finetune_arguments

    settings = dict(config["adapter"])
    name = settings.pop("name")
    # the config's `epochs` and `batch_size` (also read by the model card) are TrainingArguments' names for them
    settings["num_train_epochs"] = settings.pop("epochs")
    settings["per_device_train_batch_size"] = settings.pop("batch_size")
    adapter_args, args = finetune_arguments({**settings, "output_dir": str(work / "adapter" / "trainer")})
    model = UniQAModel.from_pretrained(work / "pretrain" / "final").eval()
    train, validation = livec_split(config)
    started = time.time()
    metrics = finetune_adapter(
        model,
        train,
        validation,
        name,
        mos_range=(0.0, 100.0),
        dataset="LIVE In the Wild Challenge (livec_jpg subset, 627 JPEG photos)",
        args=args,
        adapter_args=adapter_args,
        cache_dir=work / "adapter" / "features",
    )
    model.config.adapters[name]["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, float)}
    metrics["wall_seconds"] = time.time() - started  # metrics.json only: config.json stays the same across builds
    model.save_pretrained(work / "adapter" / "model")
    (work / "adapter" / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    return work / "adapter" / "model"


def stage_evaluate(config: dict[str, Any], work: Path) -> dict[str, Any]:
    from modeling_uniqa import UniQAModel
    from modeling_uniqa.training.metrics import iqa_metrics
    from modeling_uniqa.training.pretraining import level_srcc

    model = UniQAModel.from_pretrained(work / "adapter" / "model").eval()
    adapter = config["adapter"]["name"]
    _, validation = livec_split(config)
    val_images, val_mos = [p for p, _ in validation], [m for _, m in validation]
    results: dict[str, Any] = {"livec_validation": {}, "distortions": {}, "n_validation": len(validation)}
    for label, kwargs in (
        ("adapter", {"adapter": adapter}),
        ("zero_shot_ensemble20", {"prompt_set": "ensemble20"}),
        ("zero_shot_level5", {"prompt_set": "level5"}),
    ):
        scores = model.score(val_images, **kwargs).tolist()
        results["livec_validation"][label] = iqa_metrics(scores, val_mos)
    rows = heldout_rows(config, work)
    for label, kwargs in (("zero_shot_ensemble20", {"prompt_set": "ensemble20"}), ("adapter", {"adapter": adapter})):
        curves = level_srcc(model, rows, **kwargs)
        results["distortions"][label] = {k: v for k, v in curves.items() if k != "scores"}
    results["heldout_photos"] = sorted({r["reference_id"] for r in rows})
    # CPU speed: livec images (500x500), default scoring (the processor's crops), after a warm-up
    model.score(val_images[:4])
    started = time.perf_counter()
    timed = val_images[:32]
    model.score(timed)
    elapsed = time.perf_counter() - started
    results["cpu_speed"] = {
        "images_per_second": len(timed) / elapsed,
        "image_size": f"500x500 ({model.image_processor.crops} {model.image_processor.crop_mode} crops of "
        f"{model.image_processor.crop_size})",
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    (work / "metrics.json").write_text(json.dumps(results, indent=1))
    return results


EXAMPLE_VERSIONS = {"blur": ("gaussian_blur", 3), "noise": ("gaussian_noise", 3), "jpeg": ("jpeg", 5)}


def write_examples(config: dict[str, Any], folder: Path) -> list[Path]:
    """`examples/`: each held-out scikit-image photo (256x256 centre crop) and its blurred, noisy and JPEG-compressed
    versions (`datasets_scripts.synthetic.distort`), for `make demo`."""
    from datasets_scripts.synthetic import distort

    folder.mkdir(parents=True, exist_ok=True)
    size = config["data"]["short_side"]
    written = []
    for name in config["data"]["skimage_heldout"]:
        photo = resized(skimage_photo(name), size)
        left, top = (photo.width - size) // 2, (photo.height - size) // 2
        photo = photo.crop((left, top, left + size, top + size))
        photo.save(folder / f"{name}.png")
        written.append(folder / f"{name}.png")
        for suffix, (distortion, level) in EXAMPLE_VERSIONS.items():
            distort(photo, distortion, level, seed=config["seed"]).save(folder / f"{name}_{suffix}.png")
            written.append(folder / f"{name}_{suffix}.png")
    return written


def stage_export(config: dict[str, Any], work: Path) -> Path:
    from modeling_uniqa import UniQAModel

    output = resolve(config["output"])
    if output.exists():
        shutil.rmtree(output)
    model = UniQAModel.from_pretrained(work / "adapter" / "model").eval()
    # no aesthetic ratings or aesthetic text were trained on: the bundled model declares aesthetics unavailable
    model.config.prompt_sets.pop("aesthetics20", None)
    model.config.task_prompt_sets.pop("aesthetics", None)
    model.config.unavailable_tasks = {"aesthetics": UNAVAILABLE_AESTHETICS}
    model.config.backbone_images = backbone_images(config)
    model.save_pretrained(output)
    return output


def stage_protocol(config: dict[str, Any], work: Path) -> Path:
    """`uniqa protocols compare` on the exported model and the livec_jpg table -> `work/protocol/compare.json`.

    The config's `protocol:` holds the command's options (`count`, `curve_photos`, `distortions`), `finetune` (the
    adapter's settings, default: the recipe's) and `max_images` (the first N table rows only: miniature builds)."""
    from modeling_uniqa.training import protocols
    from modeling_uniqa.training.finetuning import read_mos_table

    settings = dict(config["protocol"])
    folder = work / "protocol"
    folder.mkdir(parents=True, exist_ok=True)
    livec = resolve(config["data"]["livec_dir"])
    table = read_mos_table(livec / "labels.csv", image_root=livec / "ChallengeDB_release" / "Images")
    table = table[: settings.pop("max_images", None)]
    (folder / "labels.csv").write_text("image,mos\n" + "".join(f"{image},{mos}\n" for image, mos in table))
    (folder / "finetune.yaml").write_text(yaml.safe_dump(settings.pop("finetune", None) or {}))
    argv = ["compare", "--model", str(resolve(config["output"])), "--table", str(folder / "labels.csv")]
    argv += ["--mos-range", "0", "100", "--out", str(folder), "--cache-dir", str(folder / "features")]
    argv += ["--config", str(folder / "finetune.yaml")]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    protocols.main(argv)
    return folder / "compare.json"


def backbone_images(config: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    """The dataset images that pre-trained the backbone (the livec training photos, also distorted when their MOS is
    high) and those its recipe was chosen on (the livec validation photos), for `config.backbone_images`
    (`modeling_uniqa.training.provenance`; the adapter's own record is written by `finetune_adapter`)."""
    from modeling_uniqa.training.provenance import image_record

    train, validation = livec_split(config)
    return {"trained": image_record(p for p, _ in train), "selected": image_record(p for p, _ in validation)}


UNAVAILABLE_AESTHETICS = (
    "the bundled uniqa-tiny model was trained without aesthetic ratings or aesthetic text and has no aesthetics "
    "score; convert the released UniQA weights (uniqa convert UniQA_weight.pt --out DIR) and pass --model DIR"
)

STAGES = ("photos", "corpus", "captions", "pretrain", "adapter", "evaluate", "examples", "export", "protocol", "card")


def stage_done(stage: str, work: Path) -> bool:
    marker = {
        "photos": work / "photos" / "manifest.json",
        "corpus": work / "corpus" / "table.jsonl",
        "captions": work / "corpus" / "captions.done",
        "pretrain": work / "pretrain" / "final" / "model.safetensors",
        "adapter": work / "adapter" / "model" / "model.safetensors",
        "evaluate": work / "metrics.json",
        "protocol": work / "protocol" / "compare.json",
    }.get(stage)
    return marker is not None and marker.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "uniqa_tiny.yaml"))
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first (a from-scratch build)")
    parser.add_argument("--only", choices=STAGES, nargs="*", help="run only these stages (their inputs must exist)")
    parser.add_argument("--work-dir", help="override the config's work_dir")
    parser.add_argument("--output", help="override the config's output folder")
    parser.add_argument("--examples-dir", help="override the config's examples_dir (default: examples)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = load_config(args.config)
    if args.work_dir:
        config["work_dir"] = args.work_dir
    if args.output:
        config["output"] = args.output
    if args.examples_dir:
        config["examples_dir"] = args.examples_dir
    torch.set_num_threads(int(config.get("threads") or torch.get_num_threads()))
    work = resolve(config["work_dir"])
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    timing_file = work / "timings.json"
    if timing_file.exists():
        timings = json.loads(timing_file.read_text())
    for stage in STAGES:
        if args.only and stage not in args.only:
            continue
        if not args.only and stage_done(stage, work):
            logger.info("stage %s: output exists, skipped", stage)
            continue
        logger.info("stage %s ...", stage)
        started = time.time()
        torch.manual_seed(config["seed"])
        if stage == "photos":
            stage_photos(config, work)
        elif stage == "corpus":
            stage_corpus(config, work)
        elif stage == "captions":
            stage_captions(config, work)
            (work / "corpus" / "captions.done").touch()
        elif stage == "pretrain":
            stage_pretrain(config, work, resume=True)
        elif stage == "adapter":
            stage_adapter(config, work)
        elif stage == "evaluate":
            stage_evaluate(config, work)
        elif stage == "examples":
            write_examples(config, resolve(config.get("examples_dir") or "examples"))
        elif stage == "export":
            stage_export(config, work)
        elif stage == "protocol":
            stage_protocol(config, work)
        elif stage == "card":
            records = read_records({name: work / file for name, file in BUILD_FILES.items()})
            write_model_card(resolve(config["output"]), config, records, resolve(config["data"]["livec_dir"]))
        timings[stage] = time.time() - started
        timing_file.write_text(json.dumps(timings, indent=1))
        logger.info("stage %s done in %.0f s", stage, timings[stage])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
