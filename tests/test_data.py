import gzip
import io
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from gan_core import data
from gan_core.config import DataConfig
from gan_core.shapes import SHAPE_CLASSES


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def _exif_rotated_jpeg(path):
    """40x20 JPEG, left half red, right half blue, EXIF orientation 6 (display rotated 90 CW)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    return _save(img, path, format="JPEG", exif=exif, quality=95)


def make_mixed_folder(root):
    """Class subfolders 'a' and 'b' with every kind of file the folder source must handle."""
    rgb = Image.fromarray(np.full((30, 50, 3), (10, 200, 30), np.uint8))
    _save(rgb, root / "a" / "plain.png")
    _save(rgb, root / "a" / "photo.webp")
    _save(rgb, root / "a" / "old.bmp")
    _save(Image.fromarray(np.full((16, 16), 77, np.uint8), "L"), root / "a" / "gray.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent -> composited on white
    _save(Image.fromarray(rgba, "RGBA"), root / "a" / "transparent.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    _save(pal, root / "b" / "palette.png")
    pal_t = pal.copy()
    _save(pal_t, root / "b" / "palette_t.png", transparency=1)
    _save(Image.fromarray(np.full((16, 16), 32768, np.uint16)), root / "b" / "deep16.png")
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 255, 0), (0, 0, 0))]
    frames[0].save(root / "b" / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    _exif_rotated_jpeg(root / "b" / "rotated.jpg")
    (root / "b" / "broken.png").write_bytes(b"this is not a png")
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_shapes_deterministic_and_labelled():
    cfg = DataConfig(source="shapes", num_images=40, image_size=32, seed=3)
    a = data.load_dataset(cfg, use_cache=False)
    b = data.load_dataset(cfg, use_cache=False)
    assert a.images.dtype == torch.uint8 and a.images.shape == (40, 3, 32, 32)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.class_names == list(SHAPE_CLASSES) and len(SHAPE_CLASSES) == 10
    assert a.labels.min() >= 0 and a.labels.max() < 10
    other = data.load_dataset(DataConfig(source="shapes", num_images=40, image_size=32, seed=4), use_cache=False)
    assert not torch.equal(a.images, other.images)
    gray = data.load_dataset(DataConfig(source="shapes", num_images=4, channels=1), use_cache=False)
    assert gray.images.shape == (4, 1, 64, 64)


def test_scenes_objects_and_boxes():
    ds = data.load_dataset(DataConfig(source="scenes", num_images=30, image_size=64), use_cache=False)
    assert ds.objects.shape == (30, 4, 7)
    counts = (ds.objects[..., 0] >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4
    obj = ds.objects[ds.objects[..., 0] >= 0]
    cx, cy, x0, y0, x1, y1 = obj[:, 1:].T
    assert torch.all((x0 <= cx) & (cx <= x1) & (y0 <= cy) & (cy <= y1))
    assert torch.all((x0 >= 0) & (x1 <= 1) & (y0 >= 0) & (y1 <= 1))
    # An object's centre pixel differs from the scene's background (the corner is background or not,
    # but the centre of a filled, non-ring object is painted).
    i, j = next((i, j) for i in range(30) for j in range(4)
                if ds.objects[i, j, 0] >= 0 and SHAPE_CLASSES[int(ds.objects[i, j, 0])] in ("circle", "square"))
    px = int(ds.objects[i, j, 1] * 63.99), int(ds.objects[i, j, 2] * 63.99)
    centre = ds.images[i, :, px[1], px[0]].int()
    corner_colours = {tuple(ds.images[i, :, y, x].tolist()) for y in (0, 63) for x in (0, 63)}
    assert tuple(centre.tolist()) not in corner_colours


def test_folder_every_format_labels_and_skips(tmp_path):
    root = make_mixed_folder(tmp_path / "imgs")
    ds = data.load_dataset(DataConfig(source="folder", path=str(root), image_size=16), use_cache=False)
    assert ds.skipped == 2  # broken.png and empty.jpg
    assert len(ds) == 10 and ds.images.shape[1:] == (3, 16, 16)
    assert ds.class_names == ["a", "b"]
    names = sorted(["a/gray.png", "a/old.bmp", "a/photo.webp", "a/plain.png", "a/transparent.png",
                    "b/anim.gif", "b/deep16.png", "b/palette.png", "b/palette_t.png", "b/rotated.jpg"])
    by_name = dict(zip(names, ds.images))
    assert ds.labels.tolist() == [0] * 5 + [1] * 5
    assert by_name["a/gray.png"][:, 8, 8].tolist() == [77, 77, 77]
    assert by_name["a/transparent.png"][:, 8, 8].tolist() == [255, 255, 255]  # alpha on white
    assert by_name["b/palette.png"][:, 8, 8].tolist() == [0, 255, 0]
    assert by_name["b/palette_t.png"][:, 8, 8].tolist() == [255, 255, 255]  # transparent index
    assert abs(int(by_name["b/deep16.png"][0, 8, 8]) - 128) <= 1  # 16-bit scaled, not clipped
    assert by_name["b/anim.gif"][:, 8, 8].tolist() == [255, 255, 0]  # first frame
    rot = by_name["b/rotated.jpg"].int()
    assert rot[0, 2, 8] > 200 and rot[2, 2, 8] < 60  # EXIF applied: red on top
    assert rot[2, 13, 8] > 200 and rot[0, 13, 8] < 60  # blue below


def test_resize_center_crop_matches_tutorial_geometry():
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 20:60] = 255  # the centre square is white, the side bands black
    out = data.decode_image(Image.fromarray(arr), 16, 3)
    assert out.shape == (3, 16, 16)
    # shorter side -> 16, then the centre 16x16 is the white square (edges softened by antialiasing)
    assert out[:, :, 1:-1].min() >= 250 and out.min() > 128


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(data.DataError, match="no image files"):
        data.load_dataset(DataConfig(source="folder", path=str(tmp_path)), use_cache=False)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(data.DataError, match="no readable images"):
        data.load_dataset(DataConfig(source="folder", path=str(tmp_path)), use_cache=False)


def _zip_folder(root, zpath):
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    return zpath


def test_zip_reads_in_memory_and_ignores_paths(tmp_path):
    root = make_mixed_folder(tmp_path / "imgs")
    zpath = _zip_folder(root, tmp_path / "imgs.zip")
    with zipfile.ZipFile(zpath, "a") as z:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, format="PNG")
        z.writestr("../../escape.png", buf.getvalue())  # never extracted: only read as bytes
    before = set(p for p in tmp_path.parent.rglob("*"))
    ds = data.load_dataset(DataConfig(source="zip", path=str(zpath), image_size=16), use_cache=False)
    assert set(p for p in tmp_path.parent.rglob("*")) == before
    assert len(ds) == 11 and ds.skipped == 2
    assert ds.labels is None  # "escape.png" is not in a class folder, so no labels are claimed


def test_zip_with_class_folders_keeps_labels(tmp_path):
    root = make_mixed_folder(tmp_path / "imgs")
    zpath = _zip_folder(root, tmp_path / "imgs.zip")
    ds = data.load_dataset(DataConfig(source="zip", path=str(zpath), image_size=16), use_cache=False)
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [0] * 5 + [1] * 5


def _hf_dataset(n=6):
    import datasets

    def png(c):
        buf = io.BytesIO()
        Image.new("RGB", (20, 12), (c, 255 - c, 9)).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    return datasets.Dataset.from_dict(
        {"image": [png(i * 30) for i in range(n)], "label": [i % 2 for i in range(n)]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}),
    )


def test_parquet_hf_style(tmp_path):
    path = tmp_path / "dataset-resized-64.parquet"
    _hf_dataset().to_parquet(str(path))
    ds = data.load_dataset(DataConfig(source="parquet", path=str(path), image_size=8), use_cache=False)
    assert ds.images.shape == (6, 3, 8, 8)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.images[2, :, 4, 4].tolist() == [60, 195, 9]


def test_parquet_without_image_column_is_a_clear_error(tmp_path):
    import datasets

    path = tmp_path / "t.parquet"
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(path))
    with pytest.raises(data.DataError, match="no image column"):
        data.load_dataset(DataConfig(source="parquet", path=str(path)), use_cache=False)


def test_hub_source_offline_from_a_local_dataset_repo(tmp_path, monkeypatch):
    """`datasets.load_dataset(id)` on a local copy of a Hub dataset repo, with the Hub switched off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "celeba-mini"
    (repo / "data").mkdir(parents=True)
    _hf_dataset(4).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    ds = data.load_dataset(DataConfig(source="hub", path=str(repo), image_size=8, split="train"), use_cache=False)
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 0, 1]
    saved = tmp_path / "saved"
    _hf_dataset(3).save_to_disk(str(saved))
    assert len(data.load_dataset(DataConfig(source="hub", path=str(saved), image_size=8), use_cache=False)) == 3


