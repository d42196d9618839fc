"""Unsupervised classification with a GAN: the `cluster` model kind.

Generator: the seed's DCGAN generator fed [z, one_hot(c)], c ~ Uniform{0..K-1} (InfoGAN /
ClusterGAN). Discriminator: the seed's DCGAN trunk shared by the real/fake layer, K-way cluster
heads and over-clustering heads (several sub-heads each). Objective (`ClusterConfig.objective`):
- "iic": the GAN loss + IIC mutual information between the heads' outputs on a real image and an
  augmented view of it + cross-entropy of the cluster heads on generated images against their
  code (which also trains G to make its code recoverable);
- "none": the same without IIC ("ours without IIC");
- "catgan": CatGAN's entropy terms instead of IIC and the code cross-entropy.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import dcgan
from .augment import augment, instance_noise
from .config import ClusterConfig, DCGANConfig
from .losses import catgan_d_loss, catgan_g_loss, code_ce, d_loss_bce, g_loss_bce, iic_loss


class ClusterDiscriminator(nn.Module):
    def __init__(self, cfg: ClusterConfig):
        super().__init__()
        base = dcgan.Discriminator(DCGANConfig(image_size=cfg.image_size, channels=cfg.channels, ndf=cfg.ndf))
        self.trunk = base.main[:-2]  # the seed's convs, ending at (N, ndf*mult, 4, 4)
        self.adv = base.main[-2]  # Conv(ndf*mult, 1, 4, 1, 0): real/fake logit
        width = base.main[-2].in_channels * 16
        self.k, self.over, self.subheads = cfg.k, cfg.overcluster, cfg.subheads
        self.cluster = nn.Linear(width, cfg.subheads * cfg.k)  # all sub-heads in one matmul
        self.overcluster = nn.Linear(width, cfg.subheads * cfg.overcluster)
        # Running IIC loss per sub-head; prediction uses the lowest (no labels involved).
        self.register_buffer("head_loss", torch.zeros(cfg.subheads))

    def forward(self, x: torch.Tensor, logits: bool = False, heads: bool = False):
        h = self.trunk(x)
        adv = self.adv(h).flatten()
        adv = adv if logits else torch.sigmoid(adv)
        if not heads:
            return adv
        f = h.flatten(1)
        n = f.shape[0]
        clusters = self.cluster(f).view(n, self.subheads, self.k).transpose(0, 1)  # (S, N, K)
        over = self.overcluster(f).view(n, self.subheads, self.over).transpose(0, 1)  # (S, N, O)
        return adv, clusters, over

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def best_head(self) -> int:
        return int(self.head_loss.argmin())

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) logits of the selected sub-head."""
        _, clusters, _ = self(x, logits=True, heads=True)
        return clusters[self.best_head()]


def build(cfg: ClusterConfig) -> tuple[nn.Module, ClusterDiscriminator]:
    g = dcgan.Generator(DCGANConfig(image_size=cfg.image_size, channels=cfg.channels, nz=cfg.nz + cfg.k,
                                    ngf=cfg.ngf))
    d = ClusterDiscriminator(cfg)
    g.apply(dcgan.weights_init)
    d.apply(dcgan.weights_init)
    return g, d


def codes_of(noise: torch.Tensor, cfg: ClusterConfig) -> torch.Tensor:
    return noise[:, cfg.nz:].flatten(1).argmax(1)


def train_step(m, real: torch.Tensor, noise: torch.Tensor, real_label: float = 1.0, input_noise_std: float = 0.0,
               gen: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """One update of D (GAN + clustering objective) then G. `m` is gan_core.train.Models."""
    from .train import _autocast, g_update_and_metrics

    cfg: ClusterConfig = m.model_cfg
    device = real.device
    codes = codes_of(noise, cfg)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return instance_noise(x, input_noise_std, gen)

    # The augmented view is only needed by IIC; the other objectives skip the work.
    view = augment(real, gen).contiguous(memory_format=m.memory_format) if cfg.objective == "iic" else None
    with _autocast(device, m.autocast_dtype):
        real_logits, real_clusters, real_over = m.D(noisy(real), logits=True, heads=True)
        fake = m.G(noise)
        fake_logits, fake_clusters, _ = m.D(noisy(fake.detach()), logits=True, heads=True)
        loss_d = d_loss_bce(real_logits, fake_logits, real_label)
        per_head = torch.zeros(cfg.subheads, device=device)
        ce = torch.zeros((), device=device)
        if cfg.objective in ("iic", "none"):
            ce = torch.stack([code_ce(fake_clusters[s], codes) for s in range(cfg.subheads)]).mean()
            loss_d = loss_d + cfg.code_weight * ce
        if cfg.objective == "iic":
            _, view_clusters, view_over = m.D(noisy(view), logits=True, heads=True)  # as noised as `real`
            per_head = torch.stack([iic_loss(real_clusters[s], view_clusters[s]) + iic_loss(real_over[s], view_over[s])
                                    for s in range(cfg.subheads)])
            loss_d = loss_d + cfg.iic_weight * per_head.mean()
        elif cfg.objective == "catgan":
            per_head = torch.stack([catgan_d_loss(real_clusters[s], fake_clusters[s]) for s in range(cfg.subheads)])
            loss_d = loss_d + per_head.mean()
    m.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    m.opt_d.step()
    with torch.no_grad():
        m.d_core.head_loss.lerp_(per_head.detach().float(), 0.05)

    m.d_core.requires_grad_(False)
    with _autocast(device, m.autocast_dtype):
        gen_logits, gen_clusters, _ = m.d_for_g(noisy(fake), logits=True, heads=True)
        loss_g = g_loss_bce(gen_logits)
        if cfg.objective in ("iic", "none"):
            loss_g = loss_g + cfg.code_weight * torch.stack(
                [code_ce(gen_clusters[s], codes) for s in range(cfg.subheads)]).mean()
        elif cfg.objective == "catgan":
            loss_g = loss_g + torch.stack([catgan_g_loss(gen_clusters[s]) for s in range(cfg.subheads)]).mean()
    metrics = g_update_and_metrics(m, loss_d, loss_g, real_logits, fake_logits, gen_logits)
    metrics.update(cluster_loss=per_head.detach().float().min(), code_ce=ce.detach().float())
    return metrics


@torch.no_grad()
def predict_tensor(d: ClusterDiscriminator, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 or [-1, 1] float images (N, C, H, W) at the model's size -> (cluster ids, probabilities)."""
    from .data import to_float

    was_training = d.training
    d.eval()
    probs = []
    for i in range(0, len(images), batch):
        x = images[i: i + batch]
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        probs.append(d.cluster_logits(x.to(next(d.parameters()).device)).float().softmax(1).cpu())
    d.train(was_training)
    p = torch.cat(probs)
    return p.argmax(1), p
