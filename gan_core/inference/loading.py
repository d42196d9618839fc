"""Checkpoint folders -> models, and models -> shipped folders, through the registry and the
checkpoint table (no file name is spelled here)."""
from __future__ import annotations

from pathlib import Path
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


# config.json entries a shipped copy keeps: a kind's statistics and the figures recorded for the model
KEPT_ON_EXPORT = ("familiarity", "sample_quality")


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
    return ckpt.write_folder(Path(dst), cfg, meta["step"], modules, metrics=meta.get("metrics"), dtype=dtype,
                             model_card=model_card, extra=kept)
