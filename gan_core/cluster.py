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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import dcgan
from .augment import AugmentConfig, augment, instance_noise
from .config import ClusterConfig, DCGANConfig
from .losses import catgan_d_loss, catgan_g_loss, code_ce, d_loss_bce, g_loss_bce, iic_loss


def _border_median(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, 1): the median of each channel along the image's border."""
    edge = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], -1)
    return edge.median(-1).values[..., None, None]


def _mask_frame(x: torch.Tensor, spread: float):
    """The object mask of each image in [0, 1] (N, 1, H, W) and its frame: centre of mass (cx, cy) and the
    scale that maps the RMS radius to `spread`, in affine_grid's [-1, 1] coordinates."""
    x = x.float()
    dist = (x - _border_median(x)).pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
    m = dist / (dist.amax((2, 3), keepdim=True) + 1e-3)
    _, _, h, w = m.shape
    ys = (torch.arange(h, device=x.device) * 2 + 1) / h - 1  # pixel centres, as affine_grid places them
    xs = (torch.arange(w, device=x.device) * 2 + 1) / w - 1
    weight = m / (m.sum((2, 3), keepdim=True) + 1e-6)
    cx = (weight.sum(2) * xs).sum((1, 2))
    cy = (weight.sum(3) * ys).sum((1, 2))
    var = (weight.sum(2) * (xs - cx[:, None, None]) ** 2).sum((1, 2)) + (weight.sum(3) * (ys - cy[:, None, None]) ** 2).sum((1, 2))
    return m, cx, cy, var.clamp_min(1e-4).sqrt() / spread


def object_mask(x: torch.Tensor, spread: float = 0.45, size: Optional[int] = None) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] of one object on a flat background -> (N, 1, size, size) masks in
    [-1, 1], free of colour, polarity, position and size:
    - the mask is each pixel's colour distance from the background (the border's median colour),
      divided by the image's largest distance;
    - it is then resampled so that its centre of mass sits at the image centre and its RMS radius is
      `spread` (in units of half the image side).
    Differentiable in x (the generator learns through it)."""
    m, cx, cy, scale = _mask_frame(x, spread)
    n, _, h, w = m.shape
    zero = torch.zeros_like(scale)
    theta = torch.stack([torch.stack([scale, zero, cx], 1), torch.stack([zero, scale, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, size or h, size or w], align_corners=False)
    return F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False) * 2 - 1


def polar_mask(x: torch.Tensor, spread: float = 0.45, size: Optional[int] = None, rmax: float = 1.0) -> torch.Tensor:
    """The object mask of `object_mask` read in polar coordinates about its centre of mass: (N, 1, A, R)
    with A = R = `size` (default: the image side), in [-1, 1]. Row i is the ray at angle 2*pi*i/A
    clockwise from straight up; column j the radius (j + 0.5) / R * rmax, in the units where the RMS
    radius is `spread`. A rotation of the object is a roll of the rows, so the shape's outline (corners,
    arms, holes) becomes a pattern along each row that no orientation changes. Differentiable in x."""
    m, cx, cy, scale = _mask_frame(x, spread)
    a = r = size or m.shape[-1]
    theta = torch.arange(a, device=x.device, dtype=torch.float32) * (2 * math.pi / a)
    radius = (torch.arange(r, device=x.device, dtype=torch.float32) + 0.5) * (rmax / r)
    ux, uy = radius[None, :] * theta.sin()[:, None], -radius[None, :] * theta.cos()[:, None]  # (A, R)
    s = scale[:, None, None]
    grid = torch.stack([cx[:, None, None] + s * ux, cy[:, None, None] + s * uy], -1)  # (N, A, R, 2)
    return F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False) * 2 - 1


class AngleCircularConv(nn.Module):
    """A conv whose input is padded circularly along the rows (the angle of a polar image) and with
    zeros along the columns (the radius), so features wrap around the full turn."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.pad = tuple(conv.padding)
        conv.padding = (0, 0)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.pad
        if ph:
            x = torch.cat([x[..., -ph:, :], x, x[..., :ph, :]], -2)
        if pw:
            x = F.pad(x, (pw, pw, 0, 0))
        return self.conv(x)


INPUT_TRANSFORMS = {"mask": object_mask, "polar": polar_mask}


