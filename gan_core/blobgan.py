"""BlobGAN, compact: a layout of soft ellipses ("blobs") and a generator that paints from it.

The layout net maps noise to K blobs, each with a centre, an elongation, an angle, a size and two
feature vectors (structure `phi`, style `psi`), plus a background with its own two features.
`splat` turns a layout into per-pixel weights (opacity sigmoid(s - d^2), composited in slot order,
the last slot in front); the painter starts from the splatted structure grid (image_size / 4) and
modulates every layer per pixel by the splatted styles. Layouts are plain data (`Layout`) with pure
editing functions, so the app can move, resize, hide, restyle and reorder blobs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN_SIZE = -1e4  # the size a hidden blob is drawn with: opacity sigmoid(-1e4) = 0
COVARIANCE_SCALE = 0.02  # n = COVARIANCE_SCALE / sqrt(a b): every blob's unit ellipse has the same area


@dataclass
class Layout:
    """K blobs per image, in slot order (the last is drawn in front). Coordinates are in [0, 1],
    x to the right and y down. All tensors share the batch dimension N."""
    xy: torch.Tensor  # (N, K, 2) centres
    ab: torch.Tensor  # (N, K, 2) elongation along and across the angle, in (0, 1)
    angle: torch.Tensor  # (N, K, 2) unit vector (cos, sin) of the first axis
    size: torch.Tensor  # (N, K) s: opacity at the centre is sigmoid(s); s < 0 hides a blob
    phi: torch.Tensor  # (N, K, Dphi) structure features
    psi: torch.Tensor  # (N, K, Dpsi) style features
    bg_phi: torch.Tensor  # (N, Dphi)
    bg_psi: torch.Tensor  # (N, Dpsi)
    hidden: Optional[torch.Tensor] = None  # (N, K) bool: drawn as if s were very negative; `show` restores s exactly

    @property
    def n(self) -> int:
        return self.xy.shape[0]

    @property
    def k(self) -> int:
        return self.xy.shape[1]

    def _map(self, fn) -> "Layout":
        return Layout(**{f.name: (fn(v) if (v := getattr(self, f.name)) is not None else None) for f in fields(self)})

    def to(self, device) -> "Layout":
        return self._map(lambda t: t.to(device))

    def detach(self) -> "Layout":
        return self._map(lambda t: t.detach())

    def index(self, i) -> "Layout":
        """The layouts of images `i` (an int keeps the batch dimension)."""
        i = [i] if isinstance(i, int) else i
        return self._map(lambda t: t[i])

    def hidden_mask(self) -> torch.Tensor:
        return self.hidden if self.hidden is not None else torch.zeros_like(self.size, dtype=torch.bool)

    def drawn_size(self) -> torch.Tensor:
        """(N, K) the size the blobs are drawn with: s, or HIDDEN_SIZE for hidden blobs."""
        return torch.where(self.hidden_mask(), torch.full_like(self.size, HIDDEN_SIZE), self.size)

    def visible(self) -> torch.Tensor:
        """(N, K) bool: the blob's 50%-opacity contour exists (drawn size s > 0)."""
        return self.drawn_size() > 0

    def to_dict(self, decimals: int = 5) -> dict:
        """Plain lists (JSON), e.g. for the app's API; `Layout.from_dict` reads them back."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                v = v.detach().cpu()
                out[f.name] = v.tolist() if v.dtype == torch.bool else v.float().round(decimals=decimals).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict, max_blobs: int = 64, max_dim: int = 4096) -> "Layout":
        """Inverse of `to_dict`, checking what arrives (it may come from a user): every field
        present, numeric, finite and of consistent shape. Raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a layout is a JSON object with the fields " + ", ".join(f.name for f in fields(cls)))
        values = {}
        for f in fields(cls):
            if f.name not in data or data[f.name] is None:
                if f.name == "hidden":
                    continue
                raise ValueError(f"the layout has no {f.name!r}")
            try:
                t = torch.tensor(data[f.name], dtype=torch.bool if f.name == "hidden" else torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"layout field {f.name!r} is not a numeric array") from None
            if f.name != "hidden" and not torch.isfinite(t).all():
                raise ValueError(f"layout field {f.name!r} has non-finite values")
            values[f.name] = t
        n, k = values["size"].shape if values["size"].dim() == 2 else (-1, -1)
        if n < 1 or not 1 <= k <= max_blobs:
            raise ValueError(f"layout 'size' must be (images, blobs) with 1-{max_blobs} blobs")
        dim_phi, dim_psi = values["phi"].shape[-1], values["psi"].shape[-1]
        expected = {"xy": (n, k, 2), "ab": (n, k, 2), "angle": (n, k, 2), "size": (n, k), "phi": (n, k, dim_phi),
                    "psi": (n, k, dim_psi), "bg_phi": (n, dim_phi), "bg_psi": (n, dim_psi), "hidden": (n, k)}
        for name, shape in expected.items():
            if name in values and tuple(values[name].shape) != shape:
                raise ValueError(f"layout field {name!r} has shape {tuple(values[name].shape)}, expected {shape}")
        if max(dim_phi, dim_psi) > max_dim:
            raise ValueError("layout features are too wide")
        values["xy"] = values["xy"].clamp(0, 1)
        values["ab"] = values["ab"].clamp(1e-3, 1)
        values["angle"] = F.normalize(values["angle"], dim=-1, eps=1e-6)
        return cls(**values)


