"""UniQA speed benchmark: full-size ViT-B/16 UniQA (random weights) on 500x500 photos.

    .venv/bin/python benchmarks/run.py [--runs 5] [--machine NAME]

Measures, as medians over `--runs` runs, with every ratio taken within one run:
- end-to-end `model.score` crops/s and images/s (deterministic grid and the paper's 10 random crops) against the
  bare vision tower's forward throughput, at fp32, bf16 and int8 (`--dtypes`), batch sizes 1/8/32, decoding in
  worker threads and (grid) in worker processes;
- bf16 and int8 against fp32 scores (SRCC, max |delta|) on `--accuracy-images` images, and the same agreement for
  the bundled model `models/uniqa-tiny` on real photos (LIVEC; `--agreement-images`), zero-shot and with its adapter;
- int8 backends: the vision tower with torch's dynamic quantisation against onnxruntime's (the one `score` uses);
- peak RSS of `uniqa score FOLDER` on 500 and 2,000 images (in a child process each);
- adapter-training throughput with and without feature caching (`modeling_uniqa.training.finetuning`).
Writes `benchmarks/results/<machine>.json` and `benchmarks/results/<machine>.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from modeling_uniqa import UniQAConfig, UniQAModel  # noqa: E402
from modeling_uniqa.image_processing_uniqa import default_num_workers  # noqa: E402
from modeling_uniqa.scoring_uniqa import tower_input  # noqa: E402
from modeling_uniqa.tools.conversion import write_tokenizer  # noqa: E402
from modeling_uniqa.tools.decoding import decoding_processes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
LIVEC = ROOT.parent / "shared" / "data" / "livec_jpg" / "ChallengeDB_release" / "Images"
PROTOCOLS = {"grid9": {"crop_mode": "grid", "crops": 9}, "random10": {"crop_mode": "random", "crops": 10}}
BUNDLED = ROOT / "models" / "uniqa-tiny"


# ---------------------------------------------------------------------------------------------------------------
# Inputs.


def build_model(folder: Path, vision_layers: int | None = None) -> Path:
    """A UniQA model folder with random weights: ViT-B/16 by default, or `vision_layers` layers of it."""
    if (folder / "config.json").is_file():
        return folder
    config = UniQAConfig()
    if vision_layers is not None:
        config.vision_config.num_hidden_layers = vision_layers
    torch.manual_seed(0)
    model = UniQAModel(config).eval()
    model.tokenizer = write_tokenizer(folder)
    model.save_pretrained(folder)
    return folder


def photo_paths(folder: Path, count: int) -> list[str]:
    """`count` 500x500 JPEG photos: LIVEC's JPEGs (../shared/data) linked, cycled if needed; else photos shipped
    with scikit-image, cropped/flipped into variants."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(LIVEC.glob("*.JPG")) if LIVEC.is_dir() else []
    if not sources:
        sources = skimage_photos(folder.parent / "skimage_photos")
    paths = []
    for i in range(count):
        link = folder / f"{i:05d}.jpg"
        if not link.exists():
            link.symlink_to(sources[i % len(sources)].resolve())
        paths.append(str(link))
    return paths