class ClusterDiscriminator(nn.Module):
    def __init__(self, cfg: ClusterConfig):
        super().__init__()
        self.input_transform, self.mask_size = cfg.input_transform, cfg.mask_size
        masked = cfg.input_transform in INPUT_TRANSFORMS
        base = dcgan.Discriminator(DCGANConfig(image_size=cfg.mask_size if masked else cfg.image_size,
                                               channels=1 if masked else cfg.channels, ndf=cfg.ndf))
        self.trunk = base.main[:-2]  # the seed's convs, ending at (N, ndf*mult, 4, 4)
        if cfg.input_transform == "polar":
            for i, layer in enumerate(self.trunk):
                if isinstance(layer, nn.Conv2d):
                    self.trunk[i] = AngleCircularConv(layer)
        self.adv = base.main[-2]  # Conv(ndf*mult, 1, 4, 1, 0): real/fake logit
        width = base.main[-2].in_channels * 16
        self.head_pool = cfg.head_pool
        if cfg.head_pool == "angle":  # the heads read the (N, C, 4, 4) map averaged over its angle rows
            width //= 4
        self.hidden = (nn.Sequential(nn.Linear(width, cfg.head_hidden), nn.ReLU(inplace=True))
                       if cfg.head_hidden > 0 else nn.Identity())
        width = cfg.head_hidden or width
        self.k, self.over, self.subheads = cfg.k, cfg.overcluster, cfg.subheads
        self.cluster = nn.Linear(width, cfg.subheads * cfg.k)  # all sub-heads in one matmul
        self.overcluster = nn.Linear(width, cfg.subheads * cfg.overcluster)
        # Running IIC loss per sub-head; prediction uses the lowest (no labels involved).
        self.register_buffer("head_loss", torch.zeros(cfg.subheads))
        self.view_sides = view_sides(cfg)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed input layer: the images themselves, or their object masks."""
        transform = INPUT_TRANSFORMS.get(self.input_transform)
        return transform(x, size=self.mask_size).to(x.dtype) if transform else x

    def forward(self, x: torch.Tensor, logits: bool = False, heads: bool = False):
        h = self.trunk(self.prepare(x))
        adv = self.adv(h).flatten()
        adv = adv if logits else torch.sigmoid(adv)
        if not heads:
            return adv
        f = self.hidden((h.mean(2) if self.head_pool == "angle" else h).flatten(1))
        n = f.shape[0]
        clusters = self.cluster(f).view(n, self.subheads, self.k).transpose(0, 1)  # (S, N, K)
        over = self.overcluster(f).view(n, self.subheads, self.over).transpose(0, 1)  # (S, N, O)
        return adv, clusters, over

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.prepare(x))

    def best_head(self) -> int:
        return int(self.head_loss.argmin())

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) logits of the selected sub-head."""
        _, clusters, _ = self(x, logits=True, heads=True)
        return clusters[self.best_head()]


def view_sides(cfg: ClusterConfig) -> list[float]:
    """Sides (relative to the image) of the centred crops whose predictions are averaged: from the
    whole image down to the smallest crop of the training augmentation, `predict_views` of them.
    They are views the heads were trained to agree on, so no label or test data picks them."""
    smallest = min(1.0, math.sqrt(cfg.aug_scale_min))
    n = max(1, int(cfg.predict_views))
    if cfg.input_transform in INPUT_TRANSFORMS:  # the mask is centred and scaled already; a crop could cut the object
        return [1.0]
    if n == 1 or smallest >= 1.0:
        return [1.0]
    return [1.0 - (1.0 - smallest) * i / (n - 1) for i in range(n)]


def centre_crop(x: torch.Tensor, side: float) -> torch.Tensor:
    """The centred crop of relative `side`, resampled to the input's size (bilinear)."""
    if side == 1.0:
        return x
    theta = torch.tensor([[side, 0.0, 0.0], [0.0, side, 0.0]], device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)


def build(cfg: ClusterConfig) -> tuple[nn.Module, ClusterDiscriminator]:
    g = dcgan.Generator(DCGANConfig(image_size=cfg.image_size, channels=cfg.channels, nz=cfg.nz + cfg.k,
                                    ngf=cfg.ngf))
    d = ClusterDiscriminator(cfg)
    g.apply(dcgan.weights_init)
    d.apply(dcgan.weights_init)
    return g, d


