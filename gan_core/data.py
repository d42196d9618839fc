"""Every dataset source decodes ONCE into a uint8 tensor (N, C, H, W), cached on disk.

Images are resized (shorter side to `image_size`) and centre-cropped, as the PyTorch DCGAN
tutorial's `Resize` + `CenterCrop` do. Labels found in the data (class subfolders, IDX label
files, a `label` column, the procedural classes) are kept for evaluation only; training never
reads them. `to_model_images` turns whatever a user hands the classifier or the encoder (PIL
images, paths, bytes, arrays, tensors) into the same uint8 layout at the model's size.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import struct
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, ImageSequence
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import shapes
from .config import DataConfig
from .files import atomic_write, cache_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
CACHE_VERSION = 1
MAX_ZIP_MEMBER_BYTES = 64 * 2**20  # a larger member (or a zip bomb) is skipped, not inflated
Progress = Optional[Callable[[int, int], None]]


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: Optional[torch.Tensor] = None  # int64 (N,), evaluation only
    class_names: list[str] = field(default_factory=list)
    objects: Optional[torch.Tensor] = None  # scenes: float32 (N, 4, 7)
    skipped: int = 0  # unreadable files
    from_cache: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


class DataError(ValueError):
    """A dataset could not be read; the message is one line meant for the user."""


# ---------------------------------------------------------------- decoding one image

def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" or "RGB": 16-bit scaled to 8-bit, transparency composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    return img.convert("L" if channels == 1 else "RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(data: bytes | str | Path | Image.Image, size: int, channels: int) -> np.ndarray:
    """One image (bytes, a path or a PIL image) -> uint8 (C, size, size). Raises on unreadable input."""
    if isinstance(data, Image.Image):
        img = data
    else:
        img = Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)
        if getattr(img, "format", None) == "JPEG":
            img.draft("RGB" if channels == 3 else "L", (size, size))
    if getattr(img, "n_frames", 1) > 1:
        img = next(iter(ImageSequence.Iterator(img)))  # first frame of an animation
    img = ImageOps.exif_transpose(img)
    img = resize_center_crop(_to_mode(img, channels), size)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_many(items: list, size: int, channels: int, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Decode in threads (PIL releases the GIL); returns (images, ok mask)."""
    out = np.zeros((len(items), channels, size, size), dtype=np.uint8)
    ok = np.zeros(len(items), dtype=bool)

    def work(i: int) -> None:
        try:
            out[i] = decode_image(items[i](), size, channels) if callable(items[i]) else \
                decode_image(items[i], size, channels)
            ok[i] = True
        except Exception:  # noqa: BLE001 - any unreadable file is skipped and counted
            pass

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for done, _ in enumerate(pool.map(work, range(len(items))), 1):
            if progress and (done % 500 == 0 or done == len(items)):
                progress(done, len(items))
    return out, ok


def _labels_from_names(names: list[str]) -> tuple[Optional[np.ndarray], list[str]]:
    """Class subfolder names -> (label ids, class names), or (None, []) without subfolders."""
    tops = [n.split("/", 1)[0] if "/" in n else None for n in names]
    if not names or any(t is None for t in tops):
        return None, []
    classes = sorted(set(tops))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[t] for t in tops], dtype=np.int64), classes


def _keep_readable(images: np.ndarray, ok: np.ndarray, labels: Optional[np.ndarray],
                   classes: list[str]) -> ImageDataset:
    """Drop the images that failed to decode (and their labels), counting them as skipped."""
    return ImageDataset(
        images=torch.from_numpy(images[ok]),
        labels=None if labels is None else torch.from_numpy(labels[ok]),
        class_names=classes,
        skipped=int((~ok).sum()),
    )


def _from_named(named: list[tuple[str, object]], cfg: DataConfig, progress: Progress) -> ImageDataset:
    named.sort(key=lambda t: t[0])
    if cfg.limit:
        named = named[: cfg.limit]
    images, ok = _decode_many([item for _, item in named], cfg.image_size, cfg.channels, progress)
    labels, classes = _labels_from_names([n for n, _ in named])
    if not ok.any():
        raise DataError(f"no readable images in {cfg.path} ({len(named)} files tried)")
    return _keep_readable(images, ok, labels, classes)


# ---------------------------------------------------------------- sources

