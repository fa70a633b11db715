"""Export a UniQA model as one ONNX graph from normalised crops to scores (`uniqa export --format onnx DIR OUT`).

The graph holds the vision tower, the adapter (if any) and the prompt set's text features, computed once and
stored as constants, so it needs neither the text tower nor the tokenizer. Beside `OUT.onnx` a `OUT.json` sidecar
records how to make its input (crop size, normalisation, crop protocol) and what its output means, so that it
can be run with onnxruntime, numpy and Pillow alone (see docs/performance.md). Needs `pip install "uniqa[export]"`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling_uniqa import PromptSetLike, UniQAModel

EXPORT_TOLERANCE = 1e-4


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
) -> dict[str, Any]:
    """Write `out` (an ONNX graph, crops -> scores, dynamic batch) and its `.json` sidecar; return the sidecar.

    Args:
        model: a [`UniQAModel`] or a model folder.
        out: the `.onnx` file to write.
        task, adapter, prompt_set: the request baked into the graph (see `UniQAModel.score`).
        opset: ONNX opset version (>= 14 for attention).
        check: run the graph with onnxruntime on random crops and raise `ValueError` if its scores differ from
            PyTorch's by more than `EXPORT_TOLERANCE`.
    """
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
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: sizes are fixed
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: the new one needs onnxscript
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["pixel_values"],
            output_names=["scores", "level_probs"],
            dynamic_axes={"pixel_values": {0: "crops"}, "scores": {0: "crops"}, "level_probs": {0: "crops"}},
            opset_version=opset,
            dynamo=False,
        )
    levels = module.levels.tolist()
    sidecar = {
        "format": "uniqa-onnx/1",
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
        if difference > EXPORT_TOLERANCE:
            raise ValueError(
                f"{out}: onnxruntime scores differ from PyTorch's by {difference:.2e} > {EXPORT_TOLERANCE}"
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
