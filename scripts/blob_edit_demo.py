#!/usr/bin/env python
"""Before/after picture of blob editing for a BlobGAN model card: for a few seeds, the generated
image with its blobs drawn, then the same layout with one blob moved (and, in a third column,
hidden), each rendered by the generator.

    python scripts/blob_edit_demo.py --checkpoint checkpoints/scenes-blobgan --out move_blob.png

The moved blob is the most opaque visible one; it moves by --shift of the image side towards the
image's centre line. Last stdout line: one JSON object with the output path and, per row, the seed,
the blob and the shift.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--shift", type=float, default=0.25)
    p.add_argument("--scale", type=int, default=4)
    args = p.parse_args(argv)

    from PIL import Image

    from gan_core import blobgan
    from gan_core.viz import draw_blobs

    model = blobgan.BlobModel.load(args.checkpoint)
    rows, info = [], []
    for seed in args.seeds:
        lay = model.sample_layout(seed)
        visible = lay.visible()[0]
        k = int(lay.size[0].masked_fill(~visible, float("-inf")).argmax()) if bool(visible.any()) else 0
        dx = args.shift if float(lay.xy[0, k, 0]) < 0.5 else -args.shift
        moved = blobgan.move(lay, k, dx=dx)
        hidden = blobgan.hide(lay, k)
        tiles = [draw_blobs(model.render(lay)[0], lay, args.scale), draw_blobs(model.render(moved)[0], moved, args.scale),
                 draw_blobs(model.render(hidden)[0], hidden, args.scale)]
        rows.append(tiles)
        info.append({"seed": seed, "blob": k, "dx": round(dx, 3)})
    w, h = rows[0][0].size
    pad = 4
    sheet = Image.new("RGB", (3 * w + 4 * pad, len(rows) * (h + pad) + pad), (255, 255, 255))
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (pad + c * (w + pad), pad + r * (h + pad)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    result = {"out": args.out, "rows": info, "columns": ["original", "blob moved", "blob hidden"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
