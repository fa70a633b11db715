"""The multi-cue adapter and the level-prompt scoring head (docs/method.md, "Scores" and "The multi-cue adapter")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LevelPromptHead(nn.Module):
    """Scores image embeddings against groups of level prompts, optionally through a multi-cue adapter.

    For each group, a softmax over `logit_scale.exp() * cos(image, prompt_k)` weights the level values; the
    score is the mean of the group scores. Stateless: adapter, prompts, levels and the temperature are inputs.
    This is the one implementation of adapter -> level-prompt scoring: the model's `forward`, `score`, adapter
    fine-tuning and the ONNX export all call it.
    """

    def forward(
        self,
        image_embeds: torch.Tensor,
        text_embeds: torch.Tensor,
        levels: torch.Tensor,
        logit_scale: torch.Tensor,
        adapter: MultiCueAdapter | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            image_embeds: `(N, D)` raw (unnormalised) image embeddings.
            text_embeds: `(G, K, D)` L2-normalised prompt embeddings, `G` groups of `K` levels.
            levels: `(K,)` value of each level, worst first (an adapter's own learned `levels` when it scores).
            logit_scale: scalar log-temperature.
            adapter: a [`MultiCueAdapter`] applied to the raw embeddings first (its visual cue), or `None`.

        Returns:
            `scores` of shape `(N,)` in `[min(levels), max(levels)]` and `probs` of shape `(N, G, K)`.
        """
        if adapter is not None:
            image_embeds = adapter(image_embeds)
        image_embeds = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
        logits = logit_scale.exp() * torch.einsum("nd,gkd->ngk", image_embeds, text_embeds.to(image_embeds.dtype))
        probs = logits.softmax(dim=-1)
        scores = (probs * levels.to(probs.dtype)).sum(dim=-1).mean(dim=-1)
        return scores, probs


class MultiCueAdapter(nn.Module):
    """UniQA's adapter: a residual bottleneck on the image embedding (visual cue) and learnable levels
    (level cue); the frozen level prompts give the textual cue.

    `f' = f + ReLU(W2 ReLU(W1 f))` with `W1: D -> bottleneck_dim`, `W2: bottleneck_dim -> D`, no biases.
    Parameter names (`fc.0.weight`, `fc.2.weight`) follow the original checkpoints.
    """

    def __init__(self, embed_dim: int, bottleneck_dim: int | None = None, levels: Sequence[float] = ()):
        super().__init__()
        bottleneck_dim = bottleneck_dim or embed_dim // 2
        self.fc = nn.Sequential(
            nn.Linear(embed_dim, bottleneck_dim, bias=False),
            nn.ReLU(),
            nn.Linear(bottleneck_dim, embed_dim, bias=False),
            nn.ReLU(),
        )
        self.levels = nn.Parameter(torch.tensor(list(levels), dtype=torch.float32))

    @property
    def bottleneck_dim(self) -> int:
        return self.fc[0].out_features

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """`(N, D)` raw image embeddings -> `(N, D)` adapted embeddings."""
        return image_embeds + self.fc(image_embeds)
