"""`uniqa score`'s peak memory on images at Pillow's pixel limit, with and without the decoded-pixel budget.

    .venv/bin/python benchmarks/prefetch_memory.py [--large 8 16] [--small 300] [--rounds 3]

Runs `uniqa score` (the bundled model `models/uniqa-tiny`, batch 32, default workers, decoding in threads) in a
fresh subprocess per run, with `batch_scoring.MAX_PIXELS_IN_FLIGHT` set to infinity (no pixel budget: memory
bounded by file count only, as before the budget) or left at its default, alternating, `--rounds` times each:
- `large-N`: N copies of one 9400x9400 JPEG (88.4 M pixels, just under PIL.Image.MAX_IMAGE_PIXELS = 89.5 M; a
  smooth gradient, 1.7 MB on disk), for each N of `--large`: the worst case, a folder of huge images;
- `small`: the first `--small` LIVEC photos (500x500 JPEGs from ../shared/data/livec_jpg; else examples/*.png
  repeated), the usual case, where the budget should change nothing.
Records each run's peak resident memory (the child's `ru_maxrss` from `os.wait4`; the benchmark process stays
smaller, as a forked child starts from its parent's peak), the seconds `cli.main` took
inside the child (model loading included, interpreter start-up not) as images/s, the ratio of the two settings
within each round, and whether both settings wrote byte-identical results. Writes
`benchmarks/results/prefetch-memory.json`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import LIVEC, machine_name

from modeling_uniqa.tools.batch_scoring import MAX_PIXELS_IN_FLIGHT

ROOT = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).resolve().parent / "results" / "prefetch-memory.json"
SIDE = 9400  # 9400 x 9400 = 88,360,000 pixels, under PIL.Image.MAX_IMAGE_PIXELS (89,478,485)

# The child: `uniqa score ARGS` with the budget of argv[1] (`inf` or `default`); writes its status and the seconds
# `main` took to the file argv[2].
CHILD = """
import json, sys, time
from modeling_uniqa.tools import batch_scoring
from modeling_uniqa.tools.cli import main
if sys.argv[1] != "default":
    batch_scoring.MAX_PIXELS_IN_FLIGHT = float(sys.argv[1])
start = time.perf_counter()
status = main(sys.argv[3:])
with open(sys.argv[2], "w") as handle:
    json.dump({"status": status, "seconds": time.perf_counter() - start}, handle)
"""


# Writes a SIDE x SIDE gradient JPEG to argv[1], in a process of its own: a child forked from this process would
# start with this process's peak RSS (Linux carries `ru_maxrss` over fork and exec).
GENERATE = f"""
import sys
import numpy as np
from PIL import Image
ramp = np.linspace(0, 255, {SIDE}, dtype=np.float32)
pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], (ramp[None, :] + ramp[:, None]) / 2), -1)
Image.fromarray(pixels.astype(np.uint8)).save(sys.argv[1], quality=90)
"""


def large_images(folder: Path, count: int, image: Path) -> None:
    """`count` copies of `image` in `folder`."""
    for i in range(count):
        shutil.copy(image, folder / f"{i:02d}.jpg")


def small_images(folder: Path, count: int) -> str:
    """`count` ordinary photos in `folder` -> where they came from."""
    sources = sorted(LIVEC.glob("*.JPG"))[:count] if LIVEC.is_dir() else []
    origin = f"first {count} LIVEC JPEGs (500x500)"
    if len(sources) < count:
        sources = list(itertools.islice(itertools.cycle(sorted((ROOT / "examples").glob("*.png"))), count))
        origin = f"examples/*.png repeated to {count}"
    for i, source in enumerate(sources):
        shutil.copy(source, folder / f"{i:05d}{source.suffix.lower()}")
    return origin


def score(folder: Path, budget: str, output: Path) -> dict[str, float]:
    """One `uniqa score FOLDER` in a subprocess -> its peak RSS (MiB) and the seconds `main` took."""
    timing = output.with_suffix(".time.json")
    argv = ["score", str(folder), "--output", str(output), "--overwrite", "--quiet"]
    child = subprocess.Popen([sys.executable, "-c", CHILD, budget, str(timing), *argv], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    report = json.loads(timing.read_text())
    if child.returncode != 0 or report["status"] != 0:
        raise RuntimeError(f"uniqa score {folder} (budget {budget}) failed: exit {child.returncode}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": report["seconds"]}  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="uniqa-prefetch-bench-"))
    counts = {**{f"large-{count}": count for count in args.large}, "small": args.small}
    folders = {case: work / case for case in counts}
    for folder in folders.values():
        folder.mkdir()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", GENERATE, str(work / "large.jpg")], check=True)
    generation_seconds = time.perf_counter() - start
    for count in args.large:
        large_images(folders[f"large-{count}"], count, work / "large.jpg")
    origin = small_images(folders["small"], args.small)
    budgets = {"unbounded": "inf", "default": "default"}
    runs = {(case, name): [] for case in folders for name in budgets}
    identical = {case: True for case in folders}
    load = [os.getloadavg()[0]]
    for round_index in range(args.rounds):
        order = list(budgets) if round_index % 2 == 0 else list(budgets)[::-1]
        for case, folder in folders.items():
            for name in order:
                runs[case, name].append(score(folder, budgets[name], work / f"{case}-{name}.csv"))
            written = {(work / f"{case}-{name}.csv").read_bytes() for name in budgets}
            identical[case] = identical[case] and len(written) == 1
        load.append(os.getloadavg()[0])

    def summary(case: str, name: str) -> dict[str, object]:
        measured = runs[case, name]
        return {
            "peak_rss_mib": {
                "max": max(r["peak_rss_mib"] for r in measured),
                "runs": [r["peak_rss_mib"] for r in measured],
            },
            "images_per_second": {
                "median": statistics.median(counts[case] / r["seconds"] for r in measured),
                "runs": [counts[case] / r["seconds"] for r in measured],
            },
        }

    result = {
        "machine": machine_name(),
        "cpu_count": os.cpu_count(),
        "model": "models/uniqa-tiny (ViT, patch 16, 112 px, 4 layers, width 192), zero-shot ensemble20, fp32",
        "command": "uniqa score FOLDER --output scores.csv (batch 32, default --num-workers, --decode threads)",
        "max_pixels_in_flight": {"unbounded": "inf", "default": MAX_PIXELS_IN_FLIGHT},
        "large_images": f"copies of a {SIDE}x{SIDE} gradient JPEG ({SIDE * SIDE:,} pixels, quality 90, "
        f"{(work / 'large.jpg').stat().st_size / 2**20:.1f} MiB)",
        "large_generation_seconds": generation_seconds,
        "small_images": origin,
        "rounds": args.rounds,
        "cases": {
            case: {
                **{name: summary(case, name) for name in budgets},
                "default_vs_unbounded_speed_same_round": statistics.median(
                    u["seconds"] / d["seconds"]
                    for u, d in zip(runs[case, "unbounded"], runs[case, "default"], strict=True)
                ),
                "identical_results": identical[case],
            }
            for case in folders
        },
        "benchmark_process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average_1min": load,
        "note": "peak RSS of the whole `uniqa score` process (interpreter, torch and model included); images/s from "
        "the seconds `cli.main` took, model loading included; default_vs_unbounded_speed_same_round is the median "
        "over rounds of unbounded seconds / default seconds (above 1: the budget is faster); shared 2-core machine",
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["cases"], indent=1), file=sys.stderr)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
