"""One builder per IQA/IAA benchmark, reading the dataset as its owners distribute it.

Each class states its expected folder layout (``LAYOUT``, also printed in errors) and turns the
label files into :class:`~datasets_scripts.base.Record` s; everything else is shared.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import datasets
import numpy as np
import scipy.io

from .base import (
    BenchmarkBuilder,
    CaseInsensitiveDir,
    MissingFilesError,
    Record,
    find_column,
    optional_column,
    read_table,
)
from .specs import get_spec

logger = logging.getLogger(__name__)

_SPLIT_WORDS = {
    "train": "train", "training": "train", "trainval": "train",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "test", "testing": "test", "testnew": "test",
}  # fmt: skip


def official_split_name(word: Any) -> str | None:
    """``"training"`` -> ``"train"``, ``"val"`` -> ``"validation"``; unknown -> ``None``."""
    return _SPLIT_WORDS.get(str(word).strip().lower())


def _float_or_none(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _text_or_none(x: Any) -> str | None:
    """A table cell as stripped text; NaN / empty -> ``None``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return str(x).strip() or None


def _mat_strings(arr: np.ndarray) -> list[str]:
    """MATLAB cell array of strings (as scipy loads it) -> list of str."""
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(arr, dtype=object).ravel()]


def _load_mat(path: Path, key: str) -> np.ndarray:
    try:
        data = scipy.io.loadmat(path)
    except Exception as err:
        raise ValueError(f"could not read MATLAB file {path}: {err}") from err
    if key not in data:
        names = [k for k in data if not k.startswith("__")]
        raise KeyError(f"{path} has no variable {key!r}; it holds {names}")
    return data[key]


# ---------------------------------------------------------------------------------------------
class KonIQ10k(BenchmarkBuilder):
    """KonIQ-10k: 10,073 in-the-wild photos; ``mos`` is the 0-100 ``MOS_zscore``."""

    SPEC = get_spec("koniq10k")
    HAS_OFFICIAL_SPLIT = True
    LAYOUT = """
koniq10k/
  koniq10k_scores_and_distributions.csv  image_name,c1..c5,c_total,MOS (1-5),SD,MOS_zscore (0-100)
  koniq10k_distributions_sets.csv        optional official split: ...,MOS (0-100),SD,set
  1024x768/<image_name>                  and/or 512x384/<image_name> (config variant=)
"""
    EXTRA_FEATURES = {
        "votes": datasets.Sequence(datasets.Value("float32")),
        "num_ratings": datasets.Value("int32"),
        "mos_5pt": datasets.Value("float32"),
        "std_5pt": datasets.Value("float32"),
    }
    SCORES = "koniq10k_scores_and_distributions.csv"
    SETS = "koniq10k_distributions_sets.csv"

    def _iter_records(self) -> Iterator[Record]:
        variant = self.config.variant
        folders = [variant] if variant else ["1024x768", "512x384"]
        images = self.find(*folders, what="image folder")
        scores, sets = self.root / self.SCORES, self.root / self.SETS
        if not scores.exists() and not sets.exists():
            self.find(self.SCORES, self.SETS, what="label file")
        split_of: dict[str, str | None] = {}
        if sets.exists():
            df = read_table(sets)
            name, col = find_column(df, "image_name", path=sets), find_column(df, "set", path=sets)
            split_of = {str(n): official_split_name(s) for n, s in zip(df[name], df[col], strict=False)}
        path = scores if scores.exists() else sets
        df = read_table(path)
        name = find_column(df, "image_name", path=path)
        has_z = any(str(c).lower() == "mos_zscore" for c in df.columns)
        mos_col = find_column(df, "MOS_zscore" if has_z else "MOS", path=path)
        for row in df.to_dict("records"):
            img = str(row[name])
            yield Record(
                image=str(images / img),
                mos=float(row[mos_col]),
                official_split=split_of.get(img),
                extras={
                    "votes": [float(row[f"c{k}"]) for k in range(1, 6) if f"c{k}" in row],
                    "num_ratings": int(row["c_total"]) if "c_total" in row else None,
                    "mos_5pt": _float_or_none(row.get("MOS")) if has_z else None,
                    "std_5pt": _float_or_none(row.get("SD")),
                },
            )


