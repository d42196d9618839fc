#!/usr/bin/env python
"""Sort images into a cluster model's clusters: the Classify tab as a command.

    python -m scripts.classify --checkpoint checkpoints/fashion-mnist-clusters photos/*.png more.zip \
        --out assignments.csv

Takes image files, folders (their images, recursively) and zips of images (read in memory, never
extracted). Writes one CSV row per image: file, cluster, confidence, top 3; a file that cannot be
read gets the cluster "(unreadable)" and the rest go on. Nothing readable at all is one line on
stderr and exit code 2. Last stdout line: one JSON object with the counts per cluster.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from scripts._cli import fail


def _inputs(paths: list[str]) -> list[Path]:
    from gan_core.data import IMAGE_EXTENSIONS

    files = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS + (".zip",)))
        elif p.is_file():
            files.append(p)
        else:
            fail(f"no such file or folder: {raw}")
    return files


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or zips of images")
    p.add_argument("--checkpoint", required=True, help="cluster model: checkpoint folder or Hub repo id")
    p.add_argument("--out", default=None, help="CSV to write (default: the rows go to stdout before the JSON)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from PIL import Image

    from gan_core.checkpoint import CheckpointError
    from gan_core.data import DataError, upload_items
    from gan_core.inference.cluster import ClusterModel
    from gan_core.inference.loading import load_model

    warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse what the app refuses
    try:
        model = load_model(args.checkpoint, device=args.device)
    except (CheckpointError, ValueError, OSError) as e:
        fail(f"cannot load {args.checkpoint}: {e}")
    if not isinstance(model, ClusterModel):
        fail(f"cannot load {args.checkpoint}: a {model.cfg.model.kind!r} model is not a cluster classifier")
    try:
        skipped: list = []
        items = upload_items(_inputs(args.inputs), limit=10**9, skipped=skipped)
    except (DataError, OSError) as e:
        fail(str(e))
    for name, why in skipped:
        print(f"skipped {name}: {why}", file=sys.stderr)
    assigned = model.assign(items)
    if assigned.images == 0:
        fail("none of the given files could be read as an image", unreadable=len(items))
    try:
        out = open(args.out, "w", newline="") if args.out else sys.stdout
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror or e}")
    try:
        assigned.write_csv(out)
    finally:
        if args.out:
            out.close()
    result = {"images": assigned.images, "unreadable": assigned.unreadable, "skipped": len(skipped),
              "counts": assigned.counts,
              "out": args.out, "checkpoint": args.checkpoint}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