def _load_shapes(cfg: DataConfig, progress: Progress) -> ImageDataset:
    images, labels = shapes.render_shapes(cfg.num_images, cfg.image_size, cfg.channels, cfg.seed, progress)
    return ImageDataset(images, labels, list(shapes.SHAPE_CLASSES))


def _load_scenes(cfg: DataConfig, progress: Progress) -> ImageDataset:
    images, objects = shapes.render_scenes(cfg.num_images, cfg.image_size, cfg.channels, cfg.seed, progress)
    return ImageDataset(images, None, list(shapes.SHAPE_CLASSES), objects=objects)


def _load_folder(cfg: DataConfig, progress: Progress) -> ImageDataset:
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"not a folder: {cfg.path}")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {cfg.path}")
    return _from_named([(p.relative_to(root).as_posix(), p) for p in files], cfg, progress)


def _load_zip(cfg: DataConfig, progress: Progress) -> ImageDataset:
    """Members are read into memory one at a time; nothing is extracted to disk."""
    try:
        archive = zipfile.ZipFile(Path(cfg.path).expanduser())
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"not a readable zip file: {cfg.path} ({e})") from None
    with archive:
        named, too_big = _zip_images(archive)
        if not named:
            raise DataError(f"no image files in zip {cfg.path}")
        ds = _from_named([(label, functools.partial(_read_member, archive, info)) for label, info in named],
                         cfg, progress)
    ds.skipped += too_big
    return ds


def _member_label(name: str) -> str:
    """A zip member's name as a label, never a path: anything path-like ('..', '/', '\\') is stripped."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", ".", ".."))


def _zip_images(archive: zipfile.ZipFile, skipped: Optional[list] = None) -> tuple[list[tuple[str, zipfile.ZipInfo]], int]:
    """The image members of an open zip as [(label, its directory entry)], and how many were skipped
    for declaring more than MAX_ZIP_MEMBER_BYTES (a zip bomb is never inflated). `skipped`, when given,
    gets (label, why) for every file member left out (not an image, too large); macOS metadata
    (`__MACOSX`) is left out silently. Members are read by their entry, never by name: a name can occur
    twice in a zip, and a read by name takes the last one."""
    named, too_big = [], 0
    for m in archive.infolist():
        if m.is_dir() or "__MACOSX" in m.filename:
            continue
        label = _member_label(m.filename)
        if not m.filename.lower().endswith(IMAGE_EXTENSIONS):
            if skipped is not None:
                skipped.append((label, "not an image file"))
            continue
        if m.file_size > MAX_ZIP_MEMBER_BYTES:
            too_big += 1
            if skipped is not None:
                skipped.append((label, f"larger than {MAX_ZIP_MEMBER_BYTES >> 20} MiB"))
            continue
        named.append((label, m))
    return named, too_big


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes, by its directory entry, never more than MAX_ZIP_MEMBER_BYTES inflated."""
    with archive.open(info) as f:
        data = f.read(MAX_ZIP_MEMBER_BYTES + 1)
    if len(data) > MAX_ZIP_MEMBER_BYTES:
        raise DataError(f"zip member {info.filename!r} inflates past {MAX_ZIP_MEMBER_BYTES >> 20} MiB")
    return data


class _ZipReader:
    """Reads members of one zip file through a single handle, opened at the first read and closed by
    `close()` (which `decode_items` calls when it is done), so a zip is parsed once per pass rather
    than once per member, and no handle outlives the decoding."""

    def __init__(self, path: Path):
        self.path, self._zip, self._lock = path, None, threading.Lock()

    def read(self, info: zipfile.ZipInfo) -> bytes:
        with self._lock:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            return _read_member(self._zip, info)

    def close(self) -> None:
        with self._lock:
            if self._zip is not None:
                self._zip.close()
                self._zip = None


class _ZipMember:
    """A zero-argument reader of one zip member (what upload items hold)."""

    def __init__(self, reader: _ZipReader, info: zipfile.ZipInfo):
        self.reader, self.info = reader, info

    def __call__(self) -> bytes:
        return self.reader.read(self.info)


