"""Checkpoint folders -> models, and models -> shipped folders, through the registry and the
checkpoint table (no file name is spelled here)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Optional

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import kinds
from ..config import RunConfig
from ..hub import resolve
from .model import Model


def load_modules(folder: str | Path, cfg: RunConfig, device: str | torch.device = "cpu",
                 ema: bool = True) -> dict[str, nn.Module]:
    """role -> module (eval mode, on `device`) for every module of a checkpoint folder: the generator,
    the discriminator and the kind's extra modules (BlobGAN's encoder), each from its EMA copy instead
    where one exists and `ema`. A checkpoint without a discriminator loads without one; files that are
    no module of this kind are left alone."""
    folder = Path(folder)
    stored = set(ckpt.weight_roles(folder))
    out = {}
    for role, module in kinds.build_modules(cfg).items():
        source = ckpt.ema_role(role) if ema and ckpt.ema_role(role) in stored else role
        if source in stored or role == ckpt.GENERATOR:  # a missing generator is an error load_weights reports
            ckpt.load_weights(module, ckpt.weights_file(folder, source))
            out[role] = module.to(device).eval()
    return out


def load_model(path_or_repo: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Model:
    """A checkpoint folder, run folder or Hub repo id -> its kind's model (`Model`, `ClusterModel`,
    `BlobModel`, ...), in eval mode on `device`. Raises CheckpointError (one line) on a bad folder."""
    folder = resolve(path_or_repo)
    cfg, meta = kinds.read_config(folder)
    kind = kinds.of(cfg)
    meta["folder"] = str(folder)
    facade = kind.facade or Model
    return facade(kind, cfg, load_modules(folder, cfg, device, ema), folder, meta)


# config.json entries a shipped copy keeps: a kind's statistics, the figures recorded for the model and
# the draw they were recorded with
KEPT_ON_EXPORT = ("familiarity", "sample_quality", "sampling", "scan", "input_choice", "ema_age")


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
           model_card: Optional[str] = None) -> Path:
    """Copy a checkpoint for shipping: every module's weights (no optimizer state), cast to `dtype`."""
    folder = resolve(src)
    cfg, meta = kinds.read_config(folder)
    stored = set(ckpt.weight_roles(folder))
    modules = {}
    plain, copies = kinds.build_modules(cfg), kinds.build_modules(cfg)  # the modules, and their EMA copies
    for role in plain:
        for stored_as, module in ((role, plain[role]), (ckpt.ema_role(role), copies[role])):
            if stored_as in stored:
                ckpt.load_weights(module, ckpt.weights_file(folder, stored_as))
                modules[stored_as] = module
    kept = {key: meta[key] for key in KEPT_ON_EXPORT if key in meta}
    # a local path the run started from means nothing on another machine (the step count stays in ema_age)
    cfg = replace(cfg, train=replace(cfg.train, init_from=None))
    return ckpt.write_folder(Path(dst), cfg, meta["step"], modules, metrics=meta.get("metrics"), dtype=dtype,
                             model_card=model_card, extra=kept)


MODEL_ZIP_MAX_FILES = 64
MODEL_ZIP_MAX_RATIO = 200  # a member that inflates more than this is refused (a zip bomb)
MODEL_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
def parameter_bytes(cfg: RunConfig) -> int:
    """Bytes of every module `cfg` builds, at 2 bytes a parameter (fp16), counted without allocating
    (built on the meta device)."""
    with torch.device("meta"):
        built = kinds.build_modules(cfg)
    return 2 * sum(p.numel() for m in built.values() for p in m.parameters())


