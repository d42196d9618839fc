#!/usr/bin/env python
"""Upload a GAN Lab checkpoint folder to a Hugging Face model repo, with a model card.

    python -m scripts.push_to_hub --checkpoint checkpoints/shapes-dcgan --repo you/shapes-dcgan

The token comes from --token, $HF_TOKEN or `huggingface-cli login`; it is never printed.
What a shipped model is made of is uploaded: config.json, every module's *.safetensors (a BlobGAN's
encoder too), README.md and PNG files; no optimizer state unless --with-optimizer. The app's Push
button uploads through the same code (`gan_core.hub`). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint or run folder")
    p.add_argument("--repo", required=True, help="Hub repo id, e.g. user/name")
    p.add_argument("--token", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--with-optimizer", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    args = p.parse_args(argv)

    from gan_core import hub, kinds
    from gan_core.checkpoint import FILES, CheckpointError

    try:
        folder = hub.resolve(args.checkpoint)
        _, meta = kinds.read_config(folder)  # refuse a folder whose config does not load
        plan = hub.plan_push(folder, args.repo, with_optimizer=args.with_optimizer)
    except CheckpointError as e:
        fail(str(e))
    files = list(plan.files)
    if plan.card is not None:
        files.append(f"{FILES['card']} (generated)")
    result = {"repo": args.repo, "files": files, "dry_run": args.dry_run, "url": None}
    if not args.dry_run:
        result["url"] = hub.push(plan, token=args.token, private=args.private,
                                 message=f"GAN Lab checkpoint, step {meta['step']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
