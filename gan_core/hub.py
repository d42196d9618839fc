"""Checkpoints on the Hugging Face Hub: `resolve` (a folder, a run folder or a repo id -> a local
folder) and `push` (a folder -> a model repo). Both carry exactly the files `checkpoint.FILES`
says a shipped model is made of, so a BlobGAN keeps its encoder either way. The app and
`scripts/push_to_hub.py` push through here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import checkpoint as ckpt
from .checkpoint import CheckpointError


def resolve(path_or_repo: str | Path, revision: Optional[str] = None) -> Path:
    """A checkpoint folder, a run folder (follows `latest`) or a Hub model repo id -> local folder."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        if (p / ckpt.FILES["config"]).exists():
            return p
        found = ckpt.latest_checkpoint(p)
        if found:
            return found
        raise CheckpointError(f"no config.json (and no 'latest' checkpoint) in {p}")
    if p.exists() or str(path_or_repo).startswith((".", "/", "~")) or str(path_or_repo).count("/") != 1:
        raise CheckpointError(f"not a checkpoint folder or Hub repo id: {path_or_repo}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(path_or_repo), revision=revision, allow_patterns=ckpt.SHIPPED_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"could not get {path_or_repo} from the Hub: {str(e).splitlines()[0]}") from None


DEFAULT_CARD = """---
library_name: gan-lab
tags: [gan, {kind}, unsupervised]
---
# {name}

A GAN Lab checkpoint ({kind}, {size}x{size}, {channels} channel(s)) trained for {step} steps on
`{source}`. Load it with `gan_core.load_model("{repo}")`.
"""


@dataclass
class PushPlan:
    repo_id: str
    folder: Path
    files: list  # file names in `folder` that are uploaded
    card: Optional[str] = None  # a generated model card, when the folder has none


def plan_push(folder: str | Path, repo_id: str, with_optimizer: bool = False) -> PushPlan:
    """What `push` would upload from a checkpoint folder: its shipped files (every module's weights,
    the config, the card and pictures; the optimizer state only when asked), and a generated model
    card when the folder has none."""
    folder = Path(folder)
    meta = ckpt.read_meta(folder)
    files = ckpt.shipped_files(folder, with_optimizer)
    card = None
    if ckpt.FILES["card"] not in files:
        run = meta["config"]
        data, model = run.get("data", {}), run.get("model", {})
        card = DEFAULT_CARD.format(name=repo_id.split("/")[-1], kind=model.get("kind", "?"),
                                   size=data.get("image_size", "?"), channels=data.get("channels", "?"),
                                   step=meta.get("step", "?"), source=data.get("source", "?"), repo=repo_id)
    return PushPlan(repo_id, folder, files, card)


def push(plan: PushPlan, token: Optional[str] = None, private: bool = False,
         message: str = "GAN Lab: upload a trained model", api=None) -> str:
    """Create the repo (if needed) and upload `plan`'s files in one commit; returns the commit URL.
    `api` is an `HfApi`-like object (default: `HfApi(token=token)`)."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(plan.repo_id, repo_type="model", private=bool(private), exist_ok=True)
    if plan.card is not None:
        api.upload_file(path_or_fileobj=plan.card.encode(), path_in_repo=ckpt.FILES["card"], repo_id=plan.repo_id)
    commit = api.upload_folder(folder_path=str(plan.folder), repo_id=plan.repo_id, allow_patterns=list(plan.files),
                               commit_message=message)
    return str(getattr(commit, "commit_url", commit))