# ---------------------------------------------------------------- geometry and splatting

def covariance_axes(layout: Layout) -> torch.Tensor:
    """(N, K, 2) the variances (a n, b n) along the blob's two axes, n = 0.02 / sqrt(a b)."""
    a, b = layout.ab.unbind(-1)
    n = COVARIANCE_SCALE / (a * b).sqrt()
    return torch.stack([a * n, b * n], -1)


def distance2(layout: Layout, size: int) -> torch.Tensor:
    """(N, K, size, size) squared Mahalanobis distance of every pixel centre from every blob,
    d^2 = Delta^T Sigma^-1 Delta with Sigma = R diag(a n, b n) R^T."""
    coords = (torch.arange(size, device=layout.xy.device, dtype=torch.float32) + 0.5) / size
    dx = coords[None, None, None, :] - layout.xy[..., 0, None, None].float()  # (N, K, 1, W)
    dy = coords[None, None, :, None] - layout.xy[..., 1, None, None].float()  # (N, K, H, 1)
    cos, sin = (v[..., None, None].float() for v in layout.angle.unbind(-1))
    along = dx * cos + dy * sin  # along the first axis
    across = -dx * sin + dy * cos
    var = covariance_axes(layout).float()
    return along ** 2 / var[..., 0, None, None] + across ** 2 / var[..., 1, None, None]


VISIBILITY_TEMPERATURE = 0.25  # the slope of the gate's surrogate gradient around s = 0


def visibility_gate(s: torch.Tensor) -> torch.Tensor:
    """1 where s > 0, else 0, with the gradient of sigmoid(s / 0.25) (straight-through): a blob with
    s <= 0 draws nothing, yet a loss that wants it shown can still raise its s."""
    soft = torch.sigmoid(s / VISIBILITY_TEMPERATURE)
    return (s > 0).to(s.dtype) + soft - soft.detach()


def splat(layout: Layout, size: int) -> torch.Tensor:
    """(N, K + 1, size, size) compositing weights: index 0 the background (opacity 1), then the
    blobs in slot order. o_k = sigmoid(s_k - d^2); w_k = o_k * prod_{j > k} (1 - o_j). They sum to 1.
    "s < 0 hides a blob" holds exactly: o_k is 0 unless s_k > 0 (`visibility_gate`). Without the gate a
    blob at s = -0.3 still reaches opacity 0.43, and the trained painter drew objects from such blobs,
    which the encoder then reported as hidden (measured: hiding them cost 1.2 dB)."""
    s = layout.drawn_size().float()
    o = torch.sigmoid(s[..., None, None] - distance2(layout, size)) * visibility_gate(s)[..., None, None]
    o = torch.cat([torch.ones_like(o[:, :1]), o], 1)  # the background is slot 0, fully opaque
    # transmittance in front of each slot: the product of (1 - o) over the slots after it
    behind = torch.cumprod((1 - o).flip(1), 1).flip(1)  # prod_{j >= k}
    in_front = torch.cat([behind[:, 1:], torch.ones_like(behind[:, :1])], 1)  # prod_{j > k}
    return o * in_front


