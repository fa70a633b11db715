"""Datasets for UniQA: IQA/IAA benchmark builders, the image-text corpus, synthetic distortions.

Quick use::

    from datasets_scripts import load_benchmark, get_spec
    train = load_benchmark("koniq10k", data_dir="/data/koniq10k", split="train")
    target = get_spec("koniq10k").normalize(train["mos"])  # [0, 1], higher is better
"""

from .base import BenchmarkBuilder, BenchmarkConfig, LoadReport, MissingFilesError, Record
from .benchmarks import (
    AADB,
    AGIN,
    AGIQA3K,
    AIGIQA20K,
    AVA,
    BUILDERS,
    CSIQ,
    ECIQAD,
    LIVE,
    LIVEC,
    PIPAL,
    SPAQ,
    TID2013,
    KADID10k,
    KonIQ10k,
)
from .corpus import export_imagefolder, export_parquet, load_corpus
from .pyiqa import PyIQAMetaInfo, read_split_pickle
from .registry import get_builder, list_benchmarks, load_benchmark
from .specs import SPECS, BenchmarkSpec, canonical_name, get_spec
from .synthetic import DISTORTIONS, build_synthetic_dataset, describe, distort

__all__ = [
    "AADB",
    "AGIN",
    "AGIQA3K",
    "AIGIQA20K",
    "AVA",
    "BUILDERS",
    "CSIQ",
    "DISTORTIONS",
    "ECIQAD",
    "LIVE",
    "LIVEC",
    "PIPAL",
    "SPAQ",
    "SPECS",
    "TID2013",
    "BenchmarkBuilder",
    "BenchmarkConfig",
    "BenchmarkSpec",
    "KADID10k",
    "KonIQ10k",
    "LoadReport",
    "MissingFilesError",
    "PyIQAMetaInfo",
    "Record",
    "build_synthetic_dataset",
    "canonical_name",
    "describe",
    "distort",
    "export_imagefolder",
    "export_parquet",
    "get_builder",
    "get_spec",
    "list_benchmarks",
    "load_benchmark",
    "load_corpus",
    "read_split_pickle",
]
