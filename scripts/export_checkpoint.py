#!/usr/bin/env python
"""Export a training checkpoint for shipping: fp16 safetensors, no optimizer state, a model card.

    python -m scripts.export_checkpoint --run runs/shapes-dcgan --out checkpoints/shapes-dcgan --card card.md

Last stdout line: one JSON object with the files and their sizes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--out", required=True)
    p.add_argument("--card", help="model card (markdown) to ship as README.md")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = p.parse_args(argv)

    import torch

    from gan_core.checkpoint import CheckpointError
    from gan_core.inference.loading import export

    card = Path(args.card).read_text() if args.card else None
    try:
        folder = export(args.run, args.out, dtype=getattr(torch, args.dtype), model_card=card)
    except CheckpointError as e:
        fail(str(e))
    files = {f.name: f.stat().st_size for f in sorted(folder.iterdir())}
    result = {"out": str(folder), "files": files, "max_bytes": max(files.values())}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
