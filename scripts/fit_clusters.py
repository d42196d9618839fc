#!/usr/bin/env python
"""Fit the SCAN head of a trained `cluster` model on its discriminator's frozen features, and write the
result as a new checkpoint folder (the model's second stage, which `scripts/train.py` runs by itself at
the end of a run; this script runs it again, or for the first time on a model trained before it
existed, such as one trained with `model.head_fit=iic`). It fits today's stage: a head on D's trunk
features and one on its input layer, the lower SCAN loss predicting (`--set scan_input_head=false`: the
trunk's head only).

    python -m scripts.fit_clusters --checkpoint runs/fmnist --out runs/fmnist-scan
    python -m scripts.fit_clusters --checkpoint runs/fmnist --out runs/fmnist-scan --set scan_epochs=30 --seed 1

The training images are read from the checkpoint's own data config (`--data.path` where they moved).
No label is read. Last stdout line: {"out", "images", "scan": {...}, "seconds"}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from scripts._cli import fail, parse_sets

SETTABLE = ("scan_heads", "scan_epochs", "scan_min_updates", "scan_neighbours", "scan_views", "scan_dims",
            "scan_hidden", "scan_images", "scan_entropy_weight", "scan_input_head")
FITTED = ("fitted.", "fitted_input.")  # the SCAN heads' weights


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a cluster model: checkpoint folder, run folder or Hub repo id")
    p.add_argument("--out", required=True, help="the new checkpoint folder")
    p.add_argument("--data.path", dest="path", default=None, help="where the training images are now (default: as trained)")
    p.add_argument("--seed", type=int, default=None, help="the fit's seed (default: the run's train.seed)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help=f"a SCAN setting of the model config ({', '.join(SETTABLE)})")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    try:
        from gan_core.models.cluster import ClusterConfig

        sets = parse_sets(args.set, SETTABLE, ClusterConfig)
    except ValueError as e:
        p.error(str(e))

    from tqdm import tqdm

    from gan_core import checkpoint as ckpt
    from gan_core import kinds
    from gan_core.checkpoint import CheckpointError
    from gan_core.data import DataError, load_dataset
    from gan_core.hub import resolve
    from gan_core.inference.loading import KEPT_ON_EXPORT
    from gan_core.models.cluster import checkpoint_meta, copy_fitted, fit_head
    from gan_core.scan import counts_epochs

    start = time.perf_counter()
    try:
        folder = resolve(args.checkpoint)
        cfg, meta = kinds.read_config(folder)
        if not isinstance(cfg.model, ClusterConfig):
            raise ValueError(f"{folder} is a {cfg.model.kind} model; only cluster models have a SCAN head")
        # a new head numbers its clusters afresh, so names given to the old head's clusters are dropped
        # today's stage (a model from before the input-layer head existed gets one too), with --set on top
        stage = {"head_fit": "scan", "scan_input_head": ClusterConfig.scan_input_head, **sets}
        new = replace(cfg, model=replace(cfg.model, cluster_names=None, **stage),
                      data=replace(cfg.data, path=args.path or cfg.data.path))
        kinds.validate(new)
        loaded = {}  # every stored module (and EMA copy), rebuilt for the new config
        known = set(kinds.known_roles(cfg))
        for name in ckpt.weight_roles(folder):
            if name not in known:
                continue
            source, target = kinds.build_role(cfg, name), kinds.build_role(new, name)
            ckpt.load_weights(source, ckpt.weights_file(folder, name))
            # everything but the SCAN heads (fitted.* and fitted_input.*, absent from an IIC model), which the
            # fit fills in afresh
            kept = {k: v for k, v in source.state_dict().items() if not k.startswith(FITTED)}
            missing, unexpected = target.load_state_dict(kept, strict=False)
            if unexpected or any(not k.startswith(FITTED) for k in missing):
                raise CheckpointError(f"{folder}: {name} does not fit a SCAN head's discriminator")
            loaded[name] = target.to(args.device)
        ds = load_dataset(new.data)
    except (CheckpointError, DataError, ValueError) as e:
        fail(str(e))
    if ckpt.DISCRIMINATOR not in loaded:
        fail(f"{folder} has no discriminator to read features from")
    d = loaded.get(ckpt.ema_role(ckpt.DISCRIMINATOR), loaded[ckpt.DISCRIMINATOR])
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="epoch" if counts_epochs(stage) else "img")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    seed = new.train.seed if args.seed is None else args.seed
    g = loaded.get(ckpt.ema_role(ckpt.GENERATOR), loaded.get(ckpt.GENERATOR))  # numbers the clusters after its codes
    report = fit_head(d, ds.images, new.model, seed, log=lambda line: print(line, file=sys.stderr),
                      progress=progress, g=g)
    for name, module in loaded.items():
        if module is not d and ckpt.followed_role(name) == ckpt.DISCRIMINATOR:
            copy_fitted(d, module)
    kept = {key: meta[key] for key in KEPT_ON_EXPORT if key in meta}  # what a shipped copy keeps, ...
    extra = {**kept, **checkpoint_meta(new.model, loaded, ds.images), "scan": report}  # ... refreshed where refitted
    out = ckpt.write_folder(Path(args.out), new, meta["step"], {k: v.cpu() for k, v in loaded.items()},
                            metrics=meta.get("metrics"), extra=extra)
    result = {"out": str(out), "images": len(ds), "scan": report,
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
