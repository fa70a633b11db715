"""Every row of the bad-input corpus (tests/bad_inputs.py, docs/reliability.md) through `uniqa score`.

Each case is either scored as the image it really holds, or gets an error row naming the file and a readable
reason; the run never crashes and no input is left without its row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import Case, _encoded, pattern, write_corpus
from PIL import Image

from modeling_uniqa import UniQAModel, load_image
from modeling_uniqa.image_processing_uniqa import ImageReadError
from modeling_uniqa.tools.batch_scoring import escape_text
from modeling_uniqa.tools.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Case]:
    return write_corpus(tmp_path_factory.mktemp("bad-inputs") / "corpus")


def _run(corpus: list[Case], model_dir: Path, out: Path, fmt: str) -> int:
    inputs = [path for case in corpus for path in case.inputs]
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow warns about bomb_moderate.png before we refuse it
        return main(["score", *inputs, "--model", str(model_dir), "--format", fmt, "--output", str(out), "--quiet"])


@pytest.fixture(scope="module")
def jsonl_run(corpus, model_dir, tmp_path_factory) -> tuple[int, list[dict]]:
    out = tmp_path_factory.mktemp("out") / "scores.jsonl"
    code = _run(corpus, model_dir, out, "jsonl")
    return code, [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def expected_scores(corpus, model) -> dict[str, float]:
    """Scores of the images each scored case should be read as, computed from the independent pixels."""
    cases = [case for case in corpus if case.expect == "score"]
    scores = model.score([Image.fromarray(case.expected) for case in cases])
    return {case.name: float(score) for case, score in zip(cases, scores, strict=True)}


def _rows_for(case: Case, rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["path"] == case.path]


def test_no_crash_and_one_row_per_input(corpus, jsonl_run):
    code, rows = jsonl_run
    assert code == 2  # some inputs are errors by design
    assert len(rows) == sum(len(case.inputs) for case in corpus)
    for case in corpus:
        assert len(_rows_for(case, rows)) == len(case.inputs), case.name


def test_error_rows_name_the_file_and_a_readable_reason(corpus, jsonl_run):
    _, rows = jsonl_run
    errors = [case for case in corpus if case.expect == "error"]
    assert len(errors) >= 13
    for case in errors:
        (row,) = _rows_for(case, rows)
        assert row["score"] is None, case.name
        assert row["error"].startswith(f"{case.path}: cannot read image: "), row["error"]
        assert case.reason in row["error"], (case.name, row["error"])
        assert "Traceback" not in row["error"]


def test_scored_rows_decode_the_right_pixels(corpus):
    for case in corpus:
        if case.expect != "score":
            continue
        pixels = np.asarray(load_image(case.path), dtype=np.float64)
        assert pixels.shape == case.expected.shape, case.name
        difference = np.abs(pixels - case.expected).mean()
        assert difference <= case.tolerance, (case.name, difference)
        if case.wrong is not None and case.wrong.shape == pixels.shape:  # the careless reading really differs
            assert np.abs(pixels - case.wrong).mean() > case.tolerance + 1, case.name


def test_scored_rows_have_the_right_score(corpus, jsonl_run, expected_scores, model):
    _, rows = jsonl_run
    for case in corpus:
        if case.expect != "score":
            continue
        for row in _rows_for(case, rows):
            assert row["error"] is None, (case.name, row["error"])
            if case.tolerance == 0:  # lossless: the score of the independent pixels
                assert row["score"] == pytest.approx(expected_scores[case.name], abs=2e-6), case.name
            else:  # lossy: the score of the decoded pixels (checked against the source above)
                assert row["score"] == pytest.approx(model.score(load_image(case.path)).item(), abs=2e-6), case.name


def test_careless_readings_would_give_other_scores(corpus, model, expected_scores):
    """Compositing, 16-bit scaling, first frame and orientation change the score: a silent mistake would show."""
    wrong_cases = [case for case in corpus if case.wrong is not None]
    assert {"rgba.png", "palette_transparent.png", "grey16.png", "dark16.png", "animated.gif"} <= {
        case.name for case in wrong_cases
    }
    wrong_scores = model.score([Image.fromarray(case.wrong) for case in wrong_cases])
    for case, wrong in zip(wrong_cases, wrong_scores, strict=True):
        assert abs(float(wrong) - expected_scores[case.name]) > 1e-5, case.name


def test_csv_output_holds_every_row_and_round_trips_odd_names(corpus, model_dir, tmp_path, jsonl_run):
    out = tmp_path / "scores.csv"
    assert _run(corpus, model_dir, out, "csv") == 2
    raw = out.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 even with undecodable bytes in a file name
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    _, json_rows = jsonl_run
    assert [row["path"] for row in rows] == [escape_text(row["path"]) for row in json_rows]
    for row, json_row in zip(rows, json_rows, strict=True):
        assert (row["score"] or None) == (None if json_row["score"] is None else str(json_row["score"]))
    (latin1,) = [case for case in corpus if case.name == "non_utf8_name"]
    assert os.fsencode(latin1.path).endswith(b"caf\xe9.png")  # JSON gives back the exact file name
    assert "caf\\udce9.png" in raw.decode("utf-8")  # CSV shows the undecodable byte as an escape


def test_locked_file_behaviour_depends_on_the_user(corpus, jsonl_run):
    (case,) = [case for case in corpus if case.name == "locked.png"]
    (row,) = _rows_for(case, jsonl_run[1])
    if os.geteuid() == 0:  # root (as in CI containers) bypasses file permissions: the image is read and scored
        assert row["score"] is not None and row["error"] is None
    else:
        assert "permission denied" in row["error"]


def test_score_api_raises_a_readable_error_for_a_bad_file(corpus, model):
    (case,) = [case for case in corpus if case.name == "bomb.png"]
    with pytest.raises(ValueError, match=r"bomb\.png: cannot read image: refused as a possible decompression bomb"):
        model.score(case.path)


def test_pixel_limit_follows_pillow_setting(corpus, monkeypatch):
    (case,) = [case for case in corpus if case.name == "tiny16.png"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # Pillow itself refuses only above twice the limit
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(ValueError, match=r"16x16 = 256 pixels, over the limit of 200"),
    ):
        load_image(case.path)


def test_a_chunk_that_fails_to_score_is_retried_image_by_image(corpus, model_dir, tmp_path, monkeypatch):
    names = ("grey.png", "one_pixel.png", "photo.bmp")
    paths = [case.path for case in corpus if case.name in names]
    original = UniQAModel.score

    def fails_on_one_pixel_images(self, images, *args, **kwargs):
        if any(image.size == (1, 1) for image in images):
            raise MemoryError("simulated")
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(UniQAModel, "score", fails_on_one_pixel_images)
    out = tmp_path / "scores.jsonl"
    assert main(["score", *paths, "--model", str(model_dir), "--format", "jsonl", "--output", str(out), "--quiet"]) == 2
    rows = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["one_pixel.png"]["error"].endswith("one_pixel.png: cannot score image (MemoryError: simulated)")
    assert rows["grey.png"]["score"] is not None and rows["photo.bmp"]["score"] is not None


def test_docs_table_lists_every_case(corpus):
    table = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
    assert {case.name for case in corpus} <= documented, f"cases missing from the table in {DOCS}"


def test_flat_grey_jpeg_corner_is_probed_and_still_scored(corpus, monkeypatch):
    """A grey-filled truncated JPEG ends in flat grey; a real flat grey corner is no sign of it: the loader checks
    the data of every JPEG (decoding them again with filler bytes after each scan) and, finding them complete,
    scores the image."""
    from modeling_uniqa import image_processing_uniqa

    probed = []
    original = image_processing_uniqa._with_filler_after_scans
    monkeypatch.setattr(
        image_processing_uniqa, "_with_filler_after_scans", lambda data: probed.append(1) or original(data)
    )
    (case,) = [case for case in corpus if case.name == "grey_corner.jpg"]
    load_image(case.path)
    assert probed
    for name in ("truncated_closed.jpg", "tall_header.jpg"):  # plain Pillow decodes both, the end in flat grey
        (case,) = [case for case in corpus if case.name == name]
        with Image.open(case.path) as image:
            image.load()
            assert (np.asarray(image)[-8:, -8:] == 128).all(), name


JPEG_KINDS = {
    "4:2:0": ("RGB", {}),
    "4:4:4": ("RGB", {"subsampling": 0}),
    "4:2:2": ("RGB", {"subsampling": 1}),
    "grey": ("L", {}),
    "CMYK": ("CMYK", {}),
    "restart every row": ("RGB", {"restart_marker_rows": 1}),
    "restart every block": ("RGB", {"restart_marker_blocks": 1}),
}


@pytest.mark.parametrize("kind", JPEG_KINDS)
def test_a_jpeg_missing_only_its_last_bytes_is_an_error(kind):
    """A JPEG cut 1 to 50 bytes before its end and closed by an end marker: Pillow decodes it without an error, its
    last blocks wrong but its corner not grey (for the shortest cuts), and the loader still finds the data missing."""
    mode, options = JPEG_KINDS[kind]
    for size in ((96, 80), (17, 33)):
        jpeg = _encoded(Image.fromarray(pattern(*size)).convert(mode), "JPEG", quality=90, **options)
        scan_end = len(jpeg) - 2  # Pillow writes the end marker right after the scan's data
        for cut in (1, 2, 5, 10, 50):
            data = jpeg[: scan_end - cut] + b"\xff\xd9"
            with Image.open(io.BytesIO(data)) as plain:
                plain.load()
                corner = np.asarray(plain)[-8:, -8:]
            if cut <= 5:
                assert not np.isin(corner, (127, 128)).all(), (kind, size, cut)
            with pytest.raises(ImageReadError, match="truncated image data"):
                load_image(data)


def test_complete_jpegs_of_every_kind_are_scored_as_pillow_decodes_them():
    """No false alarm from the second decode with filler: odd sizes, every subsampling, greyscale, CMYK,
    progressive, optimised tables, restart markers, extreme qualities, bytes after the end marker."""
    kinds = [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True}, {"optimize": True}]
    kinds += [{"restart_marker_blocks": 1}, {"restart_marker_rows": 1}, {"quality": 100}, {"quality": 5}]
    for size in ((1, 1), (17, 33), (33, 17), (96, 80)):
        picture = Image.fromarray(pattern(*size))
        for image in (picture, picture.convert("L"), picture.convert("CMYK")):
            for options in kinds:
                jpeg = _encoded(image, "JPEG", **{"quality": 90, **options})
                for data in (jpeg, jpeg + b"bytes after the end marker"):
                    with Image.open(io.BytesIO(data)) as plain:
                        expected = np.asarray(plain.convert("RGB"))
                    assert np.array_equal(np.asarray(load_image(data)), expected), (size, image.mode, options)


def test_empty_arrays_and_images_are_refused():
    for empty in (np.zeros((0, 0), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 0), np.float32)):
        with pytest.raises(ValueError, match=r"array image is empty: \d+x\d+ pixels"):
            load_image(empty)
    with pytest.raises(ValueError, match="PIL image is empty: 0x0 pixels"):
        load_image(Image.new("RGB", (0, 0)))


def test_float_images_with_inf_are_refused():
    for value in (np.inf, -np.inf):
        array = np.full((8, 8, 3), 0.5, np.float32)
        array[3, 4, 1] = value
        with pytest.raises(ValueError, match="float image holds infinite values"):
            load_image(array)


def test_32_bit_integer_images_are_scaled_not_clipped():
    ramp = np.linspace(0, 2**31 - 1, 64, dtype=np.float64).astype(np.int32).reshape(8, 8)
    expected = np.clip(np.floor(ramp / 2**23 + 0.5), 0, 255).astype(np.uint8)
    assert len(np.unique(expected)) > 32  # a ramp, not a clipped white image
    for image in (ramp, Image.fromarray(ramp, "I")):  # an array and a 32-bit PIL image (mode "I")
        np.testing.assert_array_equal(np.asarray(load_image(image))[..., 0], expected)
    uint32 = np.array([[0, 2**31, 2**32 - 1]], np.uint32)
    np.testing.assert_array_equal(np.asarray(load_image(uint32))[0, :, 0], [0, 128, 255])
    sixteen = np.array([[0, 257, 65535]], np.int32)  # values within 16 bits are taken as 16-bit, as before
    np.testing.assert_array_equal(np.asarray(load_image(sixteen))[0, :, 0], [0, 1, 255])


def test_a_non_finite_score_is_an_error_naming_the_image(corpus, model, tmp_path):
    """A crop on which the model gives NaN (here: any flat crop, by a hook on the vision tower) makes
    `model.score` raise a ValueError naming that image; the CLI's chunk retry turns it into that image's row."""
    from modeling_uniqa.tools.batch_scoring import score_chunk

    def nan_for_flat_crops(module, args, kwargs, output):
        pixels = kwargs.get("pixel_values", args[0] if args else None)
        flat = pixels.flatten(2).std(2).amax(1) == 0  # every channel constant
        output.pooler_output[flat] = float("nan")
        return output

    black = Image.new("RGB", (32, 32))
    (good,) = [case.path for case in corpus if case.name == "photo.bmp"]
    handle = model.clip.vision_model.register_forward_hook(nan_for_flat_crops, with_kwargs=True)
    try:
        with pytest.raises(ValueError, match=r"images\[1\]: the model gave a non-finite score \(nan\)"):
            model.score([good, black])
        black_path = str(tmp_path / "black.png")
        black.save(black_path)
        with pytest.raises(ValueError, match=re.escape(f"{black_path}: the model gave a non-finite score")):
            model.score([good, black_path])
        with pytest.raises(ValueError, match="non-finite score for some window"):
            model.score_map(black_path)
        errors: dict[str, str] = {}
        scores = score_chunk(model, {good: good, black_path: black}, errors, model.resolve(None, None, None), 8, {})
        assert set(scores) == {good} and np.isfinite(scores[good])
        assert "non-finite score" in errors[black_path]
    finally:
        handle.remove()
