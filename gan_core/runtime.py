"""Where and how the networks run: device, autocast precision, memory format.

The caller picks the device (`train.device`, the app's GANLAB_DEVICE); nothing hard-codes CUDA.
`autocast(device, dtype)` is the one context every training step and painter uses.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from .config import TrainConfig
from .files import cache_root, write_text


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


def cpu_claims_bf16() -> bool:
    """Whether oneDNN says it supports bf16 on this CPU. A claim, not a speed: it is also true on AVX512
    CPUs without AVX512-BF16/AMX, where bf16 is emulated (2.0-2.3x slower than fp32 on an Ice Lake Xeon),
    so bf16 is only ever chosen by timing it. Where not even claimed (AVX2), bf16 is far slower still
    (~10x on an AVX2-only EPYC) and not worth timing."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def channels_last_setting(t: TrainConfig, device: torch.device) -> Optional[bool]:
    """`train.channels_last`, or None (measure both) by default; off with torch.compile on CUDA. There
    (torch 2.11, H200) inductor's backward of the generator's first ConvTranspose failed a stride check
    with channels_last weights; compiled and contiguous it ran at 14,973 img/s against 13,741 eager
    channels_last."""
    if t.channels_last is not None:
        return bool(t.channels_last)
    return False if (t.compile and device.type == "cuda") else None


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to `dtype` on `device`'s type, or nothing when `dtype` is None (plain fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_threads() -> int:
    """The threads worth running on this process's CPUs: one per physical core it may use, within a
    cgroup CPU quota if there is one (a container's `--cpus`). Hyper-threads share a core's FMA units,
    so the convolutions gain nothing from them; a quota below the visible cores means oversubscription."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("", str(cpu)))
    n = len(cores) or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(float(quota) / float(period))))
    except (OSError, ValueError):
        pass
    return n


def configure_cpu(device: torch.device) -> None:
    """On a CPU, no more intra-op threads than `cpu_threads()` (unless OMP_NUM_THREADS says otherwise)."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        n = cpu_threads()
        if n < torch.get_num_threads():
            torch.set_num_threads(n)


def configure_cuda(device: torch.device) -> None:
    """cudnn autotuning and TF32 matmuls on CUDA (no effect elsewhere)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ---------------------------------------------------------------- choosing by measurement

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TUNING_VERSION = 1  # bump when what is measured changes, so old cached choices are not reused


@dataclass(frozen=True)
class Choice:
    """How a run executes: autocast precision and memory format, and how that was decided
    (`how`: set, measured, cached, recorded, only; `timings`: seconds per step by candidate)."""
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 trains with a gradient scaler)
    channels_last: bool = False
    how: str = "set"
    timings: dict = field(default_factory=dict)
    conv_gemm: tuple = ()  # (layer path, products) run as matmuls over patches (`gan_core.convgemm`)

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return PRECISIONS[self.precision]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def label(self) -> str:
        return candidate_label(self.precision, self.channels_last)

    def record(self, device_key: str) -> dict:
        """What config.json keeps of it (`runtime`), so a resumed run on the same machine reuses it."""
        return {"precision": self.precision, "channels_last": self.channels_last, "how": self.how,
                "device": device_key, "timings_s": {k: round(v, 5) for k, v in self.timings.items()},
                **({"conv_gemm": dict(self.conv_gemm)} if self.conv_gemm else {})}

    def describe(self) -> str:
        times = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(self.timings.items(), key=lambda kv: kv[1]))
        gemm = f"; as matmuls: {', '.join(f'{p} {o}' for p, o in self.conv_gemm)}" if self.conv_gemm else ""
        return f"{self.label} ({self.how}{': ' + times if times else ''}){gemm}"


def candidate_label(precision: str, channels_last: bool) -> str:
    return f"{precision}/{'channels_last' if channels_last else 'NCHW'}"


def precision_candidates(precision: str, device: torch.device) -> list[str]:
    """The precisions `train.precision` allows on `device`. "auto" offers bf16 where the hardware says it
    runs bf16 (CUDA with bf16; a CPU whose oneDNN claims it: measured, because some such CPUs emulate it)
    and fp16 with a gradient scaler on CUDA; fp32 always. A CPU that does not even claim bf16 would run
    it emulated, ~30x slower (AVX2 EPYC), so it is not worth the time to measure there."""
    if precision != "auto":
        return [precision]
    if device.type == "cuda":
        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp32", "fp16"]
    if device.type == "cpu" and cpu_claims_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]


def candidates(precision: str, channels_last: Optional[bool], device: torch.device) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs to choose among; an explicit setting leaves only itself."""
    formats = [False, True] if channels_last is None else [bool(channels_last)]
    return [(p, f) for p in precision_candidates(precision, device) for f in formats]