def upload_items(paths: Iterable[str | Path], limit: int = 10_000,
                 skipped: Optional[list] = None) -> list[tuple[str, Callable[[], bytes]]]:
    """Uploaded files (images, or zips of images) -> [(display name, read bytes)], in order, at most
    `limit`. Zip members are read into memory when asked, never extracted; their names are only
    labels. `skipped`, when given, gets (display name, why) for every zip member left out, so nothing
    is dropped without a word. Raises DataError when nothing usable was given or a zip cannot be read."""
    items: list[tuple[str, Callable[[], bytes]]] = []
    for path in paths:
        path = Path(path)
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:  # listed now, closed now
                    left_out: list = []
                    named, _ = _zip_images(archive, left_out)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError) as e:
                raise DataError(f"cannot read the zip {path.name}: {e}") from None
            reader = _ZipReader(path)
            items.extend((f"{path.name}:{label}", _ZipMember(reader, info)) for label, info in named)
            if skipped is not None:
                skipped.extend((f"{path.name}:{label}", why) for label, why in left_out)
        else:
            items.append((path.name, path.read_bytes))
        if len(items) >= limit:
            break
    if not items:
        raise DataError("no images in the upload (images, or zips of images)")
    return items[:limit]


def decode_items(items: list, size: int, channels: int, progress: Progress = None) -> tuple[torch.Tensor, np.ndarray]:
    """[(name, read bytes)] -> (uint8 images (N_ok, C, size, size), ok mask over `items`). Zip handles
    opened for the reads are closed before it returns."""
    try:
        images, ok = _decode_many([read for _, read in items], size, channels, progress)
    finally:
        for reader in {read.reader for _, read in items if isinstance(read, _ZipMember)}:
            reader.close()
    return torch.from_numpy(images[ok]), ok


def _image_column(features: dict, cfg: DataConfig) -> str:
    if cfg.image_column:
        if cfg.image_column not in features:
            raise DataError(f"column {cfg.image_column!r} not found; columns: {', '.join(features)}")
        return cfg.image_column
    from datasets import Image as ImageFeature

    for name, feat in features.items():
        if isinstance(feat, ImageFeature):
            return name
    for name in ("image", "img", "images", "picture"):
        if name in features:
            return name
    raise DataError(f"no image column found; columns: {', '.join(features)} (set data.image_column)")


def _from_hf(ds, cfg: DataConfig, progress: Progress) -> ImageDataset:
    """A `datasets.Dataset` -> ImageDataset, decoding each image through our own pipeline."""
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    col = _image_column(ds.features, cfg)
    if isinstance(ds.features[col], ImageFeature):
        ds = ds.cast_column(col, ImageFeature(decode=False))  # we decode (EXIF, 16-bit, alpha) ourselves
    if cfg.limit:
        ds = ds.select(range(min(cfg.limit, len(ds))))

    def raw(value):
        if isinstance(value, dict):
            return value.get("bytes") or value.get("path")
        return value

    items = [raw(v) for v in ds[col]]
    images, ok = _decode_many(items, cfg.image_size, cfg.channels, progress)
    if not ok.any():
        raise DataError(f"no readable images in column {col!r} of {cfg.path}")
    if cfg.label_column and cfg.label_column not in ds.features:
        raise DataError(f"label column {cfg.label_column!r} not found; columns: {', '.join(ds.features)}")
    label_col = cfg.label_column or ("label" if "label" in ds.features else None)
    labels, classes = None, []
    if label_col and label_col in ds.features:
        feat = ds.features[label_col]
        values = ds[label_col]
        if isinstance(feat, ClassLabel):
            classes = list(feat.names)
            labels = np.asarray(values, dtype=np.int64)
        else:
            classes = sorted({str(v) for v in values})
            index = {c: i for i, c in enumerate(classes)}
            labels = np.array([index[str(v)] for v in values], dtype=np.int64)
    return _keep_readable(images, ok, labels, classes)


def _load_parquet(cfg: DataConfig, progress: Progress) -> ImageDataset:
    import datasets

    path = Path(cfg.path).expanduser()
    files = sorted(str(p) for p in path.rglob("*.parquet")) if path.is_dir() else [str(path)]
    if not files or not Path(files[0]).exists():
        raise DataError(f"no parquet file at {cfg.path}")
    try:
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    except Exception as e:  # noqa: BLE001 - pyarrow/datasets raise many kinds
        raise DataError(f"could not read parquet {cfg.path}: {str(e).splitlines()[0]}") from None
    return _from_hf(ds, cfg, progress)