class SPAQ(BenchmarkBuilder):
    """SPAQ: 11,125 smartphone photos, MOS 0-100 plus five attribute scores."""

    SPEC = get_spec("spaq")
    LAYOUT = """
spaq/
  Annotations/MOS and Image attribute scores.xlsx  Image name,MOS,Brightness,Colorfulness,
                                                   Contrast,Noisiness,Sharpness
  TestImage/<Image name>
"""
    ATTRIBUTES = ("brightness", "colorfulness", "contrast", "noisiness", "sharpness")
    EXTRA_FEATURES = {a: datasets.Value("float32") for a in ATTRIBUTES}

    def _iter_records(self) -> Iterator[Record]:
        labels = self.find(
            "Annotations/MOS and Image attribute scores.xlsx",
            "MOS and Image attribute scores.xlsx",
            "Annotations/MOS and Image attribute scores.csv",
            what="label file",
        )
        images = self.find("TestImage", "images", what="image folder")
        df = read_table(labels)
        name = find_column(df, "Image name", "image_name", path=labels)
        mos = find_column(df, "MOS", path=labels)
        attrs = {a: next((c for c in df.columns if str(c).lower() == a), None) for a in self.ATTRIBUTES}
        for row in df.to_dict("records"):
            yield Record(
                image=str(images / str(row[name])),
                mos=float(row[mos]),
                extras={a: _float_or_none(row[c]) if c else None for a, c in attrs.items()},
            )


class LIVEC(BenchmarkBuilder):
    """LIVE In the Wild Challenge: 1,162 photos (the 7 training images t1..t7 are dropped)."""

    SPEC = get_spec("livec")
    LAYOUT = """
ChallengeDB_release/        (data_dir may be this folder or its parent)
  Data/AllImages_release.mat   AllImages_release: 1169 names, t1.bmp..t7.bmp first
  Data/AllMOS_release.mat      AllMOS_release: 1x1169 MOS (0-100)
  Data/AllStdDev_release.mat   optional, AllStdDev_release: 1x1169
  Images/<name>                .bmp and .JPG files
"""

    def _iter_records(self) -> Iterator[Record]:
        base = self.root / "ChallengeDB_release"
        base = base if base.is_dir() else self.root
        names_f = self.find("Data/AllImages_release.mat", what="image list", base=base)
        mos_f = self.find("Data/AllMOS_release.mat", what="MOS file", base=base)
        images = self.find("Images", what="image folder", base=base)
        names = _mat_strings(_load_mat(names_f, "AllImages_release"))
        mos = np.asarray(_load_mat(mos_f, "AllMOS_release"), dtype=float).ravel()
        std_f = base / "Data/AllStdDev_release.mat"
        std = (
            np.asarray(_load_mat(std_f, "AllStdDev_release"), dtype=float).ravel()
            if std_f.exists()
            else np.full(len(names), np.nan)
        )
        if not len(names) == len(mos) == len(std):
            raise ValueError(f"{names_f} lists {len(names)} images but {mos_f} has {len(mos)} MOS values")
        for n, m, s in zip(names, mos, std, strict=False):
            if re.fullmatch(r"t\d+\.bmp", n, flags=re.IGNORECASE):
                continue  # the 7 images used to train the raters
            yield Record(image=str(images / n), mos=float(m), mos_std=_float_or_none(s))


class KADID10k(BenchmarkBuilder):
    """KADID-10k: 10,125 images, 81 references x 25 distortions x 5 levels; DMOS 1-5."""

    SPEC = get_spec("kadid10k")
    LAYOUT = """
kadid10k/
  dmos.csv       dist_img,ref_img,dmos,var
  images/        I01.png .. I81.png and I01_01_01.png .. I81_25_05.png
"""
    EXTRA_FEATURES = {
        "distortion_type": datasets.Value("int32"),
        "distortion_level": datasets.Value("int32"),
    }

    def _iter_records(self) -> Iterator[Record]:
        labels = self.find("dmos.csv", what="label file")
        images = self.find("images", what="image folder")
        df = read_table(labels)
        dist, ref = find_column(df, "dist_img", path=labels), find_column(df, "ref_img", path=labels)
        dmos, var = find_column(df, "dmos", path=labels), find_column(df, "var", path=labels)
        for row in df.to_dict("records"):
            parts = Path(str(row[dist])).stem.split("_")
            yield Record(
                image=str(images / str(row[dist])),
                mos=float(row[dmos]),
                mos_std=math.sqrt(float(row[var])),
                reference=str(images / str(row[ref])),
                group=str(row[ref]),
                extras={"distortion_type": int(parts[1]), "distortion_level": int(parts[2])},
            )


