"""The Space's peak memory for its worst requests: Compare and Batch of images just under its 40 MP limit.

    .venv/bin/python benchmarks/space_memory.py [--images 24] [--before REVISION]

Makes `--images` copies of one 7200x5400 gradient JPEG (38.9 MP, quality 90), then runs each request in a fresh
subprocess that loads the bundled model `models/uniqa-tiny` with the app's `load_model`, scores one image (the
baseline) and makes the request: Compare of all images, Batch of all images, and two Compare requests at once (the
queue's `MAX_JOBS`). Records each subprocess's peak resident memory (`ru_maxrss`) and the seconds the request took.
With `--before`, the same requests also run on a temporary git worktree of REVISION (its app, package and model).
Writes `benchmarks/results/space-memory.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from run import machine_name

ROOT = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).resolve().parent / "results" / "space-memory.json"
REQUEST = """
import json, os, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.path.join(sys.argv[1], "spaces"))
import app
handler, files = sys.argv[2], sys.argv[3:]
space = app.UniQASpace(app.load_model(os.path.join(sys.argv[1], "models", "uniqa-tiny")))
space.model.score(files[:1])
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if handler == "compare":
    space.compare(files, None)
elif handler == "batch":
    space.batch(files, None)
else:  # two Compare requests at once
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: space.compare(files, None), range(2)))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mib": round(peak), "after_one_image_mib": round(baseline), "seconds": round(seconds, 2)}))
"""


def run_requests(tree: Path, files: list[Path]) -> dict[str, dict]:
    """Each request in a fresh subprocess on the app, package and model of `tree` -> its peak memory and time."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(tree)}
    results = {}
    for handler in ("compare", "batch", "compare_twice_at_once"):
        run = subprocess.run(
            [sys.executable, "-c", REQUEST, str(tree), handler, *map(str, files)],
            env=env,
            cwd=tree,
            capture_output=True,
            text=True,
            check=True,
        )
        results[handler] = json.loads(run.stdout.strip().splitlines()[-1])
        print(tree.name, handler, results[handler])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--before", help="a git revision to measure too (e.g. the last release)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        gradient = np.linspace(0, 255, 7200, dtype=np.float32)[None, :, None] * np.ones((5400, 1, 3), np.float32)
        first = Path(folder) / "big_00.jpg"
        Image.fromarray(gradient.astype(np.uint8)).save(first, quality=90)
        files = [first]
        for index in range(1, args.images):
            files.append(Path(folder) / f"big_{index:02d}.jpg")
            files[-1].write_bytes(first.read_bytes())
        results["now"] = run_requests(ROOT, files)
        if args.before:
            before = Path(folder) / "before"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.before], cwd=ROOT, check=True)
            try:
                results["before"] = run_requests(before, files)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=True)
    RESULT.write_text(
        json.dumps(
            {
                "machine": machine_name(),
                "images": f"{args.images} copies of a 7200x5400 gradient JPEG (38.9 MP, quality 90)",
                "model": "models/uniqa-tiny",
                "before": args.before,
                "requests": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
