"""The `dcgan` kind: the seed's DCGAN (Radford et al. 2015, as in the PyTorch DCGAN tutorial).

At 64x64, 3 channels, nz=100, ngf=ndf=64 the printed modules are exactly the tutorial's.
Other sizes add or drop one stride-2 stage per factor of two; 1 channel changes only the
image-facing layers.

The training step is the tutorial's update (Adam 2e-4, betas (0.5, 0.999); D on real, D on
detached fake, D step; G through the updated D, G step), with the sigmoid folded into
BCE-with-logits (the same mathematics, stable under bf16) and D's own weight gradients skipped
during the G step (the tutorial computes and then discards them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..augment import DIFF_AUGMENT_OPS, diff_augment, diff_augment_ops, gaussian_blur, instance_noise
from ..checkpoint import DISCRIMINATOR
from ..config import RunConfig, check_choice, check_ints, check_numbers
from ..losses import d_loss_bce, g_loss_bce, latent_mmd, reconstruction_loss
from ..runtime import autocast
from .base import Batch, Models, OptimizerSpec, batchnorm_momentum, check_widths, g_update_and_metrics, lazy_r1


@dataclass
class DCGANConfig:
    kind: str = "dcgan"  # the model kind (model=dcgan)
    image_size: int = 64  # follows data.image_size (set that one)
    channels: int = 3  # follows data.channels (set that one)
    nz: int = 100  # noise dimensions (the latent z)
    ngf: int = 64  # generator width: 8ngf channels at 4x4, halving each stage to ngf
    ndf: int = 64  # discriminator width: ndf channels at the first stage, doubling each stage
    # R1 (Mescheder et al. 2018): gamma / 2 * E||grad_x D(x)||^2 on real images added to D's loss at
    # every step (so the step stays the same each time). 0: the seed's update.
    r1_gamma: float = 0.0
    # Lazy R1 (StyleGAN2): the penalty on every r1_every-th step only, scaled by r1_every (about the same
    # regularisation for a fraction of the double backwards). 1: every step (the step never changes, so a
    # CUDA graph can replay it).
    r1_every: int = 1
    # DiffAugment (Zhao et al. 2020): comma-separated ops from gan_core.augment.DIFF_AUGMENT_OPS applied to
    # every image D sees, real and fake ("color,translation,cutout" is the paper's). "": none, the seed's update.
    diffaugment: str = ""
    # D-input blur (StyleGAN3's blur_init_sigma): every image D sees, real and fake, blurred by a Gaussian
    # of this many pixels, faded linearly to 0 over d_blur_steps, so D first judges the layout and the
    # silhouettes before edges and texture. 0: none, the seed's update.
    d_blur: float = 0.0
    d_blur_steps: int = 0  # steps over which d_blur fades to 0 (0 with d_blur > 0: constant)
    # D's normalisation: "batch" (the seed's BatchNorm, fed real and fake batches apart, so D can judge a
    # batch's statistics as well as each image) or "none" (no normalisation, and D's convs get biases:
    # each image judged alone, as in StyleGAN2's D; pair it with model.r1_gamma).
    d_norm: str = "batch"
    # Self-supervised D (FastGAN, Liu et al. 2021): a small decoder redraws each real image (at up to 32 px)
    # from D's last feature map, and D's loss adds d_recon times the mean squared error, so D's features
    # must keep the whole image (outline, position, colour), not only what tells real from fake today.
    # 0: no decoder, the seed's D.
    d_recon: float = 0.0
    # An encoder beside the GAN (alpha-GAN, Rosca et al. 2017; the mode-regularised GAN, Che et al. 2017):
    # E (D's layers, ending in nz numbers) reads each real image's latent and G redraws the image from it;
    # G's loss adds recon_weight x the mean squared error, so every kind of image in the data has latents
    # that G paints it from, not only those D happens to ask for. E's codes are pulled towards the normal
    # distribution that sampling draws from by recon_weight x latent_mmd x their MMD to it (WAE-MMD, Tolstikhin
    # et al. 2018), so those latents are the ones sampling reaches. The redrawing leaves G's BatchNorm running
    # statistics alone (they stay those of sampling). 0: no encoder, the seed's update (needs batches of 2+).
    recon_weight: float = 0.0
    latent_mmd: float = 1.0  # E's MMD weight, relative to recon_weight (E's loss: recon_weight x (MSE + this x MMD))
    encoder_lr: float = 1e-4  # E's Adam rate (betas 0.5, 0.999: the seed's G)
    # Top-k training (Sinha et al. 2020): G's adversarial loss counts only this share of each batch's fakes,
    # those D rates most real, so the fakes D finds worst do not pull G. 1: every fake, the seed's update.
    g_topk: float = 1.0


D_NORMS = ("batch", "none")
# the fields a resumed run may change (`Kind.loss_fields`): they weigh or shape the losses (D's and its inputs,
# and the encoder's terms in G's) only
LOSS_FIELDS = ("r1_gamma", "r1_every", "diffaugment", "d_blur", "d_blur_steps", "recon_weight", "latent_mmd",
               "encoder_lr", "g_topk")


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d, printed as the seed printed it.

    PyTorch 2.14 added an optional `bias` flag to BatchNorm and shows `bias=True` in the repr;
    the seed's module listing predates it. The default (bias present) is unchanged, so only the
    repr drops the flag, keeping printed modules identical to the seed on old and new PyTorch."""

    def extra_repr(self) -> str:
        return super().extra_repr().replace(", bias=True", "")


