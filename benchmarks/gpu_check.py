"""GPU check (NVIDIA, < 5 minutes): full-size ViT-B/16 UniQA (random weights), bf16, batch 64 and 256.

    python benchmarks/gpu_check.py [--out DIR]     (or benchmarks/gpu_check.sh)

Measures the bare vision tower's crops/s (bf16 and fp32), end-to-end `model.score` images/s and crops/s on 500x500
JPEGs (deterministic 9-crop grid, pinned-memory copies), decoding in worker threads and in worker processes
(`decode=decoding_processes(n)`), peak GPU memory, and bf16 vs fp32 scores. Medians of 5 runs. Writes `<gpu>.json` and
`<gpu>.md` into `--out` (default: `$OUT` if set, else `benchmarks/results/`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from run import photo_paths, srcc, tower_rate  # noqa: E402

from modeling_uniqa import UniQAConfig, UniQAModel  # noqa: E402
from modeling_uniqa.tools.conversion import write_tokenizer  # noqa: E402
from modeling_uniqa.tools.decoding import decoding_processes  # noqa: E402

DECODES = ("threads", "processes")


def gpu_name() -> str:
    return "gpu-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=512, help="images per end-to-end run")
    parser.add_argument("--num-workers", type=int, default=min(16, os.cpu_count() or 1), help="threads or processes")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--dry-run-on-cpu", action="store_true", help="try the script out on a CPU (tiny sizes)")
    args = parser.parse_args()
    device = "cpu" if args.dry_run_on_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (is this torch a CUDA build?)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    work = Path(tempfile.mkdtemp(prefix="uniqa-gpu-"))
    torch.manual_seed(0)
    config = UniQAConfig()
    if args.dry_run_on_cpu:
        config.vision_config.num_hidden_layers = 1
    model = UniQAModel(config).eval()
    model.tokenizer = write_tokenizer(work / "tokenizer")
    model.to(device)
    cuda = torch.cuda if device == "cuda" else None
    paths = photo_paths(work / "photos", args.images)
    results: dict = {
        "machine": gpu_name() if cuda else "dry-run-cpu",
        "device": torch.cuda.get_device_name() if cuda else "cpu (dry run, 1 vision layer)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "num_workers": args.num_workers,
        "python": platform.python_version(),
        "model": "ViT-B/16 UniQA, random weights, zero-shot ensemble20, SDPA",
        "images": f"{args.images} 500x500 JPEGs per end-to-end run, grid of 9 crops",
        "runs": args.runs,
        "tower": {},
        "end_to_end": {},
    }
    pool = decoding_processes(args.num_workers)
    decoders = {"threads": "threads", "processes": pool}
    for decode in DECODES:  # warm-up (and the decoding processes' start)
        model.score(paths[:64], batch_size=64, dtype="bf16", num_workers=args.num_workers, decode=decoders[decode])
    sync = cuda.synchronize if cuda else (lambda: None)
    reset = cuda.reset_peak_memory_stats if cuda else (lambda: None)
    peak = (lambda: cuda.max_memory_allocated() / 2**20) if cuda else (lambda: float("nan"))
    for batch in args.batches:
        for dtype in ("bf16", "fp32"):
            tower_rate(model, dtype, [batch] * 3)  # warm-up (cuDNN/cuBLAS heuristics)
            reset()
            rates = [tower_rate(model, dtype, [batch] * (20 if cuda else 1)) for _ in range(args.runs)]
            results["tower"][f"{dtype}/b{batch}"] = {
                "crops_s": statistics.median(rates),
                "runs": rates,
                "peak_memory_mib": peak(),
            }
        for decode in DECODES:
            reset()
            runs = []
            for _ in range(args.runs):
                sync()
                start = time.perf_counter()
                model.score(
                    paths, batch_size=batch, dtype="bf16", num_workers=args.num_workers, decode=decoders[decode]
                )
                sync()
                runs.append(len(paths) / (time.perf_counter() - start))
            images_s = statistics.median(runs)
            results["end_to_end"][f"bf16/b{batch}/{decode}"] = {
                "images_s": images_s,
                "crops_s": images_s * 9,
                "runs": runs,
                "vs_tower": images_s * 9 / results["tower"][f"bf16/b{batch}"]["crops_s"],
                "peak_memory_mib": peak(),
            }
    fp32 = model.score(paths[:128], batch_size=64, num_workers=args.num_workers)
    bf16 = model.score(paths[:128], batch_size=64, dtype="bf16", num_workers=args.num_workers)
    results["accuracy"] = {
        "images": len(fp32),
        "srcc": srcc(fp32.tolist(), bf16.tolist()),
        "max_abs_delta": float((bf16 - fp32).abs().max()),
    }
    results["seconds"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{results['machine']}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        f"### {results['device']} (torch {results['torch']}, CUDA {results['cuda']}, "
        f"{results['num_workers']} decoding threads or processes)",
        "",
        "| batch | tower bf16 crops/s | tower fp32 crops/s | decoding in | end-to-end bf16 images/s (9 crops each) "
        "| vs tower | peak GPU memory (end-to-end) |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in args.batches:
        for decode in DECODES:
            e2e = results["end_to_end"][f"bf16/b{batch}/{decode}"]
            lines.append(
                f"| {batch} | {results['tower'][f'bf16/b{batch}']['crops_s']:.0f} "
                f"| {results['tower'][f'fp32/b{batch}']['crops_s']:.0f} | {decode} | {e2e['images_s']:.0f} "
                f"| {e2e['vs_tower']:.0%} | {e2e['peak_memory_mib']:.0f} MiB |"
            )
    acc = results["accuracy"]
    summary = f"SRCC {acc['srcc']:.4f}, max |delta| {acc['max_abs_delta']:.4f}"
    lines += ["", f"bf16 vs fp32 scores ({acc['images']} images): {summary}."]
    (out / f"{results['machine']}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / (results['machine'] + '.json')} in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
