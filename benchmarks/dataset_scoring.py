"""Dataset scoring speed: `uniqa score --dataset` against `uniqa score FILES` on the same images, in one run.

    .venv/bin/python benchmarks/dataset_scoring.py [--images 300] [--rounds 3]

Takes the first `--images` LIVEC JPEGs (500x500-ish photos from ../shared/data/livec_jpg; else examples/*.png
repeated) and scores them with the bundled model `models/uniqa-tiny` (zero-shot ensemble20, fp32, batch 32) as:
- `files`: `uniqa score FOLDER --output scores.csv`;
- `parquet`: `uniqa score --dataset DIR --output scores.parquet`, DIR a Parquet dataset with the JPEG bytes embedded;
- `parquet_streaming`: the same with `--streaming`;
- `imagefolder`: `uniqa score --dataset FOLDER` (an ImageFolder dataset: rows point at the files);
- `add_scores`: the Python API, `add_scores(Dataset)` (`Dataset.map(batched=True)`) on the Parquet dataset, written
  to Parquet without the images.
Every command runs in this process through `cli.main` (model loading and dataset loading included, interpreter
start-up not); one warm-up of each (which also builds `datasets`' cache) precedes `--rounds` timed rounds, the order
rotating each round. Records wall and process CPU seconds, images/s, each variant's ratio to `files` within each
round, the machine's load, and the largest score difference against `files`. Writes
`benchmarks/results/dataset-scoring.json`.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
WORK = Path(tempfile.mkdtemp(prefix="uniqa-dataset-bench-"))
os.environ["HF_DATASETS_CACHE"] = str(WORK / "hf-cache")  # before `datasets` is imported

import datasets  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from run import LIVEC, machine_name  # noqa: E402

from modeling_uniqa import UniQAModel  # noqa: E402
from modeling_uniqa.tools.cli import main as uniqa  # noqa: E402
from modeling_uniqa.tools.dataset_scoring import add_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "uniqa-tiny"
RESULT = Path(__file__).resolve().parent / "results" / "dataset-scoring.json"
BATCH = 32


def build_inputs(count: int) -> tuple[Path, Path, str]:
    """`count` images as a folder of files and as a Parquet dataset (bytes embedded, `file_name` column)."""
    sources = sorted(LIVEC.glob("*.JPG"))[:count] if LIVEC.is_dir() else []
    origin = f"first {count} LIVEC JPEGs"
    if len(sources) < count:
        examples = sorted((ROOT / "examples").glob("*.png"))
        sources = list(itertools.islice(itertools.cycle(examples), count))
        origin = f"examples/*.png repeated to {count}"
    folder, parquet = WORK / "images", WORK / "parquet" / "data"
    folder.mkdir(parents=True)
    parquet.mkdir(parents=True)
    names = []
    for i, source in enumerate(sources):
        names.append(f"{i:05d}{source.suffix.lower()}")
        shutil.copy(source, folder / names[-1])
    features = datasets.Features({"file_name": datasets.Value("string"), "image": datasets.Image()})
    cells = [{"bytes": (folder / name).read_bytes(), "path": name} for name in names]
    table = datasets.Dataset.from_dict({"file_name": names, "image": cells}, features=features)
    table.to_parquet(str(parquet / "train-00000-of-00001.parquet"))
    return folder, parquet.parent, origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder, parquet, origin = build_inputs(args.images)
    common = ["--model", str(MODEL), "--batch-size", str(BATCH), "--quiet"]
    outputs = {name: WORK / f"{name}.{'csv' if name == 'files' else 'parquet'}" for name in ("files", "parquet")}

    def api() -> None:  # loads the model too, as the commands do
        model = UniQAModel.from_pretrained(MODEL).eval()
        scored = add_scores(datasets.load_dataset(str(parquet), split="train"), model, batch_size=BATCH)
        scored.remove_columns("image").to_parquet(str(WORK / "add_scores.parquet"))

    variants: dict[str, Callable[[], object]] = {
        "files": lambda: uniqa(["score", str(folder), "--output", str(outputs["files"]), *common]),
        "parquet": lambda: uniqa(["score", "--dataset", str(parquet), "--output", str(outputs["parquet"]), *common]),
        "parquet_streaming": lambda: uniqa(
            ["score", "--dataset", str(parquet), "--streaming", "--output", str(WORK / "streamed.parquet"), *common]
        ),
        "imagefolder": lambda: uniqa(
            ["score", "--dataset", str(folder), "--output", str(WORK / "imagefolder.parquet"), *common]
        ),
        "add_scores": api,
    }
    for run in variants.values():  # warm-up: caches, first-call allocations, prompt embeddings
        run()
    seconds = {name: [] for name in variants}
    cpu_seconds = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    names = list(variants)
    for round_index in range(args.rounds):
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            start, cpu_start = time.perf_counter(), time.process_time()
            variants[name]()
            seconds[name].append(time.perf_counter() - start)
            cpu_seconds[name].append(time.process_time() - cpu_start)
        load.append(os.getloadavg()[0])

    with open(outputs["files"], newline="") as handle:
        by_name = {Path(row["path"]).name: float(row["score"]) for row in csv.DictReader(handle)}
    differences = {}
    for name, path in [("parquet", outputs["parquet"]), ("parquet_streaming", WORK / "streamed.parquet")]:
        rows = pq.read_table(path).to_pylist()
        differences[name] = max(abs(row["score"] - by_name[row["file_name"]]) for row in rows)
    api_rows = pq.read_table(WORK / "add_scores.parquet").to_pylist()
    differences["add_scores"] = max(abs(row["score"] - by_name[row["file_name"]]) for row in api_rows)

    result = {
        "machine": machine_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "model": "models/uniqa-tiny (ViT, patch 16, 112 px, 4 layers, width 192), zero-shot ensemble20, fp32",
        "images": origin,
        "batch_size": BATCH,
        "rounds": args.rounds,
        "variants": {
            name: {
                "images_per_second": {
                    "median": statistics.median(args.images / s for s in seconds[name]),
                    "runs": [args.images / s for s in seconds[name]],
                },
                "cpu_seconds_per_image": statistics.median(s / args.images for s in cpu_seconds[name]),
                "vs_files_same_round": statistics.median(
                    f / s for f, s in zip(seconds["files"], seconds[name], strict=True)
                ),
            }
            for name in variants
        },
        "max_abs_score_difference_vs_files": differences,
        "load_average_1min": load,
        "note": "shared 2-core machine: wall times move with other jobs' load (load_average_1min, sampled before and "
        "after each round); vs_files_same_round is the median over rounds of files' seconds / the variant's seconds",
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["variants"], indent=1), json.dumps(differences), file=sys.stderr)
    shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