def splat_features(weights: torch.Tensor, blob: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """weights (N, K+1, H, W), blob features (N, K, D), background (N, D) -> (N, D, H, W)."""
    feats = torch.cat([background[:, None], blob], 1).to(weights.dtype)  # (N, K+1, D)
    return torch.einsum("nkhw,nkd->ndhw", weights, feats)


def ellipse_contour(layout: Layout, points: int = 48) -> torch.Tensor:
    """(N, K, points, 2) the 50%-opacity contour of each blob (d^2 = s), in [0, 1] coordinates;
    NaN for hidden blobs (s <= 0), which have no such contour."""
    var = covariance_axes(layout)
    s = layout.drawn_size().clamp_min(0)[..., None]
    radii = (s * var).sqrt()  # (N, K, 2): semi-axes along and across
    t = torch.linspace(0, 2 * math.pi, points, device=layout.xy.device)
    local = torch.stack([radii[..., 0, None] * t.cos(), radii[..., 1, None] * t.sin()], -1)  # (N, K, P, 2)
    cos, sin = layout.angle[..., 0, None], layout.angle[..., 1, None]
    x = layout.xy[..., 0, None] + local[..., 0] * cos - local[..., 1] * sin
    y = layout.xy[..., 1, None] + local[..., 0] * sin + local[..., 1] * cos
    out = torch.stack([x, y], -1)
    return torch.where(layout.visible()[..., None, None], out, torch.full_like(out, float("nan")))


# ---------------------------------------------------------------- editing (pure functions)

def _set(t: torch.Tensor, k: int, value) -> torch.Tensor:
    t = t.clone()
    t[:, k] = value
    return t


def blob_at(layout: Layout, x: float, y: float, size: int = 64) -> Optional[int]:
    """The blob that paints the point (x, y) in [0, 1] of the first image (the largest compositing
    weight there), or None where the background wins."""
    col = min(size - 1, max(0, int(x * size)))
    row = min(size - 1, max(0, int(y * size)))
    weights = splat(layout.index(0), size)[0, :, row, col]  # (K + 1,)
    best = int(weights.argmax())
    return None if best == 0 else best - 1


def move(layout: Layout, k: int, dx: float = 0.0, dy: float = 0.0) -> Layout:
    """Shift blob k by (dx, dy) in image fractions (the centre stays inside [0, 1])."""
    xy = layout.xy[:, k] + torch.tensor([dx, dy], device=layout.xy.device, dtype=layout.xy.dtype)
    return replace(layout, xy=_set(layout.xy, k, xy.clamp(0, 1)))


def resize(layout: Layout, k: int, ds: float) -> Layout:
    """Add ds to blob k's size s (the 50% contour's area grows linearly with s)."""
    return replace(layout, size=_set(layout.size, k, layout.size[:, k] + ds))


def hide(layout: Layout, k: int) -> Layout:
    """Draw blob k as if its size were far below 0 (invisible); its own s is kept, so `show` restores it."""
    return replace(layout, hidden=_set(layout.hidden_mask(), k, True))


def show(layout: Layout, k: int) -> Layout:
    """Undo `hide` (a blob whose own s is below 0 stays invisible: s < 0 hides too)."""
    return replace(layout, hidden=_set(layout.hidden_mask(), k, False))


def restyle(layout: Layout, k: int, source: Layout, j: Optional[int] = None, structure: bool = False) -> Layout:
    """Blob k takes the style features (and with `structure` also the structure features) of blob j
    (default k) of `source`, whose batch must be 1 or the same as `layout`'s."""
    j = k if j is None else j
    out = replace(layout, psi=_set(layout.psi, k, source.psi[:, j]))
    return replace(out, phi=_set(out.phi, k, source.phi[:, j])) if structure else out


def reorder(layout: Layout, k: int, position: int) -> Layout:
    """Move blob k to slot `position` (0: at the back, K-1: in front); the others keep their order."""
    order = [i for i in range(layout.k) if i != k]
    order.insert(position, k)
    idx = torch.tensor(order, device=layout.xy.device)
    per_blob = {f.name: getattr(layout, f.name)[:, idx] for f in fields(layout)
                if not f.name.startswith("bg_") and getattr(layout, f.name) is not None}
    return replace(layout, **per_blob)


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


def match_objects(objects: torch.Tensor, layout: Layout) -> tuple[int, list]:
    """One image: ground-truth objects (M, 7) rows (class, cx, cy, x0, y0, x1, y1) with class -1 for
    empty slots, and its layout (batch 1). Objects and visible blobs are matched one-to-one by
    Hungarian matching on centre distance; a pair is a hit when the blob's centre lies inside the
    object's box. Returns (hits, [(object index, blob index), ...] for the matched pairs)."""
    from scipy.optimize import linear_sum_assignment

    gt = objects[objects[:, 0] >= 0].float().cpu()
    blobs = layout.visible()[0].nonzero().flatten().cpu()
    if len(gt) == 0 or len(blobs) == 0:
        return 0, []
    centres = layout.xy[0, blobs].float().cpu()
    rows, cols = linear_sum_assignment(torch.cdist(gt[:, 1:3], centres).numpy())
    hits, pairs = 0, []
    for r, c in zip(rows, cols):
        bx, by = centres[c].tolist()
        x0, y0, x1, y1 = gt[r, 3:7].tolist()
        hits += int(x0 <= bx <= x1 and y0 <= by <= y1)
        pairs.append((int(r), int(blobs[c])))
    return hits, pairs


def build(cfg) -> tuple[BlobGenerator, BlobDiscriminator]:
    return BlobGenerator(cfg), BlobDiscriminator(cfg)


def jitter(layout: Layout, std: float, gen: Optional[torch.Generator] = None) -> Layout:
    """Training-time noise on the blob centres, so the painter does not rely on exact positions."""
    if std <= 0:
        return layout
    noise = torch.randn(layout.xy.shape, generator=gen, device=layout.xy.device) * std
    return replace(layout, xy=(layout.xy + noise).clamp(0, 1))


def train_step(m, real: torch.Tensor, noise: torch.Tensor, real_label: float = 1.0, input_noise_std: float = 0.0,
               gen: Optional[torch.Generator] = None) -> dict[str, torch.Tensor]:
    """One update of D (logistic loss, plus R1 every `r1_every` steps) then G (non-saturating).
    `m` is gan_core.train.Models; `m.step` decides the lazy R1 steps; `loss_d` is reported without
    the R1 term (reported as `r1`). The label smoothing and
    instance noise of the DCGAN step do not apply here (config validation refuses them)."""
    from .losses import d_logistic_loss, g_nonsaturating_loss, r1_penalty
    from .train import _autocast, g_update_and_metrics

    cfg = m.model_cfg
    with _autocast(real.device, m.autocast_dtype):
        fake = m.G(noise, cfg.jitter, gen)
        real_logits = m.D(real, logits=True)
        fake_logits = m.D(fake.detach(), logits=True)
        loss_d = d_logistic_loss(real_logits, fake_logits)
    r1 = torch.zeros((), device=real.device)
    total_d = loss_d
    if cfg.r1_gamma > 0 and m.step % cfg.r1_every == 0:
        # Lazy R1 (StyleGAN2): every r1_every steps, scaled by r1_every; in fp32, as double backward wants.
        # (torch.compile cannot double-backward, so config validation refuses compile with R1.)
        x = real.detach().float().requires_grad_(True)
        r1 = r1_penalty(m.D(x, logits=True), x)
        total_d = loss_d + cfg.r1_gamma / 2 * cfg.r1_every * r1
        r1 = r1 * cfg.r1_every  # so a logging window's mean estimates the penalty (exactly when log_every % r1_every == 0)
    m.opt_d.zero_grad(set_to_none=True)
    total_d.backward()
    m.opt_d.step()

    m.d_core.requires_grad_(False)
    with _autocast(real.device, m.autocast_dtype):
        gen_logits = m.d_for_g(fake, logits=True)
        loss_g = g_nonsaturating_loss(gen_logits)
        inversion = None
        if m.encoder is not None:
            # recon_weight x the inversion loss: E gets its usual balance of terms (Adam ignores the
            # scale); the painter gets recon_weight x the two MSE terms (the latent term has no path to G).
            inversion = encoder_losses(m.encoder, m.g_core, real, noise, latent_weight=cfg.encoder_latent_weight,
                                       fake=fake)
    total_g = loss_g if inversion is None else loss_g + cfg.recon_weight * inversion["loss"]
    if inversion is not None:
        m.opt_e.zero_grad(set_to_none=True)
    metrics = g_update_and_metrics(m, loss_d, total_g, real_logits, fake_logits, gen_logits)
    metrics["loss_g"] = loss_g.detach()
    if inversion is not None:
        m.opt_e.step()
        metrics.update({f"enc_{k}": inversion[k].detach().float() for k in ("mse_real", "mse_fake", "latent")})
    metrics["r1"] = r1.detach().float()
    return metrics


# ---------------------------------------------------------------- the model behind the app and the scripts

class BlobModel:
    """A trained BlobGAN checkpoint: the (EMA) generator with its layout net, and the inversion
    encoder when the checkpoint has one.

        model = BlobModel.load("checkpoints/scenes-blobgan")
        lay = model.sample_layout(seed=3)          # Layout of one image
        img = model.render(blobgan.move(lay, 2, dx=0.2))
        lay = model.invert(["photo.png"])          # needs the encoder
    """

    def __init__(self, cfg, g: BlobGenerator, encoder: Optional[BlobEncoder] = None, folder: Optional[str] = None):
        if cfg.model.kind != "blobgan":
            raise ValueError(f"a {cfg.model.kind!r} model has no blob layouts")
        self.cfg, self.g, self.encoder, self.folder = cfg, g.eval(), encoder, folder

    @classmethod
    def load(cls, path_or_repo, device: str | torch.device = "cpu") -> "BlobModel":
        from pathlib import Path

        from .checkpoint import load_models, load_weights

        cfg, g, _, meta = load_models(path_or_repo, device)
        encoder = None
        file = Path(meta["folder"]) / "encoder.safetensors"
        if file.exists():
            encoder = build_encoder(cfg.model, g)
            load_weights(encoder, file)
            encoder = encoder.to(device).eval()
        return cls(cfg, g, encoder, meta["folder"])

    @property
    def device(self) -> torch.device:
        return next(self.g.parameters()).device

    @torch.no_grad()
    def sample_layout(self, seed: int = 0, n: int = 1) -> Layout:
        z = torch.randn(n, self.cfg.model.nz, generator=torch.Generator().manual_seed(int(seed)))
        return self.g.layout_net(z.to(self.device))

    @torch.no_grad()
    def render(self, layout: Layout) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1]."""
        return self.g.render(layout.to(self.device)).float()

    @torch.no_grad()
    def invert(self, images, float_range=None) -> Layout:
        """Images of any kind and size (see `gan_core.cluster.to_model_images`) -> their layouts."""
        from .cluster import to_model_images
        from .data import to_float

        if self.encoder is None:
            raise ValueError("this checkpoint has no inversion encoder (train one with scripts/train_encoder.py)")
        x = to_model_images(images, self.cfg.data.image_size, self.cfg.data.channels, float_range)
        return self.g.layout_net.decode(self.encoder(to_float(x).to(self.device)))
