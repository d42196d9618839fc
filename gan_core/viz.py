"""Images for people: sample grids, blob maps and blob outlines as PIL images."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .models.blob_layout import ellipse_contour, splat


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


# A fixed palette, so blob k has the same colour in the blob map, the ellipses and the app's list.
BLOB_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
BACKGROUND_COLOUR = (40, 40, 40)


def blob_colour(k: int) -> tuple[int, int, int]:
    return BLOB_PALETTE[k % len(BLOB_PALETTE)]


def blob_map(layout, size: int = 64, scale: int = 4) -> Image.Image:
    """The first layout of a batch as soft colours: each pixel mixes the blobs' palette colours by
    their compositing weights (the background dark grey)."""
    w = splat(layout.index(0), size)[0]  # (K+1, size, size)
    colours = torch.tensor([BACKGROUND_COLOUR] + [blob_colour(k) for k in range(layout.k)], dtype=torch.float32)
    rgb = torch.einsum("khw,kc->hwc", w.float().cpu(), colours).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(rgb).resize((size * scale, size * scale), Image.NEAREST)


def draw_blobs(image: torch.Tensor, layout, scale: int = 4, labels: bool = True) -> Image.Image:
    """One image (C, H, W) in [-1, 1] with the first layout's blobs drawn over it: each visible blob's
    50%-opacity contour as a rotated ellipse in its palette colour, in slot order (back to front),
    labelled with its index near its centre (moved aside where it would cover another label)."""
    base = image_grid(image[None], nrow=1, padding=0)
    side = base.width * scale
    base = base.resize((side, side), Image.NEAREST)
    draw = ImageDraw.Draw(base)
    lay = layout.index(0)
    contours = ellipse_contour(lay, points=64)[0].cpu()  # (K, P, 2)
    shown = [k for k in range(lay.k) if bool(lay.visible()[0, k])]
    for k in shown:
        pts = [(float(x) * side, float(y) * side) for x, y in contours[k]]
        draw.line(pts + pts[:1], fill=blob_colour(k), width=max(1, scale // 2))
    if labels:
        centres = [tuple(float(v) * side for v in lay.xy[0, k].cpu()) for k in shown]
        for k, (x, y) in zip(shown, label_positions(centres, side, gap=LABEL_GAP)):
            draw.text((x, y), str(k), fill=blob_colour(k), anchor="mm", stroke_width=1, stroke_fill=(0, 0, 0))
    return base


LABEL_GAP = 14  # pixels between label centres (a digit with its outline is about 8 x 11)


def label_positions(centres: list[tuple[float, float]], side: int, gap: float = LABEL_GAP) -> list[tuple[float, float]]:
    """Where to print each label: at its centre, or the nearest spot on rings around it that is at least
    `gap` from every label placed before it and inside the picture (first come, first placed)."""
    placed: list[tuple[float, float]] = []
    margin = gap / 2

    def free(p) -> bool:
        return (margin <= p[0] <= side - margin and margin <= p[1] <= side - margin
                and all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= gap * gap for q in placed))

    for cx, cy in centres:
        spot = (min(max(cx, margin), side - margin), min(max(cy, margin), side - margin))
        if not free(spot):
            rings = ((cx + r * math.cos(a * math.pi / 6), cy + r * math.sin(a * math.pi / 6))
                     for r in (gap, 1.5 * gap, 2 * gap, 3 * gap) for a in range(12))
            spot = next((p for p in rings if free(p)), spot)  # crowded beyond that: overlap at the centre
        placed.append(spot)
    return placed
