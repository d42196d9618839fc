#!/usr/bin/env python
"""Turn an image folder, zip, Hub dataset (or any gan_core source) into a 64x64 parquet file.

    python -m scripts.prepare_dataset --source folder --path photos/ --out data/photos-64.parquet

The parquet has an HF `Image` column "image" (PNG bytes, resized + centre-cropped like the seed's
dataset-resized-64.parquet) and, when the source has labels, a `ClassLabel` column "label".
Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="folder", choices=["shapes", "scenes", "folder", "zip", "parquet", "hub", "idx"])
    p.add_argument("--path", help="folder, zip, parquet, IDX folder or Hub dataset id")
    p.add_argument("--out", required=True, help="output .parquet file")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--split", default="train")
    p.add_argument("--num-images", type=int, default=20000, help="for the procedural sources")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args(argv)

    import datasets
    from PIL import Image
    from tqdm import tqdm

    from gan_core.config import DataConfig
    from gan_core.data import DataError, load_dataset

    cfg = DataConfig(source=args.source, path=args.path, image_size=args.size, channels=args.channels,
                     split=args.split, num_images=args.num_images, limit=args.limit)
    bar = tqdm(desc="decode", unit="img", file=sys.stderr)

    def progress(done, total):
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        ds = load_dataset(cfg, progress=progress, use_cache=False)
    except (DataError, ValueError) as e:
        fail(str(e))
    finally:
        bar.close()

    def png(arr) -> bytes:
        buf = io.BytesIO()
        a = arr.numpy()
        Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(buf, format="PNG")
        return buf.getvalue()

    columns = {"image": [{"bytes": png(x), "path": None} for x in tqdm(ds.images, desc="encode", file=sys.stderr)]}
    features = {"image": datasets.Image()}
    if ds.labels is not None:
        columns["label"] = ds.labels.tolist()
        features["label"] = datasets.ClassLabel(names=ds.class_names or [str(i) for i in range(int(ds.labels.max()) + 1)])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(out))
    result = {"out": str(out), "n": len(ds), "skipped": ds.skipped, "size": args.size,
              "labels": ds.labels is not None, "bytes": out.stat().st_size}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
