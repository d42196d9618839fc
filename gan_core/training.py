"""The training loop: `train(cfg, callbacks)` in small named phases, for every kind in the registry.

    set-up     check the config, pick the device, check the output folder, read the data
    build      the kind's networks, optimizers, EMA copies and extra modules (`build_models`)
    resume     weights, EMA copies and optimizer state from the run's latest checkpoint
    steps      `kind.train_step(models, batch)` for each step, EMA updates, metrics every log_every
    save       an atomic checkpoint every checkpoint_every steps and at the end

What differs from the PyTorch DCGAN tutorial's loop is only how fast it runs: the dataset is a
uint8 tensor on the training device and a batch is an index gather; bf16 autocast where the
hardware is fast at it; channels_last; fused Adam and cudnn.benchmark on CUDA; metrics stay on the
device and are copied to the host every `log_every` steps. The loop never prints: it reports
through `on_progress`, `on_sample` and `on_checkpoint`, and polls `should_stop` (NVlabs'
`training_loop(progress_fn, abort_fn)`). The CLI adds tqdm, the app a progress bar and a Stop
button (`gan_core.jobs`).

Randomness is a pure function of (seed, rank, step): each step draws its batch indices and
noise from a generator seeded with those, so a resumed run sees exactly the data and noise an
uninterrupted one would.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from . import checkpoint as ckpt
from . import config as config_mod
from . import kinds
from .data import ImageDataset, load_dataset, to_float
from .models.base import Batch, Extra, Models, ema_decay_at, generate, step_generator, update_ema
from .runtime import configure_cuda, resolve_device, resolve_precision, use_channels_last

ProgressFn = Callable[[int, dict], None]
SAMPLE_COUNT = 64


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def build_models(cfg: config_mod.RunConfig, device: torch.device) -> Models:
    """The kind's G and D on `device` in the run's memory format, their Adam optimizers, EMA copies
    (`train.ema_decay` > 0, for the kind's `ema_roles`), the extra modules the kind trains, and the
    DDP / torch.compile wrappers. Seeded by `train.seed`."""
    t, kind = cfg.train, kinds.of(cfg)
    torch.manual_seed(t.seed)
    g, d = kind.build(cfg.model)
    autocast_dtype = resolve_precision(t.precision, device)
    fmt = torch.channels_last if use_channels_last(t, device) else torch.contiguous_format
    g, d = g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(g.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
    lr_d = t.lr if t.lr_d is None else t.lr_d  # two time-scale updates (TTUR) when they differ
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, betas=(t.beta1, t.beta2), fused=fused)
    cores = {ckpt.GENERATOR: g, ckpt.DISCRIMINATOR: d}
    ema = ({role: copy.deepcopy(cores[role]).eval().requires_grad_(False) for role in kind.ema_roles}
           if t.ema_decay > 0 else {})
    G, D = g, d
    if t.compile:
        G, D = torch.compile(g), torch.compile(d)
    d_for_g = D
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        G = DDP(G, device_ids=ids)
        D = DDP(D, device_ids=ids, find_unused_parameters=kind.unused_parameters(cfg.model))
        d_for_g = D.module  # G's step must not trigger D's gradient all-reduce
    extras = {}
    specs = kind.trained_extras(cfg.model)
    if specs:
        built = kind.extra_modules(cfg.model, g)
        for role, spec in specs.items():
            module = built[role].to(device, memory_format=fmt)
            opt = torch.optim.Adam(module.parameters(), lr=spec.lr, betas=spec.betas, fused=fused)
            extras[role] = Extra(module, opt, spec.name)
    return Models(G, D, g, d, opt_g, opt_d, cfg.model, autocast_dtype, fmt, d_for_g, ema, extras)


def instance_noise_std(t: config_mod.TrainConfig, step: int) -> float:
    if t.instance_noise <= 0:
        return 0.0
    if t.instance_noise_steps <= 0:
        return t.instance_noise
    return t.instance_noise * max(0.0, 1.0 - step / t.instance_noise_steps)


def get_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator, fmt: torch.memory_format) -> torch.Tensor:
    idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen, device=images.device)
    return to_float(images.index_select(0, idx)).contiguous(memory_format=fmt)


def make_batch(cfg: config_mod.RunConfig, images: torch.Tensor, m: Models, step: int, rank: int,
               device: torch.device) -> Batch:
    """Step `step`'s batch: its data, noise and random stream, and the schedules' values there."""
    t = cfg.train
    gen = step_generator(t.seed, rank, step, device)
    real = get_batch(images, t.batch_size, gen, m.memory_format)
    noise = kinds.of(cfg).latent(cfg.model, t.batch_size, gen, device)
    return Batch(real, noise, gen, step, t.real_label, instance_noise_std(t, step))


# ---------------------------------------------------------------- the phases of train()

def prepare_data(cfg: config_mod.RunConfig, dataset: Optional[ImageDataset], rank: int, world: int,
                 device: torch.device, on_data_progress=None) -> torch.Tensor:
    """This rank's share of the dataset as a uint8 tensor on `device`, checked against the config."""
    ds = dataset if dataset is not None else load_dataset(cfg.data, progress=on_data_progress)
    if len(ds) == 0:
        raise ValueError("the dataset has no images")
    kinds.of(cfg).check_run(cfg, len(ds), world)
    images = ds.images[rank::world] if world > 1 else ds.images
    if len(images) == 0:
        raise ValueError(f"{len(ds)} images cannot be shared among {world} processes")
    if images.shape[1] != cfg.data.channels or images.shape[-1] != cfg.data.image_size:
        raise ValueError(f"dataset images are {tuple(images.shape[1:])}, the config asks for "
                         f"{cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size}")
    return images.to(device, non_blocking=True)


def resume(cfg: config_mod.RunConfig, m: Models, out_dir: Path) -> int:
    """Load the latest checkpoint of `out_dir` into `m`; returns its step (0 when there is none).
    An EMA copy or extra module switched on since that checkpoint starts from the trained model or
    fresh, and an optimizer the checkpoint never had starts fresh."""
    folder = ckpt.latest_checkpoint(out_dir)
    if folder is None:
        return 0
    saved, meta = kinds.read_config(folder)
    if config_mod.to_dict(saved.model) != config_mod.to_dict(cfg.model):
        raise ValueError(f"cannot resume: {folder} was trained with a different model config")
    stored = set(ckpt.weight_roles(folder))
    for role, module in m.cores().items():  # an extra module switched on at resume starts fresh
        if role in stored or role in (ckpt.GENERATOR, ckpt.DISCRIMINATOR):  # (a missing G or D is an error)
            ckpt.load_weights(module, ckpt.weights_file(folder, role))
    for role, ema, core in m.ema_pairs():
        if role in stored:
            ckpt.load_weights(ema, ckpt.weights_file(folder, role))
        else:  # EMA switched on at resume: start it from the trained model, not from the init
            ema.load_state_dict(core.state_dict())
    if not ckpt.has_optimizer_state(folder):
        raise ValueError(f"cannot resume from {folder}: it has no optimizer state (an exported checkpoint?)")
    ckpt.load_optimizers(folder, m.optimizers())
    return int(meta["step"])


@dataclass
class _Window:
    """Metric sums over the steps since the last host copy."""
    t0: float
    steps: int = 0
    sums: dict = field(default_factory=dict)

    def add(self, metrics: dict) -> None:
        self.steps += 1
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def means(self) -> dict:
        values = torch.stack([self.sums[k].float() for k in self.sums]).div(self.steps).tolist()  # the one host sync
        return dict(zip(self.sums, values))


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
    # set-up
    kinds.validate(config_mod.sync_model_to_data(cfg))
    t, kind = cfg.train, kinds.of(cfg)
    device = resolve_device(t.device)
    rank, world = _dist_info()
    configure_cuda(device)
    out_dir = Path(t.out_dir)
    if rank == 0:  # a read-only or missing output folder fails here, before the data is read
        ckpt.check_output_folder(out_dir)
        if t.resume:
            ckpt.recover(out_dir)
    images = prepare_data(cfg, dataset, rank, world, device, on_data_progress)

    # build
    m = build_models(cfg, device)
    if rank == 0:  # room for a new checkpoint beside the kept one, or the first save would fail mid-run
        ckpt.check_output_folder(out_dir, need_bytes=2 * ckpt.checkpoint_bytes(m.modules(), m.optimizers()))

    # resume
    step = resume(cfg, m, out_dir) if t.resume else 0

    # steps. Sample grids use fixed latents; with codes, each row of 8 cycles through them.
    codes = kind.num_codes(cfg.model)
    grid_codes = torch.arange(SAMPLE_COUNT) % codes if codes else None
    fixed_noise = kind.latent(cfg.model, SAMPLE_COUNT, torch.Generator().manual_seed(t.seed), "cpu",
                              grid_codes).to(device)
    m.G.train()
    m.D.train()
    last_metrics: dict[str, float] = {}
    last_saved: Optional[Path] = ckpt.latest_checkpoint(out_dir) if t.resume else None
    stop_reason = None
    start_step, t0 = step, time.perf_counter()
    window = _Window(t0)

    def save() -> Optional[Path]:
        if rank != 0:
            return None
        folder = ckpt.save_training_checkpoint(out_dir, cfg, step, m.modules(), m.optimizers(),
                                               last_metrics, keep=t.keep_checkpoints)
        if on_checkpoint:
            on_checkpoint(step, folder)
        return folder

    while step < t.steps:
        metrics = kind.train_step(m, make_batch(cfg, images, m, step, rank, device))
        for _, ema, core in m.ema_pairs():
            update_ema(ema, core, ema_decay_at(t.ema_decay, step))
        step += 1
        window.add(metrics)

        # Metrics are also checked before every checkpoint, so a non-finite model is never saved.
        if step % t.log_every == 0 or step == t.steps or step % t.checkpoint_every == 0:
            last_metrics = window.means()
            now = time.perf_counter()
            rate = window.steps * t.batch_size * world / max(now - window.t0, 1e-9)
            bad = not all(math.isfinite(v) for v in last_metrics.values())
            last_metrics.update(step=step, images_per_s=rate,
                                eta_s=(t.steps - step) * t.batch_size * world / max(rate, 1e-9))
            window = _Window(now)
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
            on_sample(step, generate(m.sampling_generator(), fixed_noise))
        # save
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
