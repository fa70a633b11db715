"""Export a UniQA model as one ONNX graph from normalised crops to scores (`uniqa export --format onnx DIR OUT`).

The graph holds the vision tower, the adapter (if any) and the prompt set's text features, computed once and
stored as constants, so it needs neither the text tower nor the tokenizer. Beside `OUT.onnx` a `OUT.json` sidecar
records how to make its input (crop size, normalisation, crop protocol) and what its output means, so that it
can be run with onnxruntime, numpy and Pillow alone (see docs/performance.md). `dtype="int8"` quantises the vision
tower's linear layers (dynamic int8, as `score(dtype="int8")` runs them); the adapter and the prompt head stay fp32.
Needs `pip install "uniqa[export]"`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling_uniqa import PromptSetLike, UniQAModel
from ..scoring_uniqa import INT8, export_onnx_graph, quantize_int8

# Largest difference from PyTorch's fp32 scores and level probabilities the check accepts, on random-noise crops. For
# int8 it catches a broken graph, not a loss of accuracy (measured on photos: docs/performance.md); int8 graphs
# measured 0.001 (the bundled model), 0.01 (ViT-B/16, random weights) and 0.05 (the tests' random tiny model).
EXPORT_TOLERANCE = {"fp32": 1e-4, INT8: 0.1}


class PixelsToScores(nn.Module):
    """`(N, 3, S, S)` normalised crops -> `scores` `(N,)` and `level_probs` `(N, G, K)`, for one fixed request.

    The request's text features, levels and temperature are frozen into buffers (they are constants at inference).
    """

    def __init__(
        self,
        model: UniQAModel,
        task: str | None = None,
        adapter: str | None = None,
        prompt_set: PromptSetLike | None = None,
    ):
        super().__init__()
        self.task, self.adapter_name, self.prompt_set = model.resolve(task, adapter, prompt_set)
        self.tower = model.image_tower()
        self.adapter = model.adapters[self.adapter_name] if self.adapter_name is not None else None
        self.level_head = model.level_head
        with torch.no_grad():
            self.register_buffer("text_embeds", model.prompt_embeds(self.prompt_set).detach().clone())
            self.register_buffer("levels", model.levels_for(self.adapter_name, self.prompt_set).detach().clone())
            self.register_buffer("logit_scale", model.clip.logit_scale.detach().clone())

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.level_head(
            self.tower(pixel_values), self.text_embeds, self.levels, self.logit_scale, adapter=self.adapter
        )


def export_onnx(
    model: UniQAModel | str | os.PathLike,
    out: str | os.PathLike,
    task: str | None = None,
    adapter: str | None = None,
    prompt_set: PromptSetLike | None = None,
    opset: int = 17,
    check: bool = True,
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Write `out` (an ONNX graph, crops -> scores, dynamic batch) and its `.json` sidecar; return the sidecar.

    Args:
        model: a [`UniQAModel`] or a model folder.
        out: the `.onnx` file to write.
        task, adapter, prompt_set: the request baked into the graph (see `UniQAModel.score`).
        opset: ONNX opset version (>= 14 for attention).
        check: run the graph with onnxruntime on random crops and raise `ValueError` if its scores differ from
            PyTorch's by more than `EXPORT_TOLERANCE[dtype]`.
        dtype: `"fp32"`, or `"int8"` to quantise the vision tower's linear layers (`quantize_int8`).
    """
    if dtype not in EXPORT_TOLERANCE:
        raise ValueError(f"dtype must be one of {sorted(EXPORT_TOLERANCE)}, not {dtype!r}")
    if not isinstance(model, UniQAModel):
        if not Path(model, "config.json").is_file():
            raise FileNotFoundError(f"{model}: not a model folder (no config.json)")
        model = UniQAModel.from_pretrained(model, use_safetensors=True)
    model = model.eval()
    module = PixelsToScores(model, task, adapter, prompt_set).eval()
    processor = model.image_processor
    size = processor.crop_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if dtype == INT8:
        with tempfile.TemporaryDirectory(prefix="uniqa-export-") as folder:
            graph = Path(folder, "fp32.onnx")
            export_onnx_graph(module, example, graph, ["scores", "level_probs"], opset)
            quantize_int8(graph, out, scope="/tower/")  # the tower's nodes only: the adapter and the head stay fp32
    else:
        export_onnx_graph(module, example, out, ["scores", "level_probs"], opset)
    levels = module.levels.tolist()
    sidecar = {
        "format": "uniqa-onnx/1",
        "dtype": dtype,
        "input": "pixel_values",
        "outputs": ["scores", "level_probs"],
        "task": module.task,
        "adapter": module.adapter_name,
        "prompt_set": module.prompt_set if not isinstance(module.prompt_set, Mapping) else dict(module.prompt_set),
        "groups": list(model.prompt_groups(module.prompt_set)),
        "levels": levels,
        "score_range": [0.0, 1.0] if module.adapter_name is not None else [min(levels), max(levels)],
        "mos_range": (model.config.adapters.get(module.adapter_name) or {}).get("mos_range"),
        "crop_size": size,
        "image_mean": processor.image_mean,
        "image_std": processor.image_std,
        "crop_mode": processor.crop_mode,
        "crops": processor.crops,
        "max_side": processor.max_side,
        "background": processor.background,
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    if check:
        difference = check_onnx(out, module, example)
        if difference > EXPORT_TOLERANCE[dtype]:
            raise ValueError(
                f"{out}: onnxruntime scores differ from PyTorch's by {difference:.2e} > {EXPORT_TOLERANCE[dtype]}"
            )
        sidecar["max_abs_difference"] = difference
    return sidecar


def check_onnx(path: str | os.PathLike, module: PixelsToScores, pixels: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's scores and level probabilities."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError('checking an export needs onnxruntime: pip install "uniqa[export]"') from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, probs = session.run(None, {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        expected_scores, expected_probs = module(pixels)
    return max(
        (torch.from_numpy(scores) - expected_scores).abs().max().item(),
        (torch.from_numpy(probs) - expected_probs).abs().max().item(),
    )
