#!/usr/bin/env python
"""Measure a generator's samples against real images of its training source (no pretrained nets).

    python -m scripts.evaluate_samples --checkpoint checkpoints/shapes-dcgan --n 500

Reports, for generated and for held-out real images (a different seed of the same procedural
source), two-colour coverage, distance to the nearest training image and mean pairwise distance
(see gan_core.metrics). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, run folder or Hub repo id")
    p.add_argument("--n", type=int, default=500, help="generated (and held-out real) images")
    p.add_argument("--reference", type=int, default=5000, help="training images to search for nearest neighbours")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-ema", action="store_true")
    args = p.parse_args(argv)

    import torch

    from gan_core import metrics
    from gan_core.data import load_dataset
    from gan_core.inference.loading import load_model

    model = load_model(args.checkpoint, ema=not args.no_ema)
    cfg, meta = model.cfg, model.meta
    gen = ((model.sampler.sample(args.n, args.seed).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    all_train = load_dataset(cfg.data).images
    train_images = all_train[: args.reference]
    result = {"checkpoint": meta["folder"], "step": meta["step"], "n": args.n}
    if cfg.data.source in ("shapes", "scenes"):
        held_cfg = dataclasses.replace(cfg.data, num_images=args.n, seed=cfg.data.seed + 10_000, limit=None)
        held = load_dataset(held_cfg).images
    else:
        held = all_train[-args.n:]
    for name, images in (("generated", gen), ("real_heldout", held)):
        result[f"{name}_two_colour_coverage"] = round(metrics.two_colour_coverage(images), 4)
        result[f"{name}_nearest_train_distance"] = round(metrics.nearest_real_distance(images, train_images), 4)
        result[f"{name}_pairwise_distance"] = round(metrics.mean_pairwise_distance(images), 4)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
