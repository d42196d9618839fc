#!/usr/bin/env python
"""Upload a GAN Lab checkpoint folder to a Hugging Face model repo, with a model card.

    python scripts/push_to_hub.py --checkpoint checkpoints/shapes-dcgan --repo you/shapes-dcgan

The token comes from --token, $HF_TOKEN or `huggingface-cli login`; it is never printed.
Only config.json, *.safetensors, README.md and PNG files are uploaded (no optimizer state unless
--with-optimizer). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CARD = """---
library_name: gan-lab
tags: [gan, dcgan, unsupervised]
---
# {name}

A GAN Lab checkpoint ({kind}, {size}x{size}, {channels} channel(s)) trained for {step} steps on
`{source}`. Load it with `gan_core.load_models("{repo}")`.
"""


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint or run folder")
    p.add_argument("--repo", required=True, help="Hub repo id, e.g. user/name")
    p.add_argument("--token", default=None)
    p.add_argument("--private", action="store_true")
    p.add_argument("--with-optimizer", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded, upload nothing")
    args = p.parse_args(argv)

    from gan_core.checkpoint import CheckpointError, read_config, resolve

    try:
        folder = resolve(args.checkpoint)
        cfg, meta = read_config(folder)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"error": str(e)}))
        sys.exit(2)
    patterns = ["config.json", "*.png", "README.md", "generator*.safetensors", "discriminator*.safetensors"]
    if args.with_optimizer:
        patterns.append("optimizer.safetensors")
    files = sorted(f.name for f in folder.iterdir() if any(f.match(pat) for pat in patterns))
    card = None
    if not (folder / "README.md").exists():
        card = DEFAULT_CARD.format(name=args.repo.split("/")[-1], kind=cfg.model.kind, size=cfg.data.image_size,
                                   channels=cfg.data.channels, step=meta["step"], source=cfg.data.source,
                                   repo=args.repo)
        files.append("README.md (generated)")
    result = {"repo": args.repo, "files": files, "dry_run": args.dry_run, "url": None}
    if not args.dry_run:
        from huggingface_hub import HfApi

        api = HfApi(token=args.token)
        api.create_repo(args.repo, repo_type="model", private=args.private, exist_ok=True)
        if card is not None:
            api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=args.repo)
        commit = api.upload_folder(folder_path=str(folder), repo_id=args.repo, allow_patterns=patterns,
                                   commit_message=f"GAN Lab checkpoint, step {meta['step']}")
        result["url"] = str(getattr(commit, "commit_url", commit))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
