"""Load: 20 parallel requests to the local Gradio app, and bounded memory while the CLI scores 2,000 files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPTokenizerFast

from modeling_uniqa import UniQAConfig, UniQAModel

RSS_GROWTH_LIMIT_MB = 25  # peak RSS of 2,000 files minus that of 200 files (measured: see docs/reliability.md)

# Runs the real CLI and reports its own peak resident memory (KiB on Linux) on stdout.
RSS_DRIVER = """
import resource, sys
from modeling_uniqa.tools.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def micro_model_dir(model_dir, tmp_path_factory) -> Path:
    """A 1-layer, 32-px UniQA with random weights: each image costs next to nothing, so 2,000 stay cheap."""
    config = UniQAConfig.from_pretrained(model_dir)
    config.vision_config.image_size = 32
    config.vision_config.num_hidden_layers = config.text_config.num_hidden_layers = 1
    model = UniQAModel(config)
    model.tokenizer = CLIPTokenizerFast.from_pretrained(model_dir)
    out = tmp_path_factory.mktemp("micro") / "uniqa-micro"
    model.save_pretrained(out)
    return out


def _peak_rss_mb(folder: Path, model: Path, out: Path) -> float:
    args = ["score", str(folder), "--model", str(model), "--format", "jsonl", "--output", str(out), "--quiet"]
    result = subprocess.run(
        [sys.executable, "-c", RSS_DRIVER, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_memory_stays_bounded_over_2000_files(micro_model_dir, tmp_path):
    rng = np.random.default_rng(0)
    few, many = tmp_path / "few", tmp_path / "many"
    for folder, count in ((few, 200), (many, 2000)):
        folder.mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    baseline = _peak_rss_mb(few, micro_model_dir, tmp_path / "few.jsonl")
    peak = _peak_rss_mb(many, micro_model_dir, tmp_path / "many.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "many.jsonl").read_text().splitlines()]
    assert len(rows) == 2000 and all(row["error"] is None for row in rows)
    print(f"peak RSS: 200 files {baseline:.0f} MB, 2000 files {peak:.0f} MB")
    assert peak - baseline <= RSS_GROWTH_LIMIT_MB, (baseline, peak)


@pytest.fixture(scope="module")
def app_url(space_url):
    return space_url


@pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")
def test_20_parallel_requests_all_succeed_with_their_own_scores(app_url, model, reference_images):
    from gradio_client import Client, handle_file

    client = Client(app_url, verbose=False)
    images = [reference_images[name] for name in sorted(reference_images)][:5]
    requests = [images[i % len(images)] for i in range(20)]
    jobs = [
        client.submit(handle_file(str(image)), "prompts:ensemble20", "prompts:aesthetics20", api_name="/score")
        for image in requests
    ]
    results = [job.result(timeout=600) for job in jobs]
    expected = {image: float(model.score(image)[0]) for image in images}
    for image, result in zip(requests, results, strict=True):
        assert result[0] == pytest.approx(expected[image], abs=5e-5), image.name  # the quality score