def _write_idx(path, arr, dtype_code=0x08):
    header = struct.pack(">HBB", 0, dtype_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files(tmp_path, gz):
    suffix = ".gz" if gz else ""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    imgs = np.zeros((5, 28, 28), np.uint8)
    for i in range(5):
        imgs[i, :, : 5 * (i + 1)] = 255
    _write_idx(folder / f"train-images-idx3-ubyte{suffix}", imgs)
    _write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(5))
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", imgs[:2])
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.array([7, 8]))
    ds = data.load_dataset(DataConfig(source="idx", path=str(folder), image_size=32, channels=1), use_cache=False)
    assert ds.images.shape == (5, 1, 32, 32) and ds.labels.tolist() == [0, 1, 2, 3, 4]
    assert ds.class_names[0] == "T-shirt/top"
    assert ds.images[4, 0, 16, 2] == 255 and ds.images[0, 0, 16, 30] == 0
    test = data.load_dataset(DataConfig(source="idx", path=str(folder), split="test", image_size=32, channels=3),
                             use_cache=False)
    assert test.images.shape == (2, 3, 32, 32) and test.labels.tolist() == [7, 8]


def test_second_load_is_a_cache_hit(tmp_path):
    root = make_mixed_folder(tmp_path / "imgs")
    cfg = DataConfig(source="folder", path=str(root), image_size=16, cache_dir=str(tmp_path / "cache"))
    first = data.load_dataset(cfg)
    second = data.load_dataset(cfg)
    assert not first.from_cache and second.from_cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.class_names == first.class_names and second.skipped == first.skipped
    assert len(list((tmp_path / "cache" / "datasets").glob("*.safetensors"))) == 1
    # Another size is another cache entry; a changed folder is re-decoded.
    assert not data.load_dataset(DataConfig(source="folder", path=str(root), image_size=32,
                                            cache_dir=str(tmp_path / "cache"))).from_cache
    _save(Image.new("RGB", (9, 9)), root / "a" / "new.png")
    again = data.load_dataset(cfg)
    assert not again.from_cache and len(again) == len(first) + 1
    scenes = DataConfig(source="scenes", num_images=5, cache_dir=str(tmp_path / "cache"))
    data.load_dataset(scenes)
    hit = data.load_dataset(scenes)
    assert hit.from_cache and hit.objects.shape == (5, 4, 7)


