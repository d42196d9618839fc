"""Unsupervised classification with a GAN: the `cluster` model kind.

Generator: the seed's DCGAN generator fed [z, one_hot(c)], c ~ Uniform{0..K-1} (InfoGAN /
ClusterGAN). Discriminator: the seed's DCGAN trunk shared by the real/fake layer, K-way cluster
heads and over-clustering heads (several sub-heads each). Objective (`ClusterConfig.objective`):
- "iic": the GAN loss + IIC mutual information between the heads' outputs on a real image and an
  augmented view of it + cross-entropy of the cluster heads on generated images against their
  code (which also trains G to make its code recoverable);
- "none": the same without IIC ("ours without IIC");
- "catgan": CatGAN's entropy terms instead of IIC and the code cross-entropy.

The classifier built on a trained model (names, exemplars, predictions for any image) is
`gan_core.inference.cluster.ClusterModel`; `predict_tensor` here is the network-level prediction.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AugmentConfig, augment, border_median, instance_noise
from ..checkpoint import DISCRIMINATOR, ema_role
from ..config import IMAGE_SIZES, RunConfig, check_ints, check_numbers
from ..data import to_float
from ..losses import (catgan_d_loss, catgan_g_loss, code_ce, d_loss_bce, g_loss_bce, iic_loss, nearest_in_batch,
                      nt_xent, scan_loss, self_label_loss)
from ..runtime import autocast
from ..scan import FittedHead, ScanSettings, prefixed
from ..scan import fit as scan_fit
from . import dcgan
from .base import Batch, Models, check_widths, g_update_and_metrics, generate, make_latent
from .dcgan import DCGANConfig


@dataclass
class ClusterConfig:
    """A DCGAN whose generator also takes a categorical code and whose discriminator trunk also
    feeds K-way cluster heads (plus over-clustering heads), each with a few sub-heads."""
    kind: str = "cluster"  # the model kind (model=cluster)
    image_size: int = 32  # follows data.image_size (set that one)
    channels: int = 1  # follows data.channels (set that one)
    nz: int = 64  # noise dimensions; the one-hot code (k) is appended
    ngf: int = 64  # generator width (as dcgan)
    ndf: int = 64  # discriminator trunk width (as dcgan)
    k: int = 10  # how many clusters
    overcluster: int = 50  # ~5K ways: more clusters than classes help IIC find finer structure
    subheads: int = 5  # the one with the lowest IIC loss is used for prediction
    head_hidden: int = 0  # >0: the heads read a shared hidden layer of this width (ReLU) instead of the trunk
    objective: str = "iic"  # iic | catgan | none (code cross-entropy only: "ours without IIC")
    iic_weight: float = 1.0  # weight of the IIC mutual-information term in D's loss
    iic_repeats: int = 1  # augmented views per real image for IIC (pairs: the image with each view)
    aug_rotate_deg: float = 15.0  # IIC views: rotation range (180 where orientation is a nuisance)
    aug_scale_min: float = 0.6  # IIC views: area of the random crop relative to the image ...
    aug_scale_max: float = 1.0  # ... (above 1 zooms out, so object size becomes a nuisance)
    aug_translate: float = 0.1  # IIC views: extra shift, as a fraction of the side (large: position is a nuisance)
    aug_aspect: float = 0.0  # IIC views: log of the largest width/height stretch (0: none)
    aug_photometric: float = 0.25  # IIC views: brightness and contrast jitter range (jitter mode)
    aug_colour: str = "jitter"  # IIC views: "jitter" (brightness/contrast/saturation) or "remap" (any colours)
    code_weight: float = 1.0  # cross-entropy of the cluster head on generated images vs their code (G's loss)
    code_weight_d: Optional[float] = None  # the same term in D's loss (None: code_weight); small: IIC leads
    cluster_names: Optional[list] = None  # editable, saved with the checkpoint
    # "mask": D first turns each image into its object's mask (distance from the background colour),
    # centred and scaled to a fixed spread, so colour, polarity, position and size cannot decide a
    # cluster (for one object on a flat background, like the built-in shapes). "polar": that mask read
    # along rays from its centre (rows: angle, columns: radius), so a rotation is a roll of the rows and
    # D's convs wrap around the full turn. "none": the pixels. "auto": chosen from the data when training
    # starts (`choose`: the lowest SCAN loss of a quick clustering of each input's pixels), and saved.
    input_transform: str = "auto"
    mask_size: int = 32  # with "mask"/"polar": the side of the mask D's trunk reads (taken from the full-size image)
    head_pool: str = "none"  # "angle" (with "polar"): the cluster heads see D's features averaged over angle
    predict_views: int = 3  # prediction averages the image and centred crops spanning the training crop range
    # ContraD-style (Jeong & Shin 2021) representation: D's trunk also learns, through a small projection
    # head, to tell which two augmented views come from the same real image (SimCLR's NT-Xent), so its
    # features group images by content, not only by real vs fake. 0 turns it off (no projection head).
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.2  # NT-Xent temperature
    contrastive_dim: int = 64  # the projection head's output width
    # SCAN (Van Gansbeke et al. 2020) in the batch: each real image's cluster probabilities should agree
    # with those of its nearest other image in the contrastive embedding (needs contrastive_weight > 0),
    # while the batch uses every cluster (entropy). 0: off.
    scan_weight: float = 0.0
    scan_entropy_weight: float = 5.0  # SCAN: weight of the batch's cluster-usage entropy
    # Self-labelling: a confident prediction on the real image (max probability > threshold) is the
    # class-balanced target for its augmented IIC view (needs objective=iic). 0: off.
    self_label_weight: float = 0.0
    self_label_threshold: float = 0.99  # self-labelling: the confidence a prediction needs to become a target
    # The second stage, after the GAN steps (gan_core.scan): "scan" fits a new K-way head on D's frozen
    # trunk features with SCAN (neighbours in feature space, augmented views, several heads, the
    # lowest-loss one kept), and predictions use it; "iic" keeps the heads trained with the GAN.
    head_fit: str = "scan"
    scan_heads: int = 10  # SCAN heads trained side by side; the one with the lowest SCAN loss is kept
    scan_epochs: int = 15  # passes over the training features (at least: see scan_min_updates)
    scan_min_updates: int = 500  # small sets get more passes, so that the heads take at least this many steps
    scan_neighbours: int = 20  # nearest training images (in D's feature space) each image is paired with
    scan_views: int = 4  # augmented copies of each training image (the training augmentation)
    scan_dims: int = 256  # PCA dimensions of D's features the head reads
    scan_hidden: int = 512  # the head's hidden width
    scan_images: int = 60000  # at most this many training images, evenly spaced through the set
    # The stage also fits heads on D's fixed input layer (what its first conv reads: the pixels or the
    # mask; a polar mask by the magnitude of its spectrum along the angle, as `input_pixels` gives it)
    # and keeps whichever of the two heads has the lower SCAN loss. Where the input layer already holds
    # the classes (one object on a flat background, read as a polar mask), its head wins; where D's
    # trunk has learnt more than its input shows (Fashion-MNIST, handwritten digits), the trunk's does.
    scan_input_head: bool = True


# Checkpoints written before the SCAN stage existed were trained and predict with their IIC heads.
LEGACY_DEFAULTS = {"head_fit": "iic", "input_transform": "none", "scan_input_head": False}


def validate(cfg: RunConfig) -> None:
    m = cfg.model
    check_widths(cfg)
    check_ints(("model.k", m.k, 2, 1000), ("model.overcluster", m.overcluster, 2, 10000),
               ("model.subheads", m.subheads, 1, 64), ("model.iic_repeats", m.iic_repeats, 1, 64),
               ("model.head_hidden", m.head_hidden, 0, 8192),
               ("model.predict_views", m.predict_views, 1, 16))
    check_ints(("model.contrastive_dim", m.contrastive_dim, 2, 4096))
    check_numbers(("model.scan_weight", m.scan_weight, 0.0, 100.0),
                  ("model.scan_entropy_weight", m.scan_entropy_weight, 0.0, 100.0),
                  ("model.self_label_weight", m.self_label_weight, 0.0, 100.0),
                  ("model.self_label_threshold", m.self_label_threshold, 0.0, 1.0))
    if m.scan_weight > 0 and m.contrastive_weight <= 0:
        raise ValueError("model.scan_weight finds neighbours in the contrastive embedding: set model.contrastive_weight > 0")
    if m.self_label_weight > 0 and m.objective != "iic":
        raise ValueError("model.self_label_weight teaches the augmented IIC view: it needs model.objective=iic")
    check_numbers(("model.contrastive_weight", m.contrastive_weight, 0.0, 100.0),
                  ("model.contrastive_temperature", m.contrastive_temperature, 0.01, 10.0))
    check_numbers(("model.iic_weight", m.iic_weight, 0.0, 100.0), ("model.code_weight", m.code_weight, 0.0, 100.0),
                  ("model.code_weight_d", 0.0 if m.code_weight_d is None else m.code_weight_d, 0.0, 100.0),
                  ("model.aug_rotate_deg", m.aug_rotate_deg, 0.0, 180.0),
                  ("model.aug_scale_min", m.aug_scale_min, 0.05, 4.0),
                  ("model.aug_scale_max", m.aug_scale_max, 0.05, 4.0),
                  ("model.aug_translate", m.aug_translate, 0.0, 0.5),
                  ("model.aug_aspect", m.aug_aspect, 0.0, 1.0),
                  ("model.aug_photometric", m.aug_photometric, 0.0, 0.9))
    if m.aug_scale_min > m.aug_scale_max:
        raise ValueError(f"model.aug_scale_min ({m.aug_scale_min}) is above model.aug_scale_max ({m.aug_scale_max})")
    if m.aug_colour not in ("jitter", "remap"):
        raise ValueError(f"model.aug_colour must be jitter or remap, not {m.aug_colour!r}")
    if m.head_fit not in ("scan", "iic"):
        raise ValueError(f"model.head_fit must be scan or iic, not {m.head_fit!r}")
    check_ints(("model.scan_heads", m.scan_heads, 1, 64), ("model.scan_epochs", m.scan_epochs, 1, 1000),
               ("model.scan_min_updates", m.scan_min_updates, 0, 1_000_000),
               ("model.scan_neighbours", m.scan_neighbours, 1, 200), ("model.scan_views", m.scan_views, 0, 32),
               ("model.scan_dims", m.scan_dims, 2, 4096), ("model.scan_hidden", m.scan_hidden, 2, 8192),
               ("model.scan_images", m.scan_images, 16, 10_000_000))
    if m.input_transform not in ("auto",) + INPUTS:
        raise ValueError(f"model.input_transform must be auto, none, mask or polar, not {m.input_transform!r}")
    if m.head_pool not in ("none", "angle") or (m.head_pool == "angle" and m.input_transform != "polar"):
        raise ValueError(f"model.head_pool must be none, or angle with input_transform=polar, not {m.head_pool!r}")
    if m.input_transform != "none" and m.mask_size not in IMAGE_SIZES:
        raise ValueError(f"model.mask_size must be one of {IMAGE_SIZES}, not {m.mask_size!r}")
    if m.objective not in ("iic", "catgan", "none"):
        raise ValueError(f"model.objective must be iic, catgan or none, not {m.objective!r}")
    if m.cluster_names is not None and len(m.cluster_names) != m.k:
        raise ValueError(f"model.cluster_names needs {m.k} names, got {len(m.cluster_names)}")


def check_run(cfg: RunConfig, images: int, world: int) -> None:
    if images < cfg.model.k:
        raise ValueError(f"K = {cfg.model.k} clusters need at least {cfg.model.k} images; the dataset has {images}")


def num_codes(model_cfg: ClusterConfig) -> int:
    return model_cfg.k


def unused_parameters(model_cfg: ClusterConfig) -> bool:
    """Without IIC the over-clustering heads get no gradient (and the contrastive pass skips the heads),
    and the SCAN heads (fitted after the steps) never do; DDP must be told to expect that."""
    return model_cfg.objective != "iic" or model_cfg.contrastive_weight > 0 or model_cfg.head_fit == "scan"


def _mask_frame(x: torch.Tensor, spread: float):
    """The object mask of each image in [0, 1] (N, 1, H, W) and its frame: centre of mass (cx, cy) and the
    scale that maps the RMS radius to `spread`, in affine_grid's [-1, 1] coordinates."""
    x = x.float()
    dist = (x - border_median(x)).pow(2).sum(1, keepdim=True).add(1e-8).sqrt()
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
INPUTS = ("none",) + tuple(INPUT_TRANSFORMS)  # what model.input_transform=auto chooses among
INPUT_NAMES = {"none": "the pixels", "auto": "the pixels", "mask": "the object mask", "polar": "the polar mask"}


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
        # the contrastive projection reads the trunk's features (what the cluster heads read before `hidden`)
        self.project = (nn.Sequential(nn.Linear(width, 256), nn.ReLU(inplace=True), nn.Linear(256, cfg.contrastive_dim))
                        if cfg.contrastive_weight > 0 else None)
        self.hidden = (nn.Sequential(nn.Linear(width, cfg.head_hidden), nn.ReLU(inplace=True))
                       if cfg.head_hidden > 0 else nn.Identity())
        width = cfg.head_hidden or width
        self.k, self.over, self.subheads = cfg.k, cfg.overcluster, cfg.subheads
        self.cluster = nn.Linear(width, cfg.subheads * cfg.k)  # all sub-heads in one matmul
        self.overcluster = nn.Linear(width, cfg.subheads * cfg.overcluster)
        # Running IIC loss per sub-head; prediction uses the lowest (no labels involved).
        self.register_buffer("head_loss", torch.zeros(cfg.subheads))
        self.view_sides = view_sides(cfg)
        # The SCAN head of the second stage (filled in after the GAN steps; never trained by them)
        # (built on a side RNG stream, so D's initial weights are the same with head_fit=scan or iic; it is
        # no part of any training forward, so D's optimizer never moves it)
        with torch.random.fork_rng(devices=[]):
            self.fitted = (FittedHead(self.adv.in_channels * 16, cfg.scan_dims, cfg.scan_hidden, cfg.k)
                           if cfg.head_fit == "scan" else None)
            # the same on the input layer (scan_input_head): the stage keeps one of the two ready
            self.fitted_input = None
            if cfg.head_fit == "scan" and cfg.scan_input_head:
                blank = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size)
                width = self.input_layer(blank).shape[1]
                self.fitted_input = FittedHead(width, min(cfg.scan_dims, width), cfg.scan_hidden, cfg.k)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed input layer: the images themselves, or their object masks."""
        transform = INPUT_TRANSFORMS.get(self.input_transform)
        return transform(x, size=self.mask_size).to(x.dtype) if transform else x

    def forward(self, x: torch.Tensor, logits: bool = False, heads: bool = False, project: bool = False):
        h = self.trunk(self.prepare(x))
        if project:  # (N, contrastive_dim) embeddings for the contrastive term only
            return self.project((h.mean(2) if self.head_pool == "angle" else h).flatten(1))
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

    def input_layer(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F): the fixed input layer as the input-layer SCAN head reads it (`input_pixels`)."""
        transform = self.input_transform if self.input_transform in INPUT_TRANSFORMS else "none"  # (auto: built as none)
        return input_pixels(x, transform, self.mask_size)

    def best_head(self) -> int:
        return int(self.head_loss.argmin())

    def fitted_head(self) -> Optional[str]:
        """Which fitted SCAN head predicts: "trunk", "input" or None (none is fitted)."""
        if self.fitted_input is not None and bool(self.fitted_input.ready):
            return "input"
        return "trunk" if self.fitted is not None and bool(self.fitted.ready) else None

    def uses_fitted_head(self) -> bool:
        return self.fitted_head() is not None

    def head_name(self) -> str:
        """Which head predicts, in words (for reports)."""
        which = self.fitted_head()
        if which == "input":
            return f"SCAN head on D's input layer ({INPUT_NAMES[self.input_transform]})"
        return "SCAN head on D's features" if which == "trunk" else f"cluster head {self.best_head()}"

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) logits of the head that predicts: the fitted SCAN head once fitted, else the selected
        sub-head of the heads trained with the GAN."""
        which = self.fitted_head()
        if which == "input":
            return self.fitted_input(self.input_layer(x).to(self.fitted_input.mean.dtype))
        if which == "trunk":
            return self.fitted(self.features(x).flatten(1))
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
    """(G, D), initialised. input_transform=auto builds as "none" (training chooses before it builds, so
    only a model built outside training, for a size estimate or a test, ever reads auto)."""
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


def train_step(m: Models, b: Batch) -> dict[str, torch.Tensor]:
    """One update of D (GAN + clustering objective) then G."""
    cfg: ClusterConfig = m.model_cfg
    real, noise, gen, real_label = b.real, b.noise, b.gen, b.real_label
    device = real.device
    codes = codes_of(noise, cfg)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return instance_noise(x, b.input_noise_std, gen)

    # The augmented view is only needed by IIC; the other objectives skip the work.
    r = cfg.iic_repeats
    view = (augment(real.repeat(r, 1, 1, 1), gen, augment_config(cfg)).contiguous(memory_format=m.memory_format)
            if cfg.objective == "iic" else None)
    with autocast(device, m.autocast_dtype):
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
        if cfg.contrastive_weight > 0:  # two more augmented views of each real image, one D pass for both
            n = real.shape[0]
            pair = augment(real.repeat(2, 1, 1, 1), gen, augment_config(cfg)).contiguous(memory_format=m.memory_format)
            z = m.D(noisy(pair), project=True)
            contrastive = nt_xent(z[:n], z[n:], cfg.contrastive_temperature)
            loss_d = loss_d + cfg.contrastive_weight * contrastive
            if cfg.scan_weight > 0:
                near = nearest_in_batch(z[:n])
                scan = torch.stack([scan_loss(real_clusters[s], real_clusters[s][near], cfg.scan_entropy_weight)
                                    for s in range(cfg.subheads)]).mean()
                loss_d = loss_d + cfg.scan_weight * scan
        if cfg.self_label_weight > 0:  # objective=iic: `view` holds r augmented views of each real image
            labelled = torch.stack([self_label_loss(real_clusters[s].repeat(r, 1), view_clusters[s],
                                                    cfg.self_label_threshold) for s in range(cfg.subheads)]).mean()
            loss_d = loss_d + cfg.self_label_weight * labelled
    m.update(m.opt_d, loss_d)
    with torch.no_grad():
        m.d_core.head_loss.lerp_(per_head.detach().float(), 0.05)

    m.d_core.requires_grad_(False)
    with autocast(device, m.autocast_dtype):
        gen_logits, gen_clusters, _ = m.d_for_g(noisy(fake), logits=True, heads=True)
        loss_g = g_loss_bce(gen_logits)
        if cfg.objective in ("iic", "none"):
            loss_g = loss_g + cfg.code_weight * torch.stack(
                [code_ce(gen_clusters[s], codes) for s in range(cfg.subheads)]).mean()
        elif cfg.objective == "catgan":
            loss_g = loss_g + torch.stack([catgan_g_loss(gen_clusters[s]) for s in range(cfg.subheads)]).mean()
    metrics = g_update_and_metrics(m, loss_d, loss_g, real_logits, fake_logits, gen_logits)
    metrics.update(cluster_loss=per_head.detach().float().min(), code_ce=ce.detach().float())
    if cfg.contrastive_weight > 0:
        metrics["contrastive"] = contrastive.detach().float()
    if cfg.scan_weight > 0:
        metrics["scan"] = scan.detach().float()
    if cfg.self_label_weight > 0:
        metrics["self_label"] = labelled.detach().float()
    return metrics


def scan_settings(cfg: ClusterConfig, seed: int = 0) -> ScanSettings:
    return ScanSettings(heads=cfg.scan_heads, epochs=cfg.scan_epochs, min_updates=cfg.scan_min_updates,
                        neighbours=cfg.scan_neighbours,
                        views=cfg.scan_views, entropy_weight=cfg.scan_entropy_weight, images=cfg.scan_images, seed=seed)


def view_reader(layer: Callable[[torch.Tensor], torch.Tensor], device, seed: int, acfg: AugmentConfig,
                autocast_dtype: Optional[torch.dtype] = None) -> Callable[[torch.Tensor, bool], torch.Tensor]:
    """`features(batch, augmented)` for `scan.fit`: `layer` of a uint8 batch (of an augmented copy, the
    training augmentation, when `augmented`), flattened to float rows; its own seeded random stream."""
    gen = torch.Generator(device=device).manual_seed(seed)

    @torch.no_grad()
    def features(batch: torch.Tensor, augmented: bool) -> torch.Tensor:
        x = to_float(batch.to(device))
        if augmented:
            x = augment(x, gen, acfg)
        with autocast(device, autocast_dtype):
            return layer(x).flatten(1).float()
    return features


def fit_head(d: ClusterDiscriminator, images: torch.Tensor, cfg: ClusterConfig, seed: int = 0,
             autocast_dtype: Optional[torch.dtype] = None, log=lambda _line: None, progress=None,
             g: Optional[nn.Module] = None) -> dict:
    """The second stage: fit `d.fitted` with SCAN on `d`'s frozen trunk features of `images` (uint8,
    (N, C, H, W), on any device) and of augmented copies (the training augmentation), and `d.fitted_input`
    (where there is one) the same way on D's input layer; the head with the lower SCAN loss is kept (no
    label involved). With the generator `g`, its clusters are then numbered after g's codes
    (`align_to_codes`). -> the report (of the trunk's head, with "layer": the kept one, and "input_layer":
    the other head's report)."""
    if d.fitted is None:
        raise ValueError("this discriminator has no SCAN head (model.head_fit is not scan)")
    device = next(d.parameters()).device
    acfg = augment_config(cfg)
    was_training = d.training
    d.eval()

    try:
        report = scan_fit(view_reader(d.features, device, seed, acfg, autocast_dtype), images, cfg.k,
                          scan_settings(cfg, seed), d.fitted, log, progress)
        if d.fitted_input is not None:
            log("SCAN: and a head on D's input layer, for comparison")
            try:
                other = scan_fit(view_reader(d.input_layer, device, seed, acfg), images, cfg.k,
                                 scan_settings(cfg, seed), d.fitted_input, log, prefixed(progress, "D's input layer,"))
            except (ValueError, RuntimeError, MemoryError) as e:  # the trunk's head stands
                log(f"SCAN: the input layer's head failed ({type(e).__name__}: {e}); keeping the trunk's")
                other = {"error": f"{type(e).__name__}: {e}"}
            layer = "input" if other.get("loss", math.inf) < report["loss"] else "trunk"
            (d.fitted if layer == "input" else d.fitted_input).ready.fill_(False)
            report.update(layer=layer, input_layer=other)
            if "loss" in other:
                log(f"SCAN: predicting with the head on D's {'input layer' if layer == 'input' else 'features'} "
                    f"(loss {min(report['loss'], other['loss']):.3f}, against {max(report['loss'], other['loss']):.3f})")
    finally:
        d.train(was_training)
    if g is not None:
        report["code_agreement"] = round(align_to_codes(d, g, cfg, seed=seed), 4)
        log(f"SCAN: clusters numbered after the generator's codes ({report['code_agreement']:.0%} of generated "
            "images fall in their code's cluster)")
    return report


CHOICE_IMAGES = 5000  # training images (evenly spaced) the input is chosen on
CHOICE_SIDE = 32  # the pixels (and masks) are compared at this side at most
# A mask is chosen only when its loss beats the pixels' by this much: the masks assume one object on a
# flat background, so they need clear evidence. (Measured: where a mask fits, the built-in shapes and
# Fashion-MNIST, it wins by 0.2-0.45; where it does not, handwritten digits, the losses of the pixels and
# the polar mask are within 0.02 of each other, and either may win on a given seed.)
CHOICE_MARGIN = 0.1


def input_pixels(x: torch.Tensor, transform: str, mask_size: int) -> torch.Tensor:
    """[-1, 1] images -> (N, F) what D's first layer would read with `transform`, at most CHOICE_SIDE
    pixels a side; a polar mask by its spectrum along the angle (a rotation only rolls its rows, so
    the spectrum's magnitude ignores it, as D's angle-circular convs with rotated views learn to)."""
    if transform != "none":
        x = INPUT_TRANSFORMS[transform](x, size=min(mask_size, CHOICE_SIDE))
    elif x.shape[-1] > CHOICE_SIDE:
        x = F.adaptive_avg_pool2d(x, CHOICE_SIDE)
    if transform == "polar":
        x = torch.fft.rfft(x, dim=2).abs()
    return x.flatten(1).float()


def choose(cfg: RunConfig, images: torch.Tensor, saved=None, log=lambda _line: None, progress=None) -> tuple[dict, dict]:
    """Kind hook, before anything is built: model.input_transform=auto becomes none, mask or polar. Each
    input's pixels (of up to CHOICE_IMAGES training images, and of augmented copies: the training
    augmentation) are clustered into K by a few quick SCAN heads, and the input whose best head has the
    lowest SCAN loss wins: the one under which augmented views and their nearest neighbours agree best
    while every cluster is used; a mask must beat the pixels by CHOICE_MARGIN. Label-free. A resumed run
    (or one started from another's weights) keeps that run's choice, and its cluster names unless new
    ones are given. -> (model config values, {"input_choice": the losses} for config.json)."""
    m: ClusterConfig = cfg.model
    if saved is not None and isinstance(saved[0].model, ClusterConfig):  # resumed: as the run started
        saved_model, meta = saved[0].model, saved[1]
        record = {"input_choice": meta["input_choice"]} if "input_choice" in meta else {}
        names = ({"cluster_names": saved_model.cluster_names}
                 if m.cluster_names is None and saved_model.cluster_names is not None else {})
        if m.input_transform == "auto":
            return {"input_transform": saved_model.input_transform, **names}, record
        return names, record if m.input_transform == saved_model.input_transform else {}
    if m.input_transform != "auto" or saved is not None:  # (another kind's checkpoint: resume says so)
        return {}, {}
    import time

    start_t = time.perf_counter()
    acfg = augment_config(m)
    settings = ScanSettings(heads=5, epochs=15, min_updates=300, neighbours=m.scan_neighbours, views=2,
                            entropy_weight=m.scan_entropy_weight, images=CHOICE_IMAGES, seed=cfg.train.seed)
    losses = {}
    for transform in INPUTS:
        features = view_reader(lambda x, t=transform: input_pixels(x, t, m.mask_size), images.device, cfg.train.seed, acfg)
        width = features(images[:1], False).shape[1]
        report = scan_fit(features, images, m.k, settings, FittedHead(width, 128, 256, m.k),
                          progress=prefixed(progress, f"input {transform}:"))
        losses[transform] = report["loss"]
    best = min(INPUTS, key=lambda t: losses[t])
    if losses[best] > losses["none"] - CHOICE_MARGIN:
        best = "none"
    seconds = time.perf_counter() - start_t
    log(f"input: {best} (by the SCAN loss of a quick clustering of {report['images']:,} images' pixels, lower is better: "
        + ", ".join(f"{t} {v:.3f}" for t, v in losses.items()) + f"; {seconds:.0f} s)")
    return {"input_transform": best}, {"input_choice": {"chosen": best, "losses": losses, "images": report["images"],
                                                        "seconds": round(seconds, 1)}}


@torch.no_grad()
def start(model_cfg: ClusterConfig, m: Models) -> None:
    """Kind hook, before the first step of a run with steps to go: a SCAN head fitted on the trunk as it
    was stops predicting (its features move on with training) until `finish` fits it again."""
    for d in (m.d_core, m.ema.get(DISCRIMINATOR)):
        for head in (d.fitted, d.fitted_input) if d is not None else ():
            if head is not None:
                head.ready.fill_(False)


@torch.no_grad()
def align_to_codes(d: ClusterDiscriminator, g: nn.Module, cfg: ClusterConfig, per_code: int = 100,
                   seed: int = 0) -> float:
    """Renumber the fitted head's clusters so that cluster c is the one the generator's code c draws
    most into (images drawn per code, classified by the head, codes and clusters matched one to one by
    the Hungarian method), so a cluster's generated exemplars and the Sample tab's code show that
    cluster. Label-free. -> the share of generated images the matched cluster takes."""
    from scipy.optimize import linear_sum_assignment

    device = next(d.parameters()).device
    codes = torch.arange(cfg.k, device=device).repeat_interleave(per_code)
    gen = torch.Generator(device=device).manual_seed(seed)
    images = torch.cat([generate(g, make_latent(cfg.nz, cfg.k, len(c), gen, device, c))
                        for c in codes.split(1000)])
    ids, _ = predict_tensor(d, images, sides=[1.0])
    counts = torch.zeros(cfg.k, cfg.k)
    counts.index_put_((codes.cpu(), ids), torch.ones(len(ids)), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)  # code rows[i] <-> cluster cols[i]
    order = torch.as_tensor(cols[rows.argsort()], device=device)  # new cluster c = old cluster order[c]
    last = (d.fitted_input if d.fitted_head() == "input" else d.fitted).mlp[-1]
    last.weight.copy_(last.weight[order])
    last.bias.copy_(last.bias[order])
    return float(counts[rows, cols].sum() / counts.sum())


def finish(cfg: RunConfig, m: Models, images: torch.Tensor, log=lambda _line: None, progress=None) -> dict:
    """Kind hook, after the last training step: the SCAN head is fitted on the discriminator that
    inference uses (the EMA copy where one is kept) and copied into the live one, so both agree.
    -> entries for the final checkpoint's config.json."""
    model_cfg: ClusterConfig = cfg.model
    d = m.ema.get(DISCRIMINATOR, m.d_core)
    if model_cfg.head_fit != "scan" or d.uses_fitted_head():  # (fitted already: a finished run resumed)
        return {}
    report = fit_head(d, images, model_cfg, cfg.train.seed, m.autocast_dtype, log, progress, m.sampling_generator())
    for other in (m.d_core, m.ema.get(DISCRIMINATOR)):
        if other is not None and other is not d:
            copy_fitted(d, other)
    return {"scan": report}


@torch.no_grad()
def copy_fitted(source: ClusterDiscriminator, target: ClusterDiscriminator) -> None:
    """The fitted SCAN heads of `source` into `target` (the live D and its EMA copy agree after a fit)."""
    target.fitted.load_state_dict(source.fitted.state_dict())
    if source.fitted_input is not None:
        target.fitted_input.load_state_dict(source.fitted_input.state_dict())


@torch.no_grad()
def predict_tensor(d: ClusterDiscriminator, images: torch.Tensor, batch: int = 512,
                   sides: Optional[list[float]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 or [-1, 1] float images (N, C, H, W) at the model's size -> (cluster ids, probabilities).
    The probabilities are the mean over centred crops of these `sides` (default: `d.view_sides`,
    from the config's `predict_views`; `[1.0]` is the plain single-view prediction)."""
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


# ---------------------------------------------------------------- familiarity: "does this image look like the training data?"
# The cluster heads' softmax says 100% for noise or a screenshot as readily as for a real image, so a
# prediction also gets a familiarity score: the cosine similarity of D's trunk features to the nearest
# cluster's mean training features. The threshold is the score that 99% of held-out training images reach
# (their lowest 1% fall below it, by construction); images under it are shown as "unsure".
FAMILIARITY_IMAGES = 2000  # training images used: half for the cluster means, half for the threshold
FAMILIARITY_QUANTILE = 0.01  # share of held-out training images that fall below the threshold


def familiarity_features(d: ClusterDiscriminator, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """uint8 or [-1, 1] images -> (N, F) unit-length, flattened trunk features (float32, on the CPU)."""
    was_training = d.training
    d.eval()
    device = next(d.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i: i + batch]
            x = (to_float(x) if x.dtype == torch.uint8 else x.float()).to(device)
            out.append(F.normalize(d.features(x).float().flatten(1), dim=1).cpu())
    d.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def familiarity_scores(d: ClusterDiscriminator, images: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N,) cosine similarity of each image's features to the nearest cluster mean (1: typical)."""
    return (familiarity_features(d, images) @ centroids.float().T).max(1).values


def fit_familiarity(d: ClusterDiscriminator, images: torch.Tensor, n: int = FAMILIARITY_IMAGES,
                    quantile: float = FAMILIARITY_QUANTILE) -> tuple[torch.Tensor, float]:
    """Training images -> (K unit cluster means of their features, the threshold). Up to `n` images,
    evenly spaced through the set (deterministic); the even ones give the means (grouped by predicted
    cluster), the odd ones the threshold, so the threshold is measured on images the means never saw."""
    if len(images) < 4:
        raise ValueError(f"familiarity needs at least 4 training images, not {len(images)}")
    picked = images[torch.linspace(0, len(images) - 1, min(n, len(images))).long().to(images.device)]
    fit, held = picked[0::2], picked[1::2]
    feats = familiarity_features(d, fit)
    ids, _ = predict_tensor(d, fit)
    k = d.k
    centroids = torch.zeros(k, feats.shape[1])
    centroids.index_add_(0, ids, feats)  # an empty cluster keeps a zero mean: never the nearest
    centroids = F.normalize(centroids, dim=1)
    threshold = float(familiarity_scores(d, held, centroids).quantile(quantile))
    return centroids, threshold


def encode_tensor(t: torch.Tensor) -> dict:
    """A small tensor -> JSON (fp16 bytes in base64; config.json carries it with the weights)."""
    return {"shape": list(t.shape), "fp16_base64": base64.b64encode(t.half().numpy().tobytes()).decode()}


def decode_tensor(obj: dict) -> torch.Tensor:
    data = np.frombuffer(base64.b64decode(obj["fp16_base64"]), dtype=np.float16)
    return torch.from_numpy(data.copy()).float().view(*obj["shape"])


def familiarity_record(d: ClusterDiscriminator, images: torch.Tensor) -> dict:
    """What a checkpoint keeps in its config.json under "familiarity"."""
    centroids, threshold = fit_familiarity(d, images)
    return {"centroids": encode_tensor(centroids), "threshold": round(threshold, 5),
            "quantile": FAMILIARITY_QUANTILE, "images": min(len(images), FAMILIARITY_IMAGES)}


def checkpoint_meta(model_cfg: ClusterConfig, modules: dict, images: torch.Tensor) -> dict:
    """Kind hook, at every save: the familiarity statistics of the discriminator inference will use
    (the EMA copy where one is kept), fitted on the run's training images."""
    d = modules.get(ema_role(DISCRIMINATOR), modules.get(DISCRIMINATOR))
    return {"familiarity": familiarity_record(d, images)} if d is not None and len(images) >= 4 else {}
