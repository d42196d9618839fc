"""Sampling maths for any generator: seeded latents with truncation and a categorical code,
GANSpace directions (Härkönen et al. 2020) as slider offsets, spherical interpolation, and latents
refined by the discriminator (Tanaka 2019; Che et al. 2020)."""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn

from ..models.base import Kind, generate


def first_layer(g: nn.Module) -> nn.Module:
    """The generator's first layer with weights: its activations are where the directions are found.
    A generator with a `layout_net` (BlobGAN) is read at the layout MLP's first linear layer."""
    if hasattr(g, "layout_net"):
        return next(m for m in g.layout_net.modules() if isinstance(m, nn.Linear))
    return next(m for m in g.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d, nn.Linear)))


@torch.no_grad()
def principal_directions(g: nn.Module, z: torch.Tensor, nz: int, n_dirs: int = 8,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """GANSpace for any of our generators: PCA of the first layer's activations over the latents `z`,
    carried back to the noise space by least squares (the noise that best explains each sample's PCA
    coordinates). Returns (directions (n_dirs, nz), unit length, and the standard deviation of each
    component's coordinate, in units of the noise), ordered by the variance they explain. Only the
    first `nz` entries of a latent (the noise, not a categorical code) move."""
    from sklearn.decomposition import PCA  # here: importing scikit-learn costs seconds and sets env vars

    acts = []
    hook = first_layer(g).register_forward_hook(lambda _m, _i, out: acts.append(out.detach().float().flatten(1)))
    try:
        was_training = g.training
        g.eval()
        g.layout_net(z) if hasattr(g, "layout_net") else g(z)  # a BlobGAN needs no painting here
        g.train(was_training)
    finally:
        hook.remove()
    n_dirs = min(n_dirs, nz, len(z))
    coords = PCA(n_components=n_dirs, random_state=seed).fit_transform(acts[0].cpu().numpy())  # (N, n_dirs)
    coords = torch.from_numpy(coords).float()
    z_noise = z.flatten(1)[:, :nz].float().cpu()
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


REFINE_CHUNK = 48  # latents refined together ...
REFINE_COMPANIONS = 16  # ... beside this many fixed ones (see Sampler.refine)
REFINE_SEED = 2**31 - 1  # the companions' seed
REFINE_MAX = 50  # the most steps the app and the scripts take (3.8 s for 16 shapes-dcgan images on 2 CPU threads)
REFINE_STEP = 0.01  # the step size of a model that recorded none (Sampler.refine_step)
REFINE_STEP_MAX = 0.1  # the largest step size the scripts accept (a step moves the noise by step x its gradient)


def check_refine_step(value) -> float:
    """A refinement step size as a float in (0, REFINE_STEP_MAX], or ValueError saying what is wrong."""
    try:
        step = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"a refinement step size is a number, not {value!r}") from None
    if not 0 < step <= REFINE_STEP_MAX:  # also refuses nan
        raise ValueError(f"a refinement step size is above 0 and at most {REFINE_STEP_MAX}, not {value!r}")
    return step


def batch_statistics_only(d: nn.Module) -> nn.Module:
    """A copy of `d` for refinement: eval mode, except that BatchNorm normalises by the batch (as D
    did in training, fake batches apart from real ones) without updating its running statistics."""
    d = copy.deepcopy(d).eval().requires_grad_(False)
    for mod in d.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
            mod.track_running_stats = False  # batch statistics, and the stored ones stay as they are
    return d


