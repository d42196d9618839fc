"""Bad uploads through the app's Classify handlers: each is read correctly or answered with one
clear line (a gr.Error), never a traceback, and the handler keeps working afterwards."""
import io
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

import app
import gradio as gr

from test_app import model_dir, models  # noqa: F401  (fixtures)


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
    before = set(p for p in tmp_path.parent.rglob("*"))
    table, counts, _ = app.classify_batch("tiny-cluster", [str(archive)])
    assert table["file"].tolist() == ["tricky.zip:outside.png", "tricky.zip:abs/path.png"]  # the bomb is skipped
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
