"""Measurements of generated images that need no pretrained network (none can be downloaded here).

For the built-in shapes, where every real image is one flat-coloured object on a flat background:
- `two_colour_coverage`: the fraction of pixels within a small distance of an image's two most
  common colours (real shapes ~0.95; noise or smeared blobs much lower);
- `nearest_real_distance`: mean RMS pixel distance from each generated image to its nearest real
  image (fidelity; lower is better);
- `mean_pairwise_distance`: mean RMS pixel distance between generated images (diversity; a
  collapsed generator scores near 0, real data sets the scale).

Clustering scores (`cluster_accuracy`: Hungarian-matched accuracy; `clustering_scores`: ACC, NMI,
ARI) and `match_objects`, which pairs a BlobGAN layout's blobs with a scene's objects.
"""
from __future__ import annotations

import numpy as np
import torch

from .models.blob_layout import Layout


def two_colour_coverage(images: torch.Tensor, tolerance: int = 40, bins: int = 8) -> float:
    """images: uint8 (N, C, H, W). Mean over images of the share of pixels near its two modal colours."""
    x = images.to(torch.int64)
    n, c = x.shape[:2]
    pixels = x.flatten(2).transpose(1, 2)  # (N, HW, C)
    q = pixels // (256 // bins)
    codes = (q * torch.tensor([bins**i for i in range(c)])).sum(-1)  # (N, HW)
    shares = []
    for i in range(n):
        counts = torch.bincount(codes[i], minlength=bins**c)
        top = counts.topk(2).indices
        near = torch.zeros(pixels.shape[1], dtype=torch.bool)
        for code in top:
            members = pixels[i][codes[i] == code]
            centre = members.float().mean(0)
            near |= (pixels[i].float() - centre).abs().max(-1).values <= tolerance
        shares.append(near.float().mean())
    return float(torch.stack(shares).mean())


def _flat(images: torch.Tensor) -> torch.Tensor:
    return images.float().flatten(1) / 255.0


def nearest_real_distance(generated: torch.Tensor, real: torch.Tensor) -> float:
    g, r = _flat(generated), _flat(real)
    d = torch.cdist(g, r) / g.shape[1] ** 0.5
    return float(d.min(1).values.mean())


def mean_pairwise_distance(images: torch.Tensor) -> float:
    x = _flat(images)
    d = torch.cdist(x, x) / x.shape[1] ** 0.5
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


# ---------------------------------------------------------------- clustering (labels for evaluation only)

def cluster_accuracy(labels, clusters) -> float:
    """Unsupervised classification accuracy: the best one-to-one mapping of clusters to classes
    (Hungarian matching, scipy's linear_sum_assignment), then plain accuracy."""
    from scipy.optimize import linear_sum_assignment  # here, as scikit-learn below: a slow import
    y, c = np.asarray(labels).ravel(), np.asarray(clusters).ravel()
    if y.shape != c.shape or y.size == 0:
        raise ValueError("labels and clusters must be non-empty and the same length")
    _, y_idx = np.unique(y, return_inverse=True)
    _, c_idx = np.unique(c, return_inverse=True)
    counts = np.zeros((c_idx.max() + 1, y_idx.max() + 1), dtype=np.int64)
    np.add.at(counts, (c_idx, y_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y.size)


def clustering_scores(labels, clusters) -> dict[str, float]:
    """ACC (Hungarian), NMI and ARI (scikit-learn)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "acc": cluster_accuracy(labels, clusters),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def match_objects(objects: torch.Tensor, layout: Layout) -> tuple[int, list]:
    """One image: ground-truth objects (M, 7) rows (class, cx, cy, x0, y0, x1, y1) with class -1 for
    empty slots, and its layout (batch 1). Objects and visible blobs are matched one-to-one by
    Hungarian matching on centre distance; a pair is a hit when the blob's centre lies inside the
    object's box. Returns (hits, [(object index, blob index), ...] for the matched pairs)."""
    from scipy.optimize import linear_sum_assignment
    gt = objects[objects[:, 0] >= 0].float().cpu()
    blobs = layout.visible()[0].nonzero().flatten().cpu()
    if len(gt) == 0 or len(blobs) == 0:
        return 0, []
    centres = layout.xy[0, blobs].float().cpu()
    rows, cols = linear_sum_assignment(torch.cdist(gt[:, 1:3], centres).numpy())
    hits, pairs = 0, []
    for r, c in zip(rows, cols):
        bx, by = centres[c].tolist()
        x0, y0, x1, y1 = gt[r, 3:7].tolist()
        hits += int(x0 <= bx <= x1 and y0 <= by <= y1)
        pairs.append((int(r), int(blobs[c])))
    return hits, pairs