class TID2013(BenchmarkBuilder):
    """TID2013: 3,000 images, 25 references x 24 distortions x 5 levels; MOS 0-9."""

    SPEC = get_spec("tid2013")
    LAYOUT = """
tid2013/
  mos_with_names.txt   one "<mos> <name>" per line, e.g. "5.51429 i01_01_1.bmp"
  mos_std.txt          optional, one std per line, same order
  distorted_images/    i01_01_1.bmp .. (case varies)
  reference_images/    I01.BMP .. I25.BMP
"""
    EXTRA_FEATURES = KADID10k.EXTRA_FEATURES

    def _iter_records(self) -> Iterator[Record]:
        labels = self.find("mos_with_names.txt", what="label file")
        dist = CaseInsensitiveDir(self.find("distorted_images", what="image folder"))
        refs = CaseInsensitiveDir(self.find("reference_images", what="reference folder"))
        std_f = self.root / "mos_std.txt"
        stds = [float(x) for x in std_f.read_text().split()] if std_f.exists() else []
        lines = [ln.split() for ln in labels.read_text().splitlines() if ln.strip()]
        if stds and len(stds) != len(lines):
            raise ValueError(f"{std_f} has {len(stds)} values but {labels} has {len(lines)} lines")
        for i, parts in enumerate(lines):
            if len(parts) != 2:
                raise ValueError(f"{labels} line {i + 1}: expected '<mos> <name>', got {parts}")
            mos, name = float(parts[0]), parts[1]
            ref_id, dtype, level = Path(name).stem.split("_")
            yield Record(
                image=str(dist.get(name)),
                mos=mos,
                mos_std=stds[i] if stds else None,
                reference=str(refs.get(f"{ref_id}.bmp")),
                group=ref_id.lower(),
                extras={"distortion_type": int(dtype), "distortion_level": int(level)},
            )


class CSIQ(BenchmarkBuilder):
    """CSIQ: 866 images, 30 references x 6 distortions x 4-5 levels; DMOS 0-1, lower better."""

    SPEC = get_spec("csiq")
    LAYOUT = """
csiq/
  csiq.DMOS.xlsx   a sheet with columns image,dst_idx,dst_type,dst_lev,dmos_std,dmos
  dst_imgs/<type folder>/<image>.<TYPE>.<lev>.png   e.g. dst_imgs/awgn/1600.AWGN.1.png
  src_imgs/<image>.png
"""
    EXTRA_FEATURES = {
        "distortion_type": datasets.Value("string"),
        "distortion_level": datasets.Value("int32"),
    }
    _TYPE_ALIASES = {"awgn": "noise", "jp2k": "jpeg2000", "pinknoise": "fnoise"}

    @classmethod
    def _norm_type(cls, t: str) -> str:
        key = re.sub(r"[^a-z0-9]", "", t.lower())
        return cls._TYPE_ALIASES.get(key, key)

    def _label_table(self, path: Path) -> list[dict[str, Any]]:
        sheets = read_table(path, sheet_name=None, header=None)
        best: list[dict[str, Any]] = []
        for sheet in sheets.values():
            cells = sheet.map(lambda v: str(v).strip().lower())
            hits = [i for i in range(len(cells)) if {"image", "dmos"} <= set(cells.iloc[i])]
            if not hits:
                continue
            header = list(cells.iloc[hits[0]])
            rows = sheet.iloc[hits[0] + 1 :].dropna(how="all")
            recs = [dict(zip(header, r, strict=False)) for r in rows.itertuples(index=False)]
            recs = [r for r in recs if _float_or_none(r.get("dmos")) is not None]
            best = recs if len(recs) > len(best) else best
        if not best:
            raise ValueError(f"{path}: no sheet with a header row holding 'image' and 'dmos'")
        return best

    def _iter_records(self) -> Iterator[Record]:
        labels = self.find("csiq.DMOS.xlsx", "CSIQ.DMOS.xlsx", what="label spreadsheet")
        dst = self.find("dst_imgs", what="distorted image folder")
        src = self.find("src_imgs", what="reference image folder")
        index = {}
        for p in dst.rglob("*.png"):
            parts = p.name.split(".")
            if len(parts) == 4:
                index[(parts[0].lower(), self._norm_type(parts[1]), parts[2])] = p
        for row in self._label_table(labels):
            image = re.sub(r"\.0$", "", str(row["image"]).strip())
            level = str(int(float(row["dst_lev"])))
            dtype = self._norm_type(str(row["dst_type"]))
            path = index.get((image.lower(), dtype, level), dst / dtype / f"{image}.{dtype}.{level}.png")
            yield Record(
                image=str(path),
                mos=float(row["dmos"]),
                mos_std=_float_or_none(row.get("dmos_std")),
                reference=str(src / f"{image}.png"),
                group=image.lower(),
                extras={"distortion_type": dtype, "distortion_level": int(level)},
            )


