"""Latent codes: seeded noise (plus the categorical code for `cluster` models) and sampling."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def latent_dim(model_cfg) -> int:
    """Size of the generator's input: nz, plus k one-hot code entries for `cluster` models."""
    return model_cfg.nz + (model_cfg.k if model_cfg.kind == "cluster" else 0)


def make_latent(model_cfg, n: int, gen: Optional[torch.Generator], device: str | torch.device = "cpu",
                codes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(n, latent_dim, 1, 1): standard normal noise, then for `cluster` models the one-hot code
    (uniform over the k codes unless `codes` is given)."""
    z = torch.randn(n, model_cfg.nz, generator=gen, device=device)
    if model_cfg.kind == "cluster":
        if codes is None:
            codes = torch.randint(0, model_cfg.k, (n,), generator=gen, device=device)
        z = torch.cat([z, F.one_hot(codes.to(z.device), model_cfg.k).float()], 1)
    return z[:, :, None, None]


def noise(model_cfg, n: int, seed: int, device: str | torch.device = "cpu",
          codes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Seeded latents; the same seed gives the same latents on any device (drawn on the CPU)."""
    return make_latent(model_cfg, n, torch.Generator().manual_seed(int(seed)), "cpu", codes).to(device)


@torch.no_grad()
def generate(g: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from `latents`, with G in eval mode (BatchNorm uses its running statistics,
    so an image depends only on its own latent, not on the rest of the batch); G's mode is restored."""
    was_training = g.training
    out = g.eval()(latents).float()
    g.train(was_training)
    return out


def sample(g: nn.Module, n: int, seed: int, model_cfg, codes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n images from seeded latents (see `noise`)."""
    return generate(g, noise(model_cfg, n, seed, next(g.parameters()).device, codes))