def device_key(device: torch.device) -> str:
    """What a measurement depends on besides the model: the device kind, its thread count, torch."""
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)} sm{''.join(map(str, torch.cuda.get_device_capability(device)))}"
    else:
        name = f"{_cpu_model()} {torch.backends.cpu.get_cpu_capability()} {torch.get_num_threads()} threads"
    return f"{device.type}: {name}, torch {torch.__version__}"


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")  # the CPU flags of native bf16 arithmetic


def cpu_bf16_flags() -> list[str]:
    """Which of `BF16_FLAGS` this CPU reports (Linux /proc/cpuinfo; [] where unreadable): for reports
    only, never to pick a path."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in BF16_FLAGS if f in flags]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tuning_cache() -> Path:
    return cache_root() / "tuning.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def choose(key: dict, options: list[tuple[str, bool]], time_step: Callable[[str, bool, float], float],
           cache: Optional[Path] = None, announce: Optional[Callable[[], None]] = None) -> Choice:
    """The fastest (precision, channels_last) of `options` by `time_step(precision, channels_last,
    give_up_after)`; see `fastest`. One option is taken as it is, with nothing measured."""
    if not options:
        raise ValueError("no precision / memory format to choose from")
    if len(options) == 1:
        return Choice(options[0][0], options[0][1], how="only")
    by_label = {candidate_label(*o): o for o in options}
    label, timings, how = fastest(key, list(by_label), lambda lab, limit: time_step(*by_label[lab], limit), cache,
                                  announce)
    return Choice(*by_label[label], how=how, timings=timings)


def fastest(key: dict, labels: list[str], time_one: Callable[[str, float], float],
            cache: Optional[Path] = None, announce: Optional[Callable[[], None]] = None) -> tuple[str, dict, str]:
    """The fastest of the options named `labels` by `time_one(label, give_up_after)` (seconds per step; it
    may stop timing once a step takes `give_up_after` seconds, 1.5x the best so far, and it may raise
    RuntimeError: that option is out), measured once per `key` and kept in `cache` (a JSON file).
    -> (label, timings by label, "measured" or "cached"). A cached answer is reused only if it is still
    one of `labels`. `announce()` is called before anything is timed (not when the cache answers)."""
    # the options are part of the key: a choice among fp32 formats says nothing about bf16
    digest = hashlib.sha256(json.dumps({**key, "options": sorted(labels), "tuning": TUNING_VERSION},
                                       sort_keys=True, default=str).encode()).hexdigest()[:20]
    if cache is not None:
        hit = _read_cache(cache).get(digest)
        if isinstance(hit, dict) and hit.get("choice") in labels:
            return hit["choice"], dict(hit.get("timings_s") or {}), "cached"
    if announce is not None:
        announce()
    timings: dict[str, float] = {}
    best: Optional[str] = None
    for label in labels:
        try:
            seconds = float(time_one(label, 1.5 * timings[best] if best is not None else math.inf))
        except RuntimeError:  # e.g. an op without a kernel in that precision here
            continue
        if not math.isfinite(seconds):
            continue
        timings[label] = seconds
        if best is None or seconds < timings[best]:
            best = label
    if best is None:
        raise RuntimeError(f"every option ({', '.join(labels)}) failed to run a training step here")
    if cache is not None:
        try:
            data = _read_cache(cache)
            data[digest] = {"choice": best, "timings_s": {k: round(v, 5) for k, v in timings.items()}, "key": key}
            write_text(cache, json.dumps(data, indent=1, sort_keys=True, default=str))
        except OSError:  # a read-only cache folder costs a re-measurement next time, nothing else
            pass
    return best, timings, "measured"


def time_calls(fn: Callable[[], None], device: torch.device, repeats: int = 2, give_up_after: float = math.inf) -> float:
    """Seconds per call of `fn`: one untimed warm-up call (kernel selection, allocations), then the
    best of `repeats` timed calls. Stops early once a call takes longer than `give_up_after` seconds
    (a candidate already slower than the best so far needs no second sample)."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        if best > give_up_after:
            break
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
