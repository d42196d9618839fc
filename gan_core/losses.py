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


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """StyleGAN's discriminator loss softplus(-D(x)) + softplus(D(G(z))): the same BCE as above
    with hard labels, written the way R1-regularised GANs usually write it."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the mean over images of ||grad_x D(x)||^2 on real images.
    `real` must require grad and `real_logits` must come from it; the graph is kept for backward."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def iic_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """IIC (Ji et al. 2019): minus the mutual information between the cluster assignments of two
    views of the same images. logits_*: (N, K). Minimum -log K when the clusters are balanced and
    both views always agree; 0 when the assignments are independent (or all in one cluster)."""
    with torch.autocast(device_type=logits_a.device.type, enabled=False):  # entries ~1/K^2: keep fp32
        pa, pb = logits_a.float().softmax(1), logits_b.float().softmax(1)
        joint = pa.t() @ pb / pa.shape[0]  # (K, K), sums to 1
    joint = ((joint + joint.t()) / 2).clamp_min(eps)
    pi, pj = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return (joint * (pi.log() + pj.log() - joint.log())).sum()


def code_ce(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a cluster head on generated images against the categorical code they were
    generated from (InfoGAN / ClusterGAN): trains the head, and G to make its code recoverable."""
    return F.cross_entropy(logits.float(), codes)


def catgan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """CatGAN (Springenberg 2015), discriminator side: be certain on real images (low conditional
    entropy), use all classes across the batch (high marginal entropy), be uncertain on fakes."""
    pr, pf = real_logits.float().softmax(1), fake_logits.float().softmax(1)
    return _entropy(pr).mean() - _entropy(pr.mean(0, keepdim=True)).mean() - _entropy(pf).mean()


def catgan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """CatGAN, generator side: fakes classified with certainty, spread over all classes."""
    pf = fake_logits.float().softmax(1)
    return _entropy(pf).mean() - _entropy(pf.mean(0, keepdim=True)).mean()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-8).log()).sum(1)
