"""Shared machinery of the benchmark builders.

A benchmark builder only says where its label files are and how to turn them into
:class:`Record` s (``_iter_records``). This base class checks files, reports missing images,
assigns splits and yields rows with the common features:

``image`` (Image), ``image_id`` (str, path relative to ``data_dir``), ``mos`` (float, original
scale), ``mos_normalized`` (float in ``[0, 1]``, higher is better), ``mos_std`` (float or None)
and, for full-reference sets, ``reference`` (Image) and ``reference_id`` (str).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .specs import BenchmarkSpec

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class MissingFilesError(FileNotFoundError):
    """A label file, image folder or all images of a benchmark are missing."""


@dataclass(slots=True)
class Record:
    """One labelled image as read from a benchmark's label files (paths absolute)."""

    image: str
    mos: float
    mos_std: float | None = None
    reference: str | None = None
    group: str | None = None
    official_split: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What a builder found: labelled images, those present, and the missing ones."""

    labelled: int
    missing: list[str]

    @property
    def present(self) -> int:
        return self.labelled - len(self.missing)


class BenchmarkConfig(datasets.BuilderConfig):
    """Builder options.

    Args:
        split_source: ``"auto"`` (the dataset's official split when it has one, else random),
            ``"official"`` or ``"random"``.
        split_seed: seed of the random split.
        val_fraction / test_fraction: sizes of the random split (by group: reference image for
            full-reference sets, image otherwise); the rest is ``train``.
        variant: dataset-specific choice (e.g. KonIQ ``"1024x768"`` / ``"512x384"``).
    """

    def __init__(
        self,
        split_source: str = "auto",
        split_seed: int = 123,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        variant: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if split_source not in ("auto", "official", "random"):
            raise ValueError(f"split_source must be auto/official/random, got {split_source!r}")
        if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
            raise ValueError("need 0 <= val_fraction, test_fraction and their sum < 1")
        self.split_source = split_source
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.variant = variant


def random_split(groups: Iterable[str], seed: int, val: float, test: float) -> dict[str, str]:
    """Seeded group-level split: ``{group: "train"|"validation"|"test"}``.

    Groups are sorted first, so the result depends only on the set of groups and the seed.
    ``round(n * fraction)`` groups go to test and validation (at least one each when the
    fraction is positive and there are >= 3 groups).
    """
    keys = sorted(set(groups))
    n = len(keys)
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test))
    n_val = int(round(n * val))
    if n >= 3:
        n_test = max(n_test, 1 if test > 0 else 0)
        n_val = max(n_val, 1 if val > 0 else 0)
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[keys[idx]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return out


def read_table(path: Path, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV/TSV/XLSX label table, naming the file in any parse error."""
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path, **kwargs)
        return pd.read_csv(path, **kwargs)
    except ImportError as err:
        raise ImportError(f"reading {path} needs {err.name} (pip install openpyxl)") from err
    except Exception as err:  # pandas raises many types
        raise ValueError(f"could not parse label file {path}: {err}") from err


def _column_key(name: Any) -> str:
    """``"MOS_nat"``, ``"mos nat"``, ``"MOS-Nat"`` -> ``"mosnat"`` (case, spaces, ``_``, ``-`` ignored)."""
    return re.sub(r"[\s_\-]", "", str(name).lower())


def optional_column(df: pd.DataFrame, *names: str) -> str | None:
    """The first of ``names`` that ``df`` has (case/space/underscore-insensitive), else None."""
    norm = {_column_key(c): c for c in df.columns}
    return next((norm[_column_key(n)] for n in names if _column_key(n) in norm), None)


def find_column(df: pd.DataFrame, *names: str, path: Path | None = None) -> str:
    """Like :func:`optional_column`, but an absent column is an error listing those that exist."""
    found = optional_column(df, *names)
    if found is not None:
        return found
    where = f" in {path}" if path else ""
    raise KeyError(f"none of the columns {names} found{where}; columns are {list(df.columns)}")


