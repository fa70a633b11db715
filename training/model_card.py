"""The model card of the bundled default model, written from the numbers its build measured (never typed in).

    python -m training.model_card [--model models/uniqa-tiny] [--results training/results/uniqa-tiny]
        [--protocol training/results/real-protocol/compare.json]

rewrites the card of a model folder from committed results (the build writes it from its work folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeling_uniqa.tools.model_card import front_matter
from modeling_uniqa.training.comparison import ADAPTER, BRISQUE, SHARPNESS, cell, weights_sha256
from modeling_uniqa.training.provenance import PRETRAINED

ROOT = Path(__file__).resolve().parents[1]
LIVE_NOTICE = Path("ChallengeDB_release") / "README.txt"
RUN_LAYOUT_NOTES = {  # `pretraining:` switches -> how the card describes a run
    "anchored_runs": "every run holds the undistorted original",
    "runs_by_distortion": "whole level curves of one or two types per run",
}
# The build's records: where the build writes them (under its work folder) and their committed copies.
BUILD_FILES = {
    "metrics": "metrics.json",
    "pretrain": "pretrain/result.json",
    "adapter": "adapter/metrics.json",
    "timings": "timings.json",
    "manifest": "photos/manifest.json",
    "protocol": "protocol/compare.json",
}
RESULT_FILES = {
    "metrics": "metrics.json",
    "pretrain": "pretrain_result.json",
    "adapter": "adapter_metrics.json",
    "timings": "timings.json",
    "manifest": "manifest.json",
}
# A measurement made elsewhere (quoted, with the weights it was made with), shown only on the card of those weights.
INDEPENDENT_CHECK = ROOT / "training" / "results" / "independent-check.json"
ZERO_SHOT = "zero-shot ensemble20"  # the default scorer (`model.score`'s quality prompt set)
MODEL_SCORERS = {  # protocol scorer -> how the card names it
    ZERO_SHOT: "zero-shot, ensemble20 (default)",
    "zero-shot level5": "zero-shot, level5",
    ADAPTER: "multi-cue adapter trained per split (frozen backbone)",
}
BASELINES = {
    BRISQUE: "baseline: BRISQUE features + SVR, trained per split",
    SHARPNESS: "baseline: gradient-energy sharpness, no learning",
}


def verdict(protocol: Mapping[str, Any], independent: Mapping[str, Any] | None) -> str:
    """The card's first lines, from the protocol's medians: does the model beat the learned baseline on real photos,
    what it does well and misses (its distortion curves), and how to get a strong model."""
    srcc = {key: protocol["summary"][key]["srcc"]["median"] for key in (*MODEL_SCORERS, *BASELINES)}
    best = max(MODEL_SCORERS, key=lambda key: srcc[key])
    beats = srcc[best] > srcc[BRISQUE]
    curves = {t: v["median"] for t, v in protocol["curves"].get(ZERO_SHOT, {}).items() if t != "mean over types"}
    good = [t for t, v in sorted(curves.items()) if v <= -0.7]
    missed = [t for t, v in sorted(curves.items()) if v > -0.5]
    head = (
        "**On real photos this model does not beat a classical baseline.**"
        if not beats
        else "**On real photos this model beats the classical baseline measured beside it.**"
    )
    check = ""
    if independent:
        scorers = independent["scorers"]
        check = (
            " On the 535 LIVE Challenge photos that are not on the build machine (an independent check quoted below): "
            + ", ".join(f"{name} SRCC {v['srcc']:.3f}" for name, v in scorers.items())
            + "."
        )
    return (
        f"{head} On {len(protocol['runs'])} random 80/20 splits of the LIVE Challenge photos on the build machine, "
        f"its median test SRCC is {srcc[ZERO_SHOT]:.3f} zero-shot and {srcc[ADAPTER]:.3f} with an adapter trained "
        f"per split, against {srcc[BRISQUE]:.3f} for BRISQUE + SVR trained on the same splits and "
        f"{srcc[SHARPNESS]:.3f} for a sharpness score that learns nothing{pretrained_note(protocol)}"
        f"{', so its numbers are optimistic' if pretrained_note(protocol) else ''}.{check}\n\n"
        f"**Good for**: telling a photo from strongly degraded versions of itself — {', '.join(good) or 'none'} "
        "(median Spearman(level, score) ≤ −0.7 on held-out photos). **Misses**: "
        f"{', '.join(missed) or 'none of the synthetic types'} (above −0.5), and the mixed, authentic distortions of "
        "real photos that human ratings reflect. **For a strong model**: convert the released UniQA weights "
        "(`uniqa convert UniQA_weight.pt --out DIR`) and fine-tune an adapter on your data (`uniqa finetune`)."
    )


def pretrained_note(protocol: Mapping[str, Any]) -> str:
    """`"; its backbone was pre-trained on K of a split's N test images (medians)"`, or `""` where it was on none."""
    runs = protocol["runs"]
    count = statistics.median(run["test_images_seen_by_model"].get(PRETRAINED, 0) for run in runs)
    total = statistics.median(run["test_images"] for run in runs)
    return f"; its backbone was pre-trained on {count:g} of a split's {total:g} test images (medians)" if count else ""


def seen_share(protocol: Mapping[str, Any]) -> str:
    """`"Of a split's N test images (medians over splits), A pre-trained the backbone and B ..."`: what the model's
    config records of the protocol's test images."""
    runs = protocol["runs"]
    roles = sorted({role for run in runs for role, n in run["test_images_seen_by_model"].items() if n})
    counts = [f"{statistics.median(run['test_images_seen_by_model'].get(r, 0) for run in runs):g} {r}" for r in roles]
    counts = " and ".join([", ".join(counts[:-1]), counts[-1]] if len(counts) > 1 else counts) or "none"
    return f"Of a split's {statistics.median(run['test_images'] for run in runs):g} test images (medians), {counts}"


