"""Built-in procedural datasets, seeded and file-free.

`shapes`: one object per image from 10 classes, with random colour, size, position, rotation and
background; the class label is kept for evaluation only.
`scenes`: 1-4 objects per image with per-object class, centre and box (for BlobGAN checks).
Objects are drawn with PIL at 4x resolution and downsampled, so edges are antialiased.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPE_CLASSES = (
    "circle", "triangle", "square", "pentagon", "hexagon",
    "star", "cross", "ring", "crescent", "arrow",
)
SUPERSAMPLE = 4
MAX_OBJECTS = 4


def _polygon(n: int, star: bool = False) -> np.ndarray:
    """Unit-radius regular polygon (or 5-point star) vertices, (P, 2)."""
    if star:
        angles = np.arange(2 * n) * math.pi / n
        radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.sin(angles), -radii * np.cos(angles)], 1)
    angles = np.arange(n) * 2 * math.pi / n
    return np.stack([np.sin(angles), -np.cos(angles)], 1)


_CROSS = np.array([(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1),
                   (-0.3, 1), (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)], dtype=float)
_ARROW = np.array([(0, -1), (0.8, -0.1), (0.3, -0.1), (0.3, 1), (-0.3, 1), (-0.3, -0.1), (-0.8, -0.1)],
                  dtype=float)
_OUTLINES = {
    "triangle": _polygon(3), "square": _polygon(4) * 0.92, "pentagon": _polygon(5), "hexagon": _polygon(6),
    "star": _polygon(5, star=True), "cross": _CROSS * 0.85, "arrow": _ARROW * 0.95,
}


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, angle: float,
                colour: tuple, background: tuple) -> None:
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        draw.ellipse([cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55], fill=background)
    elif name == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        ox, oy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
        draw.ellipse([cx + ox - r * 0.85, cy + oy - r * 0.85, cx + ox + r * 0.85, cy + oy + r * 0.85], fill=background)
    else:
        c, s = math.cos(angle), math.sin(angle)
        pts = _OUTLINES[name] @ np.array([[c, s], [-s, c]]) * r + (cx, cy)
        draw.polygon([tuple(p) for p in pts], fill=colour)


def _colours(rng: np.random.Generator) -> tuple[tuple, tuple]:
    """An object colour and a background colour that differ clearly in luminance or hue."""
    while True:
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if np.abs(fg.astype(int) - bg.astype(int)).sum() > 180:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)


def _finish(img: Image.Image, size: int, channels: int) -> np.ndarray:
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    if channels == 1:
        img = img.convert("L")
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def render_shapes(n: int, size: int = 64, channels: int = 3, seed: int = 0, progress=None):
    """Returns (images uint8 (n, C, size, size), labels int64 (n,))."""
    rng = np.random.default_rng(seed)
    big = size * SUPERSAMPLE
    images = np.empty((n, channels, size, size), dtype=np.uint8)
    labels = rng.integers(0, len(SHAPE_CLASSES), n)
    for i in range(n):
        fg, bg = _colours(rng)
        img = Image.new("RGB", (big, big), bg)
        r = big * rng.uniform(0.18, 0.38)
        cx, cy = rng.uniform(r, big - r, 2)
        _draw_shape(ImageDraw.Draw(img), SHAPE_CLASSES[labels[i]], cx, cy, r, rng.uniform(0, 2 * math.pi), fg, bg)
        images[i] = _finish(img, size, channels)
        if progress and i % 1000 == 999:
            progress(i + 1, n)
    return torch.from_numpy(images), torch.from_numpy(labels).long()


def render_scenes(n: int, size: int = 64, channels: int = 3, seed: int = 0, progress=None):
    """Returns (images (n, C, size, size) uint8, objects float32 (n, MAX_OBJECTS, 7)).

    objects[i, j] = (class, cx, cy, x0, y0, x1, y1) in [0, 1] image coordinates, class -1 for an
    empty slot. Objects are placed without overlapping each other's bounding circles."""
    rng = np.random.default_rng(seed)
    big = size * SUPERSAMPLE
    images = np.empty((n, channels, size, size), dtype=np.uint8)
    objects = np.full((n, MAX_OBJECTS, 7), -1.0, dtype=np.float32)
    for i in range(n):
        _, bg = _colours(rng)
        img = Image.new("RGB", (big, big), bg)
        draw = ImageDraw.Draw(img)
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            for _attempt in range(20):
                r = big * rng.uniform(0.09, 0.18)
                cx, cy = rng.uniform(r, big - r, 2)
                if all(math.hypot(cx - px, cy - py) > r + pr for px, py, pr in placed):
                    break
            else:
                continue
            while True:
                fg = tuple(int(v) for v in rng.integers(0, 256, 3))
                if sum(abs(a - b) for a, b in zip(fg, bg)) > 180:
                    break
            cls = int(rng.integers(0, len(SHAPE_CLASSES)))
            _draw_shape(draw, SHAPE_CLASSES[cls], cx, cy, r, rng.uniform(0, 2 * math.pi), fg, bg)
            objects[i, len(placed)] = (cls, cx / big, cy / big, (cx - r) / big, (cy - r) / big,
                                       (cx + r) / big, (cy + r) / big)
            placed.append((cx, cy, r))
        images[i] = _finish(img, size, channels)
        if progress and i % 1000 == 999:
            progress(i + 1, n)
    return torch.from_numpy(images), torch.from_numpy(objects)