def codes_of(noise: torch.Tensor, cfg: ClusterConfig) -> torch.Tensor:
    return noise[:, cfg.nz:].flatten(1).argmax(1)


def augment_config(cfg: ClusterConfig) -> AugmentConfig:
    return AugmentConfig(crop_scale=(float(cfg.aug_scale_min), float(cfg.aug_scale_max)),
                         translate=float(cfg.aug_translate), rotate_deg=float(cfg.aug_rotate_deg),
                         aspect=float(cfg.aug_aspect), brightness=float(cfg.aug_photometric),
                         contrast=float(cfg.aug_photometric),
                         colour_remap=cfg.aug_colour == "remap")


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
    r = cfg.iic_repeats
    view = (augment(real.repeat(r, 1, 1, 1), gen, augment_config(cfg)).contiguous(memory_format=m.memory_format)
            if cfg.objective == "iic" else None)
    with _autocast(device, m.autocast_dtype):
        real_logits, real_clusters, real_over = m.D(noisy(real), logits=True, heads=True)
        fake = m.G(noise)
        fake_logits, fake_clusters, _ = m.D(noisy(fake.detach()), logits=True, heads=True)
        loss_d = d_loss_bce(real_logits, fake_logits, real_label)
        per_head = torch.zeros(cfg.subheads, device=device)
        ce = torch.zeros((), device=device)
        if cfg.objective in ("iic", "none"):
            ce = torch.stack([code_ce(fake_clusters[s], codes) for s in range(cfg.subheads)]).mean()
            loss_d = loss_d + (cfg.code_weight if cfg.code_weight_d is None else cfg.code_weight_d) * ce
        if cfg.objective == "iic":
            _, view_clusters, view_over = m.D(noisy(view), logits=True, heads=True)  # as noised as `real`
            # Each view pairs with its own clean image: the joint is estimated from r * N pairs.
            per_head = torch.stack([iic_loss(real_clusters[s].repeat(r, 1), view_clusters[s])
                                    + iic_loss(real_over[s].repeat(r, 1), view_over[s])
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
def predict_tensor(d: ClusterDiscriminator, images: torch.Tensor, batch: int = 512,
                   sides: Optional[list[float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 or [-1, 1] float images (N, C, H, W) at the model's size -> (cluster ids, probabilities).
    The probabilities are the mean over centred crops of these `sides` (default: `d.view_sides`,
    from the config's `predict_views`; `[1.0]` is the plain single-view prediction)."""
    from .data import to_float

    was_training = d.training
    d.eval()
    probs = []
    for i in range(0, len(images), batch):
        x = images[i: i + batch]
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        x = x.to(next(d.parameters()).device)
        views = [d.cluster_logits(centre_crop(x, side)).float().softmax(1) for side in sides or d.view_sides]
        probs.append(torch.stack(views).mean(0).cpu())
    d.train(was_training)
    p = torch.cat(probs)
    return p.argmax(1), p


# ---------------------------------------------------------------- classifier API

def default_names(k: int) -> list[str]:
    return [f"cluster {i}" for i in range(k)]


def _to_uint8(arr, float_range: tuple[float, float]):
    """A numpy array of any numeric dtype -> uint8: uint8 as is, uint16 scaled, other integers
    checked to lie in 0..255, floats mapped from `float_range` to 0..255."""
    import numpy as np

    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"integer image values must lie in 0..255, not {arr.min()}..{arr.max()}")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float_range
        return (np.clip((arr.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
    raise ValueError(f"cannot read an image array of dtype {arr.dtype}")


def _split_array(arr) -> list:
    """A numpy array -> a list of single images, each (H, W) or (H, W, C)."""
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        # (H, W, C) when the last axis can be channels, else a batch (N, H, W); channels-first
        # numpy images come as (N, C, H, W) (or as torch tensors).
        return [arr] if arr.shape[-1] in (1, 3, 4) else list(arr)
    if arr.ndim == 4:
        if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
            arr = arr.transpose(0, 2, 3, 1)  # (N, C, H, W)
        return list(arr)
    raise ValueError(f"cannot read an image array of shape {arr.shape}")


def to_model_images(images, size: int, channels: int, float_range: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """Images of any size and kind -> uint8 (N, channels, size, size), resized like training data
    (shorter side to `size`, centre crop; colour converted like the loaders do).

    Accepts one image or a list of them: PIL images, file paths, raw bytes, numpy arrays (H, W),
    (H, W, C) (C = 1, 3 or 4), (N, H, W), (N, H, W, C) or (N, C, H, W), and torch tensors (H, W),
    (C, H, W) or (N, C, H, W). Integer arrays are 0..255 (uint16: 0..65535); float values are read
    in `float_range`, by default [0, 1] for numpy arrays and [-1, 1] (the generator's range) for
    torch tensors."""
    import numpy as np
    from PIL import Image

    from .data import decode_image

    if isinstance(images, torch.Tensor):
        x = images.detach().cpu()
        if x.dim() == 2:
            x = x[None, None]
        elif x.dim() == 3:
            x = x[None]
        if x.dim() != 4:
            raise ValueError(f"cannot read an image tensor of shape {tuple(images.shape)}")
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        arr = _to_uint8(x.numpy(), float_range or (-1.0, 1.0))
        if arr.shape[1] == channels and arr.shape[-2:] == (size, size):
            return torch.from_numpy(np.ascontiguousarray(arr))
        images = list(arr.transpose(0, 2, 3, 1))
    elif isinstance(images, np.ndarray):
        images = _split_array(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, (torch.Tensor, list, tuple)) or (isinstance(im, np.ndarray) and im.ndim == 4):
            out.append(to_model_images(im, size, channels, float_range))
            continue
        if isinstance(im, np.ndarray):
            parts = _split_array(im)
            if len(parts) != 1:
                out.append(to_model_images(im, size, channels, float_range))
                continue
            arr = _to_uint8(parts[0], float_range or (0.0, 1.0))
            im = Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
        out.append(torch.from_numpy(np.array(decode_image(im, size, channels))).unsqueeze(0))
    if not out:
        return torch.empty(0, channels, size, size, dtype=torch.uint8)
    return torch.cat(out)


@dataclass
class Prediction:
    ids: torch.Tensor  # int64 (N,): the cluster of each image
    probs: torch.Tensor  # float (N, K): the cluster probabilities
    names: list  # the K cluster names

    def labels(self, i: int) -> dict[str, float]:
        """{cluster name: probability} for image i (what a label widget shows)."""
        return {name: float(p) for name, p in zip(self.names, self.probs[i])}

    def top(self, i: int, n: int = 3) -> list[tuple[str, float]]:
        p, idx = self.probs[i].topk(min(n, len(self.names)))
        return [(self.names[j], float(q)) for j, q in zip(idx.tolist(), p)]


UNREADABLE = "(unreadable)"


def assignment_rows(names: list[str], ok, pred: Prediction) -> list[dict]:
    """One row per input file (what Classify and scripts/classify.py write): file, cluster, confidence
    and the top 3. `ok` marks the files that were read; `pred` covers those only, in order. A file that
    could not be read gets the cluster "(unreadable)"."""
    rows, j = [], 0
    for name, good in zip(names, ok):
        if not good:
            rows.append({"file": name, "cluster": UNREADABLE, "confidence": 0.0, "top 3": ""})
            continue
        top = pred.top(j, 3)
        rows.append({"file": name, "cluster": top[0][0], "confidence": round(top[0][1], 4),
                     "top 3": ", ".join(f"{n} {p:.0%}" for n, p in top)})
        j += 1
    return rows


@dataclass
class Exemplars:
    real: torch.Tensor  # uint8 (n, C, H, W): the training images the cluster is surest of, most confident first
    confidence: torch.Tensor  # (n,): their probability of the cluster
    fake: torch.Tensor  # float [-1, 1] (n, C, H, W): generated with the cluster's code


class ClusterModel:
    """A trained `cluster` checkpoint as an image classifier with editable cluster names.

        model = ClusterModel.load("checkpoints/fashion-mnist-clusters")
        pred = model.predict([Image.open("a.png"), "b.jpg"])
        pred.ids, pred.probs, pred.labels(0)
        model.rename({3: "bags"}); model.save_names()
        ex = model.exemplars(3)  # ex.real (most confident training images), ex.fake (generated)
    """

    def __init__(self, cfg, g: nn.Module, d: ClusterDiscriminator, folder: Optional[str] = None):
        if cfg.model.kind != "cluster":
            raise ValueError(f"a {cfg.model.kind!r} model is not a cluster classifier")
        if d is None:
            raise ValueError("this checkpoint has no discriminator, so it cannot classify")
        self.cfg, self.g, self.d, self.folder = cfg, g.eval(), d.eval(), folder
        self._train_images: Optional[torch.Tensor] = None
        self._train_probs: Optional[torch.Tensor] = None

    @classmethod
    def load(cls, path_or_repo, device: str | torch.device = "cpu") -> "ClusterModel":
        from .checkpoint import load_models

        cfg, g, d, meta = load_models(path_or_repo, device)
        return cls(cfg, g, d, meta["folder"])

    @property
    def k(self) -> int:
        return self.cfg.model.k

    @property
    def names(self) -> list[str]:
        return list(self.cfg.model.cluster_names or default_names(self.k))

    def rename(self, names) -> list[str]:
        """A full list of K names, or {cluster index: name} for some; blank names fall back to the default."""
        current = self.names
        items = names.items() if isinstance(names, dict) else enumerate(names)
        if not isinstance(names, dict) and len(names) != self.k:
            raise ValueError(f"{self.k} names needed, got {len(names)}")
        for i, name in items:
            i = int(i)
            if not 0 <= i < self.k:
                raise ValueError(f"no cluster {i}: clusters are 0..{self.k - 1}")
            name = " ".join(str(name if name is not None else "").split())[:64]
            current[i] = name or default_names(self.k)[i]
        if len(set(current)) != len(current):
            raise ValueError("cluster names must differ from each other")
        self.cfg.model.cluster_names = current
        return current

    def save_names(self, folder=None) -> Path:
        """Write the names into the checkpoint's config.json (atomically), in `folder` or where it was loaded from."""
        from . import config as config_mod
        from .checkpoint import read_config, write_json

        target = Path(folder or self.folder or "")
        if not (target / "config.json").exists():
            raise ValueError(f"no checkpoint at {target} to save the names into")
        saved, meta = read_config(target)
        if saved.model.kind != "cluster" or saved.model.k != self.k:
            raise ValueError(f"{target} holds a model with other clusters; its names were not changed")
        meta.pop("folder", None)
        meta["config"]["model"]["cluster_names"] = self.names
        config_mod.validate(config_mod.from_dict(meta["config"]))
        write_json(target / "config.json", meta)
        return target

    @property
    def device(self) -> torch.device:
        return next(self.d.parameters()).device

    def predict(self, images, batch: int = 256, float_range: Optional[tuple[float, float]] = None) -> Prediction:
        """Images of any kind and size (see `to_model_images`) -> cluster ids, probabilities and names."""
        x = to_model_images(images, self.cfg.data.image_size, self.cfg.data.channels, float_range)
        if len(x) == 0:
            return Prediction(torch.empty(0, dtype=torch.long), torch.empty(0, self.k), self.names)
        ids, probs = predict_tensor(self.d, x, batch)
        return Prediction(ids, probs, self.names)

    def training_images(self, limit: int = 20000) -> torch.Tensor:
        """Up to `limit` images of the training data named in the config (read once, then kept)."""
        if self._train_images is None:
            from dataclasses import replace

            from .data import load_dataset

            self._train_images = load_dataset(replace(self.cfg.data, limit=limit)).images
        return self._train_images

    def exemplars(self, k: int, n: int = 8, images: Optional[torch.Tensor] = None, seed: int = 0) -> Exemplars:
        """For cluster k: the n images (of `images`, or of the training data) it is most confident of,
        and n generated images with code k. Raises DataError when the training data cannot be read."""
        from .latent import sample

        if not 0 <= int(k) < self.k:
            raise ValueError(f"no cluster {k}: clusters are 0..{self.k - 1}")
        if images is None:
            pool = self.training_images()
            if self._train_probs is None:
                self._train_probs = predict_tensor(self.d, pool)[1]
            probs = self._train_probs
        else:
            pool = to_model_images(images, self.cfg.data.image_size, self.cfg.data.channels)
            probs = predict_tensor(self.d, pool)[1]
        mine = (probs.argmax(1) == k).nonzero().flatten()
        conf = probs[mine, k]
        order = conf.argsort(descending=True)[:n]
        codes = torch.full((n,), int(k), dtype=torch.long)
        fake = sample(self.g, n, seed, self.cfg.model, codes).cpu()
        return Exemplars(pool[mine[order]], conf[order], fake)
