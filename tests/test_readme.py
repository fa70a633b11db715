"""The README's Python examples run as written.

Which snippets run: a ```python block right after the line `<!-- readme-test -->` runs; one after
`<!-- readme-test: skip REASON -->` is skipped with that reason; an unmarked block is skipped as "not marked" (so a
new section never breaks this test: mark its snippets to have them run).

How they run: each snippet on its own, in the working directory of a fresh session-wide folder that holds
- `models/uniqa-vitb16`: the tiny reference checkpoint converted with its adapter named `koniq`, as the README's
  `uniqa convert ... --adapter-name koniq` example does (so model paths and adapter names need no substitution);
- every quoted image file name a snippet uses (`"a.jpg"`, `"b.png"`, ...), created from a reference photo;
and in a namespace holding the names the README uses without defining them: `model` (the model above, for a
snippet that continues an earlier one), `pil_images`, `arrays`, `pixel_values` and `input_ids`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!--\s*readme-test(?::\s*skip\s+(?P<reason>.*?))?\s*-->\s*\n```python\n")
BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.M | re.S)
IMAGE_NAME = re.compile(r"""["']([\w.-]+\.(?:jpg|jpeg|png))["']""")


def readme_snippets() -> list:
    """`pytest.param(code, line)` per ```python block of the README, marked skip unless it is marked to run."""
    text = README.read_text(encoding="utf-8")
    marked = {match.end(): match.group("reason") for match in MARKER.finditer(text)}
    params = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        start = match.start("code")
        if start not in marked:
            reason = "not marked: put <!-- readme-test --> (or <!-- readme-test: skip REASON -->) before it"
        else:
            reason = marked[start]
        marks = [pytest.mark.skip(reason=f"README.md:{line}: {reason}")] if reason else []
        params.append(pytest.param(match.group("code"), line, id=f"README.md:{line}", marks=marks))
    return params


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory, tiny_checkpoint, adapter_checkpoint) -> Path:
    from modeling_uniqa.tools.conversion import convert_checkpoint

    folder = tmp_path_factory.mktemp("readme")
    convert_checkpoint(
        tiny_checkpoint,
        folder / "models" / "uniqa-vitb16",
        adapter=adapter_checkpoint,
        adapter_name="koniq",
        adapter_dataset="KonIQ-10k",
    )
    return folder


@pytest.fixture
def readme_names(readme_dir, reference_images) -> dict:
    from modeling_uniqa import UniQAModel

    model = UniQAModel.from_pretrained(readme_dir / "models" / "uniqa-vitb16").eval()
    pil_images = [Image.open(reference_images[name]).convert("RGB") for name in ("coffee", "rocket")]
    tokens = model.tokenizer(["a sharp photo", "a blurry photo"], padding=True, return_tensors="pt")
    return {
        "model": model,
        "pil_images": pil_images,
        "arrays": [np.asarray(image) for image in pil_images],
        "pixel_values": model.image_processor.crop_image(reference_images["coffee"]),
        "input_ids": tokens.input_ids,
    }


def test_the_readme_has_snippets_that_run():
    params = readme_snippets()
    assert sum(not param.marks for param in params) >= 3, "no README snippet is marked <!-- readme-test -->"


@pytest.mark.parametrize(("code", "line"), readme_snippets())
def test_readme_snippet(code, line, readme_dir, readme_names, reference_images, monkeypatch):
    monkeypatch.chdir(readme_dir)
    photos = [reference_images[name] for name in sorted(reference_images)]
    for index, name in enumerate(sorted(set(IMAGE_NAME.findall(code)))):
        if not Path(name).exists():
            Image.open(photos[index % len(photos)]).convert("RGB").save(name)
    source = "\n" * line + code  # tracebacks give README.md's line numbers
    exec(compile(source, str(README), "exec"), readme_names)  # noqa: S102 (the README's own code)
