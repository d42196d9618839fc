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
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from . import checkpoint as ckpt
from . import convgemm
from . import config as config_mod
from . import kinds
from .data import ImageDataset, load_dataset, to_float
from .graphs import StaticStep, graph_blocker
from .hub import resolve
from .models.base import (Batch, Extra, Models, ema_decay_at, generate, recalibrate_batchnorm, step_generator,
                          update_ema)
from .runtime import (PRECISIONS, Choice, candidate_label, candidates, channels_last_setting, choose, configure_cpu,
                      configure_cuda, device_key, fastest, resolve_device, time_calls, tuning_cache)

ProgressFn = Callable[[int, dict], None]
LogFn = Callable[[str], None]
SAMPLE_COUNT = 64
# The EMA generator's BatchNorm statistics are re-measured over this many latents before each grid and
# save, drawn from a stream no rank's training steps use (step_generator's "rank" slot).
STANDING_STATS_BATCHES, STANDING_STATS_BATCH, STANDING_STATS_STREAM = 8, 128, 1 << 20


class StageStopped(Exception):
    """A stop request seen during one of the kind's stages (`_polled`): the stage ends where it is."""


def _polled(on_stage: Optional[Callable[[str, int, int], None]],
            should_stop: Optional[Callable[[], bool]]) -> Optional[Callable[[str, int, int], None]]:
    """The stage reporter the kind's hooks get: it reports, then asks `should_stop`, so a stop request is
    answered within one chunk of a stage (the choice of input, the SCAN head) instead of after it."""
    if should_stop is None:
        return on_stage

    def report(stage: str, done: int, total: int) -> None:
        if on_stage is not None:
            on_stage(stage, done, total)
        if should_stop():
            raise StageStopped(stage)
    return report


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def build_models(cfg: config_mod.RunConfig, device: torch.device, choice: Optional[Choice] = None,
                 wrap: bool = True, capturable: bool = False) -> Models:
    """The kind's G and D on `device` in the chosen precision and memory format (`choice`; by default
    the config's explicit settings, else fp32 and channels_last), their Adam optimizers (and a gradient
    scaler in fp16), EMA copies (`train.ema_decay` > 0, for the kind's `ema_roles`), the extra modules
    the kind trains, and (`wrap`) the DDP / torch.compile wrappers. `capturable`: Adam keeps its step
    count on the device, as a CUDA graph needs. Seeded by `train.seed`."""
    t, kind = cfg.train, kinds.of(cfg)
    if choice is None:
        choice = default_choice(cfg, device)
    torch.manual_seed(t.seed)
    g, d = kind.build(cfg.model)
    fmt = choice.memory_format
    g, d = g.to(device, memory_format=fmt), d.to(device, memory_format=fmt)
    if choice.conv_gemm:  # (EMA copies, made from these below, paint with the same plan)
        convgemm.install({"G": g, "D": d}, dict(choice.conv_gemm))
    fused = device.type == "cuda"
    adam = dict(betas=(t.beta1, t.beta2), fused=fused, **({"capturable": True} if capturable else {}))
    opt_g = torch.optim.Adam(g.parameters(), lr=t.lr, **adam)
    lr_d = t.lr if t.lr_d is None else t.lr_d  # two time-scale updates (TTUR) when they differ
    opt_d = torch.optim.Adam(d.parameters(), lr=lr_d, **adam)
    cores = {ckpt.GENERATOR: g, ckpt.DISCRIMINATOR: d}
    ema = ({role: copy.deepcopy(cores[role]).eval().requires_grad_(False) for role in kind.ema_roles}
           if t.ema_decay > 0 else {})
    G, D = g, d
    if t.compile and wrap:
        G, D = torch.compile(g, mode=t.compile_mode), torch.compile(d, mode=t.compile_mode)
    d_for_g = D
    if wrap and torch.distributed.is_available() and torch.distributed.is_initialized():
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
            opt = torch.optim.Adam(module.parameters(), lr=spec.lr, **{**adam, "betas": spec.betas})
            extras[role] = Extra(module, opt, spec.name)
    scaler = torch.amp.GradScaler(device.type) if choice.precision == "fp16" else None
    return Models(G, D, g, d, opt_g, opt_d, cfg.model, choice.dtype, fmt, d_for_g, ema, extras, scaler)


def default_choice(cfg: config_mod.RunConfig, device: torch.device) -> Choice:
    """The explicit settings, or what `auto` falls back to without measuring: fp32, channels_last."""
    t = cfg.train
    cl = channels_last_setting(t, device)
    return Choice("fp32" if t.precision == "auto" else t.precision, True if cl is None else cl, how="default")


