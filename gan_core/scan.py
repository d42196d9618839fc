"""SCAN (Van Gansbeke et al. 2020) on a frozen feature extractor: the cluster kind's second stage.

After the GAN steps, the discriminator's trunk is frozen and a K-way head is fitted on its features:
1. features of every training image (up to a cap) and of `views` augmented copies of each, reduced
   by PCA (fitted on the clean features, standardised first) to the head's input width;
2. each image's `neighbours` nearest training images (cosine, in that PCA space);
3. `heads` small MLPs (PCA -> hidden -> BatchNorm -> ReLU -> K) trained at once with SCAN's loss: an
   augmented view of an image and an augmented view of one of its neighbours should fall in the same
   cluster, while the whole batch uses every cluster (entropy);
4. the head with the lowest SCAN loss on the clean images and their nearest neighbours is kept
   (a label-free choice, as in SCAN).
The standardisation and the PCA fold into one linear map, so the result is one small module
(`FittedHead`) that reads the trunk's flattened features. Nothing here sees a label.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .losses import scan_loss


@dataclass
class ScanSettings:
    heads: int = 10  # heads trained side by side; the lowest-loss one is kept
    epochs: int = 15  # passes over the images (at least; see min_updates)
    min_updates: int = 500  # small sets get more passes, so that every head takes at least this many steps
    neighbours: int = 20  # candidate neighbours per image
    views: int = 4  # augmented copies of each image whose features are kept
    entropy_weight: float = 5.0  # SCAN's weight of the cluster-usage entropy
    images: int = 60_000  # at most this many training images (evenly spaced through the set)
    batch: int = 512
    lr: float = 1e-3
    seed: int = 0


HEADS_STAGE = "heads"  # the progress stage of `fit` that counts epochs; every other stage counts images


def counts_epochs(stage: str) -> bool:
    """Whether a progress report from `fit` counts the heads' epochs rather than images (`stage` may carry a
    caller's prefix, as in "D's input layer, heads")."""
    return stage.endswith(HEADS_STAGE)


def prefixed(progress, prefix: str):
    """`progress(stage, done, total)` with each stage named "PREFIX stage" (None stays None), for a caller
    that runs `fit` more than once and must tell the runs apart."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"{prefix} {stage}", done, total)


class FittedHead(nn.Module):
    """Flattened trunk features (N, width) -> (N, K) cluster logits: a fixed linear map (standardise,
    then PCA) followed by the trained MLP. `ready` is False until a fit has filled it in, and the
    discriminator falls back on its own cluster head until then."""

    # exported in fp32 when the rest goes to fp16: where a pixel is nearly constant (a mask's background)
    # its mean's rounding, times the projection, moved predictions (0.8% of them, measured)
    keep_fp32 = ("mean",)

    def __init__(self, width: int, dims: int, hidden: int, k: int):
        super().__init__()
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("project", torch.zeros(dims, width))  # rows: PCA directions over standard deviations
        self.mlp = make_mlp(dims, hidden, k)
        self.eval()

    def train(self, mode: bool = True) -> "FittedHead":
        """Always in eval mode: the head is fitted once (by `fit`, on a copy) and never trained in place,
        so its BatchNorm keeps the fitted statistics whatever mode the discriminator is in."""
        return super().train(False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.float() - self.mean) @ self.project.t()
        return self.mlp(z)


def make_mlp(dims: int, hidden: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dims, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, k))


def pca_map(features: torch.Tensor, dims: int, seed: int = 0, fit_rows: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, W) features -> (mean (W,), map (dims, W)) such that (f - mean) @ map.T are the standardised
    features' first `dims` principal components, scaled to unit overall spread. scikit-learn's
    randomized PCA finds the directions on up to `fit_rows` rows evenly spaced through the set."""
    from sklearn.decomposition import PCA

    f = features.float()
    mean, std = f.mean(0), f.std(0)
    std = std.clamp_min(1e-4 * float(std.max()) + 1e-12)  # a (nearly) constant feature must not blow up the map
    sample = f[spaced(len(f), fit_rows)]  # the directions from a sample: 60,000 x 8,192 features would take minutes
    dims = min(dims, sample.shape[0] - 1, sample.shape[1])
    pca = PCA(dims, svd_solver="randomized", random_state=seed).fit(((sample - mean) / std).numpy())
    components = torch.from_numpy(pca.components_).float() / std  # (dims, W)
    scale = ((sample - mean) @ components.t()).std() + 1e-12
    return mean, components / scale


def nearest_neighbours(z: torch.Tensor, k: int, block: int = 2048) -> torch.Tensor:
    """(N, D) -> (N, k) indices of each row's k most similar other rows (cosine similarity)."""
    zn = F.normalize(z.float(), dim=1)
    n = len(zn)
    k = min(k, n - 1)
    out = torch.empty(n, k, dtype=torch.long)
    for i in range(0, n, block):
        sim = zn[i: i + block] @ zn.t()
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + i] = -3.0  # never its own neighbour
        out[i: i + block] = sim.topk(k, dim=1).indices
    return out