class LIVE(BenchmarkBuilder):
    """LIVE IQA release 2: 779 distorted images of 29 references; DMOS ~0-100, lower better."""

    SPEC = get_spec("live")
    LAYOUT = """
databaserelease2/           (data_dir may be this folder or its parent)
  dmos_realigned.mat   dmos_new, dmos_std, orgs (used when present; variant="dmos" for dmos.mat)
  dmos.mat             dmos, orgs (1x982; orgs==1 marks reference copies, dropped)
  refnames_all.mat     refnames_all (1x982 reference names)
  jp2k/img1..227.bmp  jpeg/img1..233.bmp  wn/img1..174.bmp  gblur/img1..174.bmp
  fastfading/img1..174.bmp  refimgs/<refname>
"""
    FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
    EXTRA_FEATURES = {"distortion_type": datasets.Value("string")}

    def _iter_records(self) -> Iterator[Record]:
        base = self.root / "databaserelease2"
        base = base if base.is_dir() else self.root
        realigned = base / "dmos_realigned.mat"
        if realigned.exists() and self.config.variant != "dmos":
            dmos = _load_mat(realigned, "dmos_new")
            data = scipy.io.loadmat(realigned)
            std = data.get("dmos_std")
            orgs = data["orgs"] if "orgs" in data else _load_mat(base / "dmos.mat", "orgs")
        else:
            path = self.find("dmos.mat", "dmos_realigned.mat", what="DMOS file", base=base)
            dmos, orgs, std = _load_mat(path, "dmos"), _load_mat(path, "orgs"), None
        refs = _mat_strings(_load_mat(self.find("refnames_all.mat", what="reference names", base=base), "refnames_all"))
        dmos, orgs = np.ravel(dmos).astype(float), np.ravel(orgs).astype(int)
        std = np.ravel(std).astype(float) if std is not None else np.full(len(dmos), np.nan)
        names = [(f, f"img{i}.bmp") for f, n in self.FOLDERS for i in range(1, n + 1)]
        if not len(names) == len(dmos) == len(orgs) == len(refs):
            raise ValueError(
                f"LIVE: expected {len(names)} entries in the DMOS/refnames files under {base}, "
                f"got {len(dmos)} DMOS, {len(orgs)} orgs, {len(refs)} names"
            )
        for (folder, name), d, o, s, ref in zip(names, dmos, orgs, std, refs, strict=False):
            if o == 1:
                continue
            yield Record(
                image=str(base / folder / name),
                mos=float(d),
                mos_std=_float_or_none(s),
                reference=str(base / "refimgs" / ref),
                group=ref,
                extras={"distortion_type": folder},
            )


