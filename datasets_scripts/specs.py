"""MOS scale and direction of every supported benchmark, stated once.

Training and evaluation code import :func:`get_spec` to map a dataset's MOS to the
``[0, 1]`` higher-is-better target the UniQA adapter is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

Task = Literal["quality", "aesthetics"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark's label scale.

    ``mos_min``/``mos_max`` bound the MOS as published (original scale); ``normalize`` maps
    it linearly to ``[0, 1]`` (clipped), flipping DMOS-style scales so that 1 is always best.
    """

    name: str
    display_name: str
    task: Task
    mos_min: float
    mos_max: float
    higher_is_better: bool
    full_reference: bool = False
    num_images: int | None = None
    label_kind: str = "MOS"

    @overload
    def normalize(self, mos: float) -> float: ...
    @overload
    def normalize(self, mos: np.ndarray) -> np.ndarray: ...

    def normalize(self, mos):
        """Original-scale MOS (scalar or array) -> ``[0, 1]``, higher is better."""
        x = (np.asarray(mos, dtype=np.float64) - self.mos_min) / (self.mos_max - self.mos_min)
        if not self.higher_is_better:
            x = 1.0 - x
        x = np.clip(x, 0.0, 1.0)
        return float(x) if np.ndim(x) == 0 else x

    @overload
    def denormalize(self, score: float) -> float: ...
    @overload
    def denormalize(self, score: np.ndarray) -> np.ndarray: ...

    def denormalize(self, score):
        """``[0, 1]`` higher-is-better score -> original MOS scale (inverse of ``normalize``)."""
        x = np.asarray(score, dtype=np.float64)
        if not self.higher_is_better:
            x = 1.0 - x
        x = self.mos_min + x * (self.mos_max - self.mos_min)
        return float(x) if np.ndim(x) == 0 else x


SPECS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("koniq10k", "KonIQ-10k", "quality", 0.0, 100.0, True, num_images=10073),
        BenchmarkSpec("spaq", "SPAQ", "quality", 0.0, 100.0, True, num_images=11125),
        BenchmarkSpec("livec", "LIVE Challenge (CLIVE)", "quality", 0.0, 100.0, True, num_images=1162),
        BenchmarkSpec("kadid10k", "KADID-10k", "quality", 1.0, 5.0, True, True, 10125, label_kind="DMOS"),
        BenchmarkSpec("tid2013", "TID2013", "quality", 0.0, 9.0, True, True, 3000),
        BenchmarkSpec("csiq", "CSIQ", "quality", 0.0, 1.0, False, True, 866, label_kind="DMOS"),
        BenchmarkSpec("live", "LIVE IQA", "quality", 0.0, 100.0, False, True, 779, label_kind="DMOS"),
        BenchmarkSpec("ava", "AVA", "aesthetics", 1.0, 10.0, True, num_images=255530),
        BenchmarkSpec("aadb", "AADB", "aesthetics", 0.0, 1.0, True, num_images=10000),
        BenchmarkSpec("agiqa3k", "AGIQA-3K", "quality", 0.0, 5.0, True, num_images=2982),
        BenchmarkSpec("aigiqa20k", "AIGIQA-20K", "quality", 0.0, 1.0, True, num_images=20000),
        BenchmarkSpec("pipal", "PIPAL", "quality", 800.0, 1900.0, True, True, 23200, label_kind="Elo"),
        # ECIQAD and AGIN: scales not confirmed from a copy; [0, 5] holds a 1-5 or 0-5 rating without
        # clipping (docs/datasets.md). A warning is logged if labels fall far outside.
        BenchmarkSpec("eciqad", "ECIQAD", "quality", 0.0, 5.0, True, num_images=2400),
        BenchmarkSpec("agin", "AGIN", "quality", 0.0, 5.0, True, num_images=6049, label_kind="naturalness MOS"),
    ]
}

ALIASES: dict[str, str] = {
    "koniq": "koniq10k",
    "clive": "livec",
    "livechallenge": "livec",
    "kadid": "kadid10k",
    "tid": "tid2013",
    "liveiqa": "live",
    "agiqa": "agiqa3k",
    "aigiqa": "aigiqa20k",
    "enhancedcolonoscopy": "eciqad",
}


def canonical_name(name: str) -> str:
    """``"KonIQ-10k"``, ``"koniq_10k"`` ... -> ``"koniq10k"``; raises ``KeyError`` if unknown."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(SPECS)}")
    return key


def get_spec(name: str) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` of a benchmark, by any spelling of its name."""
    return SPECS[canonical_name(name)]
