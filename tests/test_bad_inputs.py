"""Bad uploads through the app's Classify handlers: each is read correctly or answered with one
clear line (a gr.Error), never a traceback, and the handler keeps working afterwards."""
import io
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
import gradio as gr

from conftest import ROOT
from test_app import model_dir, models  # noqa: F401  (fixtures)
from test_app_e2e import client  # noqa: F401  (fixture)


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _huge_header_png(width=20000, height=20000) -> bytes:
    """A small file whose header claims width x height pixels (a decompression bomb's calling card)."""
    raw = _png_bytes(Image.new("RGB", (1, 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def _exif_rotated_jpeg() -> bytes:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return _jpeg_bytes(img, exif=exif)


def _gif_bytes() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


GOOD = {  # decodable, maybe unusual: each must classify
    "1x1.png": lambda: _png_bytes(Image.new("RGB", (1, 1), (9, 9, 9))),
    "16bit.png": lambda: _png_bytes(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))),
    "cmyk.jpg": lambda: _jpeg_bytes(Image.new("CMYK", (30, 30), (0, 255, 255, 0))),
    "palette.png": lambda: _png_bytes(Image.new("P", (20, 20), 3)),
    "transparent.png": lambda: _png_bytes(Image.new("RGBA", (20, 20), (255, 0, 0, 0))),
    "animated.gif": _gif_bytes,
    "exif-rotated.jpg": _exif_rotated_jpeg,
}
BAD = {  # not decodable: each must be one clear error (single) or an "(unreadable)" row (batch)
    "zero-bytes.png": lambda: b"",
    "text.png": lambda: b"this is not an image\n" * 10,
    "truncated.png": lambda: _png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60],
    "truncated.jpg": lambda: _jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))[:300],
    "bomb-header.png": _huge_header_png,
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unusual_but_valid_images_classify(models, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(GOOD[name]())
    labels, _ = app.classify("tiny-cluster", str(path))
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_images_are_one_clear_line(models, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD[name]())
    with pytest.raises(gr.Error) as e:
        app.classify("tiny-cluster", str(path))
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    labels, _ = app.classify("tiny-cluster", Image.new("RGB", (8, 8)))  # still serving
    assert labels


def test_a_batch_mixing_everything_keeps_every_good_file(models, tmp_path):
    paths = []
    for name, make in {**GOOD, **BAD}.items():
        (tmp_path / name).write_bytes(make())
        paths.append(str(tmp_path / name))
    table, counts, _ = app.classify_batch("tiny-cluster", paths)
    unreadable = set(table[table["cluster"] == "(unreadable)"]["file"])
    assert unreadable == set(BAD) and counts["images"].sum() == len(GOOD)


def test_zip_traversal_names_and_a_zip_bomb(models, tmp_path):
    archive = tmp_path / "tricky.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("../../outside.png", GOOD["1x1.png"]())
        z.writestr("/abs/path.png", GOOD["palette.png"]())
        z.writestr("bomb.png", b"\0" * (80 * 2**20))  # 80 MiB of zeros, about 80 KB compressed
    app.load("tiny-cluster")  # (loading times the generator once and caches the choice: not this test's files)
    before = set(p for p in tmp_path.parent.rglob("*"))
    table, counts, _ = app.classify_batch("tiny-cluster", [str(archive)])
    # the bomb is skipped (never inflated), and listed as skipped
    assert table["file"].tolist() == ["tricky.zip:outside.png", "tricky.zip:abs/path.png", "tricky.zip:bomb.png"]
    assert table["cluster"].tolist()[2].startswith("(skipped: larger than")
    assert counts["images"].sum() == 2
    created = set(p for p in tmp_path.parent.rglob("*")) - before
    work = app.JOB.work_dir
    assert [p.name for p in created if p.is_file()] == ["assignments.csv"]  # the CSV, and nothing extracted
    assert all(p == work or work in p.parents for p in created)  # inside the app's work folder


def test_an_upload_with_nothing_usable_is_one_line(models, tmp_path):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no images")
    with pytest.raises(gr.Error, match="no images"):
        app.classify_batch("tiny-cluster", [str(empty)])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    with pytest.raises(gr.Error, match="None of the uploaded files"):
        app.classify_batch("tiny-cluster", [str(bad)])


# ---------------------------------------------------------------- the same, through gradio_client

def _files_under(*roots) -> set:
    out = set()
    for root in roots:
        for dirpath, _, names in os.walk(root):
            out.update(os.path.join(dirpath, n) for n in names)
    return out


def _outside_roots():
    """Where a stray write would land: the temp folder (the test gives the app a private one, so other
    processes writing to the system's do not count) and the repository (minus build and run folders)."""
    skip = {".venv", ".git", "runs", ".pytest_cache", "__pycache__"}
    return [tempfile.gettempdir()] + [str(p) for p in ROOT.iterdir() if p.is_dir() and p.name not in skip]


def _one_line_app_error(e) -> str:
    message = str(e.value)
    assert "\n" not in message.strip() and "Traceback" not in message and "File \"" not in message, message
    return message


@pytest.mark.slow
def test_every_bad_input_through_the_client(client, tmp_path, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    # The app runs in this process: a temp folder of its own (this test's folder, which also holds the
    # app's work folder) catches its stray writes, and nothing another program writes under the
    # system's temp folder meanwhile can fail this test.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for name, make in {**GOOD, **BAD}.items():
        (uploads / name).write_bytes(make())
    with zipfile.ZipFile(uploads / "tricky.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("../../outside.png", GOOD["1x1.png"]())
        z.writestr("/abs/path.png", GOOD["palette.png"]())
        z.writestr("bomb.png", b"\0" * (80 * 2**20))
    with zipfile.ZipFile(uploads / "empty.zip", "w") as z:
        z.writestr("readme.txt", "no images")
    work = [Path(app.JOB.work_dir).resolve(), app.WORK_DIR.resolve()]
    from gradio.utils import get_upload_folder

    assert app.WORK_DIR.resolve() in Path(get_upload_folder()).resolve().parents  # Gradio's cache is ours too
    before = _files_under(*_outside_roots())

    for name in sorted(GOOD):
        label, _ = client.predict("tiny-cluster", handle_file(str(uploads / name)), api_name="/classify")
        assert label["label"] in {"cluster 0", "cluster 1", "cluster 2"}, name
    for name in sorted(BAD):
        with pytest.raises(AppError) as e:
            client.predict("tiny-cluster", handle_file(str(uploads / name)), api_name="/classify")
        assert "Could not read" in _one_line_app_error(e), name
        label, _ = client.predict("tiny-cluster", handle_file(str(uploads / "1x1.png")), api_name="/classify")
        assert label["label"]  # still serving

    table, counts, _ = client.predict("tiny-cluster", [handle_file(str(uploads / n)) for n in sorted({**GOOD, **BAD})],
                                      api_name="/classify_batch")
    rows = {row[0]: row[1] for row in table["data"]}
    assert {n for n, c in rows.items() if c == "(unreadable)"} == set(BAD)
    assert sum(row[1] for row in counts["data"]) == len(GOOD)

    table, counts, _ = client.predict("tiny-cluster", [handle_file(str(uploads / "tricky.zip"))], api_name="/classify_batch")
    assert [row[0] for row in table["data"]] == ["tricky.zip:outside.png", "tricky.zip:abs/path.png", "tricky.zip:bomb.png"]
    with pytest.raises(AppError) as e:
        client.predict("tiny-cluster", [handle_file(str(uploads / "empty.zip"))], api_name="/classify_batch")
    assert "no images" in _one_line_app_error(e)

    for bad_k, says in ((50, "K = 50 clusters need at least 50 images; 3 were uploaded"),
                        ("nan", "K (cluster) must be a number")):  # (JSON has no NaN: it comes as text)
        with pytest.raises(AppError) as e:
            client.predict("upload", [handle_file(str(uploads / n)) for n in ("1x1.png", "palette.png", "cmyk.jpg")],
                           "", "cluster", 10, 4, 2e-4, 32, 3, bad_k, "too-few", api_name="/train")
        assert says in _one_line_app_error(e)
    for steps, lr in (("nan", 2e-4), (-5, 2e-4), (10, "inf"), (10, 5.0), ("ten", 2e-4)):
        with pytest.raises(AppError) as e:
            client.predict("shapes", None, "", "dcgan", steps, 4, lr, 32, 3, 10, "bad-numbers", api_name="/train")
        assert any(word in _one_line_app_error(e) for word in ("Steps", "Learning rate"))
    with pytest.raises(AppError) as e:
        client.predict("shapes", None, "", "dcgan", 10, 4, 2e-4, 32, 3, 10, "../escape", api_name="/train")
    _one_line_app_error(e)
    with pytest.raises(AppError) as e:  # a dataset with no usable image: the job fails with one line
        client.predict("upload", [handle_file(str(uploads / n)) for n in sorted(BAD)], "", "dcgan", 10, 4, 2e-4, 32, 3,
                       10, "nothing-usable", api_name="/train")
    assert "could be read" in _one_line_app_error(e)
    import pandas as pd

    pd.DataFrame({"text": ["a", "b"]}).to_parquet(uploads / "no-images.parquet")
    with pytest.raises(AppError) as e:
        client.predict("parquet path", None, str(uploads / "no-images.parquet"), "dcgan", 10, 4, 2e-4, 32, 3, 10,
                       "no-image-column", api_name="/train")
    assert "no image column" in _one_line_app_error(e)

    label, _ = client.predict("tiny-cluster", handle_file(str(uploads / "1x1.png")), api_name="/classify")
    assert label["label"]  # the app still serves after all of that
    created = _files_under(*_outside_roots()) - before
    # the test's own files, what its client downloaded, and the caches conftest points into this folder
    mine = (uploads, tmp_path / "downloads", tmp_path / "hf-datasets", tmp_path / "ganlab-cache")
    stray = [p for p in created if not any(w in Path(p).resolve().parents for w in work)
             and not any(m in Path(p).parents for m in mine)]
    assert stray == []
    assert list((app.WORK_DIR / "gradio-cache").rglob("palette.png"))  # the uploads landed in the work folder
