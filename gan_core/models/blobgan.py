"""The `blobgan` kind: BlobGAN at DCGAN scale.

A layout net maps noise to K blobs plus a background (`gan_core.models.blob_layout.Layout`); the
painter starts from the splatted structure grid (image_size / 4) and modulates every layer per
pixel by the splatted styles; the discriminator has no BatchNorm and is trained with the logistic
loss and lazy R1. With `recon_weight` > 0 an inversion encoder trains beside the GAN (an extra
module with its own optimizer, saved as `encoder.safetensors`), and the painter also learns to
redraw real images from the layouts it reads. The model behind the app (sample, edit, invert) is
`gan_core.inference.blobs.BlobModel`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig, check_ints, check_numbers
from ..losses import d_logistic_loss, g_nonsaturating_loss
from ..runtime import autocast
from .base import Batch, Models, OptimizerSpec, check_widths, g_update_and_metrics, lazy_r1
from .blob_layout import Layout, splat, splat_features


@dataclass
class BlobGANConfig:
    """BlobGAN at DCGAN scale: a layout net (noise -> K blobs + background), a painter that starts from
    the splatted structure features at image_size/4 and is modulated per pixel by the splatted
    styles, and a BatchNorm-free discriminator trained with the logistic loss and lazy R1."""
    kind: str = "blobgan"  # the model kind (model=blobgan)
    image_size: int = 64  # follows data.image_size (set that one)
    channels: int = 3  # follows data.channels (set that one)
    nz: int = 64  # noise dimensions (the layout net's input)
    ngf: int = 16  # painter width: 4ngf at image_size/4, 2ngf at /2, ngf at full size
    ndf: int = 32  # discriminator width
    blobs: int = 8  # how many blobs a layout has
    min_axis: float = 0.2  # elongation a, b in [min_axis, 1]: axis ratio at most sqrt(1/min_axis) (0.2: ~2.2)
    feature_dim: int = 128  # structure feature phi per blob
    style_dim: int = 64  # style feature psi per blob
    layout_hidden: int = 256  # the layout net's hidden width
    jitter: float = 0.02  # std of the noise on blob centres during training (image fractions)
    r1_gamma: float = 0.1  # R1 penalty weight on real images
    r1_every: int = 16  # lazy R1: the penalty every N steps (scaled by N)
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


# the fields a resumed run may change (`Kind.loss_fields`)
LOSS_FIELDS = ("r1_gamma", "r1_every", "jitter")


def validate(cfg: RunConfig) -> None:
    m, t = cfg.model, cfg.train
    check_widths(cfg)
    check_ints(("model.blobs", m.blobs, 1, 64), ("model.feature_dim", m.feature_dim, 1, 4096),
               ("model.style_dim", m.style_dim, 1, 4096), ("model.layout_hidden", m.layout_hidden, 1, 8192),
               ("model.r1_every", m.r1_every, 1, 10_000), ("model.encoder_ndf", m.encoder_ndf, 1, 1024))
    check_numbers(("model.jitter", m.jitter, 0.0, 0.5), ("model.r1_gamma", m.r1_gamma, 0.0, 1000.0),
                  ("model.min_axis", m.min_axis, 0.001, 1.0),
                  ("model.recon_weight", m.recon_weight, 0.0, 1e6), ("model.encoder_lr", m.encoder_lr, 1e-8, 1.0),
                  ("model.encoder_latent_weight", m.encoder_latent_weight, 0.0, 1e6))
    if t.compile and m.r1_gamma > 0:
        raise ValueError("blobgan's R1 penalty needs a double backward, which torch.compile does not "
                         "support: set train.compile=false or model.r1_gamma=0")
    if t.real_label != 1.0 or t.instance_noise != 0.0:
        raise ValueError("blobgan uses the logistic loss with R1: train.real_label must be 1 and "
                         "train.instance_noise 0")


def extra_modules(cfg: "BlobGANConfig", g: "BlobGenerator") -> dict[str, nn.Module]:
    """What a BlobGAN checkpoint may hold beside G and D: the inversion encoder."""
    return {"encoder": build_encoder(cfg, g)}


def trained_extras(cfg: "BlobGANConfig") -> dict[str, OptimizerSpec]:
    """The encoder trains beside the GAN when recon_weight > 0 (optimizer state saved as "E")."""
    return {"encoder": OptimizerSpec("E", cfg.encoder_lr, (0.9, 0.999))} if cfg.recon_weight > 0 else {}


# ---------------------------------------------------------------- networks

class LayoutNet(nn.Module):
    """z (N, nz) -> Layout. An MLP whose output is split into the blob parameters."""

    def __init__(self, nz: int, blobs: int, feature_dim: int, style_dim: int, hidden: int, min_axis: float = 0.2):
        super().__init__()
        self.blobs, self.feature_dim, self.style_dim, self.min_axis = blobs, feature_dim, style_dim, min_axis
        self.per_blob = 2 + 2 + 2 + 1 + feature_dim + style_dim
        self.mlp = nn.Sequential(
            nn.Linear(nz, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, blobs * self.per_blob + feature_dim + style_dim))
        # He init keeps the outputs' spread near 1 across z; PyTorch's default shrinks it ~8x over three
        # layers, which starts every blob at the image centre and every sample alike (measured collapse).
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                last = layer is self.mlp[-1]
                nn.init.kaiming_normal_(layer.weight, a=0.2, nonlinearity="linear" if last else "leaky_relu")
                nn.init.zeros_(layer.bias)

    @property
    def raw_dim(self) -> int:
        return self.blobs * self.per_blob + self.feature_dim + self.style_dim

    def forward(self, z: torch.Tensor) -> Layout:
        return self.decode(self.mlp(z.flatten(1)))

    def decode(self, raw: torch.Tensor) -> Layout:
        """The raw vector (N, raw_dim) -> Layout (also used by the inversion encoder)."""
        n, k, fd, sd = raw.shape[0], self.blobs, self.feature_dim, self.style_dim
        blobs, bg = raw[:, : k * self.per_blob].view(n, k, self.per_blob), raw[:, k * self.per_blob:]
        xy, ab, ang, s, phi, psi = blobs.float().split([2, 2, 2, 1, fd, sd], -1)
        # Unbounded elongation let the first CPU run turn every blob into a needle by step 1,500.
        ab = self.min_axis + (1 - self.min_axis) * torch.sigmoid(ab)
        return Layout(xy=torch.sigmoid(xy), ab=ab,
                      angle=F.normalize(ang, dim=-1, eps=1e-6), size=s.squeeze(-1) + 2.0,  # start visible
                      phi=phi, psi=psi, bg_phi=bg[:, :fd].float(), bg_psi=bg[:, fd:].float())


class ModulatedBlock(nn.Module):
    """3x3 conv, then per-pixel modulation by the splatted style map: x * (1 + gamma) + beta."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.affine = nn.Conv2d(style_dim, 2 * cout, 1)  # A(psi): linear, so A(sum w psi) = sum w A(psi)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.leaky_relu(self.conv(x), 0.2)
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)  # pixel norm: the style sets the scale
        gamma, beta = self.affine(style).chunk(2, 1)
        return x * (1 + gamma) + beta


