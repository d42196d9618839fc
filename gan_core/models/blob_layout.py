"""BlobGAN layouts as plain data: `Layout`, splatting, and pure editing functions.

A layout is K blobs per image, each with a centre, an elongation, an angle, a size and two
feature vectors (structure `phi`, style `psi`), plus a background with its own two features.
`splat` turns a layout into per-pixel weights (opacity sigmoid(s - d^2), composited in slot order,
the last slot in front). The editing functions (`move`, `resize`, `hide`, `show`, `restyle`,
`reorder`) return new layouts, so the app can edit without touching a network. Torch only: the
networks that make and paint layouts are in `gan_core.models.blobgan`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F

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


def visible_area(layout: Layout, size: int = 64, image: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, K) the share of the image each blob paints (the pixels where its compositing weight is the
    largest, the background included among the rivals). With the painted `image` (N, C, size, size) in
    [-1, 1], each pixel counts by how far its colour is from the background's (the median colour of the
    pixels the background owns), so a blob that paints nothing but background scores about 0."""
    owner = splat(layout, size).argmax(1)  # (N, H, W): 0 background, k + 1 blob k
    weight = torch.ones(owner.shape, dtype=torch.float32, device=owner.device)
    if image is not None:
        x = image.float().to(owner.device).flatten(2)  # (N, C, HW)
        weight = torch.empty_like(weight)
        for i in range(len(x)):
            bg = owner[i].flatten() == 0
            ref = (x[i][:, bg] if bg.any() else x[i]).median(1).values  # (C,)
            weight[i] = (x[i] - ref[:, None]).abs().mean(0).view(owner.shape[1:])
    return torch.stack([((owner == k + 1) * weight).mean((1, 2)) for k in range(layout.k)], 1)


def most_visible(layout: Layout, size: int = 64, image: Optional[torch.Tensor] = None) -> Optional[int]:
    """The first image's blob that paints the most (with `image`: the most unlike the background), or
    None when no blob paints anything."""
    area = visible_area(layout.index(0), size, None if image is None else image[:1])[0]
    return int(area.argmax()) if float(area.max()) > 0 else None


EDIT_MASK_FLOOR = 0.05  # a blob's weight below this is not "its area" (opacity tails never reach 0)


def edit_mask(before: Layout, after: Layout, size: int, grow: int = 2) -> torch.Tensor:
    """(N, 1, size, size) in [0, 1]: where an edit from `before` to `after` changes the picture: the whole
    area (before and after) of every blob the edit changed (its place, shape, size, visibility or
    features: the painter draws an object relative to its blob, so all of it is drawn again), plus
    wherever the compositing weights changed (half their L1 difference: what a moved blob uncovers or
    covers of the others), grown by `grow` pixels and softened. Repainting only there (`blend_edit`)
    leaves the rest of the image exactly as it was."""
    w0, w1 = splat(before, size), splat(after, size)
    mask = 0.5 * (w1 - w0).abs().sum(1, keepdim=True)

    def differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # (N, K, ...) -> (N, K)
        return (a != b).flatten(2).any(-1) if a.dim() > 2 else a != b

    blob = (differs(before.xy, after.xy) | differs(before.ab, after.ab) | differs(before.angle, after.angle)
            | differs(before.drawn_size(), after.drawn_size()) | differs(before.phi, after.phi)
            | differs(before.psi, after.psi))
    background = ((before.bg_phi != after.bg_phi).any(-1) | (before.bg_psi != after.bg_psi).any(-1))[:, None]
    changed = torch.cat([background, blob], 1).to(w0.dtype)  # (N, K + 1)
    mask = mask + (torch.maximum(w0, w1) * changed[..., None, None]).sum(1, keepdim=True)
    mask = torch.where(mask < EDIT_MASK_FLOOR, torch.zeros_like(mask), mask)  # the sigmoid tails reach everywhere
    mask = (2 * mask).clamp(0, 1)  # a pixel half changed is repainted in full
    if grow > 0:
        mask = F.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
        mask = F.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=False)
    return mask


def blend_edit(before_image: torch.Tensor, after_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The edited picture repainted only inside `mask` (images (N, C, H, W), mask (N, 1, h, w), resized
    to the images): outside it, the image before the edit, pixel for pixel."""
    if mask.shape[-1] != after_image.shape[-1]:
        mask = F.interpolate(mask, size=after_image.shape[-2:], mode="bilinear", align_corners=False)
    mask = mask.to(after_image.dtype)
    return before_image + mask * (after_image - before_image)
