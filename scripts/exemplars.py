#!/usr/bin/env python
"""Draw a cluster model's exemplar sheet: one row per cluster, its most confident training images on
the left and images its generator draws for that cluster's code on the right.

    python -m scripts.exemplars --checkpoint checkpoints/fashion-mnist-clusters --out exemplars.png

The training images are read from the path saved in the checkpoint's config (or --data-path).
Last stdout line: one JSON object with the output path and, per cluster, its name, how many training
images it takes and its mean confidence on them.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or Hub repo id")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=8, help="images per side of each row")
    p.add_argument("--data-path", default=None, help="training data, if not where the config says")
    p.add_argument("--limit", type=int, default=20000, help="training images to rank")
    p.add_argument("--scale", type=int, default=2, help="pixel zoom of the sheet")
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    from gan_core.data import to_float
    from gan_core.inference.cluster import ClusterModel
    from gan_core.inference.loading import load_model
    from gan_core.models.cluster import predict_tensor
    from gan_core.viz import image_grid

    model = load_model(args.checkpoint)
    if not isinstance(model, ClusterModel):
        fail(f"a {model.cfg.model.kind!r} model is not a cluster classifier")
    if args.data_path:
        model.cfg.data.path = args.data_path
    pool = model.training_images(args.limit)
    probs = predict_tensor(model.d, pool)[1]
    ids = probs.argmax(1)
    rows, stats = [], []
    blank = -torch.ones(1, model.cfg.data.channels, model.cfg.data.image_size, model.cfg.data.image_size)
    for k in range(model.k):
        ex = model.exemplars(k, args.n)
        real = to_float(ex.real) if len(ex.real) else blank[:0]
        real = torch.cat([real, blank.repeat(args.n - len(real), 1, 1, 1)])  # a cluster may hold fewer
        rows.append(torch.cat([real, blank, ex.fake.float()]))
        mine = ids == k
        stats.append({"cluster": k, "name": model.names[k], "images": int(mine.sum()),
                      "confidence": round(float(probs[mine, k].mean()) if mine.any() else 0.0, 4)})
    sheet = image_grid(torch.cat(rows), nrow=2 * args.n + 1)
    sheet = sheet.resize((sheet.width * args.scale, sheet.height * args.scale), Image.NEAREST)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    result = {"out": args.out, "clusters": stats, "ranked": len(pool)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
