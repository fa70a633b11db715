"""The tiny randomly initialised UniQA model of the pre-training tests (a few thousand weights, 32 px images)."""

from __future__ import annotations

from pathlib import Path

from modeling_uniqa.modeling_uniqa import UniQAModel
from modeling_uniqa.training.pretraining import build_model

TINY_TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
TINY_VISION = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "patch_size": 8,
    "image_size": 32,
}


def build_tiny_model(tokenizer_dir: str | Path, seed: int = 0) -> UniQAModel:
    """The same random init for the same seed; the CLIP tokenizer is written to `tokenizer_dir`."""
    return build_model(TINY_TEXT, TINY_VISION, 16, tokenizer_dir, seed=seed)