def _load_hub(cfg: DataConfig, progress: Progress) -> ImageDataset:
    """A Hub dataset id (or a local copy of a Hub dataset repo) through `datasets.load_dataset`."""
    import datasets

    local = Path(cfg.path).expanduser()
    try:
        if (local / "dataset_info.json").exists() or (local / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(local))  # a `save_to_disk` folder
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[cfg.split]
        else:
            ds = datasets.load_dataset(cfg.path, split=cfg.split)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"could not load dataset {cfg.path!r} split {cfg.split!r}: {str(e).splitlines()[0]}") from None
    return _from_hf(ds, cfg, progress)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or raw -> numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4:
        raise DataError(f"not an IDX file: {path}")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if zero != 0 or dtype_code not in dtypes:
        raise DataError(f"not an IDX file: {path}")
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, split: str, kind: str) -> Optional[Path]:
    prefix = "t10k" if split == "test" else "train"
    for p in sorted(folder.rglob(f"{prefix}-{kind}*")):
        if "idx" in p.name and p.is_file():
            return p
    return None


def _load_idx(cfg: DataConfig, progress: Progress) -> ImageDataset:
    path = Path(cfg.path).expanduser()
    if path.is_dir():
        images_file, labels_file = _find_idx(path, cfg.split, "images"), _find_idx(path, cfg.split, "labels")
        if images_file is None:
            raise DataError(f"no {cfg.split} IDX image file under {cfg.path}")
    else:
        images_file, labels_file = path, None
    arr = read_idx(images_file)
    if arr.ndim != 3:
        raise DataError(f"expected an IDX image file (N, H, W), got shape {arr.shape}")
    if cfg.limit:
        arr = arr[: cfg.limit]
    x = torch.from_numpy(np.array(arr, dtype=np.uint8))[:, None].float()
    if x.shape[-1] != cfg.image_size or x.shape[-2] != cfg.image_size:
        side = min(x.shape[-2:])
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        x = x[..., top: top + side, left: left + side]
        x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8).expand(-1, cfg.channels, -1, -1).contiguous()
    labels = None
    if labels_file is not None:
        labels = torch.from_numpy(read_idx(labels_file).astype(np.int64))[: len(images)]
    classes = FASHION_MNIST_CLASSES if "fashion" in str(path).lower() else [str(i) for i in range(10)]
    return ImageDataset(images, labels, list(classes) if labels is not None else [])


FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
LOADERS: dict[str, Callable[[DataConfig, Progress], ImageDataset]] = {
    "shapes": _load_shapes,
    "scenes": _load_scenes,
    "folder": _load_folder,
    "zip": _load_zip,
    "parquet": _load_parquet,
    "hub": _load_hub,
    "idx": _load_idx,
}


# ---------------------------------------------------------------- cache

def cache_dir(cfg: DataConfig) -> Path:
    return cache_root(cfg.cache_dir) / "datasets"


def _fingerprint(path: Optional[str]) -> list:
    """Identity of the files behind a source: path, sizes and modification times."""
    if not path:
        return []
    p = Path(path).expanduser()
    if not p.exists():
        return [path]  # a Hub id: the id itself
    files: Iterable[Path] = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return [str(p.resolve())] + [(str(q.relative_to(p)) if p.is_dir() else q.name, q.stat().st_size,
                                  q.stat().st_mtime_ns) for q in files]


def cache_key(cfg: DataConfig) -> str:
    ident = {
        "v": CACHE_VERSION, "source": cfg.source, "files": _fingerprint(cfg.path), "size": cfg.image_size,
        "channels": cfg.channels, "split": cfg.split, "limit": cfg.limit, "image_column": cfg.image_column,
        "label_column": cfg.label_column,
    }
    if cfg.source in ("shapes", "scenes"):
        ident.update(num_images=cfg.num_images, seed=cfg.seed)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _save_cache(path: Path, ds: ImageDataset) -> None:
    tensors = {"images": ds.images.contiguous()}
    if ds.labels is not None:
        tensors["labels"] = ds.labels.contiguous()
    if ds.objects is not None:
        tensors["objects"] = ds.objects.contiguous()
    meta = {"class_names": json.dumps(ds.class_names), "skipped": str(ds.skipped)}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_cache(path: Path) -> ImageDataset:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    t = load_file(str(path))
    return ImageDataset(images=t["images"], labels=t.get("labels"), objects=t.get("objects"),
                        class_names=json.loads(meta.get("class_names", "[]")),
                        skipped=int(meta.get("skipped", 0)), from_cache=True)


