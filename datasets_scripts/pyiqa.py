"""Read IQA-PyTorch (pyiqa) style ``meta_info_*.csv`` tables and split pickles.

Formats (as that toolbox writes them):

* NR table: first column the image path relative to the image root, second the MOS; extra
  columns are ignored except split columns (names containing ``split``, values
  ``train``/``val``/``test``).
* FR table: ``ref_name,dist_name,<mos>`` (a header whose first column mentions ``ref``).
* Split pickle: ``{split_index: {"train": [row indices], "val": [...], "test": [...]}}``,
  row indices into the table.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .base import BenchmarkBuilder, BenchmarkConfig, MissingFilesError, Record, read_table
from .benchmarks import official_split_name
from .specs import BenchmarkSpec, get_spec


class PyIQAConfig(BenchmarkConfig):
    """``benchmark`` picks the MOS spec; ``meta_info_file`` is the table; ``split_file`` +
    ``split_index`` a pickle, or ``split_column`` a split column of the table."""

    def __init__(
        self,
        benchmark: str = "koniq10k",
        meta_info_file: str | None = None,
        split_file: str | None = None,
        split_index: int = 1,
        split_column: str | None = None,
        ref_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.benchmark = benchmark
        self.meta_info_file = meta_info_file
        self.split_file = split_file
        self.split_index = split_index
        self.split_column = split_column
        self.ref_dir = ref_dir


def read_split_pickle(path: str | Path, split_index: int = 1) -> dict[str, list[int]]:
    """A pyiqa split pickle -> ``{"train"|"validation"|"test": [row indices]}``."""
    with open(path, "rb") as fh:
        splits = pickle.load(fh)
    if split_index not in splits:
        raise KeyError(f"{path}: no split index {split_index}; available {sorted(splits)}")
    return {official_split_name(k) or k: [int(i) for i in v] for k, v in splits[split_index].items()}


def is_full_reference_table(df: pd.DataFrame) -> bool:
    """True for ``ref_name,dist_name,mos`` style tables."""
    return len(df.columns) >= 3 and "ref" in str(df.columns[0]).lower()


class PyIQAMetaInfo(BenchmarkBuilder):
    """Any dataset described by a pyiqa meta-info table (``data_dir`` = image root)."""

    BUILDER_CONFIG_CLASS = PyIQAConfig
    LAYOUT = """
<data_dir>/<paths in the meta_info table>
meta_info_file=...csv   NR: "<image>,<mos>,..."  FR: "ref_name,dist_name,<mos>"
split_file=...pkl       optional {index: {"train": [...], "val": [...], "test": [...]}}
"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        meta = kwargs.get("meta_info_file")
        if meta is None:
            raise MissingFilesError("PyIQAMetaInfo needs meta_info_file=<path to the csv>")
        self._table = read_table(Path(meta))
        spec = get_spec(kwargs.get("benchmark", "koniq10k"))
        fr = is_full_reference_table(self._table)
        # per instance: the table decides FR-ness, the named benchmark the MOS scale
        self.SPEC = BenchmarkSpec(**{**spec.__dict__, "full_reference": fr})
        super().__init__(*args, **kwargs)

    def _iter_records(self) -> Iterator[Record]:
        df, cfg = self._table, self.config
        ref_root = Path(cfg.ref_dir) if cfg.ref_dir else self.root
        by_row: dict[int, str] = {}
        if cfg.split_file:
            for split, rows in read_split_pickle(cfg.split_file, cfg.split_index).items():
                for r in rows:
                    by_row.setdefault(r, split)  # pyiqa sometimes repeats test as val
        elif cfg.split_column:
            if cfg.split_column not in df.columns:
                raise KeyError(f"{cfg.meta_info_file}: no column {cfg.split_column!r}")
            by_row = {i: official_split_name(v) for i, v in enumerate(df[cfg.split_column])}
        fr = self.SPEC.full_reference
        for i, row in enumerate(df.itertuples(index=False)):
            if fr:
                ref, img, mos = str(row[0]), str(row[1]), float(row[2])
            else:
                img, mos, ref = str(row[0]), float(row[1]), None
            if by_row and by_row.get(i) is None:
                continue  # row not in the chosen split file
            yield Record(
                image=str(self.root / img),
                mos=mos,
                reference=str(ref_root / ref) if ref else None,
                group=ref,
                official_split=by_row.get(i),
            )