def run_step(cfg: config_mod.RunConfig, m: Models, batch: Batch) -> dict:
    """One training step of the run's kind, then the fp16 loss-scale update."""
    if cfg.train.compile and cfg.train.compile_mode != "default":
        # inductor's CUDA graphs (reduce-overhead, max-autotune) reuse their output memory at the next
        # step; marking each step's start keeps this step's outputs (the fakes D and G both judge) alive
        torch.compiler.cudagraph_mark_step_begin()
    metrics = kinds.of(cfg).train_step(m, batch)
    m.end_step()
    return metrics


def stand_in_images(cfg: config_mod.RunConfig, device: torch.device) -> torch.Tensor:
    """One batch of random uint8 images of the run's shape (seeded by `train.seed`), to time steps on."""
    t, d = cfg.train, cfg.data
    gen = torch.Generator().manual_seed(t.seed)
    return torch.randint(0, 256, (t.batch_size, d.channels, d.image_size, d.image_size), generator=gen,
                         dtype=torch.uint8).to(device)


def eager_steps(cfg: config_mod.RunConfig, m: Models, images: torch.Tensor,
                device: torch.device) -> Callable[[], dict]:
    """A function taking the eager training steps 0, 1, 2, ... of `m` on `images` (for timing and
    profiling), each call one step, returning its metrics."""
    steps = iter(range(1 << 30))
    return lambda: run_step(cfg, m, make_batch(cfg, images, m, next(steps), 0, device))


def fresh_step(cfg: config_mod.RunConfig, device: torch.device, choice: Choice, images: torch.Tensor,
               graph: bool) -> Callable[[], dict]:
    """Freshly built models' training steps in `choice`, as one CUDA graph (`graph`) or eager, each call
    one step (for the choosers' timings)."""
    m = build_models(cfg, device, choice, wrap=False, capturable=graph)
    return StaticStep(cfg, m, images).step if graph else eager_steps(cfg, m, images, device)


def graph_possible(cfg: config_mod.RunConfig, device: torch.device, precision: str, world: int = 1) -> bool:
    """Whether `choose_graph` could pick the CUDA graph step for this precision."""
    return (device.type == "cuda" and cfg.train.cuda_graph is not False and world == 1
            and graph_blocker(cfg, precision) is None)


def choose_runtime(cfg: config_mod.RunConfig, device: torch.device, recorded: Optional[dict] = None,
                   cache: Optional[Path] = None, on_log: Optional[LogFn] = None, world: int = 1) -> Choice:
    """Precision and memory format for this run. An explicit `train.precision` / `train.channels_last`
    wins; `auto` is decided by timing a few training steps of the real model at the real batch in each
    candidate (`runtime.candidates`), once per (model config, batch, device kind, torch), kept in
    `cache` (default: the tuning cache). Where a candidate's step can be one CUDA graph, it is timed as
    the faster of its eager and graph steps, so the precision and format are chosen for the step that
    will run (on an H200 fp32 won eagerly and bf16/channels_last by 1.7x as graphs). `recorded` (the
    `runtime` of the checkpoint being resumed) is reused when it was decided on this same kind of
    device, so a resumed run continues as it began."""
    t = cfg.train
    options = candidates(t.precision, channels_last_setting(t, device), device)
    if t.cuda_graph and any(p != "fp16" for p, _ in options):  # a graph cannot hold fp16's host-side scaler
        options = [o for o in options if o[0] != "fp16"]
    dkey = device_key(device)
    same = recorded and recorded.get("device") == dkey
    if same and (recorded.get("precision"), recorded.get("channels_last")) in options:
        choice = Choice(recorded["precision"], bool(recorded["channels_last"]), how="recorded",
                        timings=dict(recorded.get("timings_s") or {}))
        if conv_gemm_possible(cfg, device, choice, world):
            plan = dict(recorded.get("conv_gemm") or {})
            if not plan_fits(cfg, plan):  # recorded by another version of the model's code: time a new one
                if on_log:
                    on_log(f"the recorded convolution plan ({convgemm.describe(plan)}) does not fit this model's "
                           "layers; timing a new one")
                return choose_conv_gemm(cfg, device, choice, world, cache=cache, on_log=on_log)
            choice = replace(choice, conv_gemm=tuple(plan.items()))
        return choice
    if len(options) == 1:
        choice = Choice(*options[0], how="set" if t.precision != "auto" and t.channels_last is not None else "only")
    else:
        choice = _choose_precision_format(cfg, device, options, cache, on_log, world)
    return choose_conv_gemm(cfg, device, choice, world, cache=cache, on_log=on_log)


def tuning_key(cfg: config_mod.RunConfig, device: torch.device, **more) -> dict:
    """What a timed choice for this run depends on (its tuning-cache key): the model config, the batch size,
    the kind of device, and `more`."""
    return {"model": config_mod.to_dict(cfg.model), "batch": cfg.train.batch_size, "device": device_key(device),
            **more}


