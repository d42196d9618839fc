"""The one registry of model kinds: name -> `Kind` (config class, build, train_step, hooks, inference facade).

The training loop, the checkpoints, the CLI and the app look a kind up here and never compare its
name. Adding a kind is one module in `gan_core/models/` (its config dataclass, `build`,
`train_step` and whatever hooks it needs; see `models/base.Kind`) plus one line in `KINDS`.
`register` adds one at run time (a plug-in, or a test's toy kind).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from . import checkpoint as ckpt
from . import config as config_mod
from .checkpoint import DISCRIMINATOR, GENERATOR, CheckpointError, ema_role, followed_role
from .config import RunConfig
from .inference.blobs import BlobModel
from .inference.cluster import ClusterModel
from .inference.model import Model
from .models import blobgan, cluster, dcgan
from .models.base import Kind

DEFAULT_KIND = "dcgan"

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("dcgan", dcgan.DCGANConfig, dcgan.build, dcgan.train_step, validate=dcgan.validate,
         extra_modules=dcgan.extra_modules, trained_extras=dcgan.trained_extras,
         start_extra=dcgan.start_extra, loss_fields=dcgan.LOSS_FIELDS, facade=Model),
    Kind("cluster", cluster.ClusterConfig, cluster.build, cluster.train_step, validate=cluster.validate,
         check_run=cluster.check_run, num_codes=cluster.num_codes, ema_roles=(GENERATOR, DISCRIMINATOR),
         unused_parameters=cluster.unused_parameters, checkpoint_meta=cluster.checkpoint_meta, choose=cluster.choose,
         finish=cluster.finish, start=cluster.start, legacy_defaults=cluster.LEGACY_DEFAULTS, facade=ClusterModel,
         loss_fields=("cluster_names",)),  # (labels only: a resumed run may rename its clusters)
    Kind("blobgan", blobgan.BlobGANConfig, blobgan.build, blobgan.train_step, validate=blobgan.validate,
         extra_modules=blobgan.extra_modules, trained_extras=blobgan.trained_extras,
         loss_fields=blobgan.LOSS_FIELDS, graph_safe=False, facade=BlobModel),  # lazy R1 runs on some steps only
)}


def register(kind: Kind) -> Kind:
    """Add (or replace) a kind; every caller that goes through this registry then knows it."""
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}, not {name!r}")
    return KINDS[name]


def of(cfg: RunConfig) -> Kind:
    """The kind of a run config."""
    return get(cfg.model.kind)


def model_config(name: str, **values):
    """A fresh config of kind `name` with `values` set (unknown fields refused)."""
    return config_mod.build_dataclass(get(name).config, values)


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and types before anything is allocated: the common checks, then the kind's own.
    Raises ValueError with one clear line."""
    config_mod.validate_common(cfg)
    kind = get(cfg.model.kind)
    if not isinstance(cfg.model, kind.config):
        raise ValueError(f"model kind {kind.name!r} needs a {kind.config.__name__}, not a {type(cfg.model).__name__}")
    kind.validate(cfg)
    return cfg


def config_from_dict(values: dict, saved: bool = False) -> RunConfig:
    """A RunConfig from its JSON form (config.json, Hydra), refusing unknown fields and kinds. `saved`:
    the dict was written with weights, so fields it lacks take the kind's `legacy_defaults` (what the
    weights were trained with) before today's defaults."""
    model = values.get("model")
    if saved and isinstance(model, dict) and model.get("kind", DEFAULT_KIND) in KINDS:
        legacy = KINDS[model.get("kind", DEFAULT_KIND)].legacy_defaults
        values = {**values, "model": {**{k: v for k, v in legacy.items() if k not in model}, **model}}
    return config_mod.from_dict(values, {name: k.config for name, k in KINDS.items()}, DEFAULT_KIND)


def read_config(folder: str | Path) -> tuple[RunConfig, dict]:
    """-> (the checked RunConfig, the rest of config.json) of a checkpoint folder."""
    meta = ckpt.read_meta(folder)
    try:
        cfg = validate(config_from_dict(meta["config"], saved=True))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"invalid config in {folder}: {e}") from None
    return cfg, meta


def build_modules(cfg: RunConfig) -> dict[str, nn.Module]:
    """Fresh modules, built once, for every role a checkpoint of this config may hold besides the EMA
    copies: the generator, the discriminator and the kind's extra modules (BlobGAN's encoder)."""
    kind = of(cfg)
    g, d = kind.build(cfg.model)
    return {GENERATOR: g, DISCRIMINATOR: d, **kind.extra_modules(cfg.model, g)}


def known_roles(cfg: RunConfig) -> list[str]:
    """Every module role a checkpoint of this config may hold: those of `build_modules` and the EMA
    copy of each. Other safetensors files in a folder are not this model's and are left alone."""
    roles = list(build_modules(cfg))
    return roles + [ema_role(r) for r in roles]


def build_role(cfg: RunConfig, role: str) -> nn.Module:
    """A fresh module for one checkpoint role (an EMA copy is built like the module it follows)."""
    modules = build_modules(cfg)
    if followed_role(role) not in modules:
        raise CheckpointError(f"a {cfg.model.kind} checkpoint has no module {role!r}")
    return modules[followed_role(role)]
