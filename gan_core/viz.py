"""Images for people: sample grids as PIL images."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C) with C in {1, 3}."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """(N, C, H, W) in [-1, 1] -> one RGB image with `nrow` images per row."""
    imgs = to_uint8(x)
    if imgs.shape[-1] == 1:
        imgs = np.repeat(imgs, 3, axis=-1)
    n, h, w, _ = imgs.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, xx = padding + r * (h + padding), padding + c * (w + padding)
        grid[y: y + h, xx: xx + w] = imgs[i]
    return Image.fromarray(grid)