def _choose_precision_format(cfg: config_mod.RunConfig, device: torch.device, options: list,
                             cache: Optional[Path], on_log: Optional[LogFn], world: int) -> Choice:
    images = stand_in_images(cfg, device)

    def time_one(precision: str, channels_last: bool, graph: bool, give_up_after: float) -> float:
        step, last = fresh_step(cfg, device, Choice(precision, channels_last), images, graph), {}

        def one() -> None:
            last["metrics"] = step()
        seconds = time_calls(one, device, give_up_after=give_up_after)
        losses = torch.stack([v.detach().float().reshape(()) for v in last["metrics"].values()])
        if not bool(torch.isfinite(losses).all()):  # fast but broken (fp16 overflowing) is no option
            raise RuntimeError(f"non-finite metrics in {candidate_label(precision, channels_last)}")
        return seconds

    def time_step(precision: str, channels_last: bool, give_up_after: float) -> float:
        seconds = time_one(precision, channels_last, False, give_up_after)
        if graph_possible(cfg, device, precision, world):
            try:  # a graph that fails to capture or to run leaves the eager step standing
                seconds = min(seconds, time_one(precision, channels_last, True, give_up_after))
            except (RuntimeError, ValueError) as e:  # (torch.OutOfMemoryError is a RuntimeError)
                if on_log:
                    on_log(f"{candidate_label(precision, channels_last)} as one CUDA graph failed "
                           f"({type(e).__name__}: {e}); timed eager only")
        return seconds

    key = tuning_key(cfg, device)
    if any(graph_possible(cfg, device, p, world) for p, _ in options):
        key["step"] = "eager or graph"  # (timings of eager steps alone, cached before, do not answer this)
    names = ", ".join(candidate_label(*o) for o in options)

    def announce() -> None:
        if on_log:
            on_log(f"choosing among {names} by timing a few steps of each (once per model, batch and machine)")
    return choose(key, options, time_step, tuning_cache() if cache is None else cache, announce)


def plan_fits(cfg: config_mod.RunConfig, plan: dict[str, str]) -> bool:
    """Whether every layer a convolution plan names is an eligible layer of this config's G and D, with
    products `convgemm.OPS` knows (so `convgemm.install` takes it)."""
    if not plan:
        return True
    with torch.random.fork_rng(devices=[]):  # building draws an init: leave the caller's random stream alone
        g, d = kinds.of(cfg).build(cfg.model)
    found = convgemm.layers({"G": g, "D": d})
    return all(path in found and ops and not set(ops) - set(convgemm.OPS) for path, ops in plan.items())


def conv_gemm_possible(cfg: config_mod.RunConfig, device: torch.device, choice: Choice, world: int = 1) -> bool:
    """Whether `choose_conv_gemm` may give this run a plan: CPU, fp32 or bf16, channels_last, eager, one process."""
    return (device.type == "cpu" and cfg.train.conv_gemm is not False and choice.precision in ("fp32", "bf16")
            and choice.channels_last and not cfg.train.compile and world == 1)


def choose_conv_gemm(cfg: config_mod.RunConfig, device: torch.device, choice: Choice, world: int = 1,
                     cache: Optional[Path] = None, on_log: Optional[LogFn] = None,
                     time_layer: Optional[Callable] = None) -> Choice:
    """`choice` with the convolution products to run as matmuls (`gan_core.convgemm`): each eligible
    layer's three products timed both ways at the run's shapes (cached per layer shape), then, unless
    `train.conv_gemm` is true, one step of fresh models timed with and without that plan (cached per model,
    batch and machine): the plan is kept only if its step was faster. `time_layer` is injectable for tests."""
    if not conv_gemm_possible(cfg, device, choice, world):
        return choice
    cache = tuning_cache() if cache is None else cache
    images = stand_in_images(cfg, device)
    m = build_models(cfg, device, choice, wrap=False)
    roles = {"G": m.g_core, "D": m.d_core}
    shapes = convgemm.input_shapes(roles, lambda: run_step(cfg, m, make_batch(cfg, images, m, 0, 0, device)))
    plan, _ = convgemm.plan(roles, shapes, device, cache, time_layer, announce=lambda: on_log and on_log(
        "timing each convolution's forward and gradients as matmuls (once per layer shape and machine)"),
        dtype=choice.dtype or torch.float32)
    if not plan:
        return choice
    candidate = replace(choice, conv_gemm=tuple(plan.items()))
    if cfg.train.conv_gemm:
        return candidate
    by_label = {"oneDNN": choice, "planned": candidate}

    def time_one(label: str, give_up_after: float) -> float:
        return time_calls(fresh_step(cfg, device, by_label[label], images, graph=False), device, repeats=3,
                          give_up_after=give_up_after)

    key = tuning_key(cfg, device, precision=choice.precision, step="conv plan", plan=plan)
    label, timings, how = fastest(key, list(by_label), time_one, cache)
    if on_log:
        times = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
        on_log(f"convolutions as matmuls ({convgemm.describe(plan)}): "
               f"{'kept' if label == 'planned' else 'not kept'} ({how}: {times} per step)")
    return by_label[label]


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


