"""Convolutions as one matrix product over their patches (im2col), for the layers where that times faster.

A convolution layer's training costs three products: its forward, its input gradient and its weight
gradient. oneDNN (torch's CPU convolutions) is near the matmul rate for most of the DCGAN's layers, but not
for all: on a 2-core Intel Xeon with AVX512 and no BF16 (fp32, channels_last, batch 64) D's fourth
convolution (256 -> 512 channels, 8x8 -> 4x4) ran its forward in 26 ms, its input gradient in 36 and its
weight gradient in 46, while the same arithmetic as one matmul over the layer's patches took 22, 23 and 23
(G's second layer, its transpose, alike); D's first layers ran faster in oneDNN. So each product of each
layer is timed both ways at the run's own shapes and takes the faster (`plan`), and then the whole step
is timed with and without the plan, which is kept only where it wins (`gan_core.training.choose_conv_gemm`).

Scope: CPU, fp32 or autocast to bf16, `nn.Conv2d` and `nn.ConvTranspose2d` with square kernels, one stride
and one zero padding for both sides, no groups, dilation or output padding. Every other layer, and every layer
outside a plan, runs as torch runs it. A plan changes how a layer computes, not what: its weights, state
dict and checkpoints are those of the plain layer.

The products, in terms of the convolution relation y = conv(x, w) (w: out x in x k x k): a `Conv2d` layer's
forward is `conv_forward`, its input gradient `conv_input_grad` and its weight gradient `conv_weight_grad`;
a `ConvTranspose2d` layer (y = conv_input_grad(x, w)) has them the other way round.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import device_key, fastest, time_calls

OPS = "fiw"  # forward, input gradient, weight gradient: a layer's plan is the letters that run as a matmul
ATEN, GEMM = "oneDNN", "matmul"
MARGIN = 0.95  # a product runs as a matmul only if that timed at least 5% faster (noise would flip ties): its
# time is counted divided by MARGIN, so the cached decision is the measured one (cached times are rounded)


# ---------------------------------------------------------------- the three products as matmuls (NHWC)

def _patches(x: torch.Tensor, k: int, stride: int, padding: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """x's k x k patches as rows: (B * Ho * Wo, k * k * C), in (kh, kw, c) order."""
    xh = x.permute(0, 2, 3, 1)  # NHWC view; a copy follows anyway (padding, or the patch gather)
    if padding:
        xh = F.pad(xh, (0, 0, padding, padding, padding, padding))
    xh = xh.contiguous()
    b, _, _, c = xh.shape
    sb, sh, sw, sc = xh.stride()
    ho, wo = out_hw
    return xh.as_strided((b, ho, wo, k, k, c), (sb, sh * stride, sw * stride, sh, sw, sc)).reshape(b * ho * wo, -1)


def _weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """(out, in, k, k) -> (out, k * k * in), the patches' order."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B * H * W, C)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def conv_out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def conv_forward(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """conv2d(x, w) as patches @ w^T, written straight into a channels_last result (not a view: the
    layer after may work in place)."""
    b, _, h, wd = x.shape
    k = w.shape[-1]
    ho, wo = conv_out_size(h, k, stride, padding), conv_out_size(wd, k, stride, padding)
    y = torch.empty((b, w.shape[0], ho, wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    torch.mm(_patches(x, k, stride, padding, (ho, wo)), _weight_matrix(w).t(), out=_rows_view(y))
    return y


def _rows_view(y: torch.Tensor) -> torch.Tensor:
    """A channels_last (B, C, H, W) tensor's memory as (B * H * W, C)."""
    return y.permute(0, 2, 3, 1).view(-1, y.shape[1])


