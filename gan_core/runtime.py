"""Where and how the networks run: device, autocast precision, memory format.

The caller picks the device (`train.device`, the app's GANLAB_DEVICE); nothing hard-codes CUDA.
`autocast(device, dtype)` is the one context every training step and painter uses.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from .config import TrainConfig


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


def use_channels_last(t: TrainConfig, device: torch.device) -> bool:
    """`train.channels_last`, or by default: on, except torch.compile on CUDA. There (torch 2.11, H200)
    inductor's backward of the generator's first ConvTranspose failed a stride check with channels_last
    weights; compiled and contiguous it ran at 14,973 img/s against 13,741 eager channels_last."""
    if t.channels_last is not None:
        return bool(t.channels_last)
    return not (t.compile and device.type == "cuda")


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to `dtype` on `device`'s type, or nothing when `dtype` is None (plain fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_cuda(device: torch.device) -> None:
    """cudnn autotuning and TF32 matmuls on CUDA (no effect elsewhere)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
