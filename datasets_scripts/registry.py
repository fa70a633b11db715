"""``load_benchmark("koniq10k", data_dir=..., split="train")`` and friends."""

from __future__ import annotations

from typing import Any

import datasets

from .base import BenchmarkBuilder
from .benchmarks import BUILDERS
from .specs import canonical_name


def list_benchmarks() -> list[str]:
    """Canonical names accepted by :func:`load_benchmark`."""
    return list(BUILDERS)


def get_builder(name: str, data_dir: str, **config: Any) -> BenchmarkBuilder:
    """Instantiate a benchmark's builder (``config``: cache_dir, split_seed, variant, ...)."""
    return BUILDERS[canonical_name(name)](data_dir=str(data_dir), **config)


def load_benchmark(
    name: str,
    data_dir: str,
    split: str | None = "train",
    streaming: bool = False,
    **config: Any,
) -> datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset:
    """Load one split (``None``: all, as a DatasetDict) of a benchmark from a local copy.

    ``streaming=True`` returns an ``IterableDataset`` that reads the label file lazily (AVA-size
    data with flat memory). Splits: ``train``/``validation``/``test``; ``"train+validation"``
    style expressions work too.
    """
    builder = get_builder(name, data_dir, **config)
    if streaming:
        return builder.as_streaming_dataset(split)
    builder.download_and_prepare()
    return builder.as_dataset(split)
