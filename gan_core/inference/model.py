"""`Model`: a trained checkpoint of any kind, as the app and the scripts use it."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..checkpoint import DISCRIMINATOR, GENERATOR
from ..config import RunConfig, to_dict
from ..models.base import Kind
from ..runtime import PRECISIONS, Choice, autocast, candidates, choose, device_key, time_calls, tuning_cache
from .sampler import REFINE_STEP, Sampler, check_refine_step


def recorded_refine(meta: dict) -> int:
    """The Refine-with-D steps stored in a checkpoint's config.json (`meta`) under `sampling` by
    `evaluate_samples --record`: the draw its figures were measured with (0, the plain draw, if none)."""
    return int((meta.get("sampling") or {}).get("refine", 0))


def recorded_refine_step(meta: dict) -> float:
    """The step size of the recorded draw (`sampling.refine_step`; REFINE_STEP, the size every draw used
    before it was recorded, where none is stored). A bad hand-edited value raises ValueError."""
    return check_refine_step((meta.get("sampling") or {}).get("refine_step", REFINE_STEP))


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
        self.sampler = Sampler(kind, cfg.model, self.g, d=modules.get(DISCRIMINATOR),
                               refine_step=recorded_refine_step(self.meta))
        self.runtime = Choice("fp32", False, how="default")  # how `painting()` runs G; see choose_runtime

    def choose_runtime(self, precision: str = "auto", batch: int = 16, cache: Optional[Path] = None) -> Choice:
        """Pick how the generator paints by timing it (`batch` samples) in each precision and memory
        format `precision` allows here, as training does (`gan_core.runtime.choose`; measured once per
        model config, batch and machine, then cached). Puts G in the chosen memory format."""
        if precision not in ("auto", *PRECISIONS):
            raise ValueError(f"precision must be auto, {', '.join(PRECISIONS)}, not {precision!r}")
        device = self.device
        options = candidates(precision, None, device)
        z = self.sampler.latents(batch, 0)

        def time_paint(p: str, channels_last: bool, give_up_after: float) -> float:
            self.g.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self.runtime = Choice(p, channels_last)
            with self.painting():
                return time_calls(lambda: self.sampler.generate(z), device, give_up_after=give_up_after)

        key = {"inference": to_dict(self.cfg.model), "batch": batch, "device": device_key(device)}
        choice = choose(key, options, time_paint, tuning_cache() if cache is None else cache)
        self.g.to(memory_format=choice.memory_format)
        self.runtime = choice
        return choice

    def painting(self) -> contextlib.ExitStack:
        """The context G paints in: inference mode, and autocast in the chosen precision."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast(self.device, self.runtime.dtype))
        return stack

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
    def default_refine(self) -> int:
        """Refine-with-D steps of this model's default draw: what `evaluate_samples --record` measured and
        stored under `sampling` (0, the plain draw, when nothing was stored or there is no D to refine with)."""
        return recorded_refine(self.meta) if self.sampler.can_refine else 0

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
