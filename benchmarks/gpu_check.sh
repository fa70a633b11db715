#!/usr/bin/env bash
# GPU check for an NVIDIA machine (< 5 minutes): full-size UniQA ViT-B/16, bf16, batch 64/256, decoding in threads and
# in processes.
# Writes benchmarks/results/gpu-<name>.{json,md} (or into $OUT when set). Needs a CUDA build of torch and
# this package installed (pip install -e .). Usage: benchmarks/gpu_check.sh [--runs 5] [--images 512]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout 290 "$PYTHON" benchmarks/gpu_check.py "$@"