class AVA(BenchmarkBuilder):
    """AVA: ~255k photos with 1-10 vote histograms; ``mos`` is the vote mean.

    Rows stream from ``AVA.txt`` line by line, so ``as_streaming_dataset`` keeps memory flat.
    """

    SPEC = get_spec("ava")
    HAS_OFFICIAL_SPLIT = True
    LAYOUT = """
AVA_dataset/                (data_dir may be this folder or its parent)
  AVA.txt     "<index> <image id> <10 vote counts for scores 1..10> <tag 1> <tag 2> <challenge id>"
  images/<image id>.jpg
  aesthetics_image_lists/generic_test.jpgl   optional: official test ids (one per line);
                                             the other images form train (+ validation)
"""
    EXTRA_FEATURES = {
        "votes": datasets.Sequence(datasets.Value("int32"), length=10),
        "semantic_tags": datasets.Sequence(datasets.Value("int32")),
        "challenge_id": datasets.Value("int32"),
    }
    _SCORES = np.arange(1, 11, dtype=np.float64)

    def _iter_records(self) -> Iterator[Record]:
        base = self.root / "AVA_dataset"
        base = base if (base / "AVA.txt").exists() else self.root
        labels = self.find("AVA.txt", what="label file", base=base)
        images = self.find("images", "image", what="image folder", base=base)
        test_list = base / "aesthetics_image_lists" / "generic_test.jpgl"
        test_ids = set(test_list.read_text().split()) if test_list.exists() else set()
        with labels.open() as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 12:
                    raise ValueError(f"{labels} line {lineno}: expected >= 12 fields, got {len(parts)}")
                votes = np.array([int(v) for v in parts[2:12]])
                total = votes.sum()
                if total == 0:
                    continue
                mean = float((votes * self._SCORES).sum() / total)
                std = float(math.sqrt((votes * (self._SCORES - mean) ** 2).sum() / total))
                tags = [int(t) for t in parts[12:14] if int(t) != 0]
                yield Record(
                    image=str(images / f"{parts[1]}.jpg"),
                    mos=mean,
                    mos_std=std,
                    official_split="test" if parts[1] in test_ids else None,
                    extras={
                        "votes": votes.tolist(),
                        "semantic_tags": tags,
                        "challenge_id": int(parts[14]) if len(parts) > 14 else None,
                    },
                )


class AADB(BenchmarkBuilder):
    """AADB: 10,000 photos, aesthetic score 0-1 and 11 attributes in [-1, 1]; official splits."""

    SPEC = get_spec("aadb")
    HAS_OFFICIAL_SPLIT = True
    LAYOUT = """
aadb/
  imgListFiles_label/imgListTrainRegression_score.txt        "<file name> <score>" per line
  imgListFiles_label/imgListValidationRegression_score.txt
  imgListFiles_label/imgListTestNewRegression_score.txt
  imgListFiles_label/imgList<Split>Regression_<Attribute>.txt   optional attribute scores
  datasetImages_originalSize/<file name>   (or datasetImages_warp256/)
"""
    SPLIT_FILES = (("train", "Train"), ("validation", "Validation"), ("test", "TestNew"))
    ATTRIBUTES = {
        "BalacingElements": "balancing_elements", "ColorHarmony": "color_harmony",
        "Content": "content", "DoF": "depth_of_field", "Light": "light",
        "MotionBlur": "motion_blur", "Object": "object", "Repetition": "repetition",
        "RuleOfThirds": "rule_of_thirds", "Symmetry": "symmetry", "VividColor": "vivid_color",
    }  # fmt: skip
    EXTRA_FEATURES = {v: datasets.Value("float32") for v in ATTRIBUTES.values()}

    @staticmethod
    def _pairs(path: Path) -> dict[str, float]:
        out = {}
        for i, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = float(parts[1])
            elif parts:
                raise ValueError(f"{path} line {i}: expected '<file> <score>', got {line!r}")
        return out

    def _iter_records(self) -> Iterator[Record]:
        lists = self.find("imgListFiles_label", ".", what="label folder")
        variant = self.config.variant
        folders = [variant] if variant else ["datasetImages_originalSize", "datasetImages_warp256"]
        images = self.find(*folders, what="image folder")
        for split, tag in self.SPLIT_FILES:
            scores = self.find(f"imgList{tag}Regression_score.txt", what=f"{split} labels", base=lists)
            attrs = {
                feat: self._pairs(p)
                for key, feat in self.ATTRIBUTES.items()
                if (p := lists / f"imgList{tag}Regression_{key}.txt").exists()
            }
            for name, score in self._pairs(scores).items():
                yield Record(
                    image=str(images / name),
                    mos=score,
                    official_split=split,
                    extras={feat: table.get(name) for feat, table in attrs.items()},
                )


