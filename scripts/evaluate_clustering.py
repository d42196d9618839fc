#!/usr/bin/env python
"""Unsupervised classification quality on a labelled source (labels are used only here, to score).

    python -m scripts.evaluate_clustering --data.source idx --data.path /usr/share/datasets/fashion-mnist --split test
    python -m scripts.evaluate_clustering --checkpoint checkpoints/shapes-dcgan --data.source shapes

Always runs the baseline, k-means on raw pixels. With --checkpoint of a `cluster` model it scores the
model's cluster head (EMA weights where saved); of a `dcgan` model, or with --features, it runs
"discriminator features + k-means" (standardised trunk features of D). Scores: ACC with Hungarian
matching at K = number of classes, NMI and ARI. Last stdout line:
{"acc", "nmi", "ari", "n", "k", "kmeans_acc", "kmeans_nmi", ...} (acc/nmi/ari null without a checkpoint);
"unsure": the share of these held-out images a cluster model flags as unlike its training images.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from scripts._cli import fail


def kmeans(features, k: int, seed: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)


def discriminator_features(d, images, batch: int = 512):
    """Flattened output of D's trunk (before the real/fake layer), standardised per feature."""
    import torch

    from gan_core.data import to_float

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(d.features(to_float(images[i: i + batch])).flatten(1))
    f = torch.cat(out)
    return ((f - f.mean(0)) / (f.std(0) + 1e-6)).numpy()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder or Hub repo id (optional)")
    p.add_argument("--data.source", dest="source", default="shapes")
    p.add_argument("--data.path", dest="path", default=None)
    p.add_argument("--split", default="test", help="idx/parquet/hub split (shapes: a held-out seed)")
    p.add_argument("--image-size", type=int, default=32, help="without --checkpoint (with it: the model's)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3], help="without --checkpoint")
    p.add_argument("--k", type=int, default=None, help="clusters (default: the number of classes)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on at most this many images")
    p.add_argument("--num-images", type=int, default=2000, help="for the procedural sources")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=None,
                   help="cluster models: average over this many centred crops (default: the model's predict_views; "
                        "1: the plain single-view prediction)")
    p.add_argument("--features", action="store_true",
                   help="score D's trunk features + k-means even for a cluster model (a baseline)")
    args = p.parse_args(argv)
    if args.views is not None and not 1 <= args.views <= 16:
        p.error("--views must be between 1 and 16")

    import numpy as np

    from gan_core import metrics
    from gan_core.checkpoint import CheckpointError
    from gan_core.config import DataConfig
    from gan_core.data import DataError, load_dataset
    from gan_core.inference.cluster import ClusterModel
    from gan_core.inference.loading import load_model

    size, channels, model = args.image_size, args.channels, None
    try:
        if args.checkpoint:
            model = load_model(args.checkpoint)
            size, channels = model.cfg.data.image_size, model.cfg.data.channels
        # The procedural sources are "held out" by seed: the training data used seed 0 by default.
        data_cfg = DataConfig(source=args.source, path=args.path, split=args.split, image_size=size,
                              channels=channels, num_images=args.num_images, seed=10_000 + args.seed,
                              limit=args.limit)
        ds = load_dataset(data_cfg)
    except (DataError, CheckpointError, ValueError) as e:
        fail(str(e))
    if ds.labels is None:
        print("error: this source has no labels to evaluate against", file=sys.stderr)
        print(json.dumps({"error": "no labels"}))  # the JSON error callers match on
        sys.exit(2)
    labels = ds.labels.numpy()
    k = args.k or len(np.unique(labels))
    print(f"{len(ds)} images, {k} clusters", file=sys.stderr)

    pixels = ds.images.float().flatten(1).numpy() / 255.0
    base = metrics.clustering_scores(labels, kmeans(pixels, k, args.seed))
    result = {"acc": None, "nmi": None, "ari": None, "n": len(ds), "k": k,
              "kmeans_acc": round(base["acc"], 4), "kmeans_nmi": round(base["nmi"], 4),
              "kmeans_ari": round(base["ari"], 4), "method": None}
    if model is not None:
        cfg, d, meta = model.cfg, model.d, model.meta
        if d is None:
            fail("the checkpoint has no discriminator")
        if isinstance(model, ClusterModel) and not args.features:
            from gan_core.models.cluster import predict_tensor, view_sides

            sides = d.view_sides if args.views is None else view_sides(replace(cfg.model, predict_views=args.views))
            clusters, _ = predict_tensor(d, ds.images, sides=sides)
            method = f"{d.head_name()} ({cfg.model.objective})"
            result["views"] = len(sides)
            if model.familiarity_stats is not None:  # share of these (in-distribution) images shown as unsure
                from gan_core.models.cluster import familiarity_scores

                centroids, threshold = model.familiarity_stats
                result["unsure"] = round(float((familiarity_scores(d, ds.images, centroids) < threshold)
                                               .float().mean()), 4)
        else:
            clusters = kmeans(discriminator_features(d, ds.images), k, args.seed)
            method = "discriminator features + k-means"
        scores = metrics.clustering_scores(labels, clusters)
        result.update({key: round(v, 4) for key, v in scores.items()})
        result.update(method=method, checkpoint=meta["folder"])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