def choose_graph(cfg: config_mod.RunConfig, device: torch.device, choice: Choice, world: int = 1,
                 images: Optional[torch.Tensor] = None, cache: Optional[Path] = None) -> tuple[bool, str]:
    """Whether to run each step as one CUDA graph (`gan_core.graphs`), and why. `train.cuda_graph`
    true or false wins (true where the step cannot be a graph is an error); by default, on CUDA, where
    the step allows it, the graph is timed against the eager step (fresh models, once per model, batch,
    precision and device; cached) and used if faster. On a CPU, true runs the graph path's static step
    eagerly (a dry run: there is nothing to capture)."""
    t = cfg.train
    if t.cuda_graph is False:
        return False, "off (train.cuda_graph=false)"
    blocker = graph_blocker(cfg, choice.precision) or ("DDP runs its own all-reduce per step" if world > 1 else None)
    if blocker:
        if t.cuda_graph:
            raise ValueError(f"train.cuda_graph=true cannot apply: {blocker}")
        return False, f"off ({blocker})"
    if t.cuda_graph:
        return True, "on (train.cuda_graph=true" + (")" if device.type == "cuda" else "; a CPU dry run: not captured)")
    if device.type != "cuda":
        return False, "off (no CUDA)"
    if images is None:
        images = stand_in_images(cfg, device)

    def time_one(label: str, give_up_after: float) -> float:
        step = fresh_step(cfg, device, choice, images, graph=label == "graph")
        return time_calls(step, device, repeats=3, give_up_after=give_up_after)

    key = tuning_key(cfg, device, precision=choice.precision, channels_last=choice.channels_last,
                     step="graph or eager")
    label, timings, how = fastest(key, ["eager", "graph"], time_one, tuning_cache() if cache is None else cache)
    times = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in timings.items())
    return label == "graph", f"{'on' if label == 'graph' else 'off'} ({how}: {times})"


def agree_on_runtime(choice: Choice, rank: int, world: int, device: torch.device) -> Choice:
    """Under DDP every rank trains as rank 0 chose (only rank 0 measures; timings differ between processes)."""
    if world <= 1:
        return choice
    names = list(PRECISIONS)
    code = torch.tensor([names.index(choice.precision), int(choice.channels_last)] if rank == 0 else [0, 0],
                        device=device)
    torch.distributed.broadcast(code, src=0)
    return choice if rank == 0 else Choice(names[int(code[0])], bool(code[1]), how="rank 0")


# ---------------------------------------------------------------- the phases of train()

def check_world(cfg: config_mod.RunConfig, world: int) -> None:
    """Refuse several processes for a config whose kind trains modules beside G and D (an encoder):
    DDP wraps and averages G and D only, so each process's extra module would drift apart."""
    extras = kinds.of(cfg).trained_extras(cfg.model)
    if world > 1 and extras:
        raise ValueError(f"this {cfg.model.kind} config trains its {', '.join(extras)} beside G and D, which runs "
                         "in one process only (model.recon_weight > 0): run it without torchrun")


def prepare_data(cfg: config_mod.RunConfig, dataset: Optional[ImageDataset], rank: int, world: int,
                 device: torch.device, on_data_progress=None) -> torch.Tensor:
    """This rank's share of the dataset as a uint8 tensor on `device`, checked against the config."""
    ds = dataset if dataset is not None else load_dataset(cfg.data, progress=on_data_progress)
    if len(ds) == 0:
        raise ValueError("the dataset has no images")
    kinds.of(cfg).check_run(cfg, len(ds), world)
    check_world(cfg, world)
    images = ds.images[rank::world] if world > 1 else ds.images
    if len(images) == 0:
        raise ValueError(f"{len(ds)} images cannot be shared among {world} processes")
    if images.shape[1] != cfg.data.channels or images.shape[-1] != cfg.data.image_size:
        raise ValueError(f"dataset images are {tuple(images.shape[1:])}, the config asks for "
                         f"{cfg.data.channels}x{cfg.data.image_size}x{cfg.data.image_size}")
    return images.to(device, non_blocking=True)