def _png(colour=(9, 9, 9), size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def test_upload_zip_members_are_read_by_entry_so_a_duplicate_name_cannot_smuggle_a_bomb(tmp_path):
    archive = tmp_path / "dup.zip"
    small = _png()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", small)
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("a.png", b"\0" * (data.MAX_ZIP_MEMBER_BYTES + 10))  # the same name, a bomb
    items = data.upload_items([archive])
    assert [name for name, _ in items] == ["dup.zip:a.png"]  # the bomb is skipped by its declared size
    assert items[0][1]() == small  # and the read gets the small entry, not the last one of that name
    images, ok = data.decode_items(items, 8, 3)
    assert ok.tolist() == [True] and images.shape == (1, 3, 8, 8)
    assert items[0][1].reader._zip is None  # decode_items closed the handle


def test_upload_zip_with_a_broken_directory_is_a_data_error(tmp_path):
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("a.png", _png())
    raw = good.getvalue().replace(b"PK\x01\x02", b"XX\x01\x02")  # the central directory's entries
    broken = tmp_path / "broken.zip"
    broken.write_bytes(raw)
    assert zipfile.is_zipfile(broken)  # it still looks like a zip from its end record
    with pytest.raises(data.DataError, match="cannot read the zip broken.zip"):
        data.upload_items([broken])


def test_upload_zip_reads_many_members_through_one_handle(tmp_path, monkeypatch):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(50):
            z.writestr(f"{i}.png", _png((i, 0, 0)))
    opened = []
    real = zipfile.ZipFile

    class Counting(real):
        def __init__(self, *a, **k):
            opened.append(a[0])
            super().__init__(*a, **k)

    monkeypatch.setattr(data.zipfile, "ZipFile", Counting)
    items = data.upload_items([archive])
    images, ok = data.decode_items(items, 8, 3)
    assert ok.all() and len(images) == 50
    assert len(opened) == 2  # once to list, once to read all 50


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_items_lists_what_it_leaves_out_of_a_zip(tmp_path, monkeypatch):
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", _png_bytes())
        z.writestr("docs/notes.txt", "not an image")
        z.writestr("__MACOSX/._a.png", "metadata")
        z.writestr("huge.png", b"0" * 2048)
    monkeypatch.setattr(data, "MAX_ZIP_MEMBER_BYTES", 1024)
    skipped = []
    items = data.upload_items([archive], skipped=skipped)
    assert [name for name, _ in items] == ["mixed.zip:a.png"]
    assert [name for name, _ in skipped] == ["mixed.zip:docs/notes.txt", "mixed.zip:huge.png"]
    assert skipped[0][1] == "not an image file" and skipped[1][1].startswith("larger than")
    assert [name for name, _ in data.upload_items([archive])] == ["mixed.zip:a.png"]  # the list is optional