def train_heads(clean: torch.Tensor, views: torch.Tensor, neighbours: torch.Tensor, k: int, hidden: int,
                s: ScanSettings, progress: Optional[Callable[[int, int], None]] = None) -> tuple[list[nn.Module], list[float]]:
    """SCAN heads (`make_mlp`) on fixed features. clean (N, D), views (V, N, D) augmented copies,
    neighbours (N, M).
    -> (the heads, in eval mode; each head's SCAN loss on the clean images and their nearest neighbour).
    `progress(epoch, epochs)` after each epoch."""
    gen = torch.Generator().manual_seed(s.seed)
    n, dims = clean.shape
    with torch.random.fork_rng(devices=[]):  # the heads' initial weights, without touching the caller's stream
        torch.manual_seed(s.seed)
        heads = nn.ModuleList([make_mlp(dims, hidden, k) for _ in range(s.heads)])
    opt = torch.optim.Adam(heads.parameters(), lr=s.lr, weight_decay=1e-4)
    pool = torch.cat([clean[None], views])  # the clean image is one of its own views

    def view_of(idx: torch.Tensor) -> torch.Tensor:
        return pool[torch.randint(0, len(pool), (len(idx),), generator=gen), idx]

    batch = min(s.batch, n)
    epochs = epochs_for(n, batch, s)
    heads.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(0, n - batch + 1, batch):  # full batches only: BatchNorm and the entropy need a crowd
            i = order[b: b + batch]
            j = neighbours[i, torch.randint(0, neighbours.shape[1], (len(i),), generator=gen)]
            xi, xj = view_of(i), view_of(j)
            loss = torch.stack([scan_loss(h(xi), h(xj), s.entropy_weight) for h in heads]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if progress:
            progress(epoch + 1, epochs)
    heads.eval()
    with torch.no_grad():
        losses = [float(scan_loss(h(clean), h(clean[neighbours[:, 0]]), s.entropy_weight)) for h in heads]
    return list(heads), losses


def epochs_for(n: int, batch: int, s: ScanSettings) -> int:
    """Passes over n images in full batches of `batch`: `s.epochs`, or more where that many passes would
    take fewer than `s.min_updates` steps (1,797 images make 3 batches a pass, so 15 passes are 45 steps)."""
    return max(s.epochs, math.ceil(s.min_updates / max(1, n // batch)))


def spaced(n: int, cap: int) -> torch.Tensor:
    """Up to `cap` indices evenly spaced through range(n) (all of them when n <= cap)."""
    return torch.arange(n) if n <= cap else torch.linspace(0, n - 1, cap).round().long()


def fit(features: Callable[[torch.Tensor, bool], torch.Tensor], images: torch.Tensor, k: int, s: ScanSettings,
        head: FittedHead, log: Callable[[str], None] = lambda _line: None,
        progress: Optional[Callable[[str, int, int], None]] = None, chunk: int = 500) -> dict:
    """Fill `head` in. `features(batch, augmented)` gives the frozen trunk's flattened features of a
    batch of uint8 images (of an augmented copy when `augmented`). -> a small report for config.json."""
    if len(images) < 2:
        raise ValueError(f"fitting a SCAN head needs at least 2 images, not {len(images)}")
    start = time.perf_counter()
    picked = images[spaced(len(images), s.images)]
    n = len(picked)

    def run(augmented: bool, stage: str) -> torch.Tensor:
        out = []
        for i in range(0, n, chunk):
            out.append(features(picked[i: i + chunk], augmented).float().cpu())
            if progress:
                progress(stage, min(i + chunk, n), n)
        return torch.cat(out)

    clean = run(False, "features")
    mean, project = pca_map(clean, head.project.shape[0], s.seed)
    if len(project) < head.project.shape[0]:  # fewer images (or features) than PCA dimensions: pad with zeros
        project = torch.cat([project, project.new_zeros(head.project.shape[0] - len(project), project.shape[1])])
    clean = (clean - mean) @ project.t()
    views = torch.stack([(run(True, f"view {v + 1}/{s.views}") - mean) @ project.t() for v in range(s.views)]) \
        if s.views > 0 else torch.empty(0, n, clean.shape[1])
    neighbours = nearest_neighbours(clean, s.neighbours)
    epochs = epochs_for(n, min(s.batch, n), s)
    log(f"SCAN: {n} images, {clean.shape[1]} PCA dimensions, {neighbours.shape[1]} neighbours each "
        f"({time.perf_counter() - start:.0f} s for the features); {s.heads} heads x {epochs} epochs")
    heads, losses = train_heads(clean, views, neighbours, k, head.mlp[0].out_features, s,
                                (lambda e, total: progress(HEADS_STAGE, e, total)) if progress else None)
    if not any(math.isfinite(x) for x in losses):
        raise ValueError("every SCAN head ended with a non-finite loss")
    best = min(range(len(heads)), key=lambda h: (not math.isfinite(losses[h]), losses[h]))
    with torch.no_grad():
        head.mean.copy_(mean)
        head.project.copy_(project)
        head.mlp.load_state_dict(heads[best].state_dict())
        head.ready.fill_(True)
        used = torch.bincount(heads[best](clean).argmax(1), minlength=k)
    seconds = time.perf_counter() - start
    finite = [x for x in losses if math.isfinite(x)]  # never empty (checked above)
    log(f"SCAN: kept head {best} of {len(heads)} (loss {losses[best]:.3f}; all {min(finite):.3f} to "
        f"{max(finite):.3f}); cluster sizes {used.tolist()}; {seconds:.0f} s in all")
    return {"images": n, "dims": int(clean.shape[1]), "neighbours": int(neighbours.shape[1]), "heads": len(heads),
            "epochs": epochs, "kept": best, "loss": round(losses[best], 4),
            "loss_range": [round(min(finite), 4), round(max(finite), 4)], "seconds": round(seconds, 1)}