def choose_from_data(cfg: config_mod.RunConfig, images: torch.Tensor, out_dir: Path, rank: int, world: int,
                     on_log: Optional[LogFn] = None, on_stage=None,
                     start: Optional[Path] = None) -> tuple[config_mod.RunConfig, dict]:
    """The settings the kind picks from the data (`Kind.choose`), before anything is built: rank 0 picks on
    its images and the other ranks take its pick; a resumed run keeps the pick its checkpoint recorded, and
    a run started from another's weights (`start`: train.init_from's folder) that run's pick.
    -> (the config with them set, entries for each checkpoint's config.json)."""
    kind = kinds.of(cfg)
    picked: list = [{}, {}, None]  # values, record, rank 0's error (the other ranks must not wait forever)
    if rank == 0:
        try:
            latest = ckpt.latest_checkpoint(out_dir) if cfg.train.resume else None
            latest = latest if latest is not None else start
            saved = kinds.read_config(latest) if latest is not None else None
            picked[:2] = kind.choose(cfg, images, saved, on_log or (lambda _line: None), on_stage)
        except (ValueError, RuntimeError, OSError, MemoryError) as e:
            if world == 1:
                raise
            picked[2] = f"{type(e).__name__}: {e}"
    if world > 1:
        torch.distributed.broadcast_object_list(picked, src=0)
        if picked[2] is not None:
            raise ValueError(f"choosing settings from the data failed on rank 0 ({picked[2]})")
    values, record, _ = picked
    if not values:
        return cfg, record
    cfg = replace(cfg, model=replace(cfg.model, **values))
    kinds.validate(cfg)
    return cfg, record


def _check_model_config(cfg: config_mod.RunConfig, folder: Path, verb: str, on_log: Optional[LogFn]) -> dict:
    """`folder`'s meta, after checking that its model config is `cfg`'s, except the kind's `loss_fields`
    (R1's weight, ...), whose change is logged."""
    saved, meta = kinds.read_config(folder)
    if saved.model.kind != cfg.model.kind:
        raise ValueError(f"cannot {verb}: {folder} is a {saved.model.kind} checkpoint, this run a {cfg.model.kind}")
    was, now = config_mod.to_dict(saved.model), config_mod.to_dict(cfg.model)
    changed = sorted(k for k in was.keys() | now.keys() if now.get(k) != was.get(k))
    fixed = [k for k in changed if k not in kinds.of(cfg).loss_fields]
    if fixed:
        raise ValueError(f"cannot {verb}: {folder} was trained with a different model config "
                         f"(differs in {', '.join('model.' + k for k in fixed[:4])}; set them as saved)")
    if changed and on_log:
        on_log(f"{'resumed' if verb == 'resume' else verb} with "
               + ", ".join(f"model.{k} {was.get(k)!r} -> {now.get(k)!r}" for k in changed))
    return meta


def _load_weights_of(cfg: config_mod.RunConfig, m: Models, folder: Path, verb: str,
                     on_log: Optional[LogFn]) -> dict:
    """Load `folder`'s weights into `m` (G, D, the extra modules it has, the EMA copies: from the
    checkpoint, else from the trained model); -> its meta. The model config must be the saved one
    (`_check_model_config`)."""
    meta = _check_model_config(cfg, folder, verb, on_log)
    stored = set(ckpt.weight_roles(folder))
    cores = m.cores()
    for role, module in cores.items():  # an extra module the checkpoint lacks starts as its kind says
        if role in stored or role in (ckpt.GENERATOR, ckpt.DISCRIMINATOR):  # (a missing G or D is an error)
            ckpt.load_weights(module, ckpt.weights_file(folder, role))
        else:
            how = kinds.of(cfg).start_extra(cfg.model, role, module, cores)
            if on_log:
                on_log(f"the {role} starts {how or 'fresh'}: {folder} has none")
    dropped = sorted(stored - set(m.modules()))
    if dropped and on_log:  # an extra module or EMA copy switched off (model.recon_weight 0, train.ema_decay 0)
        on_log(f"{folder}'s {', '.join(dropped)} is not used by this config: it stays there and is not in "
               "this run's checkpoints")
    for role, ema, core in m.ema_pairs():
        if role in stored:
            ckpt.load_weights(ema, ckpt.weights_file(folder, role))
        else:  # EMA switched on at resume: start it from the trained model, not from the init
            ema.load_state_dict(core.state_dict())
    return meta


