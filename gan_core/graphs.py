"""The whole training step as one CUDA graph: the GPU path past per-kernel launch overhead.

At batch 128 the seed DCGAN's step is a few hundred small kernels; on an H100/H200 the eager loop spends
more time launching them than running them. `StaticStep` captures one step (batch indices and noise
drawn on the device, D then G update, capturable Adam, metrics into static tensors) and replays it,
with no host synchronisation. It applies when the step is the same every time: no fp16 loss scaling
(its skip-on-overflow is host logic), constant schedules (instance noise not annealed), and a kind
whose step does not change with the step number (`Kind.graph_safe`: BlobGAN's lazy R1 does).

Randomness differs from the eager loop's: indices and noise come from the step's own device
generator (registered with the graph, so each replay advances it), seeded once by (seed, rank, first
step), not re-seeded per step, so a run that stops and resumes in this mode does not repeat the draws
of an uninterrupted one bit for bit (the eager loop does). Each StaticStep has its own generator, so
several runs in one process (`training.train_many`) never share or reseed each other's stream.

On a CPU (`capture=False`, a dry run) the same static-step code runs eagerly, so the graph path's
logic is exercised and tested where no GPU is lent.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from . import config as config_mod
from . import kinds
from .data import to_float
from .models.base import Batch, Models


def graph_blocker(cfg: config_mod.RunConfig, precision: str) -> Optional[str]:
    """Why this run's step cannot be one CUDA graph, or None when it can."""
    t = cfg.train
    if not kinds.of(cfg).graph_safe:
        return f"the {cfg.model.kind} step changes with the step number"
    if kinds.of(cfg).trained_extras(cfg.model):
        return "a module trains beside G and D (the graph captures G's and D's updates only)"
    if getattr(cfg.model, "d_blur", 0) > 0:
        return "the D-input blur (model.d_blur) changes its kernel as it fades"
    if getattr(cfg.model, "r1_gamma", 0) > 0 and getattr(cfg.model, "r1_every", 1) > 1:
        return "lazy R1 (model.r1_every > 1) runs on some steps only"
    if precision == "fp16":
        return "fp16's loss scaler decides on the host whether to step"
    if t.instance_noise > 0 and t.instance_noise_steps > 0:
        return "annealed instance noise changes every step"
    if t.compile:
        return "torch.compile and a hand-captured graph do not mix (use compile_mode=reduce-overhead)"
    return None


class StaticStep:
    """One training step with static inputs and outputs: `step()` returns the metrics dict (tensors
    that the next call overwrites). With `capture` (CUDA) it is recorded once as a CUDA graph after
    `warmup` eager steps on a side stream and replayed; without, it runs eagerly (CPU dry run)."""

    def __init__(self, cfg: config_mod.RunConfig, m: Models, images: torch.Tensor, start_step: int = 0,
                 rank: int = 0, capture: Optional[bool] = None, warmup: int = 3):
        t = cfg.train
        self.cfg, self.m, self.images = cfg, m, images
        self.device = images.device
        self.kind = kinds.of(cfg)
        self.std = t.instance_noise  # constant here (graph_blocker refuses an annealed one)
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.graph = None
        self.out: dict[str, torch.Tensor] = {}
        self.gen = torch.Generator(device=self.device)
        seed = int(np.random.SeedSequence([t.seed, rank, start_step, 1]).generate_state(1, np.uint64)[0] >> 1)
        if self.capture:
            # The warm-up steps must not count as training: every weight, buffer and optimizer state is
            # put back in place (the graph holds these very tensors) once the graph is recorded.
            saved = _snapshot(m)
            self.gen.manual_seed(seed)
            with torch.cuda.device(self.device):
                self._record(warmup)
            _restore(m, saved)
        self.gen.manual_seed(seed)  # replays read the seed and advance the offset of this generator
    def _body(self) -> dict[str, torch.Tensor]:
        t, m = self.cfg.train, self.m
        idx = torch.randint(0, self.images.shape[0], (t.batch_size,), generator=self.gen, device=self.device)
        real = to_float(self.images.index_select(0, idx)).contiguous(memory_format=m.memory_format)
        noise = self.kind.latent(self.cfg.model, t.batch_size, self.gen, self.device)
        return self.kind.train_step(m, Batch(real, noise, self.gen, 0, t.real_label, self.std))

    def _record(self, warmup: int) -> None:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(warmup):
                self._body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(self.gen)
        # this device's own capture stream; thread_local: other runs (train_many) keep working meanwhile
        with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(self.device), capture_error_mode="thread_local"):
            self.out = self._body()

    def step(self) -> dict[str, torch.Tensor]:
        if self.graph is None:
            return self._body()
        self.graph.replay()
        return self.out


def _state_tensors(m: Models) -> list[torch.Tensor]:
    out = []
    for module in m.cores().values():
        out += list(module.parameters()) + list(module.buffers())
    return out


def _snapshot(m: Models) -> dict:
    return {"tensors": [x.detach().clone() for x in _state_tensors(m)],
            "optimizers": {name: {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
                                  for p, st in opt.state.items()} for name, opt in m.optimizers().items()}}


@torch.no_grad()
def _restore(m: Models, saved: dict) -> None:
    for x, old in zip(_state_tensors(m), saved["tensors"]):
        x.copy_(old)
    for name, opt in m.optimizers().items():
        before = saved["optimizers"][name]
        for p, st in opt.state.items():
            for k, v in st.items():
                if torch.is_tensor(v):  # state created by the warm-up starts from zero, as a fresh Adam's
                    v.copy_(before[id(p)][k]) if id(p) in before else v.zero_()