def _stages(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and the image (64 -> 4 stages)."""
    n = int(math.log2(image_size)) - 2
    if 2 ** (n + 2) != image_size or n < 1:
        raise ValueError(f"image_size must be a power of two >= 8, not {image_size}")
    return n


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        n = _stages(cfg.image_size)
        mult = 2 ** (n - 1)  # 8 at 64x64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.nz, cfg.ngf * mult, 4, 1, 0, bias=False),  # (N, 512, 4, 4)
            BatchNorm2d(cfg.ngf * mult),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):  # 4 -> 8 -> 16 -> 32 at 64x64, channels halving to ngf
            layers += [
                nn.ConvTranspose2d(cfg.ngf * mult, cfg.ngf * mult // 2, 4, 2, 1, bias=False),
                BatchNorm2d(cfg.ngf * mult // 2),
                nn.ReLU(True),
            ]
            mult //= 2
        layers += [
            nn.ConvTranspose2d(cfg.ngf, cfg.channels, 4, 2, 1, bias=False),  # (N, 3, 64, 64)
            nn.Tanh(),
        ]
        self.main = nn.Sequential(*layers)
        self.nz = cfg.nz

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


def _trunk(cfg: DCGANConfig) -> tuple[list[nn.Module], int]:
    """D's layers from the image to its 4x4 feature map, and that map's width (the encoder reads images
    through the same layers)."""
    n = _stages(cfg.image_size)
    batch_norm = cfg.d_norm == "batch"
    bias = not batch_norm  # the seed's convs rely on BatchNorm's shift; without it they keep a bias
    layers: list[nn.Module] = [
        nn.Conv2d(cfg.channels, cfg.ndf, 4, 2, 1, bias=bias),  # (N, 64, 32, 32)
        nn.LeakyReLU(0.2, inplace=True),
    ]
    mult = 1
    for _ in range(n - 1):  # 32 -> 16 -> 8 -> 4 at 64x64
        layers += [
            nn.Conv2d(cfg.ndf * mult, cfg.ndf * mult * 2, 4, 2, 1, bias=bias),
            BatchNorm2d(cfg.ndf * mult * 2) if batch_norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult *= 2
    return layers, cfg.ndf * mult


class Discriminator(nn.Module):
    """Ends in Sigmoid like the seed; `forward(x, logits=True)` skips it so the loss can use
    BCE-with-logits (the same mathematics, stable under bf16)."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        layers, width = _trunk(cfg)
        layers += [
            nn.Conv2d(width, 1, 4, 1, 0, bias=False),  # (N, 1, 1, 1)
            nn.Sigmoid(),
        ]
        self.main = nn.Sequential(*layers)
        self.decoder = Decoder(width, cfg.channels, min(cfg.image_size, 32)) if cfg.d_recon > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map, (N, ndf*mult, 4, 4)."""
        return self.main[:-2](x)

    def forward(self, x: torch.Tensor, logits: bool = False, redraw: bool = False):
        """(N,) probabilities (or logits) that x is real; `redraw=True` (with the decoder): the logits
        (always logits) and the decoder's redrawing of x from the same features, (N, C, s, s)."""
        if not redraw:
            body = self.main[:-1] if logits else self.main
            return body(x).flatten()  # (N,)
        if self.decoder is None:
            raise ValueError("this discriminator has no decoder to redraw with (model.d_recon is 0)")
        feats = self.features(x)
        return self.main[-2](feats).flatten(), self.decoder(feats)


class Decoder(nn.Module):
    """D's 4x4 feature map -> an image of `size` px (the self-supervised D's redrawing): a 1x1 conv
    down to a quarter of the features' width, stride-2 transposed convs halving it, then a 3x3 conv to
    the image's channels and tanh. About a tenth of D's weights. Its BatchNorm mixes a batch only in
    the redrawing; D's logits stay per image with model.d_norm=none."""

    def __init__(self, width: int, channels: int, size: int):
        super().__init__()
        narrow = max(16, width // 4)
        layers: list[nn.Module] = [nn.Conv2d(width, narrow, 1, bias=False), BatchNorm2d(narrow), nn.ReLU(True)]
        width = narrow
        for _ in range(_stages(size)):  # 4 -> 8 -> 16 -> 32
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.Conv2d(width, channels, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.main(feats)


class Encoder(nn.Module):
    """An image -> its latent (N, nz, 1, 1), for G to redraw it from (`model.recon_weight`): D's layers,
    ending in a 4x4 conv to nz numbers (with a bias) instead of D's one logit."""

    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        layers, width = _trunk(cfg)
        self.main = nn.Sequential(*layers, nn.Conv2d(width, cfg.nz, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def weights_init(m: nn.Module) -> None:
    """DCGAN paper init: convs N(0, 0.02) (a bias, where there is one, 0); BatchNorm scale N(1, 0.02), shift 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build(cfg: DCGANConfig) -> tuple[Generator, Discriminator]:
    g, d = Generator(cfg), Discriminator(cfg)
    g.apply(weights_init)
    d.apply(weights_init)
    return g, d


def extra_modules(cfg: DCGANConfig, g: Generator) -> dict[str, nn.Module]:
    """What a DCGAN checkpoint may hold beside G and D: the encoder, where `recon_weight` trains one (a
    config without it describes G and D only, so loading and the upload size check count no encoder)."""
    if cfg.recon_weight <= 0:
        return {}
    e = Encoder(cfg)
    e.apply(weights_init)
    return {"encoder": e}


def start_extra(cfg: DCGANConfig, role: str, module: nn.Module, cores: dict) -> Optional[str]:
    """An encoder switched on at a resume or `train.init_from` starts from the trained D's layers (it has
    them; only its last conv stays new): in an A/B from the bundled shapes-dcgan it learned to redraw real
    images faster than from random weights (squared error 0.058 against 0.083 after 400 steps)."""
    if role != "encoder":
        return None
    n = len(module.main) - 1  # the encoder is D's trunk and one conv
    module.main[:n].load_state_dict(cores[DISCRIMINATOR].main[:n].state_dict())
    return "from the discriminator's layers"


def trained_extras(cfg: DCGANConfig) -> dict[str, OptimizerSpec]:
    """The encoder trains beside the GAN when recon_weight > 0 (optimizer state saved as "E")."""
    return {"encoder": OptimizerSpec("E", cfg.encoder_lr, (0.5, 0.999))} if cfg.recon_weight > 0 else {}


def validate(cfg: RunConfig) -> None:
    check_widths(cfg)
    check_numbers(("model.r1_gamma", cfg.model.r1_gamma, 0.0, 1000.0))
    check_ints(("model.r1_every", cfg.model.r1_every, 1, 10_000), ("model.d_blur_steps", cfg.model.d_blur_steps, 0, 10**8))
    check_numbers(("model.d_blur", cfg.model.d_blur, 0.0, 32.0))
    check_choice("model.d_norm", cfg.model.d_norm, D_NORMS)
    check_numbers(("model.d_recon", cfg.model.d_recon, 0.0, 1000.0), ("model.recon_weight", cfg.model.recon_weight, 0.0, 1e6),
                  ("model.latent_mmd", cfg.model.latent_mmd, 0.0, 1e6), ("model.encoder_lr", cfg.model.encoder_lr, 1e-8, 1.0),
                  ("model.g_topk", cfg.model.g_topk, 0.01, 1.0))
    try:
        diff_augment_ops(cfg.model.diffaugment)
    except ValueError:
        raise ValueError(f"model.diffaugment takes comma-separated ops from {', '.join(DIFF_AUGMENT_OPS)}, "
                         f"not {cfg.model.diffaugment!r}") from None
    if cfg.model.recon_weight > 0 and cfg.train.batch_size < 2:
        raise ValueError("model.recon_weight compares the encoder's latents within a batch: "
                         "train.batch_size must be 2 or more")
    if cfg.train.compile and cfg.model.r1_gamma > 0:
        raise ValueError("model.r1_gamma needs a double backward, which torch.compile does not "
                         "support: set train.compile=false or model.r1_gamma=0")


def d_blur_sigma(model_cfg, step: int) -> float:
    """The D-input blur's sigma at `step` (model.d_blur faded linearly over model.d_blur_steps)."""
    sigma, steps = getattr(model_cfg, "d_blur", 0.0), getattr(model_cfg, "d_blur_steps", 0)
    if sigma <= 0 or steps <= 0:
        return max(0.0, sigma)
    return sigma * max(0.0, 1.0 - step / steps)


def train_step(m: Models, b: Batch) -> dict[str, torch.Tensor]:
    """One DCGAN update of D then G. Returns detached metric tensors (no host sync).

    With the defaults this is the tutorial's update. `b.real_label` < 1 smooths the real target;
    `b.input_noise_std` > 0 adds Gaussian instance noise (drawn from `b.gen`) to every image D sees;
    `model.r1_gamma` > 0 adds R1 on the real images to D's loss (`loss_d` is reported without it, as `r1`);
    `model.diffaugment` augments every image D sees (after the noise), from `b.gen`; `model.d_blur` blurs
    every image D sees first (R1 then applies to the blurred real images, which are what D judges);
    `model.d_recon` > 0 adds to D's loss the error of its decoder's redrawing of each real image as D saw
    it (reported as `recon`); `model.recon_weight` > 0 adds to G's loss the error of G's redrawing of each
    real image from the encoder's latent of it, and trains the encoder on that error plus the MMD of its
    latents to the step's noise (reported as `redraw` and `mmd`; `loss_g` stays the adversarial term)."""
    real, device = b.real, b.real.device
    policy = getattr(m.model_cfg, "diffaugment", "")  # plug-in kinds reuse this step with their own configs
    sigma = d_blur_sigma(m.model_cfg, b.step)
    real = gaussian_blur(real, sigma)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(instance_noise(x, b.input_noise_std, b.gen), policy, b.gen)

    recon_weight = getattr(m.model_cfg, "d_recon", 0.0)
    with autocast(device, m.autocast_dtype):
        real_in = noisy(real)
        if recon_weight > 0:
            real_logits, redrawn = m.D(real_in, logits=True, redraw=True)
        else:
            real_logits = m.D(real_in, logits=True)
        fake = m.G(b.noise)
        fake_d = gaussian_blur(fake, sigma)  # (what D sees of the fakes)
        fake_logits = m.D(noisy(fake_d.detach()), logits=True)
        loss_d = d_loss_bce(real_logits, fake_logits, b.real_label)
    total_d = loss_d
    if recon_weight > 0:  # the redrawing is judged against the image D was shown, at the decoder's size
        recon = reconstruction_loss(redrawn, real_in)
        total_d = total_d + recon_weight * recon
    gamma = getattr(m.model_cfg, "r1_gamma", 0.0)  # plug-in kinds reuse this step with their own configs
    if gamma > 0:  # on the clean real images
        r1_term, r1 = lazy_r1(m.D, real, gamma, getattr(m.model_cfg, "r1_every", 1), b.step)
        if r1_term is not None:
            total_d = total_d + r1_term
    m.update(m.opt_d, total_d)

    m.d_core.requires_grad_(False)  # G's gradient flows through D; D's own weight grads are not needed
    encoder = m.extras.get("encoder")
    with autocast(device, m.autocast_dtype):
        gen_logits = m.d_for_g(noisy(fake_d), logits=True)
        loss_g = g_loss_bce(gen_logits, getattr(m.model_cfg, "g_topk", 1.0))
        if encoder is not None:  # G redraws each real image from E's latent of it (the clean image)
            codes = encoder.module(b.real)
            with batchnorm_momentum(m.g_core, 0.0):  # G's running statistics stay those of sampling
                redraw_error = reconstruction_loss(m.G(codes), b.real)
    total_g = loss_g
    if encoder is not None:
        # E's codes against this step's own noise, a sample of the latent distribution (MMD reaches E only)
        mmd = latent_mmd(codes.flatten(1), b.noise.flatten(1))
        total_g = loss_g + m.model_cfg.recon_weight * (redraw_error + m.model_cfg.latent_mmd * mmd)
        encoder.optimizer.zero_grad(set_to_none=True)
    metrics = g_update_and_metrics(m, loss_d, total_g, real_logits, fake_logits, gen_logits)
    if encoder is not None:
        m.step(encoder.optimizer)
        metrics.update(loss_g=loss_g.detach(), redraw=redraw_error.detach(), mmd=mmd.detach())
    if gamma > 0:
        metrics["r1"] = r1
    if recon_weight > 0:
        metrics["recon"] = recon.detach()
    return metrics


@torch.no_grad()
def widen_generator(old: Generator, new: Generator, noise: float = 0.0, seed: int = 0) -> None:
    """Copy a trained generator into one of twice its width (`new`: ngf doubled), Net2WiderNet style
    (Chen et al. 2016): every hidden channel and its BatchNorm entries twice, the next layer's weights from
    each copy halved, so `new` paints what `old` painted (in train and eval mode). `noise` > 0 adds Gaussian
    noise of that fraction of each widened layer's weight spread (seeded), so the two copies of a channel can
    learn apart once training goes on; the output then moves by about that fraction too."""
    convs_old = [m for m in old.main if isinstance(m, nn.ConvTranspose2d)]
    convs_new = [m for m in new.main if isinstance(m, nn.ConvTranspose2d)]
    norms_old = [m for m in old.main if isinstance(m, nn.BatchNorm2d)]
    norms_new = [m for m in new.main if isinstance(m, nn.BatchNorm2d)]
    if len(convs_old) != len(convs_new) or any(
            b.weight.shape[1] != 2 * a.weight.shape[1] for a, b in zip(convs_old[:-1], convs_new[:-1])):
        raise ValueError("widen_generator needs a generator of the same size and twice the width (ngf)")
    _net2wider(list(zip(convs_old, convs_new)), dict(enumerate(zip(norms_old, norms_new))), 1, noise, seed)


@torch.no_grad()
def widen_discriminator(old: Discriminator, new: Discriminator, noise: float = 0.0, seed: int = 0) -> None:
    """Copy a trained discriminator into one of twice its width (`new`: ndf doubled), Net2WiderNet style as
    `widen_generator` does: every hidden channel (its conv filter, bias and BatchNorm entries) twice, and
    the next layer's weights from each copy halved, so `new` gives the logits `old` gave (in train and eval
    mode). `noise` > 0 adds seeded Gaussian noise of that fraction of each widened filter bank's spread,
    so the copies can learn apart. A discriminator with the self-supervised decoder (`model.d_recon`) is
    refused: its decoder would need widening too."""
    if old.decoder is not None or new.decoder is not None:
        raise ValueError("widen_discriminator does not widen the decoder of model.d_recon")
    convs_old = [m for m in old.main if isinstance(m, nn.Conv2d)]
    convs_new = [m for m in new.main if isinstance(m, nn.Conv2d)]
    norms_old = [m for m in old.main if isinstance(m, nn.BatchNorm2d)]
    norms_new = [m for m in new.main if isinstance(m, nn.BatchNorm2d)]
    if len(convs_old) != len(convs_new) or len(norms_old) != len(norms_new) or any(
            b.weight.shape[0] != 2 * a.weight.shape[0] for a, b in zip(convs_old[:-1], convs_new[:-1])):
        raise ValueError("widen_discriminator needs a discriminator of the same size and twice the width (ndf)")
    # the BatchNorm (if any) after every conv but the first and the last
    norms = {i + 1: pair for i, pair in enumerate(zip(norms_old, norms_new))}
    _net2wider(list(zip(convs_old, convs_new)), norms, 0, noise, seed)


@torch.no_grad()
def _net2wider(convs: list, norms: dict, out_axis: int, noise: float, seed: int) -> None:
    """Net2WiderNet over a stack of convolutions, (old, new) pairs in order, each new one twice as wide
    (but the last's outputs): every output channel of all but the last conv copied twice (its weights,
    bias and, where `norms` names a BatchNorm after that conv, (old, new) by conv index, its entries), the
    next conv's weights from each copy halved. `out_axis`: the weight axis of the output channels (0 for
    Conv2d, 1 for ConvTranspose2d). `noise`: seeded Gaussian noise of that fraction of each widened weight's
    spread."""
    in_axis = 1 - out_axis
    gen = torch.Generator().manual_seed(seed)
    copies = None  # which old channel each new input channel copies
    for i, (a, b) in enumerate(convs):
        w = a.weight.float()
        if copies is not None:
            w = w.index_select(in_axis, copies) / 2
        bias = a.bias.float() if a.bias is not None else None
        if i < len(convs) - 1:
            copies = torch.arange(w.shape[out_axis]).repeat(2)
            w = w.index_select(out_axis, copies)
            if noise > 0:
                w = w + torch.randn(w.shape, generator=gen) * w.std() * noise
            bias = bias[copies] if bias is not None else None
            if i in norms:
                old_norm, new_norm = norms[i]
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(new_norm, name).copy_(getattr(old_norm, name)[copies])
                new_norm.num_batches_tracked.copy_(old_norm.num_batches_tracked)
        b.weight.copy_(w)
        if bias is not None:
            b.bias.copy_(bias)