def resume(cfg: config_mod.RunConfig, m: Models, out_dir: Path, on_log: Optional[LogFn] = None) -> int:
    """Load the latest checkpoint of `out_dir` into `m`, weights and optimizer state; returns its step (0
    when there is none). The model config must be the saved one, except the kind's `loss_fields`. An EMA
    copy or extra module switched on since that checkpoint starts from the trained model or fresh, and an
    optimizer the checkpoint never had starts fresh."""
    folder = ckpt.latest_checkpoint(out_dir)
    if folder is None:
        return 0
    meta = _load_weights_of(cfg, m, folder, "resume", on_log)
    m.ema_age = int(meta.get("ema_age") or 0)
    if not ckpt.has_optimizer_state(folder):
        raise ValueError(f"cannot resume from {folder}: it has no optimizer state (an exported checkpoint?)")
    ckpt.load_optimizers(folder, m.optimizers())
    scaler_state = ckpt.read_scaler_state(folder)
    if m.scaler is not None and scaler_state:
        m.scaler.load_state_dict(scaler_state)
    return int(meta["step"])


INIT_VERB = "start from train.init_from"


def init_folder(source: str) -> Path:
    """`train.init_from`'s checkpoint folder (fetched from the Hub where it names a repo); a bad one is a
    ValueError in one line."""
    try:
        return resolve(source)
    except ckpt.CheckpointError as e:
        raise ValueError(f"train.init_from: {e}") from None


def init_weights(cfg: config_mod.RunConfig, m: Models, source: str | Path, on_log: Optional[LogFn] = None) -> Path:
    """A new run's start from another checkpoint's weights (`train.init_from`: a checkpoint or run folder,
    or a Hub repo id; exported fp16 weights are cast to the run's): G, D, their EMA copies where it has
    them and its extra modules; the optimizers stay fresh and the step is 0. Its model config must be this
    run's (`_check_model_config`). -> the folder read."""
    folder = init_folder(str(source))
    meta = _load_weights_of(cfg, m, folder, INIT_VERB, on_log)
    stored = set(ckpt.weight_roles(folder))
    if any(role in stored for role, _, _ in m.ema_pairs()):
        # a trained average goes on as one, without a new warm-up (its age: the source's steps, and its own
        # source's where it was started from another run's weights too)
        m.ema_age = int(meta.get("ema_age") or 0) + int(meta.get("step") or 0)
    elif on_log and not m.ema and any(ckpt.ema_role(role) in stored for role in stored):
        on_log(f"{folder} holds EMA copies, which this run does not keep (train.ema_decay is 0)")
    if on_log:
        on_log(f"weights from {folder} (its step {meta.get('step')}); fresh optimizers, step 0")
    return folder


_SET_UP = threading.Lock()  # runs in threads (train_many) time, seed, build and capture one at a time


def _tune_build_resume(cfg: config_mod.RunConfig, device: torch.device, images: torch.Tensor, out_dir: Path,
                       rank: int, world: int, on_log: Optional[LogFn],
                       start: Optional[Path] = None) -> tuple[Choice, bool, Models, int]:
    """The tune, build and resume phases of train(), or with `start` (train.init_from's folder, for a run
    that is not resumed) a start from its weights: -> (choice, use the graph step, models, step)."""
    t = cfg.train
    # tune: precision and memory format, measured (or as set, or as the resumed run recorded)
    recorded = None
    if t.resume and (latest := ckpt.latest_checkpoint(out_dir)) is not None:
        recorded = ckpt.read_meta(latest).get("runtime")
    elif start is not None:  # a train.init_from of another model config fails here, before the timings
        _check_model_config(cfg, start, INIT_VERB, None)
    choice = choose_runtime(cfg, device, recorded, on_log=on_log, world=world) if rank == 0 else default_choice(cfg, device)
    choice = agree_on_runtime(choice, rank, world, device)
    use_graph, why = choose_graph(cfg, device, choice, world, images)
    if rank == 0 and on_log:
        on_log(f"precision and memory format: {choice.describe()}")
        if device.type == "cuda" or use_graph:
            on_log(f"CUDA graph step: {why}")

    # build
    m = build_models(cfg, device, choice, capturable=use_graph and device.type == "cuda")
    if rank == 0:  # room for a new checkpoint beside the kept one, or the first save would fail mid-run
        ckpt.check_output_folder(out_dir, need_bytes=2 * ckpt.checkpoint_bytes(m.modules(), m.optimizers()))

    # resume, or start from another run's weights
    step = resume(cfg, m, out_dir, on_log if rank == 0 else None) if t.resume else 0
    if start is not None:
        init_weights(cfg, m, start, on_log if rank == 0 else None)
    m.G.train()
    m.D.train()
    return choice, use_graph, m, step