def skimage_photos(folder: Path) -> list[Path]:
    """500x500 JPEG variants of scikit-image's photos (fallback when LIVEC is absent; smooth random images when
    scikit-image is absent too)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        from skimage import data

        photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    except ImportError:
        rng = np.random.default_rng(0)
        photos = [
            np.asarray(Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).resize((700, 700)))
            for _ in range(5)
        ]
    paths = []
    for i, array in enumerate(photos):
        image = Image.fromarray(array).convert("RGB").resize((700, 700), Image.BICUBIC)
        for j, (left, top) in enumerate([(0, 0), (200, 0), (0, 200), (200, 200), (100, 100)]):
            for flip in (False, True):
                crop = image.crop((left, top, left + 500, top + 500))
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop
                path = folder / f"{i}_{j}_{int(flip)}.jpg"
                if not path.exists():
                    crop.save(path, quality=90)
                paths.append(path)
    return paths


def machine_name() -> str:
    """`cpu-<model>-<n>c` from /proc/cpuinfo, e.g. `cpu-amd-epyc-2c`."""
    model = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text).group(1)
    except (OSError, AttributeError):
        pass
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    slug = re.sub(r"-(processor|cpu|with-radeon.*|\d+-core.*)$", "", slug)
    return f"cpu-{slug}-{os.cpu_count()}c"


# ---------------------------------------------------------------------------------------------------------------
# Measurements.


def timed(function: Callable[[], object], sync: Callable[[], None] = lambda: None) -> float:
    sync()
    start = time.perf_counter()
    function()
    sync()
    return time.perf_counter() - start


def tower_rate(model: UniQAModel, dtype: str, sizes: Sequence[int], device: str | None = None) -> float:
    """Bare vision tower (+ projection) crops/s over batches of `sizes` random crops already in `dtype` on the
    device: the ceiling for scoring the same crops in the same batches."""
    tower = model.image_tower(dtype, device)
    tower_device, tower_dtype = tower_input(tower)
    pixels = {size: torch.randn(size, 3, 224, 224).to(tower_device, tower_dtype) for size in set(sizes)}
    sync = torch.cuda.synchronize if tower_device.type == "cuda" else (lambda: None)

    def run() -> None:
        with torch.inference_mode():
            for size in sizes:
                tower(pixels[size])

    return sum(sizes) / timed(run, sync)


def batch_sizes(crops: int, batch: int) -> list[int]:
    """The forward-pass sizes `model.score` uses for `crops` crops: full batches, then the rest."""
    return [batch] * (crops // batch) + ([crops % batch] if crops % batch else [])


def score_rate(model: UniQAModel, paths: Sequence[str], dtype: str, batch: int, protocol: str, **options) -> tuple:
    """End-to-end `model.score(paths)` -> `(crops/s, images/s, scores)`."""
    crops = len(paths) * PROTOCOLS[protocol]["crops"]  # every photo is 500x500: a 3x3 grid or 10 random crops
    result = {}

    def run() -> None:
        result["scores"] = model.score(list(paths), batch_size=batch, dtype=dtype, **PROTOCOLS[protocol], **options)

    seconds = timed(run)
    return crops / seconds, len(paths) / seconds, result["scores"]


def srcc(a: Sequence[float], b: Sequence[float]) -> float:
    ranks = [np.argsort(np.argsort(np.asarray(x))) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def speed_matrix(
    model: UniQAModel, paths: list[str], runs: int, batches: Sequence[int], dtypes: Sequence[str], pool: Executor
) -> dict:
    """Per (dtype, batch): tower and end-to-end throughput per protocol (decoding in threads; the grid also in
    processes), and run-paired ratios between precisions and between the two ways of decoding."""
    raw: dict[str, list[float]] = {}
    cursor = 0
    total = runs * len(batches) * len(dtypes)
    with tqdm(total=total, desc="speed", unit="cell") as progress:
        for _ in range(runs):
            for batch in batches:
                # the same images at every precision within a run
                picked = {p: paths[cursor : cursor + _images_for(batch, p)] for p in PROTOCOLS}
                cursor = (cursor + max(len(v) for v in picked.values())) % (len(paths) - 8)
                for dtype in dtypes:
                    key = f"{dtype}/b{batch}"
                    for protocol, chosen in picked.items():
                        crops = len(chosen) * PROTOCOLS[protocol]["crops"]
                        tower = tower_rate(model, dtype, batch_sizes(crops, batch))
                        if protocol == "grid9":
                            raw.setdefault(f"{key}/tower", []).append(tower)
                        for decode in ("threads", "processes") if protocol == "grid9" else ("threads",):
                            name = protocol if decode == "threads" else f"{protocol}-processes"
                            crops_s, images_s, _ = score_rate(
                                model, chosen, dtype, batch, protocol, decode=pool if decode == "processes" else decode
                            )
                            raw.setdefault(f"{key}/{name}/crops_s", []).append(crops_s)
                            raw.setdefault(f"{key}/{name}/images_s", []).append(images_s)
                            raw.setdefault(f"{key}/{name}/vs_tower", []).append(crops_s / tower)
                        if protocol == "grid9":
                            ratio = raw[f"{key}/grid9-processes/images_s"][-1] / raw[f"{key}/grid9/images_s"][-1]
                            raw.setdefault(f"{key}/processes_vs_threads", []).append(ratio)
                    progress.update()
            for batch in batches:  # precisions against each other, within the run
                for fast, slow in precision_pairs(dtypes):
                    for protocol in ("tower", *PROTOCOLS):
                        value = protocol if protocol == "tower" else f"{protocol}/images_s"
                        ratio = raw[f"{fast}/b{batch}/{value}"][-1] / raw[f"{slow}/b{batch}/{value}"][-1]
                        raw.setdefault(f"b{batch}/{protocol}/{fast}_vs_{slow}", []).append(ratio)
    return {key: {"median": statistics.median(values), "runs": values} for key, values in raw.items()}


def precision_pairs(dtypes: Sequence[str]) -> list[tuple[str, str]]:
    """`(faster, slower)` pairs of the measured precisions: bf16 vs fp32, int8 vs fp32, int8 vs bf16."""
    order = ("fp32", "bf16", "int8")
    present = [d for d in order if d in dtypes]
    return [(fast, slow) for i, slow in enumerate(present) for fast in present[i + 1 :]]


def _images_for(batch: int, protocol: str) -> int:
    """Fewest images whose crops fill at least one batch."""
    return max(1, -(-batch // PROTOCOLS[protocol]["crops"]))


def agreement(fp32: torch.Tensor, other: torch.Tensor) -> dict:
    return {"srcc": srcc(fp32.tolist(), other.tolist()), "max_abs_delta": float((other - fp32).abs().max())}


def accuracy(model: UniQAModel, paths: list[str], dtypes: Sequence[str], batch: int = 16) -> dict:
    """bf16 / int8 vs fp32 scores of the same images (centre crop, zero-shot ensemble20)."""
    fp32 = model.score(paths, batch_size=batch, crop_mode="center")
    result = {"images": len(paths), "fp32_score_std": float(fp32.std())}
    for dtype in dtypes:
        if dtype != "fp32":
            result[dtype] = agreement(fp32, model.score(paths, batch_size=batch, crop_mode="center", dtype=dtype))
    return result


def bundled_agreement(count: int, dtypes: Sequence[str]) -> dict:
    """bf16 / int8 vs fp32 scores of the bundled model on real photos (LIVEC), zero-shot and with its adapter,
    with its default crops (grid of 9)."""
    if not LIVEC.is_dir():
        return {"skipped": f"no LIVEC photos at {LIVEC}"}
    model = UniQAModel.from_pretrained(BUNDLED).eval()
    paths = [str(p) for p in sorted(LIVEC.glob("*.JPG"))[:count]]
    result: dict = {"model": "models/uniqa-tiny", "images": len(paths), "photos": "LIVEC (ChallengeDB_release JPEGs)"}
    for adapter in (None, *model.config.adapters):
        fp32 = model.score(paths, adapter=adapter)
        entry = {"fp32_score_std": float(fp32.std())}
        for dtype in dtypes:
            if dtype != "fp32":
                entry[dtype] = agreement(fp32, model.score(paths, adapter=adapter, dtype=dtype))
        result[adapter or "zero-shot"] = entry
    return result


def int8_backends(model: UniQAModel, batches: Sequence[int], runs: int) -> dict:
    """Vision-tower crops/s of the two int8 routes against the bf16 tower, paired within each run: torch's dynamic
    quantisation of the linear layers (x86 backend) and onnxruntime's dynamic int8 graph (what `score` uses)."""
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's notice that it moves to torchao
        torch_int8 = torch.ao.quantization.quantize_dynamic(model.image_tower("fp32"), {torch.nn.Linear}, torch.qint8)
    towers = {"bf16": model.image_tower("bf16"), "onnxruntime-int8": model.image_tower("int8")}
    towers["torch-int8"] = torch_int8
    with torch.inference_mode():  # warm-up: first-call allocations and kernel choices
        for name, tower in towers.items():
            tower(torch.randn(2, 3, 224, 224).to(torch.bfloat16 if name == "bf16" else torch.float32))
    raw: dict[str, list[float]] = {}
    for _ in tqdm(range(runs), desc="int8 backends"):
        for batch in batches:
            pixels = torch.randn(batch, 3, 224, 224)
            rates = {}
            for name, tower in towers.items():
                inputs = pixels.bfloat16() if name == "bf16" else pixels
                with torch.inference_mode():
                    rates[name] = batch / timed(lambda tower=tower, inputs=inputs: tower(inputs))
            for name, rate in rates.items():
                raw.setdefault(f"b{batch}/{name}/crops_s", []).append(rate)
                raw.setdefault(f"b{batch}/{name}/vs_bf16", []).append(rate / rates["bf16"])
    return {key: {"median": statistics.median(values), "runs": values} for key, values in raw.items()}


