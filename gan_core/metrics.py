"""Measurements of generated images that need no pretrained network (none can be downloaded here).

For the built-in shapes, where every real image is one flat-coloured object on a flat background:
- `two_colour_coverage`: the fraction of pixels within a small distance of an image's two most
  common colours (real shapes ~0.95; noise or smeared blobs much lower);
- `nearest_real_distance`: mean RMS pixel distance from each generated image to its nearest real
  image (fidelity; lower is better);
- `mean_pairwise_distance`: mean RMS pixel distance between generated images (diversity; a
  collapsed generator scores near 0, real data sets the scale).

Sample-quality figures in a fitted feature space (`gan_core.evaluator` supplies the features of a
small classifier trained for evaluation only; these functions take any (N, D) features):
- `frechet_distance`: FID's formula (Heusel et al. 2017) between two Gaussians fitted to the sets;
- `kernel_distance`: KID (Binkowski et al. 2018), the unbiased MMD^2 with the cubic polynomial
  kernel, averaged over random subsets;
- `precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019), k-NN balls;
- `class_coverage`: the share of each class among samples, the classes holding at least half a
  uniform share and the KL divergence from the real class distribution.

Clustering scores (`cluster_accuracy`: Hungarian-matched accuracy; `clustering_scores`: ACC, NMI,
ARI) and `match_objects`, which pairs a BlobGAN layout's blobs with a scene's objects.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

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


# ---------------------------------------------------------------- feature-space sample quality


def _features(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N >= 2, D), not {x.shape}")
    return x.astype(np.float64)


def frechet_distance(real, fake) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) for (N, D) feature sets."""
    a, b = _features(real), _features(fake)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(root).all():  # near-singular product: regularise both, as pytorch-fid does
        eps = np.eye(len(s_a)) * 1e-6
        root = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    root = np.real(root)
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root)))


def kernel_distance(real, fake, subsets: int = 50, subset_size: int = 1000, seed: int = 0) -> float:
    """KID: the mean over `subsets` random subsets of the unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3."""
    a, b = _features(real), _features(fake)
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off - 2 * kxy.mean())
    return float(np.mean(values))


def _kth_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i: i + chunk], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the row itself is at distance 0
    return torch.cat(out)


def _inside_any_ball(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i: i + chunk], centres)
        out.append((d <= radii[None, :]).any(1))
    return torch.cat(out)


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision (share of fake samples inside the real manifold: some real sample's ball
    reaching its k-th real neighbour) and recall (share of real samples inside the fake manifold)."""
    a = torch.from_numpy(_features(real)).float()
    b = torch.from_numpy(_features(fake)).float()
    if min(len(a), len(b)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    precision = _inside_any_ball(b, a, _kth_radius(a, k, chunk), chunk).float().mean()
    recall = _inside_any_ball(a, b, _kth_radius(b, k, chunk), chunk).float().mean()
    return float(precision), float(recall)


def class_coverage(ids, num_classes: int, real_ids=None) -> dict:
    """Class shares of samples given their predicted class `ids`: `shares` (one per class), `covered`
    (classes holding at least half a uniform share, 1 / (2 K)) and, with the real images' `real_ids`,
    `kl` = KL(real || samples) in nats (the samples' shares smoothed by half a count per class, so a
    missing class costs a large but finite amount). Ids of K or more (a "none of these" class) count in
    the total of `shares` but not in `kl`, which compares the class mix of the recognised samples."""
    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids).astype(np.int64)
    counts = np.bincount(ids, minlength=num_classes)[:num_classes].astype(np.float64)
    shares = counts / max(1, len(ids))
    out = {"shares": [round(float(v), 4) for v in shares],
           "covered": int((shares >= 0.5 / num_classes).sum())}
    if real_ids is not None:
        real = np.asarray(real_ids.cpu() if isinstance(real_ids, torch.Tensor) else real_ids).astype(np.int64)
        p = np.bincount(real, minlength=num_classes)[:num_classes] / max(1, len(real))
        q = (counts + 0.5) / (counts.sum() + 0.5 * num_classes)
        keep = p > 0
        out["kl"] = float((p[keep] * np.log(p[keep] / q[keep])).sum())
    return out


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
