"""Training: a pure `train_step` and a `train` loop that reports through callbacks.

The algorithm is the PyTorch DCGAN tutorial's (Adam 2e-4, betas (0.5, 0.999); D on real, D on
detached fake, D step; G through the updated D, G step). What differs is only how fast it runs:
the dataset is a uint8 tensor on the training device and a batch is an index gather; bf16
autocast where the hardware is fast at it, with the sigmoid folded into BCE-with-logits;
channels_last; fused Adam and cudnn.benchmark on CUDA; D's weight gradients are not computed
during the G step (the tutorial computes and then discards them); metrics stay on the device and
are copied to the host every `log_every` steps.

Randomness is a pure function of (seed, rank, step): each step draws its batch indices and
noise from a generator seeded with those, so a resumed run sees exactly the data and noise an
uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import checkpoint as ckpt
from . import blobgan, cluster
from . import config as config_mod
from .augment import instance_noise
from .data import ImageDataset, load_dataset, to_float
from .latent import generate, make_latent
from .losses import d_loss_bce, g_loss_bce

ProgressFn = Callable[[int, dict], None]
SAMPLE_COUNT = 64


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, not {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device asks for CUDA, but no CUDA GPU is available here (use cpu or auto)")
    return device


def cpu_bf16_is_fast() -> bool:
    """oneDNN runs bf16 convolutions natively only with AVX512-BF16 or AMX; elsewhere it emulates
    them, which is far slower than fp32 (measured ~10x slower on an AVX2-only EPYC)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """-> the autocast dtype, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_bf16_is_fast() else None


@dataclass
class Models:
    G: nn.Module  # possibly wrapped (DDP / compiled); used for forward passes
    D: nn.Module
    g_core: nn.Module  # the plain modules, for weights, EMA and checkpoints
    d_core: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: Optional[nn.Module] = None
    autocast_dtype: Optional[torch.dtype] = None
    memory_format: torch.memory_format = torch.contiguous_format
    d_for_g: Optional[nn.Module] = None  # D for the G step: the unwrapped D under DDP
    model_cfg: object = None  # the model's config (the cluster step reads k, weights, objective)
    ema_d: Optional[nn.Module] = None  # EMA copy of D, for models whose D is used at inference (cluster)
    step: int = 0  # the step being taken (set by the loop; blobgan's lazy R1 reads it)
    encoder: Optional[nn.Module] = None  # blobgan with recon_weight > 0: the encoder trained alongside
    opt_e: Optional[torch.optim.Optimizer] = None


def use_channels_last(t: config_mod.TrainConfig, device: torch.device) -> bool:
    """`train.channels_last`, or by default: on, except torch.compile on CUDA. There (torch 2.11, H200)
    inductor's backward of the generator's first ConvTranspose failed a stride check with channels_last
    weights; compiled and contiguous it ran at 14,973 img/s against 13,741 eager channels_last."""
    if t.channels_last is not None:
        return bool(t.channels_last)
    return not (t.compile and device.type == "cuda")


def build_models(cfg: config_mod.RunConfig, device: torch.device) -> Models:
    t = cfg.train
    torch.manual_seed(t.seed)
    g, d = ckpt.MODELS[cfg.model.kind](cfg.model)
    autocast_dtype = resolve_precision(t.precision, device)
    fmt = torch.channels_last if use_channels_last(t, device) else torch.contiguous_format
    g, d = g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(g.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
    lr_d = t.lr if t.lr_d is None else t.lr_d  # two time-scale updates (TTUR) when they differ
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=(t.beta1, t.beta2), fused=fused)
    ema = copy.deepcopy(g).eval().requires_grad_(False) if t.ema_decay > 0 else None
    G, D = g, d
    if t.compile:
        G, D = torch.compile(g), torch.compile(d)
    d_for_g = D
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # Without IIC the over-clustering heads get no gradient; DDP must be told to expect that.
        unused = cfg.model.kind == "cluster" and cfg.model.objective != "iic"
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids, find_unused_parameters=unused)
        d_for_g = D.module  # G's step must not trigger D's gradient all-reduce
    # A cluster model classifies with its D, so D gets an EMA copy too (the weights used to predict).
    ema_d = copy.deepcopy(d).eval().requires_grad_(False) if t.ema_decay > 0 and cfg.model.kind == "cluster" else None
    m = Models(G, D, g, d, opt_g, opt_d, ema, autocast_dtype, fmt, d_for_g, cfg.model, ema_d)
    if cfg.model.kind == "blobgan" and cfg.model.recon_weight > 0:
        m.encoder = blobgan.build_encoder(cfg.model, g).to(device, memory_format=fmt)
        m.opt_e = torch.optim.Adam(m.encoder.parameters(), lr=cfg.model.encoder_lr, betas=(0.9, 0.999), fused=fused)
    return m


def optimizers(m: Models) -> dict[str, torch.optim.Optimizer]:
    """The optimizers a training checkpoint holds, by name."""
    out = {"G": m.opt_g, "D": m.opt_d}
    if m.opt_e is not None:
        out["E"] = m.opt_e
    return out


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(m: Models, real: torch.Tensor, noise: torch.Tensor, real_label: float = 1.0,
               input_noise_std: float = 0.0, gen: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """One DCGAN update of D then G. Returns detached metric tensors (no host sync).

    With the defaults this is the tutorial's update. `real_label` < 1 smooths the real target;
    `input_noise_std` > 0 adds Gaussian instance noise (drawn from `gen`) to every image D sees."""
    device = real.device

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return instance_noise(x, input_noise_std, gen)

    with _autocast(device, m.autocast_dtype):
        real_logits = m.D(noisy(real), logits=True)
        fake = m.G(noise)
        fake_logits = m.D(noisy(fake.detach()), logits=True)
        loss_d = d_loss_bce(real_logits, fake_logits, real_label)
    m.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    m.opt_d.step()

    m.d_core.requires_grad_(False)  # G's gradient flows through D; D's own weight grads are not needed
    with _autocast(device, m.autocast_dtype):
        gen_logits = m.d_for_g(noisy(fake), logits=True)
        loss_g = g_loss_bce(gen_logits)
    return g_update_and_metrics(m, loss_d, loss_g, real_logits, fake_logits, gen_logits)


def g_update_and_metrics(m: Models, loss_d, loss_g, real_logits, fake_logits, gen_logits) -> dict[str, torch.Tensor]:
    """Finish a step: backpropagate G's loss (D frozen by the caller), step G, unfreeze D, and
    return the detached metrics every model kind reports."""
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    m.opt_g.step()
    m.d_core.requires_grad_(True)
    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
        "d_fake": torch.sigmoid(fake_logits.detach().float()).mean(),
        "d_fake_after": torch.sigmoid(gen_logits.detach().float()).mean(),
    }


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_p, p = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_p, p, 1.0 - decay)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


def _ema_copies(m: Models) -> list[tuple[str, nn.Module, nn.Module]]:
    """(checkpoint file name, EMA copy, the model it follows) for each EMA copy the run keeps."""
    pairs = [("generator_ema", m.ema, m.g_core), ("discriminator_ema", m.ema_d, m.d_core)]
    return [(name, ema, core) for name, ema, core in pairs if ema is not None]


def ema_decay_at(decay: float, step: int) -> float:
    """Warm-up so early EMA weights are not dominated by the random init: min(decay, (1+n)/(10+n))."""
    return min(decay, (1.0 + step) / (10.0 + step))


def instance_noise_std(t: config_mod.TrainConfig, step: int) -> float:
    if t.instance_noise <= 0:
        return 0.0
    if t.instance_noise_steps <= 0:
        return t.instance_noise
    return t.instance_noise * max(0.0, 1.0 - step / t.instance_noise_steps)


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """A generator seeded by a hash of (seed, rank, step): no two triples share a stream."""
    import numpy as np

    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1))
    return gen


def get_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator, fmt: torch.memory_format) -> torch.Tensor:
    idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen, device=images.device)
    return to_float(images.index_select(0, idx)).contiguous(memory_format=fmt)


STEPS = {"dcgan": train_step, "cluster": cluster.train_step, "blobgan": blobgan.train_step}  # model kind -> one training update


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train(cfg: config_mod.RunConfig, on_progress: Optional[ProgressFn] = None,
          should_stop: Optional[Callable[[], bool]] = None,
          on_sample: Optional[Callable[[int, torch.Tensor], None]] = None,
          on_checkpoint: Optional[Callable[[int, Path], None]] = None,
          dataset: Optional[ImageDataset] = None,
          on_data_progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Train `cfg` to `cfg.train.steps`, resuming from `cfg.train.out_dir` when `cfg.train.resume`.

    Callbacks (rank 0 only): `on_progress(step, metrics)` every `log_every` steps with host floats,
    `on_sample(step, images)` every `sample_every` steps, `on_checkpoint(step, folder)` after each
    save; `should_stop()` is polled every `log_every` steps. Returns a dict of results."""
    config_mod.validate(config_mod.sync_model_to_data(cfg))
    t = cfg.train
    device = resolve_device(t.device)
    rank, world = _dist_info()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir = Path(t.out_dir)
    if rank == 0:  # a read-only or missing output folder fails here, before the data is read
        ckpt.check_output_folder(out_dir)
        if t.resume:
            ckpt.recover(out_dir)

    ds = dataset if dataset is not None else load_dataset(cfg.data, progress=on_data_progress)
    if len(ds) == 0:
        raise ValueError("the dataset has no images")
    if cfg.model.kind == "cluster" and len(ds) < cfg.model.k:
        raise ValueError(f"K = {cfg.model.k} clusters need at least {cfg.model.k} images; the dataset has {len(ds)}")
    images = ds.images[rank::world] if world > 1 else ds.images
    if len(images) == 0:
        raise ValueError(f"{len(ds)} images cannot be shared among {world} processes")
    if images.shape[1] != cfg.data.channels or images.shape[-1] != cfg.data.image_size:
        raise ValueError(f"dataset images are {tuple(images.shape[1:])}, the config asks for "
                         f"{cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size}")
    images = images.to(device, non_blocking=True)

    if world > 1 and cfg.model.kind == "blobgan" and cfg.model.recon_weight > 0:
        raise ValueError("model.recon_weight trains its encoder in one process; run it without torchrun")
    m = build_models(cfg, device)

    def modules() -> dict[str, nn.Module]:
        out = {"generator": m.g_core, "discriminator": m.d_core}
        out.update((name, ema) for name, ema, _ in _ema_copies(m))
        if m.encoder is not None:
            out["encoder"] = m.encoder
        return out

    if rank == 0:  # room for a new checkpoint beside the kept one, or the first save would fail mid-run
        one = ckpt.checkpoint_bytes(modules(), optimizers(m))
        ckpt.check_output_folder(out_dir, need_bytes=2 * one)
    step = 0
    if t.resume:
        folder = ckpt.latest_checkpoint(out_dir)
        if folder is not None:
            saved, meta = ckpt.read_config(folder)
            if config_mod.to_dict(saved.model) != config_mod.to_dict(cfg.model):
                raise ValueError(f"cannot resume: {folder} was trained with a different model config")
            ckpt.load_weights(m.g_core, folder / "generator.safetensors")
            ckpt.load_weights(m.d_core, folder / "discriminator.safetensors")
            for name, ema, core in _ema_copies(m):
                if (folder / f"{name}.safetensors").exists():
                    ckpt.load_weights(ema, folder / f"{name}.safetensors")
                else:  # EMA switched on at resume: start it from the trained model, not from the init
                    ema.load_state_dict(core.state_dict())
            if m.encoder is not None and (folder / "encoder.safetensors").exists():  # else switched on at resume
                ckpt.load_weights(m.encoder, folder / "encoder.safetensors")
            if not (folder / "optimizer.safetensors").exists():
                raise ValueError(f"cannot resume from {folder}: it has no optimizer state (an exported checkpoint?)")
            ckpt.load_optimizers(folder, optimizers(m))
            step = int(meta["step"])

    # Sample grids: fixed latents; for cluster models each row of 8 cycles through the codes.
    codes = torch.arange(SAMPLE_COUNT) % cfg.model.k if cfg.model.kind == "cluster" else None
    fixed_noise = make_latent(cfg.model, SAMPLE_COUNT, torch.Generator().manual_seed(t.seed), "cpu", codes).to(device)
    step_fn = STEPS[cfg.model.kind]
    m.G.train()
    m.D.train()

    last_metrics: dict[str, float] = {}
    last_saved: Optional[Path] = ckpt.latest_checkpoint(out_dir) if t.resume else None
    stop_reason = None
    start_step, t0 = step, time.perf_counter()
    window_t0, window_steps = t0, 0
    sums: dict[str, torch.Tensor] = {}

    def save() -> Optional[Path]:
        if rank != 0:
            return None
        folder = ckpt.save_training_checkpoint(out_dir, cfg, step, modules(), optimizers(m),
                                               last_metrics, keep=t.keep_checkpoints)
        if on_checkpoint:
            on_checkpoint(step, folder)
        return folder

    while step < t.steps:
        gen = step_generator(t.seed, rank, step, device)
        real = get_batch(images, t.batch_size, gen, m.memory_format)
        noise = make_latent(cfg.model, t.batch_size, gen, device)
        m.step = step
        metrics = step_fn(m, real, noise, t.real_label, instance_noise_std(t, step), gen)
        for _, ema, core in _ema_copies(m):
            update_ema(ema, core, ema_decay_at(t.ema_decay, step))
        step += 1
        window_steps += 1
        for k, v in metrics.items():
            sums[k] = sums[k] + v if k in sums else v.clone()

        # Metrics are also checked before every checkpoint, so a non-finite model is never saved.
        if step % t.log_every == 0 or step == t.steps or step % t.checkpoint_every == 0:
            values = torch.stack([sums[k].float() for k in sums]).div(window_steps).tolist()  # the one host sync
            now = time.perf_counter()
            last_metrics = dict(zip(sums, values))
            rate = window_steps * t.batch_size * world / max(now - window_t0, 1e-9)
            last_metrics.update(step=step, images_per_s=rate,
                                eta_s=(t.steps - step) * t.batch_size * world / max(rate, 1e-9))
            sums, window_t0, window_steps = {}, now, 0
            bad = not all(math.isfinite(v) for v in values)
            if rank == 0 and on_progress and not bad:
                on_progress(step, last_metrics)
            stop = bool(should_stop and should_stop())
            if world > 1:  # every rank stops together, or the others would hang in the next all-reduce
                flags = torch.tensor([float(bad), float(stop)], device=device)
                torch.distributed.all_reduce(flags)
                bad, stop = flags[0].item() > 0, flags[1].item() > 0
            if bad:
                stop_reason = f"non-finite loss at step {step}; kept the last good checkpoint"
                break
            if stop:
                stop_reason = "stopped by request"
                break
        if rank == 0 and on_sample and (step % t.sample_every == 0 or step == t.steps):
            on_sample(step, generate(m.ema if m.ema is not None else m.g_core, fixed_noise))
        if step % t.checkpoint_every == 0 and step < t.steps:
            last_saved = save() or last_saved

    if (stop_reason is None or stop_reason == "stopped by request") and step > start_step:
        last_saved = save() or last_saved
    elapsed = time.perf_counter() - t0
    return {
        "checkpoint": str(last_saved) if last_saved else None,
        "step": step,
        "steps_run": step - start_step,
        "seconds": round(elapsed, 3),
        "images_per_s": round((step - start_step) * t.batch_size * world / max(elapsed, 1e-9), 2),
        "metrics": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in last_metrics.items()},
        "stopped": stop_reason,
        "device": str(device),
        "precision": str(m.autocast_dtype or torch.float32).replace("torch.", ""),
        "world_size": world,
    }
