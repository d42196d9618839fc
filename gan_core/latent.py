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


# ---------------------------------------------------------------- GANSpace-style directions and interpolation

def first_layer(g: nn.Module) -> nn.Module:
    """The generator's first layer with weights: its activations are where the directions are found."""
    if hasattr(g, "layout_net"):  # BlobGAN: the layout MLP's first linear layer
        return next(m for m in g.layout_net.modules() if isinstance(m, nn.Linear))
    return next(m for m in g.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d, nn.Linear)))


@torch.no_grad()
def principal_directions(g: nn.Module, model_cfg, n_dirs: int = 8, n_samples: int = 2048,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GANSpace (Härkönen et al. 2020) for any of our generators: PCA of the first layer's activations
    over `n_samples` random latents, carried back to the noise space by least squares (the noise that
    best explains each sample's PCA coordinates). Returns (directions (n_dirs, nz), unit length, and
    the standard deviation of each component's coordinate, in units of the noise), ordered by the
    variance they explain. Only the noise part of a `cluster` model's latent moves."""
    from sklearn.decomposition import PCA

    device = next(g.parameters()).device
    z = noise(model_cfg, n_samples, seed, device)
    acts = []
    hook = first_layer(g).register_forward_hook(lambda _m, _i, out: acts.append(out.detach().float().flatten(1)))
    try:
        was_training = g.training
        g.eval()
        g.layout_net(z) if hasattr(g, "layout_net") else g(z)  # a BlobGAN needs no painting here
        g.train(was_training)
    finally:
        hook.remove()
    n_dirs = min(n_dirs, model_cfg.nz, n_samples)
    coords = PCA(n_components=n_dirs, random_state=seed).fit_transform(acts[0].cpu().numpy())  # (N, n_dirs)
    coords = torch.from_numpy(coords).float()
    z_noise = z.flatten(1)[:, : model_cfg.nz].float().cpu()
    basis = torch.linalg.lstsq(coords, z_noise).solution  # (n_dirs, nz): noise ~ coords @ basis
    stds = coords.std(0) * basis.norm(dim=1)
    return basis / basis.norm(dim=1, keepdim=True).clamp_min(1e-8), stds


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two latent vectors (Gaussian noise keeps its norm)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.arccos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    if so.abs() < 1e-6:
        return (1 - t) * a + t * b
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