def _span(i: int, n: int, size: int, stride: int, padding: int) -> tuple[int, int, int]:
    """For kernel offset i: the patch positions m in [lo, hi) whose pixel i - padding + stride * m lies
    inside 0..size-1, and that first pixel."""
    lo = max(0, -(-(padding - i) // stride))
    hi = min(n, (size - 1 - i + padding) // stride + 1)
    return lo, hi, i - padding + stride * lo


def conv_input_grad(gy: torch.Tensor, w: torch.Tensor, stride: int, padding: int,
                    in_hw: tuple[int, int]) -> torch.Tensor:
    """The gradient of conv2d(x, w) with respect to x (x of size `in_hw`), given gy: gy @ w, then each
    patch's rows added back where the patch came from (col2im: k * k strided additions), into a
    channels_last result."""
    b, _, ho, wo = gy.shape
    c, k = w.shape[1], w.shape[-1]
    cols = (_rows(gy) @ _weight_matrix(w)).view(b, ho, wo, k, k, c)
    h, wd = in_hw
    # summed in fp32 and rounded once, as oneDNN does in bf16
    out = torch.empty((b, c, h, wd), device=gy.device, memory_format=torch.channels_last).zero_()
    rows = out.permute(0, 2, 3, 1)
    for i in range(k):
        lo_i, hi_i, r = _span(i, ho, h, stride, padding)
        for j in range(k):
            lo_j, hi_j, q = _span(j, wo, wd, stride, padding)
            if hi_i > lo_i and hi_j > lo_j:
                rows[:, r:r + stride * (hi_i - lo_i - 1) + 1:stride, q:q + stride * (hi_j - lo_j - 1) + 1:stride] += \
                    cols[:, lo_i:hi_i, lo_j:hi_j, i, j]
    return out if out.dtype == gy.dtype else out.to(gy.dtype)


def conv_weight_grad(x: torch.Tensor, gy: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
    """The gradient of conv2d(x, w) with respect to w (k x k), given gy: gy^T @ patches."""
    gw = _rows(gy).t() @ _patches(x, k, stride, padding, tuple(gy.shape[2:]))
    return gw.view(gy.shape[1], k, k, x.shape[1]).permute(0, 3, 1, 2)


# ---------------------------------------------------------------- a layer's products, either way

def _aten(x, w, stride, padding, transposed):
    return torch.ops.aten.convolution(x, w, None, [stride] * 2, [padding] * 2, [1, 1], transposed, [0, 0], 1)


def _aten_backward(gy, x, w, stride, padding, transposed, mask):
    return torch.ops.aten.convolution_backward(gy, x, w, None, [stride] * 2, [padding] * 2, [1, 1], transposed,
                                               [0, 0], 1, mask)


def _transposed_out_hw(x: torch.Tensor, k: int, stride: int, padding: int) -> tuple[int, int]:
    return tuple((s - 1) * stride - 2 * padding + k for s in x.shape[2:])


def layer_forward(x, w, stride, padding, transposed, gemm: bool) -> torch.Tensor:
    if not gemm:
        return _aten(x, w, stride, padding, transposed)
    if transposed:
        return conv_input_grad(x, w, stride, padding, _transposed_out_hw(x, w.shape[-1], stride, padding))
    return conv_forward(x, w, stride, padding)


def layer_input_grad(gy, x, w, stride, padding, transposed, gemm: bool) -> torch.Tensor:
    if not gemm:
        return _aten_backward(gy, x, w, stride, padding, transposed, [True, False, False])[0]
    if transposed:
        return conv_forward(gy, w, stride, padding)
    return conv_input_grad(gy, w, stride, padding, tuple(x.shape[2:]))


def layer_weight_grad(gy, x, w, stride, padding, transposed, gemm: bool) -> torch.Tensor:
    if not gemm:
        return _aten_backward(gy, x, w, stride, padding, transposed, [False, True, False])[1]
    if transposed:  # the relation's input is the layer's output
        return conv_weight_grad(gy, x, w.shape[-1], stride, padding)
    return conv_weight_grad(x, gy, w.shape[-1], stride, padding)


class _PlannedConv(torch.autograd.Function):
    """A layer's convolution with each of its three products computed as `ops` says (letters of OPS)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, transposed, ops):
        ctx.save_for_backward(x, w)
        ctx.geometry = (stride, padding, transposed, ops)
        return layer_forward(x, w, stride, padding, transposed, "f" in ops)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, transposed, ops = ctx.geometry
        if torch.is_grad_enabled():  # create_graph (R1's gradient penalty): torch's products, which autograd
            ops = ""                 # can differentiate again; the matmul path writes in place
        gy = gy.contiguous(memory_format=torch.channels_last)
        need_x, need_w = ctx.needs_input_grad[:2]
        aten_x, aten_w = need_x and "i" not in ops, need_w and "w" not in ops
        gx = gw = None
        if aten_x or aten_w:  # the rest in one oneDNN call, as autograd would make it
            gx, gw, _ = _aten_backward(gy, x, w, stride, padding, transposed, [aten_x, aten_w, False])
        if need_x and not aten_x:
            gx = layer_input_grad(gy, x, w, stride, padding, transposed, True)
        if need_w and not aten_w:
            gw = layer_weight_grad(gy, x, w, stride, padding, transposed, True)
        return gx, gw, None, None, None, None


def eligible(layer: nn.Module) -> bool:
    """Whether `layer`'s products can run as matmuls here (see the module's scope). Subclasses with a forward
    of their own (a parametrized weight, say) are left alone: only the plain layers and planned ones."""
    if plain_type(layer) is None or isinstance(layer.padding, str):
        return False
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    return (layer.groups == 1 and layer.padding_mode == "zeros" and tuple(layer.dilation) == (1, 1)
            and k[0] == k[1] and s[0] == s[1] and p[0] == p[1]
            and tuple(getattr(layer, "output_padding", (0, 0))) == (0, 0))


def run_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype a convolution of `x` runs in here: fp32, or bf16 under CPU autocast to bf16; None where the
    plan does not apply (another device or dtype, autocast to fp16)."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return None
    if torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.float32 if x.dtype == torch.float32 else None


def _planned_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    dtype = run_dtype(x)
    if dtype is None:
        return plain_type(layer).forward(layer, x)  # outside the plan's scope: as torch runs it
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", enabled=False):  # cast here as autocast would; the products run in `dtype`
        y = _PlannedConv.apply(x, layer.weight.to(dtype), layer.stride[0], layer.padding[0],
                               isinstance(layer, nn.ConvTranspose2d), layer.gemm_ops)
        return y if layer.bias is None else y + layer.bias.to(dtype).view(1, -1, 1, 1)


class PlannedConv2d(nn.Conv2d):
    """An `nn.Conv2d` whose products named in `gemm_ops` run as matmuls (set by `install`)."""
    gemm_ops = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _planned_forward(self, x)


class PlannedConvTranspose2d(nn.ConvTranspose2d):
    """An `nn.ConvTranspose2d` whose products named in `gemm_ops` run as matmuls (set by `install`)."""
    gemm_ops = ""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:
            raise ValueError("a planned ConvTranspose2d takes no output_size")
        return _planned_forward(self, x)


_PLANNED = {nn.Conv2d: PlannedConv2d, nn.ConvTranspose2d: PlannedConvTranspose2d}
_PLAIN = {PlannedConv2d: nn.Conv2d, PlannedConvTranspose2d: nn.ConvTranspose2d,
          nn.Conv2d: nn.Conv2d, nn.ConvTranspose2d: nn.ConvTranspose2d}


def plain_type(layer: nn.Module) -> Optional[type]:
    """nn.Conv2d or nn.ConvTranspose2d for those layers, planned or not; None for anything else."""
    return _PLAIN.get(type(layer))


def layers(modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The eligible layers of `modules` (by role), by path ("D.main.9")."""
    return {f"{role}.{name}": layer for role, module in modules.items()
            for name, layer in module.named_modules() if eligible(layer)}


def install(modules: dict[str, nn.Module], plan: dict[str, str]) -> None:
    """Make the layers `plan` names (path -> letters of OPS) compute those products as matmuls. The layers
    keep their parameters, so optimizers and state dicts are unaffected."""
    found = layers(modules)
    for path, ops in plan.items():
        layer = found.get(path)
        if layer is None or set(ops) - set(OPS):
            raise ValueError(f"conv plan names {path!r} ({ops!r}), which is not an eligible layer here")
        layer.__class__ = _PLANNED[plain_type(layer)]
        layer.gemm_ops = ops


# ---------------------------------------------------------------- choosing by timing

def input_shapes(modules: dict[str, nn.Module], run: Callable[[], object]) -> dict[str, tuple[int, ...]]:
    """The input shape each eligible layer of `modules` sees during `run()` (the first call of each)."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for path, layer in layers(modules).items():
        def hook(_mod, args, path=path):
            shapes.setdefault(path, tuple(args[0].shape))
        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _operands(layer: nn.Module, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype):
    gen = torch.Generator(device=device).manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(shape, generator=gen, device=device).to(dtype).contiguous(memory_format=cl)
    w = torch.randn(layer.weight.shape, generator=gen, device=device).to(dtype).contiguous(memory_format=cl)
    stride, padding = layer.stride[0], layer.padding[0]
    transposed = isinstance(layer, nn.ConvTranspose2d)
    y = layer_forward(x, w, stride, padding, transposed, False)
    gy = torch.randn(y.shape, generator=gen, device=device).to(dtype).contiguous(memory_format=cl)
    return x, w, gy, stride, padding, transposed


def time_layer(layer: nn.Module, shape: tuple[int, ...], op: str, gemm: bool, device: torch.device,
               give_up_after: float, dtype: torch.dtype = torch.float32) -> float:
    """Seconds for one of `layer`'s products (`op`, a letter of OPS) at input `shape` in `dtype`, either way."""
    x, w, gy, stride, padding, transposed = _operands(layer, shape, device, dtype)
    if op == "f":
        fn = lambda: layer_forward(x, w, stride, padding, transposed, gemm)  # noqa: E731
    elif op == "i":
        fn = lambda: layer_input_grad(gy, x, w, stride, padding, transposed, gemm)  # noqa: E731
    else:
        fn = lambda: layer_weight_grad(gy, x, w, stride, padding, transposed, gemm)  # noqa: E731
    with torch.no_grad():
        return time_calls(fn, device, repeats=3, give_up_after=give_up_after)


def plan(modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...]], device: torch.device,
         cache=None, time_one: Optional[Callable[[nn.Module, tuple, str, bool, float], float]] = None,
         announce: Optional[Callable[[], None]] = None,
         dtype: torch.dtype = torch.float32) -> tuple[dict[str, str], dict[str, dict]]:
    """For each layer with a known input shape, the products that time at least 5% faster as a matmul in
    `dtype`, each timed once per (layer geometry, input shape, dtype, product, device) and kept in `cache`.
    `time_one(layer, shape, op, gemm, give_up_after)` (seconds; default `time_layer`) is injectable for
    tests; `announce()` is called once, before the first product is timed (not when the cache answers all).
    -> (plan: path -> letters, timings: path -> {op: {way: seconds, the matmul's divided by MARGIN}})."""
    time_one = time_one or (lambda layer, shape, op, gemm, limit: time_layer(layer, shape, op, gemm, device, limit,
                                                                           dtype))
    result: dict[str, str] = {}
    timings: dict[str, dict] = {}
    said: list = []

    def once() -> None:
        if announce is not None and not said:
            said.append(True)
            announce()
    for path, layer in layers(modules).items():
        if path not in shapes:
            continue
        geometry = {"type": plain_type(layer).__name__,
                    "weight": list(layer.weight.shape), "stride": layer.stride[0], "padding": layer.padding[0],
                    "input": list(shapes[path]), "dtype": str(dtype)}
        ops = ""
        for op in OPS:
            key = {"conv": geometry, "op": op, "device": device_key(device), "margin": MARGIN}

            def timed(way: str, limit: float) -> float:
                seconds = time_one(layer, shapes[path], op, way == GEMM, limit)
                return seconds / MARGIN if way == GEMM else seconds
            way, t, _ = fastest(key, [ATEN, GEMM], timed, cache, once)
            timings.setdefault(path, {})[op] = t
            if way == GEMM:
                ops += op
        if ops:
            result[path] = ops
    return result, timings


def describe(plan_: dict[str, str]) -> str:
    names = {"f": "forward", "i": "input grad", "w": "weight grad"}
    return "; ".join(f"{path}: {', '.join(names.get(o, repr(o)) for o in ops)}" for path, ops in plan_.items()) or "none"
