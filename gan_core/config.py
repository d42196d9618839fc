"""Dataclass configs for data, training and a run; no torch (importable anywhere, cheaply).

Each model kind keeps its own config dataclass beside its networks (`gan_core.models.<kind>`);
`RunConfig.model` holds one of them. The whole `RunConfig` is saved as `config.json` beside the
weights and models are rebuilt from it; Hydra (scripts/train.py) and the app's widgets map onto
these fields one-to-one. `gan_core.kinds` turns JSON back into a `RunConfig` (it knows which
config class each kind uses) and runs the checks here plus the kind's own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

SOURCES = ("shapes", "scenes", "folder", "zip", "parquet", "hub", "idx")
IMAGE_SIZES = (32, 64, 128)


@dataclass
class DataConfig:
    source: str = "shapes"  # shapes | scenes (built in) | folder | zip | parquet | hub | idx (need data.path)
    path: Optional[str] = None  # folder / zip / parquet / IDX folder / Hub dataset id
    image_size: int = 64  # pixels a side (32, 64 or 128): the one image size to set; the model's follows it
    channels: int = 3  # 1 (greyscale) or 3 (colour); the model's follows it
    split: str = "train"  # for idx, hub and parquet sources
    num_images: int = 20000  # for the procedural sources (shapes, scenes)
    seed: int = 0  # for the procedural sources
    image_column: Optional[str] = None  # parquet / hub; found automatically when None
    label_column: Optional[str] = None  # parquet / hub; "label" when present
    limit: Optional[int] = None  # keep at most this many images (None: all)
    cache_dir: Optional[str] = None  # None: $GANLAB_CACHE or ~/.cache/ganlab


@dataclass
class TrainConfig:
    steps: int = 2000  # training updates (each sees one batch)
    batch_size: int = 128  # images per step
    lr: float = 2e-4  # Adam's learning rate (G's, and D's unless lr_d is set)
    lr_d: Optional[float] = None  # D's learning rate (None: lr); higher than lr is TTUR (Heusel et al. 2017)
    beta1: float = 0.5  # Adam's beta1 (0.5 as in DCGAN)
    beta2: float = 0.999  # Adam's beta2
    seed: int = 0  # seeds the weights, the batches and the sample grid's latents
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (the fastest, timed on this machine) | fp32 | bf16 | fp16 (with a gradient scaler)
    channels_last: Optional[bool] = None  # None: whichever memory format times faster here
    compile: bool = False  # torch.compile G and D (CUDA mostly)
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs by inductor) | max-autotune
    cuda_graph: Optional[bool] = None  # the whole step as one CUDA graph; None: on CUDA where it times faster
    # CPU, fp32 or bf16, channels_last: run a convolution's forward or gradients as one matmul over its patches where
    # that times faster than oneDNN, layer by layer; None: if the whole step then times faster too; true: without
    # that check; false: never
    conv_gemm: Optional[bool] = None
    ema_decay: float = 0.0  # keep an exponential moving average of G (0.999 is common); samples use it. 0: none
    # Stabilisers, off by default (off = the tutorial's algorithm exactly):
    real_label: float = 1.0  # one-sided label smoothing when < 1 (Salimans et al. 2016 use 0.9)
    instance_noise: float = 0.0  # std of Gaussian noise added to every D input, in [-1, 1] image units
    instance_noise_steps: int = 0  # anneal that std linearly to 0 over this many steps (0: constant)
    log_every: int = 50  # metrics are copied to the host only every N steps
    sample_every: int = 500  # write a sample grid to OUT/samples every N steps
    checkpoint_every: int = 500  # save a checkpoint to OUT/checkpoints every N steps
    checkpoint_minutes: float = 10.0  # also save after this much wall time since the last save (0: steps only; one process only)
    keep_checkpoints: int = 2  # older checkpoints are deleted
    out_dir: str = "runs/dcgan"  # the run folder (OUT)
    resume: bool = False  # continue from OUT's latest checkpoint (the model config must match)
    # start a new run from this checkpoint's weights (a checkpoint or run folder, or a Hub repo id): G, D and their
    # EMA copies where it has them, fresh optimizers, step 0; its model config must be this one (loss fields apart).
    # A resumed run that already has checkpoints goes on from them instead
    init_from: Optional[str] = None


@dataclass
class RunConfig:
    model: Any = None  # a model kind's config (DCGANConfig, ClusterConfig, ...): required
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: str = "none"  # none | wandb


def field_help(cls: type) -> dict[str, str]:
    """field name -> its description, read from the comments beside (and just above) each field in the
    dataclass's source: the comments are the documentation, so `--help` cannot drift from them."""
    import inspect
    import io
    import tokenize

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments = {}  # line index -> comment text
    try:
        for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0] - 1] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    out, above = {}, []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            if not comments.get(i, "").endswith(":"):  # a heading over several fields is not one field's help
                above.append(comments.get(i, ""))
            continue
        name = stripped.split(":", 1)[0].strip()
        if name in names and ":" in stripped:
            text = " ".join([*above, comments.get(i, "")]).strip()
            if text:
                out[name] = text
        above = []
    return out


