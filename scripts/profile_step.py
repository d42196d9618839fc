#!/usr/bin/env python
"""Profile training steps of a model and name the slow kernels (torch.profiler).

    python -m scripts.profile_step --device cuda --batch 128 --out prof/        # the seed DCGAN
    python -m scripts.profile_step --device cpu --batch 64 --precision fp32 --out prof/

Runs a few warm-up steps of gan_core's training step (precision and memory format as `train.precision`
and `train.channels_last` choose them, or as given), then profiles `--steps` steps and writes to
`--out`: `ops.txt` (the operators by self time on the device, or on the CPU without CUDA) and
`trace.json` (a Chrome / Perfetto trace). The last stdout line is one JSON object with the top
operators and their share of the profiled time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from gan_core import config as config_mod
from gan_core import training
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.graphs import StaticStep
from gan_core.models.dcgan import DCGANConfig
from gan_core.runtime import configure_cuda, resolve_device
from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--cuda-graph", action="store_true", help="profile the captured step (CPU: its dry run)")
    p.add_argument("--image-size", type=int, default=64, choices=config_mod.IMAGE_SIZES)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default="profile")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        fail("--steps and --batch must be at least 1")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        fail(str(e))
    configure_cuda(device)
    flag = {"auto": None, "on": True, "off": False}
    cfg = config_mod.sync_model_to_data(RunConfig(
        model=DCGANConfig(), data=DataConfig(source="shapes", image_size=args.image_size),
        train=TrainConfig(batch_size=args.batch, device=str(device), precision=args.precision,
                          channels_last=flag[args.channels_last], cuda_graph=True if args.cuda_graph else False)))
    images = torch.randint(0, 256, (max(args.batch, 256), 3, args.image_size, args.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    choice = training.choose_runtime(cfg, device)
    print(f"precision and memory format: {choice.describe()}", file=sys.stderr)
    try:
        training.choose_graph(cfg, device, choice)  # refuses what one graph cannot hold (fp16's scaler, ...)
    except ValueError as e:
        fail(str(e))
    m = training.build_models(cfg, device, choice, capturable=args.cuda_graph and device.type == "cuda")
    step_fn = StaticStep(cfg, m, images).step if args.cuda_graph else training.eager_steps(cfg, m, images, device)
    for _ in range(args.warmup):
        step_fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step_fn()
        if cuda:
            torch.cuda.synchronize(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    (out / "ops.txt").write_text(averages.table(sort_by=key, row_limit=40))
    prof.export_chrome_trace(str(out / "trace.json"))
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = [(e.key, float(getattr(e, attr, 0.0) or 0.0), e.count) for e in averages]
    total = sum(r[1] for r in rows) or 1.0
    rows.sort(key=lambda r: -r[1])
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "batch": args.batch, "steps": args.steps, "precision": choice.precision, "channels_last": choice.channels_last,
        "cuda_graph": bool(args.cuda_graph), "ms_per_step": round(total / 1000 / args.steps, 3),
        "top": [{"op": k, "ms_per_step": round(t / 1000 / args.steps, 3), "share": round(t / total, 4), "calls": c}
                for k, t, c in rows[: args.top]],
        "files": [str(out / "ops.txt"), str(out / "trace.json")],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
