"""The Space's handlers (spaces/app.py), called as functions: results must be the package's scores."""

from __future__ import annotations

import csv
import os
import shutil
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")


@pytest.fixture(scope="module")
def app(space_app):
    return space_app


@pytest.fixture(scope="module")
def space(app, model):
    return app.UniQASpace(model)


def test_scorers_follow_the_model(app, space, model):
    assert set(space.scorers) == {"adapter:tiny"} | {f"prompts:{name}" for name in model.config.prompt_sets}
    assert app.default_scorer(model, space.scorers, "quality") == "adapter:tiny"  # a trained adapter first
    assert app.default_scorer(model, space.scorers, "aesthetics") == "prompts:aesthetics20"
    assert space.scorers["prompts:level5"].kwargs == {"task": "quality", "adapter": None, "prompt_set": "level5"}


def test_score_tab_reports_package_scores(app, space, model, reference_images):
    path = str(reference_images["astronaut"])
    quality, aesthetics, summary, levels, cues, result = space.score_image(path)
    assert quality == pytest.approx(float(model.score(path, adapter="tiny")[0]), abs=5e-5)
    assert aesthetics == pytest.approx(float(model.score(path, task="aesthetics")[0]), abs=5e-5)
    assert result["quality"]["range"] == pytest.approx(model.score_range(adapter="tiny"), abs=1e-4)
    assert f"{quality:.4f}" in summary and f"{aesthetics:.4f}" in summary
    # level probabilities of the quality scorer: the five levels, a distribution
    assert list(levels["level"]) == ["bad", "poor", "fair", "good", "perfect"]
    assert levels["probability"].sum() == pytest.approx(1.0, abs=1e-5)
    # cues: each one is the zero-shot score of its prompt group alone, with levels 0..1
    assert tuple(cues["cue"]) == app.CUE_NAMES
    sharp = model.config.prompt_sets["ensemble20"]["groups"]["sharpness"]
    expected = {
        "sharpness": model.score(path, prompt_set={"groups": {"sharpness": sharp}}),
        "exposure": model.score(path, prompt_set={"groups": {"exposure": app.ANTONYM_CUES["exposure"]}}),
    }
    for name, value in expected.items():
        assert result["cues"][name] == pytest.approx(float(value[0]), abs=5e-5)
    assert all(0.0 <= v <= 1.0 for v in cues["value"])


def test_score_tab_scorer_choice(space, model, reference_images):
    path = str(reference_images["coffee_noise"])
    quality, aesthetics, *_, result = space.score_image(path, "prompts:level5", "prompts:aesthetics20")
    assert quality == pytest.approx(float(model.score(path, prompt_set="level5")[0]), abs=5e-5)
    assert result["quality"]["range"] == [0.2, 1.0]
    with pytest.raises(gr.Error, match="unknown scorer 'adapter:nope'"):
        space.score_image(path, "adapter:nope")


def test_input_validation_messages(app, space, tmp_path, reference_images, monkeypatch):
    with pytest.raises(gr.Error, match="Upload, paste or pick an image first"):
        space.score_image(None)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(gr.Error, match=r"notes\.txt: not an image file type \(\.txt\)"):
        space.score_image(str(notes))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(gr.Error, match=r"broken\.png: not a readable image"):
        space.score_image(str(broken))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(reference_images["chelsea"].read_bytes()[:3000])
    with pytest.raises(gr.Error, match=r"truncated\.png: cannot read image"):
        space.score_image(str(truncated))
    monkeypatch.setattr(app, "MAX_PIXELS", 224 * 200)
    with pytest.raises(gr.Error, match=r"astronaut\.png: 224x224 is 0 megapixels, the limit is 0"):
        space.score_image(str(reference_images["astronaut"]))
    monkeypatch.setattr(app, "MAX_FILE_MB", 0.01)
    with pytest.raises(gr.Error, match=r"astronaut\.png: file is 0\.\d MB, the limit is 0\.01 MB"):
        space.score_image(str(reference_images["astronaut"]))


def test_compare_ranks_best_first(space, model, reference_images):
    names = ["astronaut", "astronaut_blur", "chelsea_jpeg_q5", "rocket"]
    paths = [str(reference_images[n]) for n in names]
    gallery, table = space.compare(paths)
    scores = dict(zip(names, model.score(paths, adapter="tiny").tolist(), strict=True))
    ranked = sorted(names, key=lambda n: -scores[n])
    assert [Path(p).stem for p, _ in gallery] == ranked
    assert gallery[0][1] == f"#1 · {scores[ranked[0]]:.4f} · {ranked[0]}.png"
    assert list(table["score"]) == [round(scores[n], 4) for n in ranked]
    with pytest.raises(gr.Error, match="at least two images"):
        space.compare(paths[:1])