def check_ints(*checks: tuple) -> None:
    """(name, value, lo, hi) tuples: each value an integer in [lo, hi], else ValueError with one line."""
    for name, value, lo, hi in checks:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")


def check_numbers(*checks: tuple) -> None:
    """(name, value, lo, hi) tuples: each value a number in [lo, hi] (NaN fails), else ValueError."""
    for name, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], not {value!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")


def validate_common(cfg: RunConfig) -> RunConfig:
    """The checks every run shares (data, training, logger); a kind adds its own model checks
    (`gan_core.kinds.validate` runs both). Raises ValueError with one clear line."""
    d, t = cfg.data, cfg.train
    if cfg.model is None or not dataclasses.is_dataclass(cfg.model) or not hasattr(cfg.model, "kind"):
        raise ValueError("RunConfig.model must be a model kind's config (e.g. DCGANConfig())")
    if d.source not in SOURCES:
        raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, not {d.source!r}")
    if d.source in ("folder", "zip", "parquet", "hub", "idx") and not d.path:
        raise ValueError(f"data.source={d.source} needs data.path")
    if d.image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, not {d.image_size}")
    if d.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {d.channels}")
    check_ints(
        ("train.steps", t.steps, 1, 10_000_000),
        ("train.batch_size", t.batch_size, 1, 65536),
        ("data.num_images", d.num_images, 1, 10_000_000),
        ("train.log_every", t.log_every, 1, 10_000_000),
        ("train.sample_every", t.sample_every, 1, 10_000_000),
        ("train.checkpoint_every", t.checkpoint_every, 1, 10_000_000),
        ("train.keep_checkpoints", t.keep_checkpoints, 1, 10_000),
        ("train.instance_noise_steps", t.instance_noise_steps, 0, 10_000_000),
    )
    check_numbers(
        ("train.lr", t.lr, 1e-8, 1.0),
        ("train.lr_d", t.lr if t.lr_d is None else t.lr_d, 1e-8, 1.0),
        ("train.beta1", t.beta1, 0.0, 0.9999),
        ("train.beta2", t.beta2, 0.0, 0.99999),
        ("train.ema_decay", t.ema_decay, 0.0, 0.99999),
        ("train.real_label", t.real_label, 0.5, 1.0),
        ("train.instance_noise", t.instance_noise, 0.0, 2.0),
        ("train.checkpoint_minutes", t.checkpoint_minutes, 0.0, 1e6),
    )
    if d.limit is not None and (not isinstance(d.limit, int) or d.limit < 1):
        raise ValueError(f"data.limit must be a positive integer or null, not {d.limit!r}")
    if t.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, not {t.precision!r}")
    if t.compile_mode not in ("default", "reduce-overhead", "max-autotune"):
        raise ValueError(f"train.compile_mode must be default, reduce-overhead or max-autotune, not {t.compile_mode!r}")
    if cfg.logger not in ("none", "wandb"):
        raise ValueError(f"logger must be none or wandb, not {cfg.logger!r}")
    return cfg


def sync_model_to_data(cfg: RunConfig) -> RunConfig:
    """The data decides the image geometry; the model config records it so it can be rebuilt."""
    cfg.model.image_size = cfg.data.image_size
    cfg.model.channels = cfg.data.channels
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def build_dataclass(cls: type, values: dict) -> Any:
    """`cls(**values)`, refusing fields `cls` does not have (one line naming them)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**values)


def from_dict(values: dict, model_configs: dict[str, type], default_kind: str) -> RunConfig:
    """Rebuild a RunConfig from its JSON form, refusing unknown fields. `model_configs` maps each
    kind's name to its config class (the registry's view, passed in so this module stays torch-free)."""
    values = dict(values)
    model = dict(values.pop("model", {}))
    kind = model.get("kind", default_kind)
    if kind not in model_configs:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(model_configs)})")
    return RunConfig(
        model=build_dataclass(model_configs[kind], model),
        data=build_dataclass(DataConfig, dict(values.pop("data", {}))),
        train=build_dataclass(TrainConfig, dict(values.pop("train", {}))),
        **{k: v for k, v in values.items() if k in ("logger",)},
    )