class _LabelTable(BenchmarkBuilder):
    """Shared reader of no-reference sets labelled by one table: a CSV/XLSX row per image.

    The table is the first of ``LABEL_FILES`` that exists, else the first top-level ``*.csv`` /
    ``*.xlsx`` holding one of ``NAME_COLUMNS`` and one of ``MOS_COLUMNS`` (for releases whose
    table name is not known). Images are looked up in the folder, among ``IMAGE_FOLDERS``, the
    other subfolders (except those matching ``SKIP_FOLDERS``) and ``data_dir`` itself, that holds
    most of a sample of the labelled names. ``EXTRA_COLUMNS`` maps extra features to optional
    columns (None where absent); ``GROUP_FEATURE`` names the extra that groups the random split.
    """

    LABEL_FILES: tuple[str, ...] = ()
    IMAGE_FOLDERS: tuple[str, ...] = ()
    SKIP_FOLDERS: tuple[str, ...] = ()
    NAME_COLUMNS: tuple[str, ...] = ("name", "image", "image_name", "img_name")
    MOS_COLUMNS: tuple[str, ...] = ("mos",)
    STD_COLUMNS: tuple[str, ...] = ()
    EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {}
    GROUP_FEATURE: str | None = None
    TABLE_EXTENSIONS = (".csv", ".xlsx", ".xls")
    PROBE_SIZE = 20

    def _label_file(self) -> Path:
        for cand in self.LABEL_FILES:
            if (self.root / cand).is_file():
                return self.root / cand
        for path in sorted(self.root.iterdir()):
            if not (path.is_file() and path.suffix.lower() in self.TABLE_EXTENSIONS):
                continue
            try:
                head = read_table(path, nrows=0)
            except ValueError:
                continue  # not a label table
            if optional_column(head, *self.NAME_COLUMNS) and optional_column(head, *self.MOS_COLUMNS):
                return path
        named = "".join(f"  - {self.root / c}\n" for c in self.LABEL_FILES)
        raise MissingFilesError(
            f"{self.SPEC.display_name}: label file not found; looked for:\n{named}"
            f"  - any *.csv / *.xlsx in {self.root} with an image column (one of {list(self.NAME_COLUMNS)}) "
            f"and a label column (one of {list(self.MOS_COLUMNS)})\n{self._layout()}"
        )

    def _image_folder(self, names: list[str]) -> Path:
        named = [self.root / f for f in self.IMAGE_FOLDERS if (self.root / f).is_dir()]
        others = sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and p not in named
            and not p.name.startswith(".")
            and not any(s in p.name.lower() for s in self.SKIP_FOLDERS)
        )
        candidates = [*named, *others, self.root]
        sample = names[:: max(1, len(names) // self.PROBE_SIZE)][: self.PROBE_SIZE]
        hits = [sum((d / n).is_file() for n in sample) for d in candidates]
        best = max(range(len(candidates)), key=hits.__getitem__)  # the first of the best
        return candidates[best] if hits[best] else (named or [self.root])[0]

    def _extra_value(self, feature: str, value: Any) -> Any:
        feat = self.EXTRA_FEATURES.get(feature)
        if isinstance(feat, datasets.Value) and feat.dtype == "string":
            return _text_or_none(value)
        return _float_or_none(value)

    def _complete(self, rec: Record, name: str) -> Record:
        """Hook for dataset-specific fields; by default sets the split group from ``GROUP_FEATURE``."""
        if self.GROUP_FEATURE and rec.extras.get(self.GROUP_FEATURE):
            rec.group = str(rec.extras[self.GROUP_FEATURE])
        return rec

    def _iter_records(self) -> Iterator[Record]:
        labels = self._label_file()
        df = read_table(labels, dtype=str)  # as text: ids like "001" keep their zeros
        name = find_column(df, *self.NAME_COLUMNS, path=labels)
        mos = find_column(df, *self.MOS_COLUMNS, path=labels)
        std = optional_column(df, *self.STD_COLUMNS)
        extras = {f: optional_column(df, *cols) for f, cols in self.EXTRA_COLUMNS.items()}
        rows = [r for r in df.to_dict("records") if _text_or_none(r[name]) and _float_or_none(r[mos]) is not None]
        if len(rows) < len(df):
            logger.warning("%s: %d rows of %s lack an image name or a label; skipped", type(self).__name__,
                           len(df) - len(rows), labels)  # fmt: skip
        names = [str(r[name]).strip() for r in rows]
        images = self._image_folder(names)
        for rel, row in zip(names, rows, strict=True):
            rec = Record(
                image=str(images / rel),
                mos=float(row[mos]),
                mos_std=_float_or_none(row[std]) if std else None,
                extras={f: None if c is None else self._extra_value(f, row[c]) for f, c in extras.items()},
            )
            yield self._complete(rec, rel)


class AGIQA3K(_LabelTable):
    """AGIQA-3K: 2,982 AI-generated images; quality MOS 0-5 (+ text-alignment MOS)."""

    SPEC = get_spec("agiqa3k")
    LAYOUT = """
agiqa3k/
  data.csv     name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align
  AGIQA-3K/<name>   (or images/<name>, another subfolder, or next to data.csv)
"""
    LABEL_FILES = ("data.csv",)
    IMAGE_FOLDERS = ("AGIQA-3K", "images")
    MOS_COLUMNS = ("mos_quality", "mos")
    STD_COLUMNS = ("std_quality",)
    EXTRA_COLUMNS = {"prompt": ("prompt",), "mos_align": ("mos_align",), "std_align": ("std_align",)}
    EXTRA_FEATURES = {
        "prompt": datasets.Value("string"),
        "mos_align": datasets.Value("float32"),
        "std_align": datasets.Value("float32"),
    }


class AIGIQA20K(_LabelTable):
    """AIGIQA-20K: 20,000 AI-generated images; MOS assumed in [0, 1] (see docs/datasets.md)."""

    SPEC = get_spec("aigiqa20k")
    LAYOUT = """
aigiqa20k/
  info.csv (or info.xlsx / data.csv)   columns name (or image), prompt (optional), mos
  images/<name>   (or another subfolder, or next to the label file)
"""
    LABEL_FILES = ("info.csv", "info.xlsx", "data.csv")
    IMAGE_FOLDERS = ("images", "AIGIQA-20K")
    MOS_COLUMNS = ("mos", "mos_quality")
    STD_COLUMNS = ("std_quality",)
    EXTRA_COLUMNS = {"prompt": ("prompt",)}
    EXTRA_FEATURES = {"prompt": datasets.Value("string")}


class ECIQAD(_LabelTable):
    """ECIQAD: 2,400 enhanced colonoscopy images (300 low-light frames x 8 enhancement methods).

    The release layout and MOS scale could not be checked (docs/datasets.md): any top-level table
    with an image-name and a MOS column is read. The random split is grouped by source frame (a
    source column, or the file stem when names are ``<method>/<frame>.<ext>``), so one frame's
    eight enhancements never straddle two splits.
    """

    SPEC = get_spec("eciqad")
    LAYOUT = """
eciqad/                  (assumed; see docs/datasets.md)
  <table>.csv or .xlsx   one row per enhanced image: image name (image / image_name / name / filename),
                         mos (or score), optional std, source (low-light frame), method
  <folder>/<image name>  e.g. images/<method>/<frame>.png (the folder holding the names is found)
"""
    NAME_COLUMNS = ("image", "image_name", "img_name", "name", "filename", "file_name", "dist_name")
    MOS_COLUMNS = ("mos", "score")
    STD_COLUMNS = ("std", "mos_std", "sd")
    IMAGE_FOLDERS = ("images", "image")
    EXTRA_COLUMNS = {
        "source_id": ("source", "source_id", "source_name", "original", "low_light", "ref_name", "reference"),
        "enhancement_method": ("method", "enhancement_method", "algorithm"),
    }
    EXTRA_FEATURES = {"source_id": datasets.Value("string"), "enhancement_method": datasets.Value("string")}
    GROUP_FEATURE = "source_id"

    def _complete(self, rec: Record, name: str) -> Record:
        path = PurePosixPath(name.replace("\\", "/"))
        if len(path.parts) > 1:  # <method>/<frame>.<ext>: the frame's stem is shared by its enhancements
            rec.extras["source_id"] = rec.extras["source_id"] or path.stem
            rec.extras["enhancement_method"] = rec.extras["enhancement_method"] or path.parent.as_posix()
        return super()._complete(rec, name)


class AGIN(_LabelTable):
    """AGIN: 6,049 AI-generated (and 200 natural) images rated for naturalness.

    ``mos`` is the overall naturalness score (``MOS_nat``); the technical (``MOS_tech``) and
    rationality (``MOS_rat``) perspective scores are ``mos_technical`` / ``mos_rationality``, and
    the ten per-dimension scores are read where the table has such columns.
    """

    SPEC = get_spec("agin")
    LAYOUT = """
agin/
  <table>.csv    filename,MOS_nat,MOS_tech,MOS_rat (columns as the owners' JOINT/AGINDataset.py reads
                 them; the table's file name is not fixed); optional per-dimension columns luminance,
                 contrast, detail, blur, artifacts, existence, color, layout, context, sensory_clarity
  <folder>/<filename>   e.g. images/; JOINT's patch-shuffled copies (*partitioned*/) are skipped
"""
    NAME_COLUMNS = ("filename", "file_name", "image", "image_name", "name")
    MOS_COLUMNS = ("MOS_nat", "mos_naturalness", "naturalness")
    IMAGE_FOLDERS = ("images", "image", "AGIN")
    SKIP_FOLDERS = ("partition",)
    TECHNICAL = ("luminance", "contrast", "detail", "blur", "artifacts")
    RATIONALITY = ("existence", "color", "layout", "context", "sensory_clarity")
    EXTRA_COLUMNS = {
        "mos_technical": ("MOS_tech", "mos_technical", "technical"),
        "mos_rationality": ("MOS_rat", "mos_rationality", "rationality"),
        **{d: (d, f"MOS_{d}") for d in TECHNICAL + RATIONALITY},
    }
    EXTRA_FEATURES = {f: datasets.Value("float32") for f in EXTRA_COLUMNS}


class PIPAL(BenchmarkBuilder):
    """PIPAL (training part): 23,200 restored/distorted images of 200 references; Elo scores."""

    SPEC = get_spec("pipal")
    LAYOUT = """
pipal/
  Train_Label/A0001.txt ..   "<image>,<elo>" per line, e.g. "A0001_00_00.bmp,1578.3012"
  Train_Dist/<image>         distorted images A0001_00_00.bmp ..
  Train_Ref/A0001.bmp ..     references
"""
    EXTRA_FEATURES = {
        "distortion_type": datasets.Value("int32"),
        "distortion_index": datasets.Value("int32"),
    }

    def _iter_records(self) -> Iterator[Record]:
        labels = self.find("Train_Label", what="label folder")
        dist = self.find("Train_Dist", what="distorted image folder")
        refs = self.find("Train_Ref", what="reference image folder")
        files = sorted(labels.glob("*.txt"))
        if not files:
            raise MissingFilesError(f"PIPAL: no *.txt label files in {labels}\n{self._layout()}")
        for path in files:
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    name, score = (x.strip() for x in line.split(","))
                    ref_id, dtype, index = Path(name).stem.split("_")
                except ValueError:
                    raise ValueError(f"{path} line {i}: expected '<image>,<score>', got {line!r}") from None
                yield Record(
                    image=str(dist / name),
                    mos=float(score),
                    reference=str(refs / f"{ref_id}.bmp"),
                    group=ref_id,
                    extras={"distortion_type": int(dtype), "distortion_index": int(index)},
                )


BUILDERS: dict[str, type[BenchmarkBuilder]] = {
    cls.SPEC.name: cls
    for cls in (
        KonIQ10k,
        SPAQ,
        LIVEC,
        KADID10k,
        TID2013,
        CSIQ,
        LIVE,
        AVA,
        AADB,
        AGIQA3K,
        AIGIQA20K,
        PIPAL,
        ECIQAD,
        AGIN,
    )
}
