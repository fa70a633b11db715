"""Start-up time of the `uniqa` command: `--help`, an argument error and a one-image score with the bundled model.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--before REVISION]

Each case runs `uniqa` as its console script does (a fresh interpreter whose `sys.argv[0]` is `uniqa`) from this
checkout, and with `--before` also from a temporary git worktree of REVISION, alternating the two in the same run so
that the machine's load affects both alike. It also records what `python -X importtime` says the one-image score
imports (cumulative milliseconds of the heaviest top-level packages). Writes `benchmarks/results/startup.json`.
The target (issue 16): `--help` and argument errors under a second, a one-image score in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import machine_name

ROOT = Path(__file__).resolve().parents[1]
RESULT = Path(__file__).resolve().parent / "results" / "startup.json"
# `uniqa ARGS` as the console script runs it: the package is imported with sys.argv[0] == "uniqa".
AS_CONSOLE_SCRIPT = "import sys; sys.argv[0] = 'uniqa'; from modeling_uniqa.tools.cli import main; sys.exit(main())"
CASES = {
    "help": ["--help"],
    "argument_error": ["score", "a.jpg", "--batch-size", "0"],
    "one_image_score": ["score", "examples/coffee.png", "--quiet"],
}


def run_uniqa(tree: Path, args: list[str], *extra_flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)}
    command = [sys.executable, *extra_flags, "-c", AS_CONSOLE_SCRIPT, *args]
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)


def wall_seconds(tree: Path, args: list[str]) -> float:
    start = time.perf_counter()
    run_uniqa(tree, args)
    return time.perf_counter() - start


def heaviest_imports(tree: Path, args: list[str], top: int = 8) -> dict[str, float]:
    """Top-level packages by cumulative import time (ms) under `python -X importtime`."""
    stderr = run_uniqa(tree, args, "-X", "importtime").stderr
    cumulative: dict[str, float] = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, total, name = (part.strip() for part in line[len("import time:") :].split("|"))
            if total.isdigit() and "." not in name:
                cumulative[name] = max(cumulative.get(name, 0.0), int(total) / 1000)
    return dict(sorted(cumulative.items(), key=lambda item: -item[1])[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", help="a git revision to compare with, in the same run (e.g. the last release)")
    args = parser.parse_args()
    trees = {"now": ROOT}
    with tempfile.TemporaryDirectory() as scratch:
        if args.before:
            before = Path(scratch) / "before"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.before], cwd=ROOT, check=True)
            trees["before"] = before
        try:
            times: dict[str, dict[str, list[float]]] = {label: {case: [] for case in CASES} for label in trees}
            for _ in range(args.runs):
                for case, case_args in CASES.items():
                    for label, tree in trees.items():
                        times[label][case].append(round(wall_seconds(tree, case_args), 3))
            imports = {label: heaviest_imports(tree, CASES["one_image_score"]) for label, tree in trees.items()}
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees["before"])], cwd=ROOT, check=True)
    result = {
        "machine": machine_name(),
        "load_average": os.getloadavg(),
        "runs": args.runs,
        "before": args.before,
        "median_seconds": {
            label: {case: statistics.median(t) for case, t in cases.items()} for label, cases in times.items()
        },
        "seconds": times,
        "heaviest_imports_ms_one_image_score": imports,
    }
    if args.before:
        result["before_over_now"] = {
            case: round(result["median_seconds"]["before"][case] / result["median_seconds"]["now"][case], 2)
            for case in CASES
        }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median_seconds"], indent=2))


if __name__ == "__main__":
    main()