def model_index(name: str, protocol: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Hub's `model-index`: this model's protocol medians (SRCC, PLCC) per scorer; never a selection split."""
    splits = len(protocol["runs"])
    metrics = [
        {
            "type": metric,
            "value": round(protocol["summary"][key][metric]["median"], 4),
            "name": f"{metric.upper()}, median over {splits} random 80/20 splits (test parts), {label}"
            + pretrained_note(protocol),
            "verified": False,
        }
        for key, label in MODEL_SCORERS.items()
        for metric in ("srcc", "plcc")
    ]
    task = {"type": "image-quality-assessment", "name": "No-reference image quality assessment"}
    dataset = {"name": "LIVE In the Wild Challenge (livec_jpg: its 627 JPEG photos)", "type": "livec"}
    return [{"name": name, "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def _read(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the build stage that writes it first")
    return json.loads(path.read_text())


def _fmt(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"  # NaN check


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def live_notice(livec_dir: Path) -> str:
    """The LIVE database's copyright notice, verbatim (it must travel with anything derived from the data)."""
    text = (livec_dir / LIVE_NOTICE).read_text(errors="replace")
    start = text.index("-----------COPYRIGHT NOTICE STARTS")
    end = text.index("-----------COPYRIGHT NOTICE ENDS")
    return text[start : end + len("-----------COPYRIGHT NOTICE ENDS WITH THIS LINE------------")]


def read_records(files: Mapping[str, Path]) -> dict[str, Any]:
    """`{record: path}` (e.g. `BUILD_FILES` under a work folder) -> `{record: its JSON}`."""
    return {name: _read(path) for name, path in files.items()}


def independent_check(weights: str | None) -> dict[str, Any] | None:
    """The quoted independent measurement (`INDEPENDENT_CHECK`), if it was made with these weights (their SHA-256)."""
    record = json.loads(INDEPENDENT_CHECK.read_text()) if INDEPENDENT_CHECK.exists() else None
    return record if record and record["model_weights_sha256"] == weights else None


def write_model_card(output: Path, config: dict[str, Any], records: Mapping[str, Any], livec_dir: Path) -> Path:
    """Write `output/README.md` from the build's records (`read_records`: metrics, pre-training and adapter results,
    timings, photo manifest, and `protocol`, the `uniqa protocols compare` results of the weights in `output`);
    `livec_dir` is the LIVE Challenge copy whose notice the card quotes."""
    metrics, pretrain, adapter = records["metrics"], records["pretrain"], records["adapter"]
    timings, manifest, protocol = records["timings"], records["manifest"], records["protocol"]
    weights_hash = weights_sha256(output)
    if protocol["model_weights_sha256"] != weights_hash:
        raise ValueError(
            f"the protocol results are for weights {protocol['model_weights_sha256']}, {output} holds {weights_hash}: "
            "run `uniqa protocols compare` on this model first"
        )
    independent = independent_check(weights_hash)
    model_config = config["model"]
    adapter_name = config["adapter"]["name"]
    weights = (output / "model.safetensors").stat().st_size / 2**20
    zero_shot = pretrain.get("zero_shot", [])
    first, last = (zero_shot[0], zero_shot[-1]) if zero_shot else ({}, {})
    summary, curves = protocol["summary"], protocol["curves"]
    scorers = {**MODEL_SCORERS, **BASELINES}
    protocol_rows = "\n".join(
        f"| {label} | {cell(summary[key]['srcc'])} | {cell(summary[key]['plcc'])} |" for key, label in scorers.items()
    )
    curve_scorers = [key for key in scorers if key in curves]
    types = [t for t in curves.get(ZERO_SHOT, {}) if t != "mean over types"]
    curve_rows = "\n".join(
        f"| {t} | " + " | ".join(_fmt(curves[key][t]["median"]) for key in curve_scorers) + " |"
        for t in [*types, "mean over types"]
    )
    curve_photos = sorted({photo for run in protocol["runs"] for photo in run["curve_photos"]})
    check = ""
    if independent:
        check = (
            f"\n**Independent check** on {independent['images']}. {independent['source']}\n\n"
            "| scorer | SRCC | PLCC |\n|---|---|---|\n"
            + "\n".join(f"| {name} | {v['srcc']:.3f} | {v['plcc']:.3f} |" for name, v in independent["scorers"].items())
            + f"\n\nOn {independent['distortion_curves']['description']}: "
            + ", ".join(f"{name} {v:.2f}" for name, v in independent["distortion_curves"]["spearman"].items())
            + ". These are the only real-photo numbers for this model on images that nobody here trained or selected"
            " on.\n"
        )
    zs_rows = "\n".join(
        f"| {key.removeprefix('zeroshot_')} | {_fmt(first.get(key, float('nan')))} | {_fmt(last[key])} |"
        for key in sorted(last)
        if key.startswith("zeroshot_")
    )
    livec_srcc = summary[ADAPTER]["srcc"]["median"]
    curve_mean = curves[ZERO_SHOT]["mean over types"]["median"] if ZERO_SHOT in curves else float("nan")
    vision, text = model_config["vision_config"], model_config["text_config"]
    stage_times = ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
    build_minutes = sum(timings.values()) / 60
    train_loss = pretrain["train"].get("train_loss", float("nan"))
    group_size = config["pretraining"].get("group_size", 1)
    run_notes = ["content-matched"] + [note for key, note in RUN_LAYOUT_NOTES.items() if config["pretraining"].get(key)]
    grouping = f" in runs of {group_size} distortions of one photo ({'; '.join(run_notes)})" if group_size > 1 else ""
    ranking_weight = config["pretraining"].get("ranking_weight", 0.0)
    ranking = (
        f", plus {ranking_weight} × a pairwise ranking loss on the zero-shot quality of each run's distortions (the "
        "undistorted photo above its distortions, a weaker level above a stronger one"
        + (" of any type" if config["pretraining"].get("rank_across_distortions") else " of the same type")
        + "; a run shares one crop)"
        if ranking_weight
        else ""
    )
    batches = grouping + ranking
    overrides = config["data"].get("levels_per_type") or {}
    level_overrides = f" ({', '.join(f'{name}: {n}' for name, n in overrides.items())})" if overrides else ""
    card = f"""{front_matter("other", "mit-code-live-database-notice", model_index(output.name, protocol))}

# uniqa-tiny — the bundled default UniQA model

{verdict(protocol, independent)}

A small CLIP-architecture [UniQA](https://arxiv.org/abs/2406.01069) model trained **entirely on this machine by this
project's own code** (`python -m training.build_default`), from a random initialisation: no pre-trained CLIP or
UniQA weights were used. It exists so that `uniqa score` works out of the box. It is far weaker than the released
UniQA ViT-B/16 weights: for real work, convert those (`uniqa convert UniQA_weight.pt --out ...`).

```python
from modeling_uniqa import UniQAModel
model = UniQAModel.from_pretrained("models/uniqa-tiny").eval()
model.score(["a.jpg", "b.jpg"])                         # zero-shot quality (ensemble20 prompts), in [0.2, 1]
model.score(["a.jpg"], adapter="{adapter_name}", mos_range=(0, 100))  # LIVE-Challenge-style MOS, 0-100
```

## Results on real photos: the protocol

`uniqa protocols compare` (`docs/default-model.md`, "Judging the model"): {protocol["description"]}

| scorer | test SRCC: median [quartiles] (min to max) | test PLCC |
|---|---|---|
{protocol_rows}

**Images the model saw.** {seen_share(protocol)}, as recorded in the model's config (the build pre-trains the
backbone on the livec_jpg photos of its training split and chooses its recipe on the others). On them the model's
numbers are optimistic; the baselines saw none of a split's test images. For scale: the published UniQA ViT-B/16
reaches SRCC 0.890 on the full LIVE Challenge.
{check}
**Synthetic distortions** of the protocol's held-out photos ({len(curve_photos)} livec_jpg photos with MOS at or
above the median, never pre-trained on; a few per split: {", ".join(curve_photos)}), each distortion type of
`datasets_scripts.synthetic` at levels 0 (undistorted) to 5: Spearman(level, score) per photo (−1: every stronger
level scores lower), mean over a split's photos, median over splits.

| distortion | {" | ".join(scorers[key] for key in curve_scorers)} |
|{"---|" * (len(curve_scorers) + 1)}
{curve_rows}

**The project's targets (issue 6)**, on the protocol: SRCC ≥ 0.6 on livec_jpg — adapter median
{_fmt(livec_srcc)}, {_met(livec_srcc >= 0.6)}; mean Spearman(level, score) ≤ −0.7 over the synthetic types — zero-shot
median {_fmt(curve_mean)}, {_met(curve_mean <= -0.7)}.

## Architecture
| part | size |
|---|---|
| vision tower | ViT, patch {vision["patch_size"]}, {vision["image_size"]} px, width {vision["hidden_size"]}, \
{vision["num_hidden_layers"]} layers |
| text tower | width {text["hidden_size"]}, {text["num_hidden_layers"]} layers, CLIP BPE tokenizer (49408 tokens), \
context 77 |
| joint embedding | {model_config["projection_dim"]} |
| adapter `{adapter_name}` | UniQA multi-cue adapter (bottleneck {model_config["projection_dim"] // 2}), \
level5 prompts |
| weights | `model.safetensors`, {weights:.1f} MB (fp32) |

**CPU speed**: {metrics["cpu_speed"]["images_per_second"]:.1f} images/s for {metrics["cpu_speed"]["image_size"]},
{metrics["cpu_speed"]["threads"]} thread(s), default scoring, on the build machine (2 shared cores, busy).

## Training
- **Pre-training** (`modeling_uniqa.training.pretraining`): symmetric InfoNCE, both towers,
  {pretrain["corpus_entries"]} images,
  {config["pretraining"]["epochs"]} epochs, batch {config["pretraining"]["per_device_train_batch_size"]}{batches},
  AdamW lr {config["pretraining"]["learning_rate"]} (the authors' 5e-6 is for fine-tuning a trained CLIP; from a
  random init this model needs ~100×), betas (0.9, 0.98), eps 1e-6, weight decay 0.2, cosine schedule, bf16 autocast.
  Final training loss {_fmt(train_loss)}; {pretrain["wall_seconds"] / 60:.1f} min.
- **Corpus**: {len(manifest["train_sources"])} source photos — livec_jpg *training-split* photos with MOS ≥
  {config["data"]["source_min_mos"]}, scikit-image's {", ".join(config["data"]["skimage_train"])} and
  {len(manifest["debian_photos"])} photographs of Debian's `mate-backgrounds` — resized to short side
  {config["data"]["short_side"]}, each kept undistorted and distorted by every type at
  {config["data"]["levels_per_distortion"]} random levels{level_overrides}; plus the {len(manifest["livec_train"])}
  livec training photos as they are. Captions: the template captioner
  (`modeling_uniqa.training.captioning.TemplateCaptioner`), conditioned on the MOS level and the distortion
  type/level. No MLLM
  was available here.
- **Adapter `{adapter_name}`** (`modeling_uniqa.training.finetuning.finetune_adapter`): livec_jpg, split by
  `split_table(sorted image names, test_fraction={config["data"]["livec_validation_fraction"]},
  seed={config["data"]["livec_split_seed"]})` → {len(manifest["livec_train"])} training /
  {len(manifest["livec_validation"])} validation images; {config["adapter"]["epochs"]} epochs,
  lr {config["adapter"]["learning_rate"]}, batch
  {config["adapter"]["batch_size"]}, {config["adapter"]["crops_per_image"]} cached crops per image; best epoch
  {adapter.get("best_epoch")} by validation SRCC (before training: SRCC {_fmt(adapter["untrained"]["srcc"])}; these
  validation images selected the checkpoint and the recipe, so their numbers are not reported as accuracy).
- **Zero-shot SRCC before → after pre-training**, as logged by the pre-training hook — the progress of training, not
  its accuracy (held-out distortions of the scikit-image photos, one centre crop, all points pooled, target =
  −level; livec validation, the images the recipe was chosen on: MOS):

| table / prompt set | step 0 (random init) | end |
|---|---|---|
{zs_rows}

- **Build**: {build_minutes:.0f} min on 2 shared CPU cores ({stage_times}). Rebuild:
  `python -m training.build_default --fresh` (config `training/configs/uniqa_tiny.yaml`, seed {config["seed"]},
  {config.get("threads", "default")} torch thread(s): the same seed and thread count give the same weights).

## Aesthetics: not available
No human aesthetic ratings exist on this machine and the pre-training corpus holds no aesthetic text, so this
model offers **no aesthetics score**: `task="aesthetics"` raises an error. Use the released UniQA weights
(converted with `uniqa convert`) for aesthetics.

## Limitations
- Tiny and trained on a few hundred photos: it knows strong technical distortions (blur, noise, exposure,
  contrast) of the kinds it was shown, at {config["model"]["vision_config"]["image_size"]}-px crops, and little else;
  moderate JPEG compression and the authentic, mixed distortions of real photos it mostly misses.
  Content, composition, artistic intent, AI-generated images, screenshots, documents and medical images are outside
  what it has seen.
- Zero-shot prompts other than `level5`/`ensemble20` (your own prompt sets) were never trained: their scores are
  close to arbitrary.
- Scores are relative (rank images with them); the adapter's MOS scale is LIVE Challenge's.
- Its real-photo numbers come from one database whose photos it was partly pre-trained on; expect lower agreement
  elsewhere.

## Licences and credits
- Code: MIT (this project). CLIP tokenizer vocabulary: derived from OpenAI's BPE file (MIT, © 2021 OpenAI).
- Method: Zhou et al., "UniQA: Unified Vision-Language Pre-training for Image Quality and Aesthetic Assessment",
  arXiv 2406.01069.
- Trained on images of the **LIVE In the Wild Image Quality Challenge Database** (the images are not distributed
  here). Cite: D. Ghadiyaram and A.C. Bovik, "Massive Online Crowdsourced Study of Subjective and Objective Picture
  Quality," IEEE Transactions on Image Processing, 2016; D. Ghadiyaram and A.C. Bovik, "LIVE In the Wild Image
  Quality Challenge Database," http://live.ece.utexas.edu/research/ChallengeDB/index.html, 2015. Its notice:

```text
{live_notice(livec_dir)}
```
- Also trained on photos shipped with scikit-image (`skimage.data`, see its licence notes) and on photographs of
  Debian's `mate-backgrounds` package (GPL-2+, authors listed in `/usr/share/doc/mate-backgrounds/copyright`).
"""
    path = output / "README.md"
    path.write_text(card)
    return path


def main(argv: list[str] | None = None) -> int:
    """Rewrite a model folder's card from committed results (no weights are touched)."""
    from training.build_default import load_config, resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "uniqa-tiny"))
    parser.add_argument("--config", default=str(ROOT / "training" / "configs" / "uniqa_tiny.yaml"))
    parser.add_argument("--results", default=str(ROOT / "training" / "results" / "uniqa-tiny"), help="build records")
    parser.add_argument("--protocol", default=str(ROOT / "training" / "results" / "real-protocol" / "compare.json"))
    args = parser.parse_args(argv)
    config = load_config(args.config)
    files = {name: Path(args.results) / file for name, file in RESULT_FILES.items()} | {"protocol": Path(args.protocol)}
    path = write_model_card(Path(args.model), config, read_records(files), resolve(config["data"]["livec_dir"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
