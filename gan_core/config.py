"""Dataclass configs. One per model kind, one for data, one for training.

The whole `RunConfig` is saved as `config.json` beside the weights, and models are rebuilt
from it; Hydra (scripts/train.py) and the app's widgets map onto these fields one-to-one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

SOURCES = ("shapes", "scenes", "folder", "zip", "parquet", "hub", "idx")
IMAGE_SIZES = (32, 64, 128)


@dataclass
class DataConfig:
    source: str = "shapes"  # one of SOURCES
    path: Optional[str] = None  # folder / zip / parquet / IDX folder / Hub dataset id
    image_size: int = 64
    channels: int = 3
    split: str = "train"  # for idx, hub and parquet sources
    num_images: int = 20000  # for the procedural sources (shapes, scenes)
    seed: int = 0  # for the procedural sources
    image_column: Optional[str] = None  # parquet / hub; found automatically when None
    label_column: Optional[str] = None  # parquet / hub; "label" when present
    limit: Optional[int] = None  # keep at most this many images (None: all)
    cache_dir: Optional[str] = None  # None: $GANLAB_CACHE or ~/.cache/ganlab


@dataclass
class DCGANConfig:
    kind: str = "dcgan"
    image_size: int = 64
    channels: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64


@dataclass
class ClusterConfig:
    """A DCGAN whose generator also takes a categorical code and whose discriminator trunk also
    feeds K-way cluster heads (plus over-clustering heads), each with a few sub-heads."""
    kind: str = "cluster"
    image_size: int = 32
    channels: int = 1
    nz: int = 64  # noise dimensions; the one-hot code (k) is appended
    ngf: int = 64
    ndf: int = 64
    k: int = 10
    overcluster: int = 50  # ~5K ways: more clusters than classes help IIC find finer structure
    subheads: int = 5  # the one with the lowest IIC loss is used for prediction
    head_hidden: int = 0  # >0: the heads read a shared hidden layer of this width (ReLU) instead of the trunk
    objective: str = "iic"  # iic | catgan | none (code cross-entropy only: "ours without IIC")
    iic_weight: float = 1.0
    iic_repeats: int = 1  # augmented views per real image for IIC (pairs: the image with each view)
    aug_rotate_deg: float = 15.0  # IIC views: rotation range (180 where orientation is a nuisance)
    aug_scale_min: float = 0.6  # IIC views: area of the random crop relative to the image ...
    aug_scale_max: float = 1.0  # ... (above 1 zooms out, so object size becomes a nuisance)
    aug_translate: float = 0.1  # IIC views: extra shift, as a fraction of the side (large: position is a nuisance)
    aug_aspect: float = 0.0  # IIC views: log of the largest width/height stretch (0: none)
    aug_photometric: float = 0.25  # IIC views: brightness and contrast jitter range (jitter mode)
    aug_colour: str = "jitter"  # IIC views: "jitter" (brightness/contrast/saturation) or "remap" (any colours)
    code_weight: float = 1.0  # cross-entropy of the cluster head on generated images vs their code (G's loss)
    code_weight_d: Optional[float] = None  # the same term in D's loss (None: code_weight); small: IIC leads
    cluster_names: Optional[list] = None  # editable, saved with the checkpoint
    # "mask": D first turns each image into its object's mask (distance from the background colour),
    # centred and scaled to a fixed spread, so colour, polarity, position and size cannot decide a
    # cluster (for one object on a flat background, like the built-in shapes). "polar": that mask read
    # along rays from its centre (rows: angle, columns: radius), so a rotation is a roll of the rows and
    # D's convs wrap around the full turn. "none": the pixels.
    input_transform: str = "none"
    mask_size: int = 32  # with "mask"/"polar": the side of the mask D's trunk reads (taken from the full-size image)
    head_pool: str = "none"  # "angle" (with "polar"): the cluster heads see D's features averaged over angle
    predict_views: int = 3  # prediction averages the image and centred crops spanning the training crop range


@dataclass
class BlobGANConfig:
    """BlobGAN at DCGAN scale: a layout net (noise -> K blobs + background), a painter that starts from
    the splatted structure features at image_size/4 and is modulated per pixel by the splatted
    styles, and a BatchNorm-free discriminator trained with the logistic loss and lazy R1."""
    kind: str = "blobgan"
    image_size: int = 64
    channels: int = 3
    nz: int = 64
    ngf: int = 16  # painter width: 4ngf at image_size/4, 2ngf at /2, ngf at full size
    ndf: int = 32
    blobs: int = 8
    min_axis: float = 0.2  # elongation a, b in [min_axis, 1]: axis ratio at most sqrt(1/min_axis) (0.2: ~2.2)
    feature_dim: int = 128  # structure feature phi per blob
    style_dim: int = 64  # style feature psi per blob
    layout_hidden: int = 256
    jitter: float = 0.02  # std of the noise on blob centres during training (image fractions)
    r1_gamma: float = 0.1
    r1_every: int = 16
    encoder_ndf: int = 32  # inversion encoder width (DCGAN-style trunk)
    # > 0: an encoder trains alongside the GAN (the inversion loss without LPIPS), and the painter also
    # gets this x MSE(x, G(E(x))) on real images, so it must redraw real scenes from blobs it is given.
    # That is what put the blobs on the objects (BENCHMARKS.md: hit rate 0.22 for the GAN alone, 0.91 by
    # step 1,750 with it); 0 trains the GAN alone, about 1.6x faster a step.
    recon_weight: float = 30.0
    encoder_lr: float = 5e-4  # the encoder's Adam rate when recon_weight > 0
    # The latent term's weight for that encoder. The written inversion loss has 10, but the latent MSE
    # (of the whole raw layout vector, hidden blobs' features included) then outweighs the image terms
    # 50 to 1 and the reconstructions lag (measured: 17.6 dB by step 1,000 with 10, 21.1 dB by step
    # 1,250 with 0.1; BENCHMARKS.md).
    encoder_latent_weight: float = 0.1
    inversion_loss: Optional[str] = None  # written when the encoder is trained: which loss terms it used


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    lr_d: Optional[float] = None  # D's learning rate (None: lr); higher than lr is TTUR (Heusel et al. 2017)
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where it is fast) | bf16 | fp32
    channels_last: Optional[bool] = None  # None: on (measured no slower in fp32 on CPU, faster with bf16)
    compile: bool = False  # torch.compile G and D (CUDA mostly)
    ema_decay: float = 0.0  # 0 disables the EMA copy of G
    # Stabilisers, off by default (off = the tutorial's algorithm exactly):
    real_label: float = 1.0  # one-sided label smoothing when < 1 (Salimans et al. 2016 use 0.9)
    instance_noise: float = 0.0  # std of Gaussian noise added to every D input, in [-1, 1] image units
    instance_noise_steps: int = 0  # anneal that std linearly to 0 over this many steps (0: constant)
    log_every: int = 50  # metrics are copied to the host only every N steps
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    out_dir: str = "runs/dcgan"
    resume: bool = False


@dataclass
class RunConfig:
    model: Any = field(default_factory=DCGANConfig)  # DCGANConfig | ClusterConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: str = "none"  # none | wandb


MODEL_CONFIGS: dict[str, type] = {"dcgan": DCGANConfig, "cluster": ClusterConfig, "blobgan": BlobGANConfig}


def _check_ints(*checks: tuple) -> None:
    for name, value, lo, hi in checks:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")


def _check_numbers(*checks: tuple) -> None:
    for name, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) <= hi:  # NaN fails
            raise ValueError(f"{name} must be a number in [{lo}, {hi}], not {value!r}")


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges and types before anything is allocated; raise ValueError with one clear line."""
    d, m, t = cfg.data, cfg.model, cfg.train
    if d.source not in SOURCES:
        raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, not {d.source!r}")
    if d.source in ("folder", "zip", "parquet", "hub", "idx") and not d.path:
        raise ValueError(f"data.source={d.source} needs data.path")
    if d.image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, not {d.image_size}")
    if d.channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {d.channels}")
    if m.kind not in MODEL_CONFIGS:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_CONFIGS)}, not {m.kind!r}")
    _check_ints(
        ("train.steps", t.steps, 1, 10_000_000),
        ("train.batch_size", t.batch_size, 1, 65536),
        ("data.num_images", d.num_images, 1, 10_000_000),
        ("train.log_every", t.log_every, 1, 10_000_000),
        ("train.sample_every", t.sample_every, 1, 10_000_000),
        ("train.checkpoint_every", t.checkpoint_every, 1, 10_000_000),
        ("train.keep_checkpoints", t.keep_checkpoints, 1, 10_000),
        ("train.instance_noise_steps", t.instance_noise_steps, 0, 10_000_000),
        ("model.nz", m.nz, 1, 4096),
        ("model.ngf", m.ngf, 1, 1024),
        ("model.ndf", m.ndf, 1, 1024),
    )
    _check_numbers(
        ("train.lr", t.lr, 1e-8, 1.0),
        ("train.lr_d", t.lr if t.lr_d is None else t.lr_d, 1e-8, 1.0),
        ("train.beta1", t.beta1, 0.0, 0.9999),
        ("train.beta2", t.beta2, 0.0, 0.99999),
        ("train.ema_decay", t.ema_decay, 0.0, 0.99999),
        ("train.real_label", t.real_label, 0.5, 1.0),
        ("train.instance_noise", t.instance_noise, 0.0, 2.0),
    )
    if m.kind == "cluster":
        _check_ints(("model.k", m.k, 2, 1000), ("model.overcluster", m.overcluster, 2, 10000),
                    ("model.subheads", m.subheads, 1, 64), ("model.iic_repeats", m.iic_repeats, 1, 64),
                    ("model.head_hidden", m.head_hidden, 0, 8192),
                    ("model.predict_views", m.predict_views, 1, 16))
        _check_numbers(("model.iic_weight", m.iic_weight, 0.0, 100.0), ("model.code_weight", m.code_weight, 0.0, 100.0),
                       ("model.code_weight_d", 0.0 if m.code_weight_d is None else m.code_weight_d, 0.0, 100.0),
                       ("model.aug_rotate_deg", m.aug_rotate_deg, 0.0, 180.0),
                       ("model.aug_scale_min", m.aug_scale_min, 0.05, 4.0),
                       ("model.aug_scale_max", m.aug_scale_max, 0.05, 4.0),
                       ("model.aug_translate", m.aug_translate, 0.0, 0.5),
                       ("model.aug_aspect", m.aug_aspect, 0.0, 1.0),
                       ("model.aug_photometric", m.aug_photometric, 0.0, 0.9))
        if m.aug_scale_min > m.aug_scale_max:
            raise ValueError(f"model.aug_scale_min ({m.aug_scale_min}) is above model.aug_scale_max ({m.aug_scale_max})")
        if m.aug_colour not in ("jitter", "remap"):
            raise ValueError(f"model.aug_colour must be jitter or remap, not {m.aug_colour!r}")
        if m.input_transform not in ("none", "mask", "polar"):
            raise ValueError(f"model.input_transform must be none, mask or polar, not {m.input_transform!r}")
        if m.head_pool not in ("none", "angle") or (m.head_pool == "angle" and m.input_transform != "polar"):
            raise ValueError(f"model.head_pool must be none, or angle with input_transform=polar, not {m.head_pool!r}")
        if m.input_transform != "none" and m.mask_size not in IMAGE_SIZES:
            raise ValueError(f"model.mask_size must be one of {IMAGE_SIZES}, not {m.mask_size!r}")
        if m.objective not in ("iic", "catgan", "none"):
            raise ValueError(f"model.objective must be iic, catgan or none, not {m.objective!r}")
        if m.cluster_names is not None and len(m.cluster_names) != m.k:
            raise ValueError(f"model.cluster_names needs {m.k} names, got {len(m.cluster_names)}")
    if m.kind == "blobgan":
        _check_ints(("model.blobs", m.blobs, 1, 64), ("model.feature_dim", m.feature_dim, 1, 4096),
                    ("model.style_dim", m.style_dim, 1, 4096), ("model.layout_hidden", m.layout_hidden, 1, 8192),
                    ("model.r1_every", m.r1_every, 1, 10_000), ("model.encoder_ndf", m.encoder_ndf, 1, 1024))
        _check_numbers(("model.jitter", m.jitter, 0.0, 0.5), ("model.r1_gamma", m.r1_gamma, 0.0, 1000.0),
                       ("model.min_axis", m.min_axis, 0.001, 1.0),
                       ("model.recon_weight", m.recon_weight, 0.0, 1e6), ("model.encoder_lr", m.encoder_lr, 1e-8, 1.0),
                       ("model.encoder_latent_weight", m.encoder_latent_weight, 0.0, 1e6))
        if t.compile and m.r1_gamma > 0:
            raise ValueError("blobgan's R1 penalty needs a double backward, which torch.compile does not "
                             "support: set train.compile=false or model.r1_gamma=0")
        if t.real_label != 1.0 or t.instance_noise != 0.0:
            raise ValueError("blobgan uses the logistic loss with R1: train.real_label must be 1 and "
                             "train.instance_noise 0")
    if d.limit is not None and (not isinstance(d.limit, int) or d.limit < 1):
        raise ValueError(f"data.limit must be a positive integer or null, not {d.limit!r}")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"train.precision must be auto, bf16 or fp32, not {t.precision!r}")
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


def _build(cls: type, values: dict) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**values)


def from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig from its JSON form, refusing unknown fields."""
    values = dict(values)
    model = dict(values.pop("model", {}))
    kind = model.get("kind", "dcgan")
    if kind not in MODEL_CONFIGS:
        raise ValueError(f"unknown model kind {kind!r}")
    return RunConfig(
        model=_build(MODEL_CONFIGS[kind], model),
        data=_build(DataConfig, dict(values.pop("data", {}))),
        train=_build(TrainConfig, dict(values.pop("train", {}))),
        **{k: v for k, v in values.items() if k in ("logger",)},
    )