def load_dataset(cfg: DataConfig, progress: Progress = None, use_cache: bool = True) -> ImageDataset:
    """Decode `cfg`'s source once into uint8 (N, C, H, W); later calls read the disk cache."""
    if cfg.source not in LOADERS:
        raise DataError(f"unknown data source {cfg.source!r}; choose one of {', '.join(LOADERS)}")
    if cfg.source not in ("shapes", "scenes") and not cfg.path:
        raise DataError(f"data.source={cfg.source} needs data.path")
    path = cache_dir(cfg) / f"{cfg.source}-{cfg.image_size}px-{cfg.channels}ch-{cache_key(cfg)}.safetensors"
    if use_cache and path.exists():
        try:
            return _load_cache(path)
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt
            path.unlink(missing_ok=True)
    ds = LOADERS[cfg.source](cfg, progress)
    if use_cache:
        _save_cache(path, ds)
    return ds


def to_float(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's Tanh."""
    return batch_uint8.float().div_(127.5).sub_(1.0)


# ---------------------------------------------------------------- images for inference

def _to_uint8(arr, float_range: tuple[float, float]):
    """A numpy array of any numeric dtype -> uint8: uint8 as is, uint16 scaled, other integers
    checked to lie in 0..255, floats mapped from `float_range` to 0..255."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"integer image values must lie in 0..255, not {arr.min()}..{arr.max()}")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float_range
        return (np.clip((arr.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    raise ValueError(f"cannot read an image array of dtype {arr.dtype}")


def _split_array(arr) -> list:
    """A numpy array -> a list of single images, each (H, W) or (H, W, C)."""
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        # (H, W, C) when the last axis can be channels, else a batch (N, H, W); channels-first
        # numpy images come as (N, C, H, W) (or as torch tensors).
        return [arr] if arr.shape[-1] in (1, 3, 4) else list(arr)
    if arr.ndim == 4:
        if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
            arr = arr.transpose(0, 2, 3, 1)  # (N, C, H, W)
        return list(arr)
    raise ValueError(f"cannot read an image array of shape {arr.shape}")


def to_model_images(images, size: int, channels: int, float_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Images of any size and kind -> uint8 (N, channels, size, size), resized like training data
    (shorter side to `size`, centre crop; colour converted like the loaders do).

    Accepts one image or a list of them: PIL images, file paths, raw bytes, numpy arrays (H, W),
    (H, W, C) (C = 1, 3 or 4), (N, H, W), (N, H, W, C) or (N, C, H, W), and torch tensors (H, W),
    (C, H, W) or (N, C, H, W). Integer arrays are 0..255 (uint16: 0..65535); float values are read
    in `float_range`, by default [0, 1] for numpy arrays and [-1, 1] (the generator's range) for
    torch tensors."""
    if isinstance(images, torch.Tensor):
        x = images.detach().cpu()
        if x.dim() == 2:
            x = x[None, None]
        elif x.dim() == 3:
            x = x[None]
        if x.dim() != 4:
            raise ValueError(f"cannot read an image tensor of shape {tuple(images.shape)}")
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        arr = _to_uint8(x.numpy(), float_range or (-1.0, 1.0))
        if arr.shape[1] == channels and arr.shape[-2:] == (size, size):
            return torch.from_numpy(np.ascontiguousarray(arr))
        images = list(arr.transpose(0, 2, 3, 1))
    elif isinstance(images, np.ndarray):
        images = _split_array(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, (torch.Tensor, list, tuple)) or (isinstance(im, np.ndarray) and im.ndim == 4):
            out.append(to_model_images(im, size, channels, float_range))
            continue
        if isinstance(im, np.ndarray):
            parts = _split_array(im)
            if len(parts) != 1:
                out.append(to_model_images(im, size, channels, float_range))
                continue
            arr = _to_uint8(parts[0], float_range or (0.0, 1.0))
            im = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
        out.append(torch.from_numpy(np.array(decode_image(im, size, channels))).unsqueeze(0))
    if not out:
        return torch.empty(0, channels, size, size, dtype=torch.uint8)
    return torch.cat(out)
