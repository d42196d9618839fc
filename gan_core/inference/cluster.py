"""The `cluster` kind as an image classifier: `ClusterModel` (predict, names, exemplars), its
`Prediction`, and the per-file assignment rows that Classify and `scripts/classify.py` share."""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, TextIO

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import RunConfig, build_dataclass
from ..data import DataError, decode_items, load_dataset, to_model_images
from ..models.base import Kind
from ..models.cluster import (FAMILIARITY_IMAGES, decode_tensor, familiarity_features, familiarity_record,
                              familiarity_scores, predict_tensor)
from .model import Model


def default_names(k: int) -> list[str]:
    return [f"cluster {i}" for i in range(k)]


@dataclass
class Prediction:
    ids: torch.Tensor  # int64 (N,): the cluster of each image
    probs: torch.Tensor  # float (N, K): the cluster probabilities
    names: list  # the K cluster names
    # How much each image looks like the training images (cosine similarity of D's features to the
    # nearest cluster's mean) and the score 99% of held-out training images reach; None where the
    # checkpoint has no familiarity statistics.
    familiarity: Optional[torch.Tensor] = None
    threshold: Optional[float] = None

    def unsure(self, i: int) -> bool:
        """Image i looks unlike the training images (its probabilities then mean little)."""
        return self.familiarity is not None and float(self.familiarity[i]) < self.threshold

    def labels(self, i: int) -> dict[str, float]:
        """{cluster name: probability} for image i (what a label widget shows)."""
        return {name: float(p) for name, p in zip(self.names, self.probs[i])}

    def top(self, i: int, n: int = 3) -> list[tuple[str, float]]:
        p, idx = self.probs[i].topk(min(n, len(self.names)))
        return [(self.names[j], float(q)) for j, q in zip(idx.tolist(), p)]


UNREADABLE = "(unreadable)"
UNSURE = "(unsure)"
ROW_FIELDS = ["file", "cluster", "confidence", "top 3"]


def assignment_rows(names: list[str], ok, pred: Prediction) -> list[dict]:
    """One row per input file (what Classify and scripts/classify.py write): file, cluster, confidence
    and the top 3. `ok` marks the files that were read; `pred` covers those only, in order. A file that
    could not be read gets the cluster "(unreadable)"; one unlike the training images gets "(unsure)"
    (its top 3 are still listed)."""
    rows, j = [], 0
    for name, good in zip(names, ok):
        if not good:
            rows.append({"file": name, "cluster": UNREADABLE, "confidence": 0.0, "top 3": ""})
            continue
        top = pred.top(j, 3)
        rows.append({"file": name, "cluster": UNSURE if pred.unsure(j) else top[0][0], "confidence": round(top[0][1], 4),
                     "top 3": ", ".join(f"{n} {p:.0%}" for n, p in top)})
        j += 1
    return rows


def skipped_rows(skipped: list[tuple[str, str]]) -> list[dict]:
    """Rows, in `assignment_rows`' form, for files left out of an upload ([(name, why)], as
    `data.upload_items` lists them): listed, never dropped without a word."""
    return [{"file": name, "cluster": f"(skipped: {why})", "confidence": 0.0, "top 3": ""} for name, why in skipped]


# Exemplars are the most confident of this many training images (500 a cluster at K = 10): scoring them
# takes a few seconds on a CPU, where all 20,000 took 20 s (1 thread, 3 views).
EXEMPLAR_POOL = 5000


@dataclass
class Exemplars:
    real: torch.Tensor  # uint8 (n, C, H, W): the training images the cluster is surest of, most confident first
    confidence: torch.Tensor  # (n,): their probability of the cluster
    fake: torch.Tensor  # float [-1, 1] (n, C, H, W): generated with the cluster's code


