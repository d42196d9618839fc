"""Pure loss functions of discriminator logits (the sigmoid lives inside BCE-with-logits)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """The DCGAN tutorial's errD = BCE(D(x), 1) + BCE(D(G(z)), 0), computed from logits.
    `real_label` < 1 is one-sided label smoothing (the fake target stays 0)."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(),
                                              torch.full_like(real_logits, real_label, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake


def g_loss_bce(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss BCE(D(G(z)), 1), as in the tutorial."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float32))