def train_many(cfgs: list[config_mod.RunConfig], **callbacks) -> list[dict]:
    """Several runs at once (the seeds of one recipe): on a GPU each in its own thread and CUDA stream,
    so the small kernels of one run fill the gaps of the others; on a CPU one after another (each run
    already uses every core). `callbacks` are train()'s, shared by the runs. -> train()'s results, in order."""
    devices = {resolve_device(c.train.device) for c in cfgs}
    if len(cfgs) <= 1 or any(d.type != "cuda" for d in devices):
        return [train(c, **callbacks) for c in cfgs]
    results: list = [None] * len(cfgs)
    errors: list[BaseException] = []

    def run(i: int, c: config_mod.RunConfig) -> None:
        try:
            with torch.cuda.stream(torch.cuda.Stream(resolve_device(c.train.device))):
                results[i] = train(c, **callbacks)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, c), name=f"train-{i}", daemon=True) for i, c in enumerate(cfgs)]
    for th in threads:
        th.start()
    for th in threads:
        while th.is_alive():  # short joins, so Ctrl-C reaches this thread
            th.join(0.5)
    if errors:
        done = sum(r is not None for r in results)
        raise RuntimeError(f"{len(errors)} of {len(cfgs)} runs failed ({done} finished; their checkpoints are "
                           f"saved): {type(errors[0]).__name__}: {errors[0]}") from errors[0]
    return results


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
          on_data_progress: Optional[Callable[[int, int], None]] = None,
          on_log: Optional[LogFn] = None,
          on_stage: Optional[Callable[[str, int, int], None]] = None) -> dict:
    """Train `cfg` to `cfg.train.steps`, resuming from `cfg.train.out_dir` when `cfg.train.resume`.

    Callbacks (rank 0 only): `on_progress(step, metrics)` every `log_every` steps with host floats,
    `on_sample(step, images)` every `sample_every` steps, `on_checkpoint(step, folder)` after each
    save, `on_log(line)` for what the loop decided (the precision and memory format, and why);
    `should_stop()` is polled every `log_every` steps. Returns a dict of results."""
    # set-up
    kinds.validate(config_mod.sync_model_to_data(cfg))
    t, kind = cfg.train, kinds.of(cfg)
    device = resolve_device(t.device)
    rank, world = _dist_info()
    configure_cuda(device)
    configure_cpu(device)
    out_dir = Path(t.out_dir)
    if rank == 0:  # a read-only or missing output folder fails here, before the data is read
        ckpt.check_output_folder(out_dir)
        if t.resume:
            ckpt.recover(out_dir)
    # a run started from another's weights: a bad train.init_from fails here, before the data is read
    resuming = t.resume and ckpt.latest_checkpoint(out_dir) is not None
    start = init_folder(t.init_from) if t.init_from and not resuming else None
    images = prepare_data(cfg, dataset, rank, world, device, on_data_progress)
    # Alone, a stop request also ends the kind's stages (under torchrun only the steps answer it, where
    # every rank agrees).
    stage_report = _polled(on_stage, should_stop) if world == 1 else on_stage
    with _SET_UP:  # (it seeds the process's random stream for a moment, as model building does)
        try:
            cfg, chosen = choose_from_data(cfg, images, out_dir, rank, world, on_log, stage_report, start)
        except StageStopped:  # nothing was built or trained: nothing to save
            return {"checkpoint": None, "step": 0, "steps_run": 0, "seconds": 0.0, "images_per_s": 0.0,
                    "metrics": {}, "stopped": "stopped by request before the first step", "device": str(device),
                    "precision": None, "channels_last": None, "runtime": None, "cuda_graph": False,
                    "world_size": world}
    t = cfg.train

    # tune, build, resume (one run at a time in a process: see train_many)
    with _SET_UP:
        choice, use_graph, m, step = _tune_build_resume(cfg, device, images, out_dir, rank, world, on_log, start)
    runtime_record = choice.record(device_key(device))
    if step < t.steps:
        kind.start(cfg.model, m)

    # steps. Sample grids use fixed latents; with codes, each row of 8 cycles through them.
    codes = kind.num_codes(cfg.model)
    grid_codes = torch.arange(SAMPLE_COUNT) % codes if codes else None
    fixed_noise = kind.latent(cfg.model, SAMPLE_COUNT, torch.Generator().manual_seed(t.seed), "cpu",
                              grid_codes).to(device)
    last_metrics: dict[str, float] = {}
    finished: dict = {}  # what the kind's last stage reports (saved with the final checkpoint)
    last_saved: Optional[Path] = ckpt.latest_checkpoint(out_dir) if t.resume else None
    stop_reason = None
    with _SET_UP:
        stepper = StaticStep(cfg, m, images, start_step=step, rank=rank) if use_graph else None
    start_step, t0 = step, time.perf_counter()
    window = _Window(t0)
    last_save_t = t0
    alone = world == 1  # one process answers a stop request and saves on the clock at any step
    calibrated_at: list[int] = []  # the step the EMA statistics were last measured at

    def standing_stats() -> None:
        """The EMA generator's BatchNorm statistics, measured on its own activations (not the live G's)
        before it paints a grid or is saved (once a step: a grid and a save often share one); its own
        random stream, so training is unchanged."""
        g_ema = m.ema.get(ckpt.GENERATOR)
        if g_ema is not None and calibrated_at[-1:] != [step]:
            calibrated_at[:] = [step]
            gen = step_generator(t.seed, STANDING_STATS_STREAM, step, device)
            recalibrate_batchnorm(g_ema, [kind.latent(cfg.model, STANDING_STATS_BATCH, gen, device)
                                          for _ in range(STANDING_STATS_BATCHES)])

    def save() -> Optional[Path]:
        nonlocal last_save_t
        last_save_t = time.perf_counter()
        if rank != 0:
            return None
        standing_stats()
        folder = ckpt.save_training_checkpoint(out_dir, cfg, step, m.modules(), m.optimizers(),
                                               last_metrics, keep=t.keep_checkpoints, runtime=runtime_record,
                                               scaler=m.scaler.state_dict() if m.scaler is not None else None,
                                               extra={**chosen, **kind.checkpoint_meta(cfg.model, m.modules(), images),
                                                      **finished, **({"ema_age": m.ema_age} if m.ema_age else {})})
        if on_checkpoint:
            on_checkpoint(step, folder)
        return folder

    while step < t.steps:
        if stepper is not None:  # the whole step replayed as one CUDA graph (its own device-side draws)
            metrics = stepper.step()
        else:
            metrics = run_step(cfg, m, make_batch(cfg, images, m, step, rank, device))
        for _, ema, core in m.ema_pairs():
            update_ema(ema, core, ema_decay_at(t.ema_decay, m.ema_age + step))
        step += 1
        window.add(metrics)
        # Alone, a stop request and a save on the clock act at any step; under DDP both wait for a logging
        # step, where every rank agrees.
        stop_now = alone and should_stop is not None and should_stop()
        save_due = step % t.checkpoint_every == 0 or (
            alone and t.checkpoint_minutes > 0 and time.perf_counter() - last_save_t >= t.checkpoint_minutes * 60)

        # Metrics are also checked before every checkpoint, so a non-finite model is never saved. The
        # first step reports too, so progress shows from the start (its window goes on to the next report,
        # so the logged means are the same with or without a resume).
        scheduled = step % t.log_every == 0 or step == t.steps or save_due or stop_now
        if scheduled or step == start_step + 1:
            last_metrics = window.means()
            now = time.perf_counter()
            rate = window.steps * t.batch_size * world / max(now - window.t0, 1e-9)
            bad = not all(math.isfinite(v) for v in last_metrics.values())
            last_metrics.update(step=step, images_per_s=rate,
                                eta_s=(t.steps - step) * t.batch_size * world / max(rate, 1e-9))
            if scheduled:
                window = _Window(now)
            if rank == 0 and on_progress and not bad:
                on_progress(step, last_metrics)
            stop = stop_now if alone else bool(should_stop and should_stop())
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
            standing_stats()
            on_sample(step, generate(m.sampling_generator(), fixed_noise))
        # save
        if save_due and step < t.steps:
            last_saved = save() or last_saved

    if (stop_reason is None or stop_reason == "stopped by request") and step > start_step:
        last_saved = save() or last_saved
    # The kind's last stage runs once every step is done (not after a stop: a resumed run reaches it),
    # after the save above, so a stage that fails or is killed loses no training.
    if stop_reason is None and step >= t.steps and rank == 0:
        log = on_log or (lambda _line: None)
        if world > 1:  # the other ranks would wait at their barrier, and this rank holds only its shard
            log("the kind's last stage is skipped under torchrun: run it on the checkpoint in one process "
                "(a cluster model: python -m scripts.fit_clusters)")
        else:
            standing_stats()  # the EMA generator the stage may draw from, calibrated as a save would
            try:
                finished = kind.finish(cfg, m, images, log, stage_report)
            except StageStopped as e:  # the steps are saved; a resumed run (train.resume=true) runs the stage
                stop_reason = "stopped by request"
                log(f"the last stage was stopped ({e}); the checkpoint keeps the model without it: resume the "
                    "run to finish it")
            except (ValueError, RuntimeError, MemoryError) as e:
                log(f"the last stage failed ({type(e).__name__}: {e}); the checkpoint keeps the model without it")
            if finished:
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
        "precision": choice.precision,
        "channels_last": choice.channels_last,
        "runtime": choice.how,
        "conv_gemm": dict(choice.conv_gemm),
        "cuda_graph": use_graph,
        "world_size": world,
        **chosen,
        **finished,
    }
