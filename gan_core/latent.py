"""Latent codes: seeded noise and sampling from a trained generator."""
from __future__ import annotations

import torch
from torch import nn


def noise(n: int, nz: int, seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(n, nz, 1, 1) standard normal codes; the same seed always gives the same codes on any device."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, nz, 1, 1, generator=gen).to(device)


@torch.no_grad()
def sample(g: nn.Module, n: int, seed: int, nz: int) -> torch.Tensor:
    """n images in [-1, 1] from a generator in eval mode (BatchNorm uses its running statistics, so an
    image depends only on its own code, not on the rest of the batch)."""
    device = next(g.parameters()).device
    return g.eval()(noise(n, nz, seed, device)).float()
