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
    """role -> module (eval mode, on `device`) for every module of a checkpoint folder: the generator
    and the discriminator (their EMA copies instead where they exist and `ema`) and the kind's extra
    modules (BlobGAN's encoder). A checkpoint without a discriminator loads without one; files that
    are no module of this kind are left alone."""
    folder = Path(folder)
    stored = set(ckpt.weight_roles(folder)) & set(kinds.known_roles(cfg))
    out = {}
    for role in (ckpt.GENERATOR, ckpt.DISCRIMINATOR):
        source = ckpt.ema_role(role) if ema and ckpt.ema_role(role) in stored else role
        if source in stored or role == ckpt.GENERATOR:  # a missing generator is an error load_weights reports
            out[role] = kinds.build_role(cfg, role)
            ckpt.load_weights(out[role], ckpt.weights_file(folder, source))
    for role in sorted(r for r in stored if ckpt.followed_role(r) == r and r not in out):
        out[role] = kinds.build_role(cfg, role)
        ckpt.load_weights(out[role], ckpt.weights_file(folder, role))
    return {role: module.to(device).eval() for role, module in out.items()}


def load_model(path_or_repo: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Model:
    """A checkpoint folder, run folder or Hub repo id -> its kind's model (`Model`, `ClusterModel`,
    `BlobModel`, ...), in eval mode on `device`. Raises CheckpointError (one line) on a bad folder."""
    folder = resolve(path_or_repo)
    cfg, meta = kinds.read_config(folder)
    kind = kinds.of(cfg)
    meta["folder"] = str(folder)
    facade = kind.facade or Model
    return facade(kind, cfg, load_modules(folder, cfg, device, ema), folder, meta)


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
           model_card: Optional[str] = None) -> Path:
    """Copy a checkpoint for shipping: every module's weights (no optimizer state), cast to `dtype`."""
    folder = resolve(src)
    cfg, meta = kinds.read_config(folder)
    modules = {}
    for role in sorted(set(ckpt.weight_roles(folder)) & set(kinds.known_roles(cfg))):
        module = kinds.build_role(cfg, role)
        ckpt.load_weights(module, ckpt.weights_file(folder, role))
        modules[role] = module
    return ckpt.write_folder(Path(dst), cfg, meta["step"], modules, metrics=meta.get("metrics"), dtype=dtype,
                             model_card=model_card)
