"""Checkpoint folders: `config.json` + safetensors, written atomically, never unpickled.

A training run keeps `OUT/checkpoints/step_00001000/` folders and a `OUT/latest` file naming
the newest complete one. A folder is built under a temporary name and renamed into place, and
`latest` is replaced atomically afterwards, so a process killed at any moment leaves the
previous checkpoint whole.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import config as config_mod
from . import blobgan, cluster, dcgan

FORMAT = "ganlab-checkpoint/1"
WEIGHT_FILES = ("generator", "discriminator", "generator_ema", "discriminator_ema", "encoder")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.png"]
MODELS = {"dcgan": dcgan.build, "cluster": cluster.build, "blobgan": blobgan.build}  # model kind -> build(config) -> (G, D)


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed or unsafe; the message is one line for the user."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_json(path: Path, obj: dict) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: Path, obj: dict) -> None:
    """Replace a JSON file atomically: a reader sees the old file or the new one, never half of one."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        _write_json(Path(tmp), obj)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _module_tensors(module: nn.Module, dtype: Optional[torch.dtype]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
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
                 dtype: Optional[torch.dtype] = None, model_card: Optional[str] = None) -> Path:
    """Write a complete checkpoint folder at `folder`, atomically (build aside, then rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, module in modules.items():
            save_file(_module_tensors(module, dtype), str(tmp / f"{name}.safetensors"))
        if optimizers:
            tensors, meta = _optimizer_tensors(optimizers)
            save_file(tensors, str(tmp / "optimizer.safetensors"), metadata=meta)
        if model_card:
            (tmp / "README.md").write_text(model_card)
        _write_json(tmp / "config.json", {"format": FORMAT, "step": step, "metrics": metrics or {},
                                          "config": config_mod.to_dict(cfg)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and the safetensors writer) create private files
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~umask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def save_training_checkpoint(out_dir: str | Path, cfg: config_mod.RunConfig, step: int,
                             modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                             metrics: Optional[dict] = None, keep: int = 2) -> Path:
    """Write `OUT/checkpoints/step_N`, then point `OUT/latest` at it, then prune old ones."""
    out_dir = Path(out_dir)
    folder = write_folder(out_dir / "checkpoints" / f"step_{step:08d}", cfg, step, modules, optimizers, metrics)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".latest.tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(folder.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / "latest")
    _fsync_dir(out_dir)
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
        if not target.exists() and (old / "config.json").exists():
            os.replace(old, target)
            done.append(f"restored {target.name}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name}")
    for tmp in sorted(folders.glob(".step_*.tmp-*")) if folders.is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed {tmp.name}")
    for tmp in sorted(out_dir.glob(".latest.tmp-*")) if out_dir.is_dir() else []:
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
        if (folder / "config.json").exists():
            return folder
    done = sorted(p for p in (out_dir / "checkpoints").glob("step_*") if (p / "config.json").exists())
    return done[-1] if done else None


def resolve(path_or_repo: str | Path, revision: Optional[str] = None) -> Path:
    """A checkpoint folder, a run folder (follows `latest`) or a Hub model repo id -> local folder."""
    p = Path(path_or_repo).expanduser()
    if p.is_dir():
        if (p / "config.json").exists():
            return p
        found = latest_checkpoint(p)
        if found:
            return found
        raise CheckpointError(f"no config.json (and no 'latest' checkpoint) in {p}")
    if p.exists() or str(path_or_repo).startswith((".", "/", "~")) or str(path_or_repo).count("/") != 1:
        raise CheckpointError(f"not a checkpoint folder or Hub repo id: {path_or_repo}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(path_or_repo), revision=revision, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"could not get {path_or_repo} from the Hub: {str(e).splitlines()[0]}") from None


def read_config(folder: str | Path) -> tuple[config_mod.RunConfig, dict]:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable config.json in {folder}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder}/config.json is not a GAN Lab checkpoint (format {meta.get('format')!r})")
    try:
        cfg = config_mod.validate(config_mod.from_dict(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config in {folder}: {e}") from None
    return cfg, meta


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


def load_optimizers(folder: Path, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    from safetensors import safe_open

    file = folder / "optimizer.safetensors"
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
        opt.load_state_dict({"state": state, "param_groups": groups[name]})


def load_models(path_or_repo: str | Path, device: str | torch.device = "cpu", ema: bool = True):
    """-> (cfg, G, D, meta) in eval mode on `device`; G and D are the EMA copies where they exist and `ema`."""
    folder = resolve(path_or_repo)
    cfg, meta = read_config(folder)
    g, d = MODELS[cfg.model.kind](cfg.model)
    g_file = folder / "generator_ema.safetensors"
    load_weights(g, g_file if ema and g_file.exists() else folder / "generator.safetensors")
    d_file = folder / "discriminator_ema.safetensors"
    if not (ema and d_file.exists()):
        d_file = folder / "discriminator.safetensors"
    if d_file.exists():
        load_weights(d, d_file)
    else:
        d = None
    meta["folder"] = str(folder)
    g = g.to(device).eval()
    return cfg, g, (d.to(device).eval() if d is not None else None), meta


def export(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float16,
           model_card: Optional[str] = None) -> Path:
    """Copy a checkpoint for shipping: weights only (no optimizer state), cast to `dtype`."""
    folder = resolve(src)
    cfg, meta = read_config(folder)
    modules = {}
    for name in WEIGHT_FILES:
        if (folder / f"{name}.safetensors").exists():
            g, d = MODELS[cfg.model.kind](cfg.model)
            module = d if name.startswith("discriminator") else g
            if name == "encoder":  # BlobGAN's inversion encoder, sized by the generator's layout vector
                module = blobgan.build_encoder(cfg.model, g)
            load_weights(module, folder / f"{name}.safetensors")
            modules[name] = module
    return write_folder(Path(dst), cfg, meta["step"], modules, metrics=meta.get("metrics"), dtype=dtype,
                        model_card=model_card)
