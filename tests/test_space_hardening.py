"""The Space (spaces/app.py) against hostile uploads: disk and memory budgets, lying zip headers, unreadable entries,
user text feeding caches, server paths in messages. Each test names the class of attack it holds the app to."""

from __future__ import annotations

import errno
import os
import struct
import tempfile
import tracemalloc
import weakref
import zipfile
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage pings

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[space]')")

# offsets of fields in a zip entry's local header; its central directory record has each 2 bytes further on
ZIP_FIELDS = {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"), "size": (22, "<I")}


@pytest.fixture(scope="module")
def space(space_app, model):
    return space_app.UniQASpace(model)


@pytest.fixture
def temp_area(tmp_path, monkeypatch) -> Path:
    """The system temp folder, redirected to an empty one (Gradio's cache apart): whatever a request leaves in it
    is a leftover."""
    area = tmp_path / "tmp"
    area.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(area))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    return area


def patch_entry(archive: Path, name: str, **fields: int) -> None:
    """Rewrite header fields of entry `name` (flags, method, crc, size: the uncompressed size it declares) in both
    its local header and its central directory record: an archive that lies."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        local = zf.getinfo(name).header_offset
    central = data.index(b"PK\x01\x02")
    while data[central + 46 : central + 46 + struct.unpack_from("<H", data, central + 28)[0]] != name.encode():
        central = data.index(b"PK\x01\x02", central + 1)
    for field, value in fields.items():
        offset, layout = ZIP_FIELDS[field]
        struct.pack_into(layout, data, local + offset, value)
        struct.pack_into(layout, data, central + offset + 2, value)
    archive.write_bytes(data)


def errors(table) -> list[str | None]:
    """The table's `error` column, None where the row was scored."""
    return [error if isinstance(error, str) else None for error in table["error"]]


def assert_no_server_paths(messages, *folders: Path) -> None:
    for message in messages:
        for folder in (*folders, Path(tempfile.gettempdir())):
            assert str(folder) not in str(message), message


