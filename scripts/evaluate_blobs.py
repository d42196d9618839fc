#!/usr/bin/env python
"""Score a BlobGAN checkpoint (generator + inversion encoder) on held-out `scenes` images, whose
object centres and boxes are known:

    python -m scripts.evaluate_blobs --checkpoint checkpoints/scenes-blobgan

- psnr: reconstruction PSNR of G(E(x)) against x, in dB (images in [0, 1]), the mean over images.
- hit_rate: the fraction of ground-truth objects matched one-to-one (Hungarian matching on centre
  distance, scipy) to a visible blob (s > 0) of E(x) whose centre lies inside the object's box.
- locality: move one blob of E(x) (the one matched to the image's first object, else the most
  opaque visible blob) by --shift of the image side; the fraction of the total pixel change that
  falls inside the union of that blob's old and new regions (pixels where its compositing weight
  is at least --region, at image resolution). Pooled over the images.
- lpips: the mean LPIPS(x, G(E(x))) when the VGG16 ImageNet weights are present, else null.
Last stdout line: one JSON object with those keys plus n and the settings.
"""
from __future__ import annotations

import argparse
import json
import sys

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--seed", type=int, default=10_000, help="scenes seed of the held-out images (training: 0)")
    p.add_argument("--shift", type=float, default=0.15, help="blob move for locality, fraction of the side")
    p.add_argument("--region", type=float, default=0.1, help="compositing weight that counts as a blob's region")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lpips-weights", default=None)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from gan_core.checkpoint import CheckpointError
    from gan_core.config import DataConfig
    from gan_core.data import load_dataset, to_float
    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.loading import load_model
    from gan_core.losses import load_lpips
    from gan_core.metrics import match_objects
    from gan_core.models import blob_layout

    try:
        model = load_model(args.checkpoint, args.device)
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    if not isinstance(model, BlobModel):
        fail(f"a {model.cfg.model.kind!r} model has no blob layouts")
    if model.encoder is None:
        fail("no encoder")
    size, channels = model.cfg.data.image_size, model.cfg.data.channels
    data = load_dataset(DataConfig(source="scenes", num_images=args.num_images, seed=args.seed, image_size=size,
                                   channels=channels))
    lpips, line = load_lpips(args.lpips_weights)
    print(line, file=sys.stderr)

    psnrs, lp, hits, objects = [], [], 0, 0
    inside, total = 0.0, 0.0
    with torch.no_grad():
        for start in tqdm(range(0, len(data), args.batch), desc="evaluate", file=sys.stderr):
            x = to_float(data.images[start: start + args.batch]).to(model.device)
            objs = data.objects[start: start + args.batch]
            lay = model.g.layout_net.decode(model.encoder(x))
            rec = model.render(lay)
            mse = ((rec - x) / 2).pow(2).flatten(1).mean(1)
            psnrs += (10 * torch.log10(1 / mse.clamp_min(1e-10))).tolist()
            if lpips is not None:
                lp += lpips.to(model.device)(x, rec).tolist()
            movers = []
            for i in range(len(x)):
                one = lay.index(i)
                objects += int((objs[i][:, 0] >= 0).sum())
                got, pairs = match_objects(objs[i], one)
                hits += got
                mover = next((b for o, b in pairs if o == 0), None)  # the blob matched to the first object
                if mover is None and bool(one.visible().any()):  # else the most opaque visible blob
                    mover = int(one.drawn_size()[0].argmax())
                movers.append(mover)
            for i, k in enumerate(movers):
                if k is None:
                    continue
                one = lay.index(i)
                dx = args.shift if float(one.xy[0, k, 0]) < 0.5 else -args.shift  # stay inside the image
                moved = blob_layout.move(one, k, dx=dx)
                change = (model.render(moved) - model.render(one)).abs().sum(1)[0]  # (H, W)
                region = ((blob_layout.splat(one, size)[0, k + 1] >= args.region)
                          | (blob_layout.splat(moved, size)[0, k + 1] >= args.region))
                inside += float(change[region].sum())
                total += float(change.sum())
    result = {"psnr": round(float(np.mean(psnrs)), 3), "hit_rate": round(hits / max(objects, 1), 4),
              "locality": round(inside / total, 4) if total > 0 else None,
              "lpips": round(float(np.mean(lp)), 4) if lp else None,
              "n": len(data), "objects": objects, "seed": args.seed, "shift": args.shift, "region": args.region,
              "inversion_loss": model.cfg.model.inversion_loss, "checkpoint": args.checkpoint}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
