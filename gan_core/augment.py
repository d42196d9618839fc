"""Augmentations on image tensors, on whatever device the batch is on (no PIL, no workers).

Used by the clustering objective (IIC needs two views of each real image that share its class
but not its nuisances): random resized crop, translation, small rotation, and brightness /
contrast (plus saturation for RGB) jitter, or a random remap of each channel's range (inverting
some) where colour must not decide the class at all. No flips by default: for some classes (shoes facing
one way, digits) a mirror image is another thing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area of the crop window / the image's (above 1: zoom out)
    translate: float = 0.1  # max shift, as a fraction of the image side
    rotate_deg: float = 15.0
    aspect: float = 0.0  # log of the largest width/height stretch (0: keep the aspect ratio)
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25  # RGB only
    colour_remap: bool = False  # map each channel's [0, 1] onto a random sub-range, maybe inverted: colour is a nuisance
    flip: bool = False


def _uniform(n: int, lo: float, hi: float, gen: Optional[torch.Generator], device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def augment(x: torch.Tensor, gen: Optional[torch.Generator] = None, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """x: (N, C, H, W) in [-1, 1] -> an augmented copy, same shape, dtype and range."""
    n, c = x.shape[:2]
    dev = x.device
    scale = _uniform(n, *cfg.crop_scale, gen, dev).sqrt()  # side of the crop, relative
    angle = _uniform(n, -cfg.rotate_deg, cfg.rotate_deg, gen, dev) * math.pi / 180
    # The crop may sit anywhere inside the image (or, zooming out, anywhere around it), plus the translation.
    room = (1 - scale).abs()
    tx = _uniform(n, -1, 1, gen, dev) * room + _uniform(n, -cfg.translate, cfg.translate, gen, dev) * 2
    ty = _uniform(n, -1, 1, gen, dev) * room + _uniform(n, -cfg.translate, cfg.translate, gen, dev) * 2
    stretch = _uniform(n, -cfg.aspect, cfg.aspect, gen, dev).exp().sqrt() if cfg.aspect > 0 else torch.ones(n, device=dev)
    cos, sin = angle.cos() * scale, angle.sin() * scale
    sx = torch.where(_uniform(n, 0, 1, gen, dev) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(n, device=dev)
    theta = torch.stack([torch.stack([cos * sx * stretch, -sin / stretch, tx], 1),
                         torch.stack([sin * sx * stretch, cos / stretch, ty], 1)], 1)
    grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
    if cfg.crop_scale[1] > 1:
        # Zooming out: fill around the image with its background, the mean of its four corners
        # (repeating the border would smear an object that touches the edge into stripes).
        xf = x.float()
        bg = (xf[:, :, 0, 0] + xf[:, :, 0, -1] + xf[:, :, -1, 0] + xf[:, :, -1, -1]).div(4)[:, :, None, None]
        out = F.grid_sample(xf - bg, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False) + bg
    else:
        # Outside the image (shifts, rotations), repeat its border (backgrounds are usually flat).
        out = F.grid_sample(x.float(), grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)
    # Photometric jitter, in [0, 1] units.
    out = (out + 1) / 2
    shape = (n, 1, 1, 1)
    out = out * _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, gen, dev).view(shape)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, dev).view(shape) + mean
    if c == 3 and cfg.saturation > 0:
        gray = (0.299 * out[:, :1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
        out = (out - gray) * _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, gen, dev).view(shape) + gray
    if cfg.colour_remap:  # channel range [0, 1] -> [lo, lo + m], inverted for about half the channels
        shape_c = (n, c, 1, 1)
        m = 0.25 + 0.75 * torch.rand(shape_c, generator=gen, device=dev)
        lo = (1 - m) * torch.rand(shape_c, generator=gen, device=dev)
        flip = torch.rand(shape_c, generator=gen, device=dev) < 0.5
        v = out.clamp(0, 1)
        out = lo + m * torch.where(flip, 1 - v, v)
    return (out.clamp(0, 1) * 2 - 1).to(x.dtype)


DIFF_AUGMENT_OPS = ("color", "translation", "cutout")


def diff_augment_ops(policy: str) -> list[str]:
    """A DiffAugment policy ("color, translation,cutout") -> its ops; ValueError naming any unknown one."""
    ops = [op.strip() for op in str(policy).split(",") if op.strip()]
    unknown = set(ops) - set(DIFF_AUGMENT_OPS)
    if unknown:
        raise ValueError(f"unknown DiffAugment ops {sorted(unknown)} (known: {', '.join(DIFF_AUGMENT_OPS)})")
    return ops


def diff_augment(x: torch.Tensor, policy: str, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment, Zhao et al. 2020) of what D sees, real and fake alike,
    so D cannot memorise the training images while G still learns their distribution; gradients flow
    through to G. `policy`: comma-separated ops from DIFF_AUGMENT_OPS ("" returns x), each with its own
    random draw per image, from `gen`. x: (N, C, H, W) in [-1, 1].
    - color: brightness shift in [-0.5, 0.5], saturation scale in [0, 2], contrast scale in [0.5, 1.5];
    - translation: a shift of up to 1/8 of the side in whole pixels, the uncovered border zero;
    - cutout: a zeroed square of half the side at a random centre."""
    ops = diff_augment_ops(policy)
    n, _, h, w = x.shape
    dev, shape = x.device, (n, 1, 1, 1)
    for op in ops:
        if op == "color":
            x = x + _uniform(n, -0.5, 0.5, gen, dev).view(shape).to(x.dtype)
            mean = x.mean(1, keepdim=True)
            x = (x - mean) * _uniform(n, 0.0, 2.0, gen, dev).view(shape).to(x.dtype) + mean
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (x - mean) * _uniform(n, 0.5, 1.5, gen, dev).view(shape).to(x.dtype) + mean
        elif op == "translation":
            # Whole-pixel shifts as an index gather from a zero-padded copy (exact; gradients flow to x).
            pad_h, pad_w = max(h // 8, 1), max(w // 8, 1)
            dy = torch.randint(-pad_h, pad_h + 1, (n, 1, 1), generator=gen, device=dev)
            dx = torch.randint(-pad_w, pad_w + 1, (n, 1, 1), generator=gen, device=dev)
            rows = (torch.arange(h, device=dev).view(1, h, 1) + dy + pad_h).expand(n, h, w)
            cols = (torch.arange(w, device=dev).view(1, 1, w) + dx + pad_w).expand(n, h, w)
            padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
            flat = padded.flatten(2)  # (N, C, (H + 2 pad_h) * (W + 2 pad_w))
            index = (rows * (w + 2 * pad_w) + cols).flatten(1)[:, None, :].expand(-1, x.shape[1], -1)
            x = flat.gather(2, index).view_as(x)
        else:  # cutout
            cy = torch.randint(0, h, (n, 1, 1), generator=gen, device=dev)
            cx = torch.randint(0, w, (n, 1, 1), generator=gen, device=dev)
            rows = torch.arange(h, device=dev).view(1, h, 1)
            cols = torch.arange(w, device=dev).view(1, 1, w)
            hole = ((rows - cy).abs() < h // 4) & ((cols - cx).abs() < w // 4)  # (N, H, W)
            x = x * (~hole)[:, None].to(x.dtype)
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x blurred by a Gaussian of `sigma` pixels (separable, reflected at the border, radius 3 sigma);
    x itself when sigma <= 0. Differentiable."""
    if sigma <= 0:
        return x
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def instance_noise(x: torch.Tensor, std: float, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """x plus Gaussian noise of `std` (drawn from `gen`); x itself when std <= 0."""
    if std <= 0:
        return x
    return x + std * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def border_median(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 1, 1): the median of each channel along the image's border (the
    background colour of an image with one object on a flat background)."""
    edge = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], -1)
    return edge.median(-1).values[..., None, None]
