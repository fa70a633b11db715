# Two commands on a fresh machine:  `make demo` (set up + score the example images)  and  `make test`.
# Setup pins torch to the CPU wheel this machine has; on your own machine any torch>=2.4 works.

PYTHON ?= python3
VENV ?= .venv
VENV457 ?= .venv-t457
TORCH_PIN ?= torch==2.13.0
PY := $(VENV)/bin/python
PY457 := $(VENV457)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup demo default-model real-protocol space bench gpu-check test test-main test-remote-457 lint format

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_PIN)" -e ".[dev]"
	touch $@

# transformers 4.57 (the oldest supported): only the package's own requirements, for the remote-code test.
$(VENV457)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV457)
	$(VENV457)/bin/pip install -q --upgrade pip
	$(VENV457)/bin/pip install -q "$(TORCH_PIN)" "transformers==4.57.*" pytest -e .
	touch $@

setup: $(VENV)/.installed

# The main job: score the example photos (sharp, blurred, noisy, JPEG) with the bundled model models/uniqa-tiny,
# zero-shot and with its LIVEC-trained adapter.
demo: setup
	$(VENV)/bin/uniqa score examples/ --quiet
	$(VENV)/bin/uniqa score examples/ --adapter livec --quiet

# Rebuild models/uniqa-tiny from scratch with the project's own training code (~43 min on 2 CPU cores; needs
# ../shared/data/livec_jpg and, for the same result, Debian's mate-backgrounds).
default-model: setup
	OMP_NUM_THREADS=1 $(PY) -m training.build_default --fresh

# The bundled model against two baselines on 10 random 80/20 splits of livec_jpg, with distortion curves
# (`uniqa protocols compare`, docs/default-model.md "Judging the model"): training/results/real-protocol/.
LIVEC ?= ../shared/data/livec_jpg
real-protocol: setup
	OMP_NUM_THREADS=1 $(PY) -m training.protocols compare --model models/uniqa-tiny --table $(LIVEC)/labels.csv \
		--image-root $(LIVEC)/ChallengeDB_release/Images --mos-range 0 100 --out training/results/real-protocol \
		--cache-dir out/feature_cache

# The Gradio demo on http://127.0.0.1:7860 (spaces/ is also a ready Hugging Face Space).
space: setup
	$(PY) spaces/app.py

# Benchmarks (not part of the tests): ~30 minutes on 2 CPU cores; the GPU check needs an NVIDIA GPU (< 5 minutes).
bench: setup
	$(PY) benchmarks/run.py

gpu-check: setup
	benchmarks/gpu_check.sh

test-main: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-remote-457: $(VENV457)/.installed
	$(PY457) -m pytest -q tests/test_remote_code.py; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran: failing"; exit 1; fi; exit $$rc

test: test-main test-remote-457

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
