"""`Model`: a trained checkpoint of any kind, as the app and the scripts use it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..checkpoint import DISCRIMINATOR, GENERATOR
from ..config import RunConfig
from ..models.base import Kind
from .sampler import Sampler


class Model:
    """The networks of one checkpoint (eval mode), its config, and a `Sampler` over its generator.
    Kinds with more to offer subclass it (`ClusterModel`, `BlobModel`); `loading.load_model` picks
    the class from the registry.

        model = load_model("checkpoints/shapes-dcgan")
        images = model.sampler.sample(16, seed=0, truncation=0.8)
    """

    def __init__(self, kind: Kind, cfg: RunConfig, modules: dict[str, nn.Module], folder: Optional[str | Path] = None,
                 meta: Optional[dict] = None):
        if GENERATOR not in modules:
            raise ValueError("a model needs at least its generator")
        self.kind, self.cfg, self.modules = kind, cfg, modules
        self.folder = str(folder) if folder is not None else None
        self.meta = meta or {}
        for module in modules.values():
            module.eval()
        self.sampler = Sampler(kind, cfg.model, self.g)

    @property
    def g(self) -> nn.Module:
        return self.modules[GENERATOR]

    @property
    def d(self) -> Optional[nn.Module]:
        return self.modules.get(DISCRIMINATOR)

    @property
    def device(self) -> torch.device:
        return next(self.g.parameters()).device

    @property
    def image_size(self) -> int:
        return self.cfg.data.image_size

    @property
    def channels(self) -> int:
        return self.cfg.data.channels

    @property
    def code_names(self) -> list[str]:
        """Names of the generator's categorical codes (none for unconditional kinds)."""
        return [f"code {i}" for i in range(self.sampler.num_codes)]

    def code_index(self, name: Optional[str]) -> Optional[int]:
        """A code's index from its name; None (random codes) for None, "" or "random", and for any name
        when the generator takes no code (a code picked for another model is ignored, not an error)."""
        if name in (None, "", "random") or not self.code_names:
            return None
        if name not in self.code_names:
            raise ValueError(f"unknown code {name!r}")
        return self.code_names.index(name)
