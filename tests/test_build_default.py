"""`python -m training.build_default` is deterministic given the seed: a miniature of the bundled-model build
(`training/configs/uniqa_tiny_smoke.yaml`: every stage, the same code, tiny sizes) run twice from scratch gives
byte-identical data and weights and equal metrics, and another seed gives other weights."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from training.build_default import EXAMPLE_VERSIONS, STAGES, levels_per_type, load_config, main, resolve, stage_done

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "training" / "configs" / "uniqa_tiny_smoke.yaml"
CONFIG = load_config(SMOKE)
LIVEC = resolve(CONFIG["data"]["livec_dir"])
WEIGHTS = ("work/pretrain/final/model.safetensors", "work/adapter/model/model.safetensors", "model/model.safetensors")

pytestmark = pytest.mark.skipif(
    not (LIVEC / "labels.csv").is_file(),
    reason=f"{LIVEC} (LIVE Challenge labels + images), which the build needs, is absent",
)


def run_build(config: Path, root: Path, *extra: str, new_process: bool = False) -> None:
    """One build into `root/{work,model,examples}` (never the repository's folders), in this process or, with
    `new_process`, as `python -m training.build_default` in a fresh one (another hash seed, no state carried over)."""
    folders = {"--work-dir": "work", "--output": "model", "--examples-dir": "examples"}
    argv = ["--config", str(config), *(a for flag, sub in folders.items() for a in (flag, str(root / sub))), *extra]
    if not new_process:
        assert main(argv) == 0
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}
    command = [sys.executable, "-m", "training.build_default", *argv]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def digests(folder: Path) -> dict[str, str]:
    """`{relative path: sha256}` of every file under `folder` (symlinks followed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_json(path: Path, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON file's object without the top-level keys `drop` (timings, which legitimately differ)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """Builds `a` (here) and `b` (a new process) from scratch, and `c`: pre-training only, on `a`'s corpus, with
    seed + 1."""
    base = tmp_path_factory.mktemp("build_default")
    threads = torch.get_num_threads()  # the build sets the config's thread count process-wide
    try:
        run_build(SMOKE, base / "a", "--fresh")
        run_build(SMOKE, base / "b", "--fresh", new_process=True)
        other = base / "other_seed.yaml"
        other.write_text(yaml.safe_dump({**CONFIG, "seed": CONFIG["seed"] + 1}))
        for stage in ("photos", "corpus"):
            shutil.copytree(base / "a" / "work" / stage, base / "c" / "work" / stage, symlinks=True)
        run_build(other, base / "c", "--only", "pretrain")
    finally:
        torch.set_num_threads(threads)
    return {name: base / name for name in "abc"}


def test_every_stage_writes_its_outputs(builds):
    for name in ("a", "b"):
        root = builds[name]
        for stage in STAGES:
            if stage not in ("examples", "export", "card"):
                assert stage_done(stage, root / "work"), (name, stage)
        expected = {
            f"{photo}{suffix}.png"
            for photo in CONFIG["data"]["skimage_heldout"]
            for suffix in ("", *(f"_{v}" for v in EXAMPLE_VERSIONS))
        }
        assert {p.name for p in (root / "examples").iterdir()} == expected
        assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
            p.name for p in (root / "model").iterdir()
        }
        timings = read_json(root / "work" / "timings.json")
        assert list(timings) == list(STAGES)


def test_two_builds_give_byte_identical_data_and_weights(builds):
    a, b = builds["a"], builds["b"]
    for stage in ("photos", "corpus"):
        data = digests(a / "work" / stage)
        assert data and data == digests(b / "work" / stage), stage
    assert digests(a / "examples") == digests(b / "examples")
    for weights in WEIGHTS:
        assert (a / weights).read_bytes() == (b / weights).read_bytes(), weights


def test_corpus_has_the_configured_levels_per_type(builds):
    """`levels_per_type` overrides `levels_per_distortion` (the smoke config: jpeg 2 levels, blur 1)."""
    counts = levels_per_type(CONFIG)
    assert counts == {"gaussian_blur": 1, "jpeg": 2}
    table = [json.loads(line) for line in (builds["a"] / "work" / "corpus" / "table.jsonl").read_text().splitlines()]
    synthetic = [row for row in table if row["image_path"].startswith("synthetic/")]
    sources = {row["source"] for row in synthetic}
    for source in sources:
        for distortion, count in counts.items():
            levels = [r["level"] for r in synthetic if r["source"] == source and r["distortion"] == distortion]
            assert len(set(levels)) == len(levels) == count, (source, distortion, levels)


@pytest.mark.parametrize(
    "override, message",
    [({"motion_blur": 2}, "motion_blur not among"), ({"jpeg": 6}, "must be 1..5"), ({"jpeg": 0}, "must be 1..5")],
)
def test_levels_per_type_rejects_unknown_types_and_counts(override, message):
    config = {**CONFIG, "data": {**CONFIG["data"], "levels_per_type": override}}
    with pytest.raises(ValueError, match=message):
        levels_per_type(config)


def test_two_builds_measure_the_same_numbers(builds):
    a, b = builds["a"] / "work", builds["b"] / "work"
    metrics = read_json(a / "metrics.json", drop=("cpu_speed",))
    assert metrics["n_validation"] == CONFIG["data"]["max_livec_validation"]
    assert set(metrics["distortions"]["adapter"]["per_type"]) == set(CONFIG["data"]["distortions"])
    assert metrics == read_json(b / "metrics.json", drop=("cpu_speed",))
    assert read_json(a / "adapter" / "metrics.json", drop=("wall_seconds",)) == read_json(
        b / "adapter" / "metrics.json", drop=("wall_seconds",)
    )
    pretrain_a, pretrain_b = read_json(a / "pretrain" / "result.json"), read_json(b / "pretrain" / "result.json")
    losses = [entry["loss"] for entry in pretrain_a["log_history"] if "loss" in entry]
    assert losses and all(math.isfinite(v) for v in losses)
    assert losses == [entry["loss"] for entry in pretrain_b["log_history"] if "loss" in entry]
    assert pretrain_a["zero_shot"] == pretrain_b["zero_shot"]
    protocol_a, protocol_b = (read_json(w / "protocol" / "compare.json", drop=("setup",)) for w in (a, b))
    assert protocol_a == protocol_b and len(protocol_a["runs"]) == CONFIG["protocol"]["count"]
    assert (builds["a"] / "model" / "config.json").read_bytes() == (builds["b"] / "model" / "config.json").read_bytes()
    # the exported config records which livec photos pre-trained the backbone and which chose its recipe
    images = json.loads((builds["a"] / "model" / "config.json").read_text())["backbone_images"]
    assert [len(images["trained"]), len(images["selected"])] == [
        CONFIG["data"]["max_livec_train"],
        CONFIG["data"]["max_livec_validation"],
    ]


def test_built_folder_loads_and_scores(builds):
    from modeling_uniqa import UniQAModel

    image = builds["a"] / "examples" / f"{CONFIG['data']['skimage_heldout'][0]}.png"
    scores = {}
    for name in ("a", "b"):
        model = UniQAModel.from_pretrained(builds[name] / "model").eval()
        scores[name] = torch.cat([model.score(image), model.score(image, adapter=CONFIG["adapter"]["name"])])
        low, high = model.score_range()
        assert torch.isfinite(scores[name]).all() and low <= scores[name][0].item() <= high
    assert torch.equal(scores["a"], scores["b"])


def test_another_seed_gives_other_weights(builds):
    """The comparison above can fail: seed + 1, on the same corpus, changes the pre-trained weights."""
    from safetensors.torch import load_file

    assert digests(builds["c"] / "work" / "corpus") == digests(builds["a"] / "work" / "corpus")
    seeded = [load_file(builds[name] / WEIGHTS[0]) for name in ("a", "c")]
    assert seeded[0].keys() == seeded[1].keys()
    assert not all(torch.equal(seeded[0][key], seeded[1][key]) for key in seeded[0])
