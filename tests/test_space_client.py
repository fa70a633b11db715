"""The Space's API endpoints through `gradio_client`, against the app served on 127.0.0.1."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings

pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")
from gradio_client import Client, handle_file  # noqa: E402 (after the skip)
from gradio_client.exceptions import AppError  # noqa: E402

# gradio 6.31 itself trips pandas 3 deprecations when it serialises tables
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


@pytest.fixture(scope="module")
def client(space_url):
    return Client(space_url, verbose=False)


def test_score_endpoint(client, model, reference_images):
    image = reference_images["chelsea_jpeg_q5"]
    quality, aesthetics, summary, _, _, result = client.predict(
        handle_file(str(image)), "prompts:ensemble20", "prompts:aesthetics20", api_name="/score"
    )
    assert quality == pytest.approx(float(model.score(image)[0]), abs=5e-5)
    assert aesthetics == pytest.approx(float(model.score(image, task="aesthetics")[0]), abs=5e-5)
    assert result["quality"] == {
        "score": quality,
        "range": [0.2, 1.0],
        "scorer": "zero-shot 'ensemble20' (quality, default)",
    }
    assert set(result["cues"]) == {
        "sharpness",
        "low noise",
        "exposure",
        "colour",
        "contrast",
        "compression",
        "lighting",
    }
    assert "Quality: " in summary


def test_custom_and_batch_endpoints(client, model, reference_images, tmp_path):
    image = reference_images["coffee"]
    score, _, result = client.predict(handle_file(str(image)), "a dark photo | a bright photo", api_name="/custom")
    expected = model.score(image, prompt_set={"groups": {"pair 1": ["a dark photo", "a bright photo"]}})
    assert score == pytest.approx(float(expected[0]), abs=5e-5) and result["pairs"] == {"pair 1": score}

    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(image, "coffee.png")
        zf.writestr("empty.png", b"")
    table, csv_file = client.predict([handle_file(str(archive))], "adapter:tiny", api_name="/batch")
    rows = {row[0]: row for row in table["data"]}
    assert rows["two.zip/coffee.png"][1] == pytest.approx(float(model.score(image, adapter="tiny")[0]), abs=1e-6)
    assert "not a readable image" in rows["two.zip/empty.png"][5]
    assert Path(csv_file).read_text().startswith("path,score,task,adapter,prompt_set,error\n")


def test_errors_are_messages(client, reference_images, tmp_path):
    with pytest.raises(AppError, match="Upload, paste or pick an image first"):
        client.predict(None, None, None, api_name="/score")
    with pytest.raises(AppError, match="line 1: write 'worse prompt"):
        client.predict(handle_file(str(reference_images["rocket"])), "no pair here", api_name="/custom")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(AppError, match=r"^notes\.png: not a readable image \(UnidentifiedImageError\)$"):
        client.predict(handle_file(str(notes)), None, None, api_name="/score")
