"""Checkpoint folders: the format only. `config.json` + safetensors, written atomically, never unpickled.

    step_00001000/
      config.json                 {"format", "step", "metrics", "config": RunConfig as JSON}
      generator.safetensors       one file per module, named by its role (FILES below)
      discriminator.safetensors
      generator_ema.safetensors   ... and whatever else the kind trains (encoder.safetensors)
      optimizer.safetensors       training checkpoints only: every optimizer, by name
      README.md, *.png            shipped checkpoints: the model card and its pictures

`FILES` and the helpers below it are the one description of that layout: saving, resuming,
exporting, pushing to and pulling from the Hub all go through them. A training run keeps
`OUT/checkpoints/step_N/` folders and a `OUT/latest` file naming the newest complete one. A folder
is built under a temporary name and renamed into place, and `latest` is replaced atomically
afterwards, so a process killed at any moment leaves the previous checkpoint whole.

This module knows nothing of model kinds: it reads and writes tensors and JSON. Turning
`config.json` back into a `RunConfig` is `gan_core.kinds.read_config`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from . import config as config_mod
from .files import atomic_write, fsync_dir, fsync_file, write_text

FORMAT = "ganlab-checkpoint/1"
WEIGHTS_SUFFIX = ".safetensors"
FILES = {
    "config": "config.json",
    "optimizer": "optimizer" + WEIGHTS_SUFFIX,
    "card": "README.md",
    "pictures": "*.png",
    "weights": "*" + WEIGHTS_SUFFIX,  # one file per module role: generator, discriminator, *_ema, encoder, ...
}
# Module roles: every module is stored as ROLE.safetensors. G and D are every kind's; a kind adds its
# own extras (BlobGAN's "encoder"); an EMA copy of a module is stored under ema_role(its role).
GENERATOR, DISCRIMINATOR = "generator", "discriminator"
EMA_SUFFIX = "_ema"


# An uploaded checkpoint's data source may not point at this machine's disk: its training images (read for
# exemplars and familiarity) are only ever read from a built-in or Hub source.
UPLOAD_READABLE_SOURCES = ("shapes", "scenes", "hub")
UPLOADED = "uploaded"  # config.json key marking a checkpoint that came in as an upload


def training_data_readable(cfg: config_mod.RunConfig, meta: dict) -> bool:
    """Whether the training data a checkpoint names may be read here: always for a checkpoint of this
    machine; for an uploaded one only from a built-in or Hub source (its path could point anywhere on
    this machine's disk, which a visitor may not read)."""
    return not meta.get(UPLOADED) or cfg.data.source in UPLOAD_READABLE_SOURCES


def ema_role(role: str) -> str:
    """The role an EMA copy of `role` is stored under (generator -> generator_ema)."""
    return role + EMA_SUFFIX


def followed_role(role: str) -> str:
    """The module an EMA copy follows (generator_ema -> generator); other roles map to themselves."""
    return role[: -len(EMA_SUFFIX)] if role.endswith(EMA_SUFFIX) else role


# What a shipped model is made of (export keeps it, push uploads it, pull downloads it): everything
# but the optimizer state.
SHIPPED_PATTERNS = [FILES["config"], FILES["card"], FILES["pictures"], FILES["weights"]]


def weights_file(folder: str | Path, role: str) -> Path:
    """Where a module with this role (generator, discriminator, generator_ema, encoder, ...) is stored."""
    return Path(folder) / f"{role}{WEIGHTS_SUFFIX}"


def weight_roles(folder: str | Path) -> list[str]:
    """The module roles whose weights a checkpoint folder holds (sorted; the optimizer is not one)."""
    optimizer = FILES["optimizer"]
    return sorted(p.name[: -len(WEIGHTS_SUFFIX)] for p in Path(folder).glob(FILES["weights"])
                  if p.name != optimizer and not p.name.startswith("."))


def shipped_files(folder: str | Path, with_optimizer: bool = False) -> list[str]:
    """The names of the files in `folder` that a shipped model is made of (and the optimizer state
    when asked), sorted."""
    folder = Path(folder)
    names = {p.name for pattern in SHIPPED_PATTERNS for p in folder.glob(pattern) if p.is_file()}
    names.discard(FILES["optimizer"])
    if with_optimizer and (folder / FILES["optimizer"]).exists():
        names.add(FILES["optimizer"])
    return sorted(n for n in names if not n.startswith("."))


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or unsafe; the message is one line for the user."""


def _write_json(path: Path, obj: dict) -> None:
    """Write the JSON (both callers make it durable: `atomic_write` and `write_folder` fsync every file)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def write_json(path: str | Path, obj: dict) -> None:
    """Replace a JSON file atomically: a reader sees the old file or the new one, never half of one."""
    with atomic_write(path) as tmp:
        _write_json(tmp, obj)


def _full_precision_keys(module: nn.Module) -> set[str]:
    """State-dict keys kept in fp32 when the rest is cast down: the buffers a submodule names in its
    `keep_fp32` (a SCAN head's feature means: near-constant pixels round badly in fp16)."""
    return {f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules() for name in getattr(sub, "keep_fp32", ())}


def _module_tensors(module: nn.Module, dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    out = {}
    keep = _full_precision_keys(module) if dtype is not None else set()
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point() and k not in keep:
            v = v.to(dtype)
        out[k] = v.contiguous()
    return out


def _optimizer_tensors(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    tensors, groups = {}, {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for idx, st in sd["state"].items():
            for key, value in st.items():
                value = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
    return tensors, {"param_groups": json.dumps(groups)}


def write_folder(folder: Path, cfg: config_mod.RunConfig, step: int, modules: dict[str, nn.Module],
                 optimizers: Optional[dict[str, torch.optim.Optimizer]] = None, metrics: Optional[dict] = None,
                 dtype: Optional[torch.dtype] = None, model_card: Optional[str] = None,
                 runtime: Optional[dict] = None, scaler: Optional[dict] = None,
                 extra: Optional[dict] = None) -> Path:
    """Write a complete checkpoint folder at `folder`, atomically (build aside, then rename).
    `runtime`: how the run executes (precision, memory format, how chosen), kept in config.json;
    `scaler`: the fp16 gradient scaler's state, kept beside the optimizer state; `extra`: more entries
    for config.json (a kind's statistics, such as a cluster model's familiarity)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for role, module in modules.items():
            save_file(_module_tensors(module, dtype), str(weights_file(tmp, role)))
        if optimizers:
            tensors, meta = _optimizer_tensors(optimizers)
            if scaler:
                meta["scaler"] = json.dumps(scaler)
            save_file(tensors, str(tmp / FILES["optimizer"]), metadata=meta)
        if model_card:
            (tmp / FILES["card"]).write_text(model_card)
        _write_json(tmp / FILES["config"], {"format": FORMAT, "step": step, "metrics": metrics or {},
                                            "config": config_mod.to_dict(cfg), **({"runtime": runtime} if runtime else {}),
                                            **(extra or {})})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and the safetensors writer) create private files
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
            fsync_file(f)
        fsync_dir(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        fsync_dir(folder.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def save_training_checkpoint(out_dir: str | Path, cfg: config_mod.RunConfig, step: int,
                             modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                             metrics: Optional[dict] = None, keep: int = 2, runtime: Optional[dict] = None,
                             scaler: Optional[dict] = None, extra: Optional[dict] = None) -> Path:
    """Write `OUT/checkpoints/step_N`, then point `OUT/latest` at it, then prune old ones."""
    out_dir = Path(out_dir)
    folder = write_folder(out_dir / "checkpoints" / f"step_{step:08d}", cfg, step, modules, optimizers, metrics,
                          runtime=runtime, scaler=scaler, extra=extra)
    write_text(out_dir / "latest", folder.name + "\n")
    done = sorted(p for p in (out_dir / "checkpoints").glob("step_*") if p.is_dir())
    for old in done[: max(0, len(done) - max(1, keep))]:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def recover(out_dir: str | Path) -> list[str]:
    """Tidy what a writer killed mid-save left in a run folder, keeping every complete checkpoint:
    a checkpoint moved aside for its replacement (`.step_N.old-PID`) goes back when `step_N` is
    missing; half-written temp folders and pointer files are removed. Call it only while no other
    process writes to this run. Returns what it did, one line per item."""
    out_dir, done = Path(out_dir), []
    folders = out_dir / "checkpoints"
    for old in sorted(folders.glob(".step_*.old-*")) if folders.is_dir() else []:
        target = folders / old.name[1:].split(".old-")[0]
        if not target.exists() and (old / FILES["config"]).exists():
            os.replace(old, target)
            done.append(f"restored {target.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}")
    for tmp in sorted(folders.glob(".step_*.tmp-*")) if folders.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed {tmp.name}")
    for tmp in sorted(out_dir.glob(".latest.*tmp*")) if out_dir.is_dir() else []:
        tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp.name}")
    return done


def checkpoint_bytes(modules: dict[str, nn.Module], optimizers: Optional[dict] = None) -> int:
    """About how many bytes one training checkpoint of these modules (and Adam states) takes."""
    total = sum(t.numel() * t.element_size() for m in modules.values() for t in m.state_dict().values())
    if optimizers:
        params = sum(p.numel() * 4 for opt in optimizers.values() for g in opt.param_groups for p in g["params"])
        total += 2 * params  # Adam's two moments, fp32
    return total


def check_output_folder(out_dir: str | Path, need_bytes: int = 0) -> None:
    """Raise OSError with one clear line, before any training, when `out_dir` cannot be created or
    written, or when its disk has less than `need_bytes` free (plus 16 MB to spare)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test-")
        try:
            os.write(fd, b"ganlab")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OSError(f"cannot write checkpoints to {out_dir}: {e.strerror or e}") from None
    free = shutil.disk_usage(out_dir).free
    if need_bytes and free < need_bytes + 16 * 2**20:
        raise OSError(f"not enough free disk space in {out_dir}: {free / 2**20:.1f} MB free, checkpoints "
                      f"need about {(need_bytes + 16 * 2**20) / 2**20:.1f} MB")


def latest_checkpoint(out_dir: str | Path) -> Optional[Path]:
    """The folder `OUT/latest` names, or (if that is missing or mid-replacement) the newest
    complete `step_*` folder."""
    out_dir = Path(out_dir)
    pointer = out_dir / "latest"
    if pointer.exists():
        folder = out_dir / "checkpoints" / pointer.read_text().strip()
        if (folder / FILES["config"]).exists():
            return folder
    done = sorted(p for p in (out_dir / "checkpoints").glob("step_*") if (p / FILES["config"]).exists())
    return done[-1] if done else None


def read_meta(folder: str | Path) -> dict:
    """`config.json` of a checkpoint folder as a dict, checked to be a GAN Lab checkpoint (the run
    config in it is still JSON; `gan_core.kinds.read_config` builds the RunConfig)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / FILES["config"]).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable config.json in {folder}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{folder}/config.json is not a GAN Lab checkpoint (format {got!r})")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"invalid config in {folder}: no run config")
    return meta


PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


def _pickle_like(file: Path) -> bool:
    """A pickle (protocol 2+ starts with 0x80) or a torch.save zip, whatever the file's name."""
    try:
        with open(file, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x80" or head == b"PK\x03\x04"


def load_weights(module: nn.Module, file: Path) -> None:
    """Load a safetensors file into `module`, refusing missing, extra or mis-shaped tensors, and any
    pickle (GAN Lab never unpickles: a pickle can run code when loaded)."""
    if not file.exists():
        pickles = [p.name for p in file.parent.glob(file.stem + ".*") if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise CheckpointError(f"{file.parent} has {pickles[0]} (a pickle) but no {file.name}: GAN Lab loads "
                                  "only safetensors, never pickles (convert it with safetensors.torch.save_file)")
        raise CheckpointError(f"missing {file.name} in {file.parent}")
    if _pickle_like(file):
        raise CheckpointError(f"{file} is a pickle (torch.save) file, not safetensors: refused, since loading a "
                              "pickle can run code")
    try:
        tensors = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type on a damaged file
        raise CheckpointError(f"unreadable {file.name} in {file.parent}: {e}") from None
    own = module.state_dict()
    missing, extra = set(own) - set(tensors), set(tensors) - set(own)
    if missing or extra:
        raise CheckpointError(f"{file.name} does not fit the config: missing {sorted(missing)[:3]}, "
                              f"unexpected {sorted(extra)[:3]}")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{file.name}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def has_optimizer_state(folder: str | Path) -> bool:
    return (Path(folder) / FILES["optimizer"]).exists()


def read_scaler_state(folder: str | Path) -> Optional[dict]:
    """The fp16 gradient scaler's saved state, or None (fp32 / bf16 runs have none)."""
    with safe_open(str(Path(folder) / FILES["optimizer"]), framework="pt") as f:
        text = (f.metadata() or {}).get("scaler")
    return json.loads(text) if text else None


_EXECUTION_FLAGS = ("capturable", "fused", "foreach", "differentiable")
# and the rates: a run resumed with another train.lr / lr_d / beta1 / beta2 trains with them (no schedule
# changes them during a run, so the saved ones are only the old config's)
_RUN_SETTINGS = ("lr", "betas", "eps", "weight_decay")


def load_optimizers(folder: Path, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    file = Path(folder) / FILES["optimizer"]
    with safe_open(str(file), framework="pt") as f:
        groups = json.loads((f.metadata() or {})["param_groups"])
    tensors = load_file(str(file))
    for name, opt in optimizers.items():
        if name not in groups:  # one the checkpoint never had (an encoder switched on at resume) starts fresh
            continue
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            owner, idx, field = key.split(".", 2)
            if owner == name:
                state.setdefault(int(idx), {})[field] = value
        # How an optimizer runs (fused, capturable for a CUDA graph, foreach) and at what rate is this
        # run's choice, not state: the saved groups' flags would otherwise replace it (and place the step
        # count wrongly), and their rates would silently undo a changed train.lr.
        saved = [{**g, **{k: own[k] for k in (*_EXECUTION_FLAGS, *_RUN_SETTINGS) if k in own}}
                 for g, own in zip(groups[name], opt.param_groups)]
        opt.load_state_dict({"state": state, "param_groups": saved})
