"""What every model kind shares: the `Kind` description the registry holds, the `Models` a training
step updates, the `Batch` it is given, the end of every step (the G update and the metrics), EMA,
and latent codes.

A kind is one module in this package (its config dataclass, networks, `build` and `train_step`)
plus one `Kind(...)` line in `gan_core.kinds`. Everything a kind does differently from the DCGAN
is a field of `Kind` with a default that means "nothing special", so the loop, the checkpoints and
the app never ask which kind they hold.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import DISCRIMINATOR, GENERATOR, ema_role
from ..config import RunConfig, check_ints
from ..losses import r1_penalty


# ---------------------------------------------------------------- what a training step sees

@dataclass
class Extra:
    """A module a kind trains beside G and D (BlobGAN's encoder), with its own optimizer."""
    module: nn.Module
    optimizer: torch.optim.Optimizer
    optimizer_name: str  # its key in the checkpoint's optimizer state


@dataclass
class Models:
    G: nn.Module  # possibly wrapped (DDP / compiled); used for forward passes
    D: nn.Module
    g_core: nn.Module  # the plain modules, for weights, EMA and checkpoints
    d_core: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    model_cfg: Any  # the kind's config (its step reads its own fields)
    autocast_dtype: Optional[torch.dtype] = None
    memory_format: torch.memory_format = torch.contiguous_format
    d_for_g: Optional[nn.Module] = None  # D for the G step: the unwrapped D under DDP
    ema: dict[str, nn.Module] = field(default_factory=dict)  # role of the followed module -> its EMA copy
    extras: dict[str, Extra] = field(default_factory=dict)  # role -> a module trained beside G and D
    scaler: Optional[torch.amp.GradScaler] = None  # fp16 only: scales losses so small gradients survive
    ema_age: int = 0  # steps the EMA copies had averaged before this run's step 0 (`train.init_from`): their warm-up counts them

    def __post_init__(self):
        if self.d_for_g is None:
            self.d_for_g = self.D

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` (scaled first when training in fp16)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step `optimizer` (in fp16, through the scaler: unscaled, and skipped on inf/NaN gradients)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer update from `loss`: clear the gradients, backpropagate, step."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(optimizer)

    def end_step(self) -> None:
        """After every training step: the fp16 loss scale adapts (nothing to do in fp32 / bf16)."""
        if self.scaler is not None:
            self.scaler.update()

    def cores(self) -> dict[str, nn.Module]:
        """role -> plain module, for every module the run trains."""
        return {GENERATOR: self.g_core, DISCRIMINATOR: self.d_core,
                **{role: extra.module for role, extra in self.extras.items()}}

    def ema_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """(checkpoint role of the copy, EMA copy, the module it follows) for each EMA copy kept."""
        cores = self.cores()
        return [(ema_role(role), ema, cores[role]) for role, ema in self.ema.items()]

    def modules(self) -> dict[str, nn.Module]:
        """role -> module, for everything a checkpoint of this run holds."""
        out = self.cores()
        out.update((role, ema) for role, ema, _ in self.ema_pairs())
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers a training checkpoint holds, by name."""
        out = {"G": self.opt_g, "D": self.opt_d}
        out.update((extra.optimizer_name, extra.optimizer) for extra in self.extras.values())
        return out

    def sampling_generator(self) -> nn.Module:
        """The generator that paints samples: the EMA copy where one is kept."""
        return self.ema.get(GENERATOR, self.g_core)


@dataclass
class Batch:
    """What the loop hands a training step: the data, the noise, the step's own random stream and
    the schedule's values at this step (the loop owns the schedules; a step never counts)."""
    real: torch.Tensor  # (N, C, H, W) float in [-1, 1], in the run's memory format
    noise: torch.Tensor  # (N, latent, 1, 1)
    gen: Optional[torch.Generator] = None  # seeded by (seed, rank, step)
    step: int = 0  # the step being taken (a kind's lazy regulariser reads it)
    real_label: float = 1.0
    input_noise_std: float = 0.0


StepFn = Callable[[Models, Batch], dict]


def lazy_r1(d: nn.Module, real: torch.Tensor, gamma: float, every: int,
            step: int) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """R1 on the real images on every `every`-th step, scaled by `every` (lazy regularisation, StyleGAN2;
    every = 1: each step), in fp32 as double backward wants. -> (gamma / 2 * every * R1, the term to add
    to D's loss, or None on a step without it; the penalty as reported: scaled by `every` and zero on a
    step without it, so a logging window's mean estimates it)."""
    if step % every:
        return None, torch.zeros((), device=real.device)
    x = real.detach().float().requires_grad_(True)
    r1 = r1_penalty(d(x, logits=True), x)
    return gamma / 2 * every * r1, (r1 * every).detach().float()


def g_update_and_metrics(m: Models, loss_d, loss_g, real_logits, fake_logits, gen_logits) -> dict[str, torch.Tensor]:
    """Finish a step: backpropagate G's loss (D frozen by the caller), step G, unfreeze D, and
    return the detached metrics every model kind reports."""
    m.update(m.opt_g, loss_g)
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


@torch.no_grad()
def recalibrate_batchnorm(g: nn.Module, latents: list[torch.Tensor]) -> bool:
    """Give an EMA generator BatchNorm statistics of its own ("standing statistics", Brock et al. 2019).

    `update_ema` averages the weights but copies the running statistics of the live G, which were
    measured on the live G's activations; the averaged weights make other activations, so in eval mode
    their normalisation is off (the bundled shapes DCGAN drew 91% smears that way against 73% with
    batch statistics). This runs `latents` through `g` in train mode with a cumulative average and
    leaves `g` as it was. Returns False (and does nothing) when `g` has no BatchNorm."""
    was_training = g.training
    with batchnorm_momentum(g, None) as norms:  # a cumulative average over the batches below
        if not norms:
            return False
        for mod in norms:
            mod.reset_running_stats()
        g.train()
        for z in latents:
            g(z)
    g.train(was_training)
    return True


@contextlib.contextmanager
def batchnorm_momentum(module: nn.Module, momentum: Optional[float]):
    """Every BatchNorm of `module` with this momentum meanwhile (0: train-mode passes leave the running
    statistics alone; None: a cumulative average), restored after; yields the BatchNorm modules."""
    norms = [mod for mod in module.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    momenta = [mod.momentum for mod in norms]
    try:
        for mod in norms:
            mod.momentum = momentum
        yield norms
    finally:
        for mod, kept in zip(norms, momenta):
            mod.momentum = kept


def ema_decay_at(decay: float, step: int) -> float:
    """Warm-up so early EMA weights are not dominated by the random init: min(decay, (1+n)/(10+n))."""
    return min(decay, (1.0 + step) / (10.0 + step))


# ---------------------------------------------------------------- latent codes

def make_latent(nz: int, num_codes: int, n: int, gen: Optional[torch.Generator],
                device: str | torch.device = "cpu", codes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(n, nz + num_codes, 1, 1): standard normal noise, then (when `num_codes` > 0) a one-hot
    categorical code, uniform over the codes unless `codes` is given."""
    z = torch.randn(n, nz, generator=gen, device=device)
    if num_codes > 0:
        if codes is None:
            codes = torch.randint(0, num_codes, (n,), generator=gen, device=device)
        z = torch.cat([z, F.one_hot(codes.to(z.device), num_codes).float()], 1)
    return z[:, :, None, None]


@torch.no_grad()
def generate(g: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] from `latents`, with G in eval mode (BatchNorm uses its running statistics,
    so an image depends only on its own latent, not on the rest of the batch); G's mode is restored."""
    was_training = g.training
    out = g.eval()(latents).float()
    g.train(was_training)
    return out


def step_generator(seed: int, rank: int, step: int, device: torch.device) -> torch.Generator:
    """A generator seeded by a hash of (seed, rank, step): no two triples share a stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1))
    return gen


# ---------------------------------------------------------------- the description of a kind

@dataclass(frozen=True)
class OptimizerSpec:
    """How to optimise an extra module: Adam with this rate and these betas, saved under `name`."""
    name: str
    lr: float
    betas: tuple = (0.9, 0.999)


def _no_checks(*_args) -> None:
    return None


def _no_codes(_model_cfg) -> int:
    return 0


def _no_extra_modules(_model_cfg, _g) -> dict:
    return {}


def _none_trained(_model_cfg) -> dict:
    return {}


def _no_meta(_model_cfg, _modules, _images) -> dict:
    return {}


def _nothing_unused(_model_cfg) -> bool:
    return False


def _no_finish(_cfg, _models, _images, _log=None, _progress=None) -> dict:
    return {}


def _no_choices(_cfg, _images, _saved=None, _log=None, _progress=None) -> tuple[dict, dict]:
    return {}, {}


def _no_start(_model_cfg, _models) -> None:
    return None


def _fresh(_model_cfg, _role, _module, _cores) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Kind:
    """One model kind, as the registry (`gan_core.kinds`) holds it. Only `name`, `config`, `build` and
    `train_step` are required; every other field defaults to "as the DCGAN does"."""
    name: str
    config: type  # the model config dataclass; its `kind` field defaults to `name`
    build: Callable[[Any], tuple]  # model config -> (G, D), initialised
    train_step: StepFn  # (Models, Batch) -> detached metric tensors
    validate: Callable[[RunConfig], None] = _no_checks  # the kind's own config checks (ValueError)
    check_run: Callable[[RunConfig, int, int], None] = _no_checks  # (cfg, dataset size, world size) before building
    num_codes: Callable[[Any], int] = _no_codes  # one-hot codes appended to G's noise (cluster: K)
    ema_roles: tuple = (GENERATOR,)  # G and/or D: the modules that get an EMA copy when train.ema_decay > 0
    extra_modules: Callable[[Any, nn.Module], dict] = _no_extra_modules  # (cfg, G) -> role -> module a checkpoint may hold
    trained_extras: Callable[[Any], dict] = _none_trained  # cfg -> role -> OptimizerSpec, for those trained with G and D
    unused_parameters: Callable[[Any], bool] = _nothing_unused  # DDP must expect parameters without gradients
    # (cfg, role -> module, the training images) -> more entries for each checkpoint's config.json
    checkpoint_meta: Callable[[Any, dict, torch.Tensor], dict] = _no_meta
    # (run cfg, Models, the training images, log(line), progress(stage, done, total)) -> more entries for
    # the final checkpoint's config.json: a stage after the last training step (cluster: the SCAN head)
    finish: Callable[..., dict] = _no_finish
    # (run cfg, the training images, the resumed run's (cfg, meta) or None, log(line), progress(stage, done,
    # total)) -> (model config values, entries for every checkpoint's config.json): settings the kind picks
    # from the data before anything is built (cluster: input_transform=auto); a resumed run keeps its pick
    choose: Callable[..., tuple[dict, dict]] = _no_choices
    # (model cfg, Models) before the first step of a run that has steps to go (fresh or resumed): undo
    # what `finish` made that more steps would make stale (cluster: the SCAN head no longer predicts)
    start: Callable[[Any, "Models"], None] = _no_start
    # (model cfg, role, the extra module, role -> the modules loaded so far) when a resumed run or one from
    # train.init_from starts an extra module its checkpoint lacks: may start it from the trained modules
    # (dcgan: the encoder from D's layers) and say how, for the log; None leaves it as initialised
    start_extra: Callable[[Any, str, nn.Module, dict], Optional[str]] = _fresh
    # model config fields a config.json written before they existed must read as these values, not
    # today's defaults (cluster: head_fit = "iic", as those checkpoints were trained)
    legacy_defaults: dict = field(default_factory=dict)
    # model config fields that only weigh or shape the losses (R1's weight, augmentations), or only label
    # the outputs (cluster names), never the weights' shapes or meaning: a resumed run may change them
    # (every other model field must match)
    loss_fields: tuple = ()
    graph_safe: bool = True  # the step is the same every time (one CUDA graph can replay it: gan_core.graphs)
    facade: Optional[type] = None  # the inference class a loaded checkpoint becomes (gan_core.inference)

    def latent(self, model_cfg, n: int, gen: Optional[torch.Generator], device: str | torch.device = "cpu",
               codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(n, nz + codes, 1, 1) latents for this kind's generator (see `make_latent`)."""
        return make_latent(model_cfg.nz, self.num_codes(model_cfg), n, gen, device, codes)

    def seeded_latent(self, model_cfg, n: int, seed: int, device: str | torch.device = "cpu",
                      codes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Seeded latents; the same seed gives the same latents on any device (drawn on the CPU)."""
        return self.latent(model_cfg, n, torch.Generator().manual_seed(int(seed)), "cpu", codes).to(device)


def check_widths(cfg: RunConfig) -> None:
    """nz, ngf and ndf: the fields every GAN-shaped kind has."""
    m = cfg.model
    check_ints(("model.nz", m.nz, 1, 4096), ("model.ngf", m.ngf, 1, 1024), ("model.ndf", m.ndf, 1, 1024))