@pytest.mark.parametrize(
    ("compression", "lies"),
    [(zipfile.ZIP_DEFLATED, False), (zipfile.ZIP_DEFLATED, True), (zipfile.ZIP_BZIP2, True)],
    ids=["deflate-bomb", "deflate-lying-header", "bzip2-lying-header"],
)
def test_zip_bombs_are_unpacked_as_a_stream_and_stop_at_the_file_limit(
    space_app, space, model, reference_images, tmp_path, temp_area, monkeypatch, compression, lies
):
    """Memory: an entry whose header understates its size (or a plain bomb) is decompressed a chunk at a time and
    refused at MAX_FILE_MB; it never sits in memory whole, and the next entry is still scored."""
    monkeypatch.setattr(space_app, "MAX_FILE_MB", 1)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("bomb.png", bytes(32 * 2**20))  # 32 MB of zeros: a few kB (deflate) or 100 bytes (bzip2)
        zf.write(reference_images["rocket"], "rocket.png")
    if lies:
        patch_entry(archive, "bomb.png", size=1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("bomb.png").compress_size < 64 * 2**10
    tracemalloc.start()
    try:
        table, _ = space.batch([str(archive)], "prompts:level5")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB held while unpacking"  # the entry was 32 MB
    assert errors(table) == ["unpacks to more than 1 MB, the limit per file", None]
    assert table["score"][1] == pytest.approx(float(model.score(reference_images["rocket"], prompt_set="level5")[0]))
    assert list(temp_area.iterdir()) == []


def test_compare_and_batch_hold_at_most_one_chunk_of_decoded_pixels(
    space_app, space, model, tmp_path, temp_area, monkeypatch
):
    """Memory: Compare and Batch decode and score in chunks whose declared pixels (read from the headers first) add
    up to at most CHUNK_PIXELS, one chunk alive at a time, so many huge images never sit decoded together; small
    images still go BATCH_CHUNK at a time. Scores and order are those of the images scored together."""
    monkeypatch.setattr(space_app, "MAX_PIXELS", 300_000)
    monkeypatch.setattr(space_app, "CHUNK_PIXELS", 300_000)
    files = []
    for k, size in enumerate([(600, 450), (150, 120), (150, 120), (600, 450), (600, 450)] + [(150, 120)] * 21):
        files.append(tmp_path / f"{k:02d}.png")  # 270,000 or 18,000 pixels: the big ones near MAX_PIXELS
        Image.linear_gradient("L").resize(size).point(lambda v, k=k: (v + 9 * k) % 256).save(files[-1])
    held = peak = 0
    load_image = space_app.load_image

    def released(pixels: int) -> None:
        nonlocal held
        held -= pixels

    def tracked(path: Path) -> Image.Image:
        nonlocal held, peak
        image = load_image(path)
        held += image.width * image.height
        peak = max(peak, held)
        weakref.finalize(image, released, image.width * image.height)
        return image

    monkeypatch.setattr(space_app, "load_image", tracked)
    batch_sizes: list[int] = []
    score = model.score

    def counted(images, *args, **kwargs):
        batch_sizes.append(len(images))
        return score(images, *args, **kwargs)

    monkeypatch.setattr(model, "score", counted)
    _, ranking = space.compare([str(f) for f in files[:8]], "prompts:level5")
    assert (peak, batch_sizes) == (288_000, [2, 2, 2, 2])  # all eight at once: 900,000 pixels
    expected = score([str(f) for f in files], prompt_set="level5").tolist()
    best_first = sorted(zip(expected[:8], files[:8], strict=True), key=lambda item: -item[0])
    assert list(ranking["file"]) == [f.name for _, f in best_first]
    assert list(ranking["score"]) == pytest.approx([s for s, _ in best_first], abs=1e-4)
    peak, batch_sizes = 0, []
    table, _ = space.batch([str(f) for f in files], "prompts:level5")
    assert (peak, batch_sizes) == (288_000, [2, 2, 2, 16, 4])  # 16 small images: 288,000 pixels
    assert list(table["path"]) == [f.name for f in files]
    assert list(table["score"]) == pytest.approx(expected, abs=1e-6)
    assert held == 0 and list(temp_area.iterdir()) == []


def test_one_queue_bounds_the_requests_of_all_tabs(space_app, model):
    """Memory: every tab's event is in one concurrency group, so the server runs at most MAX_JOBS requests at once
    (each holding at most CHUNK_PIXELS decoded), not MAX_JOBS per tab."""
    demo = space_app.build_demo(model, "tiny")
    queued = [fn for fn in demo.fns.values() if fn.queue]
    assert {fn.api_name for fn in queued} == {"score", "compare", "batch", "custom", "map"}
    assert {fn.concurrency_id for fn in queued} == {space_app.SCORING_QUEUE}
    assert demo._queue.default_concurrency_limit == space_app.MAX_JOBS == 2


def test_two_archives_share_one_budget_for_the_request(
    space_app, space, reference_images, tmp_path, temp_area, monkeypatch
):
    """Disk: the budget covers the whole request (uploads plus everything unpacked, all archives together); what
    comes after it is spent gets an error row and is never written."""
    monkeypatch.setattr(space_app, "MAX_REQUEST_MB", 4)
    first, second = tmp_path / "first.zip", tmp_path / "second.zip"
    with zipfile.ZipFile(first, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(reference_images["coffee"], "coffee.png")
        zf.writestr("zeros_a.png", bytes(3 * 2**20))  # each archive alone unpacks to about 3 MB, under 4 MB
    with zipfile.ZipFile(second, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros_b.png", bytes(3 * 2**20))
        zf.write(reference_images["rocket"], "rocket.png")
    assert first.stat().st_size + second.stat().st_size < 2**20 / 2
    on_disk = []
    check_image_file = space_app.check_image_file

    def measured(path, name=None):
        on_disk.append(sum(f.stat().st_size for f in temp_area.rglob("*") if f.is_file()))
        return check_image_file(path, name)

    monkeypatch.setattr(space_app, "check_image_file", measured)
    table, _ = space.batch([str(first), str(second)], "prompts:level5")
    over = "over the limit of 4 MB uploaded and unpacked per run, all files together"
    assert list(table["path"]) == ["first.zip/coffee.png", "first.zip/zeros_a.png", "second.zip/zeros_b.png"] + [
        "second.zip/rocket.png"
    ]
    assert table["score"][0] > 0 and errors(table)[2:] == [over, over]
    assert table["error"][1] == "not a readable image (UnidentifiedImageError)"  # unpacked (within the budget)
    assert 3 * 2**20 < max(on_disk) <= 4 * 2**20
    assert list(temp_area.iterdir()) == []


def test_temp_files_are_deleted_after_success_and_after_an_error(
    space_app, space, reference_images, tmp_path, temp_area, monkeypatch
):
    """Disk: each request's unpacked files go when it ends; the CSV it returns lives in Gradio's cache (emptied on
    `DELETE_CACHE`'s schedule)."""
    archive = tmp_path / "shots.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(reference_images["coffee"], "coffee.png")
        zf.write(reference_images["rocket"], "../../escape.png")  # zip-slip: written under a name of the app's
    table, csv_path = space.batch([str(archive)], "adapter:tiny")
    assert table["error"].isna().all()
    assert Path(csv_path).read_text().startswith("path,score,task,adapter,prompt_set,error\n")
    assert Path(csv_path).is_relative_to(tmp_path / "gradio-cache")
    assert list(temp_area.iterdir()) == []
    assert [p.name for p in tmp_path.rglob("escape.png")] == []

    def disk_full(fmt, output):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), output)

    monkeypatch.setattr(space_app, "RowWriter", disk_full)
    with pytest.raises(gr.Error) as raised:
        space.batch([str(archive)], "adapter:tiny")
    assert raised.value.message == "uniqa_scores.csv: No space left on device"  # not the temp folder's path
    assert list(temp_area.iterdir()) == []


def test_one_unreadable_entry_gets_its_own_row(space, model, reference_images, tmp_path, temp_area):
    """Entries that cannot be read (encrypted, an unsupported compression, a wrong checksum, lying about their size)
    each get an error row; the entries after them are scored."""
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("encrypted.png", "deflate64.png", "bad_crc.png", "short.png"):
            zf.write(reference_images["chelsea"], name)
        zf.write(reference_images["coffee"], "lzma.png", compress_type=zipfile.ZIP_LZMA)
        zf.write(reference_images["rocket"], "rocket.png", compress_type=zipfile.ZIP_BZIP2)
        zf.write(reference_images["coffee"], "coffee.png", compress_type=zipfile.ZIP_STORED)
    patch_entry(archive, "encrypted.png", flags=0x1)
    patch_entry(archive, "deflate64.png", method=9)
    patch_entry(archive, "bad_crc.png", crc=12345)
    patch_entry(archive, "short.png", size=1000)  # declares less than it holds (under the file limit)
    table, _ = space.batch([str(archive)], "prompts:level5")
    corrupt = "corrupt zip entry (its size or checksum does not match the archive's record)"
    assert errors(table) == [
        "encrypted zip entry (password-protected)",
        "unsupported zip compression (deflate64); store, deflate or bzip2 entries are read",
        corrupt,
        corrupt,
        "unsupported zip compression (lzma); store, deflate or bzip2 entries are read",
        None,
        None,
    ]
    expected = model.score([reference_images["rocket"], reference_images["coffee"]], prompt_set="level5").tolist()
    assert list(table["score"][5:]) == pytest.approx(expected, abs=1e-6)
    assert list(temp_area.iterdir()) == []


def test_an_image_that_breaks_scoring_gets_its_own_row(space, model, reference_images, tmp_path, monkeypatch):
    """One image failing `model.score` (out of memory, say) costs its row, not the batch: the chunk is retried
    image by image, as `uniqa score` does."""
    odd = tmp_path / "odd.png"
    Image.new("RGB", (100, 100), "grey").save(odd)
    score = model.score

    def out_of_memory_on_odd(images, *args, **kwargs):
        if any(image.size == (100, 100) for image in images):
            raise RuntimeError("out of memory")
        return score(images, *args, **kwargs)

    monkeypatch.setattr(model, "score", out_of_memory_on_odd)
    table, _ = space.batch([str(reference_images["coffee"]), str(odd)], "prompts:level5")
    assert table["error"][1] == "cannot score image (RuntimeError: out of memory)"
    assert table["score"][0] == pytest.approx(float(score(reference_images["coffee"], prompt_set="level5")[0]))


def test_error_messages_name_files_not_server_paths(space, tmp_path, temp_area):
    """An upload that has gone from the server (Gradio's cache emptied under it), or an archive that is not one,
    is named by its file name only."""
    gone = temp_area / "gradio" / "0a1b2c" / "gone.png"
    with pytest.raises(gr.Error) as raised:
        space.score_image(str(gone))
    assert raised.value.message == "gone.png: No such file or directory"
    not_a_zip = tmp_path / "fake.zip"
    not_a_zip.write_bytes(b"PK\x03\x04 nothing else")
    table, _ = space.batch([str(gone), str(not_a_zip)], "prompts:level5")
    assert errors(table) == ["gone.png: No such file or directory", "cannot read zip (File is not a zip file)"]
    assert_no_server_paths(table["error"], tmp_path)


def test_custom_prompts_are_limited_before_any_work_and_the_cache_stays_bounded(
    space, model, reference_images, monkeypatch
):
    """Text: the prompt field has a length limit checked before the image is read or anything is scored; the
    model keeps the embeddings of at most PROMPT_CACHE_SIZE prompt sets, however many users send."""
    from modeling_uniqa.modeling_uniqa import PROMPT_CACHE_SIZE

    path = str(reference_images["chelsea"])
    for k in range(PROMPT_CACHE_SIZE + 5):
        space.custom(path, f"a photo of {k} dark things | a photo of {k} bright things")
    cache = model._text_embeds_cache
    assert len(cache) == PROMPT_CACHE_SIZE
    assert any("a photo of 68 dark things" in key[0] for key in cache)  # the newest stay
    assert not any("a photo of 0 dark things" in key[0] for key in cache)  # the oldest went
    huge = "a blurry photo | a sharp photo\n" * 1_000_000  # 31 MB
    monkeypatch.setattr(model, "score", None)  # nothing may be scored
    with pytest.raises(gr.Error) as raised:
        space.custom("/not/read/first.png", huge)
    assert raised.value.message == "the prompts are 31000000 characters long, the limit is 4000"


def test_gradio_cache_is_emptied_on_a_schedule(space_app, model):
    """Disk: uploads and results in Gradio's cache are deleted once they are older than DELETE_CACHE's age."""
    demo = space_app.build_demo(model, "tiny")
    assert demo.delete_cache == space_app.DELETE_CACHE and space_app.DELETE_CACHE[1] <= 24 * 3600