class CaseInsensitiveDir:
    """Map lower-cased file names in a folder to real paths (TID2013 mixes ``i01``/``I01``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = {p.name.lower(): p for p in folder.iterdir()} if folder.is_dir() else {}

    def get(self, name: str) -> Path:
        return self.index.get(name.lower(), self.folder / name)


class BenchmarkBuilder(datasets.GeneratorBasedBuilder):
    """Base of all benchmark builders; subclasses set ``SPEC``, ``LAYOUT`` and ``_iter_records``.

    Use directly (``datasets`` >= 4 has no loading scripts)::

        builder = KonIQ10k(data_dir="/data/koniq10k", cache_dir=...)
        builder.download_and_prepare()
        train = builder.as_dataset("train")
        stream = builder.as_streaming_dataset("train")  # constant memory
    """

    BUILDER_CONFIG_CLASS = BenchmarkConfig
    VERSION = datasets.Version("1.0.0")
    SPEC: ClassVar[BenchmarkSpec]
    LAYOUT: ClassVar[str] = ""
    EXTRA_FEATURES: ClassVar[dict[str, datasets.features.FeatureType]] = {}
    HAS_OFFICIAL_SPLIT: ClassVar[bool] = False

    last_report: LoadReport | None = None

    # -- to implement ---------------------------------------------------------------------
    def _iter_records(self) -> Iterator[Record]:
        """Yield every labelled image of the dataset (called twice; keep it streaming)."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    @property
    def root(self) -> Path:
        """The ``data_dir``; raises :class:`MissingFilesError` if unset or absent."""
        cached = self.__dict__.get("_root")
        if cached is not None:
            return cached
        if not self.config.data_dir:
            raise MissingFilesError(f"{self.SPEC.display_name}: pass data_dir=.\n{self._layout()}")
        root = Path(self.config.data_dir).expanduser()
        if not root.is_dir():
            raise MissingFilesError(f"{self.SPEC.display_name}: data_dir {root} is not a folder.\n{self._layout()}")
        self.__dict__["_root"] = root
        return root

    def _layout(self) -> str:
        return f"Expected layout of data_dir:\n{self.LAYOUT.strip(chr(10))}" if self.LAYOUT else ""

    def find(self, *candidates: str, what: str, base: Path | None = None) -> Path:
        """First existing ``base/candidate``; else a :class:`MissingFilesError` naming all."""
        base = base or self.root
        for cand in candidates:
            path = base / cand
            if path.exists():
                return path
        tried = "\n".join(f"  - {base / c}" for c in candidates)
        raise MissingFilesError(f"{self.SPEC.display_name}: {what} not found; looked for:\n{tried}\n{self._layout()}")

    # -- datasets API ---------------------------------------------------------------------
    def _info(self) -> datasets.DatasetInfo:
        feats: dict[str, Any] = {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "mos": datasets.Value("float32"),
            "mos_normalized": datasets.Value("float32"),
            "mos_std": datasets.Value("float32"),
        }
        if self.SPEC.full_reference:
            feats["reference"] = datasets.Image()
            feats["reference_id"] = datasets.Value("string")
        feats.update(self.EXTRA_FEATURES)
        s = self.SPEC
        direction = "higher is better" if s.higher_is_better else "lower is better"
        return datasets.DatasetInfo(
            description=(
                f"{s.display_name} ({s.task}); {s.label_kind} in [{s.mos_min:g}, {s.mos_max:g}], "
                f"{direction}; mos_normalized in [0, 1], higher is better."
            ),
            features=datasets.Features(feats),
        )

    def _rel(self, path: str | None) -> str | None:
        if path is None:
            return None
        prefix = str(self.root) + os.sep
        rel = path[len(prefix) :] if path.startswith(prefix) else path
        return rel.replace(os.sep, "/")

    def _assign_splits(self, records: list[tuple[str, str, str | None]]) -> dict[str, str]:
        """``records``: (key, group, official_split) of present images -> ``{key: split}``."""
        cfg = self.config
        has_official = any(r[2] for r in records)
        if cfg.split_source == "official" and not has_official:
            raise ValueError(f"{self.SPEC.display_name}: no official split found under {self.root}.\n{self._layout()}")
        if cfg.split_source != "random" and has_official:
            official = {k: s for k, _, s in records if s}
            rest = [k for k, _, s in records if not s]
            if rest:  # e.g. AVA: only a test list is distributed; split the rest train/val
                official.update(random_split(rest, cfg.split_seed, cfg.val_fraction, 0.0))
            return official
        by_group = random_split((g for _, g, _ in records), cfg.split_seed, cfg.val_fraction, cfg.test_fraction)
        return {k: by_group[g] for k, g, _ in records}

    def _check_images(self) -> tuple[dict[str, str], LoadReport]:
        """Pass 1: find missing images, warn, assign splits of the present ones."""
        seen: list[tuple[str, str, str | None]] = []
        missing: list[str] = []
        mos_out = 0
        span = self.SPEC.mos_max - self.SPEC.mos_min
        lo, hi = self.SPEC.mos_min - 0.05 * span, self.SPEC.mos_max + 0.05 * span
        for rec in tqdm(self._iter_records(), desc=f"checking {self.SPEC.display_name}", leave=False):
            key = self._rel(rec.image)
            if not os.path.isfile(rec.image) or (rec.reference and not os.path.isfile(rec.reference)):
                missing.append(key)
                continue
            mos_out += not (lo <= rec.mos <= hi)
            seen.append((key, rec.group or key, rec.official_split))
        report = LoadReport(labelled=len(seen) + len(missing), missing=missing)
        self.last_report = report
        if not seen:
            raise MissingFilesError(
                f"{self.SPEC.display_name}: none of the {report.labelled} labelled images was "
                f"found under {self.root} (first expected: {missing[:3]}).\n{self._layout()}"
            )
        if missing:
            logger.warning(
                "%s: %d of %d labelled images are missing under %s (e.g. %s); loading the other %d",
                self.SPEC.display_name, len(missing), report.labelled, self.root,
                ", ".join(missing[:5]), report.present,
            )  # fmt: skip
        if mos_out:
            logger.warning(
                "%s: %d labels lie outside the expected %s range [%g, %g]; check the label file "
                "or the dataset version (normalisation clips them)",
                self.SPEC.display_name, mos_out, self.SPEC.label_kind, self.SPEC.mos_min,
                self.SPEC.mos_max,
            )  # fmt: skip
        return self._assign_splits(seen), report

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        assignment, _ = self._check_images()
        present = sorted(set(assignment.values()), key=SPLITS.index)
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s, "assignment": assignment}) for s in present]

    def _generate_examples(self, split: str, assignment: dict[str, str]) -> Iterator[tuple[str, dict]]:
        """Pass 2: stream the records of one split as rows."""
        for rec in self._iter_records():
            key = self._rel(rec.image)
            if assignment.get(key) != split:
                continue
            row: dict[str, Any] = {
                "image": rec.image,
                "image_id": key,
                "mos": rec.mos,
                "mos_normalized": self.SPEC.normalize(rec.mos),
                "mos_std": rec.mos_std,
            }
            if self.SPEC.full_reference:
                row["reference"] = rec.reference
                row["reference_id"] = self._rel(rec.reference)
            for name in self.EXTRA_FEATURES:
                row[name] = rec.extras.get(name)
            yield key, row

    def as_dataset(self, split: Any = None, *args: Any, **kwargs: Any) -> Any:
        """As in ``datasets``, with a clear error for a split this copy does not have."""
        splits = self.info.splits
        if isinstance(split, str) and split in SPLITS and splits is not None and split not in splits:
            raise ValueError(
                f"{self.SPEC.display_name} has no {split!r} split here; available: "
                f"{list(self.info.splits)} (set val_fraction/test_fraction or split_source)"
            )
        return super().as_dataset(split, *args, **kwargs)