def rss_child(folder: str, model_dir: str, dtype: str, output: str) -> None:
    """In a fresh process: `uniqa score FOLDER`, then print the peak RSS (MiB) as JSON."""
    from modeling_uniqa.tools.cli import main

    start = time.perf_counter()
    status = main(["score", folder, "--model", model_dir, "--dtype", dtype, "--crop-mode", "center"] + [
        "--output", output, "--quiet", "--batch-size", "32"])  # fmt: skip
    print(json.dumps({"status": status, "peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - start}))


def peak_rss_mib() -> float:
    """This process's peak resident set size: VmHWM (Linux), which starts afresh at exec. (`ru_maxrss` does not:
    a child inherits its parent's peak at fork.)"""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def peak_rss(model_dir: Path, work: Path, counts: Sequence[int], dtype: str) -> dict:
    results = {}
    for count in tqdm(counts, desc="peak RSS", unit="run"):
        folder = work / f"rss_{count}"
        photo_paths(folder, count)
        command = [sys.executable, __file__, "--rss-child", str(folder), str(model_dir), dtype, str(work / "rss.csv")]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[str(count)] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def training_rate(model: UniQAModel, paths: list[str], runs: int, batch: int = 8) -> dict:
    """Adapter training steps/s -> images/s, from images (backbone forward each step) and from cached features."""
    try:
        from modeling_uniqa.training import finetuning
    except ImportError as error:
        return {"skipped": f"modeling_uniqa.training.finetuning is not available ({error})"}
    name = "bench"
    if name not in model.config.adapters:
        model.add_multicue_adapter(name)
    adapter = model.adapters[name]
    model.requires_grad_(False)
    adapter.requires_grad_(True)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=2e-4)
    labels = np.linspace(0, 1, len(paths))
    images = finetuning.AugmentedImageDataset(paths, labels, model.image_processor, crops=8, seed=123)
    scorer = finetuning.CachedFeatureScorer(model, name)
    features = [torch.randn(8, model.config.projection_dim) for _ in paths]  # speed does not depend on values
    cached = finetuning.CachedFeatureDataset(features, labels, train=True)

    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def uncached() -> None:
        items = finetuning.collate_pixels([images[i] for i in range(batch)])
        step(model(items["pixel_values"], labels=items["labels"]).loss)

    cached_steps = 50

    def from_cache() -> None:
        for s in range(cached_steps):
            items = finetuning.collate_features([cached[(s * batch + i) % len(cached)] for i in range(batch)])
            step(scorer(**items).loss)

    model.set_multicue_adapter(name)  # forward scores through it
    model.train()
    uncached_rates = [batch / timed(uncached) for _ in tqdm(range(runs), desc="train (uncached)")]
    cached_rates = [batch * cached_steps / timed(from_cache) for _ in tqdm(range(runs), desc="train (cached)")]
    model.eval()
    model.set_multicue_adapter(None)
    return {
        "batch": batch,
        "uncached_images_s": {"median": statistics.median(uncached_rates), "runs": uncached_rates},
        "cached_images_s": {"median": statistics.median(cached_rates), "runs": cached_rates},
        "cache_build": "one backbone forward per cached crop (8 per image): the fp32 tower throughput above",
    }


# ---------------------------------------------------------------------------------------------------------------
# Report.


def markdown(results: dict) -> str:
    speed = results["speed"]
    dtypes = results.get("dtypes", ["fp32", "bf16"])
    load, load_note = results.get("load_average"), ""
    if load:
        start, end = ("/".join(f"{v:.1f}" for v in load[k]) for k in ("start", "end"))
        load_note = f" Load average (1, 5, 15 min): {start} at the start, {end} at the end."
    lines = [
        f"### {results['machine']} ({results['device']}, torch {results['torch']}, {results['threads']} threads)",
        "",
        f"{results['model']}; {results['images']}; medians of {results['runs']} runs (ratios paired within each "
        "run). Shared, noisy machine: absolute rates vary between runs; ratios are more stable. *vs tower*: "
        "end-to-end crops/s over the bare tower's on the same crops in the same batches (the last batch of a "
        "call is partial), same precision. Decoding in worker threads unless *processes* says otherwise." + load_note,
        "",
        "| precision | batch | tower crops/s (grid-9 batches) | grid-9 images/s | grid-9 vs tower | 10-crop images/s "
        "| 10-crop vs tower | grid-9 images/s, processes | processes / threads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype in dtypes:
        for batch in results["batches"]:
            key = f"{dtype}/b{batch}"
            lines.append(
                f"| {dtype} | {batch} | {speed[f'{key}/tower']['median']:.2f} "
                f"| {speed[f'{key}/grid9/images_s']['median']:.3f} | {speed[f'{key}/grid9/vs_tower']['median']:.0%} "
                f"| {speed[f'{key}/random10/images_s']['median']:.3f} "
                f"| {speed[f'{key}/random10/vs_tower']['median']:.0%} "
                f"| {speed[f'{key}/grid9-processes/images_s']['median']:.3f} "
                f"| {speed[f'{key}/processes_vs_threads']['median']:.2f}x |"
            )
    pairs = precision_pairs(dtypes)
    header = " | ".join(f"{fast} / {slow} {what}" for fast, slow in pairs for what in ("tower", "grid-9", "10-crop"))
    lines += ["", f"| batch | {header} |", "|---|" + "---|" * 3 * len(pairs)]
    for batch in results["batches"]:
        cells = [
            f"{speed[f'b{batch}/{protocol}/{fast}_vs_{slow}']['median']:.2f}x"
            for fast, slow in pairs
            for protocol in ("tower", *PROTOCOLS)
        ]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    acc = results["accuracy"]
    parts = [f"{d}: SRCC {acc[d]['srcc']:.4f}, max |delta| {acc[d]['max_abs_delta']:.4f}" for d in dtypes if d in acc]
    lines += [
        "",
        f"Against fp32 scores ({acc['images']} images, centre crop, zero-shot ensemble20, random weights, fp32 score "
        f"std {acc['fp32_score_std']:.4f}): " + "; ".join(parts) + ".",
    ]
    bundled = results.get("bundled_agreement", {})
    if "images" in bundled:
        lines += [
            "",
            f"Bundled model `{bundled['model']}` on {bundled['images']} real photos ({bundled['photos']}), default "
            "grid of 9 crops, against its fp32 scores:",
            "",
            "| scoring | precision | SRCC vs fp32 | max abs delta | fp32 score std |",
            "|---|---|---|---|---|",
        ]
        for name, entry in bundled.items():
            if isinstance(entry, dict):
                for dtype in dtypes:
                    if dtype in entry:
                        lines.append(
                            f"| {name} | {dtype} | {entry[dtype]['srcc']:.5f} | {entry[dtype]['max_abs_delta']:.5f} "
                            f"| {entry['fp32_score_std']:.4f} |"
                        )
    backends = results.get("int8_backends")
    if backends:
        lines += [
            "",
            "int8 routes, vision tower alone (crops/s, and against the bf16 tower in the same run):",
            "",
            "| batch | bf16 crops/s | onnxruntime int8 crops/s | vs bf16 | torch dynamic int8 crops/s | vs bf16 |",
            "|---|---|---|---|---|---|",
        ]
        for batch in results["batches"]:
            if f"b{batch}/bf16/crops_s" in backends:
                cell = {k: backends[f"b{batch}/{k}"]["median"] for k in (
                    "bf16/crops_s", "onnxruntime-int8/crops_s", "onnxruntime-int8/vs_bf16", "torch-int8/crops_s",
                    "torch-int8/vs_bf16")}  # fmt: skip
                lines.append(
                    f"| {batch} | {cell['bf16/crops_s']:.2f} | {cell['onnxruntime-int8/crops_s']:.2f} "
                    f"| {cell['onnxruntime-int8/vs_bf16']:.2f}x | {cell['torch-int8/crops_s']:.2f} "
                    f"| {cell['torch-int8/vs_bf16']:.2f}x |"
                )
    rss = results.get("peak_rss")
    if rss:
        parts = ", ".join(f"{n} images: {v['peak_rss_mib']:.0f} MiB" for n, v in rss["runs"].items())
        lines += ["", f"Peak RSS of `uniqa score FOLDER` ({rss['model']}, {rss['dtype']}, centre crop): {parts}."]
        if "full_model_50_images" in rss:
            lines[-1] += f" Full-size model, 50 images: {rss['full_model_50_images']['peak_rss_mib']:.0f} MiB."
    train = results.get("training", {})
    if "cached_images_s" in train:
        lines += [
            "",
            f"Adapter training (batch {train['batch']}, fp32 backbone): "
            f"{train['uncached_images_s']['median']:.2f} images/s running the backbone each step, "
            f"{train['cached_images_s']['median']:.0f} images/s from cached features "
            "(plus the one-time cache: 8 backbone crops per image).",
        ]
    elif train:
        lines += ["", f"Adapter training: {train.get('skipped')}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "int8"], choices=["fp32", "bf16", "int8"])
    parser.add_argument("--accuracy-images", type=int, default=40)
    parser.add_argument("--agreement-images", type=int, default=627, help="LIVEC photos for the bundled model")
    parser.add_argument("--rss-counts", type=int, nargs="+", default=[500, 2000])
    parser.add_argument(
        "--rss-vision-layers",
        type=int,
        default=1,
        help="vision layers of the model used for the RSS runs (the full 12 would take ~20 min on 2 cores)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["speed", "accuracy", "agreement", "int8-backends", "rss", "training"],
    )
    parser.add_argument("--vision-layers", type=int, help="smaller vision tower, for trying the script out")
    parser.add_argument("--machine", default=None)
    parser.add_argument("--work", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "uniqa-bench"))
    parser.add_argument("--rss-child", nargs=4, metavar=("FOLDER", "MODEL", "DTYPE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    work = Path(args.work)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    layers = args.vision_layers
    model_dir = build_model(work / f"uniqa-vitb16-{layers or 12}layer-random", layers)
    model = UniQAModel.from_pretrained(model_dir).eval()
    paths = photo_paths(work / "photos", 627)
    results = {
        "machine": args.machine or machine_name(),
        "device": "cpu",
        "cpu": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "runs": args.runs,
        "batches": args.batches,
        "images": "500x500 JPEG photos (LIVEC JPEG subset)" if LIVEC.is_dir() else "500x500 scikit-image variants",
        "model": f"ViT-B/16 UniQA ({layers or 12} vision layers), random weights, zero-shot ensemble20, SDPA",
        "note": "shared machine (other jobs running): absolute rates are noisy; ratios are paired within each run",
    }
    if "fp32" not in args.dtypes:
        parser.error("--dtypes must include fp32 (the reference of every ratio)")
    results["dtypes"] = args.dtypes
    for dtype in args.dtypes:  # warm-up: text features, tower copies (int8: quantised graph), allocator
        model.score(paths[:2], batch_size=8, dtype=dtype)
    pool = decoding_processes(default_num_workers())  # worker processes for the "processes" rows
    model.score(paths[:2], batch_size=8, decode=pool)  # starts them
    if "speed" not in args.skip:
        results["speed"] = speed_matrix(model, paths[8:], args.runs, args.batches, args.dtypes, pool)
    if "accuracy" not in args.skip:
        results["accuracy"] = accuracy(model, paths[-args.accuracy_images :], args.dtypes)
    if "agreement" not in args.skip:
        results["bundled_agreement"] = bundled_agreement(args.agreement_images, args.dtypes)
    if "int8-backends" not in args.skip and "int8" in args.dtypes:
        results["int8_backends"] = int8_backends(model, args.batches, args.runs)
    if "training" not in args.skip:
        results["training"] = training_rate(model, paths[:16], args.runs)
    if "rss" not in args.skip:
        small = build_model(work / f"uniqa-vitb16-{args.rss_vision_layers}layer-random", args.rss_vision_layers)
        results["peak_rss"] = {
            "model": f"ViT-B/16 width, {args.rss_vision_layers} vision layer(s)",
            "dtype": "bf16",
            "how": "VmHWM of a fresh `uniqa score` process (crop mode centre, batch 32)",
            "runs": peak_rss(small, work, args.rss_counts, "bf16"),
        }
        full = peak_rss(model_dir, work, [50], "bf16")
        results["peak_rss"]["full_model_50_images"] = full["50"]
    results["seconds"] = time.perf_counter() - started
    results["load_average"] = {"start": load_at_start, "end": os.getloadavg()}  # 1, 5, 15 minutes
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{results['machine']}.json"
    if args.skip and out.exists():  # a partial run updates the sections it measured
        results = {**json.loads(out.read_text()), **{k: v for k, v in results.items() if k != "seconds"}}
    out.write_text(json.dumps(results, indent=1) + "\n")
    if "speed" in results and "accuracy" in results:
        (RESULTS / f"{results['machine']}.md").write_text(markdown(results))
    print(f"wrote {out} ({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