class ClusterModel(Model):
    """A trained `cluster` checkpoint as an image classifier with editable cluster names.

        model = load_model("checkpoints/fashion-mnist-clusters")   # a ClusterModel
        pred = model.predict([Image.open("a.png"), "b.jpg"])
        pred.ids, pred.probs, pred.labels(0)
        model.rename({3: "bags"}); model.save_names()
        ex = model.exemplars(3)  # ex.real (most confident training images), ex.fake (generated)
    """

    def __init__(self, kind: Kind, cfg: RunConfig, modules: dict[str, nn.Module], folder=None, meta=None):
        if modules.get(ckpt.DISCRIMINATOR) is None:
            raise ValueError("this checkpoint has no discriminator, so it cannot classify")
        if not hasattr(modules[ckpt.DISCRIMINATOR], "cluster_logits"):
            raise ValueError(f"a {cfg.model.kind!r} model is not a cluster classifier")
        super().__init__(kind, cfg, modules, folder, meta)
        self._train_images: Optional[torch.Tensor] = None
        self._train_probs: Optional[torch.Tensor] = None

    @property
    def k(self) -> int:
        return self.cfg.model.k

    @property
    def names(self) -> list[str]:
        return list(self.cfg.model.cluster_names or default_names(self.k))

    @property
    def code_names(self) -> list[str]:
        """The generator's code i draws cluster i: the codes carry the cluster names."""
        return self.names

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
        target = Path(folder or self.folder or "")
        if not (target / ckpt.FILES["config"]).exists():
            raise ValueError(f"no checkpoint at {target} to save the names into")
        meta = ckpt.read_meta(target)
        saved = dict(meta["config"].get("model", {}))
        if saved.get("kind") != self.cfg.model.kind or saved.get("k") != self.k:
            raise ValueError(f"{target} holds a model with other clusters; its names were not changed")
        saved["cluster_names"] = self.names
        model_cfg = build_dataclass(type(self.cfg.model), saved)
        self.kind.validate(replace(self.cfg, model=model_cfg))
        meta["config"]["model"] = saved
        ckpt.write_json(target / ckpt.FILES["config"], meta)
        return target

    def predict(self, images, batch: int = 256, float_range: Optional[tuple[float, float]] = None) -> Prediction:
        """Images of any kind and size (see `to_model_images`) -> cluster ids, probabilities and names."""
        x = to_model_images(images, self.cfg.data.image_size, self.cfg.data.channels, float_range)
        if len(x) == 0:
            return Prediction(torch.empty(0, dtype=torch.long), torch.empty(0, self.k), self.names)
        ids, probs = predict_tensor(self.d, x, batch)
        stats = self.familiarity_stats
        if stats is None:
            return Prediction(ids, probs, self.names)
        return Prediction(ids, probs, self.names, familiarity_scores(self.d, x, stats[0]), stats[1])

    @property
    def familiarity_stats(self) -> Optional[tuple[torch.Tensor, float]]:
        """(cluster means of D's features, threshold) from the checkpoint's config.json; None where it
        has none (a checkpoint saved before they were recorded: `fit_familiarity` measures them)."""
        rec = self.meta.get("familiarity")
        if not rec:
            return None
        if getattr(self, "_familiarity", None) is None or self._familiarity[0] is not rec:
            try:  # config.json may come from anywhere (an upload): a malformed record means no statistics
                centroids, threshold = decode_tensor(rec["centroids"]), float(rec["threshold"])
                width = familiarity_features(self.d, torch.zeros(1, self.channels, self.image_size, self.image_size)).shape[1]
                if centroids.shape != (self.k, width) or not torch.isfinite(centroids).all() or threshold != threshold:
                    raise ValueError(f"centroids {tuple(centroids.shape)}, expected {(self.k, width)}")
                stats = (centroids, threshold)
            except (KeyError, TypeError, ValueError, RuntimeError) as e:
                warnings.warn(f"{self.folder}: familiarity statistics ignored ({e})")
                stats = None
            self._familiarity = (rec, stats)
        return self._familiarity[1]

    def fit_familiarity(self, images: Optional[torch.Tensor] = None, record: bool = False) -> dict:
        """Measure the familiarity statistics on `images` (default: up to 2,000 training images, which
        must be readable); `record` writes them into the checkpoint's config.json (atomically)."""
        if images is None:  # (not kept: `training_images` keeps the larger set exemplars read)
            pool = self._train_images if self._train_images is not None else self._read_training_data(
                FAMILIARITY_IMAGES)
        else:
            pool = to_model_images(images, self.cfg.data.image_size, self.cfg.data.channels)
        rec = familiarity_record(self.d, pool)
        self.meta["familiarity"] = rec
        if record:
            target = Path(self.folder or "")
            if not (target / ckpt.FILES["config"]).exists():
                raise ValueError(f"no checkpoint at {target} to record into")
            meta = ckpt.read_meta(target)
            meta["familiarity"] = rec
            ckpt.write_json(target / ckpt.FILES["config"], meta)
        return rec

    def training_images(self, limit: int = EXEMPLAR_POOL) -> torch.Tensor:
        """Up to `limit` images of the training data named in the config (read once, then kept)."""
        if self._train_images is None:
            self._train_images = self._read_training_data(limit)
        return self._train_images

    def _read_training_data(self, limit: int) -> torch.Tensor:
        if not ckpt.training_data_readable(self.cfg, self.meta):
            raise DataError(f"this model was uploaded; its training data ({self.cfg.data.source}) is not read from "
                            "this machine")
        return load_dataset(replace(self.cfg.data, limit=limit)).images

    @property
    def training_images_scored(self) -> bool:
        """Whether the training images are scored already (the first `exemplars` call reads and scores
        EXEMPLAR_POOL of them, a few seconds on a CPU; later calls reuse the scores)."""
        return self._train_probs is not None

    def exemplars(self, k: int, n: int = 8, images: Optional[torch.Tensor] = None, seed: int = 0) -> Exemplars:
        """For cluster k: the n images (of `images`, or of the training data) it is most confident of,
        and n generated images with code k. Raises DataError when the training data cannot be read."""
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
        fake = self.sampler.sample(n, seed, code=int(k)).cpu()
        return Exemplars(pool[mine[order]], conf[order], fake)

    def assign(self, items: list) -> "Assignments":
        """Named files, as `data.upload_items` lists them ([(name, bytes or a reader)]) -> a row per
        file (cluster, confidence, top 3; "(unreadable)" for a file that is no image) and counts per
        cluster. What the app's "Classify all" and `scripts/classify.py` do."""
        images, ok = decode_items(items, self.image_size, self.channels)
        rows = assignment_rows([name for name, _ in items], ok, self.predict(images))  # (predict takes none too)
        counts = {name: 0 for name in self.names}
        for row in rows:
            if row["cluster"] != UNREADABLE:
                counts[row["cluster"]] = counts.get(row["cluster"], 0) + 1  # (unsure) comes last when any
        return Assignments(rows, counts, int(ok.sum()), int((~ok).sum()))


@dataclass
class Assignments:
    rows: list  # one dict per file: file, cluster, confidence, top 3
    counts: dict  # cluster name -> how many files went there
    images: int  # files read as images
    unreadable: int

    def write_csv(self, out: TextIO) -> None:
        writer = csv.DictWriter(out, fieldnames=list(self.rows[0]) if self.rows else ROW_FIELDS)
        writer.writeheader()
        writer.writerows(self.rows)