def test_batch_zip_and_per_file_errors(space, model, reference_images, tmp_path):
    archive = tmp_path / "shots.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(reference_images["coffee"], "a/coffee.png")
        zf.write(reference_images["rocket"], "rocket.png")
        zf.writestr("readme.txt", "not an image")
        zf.writestr("bad.jpg", b"\xff\xd8\xff not a jpeg")
        zf.writestr("__MACOSX/._rocket.png", b"resource fork")
    single = tmp_path / "chelsea.png"
    shutil.copy(reference_images["chelsea"], single)
    table, csv_path = space.batch([str(single), str(archive)], "prompts:level5")
    assert list(table["path"]) == [
        "chelsea.png",
        "shots.zip/a/coffee.png",
        "shots.zip/rocket.png",
        "shots.zip/readme.txt",
        "shots.zip/bad.jpg",
    ]
    expected = model.score([reference_images[n] for n in ("chelsea", "coffee", "rocket")], prompt_set="level5").tolist()
    assert list(table["score"][:3]) == pytest.approx(expected, abs=1e-6)
    assert table["error"][3] == "not an image file type (.txt)"
    assert table["error"][4] == "not a readable image (UnidentifiedImageError)"
    assert table["score"][3:].isna().all() and table["error"][:3].isna().all()
    rows = list(csv.DictReader(Path(csv_path).read_text(encoding="utf-8").splitlines()))
    assert [r["path"] for r in rows] == list(table["path"])
    assert [r["prompt_set"] for r in rows] == ["level5"] * 5
    assert float(rows[0]["score"]) == pytest.approx(expected[0], abs=1e-6) and rows[4]["score"] == ""
    with pytest.raises(gr.Error, match="Upload images or a zip"):
        space.batch([])


def test_batch_rows_are_the_rows_of_uniqa_score(space, model_dir, reference_images, tmp_path, capsys):
    from modeling_uniqa.tools.cli import main

    single = tmp_path / "chelsea.png"
    shutil.copy(reference_images["chelsea"], single)
    _, csv_path = space.batch([str(single)], "adapter:tiny")
    assert main(["score", str(single), "--model", str(model_dir), "--adapter", "tiny", "--quiet"]) == 0
    (cli_row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    (space_row,) = csv.DictReader(Path(csv_path).read_text(encoding="utf-8").splitlines())
    assert space_row["prompt_set"] == "level5"  # the adapter's prompt set, as `uniqa score` writes it
    assert float(space_row.pop("score")) == pytest.approx(float(cli_row.pop("score")), abs=2e-6)
    assert len(cli_row.pop("run")) == 12  # the CLI's run fingerprint (for --resume); the Space has no resume
    assert {**space_row, "path": str(single)} == cli_row


def test_custom_prompt_pairs(app, space, model, reference_images):
    groups = app.parse_prompt_pairs("# comment\nlight: a dark photo | a bright photo\n a blurry photo|a sharp photo ")
    assert groups == {"light": ["a dark photo", "a bright photo"], "pair 2": ["a blurry photo", "a sharp photo"]}
    path = str(reference_images["chelsea"])
    score, table, result = space.custom(path, "light: a dark photo | a bright photo\na blurry photo | a sharp photo")
    assert score == pytest.approx(float(model.score(path, prompt_set={"groups": groups})[0]), abs=5e-5)
    light = model.score(path, prompt_set={"groups": {"light": groups["light"]}})
    assert result["pairs"]["light"] == pytest.approx(float(light[0]), abs=5e-5)
    assert list(table["pair"]) == ["light", "pair 2"]
    with pytest.raises(gr.Error, match="line 1: write 'worse prompt | better prompt'"):
        space.custom(path, "only one prompt")
    with pytest.raises(gr.Error, match="at least one prompt pair"):
        space.custom(path, "  \n# nothing")


def test_main_without_a_model_explains(app, monkeypatch, tmp_path):
    import modeling_uniqa

    monkeypatch.delenv("UNIQA_MODEL", raising=False)
    monkeypatch.setattr(modeling_uniqa, "BUNDLED_MODEL_CANDIDATES", (tmp_path / "missing",))
    with pytest.raises(SystemExit, match="no bundled model was found"):
        app.main([])
    with pytest.raises(SystemExit, match="cannot load a UniQA model from"):
        app.main(["--model", str(tmp_path)])


def test_demo_builds_with_api_endpoints(app, model):
    demo = app.build_demo(model, "tiny")
    api_names = {fn.api_name for fn in demo.fns.values()}
    assert {"score", "compare", "batch", "custom"} <= api_names
