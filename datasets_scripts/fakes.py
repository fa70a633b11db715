"""Tiny fake copies of each benchmark's on-disk layout, for tests and demos without real data.

``make_fake_benchmark("koniq10k", tmp_dir)`` writes a few 8x8 images and label files in the
dataset's own format and returns what a correct loader must read back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
from PIL import Image


@dataclass
class FakeBenchmark:
    """A fake layout: its ``data_dir`` and the rows a loader should produce.

    ``mos``: image_id -> MOS of every image present; ``official``: image_id -> split where the
    layout has an official split; ``missing``: labelled image_ids without a file; ``group``:
    image_id -> random-split group where it is neither the image nor its reference (ECIQAD).
    """

    data_dir: Path
    mos: dict[str, float]
    official: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    mos_std: dict[str, float] = field(default_factory=dict)
    group: dict[str, str] = field(default_factory=dict)


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}.get(path.suffix.lower(), "PNG")
    Image.fromarray(rgb).save(path, format=fmt)


def _cell(names: list[str]) -> np.ndarray:
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = np.array([n])
    return arr


def fake_koniq10k(root: Path) -> FakeBenchmark:
    rows, sets, fb = [], [], FakeBenchmark(root, {})
    for i in range(10):
        name = f"{1000 + i}.jpg"
        counts = [i % 3, 1, 2, 3, 10 - i]
        total = sum(counts)
        mos5 = sum((k + 1) * c for k, c in enumerate(counts)) / total
        z = round(10 + 7.5 * i, 2)
        rows.append([name, *counts, total, mos5, 0.5, z])
        sets.append([name, *[c / total for c in counts], total, z, 0.5, ["training", "validation", "test"][i % 3]])
        _img(root / "1024x768" / name, i)
        _img(root / "512x384" / name, i)
        fb.mos[name] = z
        fb.official[name] = ["train", "validation", "test"][i % 3]
    cols = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total"]
    pd.DataFrame(rows, columns=[*cols, "MOS", "SD", "MOS_zscore"]).to_csv(
        root / "koniq10k_scores_and_distributions.csv", index=False
    )
    pd.DataFrame(sets, columns=[*cols, "MOS", "SD", "set"]).to_csv(
        root / "koniq10k_distributions_sets.csv", index=False
    )
    fb.mos = {f"1024x768/{k}": v for k, v in fb.mos.items()}
    fb.official = {f"1024x768/{k}": v for k, v in fb.official.items()}
    return fb


def fake_spaq(root: Path) -> FakeBenchmark:
    fb, rows = FakeBenchmark(root, {}), []
    for i in range(12):
        name = f"{i + 1:05d}.jpg"
        mos = round(5 + 8.25 * i, 3)
        rows.append([name, mos, 50.0, 40.0 + i, 30.0, 20.0, 10.0])
        _img(root / "TestImage" / name, i)
        fb.mos[f"TestImage/{name}"] = mos
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    cols = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
    pd.DataFrame(rows, columns=cols).to_excel(root / "Annotations" / "MOS and Image attribute scores.xlsx", index=False)
    return fb


def fake_livec(root: Path, missing: int = 2) -> FakeBenchmark:
    base = root / "ChallengeDB_release"
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{100 + i}.bmp" for i in range(5)]
    names += [f"{1000 + i}.JPG" for i in range(6)]
    mos = [round(3.5 + 5.1 * i, 4) for i in range(len(names))]
    std = [10 + 0.5 * i for i in range(len(names))]
    (base / "Data").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(base / "Data/AllImages_release.mat", {"AllImages_release": _cell(names)})
    scipy.io.savemat(base / "Data/AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    scipy.io.savemat(base / "Data/AllStdDev_release.mat", {"AllStdDev_release": np.array([std])})
    fb = FakeBenchmark(root, {})
    for i, (n, m, s) in enumerate(zip(names, mos, std, strict=False)):
        key = f"ChallengeDB_release/Images/{n}"
        if i >= len(names) - missing:
            fb.missing.append(key)
            continue
        _img(base / "Images" / n, i)
        if not n.startswith("t"):
            fb.mos[key], fb.mos_std[key] = m, s
    return fb


def fake_kadid10k(root: Path) -> FakeBenchmark:
    fb, rows = FakeBenchmark(root, {}), []
    for r in range(1, 6):
        _img(root / "images" / f"I{r:02d}.png", r)
        for t in (1, 2):
            for lev in (1, 2):
                name = f"I{r:02d}_{t:02d}_{lev:02d}.png"
                dmos = round(1 + 0.9 * r - 0.3 * lev, 3)
                rows.append([name, f"I{r:02d}.png", dmos, 0.25])
                _img(root / "images" / name, r * 10 + t + lev)
                fb.mos[f"images/{name}"] = dmos
                fb.mos_std[f"images/{name}"] = 0.5
    pd.DataFrame(rows, columns=["dist_img", "ref_img", "dmos", "var"]).to_csv(root / "dmos.csv", index=False)
    return fb


def fake_tid2013(root: Path) -> FakeBenchmark:
    fb, lines, stds = FakeBenchmark(root, {}), [], []
    for r in range(1, 6):
        _img(root / "reference_images" / f"I{r:02d}.BMP", r)
        for t, lev in ((1, 1), (1, 5), (24, 3)):
            name = f"i{r:02d}_{t:02d}_{lev}.bmp"
            on_disk = name.upper() if r == 3 else name  # the real set mixes cases
            mos = round(0.5 + 1.3 * r - 0.2 * lev, 5)
            lines.append(f"{mos} {name}")
            stds.append(f"{0.1 * r:.5f}")
            _img(root / "distorted_images" / on_disk, r * 100 + t + lev)
            fb.mos[f"distorted_images/{on_disk}"] = mos
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    (root / "mos_std.txt").write_text("\n".join(stds) + "\n")
    return fb


def fake_csiq(root: Path) -> FakeBenchmark:
    fb = FakeBenchmark(root, {})
    kinds = [("noise", "awgn", "AWGN"), ("jpeg 2000", "jpeg2000", "jpeg2000"), ("blur", "blur", "BLUR")]
    rows: list[list[object]] = [["CSIQ DMOS (fake)", None, None, None, None, None], [None] * 6]
    rows.append(["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    for r, ref in enumerate(["1600", "aerial_city", "boston", "bridge"]):
        _img(root / "src_imgs" / f"{ref}.png", r)
        for k, (label, folder, tag) in enumerate(kinds):
            for lev in (1, 2):
                dmos = round(0.05 + 0.1 * r + 0.05 * lev + 0.01 * k, 4)
                rows.append([int(ref) if ref.isdigit() else ref, k + 1, label, lev, 0.02, dmos])
                path = root / "dst_imgs" / folder / f"{ref}.{tag}.{lev}.png"
                _img(path, r * 10 + k + lev)
                fb.mos[path.relative_to(root).as_posix()] = dmos
    with pd.ExcelWriter(root / "csiq.DMOS.xlsx") as xl:
        pd.DataFrame([["readme"]]).to_excel(xl, sheet_name="notes", index=False, header=False)
        pd.DataFrame(rows).to_excel(xl, sheet_name="all_by_image", index=False, header=False)
    return fb


def fake_live(root: Path) -> FakeBenchmark:
    """Full LIVE structure (982 entries, 203 reference copies) with 8x8 images."""
    from .benchmarks import LIVE

    base, fb = root / "databaserelease2", FakeBenchmark(root, {})
    refs = [f"ref{k:02d}.bmp" for k in range(29)]
    for k, ref in enumerate(refs):
        _img(base / "refimgs" / ref, k)
    dmos, orgs, refnames, i = [], [], [], 0
    for folder, n in LIVE.FOLDERS:
        for j in range(1, n + 1):
            ref = refs[(j - 1) % 29]
            org = int(i % 5 == 0)  # a reference copy, dropped by the loader
            d = 0.0 if org else round((i * 37) % 100 + 0.5, 3)
            dmos.append(d)
            orgs.append(org)
            refnames.append(ref)
            _img(base / folder / f"img{j}.bmp", i)
            if not org:
                fb.mos[f"databaserelease2/{folder}/img{j}.bmp"] = d
            i += 1
    scipy.io.savemat(base / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs])})
    scipy.io.savemat(base / "refnames_all.mat", {"refnames_all": _cell(refnames).T})
    return fb


def fake_ava(root: Path, n: int = 30, image_every: int = 1) -> FakeBenchmark:
    """``n`` AVA rows; only every ``image_every``-th image is written (others share a file via
    symlink) so that large streaming fixtures stay cheap."""
    base, fb = root / "AVA_dataset", FakeBenchmark(root, {})
    lines, test_ids = [], []
    first: Path | None = None
    for i in range(n):
        image_id = str(700000 + i)
        votes = [(i + k) % 7 for k in range(10)]
        if i == 1:
            votes = [0] * 10  # a row without votes is skipped
        lines.append(" ".join([str(i + 1), image_id, *map(str, votes), str(i % 5), "0", str(1000 + i)]))
        path = base / "images" / f"{image_id}.jpg"
        if first is None or i % image_every == 0:
            _img(path, i)
            first = first or path
        else:
            path.symlink_to(first)
        if sum(votes):
            key = f"AVA_dataset/images/{image_id}.jpg"
            fb.mos[key] = sum((k + 1) * v for k, v in enumerate(votes)) / sum(votes)
            if i % 5 == 0:
                test_ids.append(image_id)
                fb.official[key] = "test"
    (base / "AVA.txt").write_text("\n".join(lines) + "\n")
    (base / "aesthetics_image_lists").mkdir()
    (base / "aesthetics_image_lists" / "generic_test.jpgl").write_text("\n".join(test_ids) + "\n")
    return fb


def fake_aadb(root: Path) -> FakeBenchmark:
    fb = FakeBenchmark(root, {})
    lists = root / "imgListFiles_label"
    lists.mkdir(parents=True, exist_ok=True)
    for s, (split, tag) in enumerate((("train", "Train"), ("validation", "Validation"), ("test", "TestNew"))):
        names = [f"farm1_{s}{i}_abc.jpg" for i in range(4 if split == "train" else 2)]
        scores = [round(0.1 + 0.2 * i + 0.05 * s, 2) for i in range(len(names))]
        lines = "".join(f"{n} {v}\n" for n, v in zip(names, scores, strict=True))
        (lists / f"imgList{tag}Regression_score.txt").write_text(lines)
        (lists / f"imgList{tag}Regression_ColorHarmony.txt").write_text("".join(f"{n} 0.4\n" for n in names))
        for n, v in zip(names, scores, strict=False):
            _img(root / "datasetImages_originalSize" / n, len(fb.mos))
            fb.mos[f"datasetImages_originalSize/{n}"] = v
            fb.official[f"datasetImages_originalSize/{n}"] = split
    return fb


def fake_agiqa3k(root: Path) -> FakeBenchmark:
    fb, rows = FakeBenchmark(root, {}), []
    for i in range(10):
        name = f"midjourney_normal_{i:03d}.jpg"
        mos = round(0.3 + 0.45 * i, 4)
        rows.append([name, f"a photo of thing {i}", "", "", "baroque", mos, 0.3, 2.0, 0.2])
        _img(root / "AGIQA-3K" / name, i)
        fb.mos[f"AGIQA-3K/{name}"] = mos
    cols = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
    pd.DataFrame(rows, columns=cols).to_csv(root / "data.csv", index=False)
    return fb


def fake_aigiqa20k(root: Path) -> FakeBenchmark:
    fb, rows = FakeBenchmark(root, {}), []
    for i in range(10):
        name = f"sdxl_{i:05d}.png"
        mos = round(0.05 + 0.09 * i, 4)
        rows.append([name, f"prompt {i}", mos])
        _img(root / "images" / name, i)
        fb.mos[f"images/{name}"] = mos
    pd.DataFrame(rows, columns=["name", "prompt", "mos"]).to_csv(root / "info.csv", index=False)
    return fb


def fake_pipal(root: Path) -> FakeBenchmark:
    fb = FakeBenchmark(root, {})
    (root / "Train_Label").mkdir(parents=True, exist_ok=True)
    for r in range(1, 5):
        ref = f"A{r:04d}"
        _img(root / "Train_Ref" / f"{ref}.bmp", r)
        lines = []
        for t in range(3):
            name = f"{ref}_{t:02d}_{t + 1:02d}.bmp"
            elo = round(1000 + 61.5 * r + 100 * t, 4)
            lines.append(f"{name},{elo}")
            _img(root / "Train_Dist" / name, r * 10 + t)
            fb.mos[f"Train_Dist/{name}"] = elo
        (root / "Train_Label" / f"{ref}.txt").write_text("\n".join(lines) + "\n")
    return fb


ECIQAD_METHODS = ("LIME", "RetinexNet", "Zero-DCE")


def fake_eciqad(root: Path, missing: int = 1) -> FakeBenchmark:
    """6 low-light frames x 3 enhancement methods as ``images/<method>/<frame>.png`` with one MOS
    table (assumed layout, see docs/datasets.md); the last image is labelled but absent."""
    fb, rows = FakeBenchmark(root, {}), []
    for f in range(6):
        for m, method in enumerate(ECIQAD_METHODS):
            name = f"{method}/{f + 1:03d}.png"
            mos, std = round(1.2 + 0.6 * f + 0.2 * m, 3), round(0.4 + 0.05 * m, 3)
            rows.append([name, mos, std])
            key = f"images/{name}"
            if len(rows) > 6 * len(ECIQAD_METHODS) - missing:
                fb.missing.append(key)
                continue
            _img(root / key, 10 * f + m)
            fb.mos[key], fb.mos_std[key], fb.group[key] = mos, std, f"{f + 1:03d}"
    pd.DataFrame(rows, columns=["image_name", "MOS", "std"]).to_csv(root / "ECIQAD_MOS.csv", index=False)
    return fb


def fake_agin(root: Path) -> FakeBenchmark:
    """AGIN as the owners' loader reads it: a table ``filename,MOS_nat,MOS_tech,MOS_rat`` (its file
    name is not fixed; here ``AGIN_MOS.csv``) plus per-dimension columns, ``images/<filename>``, and
    JOINT's patch-shuffled copies in ``AGIN_patch_partitioned/`` (same names, not rated)."""
    from .benchmarks import AGIN

    fb, rows = FakeBenchmark(root, {}), []
    for i in range(10):
        name = f"{['CoCosNet', 'DALLE2', 'SDXL'][i % 3]}_{i}.png"
        nat, tech, rat = round(1.1 + 0.4 * i, 3), round(1.5 + 0.3 * i, 3), round(1.0 + 0.35 * i, 3)
        dims = [round(1 + 0.1 * i + 0.01 * d, 3) for d in range(10)]
        rows.append([name, nat, tech, rat, *dims])
        _img(root / "images" / name, i)
        _img(root / "AGIN_patch_partitioned" / name, 100 + i)
        fb.mos[f"images/{name}"] = nat
    cols = ["filename", "MOS_nat", "MOS_tech", "MOS_rat", *AGIN.TECHNICAL, *AGIN.RATIONALITY]
    pd.DataFrame(rows, columns=cols).to_csv(root / "AGIN_MOS.csv", index=False)
    return fb


FAKES: dict[str, Callable[[Path], FakeBenchmark]] = {
    "koniq10k": fake_koniq10k,
    "spaq": fake_spaq,
    "livec": fake_livec,
    "kadid10k": fake_kadid10k,
    "tid2013": fake_tid2013,
    "csiq": fake_csiq,
    "live": fake_live,
    "ava": fake_ava,
    "aadb": fake_aadb,
    "agiqa3k": fake_agiqa3k,
    "aigiqa20k": fake_aigiqa20k,
    "pipal": fake_pipal,
    "eciqad": fake_eciqad,
    "agin": fake_agin,
}


def make_fake_benchmark(name: str, root: str | Path) -> FakeBenchmark:
    """Write a fake copy of benchmark ``name`` under ``root`` (created) and describe it."""
    from .specs import canonical_name

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fb = FAKES[canonical_name(name)](root)
    assert all(math.isfinite(v) for v in fb.mos.values())
    return fb