def _unpack(archive: zipfile.ZipFile, zip_path: Path, models_dir: Path, max_bytes: int, name: Optional[str],
            taken: set) -> Path:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if not members or len(members) > MODEL_ZIP_MAX_FILES:
        raise ckpt.CheckpointError(f"a checkpoint zip holds 2-{MODEL_ZIP_MAX_FILES} files, this one {len(members)}")
    parts = [PurePosixPath(m.filename.replace("\\", "/")).parts for m in members]
    if any(not p or p[0] in ("/", "..") or ".." in p or ":" in m.filename for p, m in zip(parts, members)):
        raise ckpt.CheckpointError("the zip has paths outside its folder: refused")
    if any((m.external_attr >> 16) & 0o170000 == 0o120000 for m in members):
        raise ckpt.CheckpointError("the zip holds a symbolic link: refused")
    tops = {p[0] for p in parts if len(p) > 1}
    nested = len(tops) == 1 and all(len(p) == 2 for p in parts)
    if not nested and any(len(p) != 1 for p in parts):
        raise ckpt.CheckpointError("a checkpoint zip holds the checkpoint's files, at its top or in one folder")
    wanted = {}
    for m, p in zip(members, parts):
        base = p[-1]
        if any(PurePosixPath(base).match(pat) for pat in ckpt.SHIPPED_PATTERNS):
            if m.file_size > MODEL_ZIP_MAX_RATIO * max(m.compress_size, 1) and m.file_size > 2**20:
                raise ckpt.CheckpointError(f"{base} inflates {m.file_size // max(m.compress_size, 1)}x: refused")
            if base in wanted:
                raise ckpt.CheckpointError(f"the zip holds {base} twice: refused")
            wanted[base] = m
    if ckpt.FILES["config"] not in wanted:
        raise ckpt.CheckpointError("the zip has no config.json: not a GAN Lab checkpoint")
    total = sum(m.file_size for m in wanted.values())
    if total > max_bytes:
        raise ckpt.CheckpointError(f"the checkpoint is {total / 2**20:.0f} MB; at most {max_bytes / 2**20:.0f} MB here")
    stem = MODEL_NAME.sub("-", name or (next(iter(tops)) if nested else zip_path.stem)).strip("-.")[:60] or "model"
    models_dir.mkdir(parents=True, exist_ok=True)
    target, i = models_dir / stem, 2
    while target.exists() or target.name in taken:  # never shadows a bundled or trained model
        target, i = models_dir / f"{stem}-{i}", i + 1
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}.upload-", dir=models_dir))
    try:
        for base, m in wanted.items():
            with archive.open(m) as src, open(staging / base, "wb") as dst:  # zipfile stops at the stated size
                shutil.copyfileobj(src, dst, 2**20)
        cfg, meta = kinds.read_config(staging)  # the config first: it says what would be built
        weights = sum(m.file_size for base, m in wanted.items() if base.endswith(ckpt.WEIGHTS_SUFFIX))
        if parameter_bytes(cfg) > 2 * weights + 2**20:  # a tiny config.json asking for huge networks
            raise ckpt.CheckpointError("its config describes networks far larger than its weight files: refused")
        meta[ckpt.UPLOADED] = True  # its training data is never read from this machine's disk (ckpt.training_data_readable)
        ckpt.write_json(staging / ckpt.FILES["config"], meta)
        try:
            load_model(staging)  # every weight file checked: safetensors only, shapes matched
        except ckpt.CheckpointError as e:  # (named without the staging folder's path)
            raise ckpt.CheckpointError(str(e).replace(f"{staging}{os.sep}", "").replace(str(staging), "the checkpoint")) from None
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def unpack_model_zip(zip_path: str | Path, models_dir: str | Path, max_bytes: int = 512 * 2**20,
                     name: Optional[str] = None, taken=()) -> Path:
    """A checkpoint zip (as the app's download button or `export` + zip make it: the checkpoint's files,
    at the top or in one folder) -> a new checkpoint folder under `models_dir`, checked by loading it.
    Treated as untrusted: only a checkpoint's own files (config.json, *.safetensors, README.md, *.png)
    are taken; no path leaves its folder and no link is followed; sizes, member count and inflation are
    capped; the networks its config describes must fit its weight files (checked before anything is
    built); the weights must be safetensors matching the config; it is marked "uploaded", so its
    training data is read only from a built-in or Hub source (`checkpoint.training_data_readable`). The folder is named after `name`, the zip's folder
    or its file name, made unique against the folder and `taken`. Nothing is left behind when any check
    fails. Raises CheckpointError (one line)."""
    zip_path, models_dir = Path(zip_path), Path(models_dir)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return _unpack(archive, zip_path, models_dir, max_bytes, name, set(taken))
    except ckpt.CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a hostile zip makes the readers raise: one line, refused
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ckpt.CheckpointError(f"not a usable checkpoint zip: {first}") from None