class BlobGenerator(nn.Module):
    """z -> layout -> image. `render(layout)` paints a given (maybe edited) layout."""

    def __init__(self, cfg):
        super().__init__()
        self.image_size, self.grid = cfg.image_size, cfg.image_size // 4
        self.layout_net = LayoutNet(cfg.nz, cfg.blobs, cfg.feature_dim, cfg.style_dim, cfg.layout_hidden, cfg.min_axis)
        widths = [cfg.ngf * 4, cfg.ngf * 2, cfg.ngf]  # at grid, 2x grid, 4x grid (= image_size)
        self.stem = nn.Conv2d(cfg.feature_dim, widths[0], 1)
        self.blocks = nn.ModuleList([
            ModulatedBlock(widths[0], widths[0], cfg.style_dim, upsample=False),  # (N, 4ngf, S/4, S/4)
            ModulatedBlock(widths[0], widths[1], cfg.style_dim, upsample=True),  # (N, 2ngf, S/2, S/2)
            ModulatedBlock(widths[1], widths[2], cfg.style_dim, upsample=True),  # (N, ngf, S, S)
        ])
        self.to_rgb = nn.Conv2d(widths[2], cfg.channels, 1)

    def forward(self, z: torch.Tensor, jitter_std: float = 0.0, gen: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.render(jitter(self.layout_net(z), jitter_std, gen))

    def render(self, layout: Layout) -> torch.Tensor:
        weights = splat(layout, self.grid)
        x = self.stem(splat_features(weights, layout.phi, layout.bg_phi))  # (N, 4ngf, S/4, S/4)
        size = self.grid
        for block in self.blocks:
            size = size * 2 if block.upsample else size
            style = splat_features(splat(layout, size), layout.psi, layout.bg_psi)
            x = block(x, style.to(x.dtype))
        return torch.tanh(self.to_rgb(x))


def strided_convs(channels: int, width: int, image_size: int) -> tuple[nn.Sequential, int]:
    """DCGAN-style 4x4 stride-2 convs with LeakyReLU and no BatchNorm, from image_size down to 4x4,
    doubling the width up to 8x. Returns the stack and its output channels."""
    layers, cin, ch, size = [], channels, width, image_size
    while size > 4:
        layers += [nn.Conv2d(cin, ch, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        cin, ch, size = ch, min(ch * 2, width * 8), size // 2
    return nn.Sequential(*layers), cin


class BlobDiscriminator(nn.Module):
    """DCGAN-shaped strided convs with LeakyReLU and no BatchNorm (R1 needs per-image gradients)."""

    def __init__(self, cfg):
        super().__init__()
        self.main, cin = strided_convs(cfg.channels, cfg.ndf, cfg.image_size)  # (N, cin, 4, 4)
        self.out = nn.Conv2d(cin + 1, 1, 4, 1, 0)  # + the minibatch-stddev channel -> (N, 1, 1, 1)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        h = self.main(x)
        out = self.out(torch.cat([h, minibatch_stddev(h)], 1)).flatten()
        return out if logits else torch.sigmoid(out)


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """(N, 1, H, W): per group of `group` images, the mean over features of their standard deviation
    across the group (StyleGAN's diversity signal: lets D see a batch of look-alikes). Groups of 1
    (N not divisible by `group`) give zeros."""
    n, c, hh, ww = h.shape
    g = group if n % group == 0 else 1
    if g == 1:
        return h.new_zeros(n, 1, hh, ww)
    std = h.float().view(g, n // g, c, hh, ww).var(0, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))  # (n/g,)
    return std.repeat(g)[:, None, None, None].expand(n, 1, hh, ww).to(h.dtype)


class BlobEncoder(nn.Module):
    """Image -> the layout net's raw vector (decoded by the generator's `layout_net.decode`):
    DCGAN-style strided convs (no BatchNorm, so each image is inverted on its own), then an MLP."""

    def __init__(self, cfg, raw_dim: int):
        super().__init__()
        self.trunk, cin = strided_convs(cfg.channels, cfg.encoder_ndf, cfg.image_size)  # (N, cin, 4, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 16, 512), nn.LeakyReLU(0.2), nn.Linear(512, raw_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_encoder(cfg, g: "BlobGenerator") -> BlobEncoder:
    return BlobEncoder(cfg, g.layout_net.raw_dim)


def layout_geometry_loss(pred: Layout, target: Layout) -> torch.Tensor:
    """Where the blobs are, rather than what they hold: the squared error of each blob's centre (in
    image-side units), weighted by the target blob's opacity at its centre (a hidden blob's place does
    not matter), plus the squared error of those opacities (which blobs show). Pure."""
    w = torch.sigmoid(target.size.float())  # (N, K)
    centre = ((pred.xy.float() - target.xy.float()).pow(2).sum(-1) * w).sum(1) / w.sum(1).clamp_min(1e-6)
    shown = (torch.sigmoid(pred.size.float()) - w).pow(2).mean(1)
    return (centre + shown).mean()


def encoder_losses(e: BlobEncoder, g: BlobGenerator, real: torch.Tensor, z: torch.Tensor, lpips=None,
                   latent_weight: float = 10.0, geometry_weight: float = 0.0,
                   fake: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """The inversion loss, G and the layout net frozen by the caller:
    LPIPS(x_r, G(E(x_r))) + LPIPS(x_f, G(E(x_f))) + MSE(x_r, .) + MSE(x_f, .) + 10 * MSE(beta_f, E(x_f)),
    beta_f being the layout net's raw vector for the fake x_f = G(z). Without `lpips` its terms are 0.
    `geometry_weight` > 0 adds that times `layout_geometry_loss` on the fakes: the raw vector is mostly
    blob features (199 numbers a blob, 2 of them its centre), so its MSE says little about placement.
    `fake`: G(z) when the caller has rendered it already (the GAN step, jittered); it is detached.
    (When G is not frozen, the MSE terms train its painter too: that is `train_step`'s recon_weight.)"""
    with torch.no_grad():
        beta_f = g.layout_net.mlp(z.flatten(1))
        target = g.layout_net.decode(beta_f)
        fake = g.render(target) if fake is None else fake.detach()
    pred_r, pred_f = e(real), e(fake)
    lay_f = g.layout_net.decode(pred_f)
    rec_r, rec_f = g.render(g.layout_net.decode(pred_r)), g.render(lay_f)
    out = {"mse_real": F.mse_loss(rec_r.float(), real.float()), "mse_fake": F.mse_loss(rec_f.float(), fake.float()),
           "latent": F.mse_loss(pred_f.float(), beta_f.float())}
    zero = torch.zeros((), device=real.device)
    out["geometry"] = layout_geometry_loss(lay_f, target) if geometry_weight > 0 else zero
    out["lpips_real"] = lpips(real, rec_r).mean() if lpips is not None else zero
    out["lpips_fake"] = lpips(fake, rec_f).mean() if lpips is not None else zero
    out["loss"] = (out["lpips_real"] + out["lpips_fake"] + out["mse_real"] + out["mse_fake"]
                   + latent_weight * out["latent"] + geometry_weight * out["geometry"])
    return out


def build(cfg) -> tuple[BlobGenerator, BlobDiscriminator]:
    return BlobGenerator(cfg), BlobDiscriminator(cfg)


def jitter(layout: Layout, std: float, gen: Optional[torch.Generator] = None) -> Layout:
    """Training-time noise on the blob centres, so the painter does not rely on exact positions."""
    if std <= 0:
        return layout
    noise = torch.randn(layout.xy.shape, generator=gen, device=layout.xy.device) * std
    return replace(layout, xy=(layout.xy + noise).clamp(0, 1))


def train_step(m: Models, b: Batch) -> dict[str, torch.Tensor]:
    """One update of D (logistic loss, plus R1 on the steps where `b.step % r1_every == 0`) then G
    (non-saturating). `loss_d` is reported without the R1 term (reported as `r1`). The label
    smoothing and instance noise of the DCGAN step do not apply here (config validation refuses them)."""
    cfg = m.model_cfg
    real, noise, gen = b.real, b.noise, b.gen
    encoder = m.extras.get("encoder")
    with autocast(real.device, m.autocast_dtype):
        fake = m.G(noise, cfg.jitter, gen)
        real_logits = m.D(real, logits=True)
        fake_logits = m.D(fake.detach(), logits=True)
        loss_d = d_logistic_loss(real_logits, fake_logits)
    r1 = torch.zeros((), device=real.device)
    total_d = loss_d
    if cfg.r1_gamma > 0:
        # Lazy R1 (StyleGAN2); a logging window's mean estimates the penalty (exactly when log_every %
        # r1_every == 0). (torch.compile cannot double-backward, so config validation refuses compile with R1.)
        r1_term, r1 = lazy_r1(m.D, real, cfg.r1_gamma, cfg.r1_every, b.step)
        if r1_term is not None:
            total_d = loss_d + r1_term
    m.update(m.opt_d, total_d)

    m.d_core.requires_grad_(False)
    with autocast(real.device, m.autocast_dtype):
        gen_logits = m.d_for_g(fake, logits=True)
        loss_g = g_nonsaturating_loss(gen_logits)
        inversion = None
        if encoder is not None:
            # recon_weight x the inversion loss: E gets its usual balance of terms (Adam ignores the
            # scale); the painter gets recon_weight x the two MSE terms (the latent term has no path to G).
            inversion = encoder_losses(encoder.module, m.g_core, real, noise, latent_weight=cfg.encoder_latent_weight,
                                       fake=fake)
    total_g = loss_g if inversion is None else loss_g + cfg.recon_weight * inversion["loss"]
    if inversion is not None:
        encoder.optimizer.zero_grad(set_to_none=True)
    metrics = g_update_and_metrics(m, loss_d, total_g, real_logits, fake_logits, gen_logits)
    metrics["loss_g"] = loss_g.detach()
    if inversion is not None:
        m.step(encoder.optimizer)
        metrics.update({f"enc_{k}": inversion[k].detach().float() for k in ("mse_real", "mse_fake", "latent")})
    metrics["r1"] = r1.detach().float()
    return metrics
