"""Pure loss functions of discriminator logits (the sigmoid lives inside BCE-with-logits)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16, as the torch hub cache names it


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """The DCGAN tutorial's errD = BCE(D(x), 1) + BCE(D(G(z)), 0), computed from logits.
    `real_label` < 1 is one-sided label smoothing (the fake target stays 0)."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(),
                                              torch.full_like(real_logits, real_label, dtype=torch.float32))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float32))
    return real + fake


def g_loss_bce(fake_logits: torch.Tensor, keep: float = 1.0) -> torch.Tensor:
    """Non-saturating generator loss BCE(D(G(z)), 1), as in the tutorial.

    `keep` < 1 is top-k training (Sinha et al. 2020): only the ceil(keep x n) fakes D rates most real
    count, so G is not pulled by the samples that D finds worst (1: every fake, the tutorial's loss)."""
    logits = fake_logits.float().flatten()
    k = max(1, math.ceil(keep * logits.numel() - 1e-9))  # 0.07 x 100 is 7.000000000000001 in floats
    if k < logits.numel():
        logits = logits.topk(k).values
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """StyleGAN's discriminator loss softplus(-D(x)) + softplus(D(G(z))): the same BCE as above
    with hard labels, written the way R1-regularised GANs usually write it."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits.float()).mean()


def reconstruction_loss(redrawn: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a redrawing (N, C, s, s) and the image it redraws, the image first
    area-averaged to the redrawing's size (the self-supervised D's loss, FastGAN)."""
    target = image.float()
    if target.shape[-1] != redrawn.shape[-1]:
        target = F.adaptive_avg_pool2d(target, redrawn.shape[-2:])
    return F.mse_loss(redrawn.float(), target)


def latent_mmd(codes: torch.Tensor, prior: torch.Tensor, scales: tuple = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)) -> torch.Tensor:
    """The squared maximum mean discrepancy between two samples of latents (N, d) and (M, d), unbiased, with
    inverse multiquadratic kernels C / (C + |a - b|^2), C = 2 d s for each scale s, summed (WAE-MMD,
    Tolstikhin et al. 2018, whose prior is N(0, I)). 0 in expectation when both come from one distribution."""
    a, b = codes.float(), prior.float()
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    aa, bb, ab = torch.cdist(a, a).pow(2), torch.cdist(b, b).pow(2), torch.cdist(a, b).pow(2)
    total = a.new_zeros(())
    for s in scales:
        c = 2.0 * d * s
        k_aa, k_bb = c / (c + aa), c / (c + bb)
        total = total + ((k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
                         + (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1)) - 2 * (c / (c + ab)).mean())
    return total


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


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020): z1[i] and z2[i] embed two views of image i; each view must
    pick its partner out of the other 2N - 2 views by cosine similarity / temperature. (N, D) each.
    Minimum 0 when every partner is found with certainty; log(2N - 1) when the embeddings say nothing."""
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        sim = z @ z.t() / temperature
        n = z1.shape[0]
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(sim, partner)


def scan_loss(anchor_logits: torch.Tensor, neighbour_logits: torch.Tensor, entropy_weight: float = 5.0,
              eps: float = 1e-8) -> torch.Tensor:
    """SCAN (Van Gansbeke et al. 2020): each image and its nearest neighbour in feature space should
    fall in the same cluster (-log of the dot product of their cluster probabilities), while the batch
    as a whole uses every cluster (minus `entropy_weight` x the entropy of the mean prediction). (N, K) each."""
    with torch.autocast(device_type=anchor_logits.device.type, enabled=False):
        pa, pn = anchor_logits.float().softmax(1), neighbour_logits.float().softmax(1)
        consistency = -(pa * pn).sum(1).clamp_min(eps).log().mean()
        mean = pa.mean(0)
        entropy = -(mean * mean.clamp_min(eps).log()).sum()
        return consistency - entropy_weight * entropy


def nearest_in_batch(z: torch.Tensor) -> torch.Tensor:
    """For each row of `z` (N, D), the index of its most similar other row (cosine similarity)."""
    with torch.no_grad():
        zn = F.normalize(z.float(), dim=1)
        sim = (zn @ zn.t()).fill_diagonal_(-2.0)
        return sim.argmax(1)


def self_label_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float = 0.99) -> torch.Tensor:
    """SCAN's self-labelling step: where the prediction on a weakly augmented view is confident
    (max probability > `threshold`), that cluster is the target for a strongly augmented view of the
    same image; cross-entropy weighted by the inverse frequency of each target in the batch, so that
    large clusters do not swallow small ones. Zero when no prediction is confident."""
    with torch.autocast(device_type=weak_logits.device.type, enabled=False):
        probs = weak_logits.detach().float().softmax(1)
        confidence, target = probs.max(1)
        keep = confidence > threshold
        k = weak_logits.shape[1]
        counts = torch.bincount(target[keep], minlength=k).float()
        weight = torch.where(counts > 0, keep.sum().float() / (k * counts.clamp_min(1.0)), torch.zeros_like(counts))
        ce = F.cross_entropy(strong_logits.float(), target, weight=weight, reduction="none")
        return (ce * keep).sum() / (weight[target] * keep).sum().clamp_min(1e-8)


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


# ---------------------------------------------------------------- LPIPS (holds weights, so a class)

def vgg16_weights_path(explicit: Optional[str] = None) -> Optional[Path]:
    """Where the VGG16 ImageNet weights are: `explicit`, $GANLAB_VGG16, or the torch hub cache
    ($TORCH_HOME/hub/checkpoints/vgg16-397923af.pth). None when none of them exists."""
    candidates = [explicit, os.environ.get("GANLAB_VGG16"), Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018) with the VGG backbone, through the `lpips` package: its
    linear calibration layers ship in the wheel; the VGG16 ImageNet weights do not, and are loaded
    here from `backbone` (a torchvision state dict file, read with weights_only). `random_backbone`
    keeps VGG's random init: for tests of the code path only, never a reported LPIPS.
    Call with two (N, 3, H, W) batches in [-1, 1]; returns (N,) distances."""

    def __init__(self, backbone: Optional[str | Path] = None, random_backbone: bool = False):
        super().__init__()
        import warnings

        import lpips

        if backbone is None and not random_backbone:
            raise FileNotFoundError(f"LPIPS needs the VGG16 ImageNet weights ({VGG16_FILE})")
        with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" for the random VGG
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
        if backbone is not None:
            state = torch.load(backbone, map_location="cpu", weights_only=True)
            for block in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4,
                          self.net.net.slice5):
                for index, layer in block.named_children():
                    if isinstance(layer, nn.Conv2d):
                        layer.weight.data.copy_(state[f"features.{index}.weight"])
                        layer.bias.data.copy_(state[f"features.{index}.bias"])
        self.random_backbone = backbone is None
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        return self.net(x.float(), y.float()).flatten()


def load_lpips(backbone: Optional[str] = None) -> tuple[Optional[LPIPS], str]:
    """(the LPIPS module or None, one line saying which it is and why)."""
    path = vgg16_weights_path(backbone)
    if path is None:
        where = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
        return None, (f"LPIPS off: the VGG16 ImageNet weights are not at {where} (nor $GANLAB_VGG16); "
                      "the encoder trains on MSE terms only, and the checkpoint records that")
    return LPIPS(path), f"LPIPS on: VGG16 backbone from {path}"