class Sampler:
    """Latents and images of one generator. Latents are drawn on the CPU from a seed, so a seed gives
    the same images on any device; `generate` runs G on its own device (the caller picks the
    precision context). With the checkpoint's discriminator `d`, `refine` moves latents to where D
    finds their images more real, by steps of `refine_step` unless told otherwise (a model's recorded
    draw sets it: `Model`)."""

    def __init__(self, kind: Kind, model_cfg, g: nn.Module, n_directions: int = 8, pca_samples: int = 2048,
                 d: Optional[nn.Module] = None, refine_step: float = REFINE_STEP):
        self.kind, self.model_cfg, self.g, self.d = kind, model_cfg, g, d
        self.refine_step = refine_step
        self.n_directions, self.pca_samples = n_directions, pca_samples
        self._directions: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._refiner: Optional[nn.Module] = None

    @property
    def nz(self) -> int:
        return self.model_cfg.nz

    @property
    def num_codes(self) -> int:
        return self.kind.num_codes(self.model_cfg)

    @property
    def device(self) -> torch.device:
        return next(self.g.parameters()).device

    def latents(self, n: int, seed: int, truncation: float = 1.0, code: Optional[int] = None) -> torch.Tensor:
        """(n, latent, 1, 1) on the CPU: seeded noise scaled by `truncation`, then the categorical code
        (`code` for all n, or random per image when None) for kinds that have one."""
        if code is not None and not 0 <= int(code) < max(self.num_codes, 1):
            raise ValueError(f"no code {code}: this model has {self.num_codes} codes")
        codes = torch.full((n,), int(code), dtype=torch.long) if code is not None and self.num_codes else None
        z = self.kind.seeded_latent(self.model_cfg, n, seed, "cpu", codes)
        z[:, : self.nz] *= truncation
        return z

    def directions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """GANSpace directions and their spreads (computed once per sampler)."""
        if self._directions is None:
            z = self.kind.seeded_latent(self.model_cfg, self.pca_samples, 0, self.device)
            self._directions = principal_directions(self.g, z, self.nz, self.n_directions, seed=0)
        return self._directions

    def move(self, z: torch.Tensor, alphas, raw: bool = False) -> torch.Tensor:
        """Slider offsets: `alphas[i]` standard deviations along GANSpace direction i, or with `raw`
        added to the noise entry z[i] itself. Returns a new tensor; all-zero sliders change nothing."""
        alphas = torch.as_tensor(alphas, dtype=torch.float32).flatten()
        z = z.clone()
        if alphas.abs().sum() == 0:
            return z
        if raw:
            z[:, : min(len(alphas), self.nz), 0, 0] += alphas[: self.nz]
        else:
            dirs, stds = self.directions()
            z[:, : self.nz, 0, 0] += ((alphas[: len(dirs)] * stds)[:, None] * dirs).sum(0)
        return z

    def interpolation(self, seed_a: int, seed_b: int, frames: int, truncation: float = 1.0,
                      code: Optional[int] = None) -> torch.Tensor:
        """(frames, latent, 1, 1): slerp of the noise from seed A's latent to seed B's (the code, if
        any, is seed A's)."""
        a = self.latents(1, seed_a, truncation, code)
        b = self.latents(1, seed_b, truncation, code)
        z = torch.cat([a] * frames)
        for i in range(frames):
            z[i, : self.nz, 0, 0] = slerp(a[0, : self.nz, 0, 0], b[0, : self.nz, 0, 0], i / (frames - 1))
        return z

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (float32, on G's device) from latents."""
        return generate(self.g, z.to(self.device))

    def sample(self, n: int, seed: int, truncation: float = 1.0, code: Optional[int] = None,
               refine: int = 0) -> torch.Tensor:
        """n images from a seed; `refine` > 0 refines their latents first with that many steps."""
        return self.generate(self.refine(self.latents(n, seed, truncation, code), refine))

    @property
    def can_refine(self) -> bool:
        return self.d is not None

    def refine(self, z: torch.Tensor, steps: int, step_size: Optional[float] = None) -> torch.Tensor:
        """Latents moved by `steps` of gradient descent of size `step_size` (default: `self.refine_step`)
        on E(z) = |z|^2 / 2 - D_logit(G(z)) (the Gaussian prior's energy minus D's logit: the
        discriminator-driven latent sampling of Che et al. 2020 without its noise, close to Tanaka's 2019
        discriminator optimal transport). Only the noise part moves, never a categorical code. Returns new
        latents on the CPU; `steps` <= 0 returns z.

        D normalises by batch statistics, as it did in training, so each chunk of `REFINE_CHUNK`
        latents is refined beside `REFINE_COMPANIONS` fixed seeded latents: a latent's result is
        deterministic for a given chunk and moves smoothly with it, and depends on the rest of its
        chunk only through those statistics. G paints in eval mode and fp32 here."""
        if steps <= 0:
            return z
        if self.d is None:
            raise ValueError("this checkpoint has no discriminator, so its samples cannot be refined")
        if self._refiner is None:
            self._refiner = batch_statistics_only(self.d)
        d, g, nz = self._refiner, self.g, self.nz
        step_size = self.refine_step if step_size is None else step_size
        was_training = g.training
        g.eval()
        companions = self.latents(REFINE_COMPANIONS, REFINE_SEED).to(self.device)
        out = []
        try:
            with torch.inference_mode(False), torch.enable_grad():
                for chunk in z.split(REFINE_CHUNK):
                    w = torch.cat([chunk.to(self.device), companions]).float()
                    noise, rest = w[:, :nz].clone(), w[:, nz:]
                    for _ in range(steps):
                        noise.requires_grad_(True)
                        energy = 0.5 * noise.pow(2).sum() - d(g(torch.cat([noise, rest], 1)), logits=True).float().sum()
                        grad, = torch.autograd.grad(energy, noise)
                        noise = (noise - step_size * grad).detach()
                    out.append(torch.cat([noise, rest], 1)[: len(chunk)].cpu())
        finally:
            g.train(was_training)
        return torch.cat(out).to(z.dtype)
