#!/usr/bin/env python
"""Before/after picture of blob editing for a BlobGAN model card: for a few seeds, the generated
image with its blobs drawn, then the same layout with one blob moved (and, in a third column,
hidden), each rendered by the generator.

    python -m scripts.blob_edit_demo --checkpoint checkpoints/scenes-blobgan --out move_blob.png

The moved blob is the most opaque visible one; it moves by --shift of the image side towards the
image's centre line. With --invert-scenes N the rows are N held-out `scenes` images instead (seed
10,000, as scripts/evaluate_blobs.py): the image itself first, then G(E(x)) with the blobs the encoder
read, then the blob matched to the image's first object moved, then hidden. Last stdout line: one
JSON object with the output path and, per row, the seed (or scene index), the blob and the shift.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--shift", type=float, default=0.25)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--invert-scenes", type=int, default=0, metavar="N",
                   help="rows from N held-out scenes read by the encoder, instead of the seeds' samples")
    args = p.parse_args(argv)

    from PIL import Image

    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.loading import load_model
    from gan_core.metrics import match_objects
    from gan_core.models import blob_layout
    from gan_core.viz import draw_blobs

    model = load_model(args.checkpoint)
    if not isinstance(model, BlobModel):
        fail(f"a {model.cfg.model.kind!r} model has no blob layouts")
    rows, info = [], []
    if args.invert_scenes > 0:
        from gan_core.config import DataConfig
        from gan_core.data import load_dataset

        if model.encoder is None:
            fail("--invert-scenes needs a checkpoint with an encoder")
        cfg = model.cfg.data
        scenes = load_dataset(DataConfig(source="scenes", num_images=args.invert_scenes, seed=10_000,
                                         image_size=cfg.image_size, channels=cfg.channels))
        layouts = model.invert(scenes.images)
        cases = [(i, layouts.index(i), scenes.objects[i], scenes.images[i]) for i in range(len(scenes))]
    else:
        cases = [(seed, model.sample_layout(seed), None, None) for seed in args.seeds]
    for key, lay, objects, real in cases:
        visible = lay.visible()[0]
        pairs = match_objects(objects, lay)[1] if objects is not None else []
        k = next((b for o, b in pairs if o == 0), None)  # the blob matched to the first object
        if k is None:
            k = int(lay.size[0].masked_fill(~visible, float("-inf")).argmax()) if bool(visible.any()) else 0
        dx = args.shift if float(lay.xy[0, k, 0]) < 0.5 else -args.shift
        moved = blob_layout.move(lay, k, dx=dx)
        hidden = blob_layout.hide(lay, k)
        tiles = [draw_blobs(model.render(lay)[0], lay, args.scale), draw_blobs(model.render(moved)[0], moved, args.scale),
                 draw_blobs(model.render(hidden)[0], hidden, args.scale)]
        if real is not None:
            pixels = real.permute(1, 2, 0).numpy()  # uint8 (H, W, C)
            pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            tiles.insert(0, Image.fromarray(pixels).resize(tiles[0].size, Image.Resampling.NEAREST))
        rows.append(tiles)
        info.append({("scene" if real is not None else "seed"): key, "blob": k, "dx": round(dx, 3)})
    w, h = rows[0][0].size
    pad = 4
    cols = len(rows[0])
    sheet = Image.new("RGB", (cols * w + (cols + 1) * pad, len(rows) * (h + pad) + pad), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (pad + c * (w + pad), pad + r * (h + pad)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    columns = ["original", "blob moved", "blob hidden"]
    result = {"out": args.out, "rows": info, "columns": (["image", "read by the encoder"] + columns[1:]
                                                         if args.invert_scenes > 0 else columns)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
