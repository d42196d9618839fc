#!/usr/bin/env python
"""Training speed of the seed DCGAN at 64x64: the PyTorch tutorial's recipe vs gan_core's routine.

    python -m scripts.benchmark --device cpu --steps 5 --batch 64
    python -m scripts.benchmark --device cuda --steps 200 --batch 128 [--compile] [--cuda-graph on]
    python -m scripts.benchmark --device cpu --steps 6 --batch 64 --ceiling   # + what this device could reach

Both paths train the same networks (same seed, same init) on the same data: a folder of PNG
images this script writes itself (built-in shapes). (a) the reference is the tutorial as written:
ImageFolder + DataLoader with PIL transforms and 2 workers, fp32, NCHW, Sigmoid + BCELoss, the
two D losses backpropagated separately, `.item()` every step. (b) the fast path is gan_core's
routine (decode once to a uint8 tensor on the device, index-gather batches, the precision and memory
format that time fastest here (`train.precision=auto`, measured afresh each run), fused Adam on
CUDA, D's weight gradients skipped in the G step, no per-step host sync). Warm-up steps are run and not
timed on both paths. The last stdout line is one JSON object.

`--ceiling` adds what the arithmetic allows on this device: the floating-point work of one training
step (counted with `torch.utils.flop_counter`), the best rate the device reaches in each precision the
fast path considered (one of D's middle convolutions at the run's batch, forward, in the fast path's
memory format, and a square matmul), and from the two the most images per second, and the most
speedup over the measured tutorial, that a step running wholly at that best rate could reach.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from gan_core import config as config_mod
from gan_core import training
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.graphs import StaticStep
from gan_core.data import load_dataset
from gan_core.models import dcgan
from gan_core.models.base import Batch, step_generator
from gan_core.models.dcgan import DCGANConfig
from gan_core.runtime import cpu_bf16_flags, cpu_claims_bf16
from gan_core.shapes import render_shapes


def write_png_folder(root: Path, n: int) -> Path:
    from PIL import Image

    images, labels = render_shapes(n, size=64, channels=3, seed=123)
    for i, (img, label) in enumerate(zip(images, labels)):
        d = root / f"class_{int(label)}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference(folder: Path, device: torch.device, steps: int, batch: int, warmup: int, workers: int) -> dict:
    """The PyTorch DCGAN tutorial's training loop, as written there."""
    import torchvision.datasets as dset
    import torchvision.transforms as transforms

    dataset = dset.ImageFolder(root=str(folder), transform=transforms.Compose([
        transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    torch.manual_seed(0)
    netG, netD = dcgan.build(DCGANConfig())
    netG, netD = netG.to(device), netD.to(device)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1.0, 0.0
    losses_d, losses_g = [], []

    def batches():
        while True:
            yield from loader

    it = batches()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        data = next(it)
        netD.zero_grad()
        real_cpu = data[0].to(device)
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float, device=device)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(b_size, 100, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        d, g = errD.item(), errG.item()  # the tutorial's per-step logging reads these
        if i >= warmup:
            losses_d.append(d)
            losses_g.append(g)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {"img_s": steps * batch / elapsed, "loss_d": sum(losses_d) / steps, "loss_g": sum(losses_g) / steps}


def fast(folder: Path, device: torch.device, steps: int, batch: int, warmup: int, compile_: bool,
         precision: str, cache: Path, channels_last: Optional[bool] = None, cuda_graph: Optional[bool] = None,
         compile_mode: str = "default", conv_gemm: Optional[bool] = None) -> dict:
    """gan_core's routine: the same blocks `gan_core.training.train` runs, timed without its I/O."""
    cfg = config_mod.sync_model_to_data(RunConfig(
        model=DCGANConfig(), data=DataConfig(source="folder", path=str(folder), cache_dir=str(cache)),
        train=TrainConfig(batch_size=batch, device=str(device), compile=compile_, precision=precision,
                          channels_last=channels_last, cuda_graph=cuda_graph, compile_mode=compile_mode,
                          conv_gemm=conv_gemm)))
    t_decode = time.perf_counter()
    images = load_dataset(cfg.data).images.to(device)
    decode_s = time.perf_counter() - t_decode
    choice = training.choose_runtime(cfg, device, cache=cache / "tuning.json",  # measured afresh every run
                                     on_log=lambda line: print(line, file=sys.stderr))
    use_graph, graph_why = training.choose_graph(cfg, device, choice, images=images, cache=cache / "tuning.json")
    m = training.build_models(cfg, device, choice, capturable=use_graph and device.type == "cuda")
    stepper = StaticStep(cfg, m, images) if use_graph else None
    sums = []
    t0 = None
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if stepper is not None:
            metrics = stepper.step()
        else:
            gen = step_generator(0, 0, step, device)
            real = training.get_batch(images, batch, gen, m.memory_format)
            noise = torch.randn(batch, 100, 1, 1, generator=gen, device=device)
            metrics = training.run_step(cfg, m, Batch(real, noise))  # the tutorial's update: no gen, no smoothing
        if step >= warmup:
            sums.append(torch.stack([metrics["loss_d"].float(), metrics["loss_g"].float()]))
    _sync(device)
    elapsed = time.perf_counter() - t0
    loss_d, loss_g = torch.stack(sums).mean(0).tolist()
    return {"img_s": steps * batch / elapsed, "loss_d": loss_d, "loss_g": loss_g, "decode_s": decode_s,
            "precision": choice.precision, "channels_last": choice.channels_last, "chosen": choice.how,
            "timings_s": choice.timings, "conv_gemm": dict(choice.conv_gemm), "cuda_graph": use_graph,
            "cuda_graph_why": graph_why}


def step_gflop_per_image(batch: int, device: torch.device) -> float:
    """GFLOP of one seed-DCGAN training step per image (forward and backward, D then G), counted by
    torch's flop counter on the step gan_core runs (fp32, NCHW: the count does not depend on them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from gan_core.runtime import Choice

    cfg = config_mod.sync_model_to_data(RunConfig(model=DCGANConfig(), data=DataConfig(source="shapes"),
                                                  train=TrainConfig(batch_size=batch, device=str(device))))
    m = training.build_models(cfg, device, Choice("fp32", False))
    gen = step_generator(0, 0, 0, device)
    real = torch.rand(batch, 3, 64, 64, generator=gen, device=device) * 2 - 1
    noise = torch.randn(batch, 100, 1, 1, generator=gen, device=device)
    with FlopCounterMode(display=False) as counter:
        dcgan.train_step(m, Batch(real, noise))
    return counter.get_total_flops() / batch / 1e9


def best_rates(device: torch.device, precisions: list[str], batch: int, channels_last: bool,
               reps: int = 10) -> dict:
    """GFLOP/s per precision: the better of one of D's middle convolutions (128 -> 256 channels, 16 -> 8 px,
    kernel 4, stride 2) on `batch` images, forward, and a 2048 x 2048 matmul; each timed over `reps` calls
    after two untimed ones."""
    from gan_core.runtime import PRECISIONS, autocast

    def rate(fn, flop: float) -> float:
        with torch.no_grad():
            fn(), fn()
            _sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            _sync(device)
        return flop * reps / (time.perf_counter() - t) / 1e9

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, 128, 16, 16, generator=gen, device=device).contiguous(memory_format=fmt)
    conv = nn.Conv2d(128, 256, 4, 2, 1, bias=False).to(device, memory_format=fmt)
    conv_flop = 2.0 * batch * 256 * 8 * 8 * 128 * 4 * 4
    n = 2048
    out = {}
    for precision in precisions:
        dtype = PRECISIONS[precision]
        a = torch.randn(n, n, generator=gen, device=device, dtype=dtype or torch.float32)
        b = torch.randn(n, n, generator=gen, device=device, dtype=dtype or torch.float32)
        with autocast(device, dtype):
            conv_rate = rate(lambda: conv(x), conv_flop)
        mm_rate = rate(lambda: a @ b, 2.0 * n ** 3)
        out[precision] = {"conv_gflop_s": round(conv_rate, 1), "matmul_gflop_s": round(mm_rate, 1)}
    return out


def ceiling(device: torch.device, batch: int, fst: dict, ref: Optional[dict]) -> dict:
    """What a step running wholly at the device's best measured rate would reach (see the module doc)."""
    precisions = sorted({k.split("/")[0] for k in fst["timings_s"]} | {fst["precision"]})
    gflop = step_gflop_per_image(batch, device)
    rates = best_rates(device, precisions, batch, fst["channels_last"])
    best = max(max(r.values()) for r in rates.values())
    img_s = best / gflop
    return {"step_gflop_per_image": round(gflop, 3), "best_gflop_s": rates, "ceiling_img_s": round(img_s, 1),
            "ceiling_speedup": round(img_s / ref["img_s"], 2) if ref else None,
            "reference_gflop_s": round(ref["img_s"] * gflop, 1) if ref else None,
            "fast_gflop_s": round(fst["img_s"] * gflop, 1),
            "fast_share_of_ceiling": round(fst["img_s"] / img_s, 3)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 20 on CUDA)")
    p.add_argument("--images", type=int, default=None, help="PNG files to write (default: enough for 2 epochs)")
    p.add_argument("--workers", type=int, default=2, help="the reference DataLoader's workers (tutorial: 2)")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="the fast path's precision (auto: the fastest of those this device offers, timed)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"], help="the fast path's memory format")
    p.add_argument("--cuda-graph", default="auto", choices=["auto", "on", "off"],
                   help="the whole step as one CUDA graph (auto: where it times faster, CUDA only; on with a CPU: dry run)")
    p.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    p.add_argument("--conv-gemm", default="auto", choices=["auto", "on", "off"],
                   help="CPU, channels_last: convolution products as matmuls where they time faster (auto: if the step "
                        "then times faster too)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--ceiling", action="store_true",
                   help="also measure the device's best GFLOP/s per precision and the speedup that would allow")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup is not None else (20 if device.type == "cuda" else 1)
    n_images = args.images or max(256, min(20000, 2 * args.batch * (args.steps + warmup)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_png_folder(Path(tmp) / "pngs", n_images)
        print(f"wrote {n_images} PNG files; timing {args.steps} steps at batch {args.batch} on {device}",
              file=sys.stderr)
        ref = None if args.skip_reference else reference(folder, device, args.steps, args.batch, warmup, args.workers)
        if ref:
            print(f"reference: {ref['img_s']:.1f} img/s", file=sys.stderr)
        flag = {"auto": None, "on": True, "off": False}
        fst = fast(folder, device, args.steps, args.batch, warmup, args.compile, args.precision, Path(tmp) / "cache",
                   flag[args.channels_last], flag[args.cuda_graph], args.compile_mode, flag[args.conv_gemm])
        print(f"fast: {fst['img_s']:.1f} img/s", file=sys.stderr)
    top = ceiling(device, args.batch, fst, ref) if args.ceiling else None
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "batch": args.batch, "steps": args.steps, "warmup": warmup,
        "reference_img_s": round(ref["img_s"], 2) if ref else None,
        "fast_img_s": round(fst["img_s"], 2),
        "speedup": round(fst["img_s"] / ref["img_s"], 2) if ref else None,
        "reference_loss_d": round(ref["loss_d"], 4) if ref else None,
        "reference_loss_g": round(ref["loss_g"], 4) if ref else None,
        "fast_loss_d": round(fst["loss_d"], 4), "fast_loss_g": round(fst["loss_g"], 4),
        "fast_precision": fst["precision"], "fast_channels_last": fst["channels_last"], "compile": args.compile,
        "chosen_by": fst["chosen"], "choice_timings_s": fst["timings_s"], "compile_mode": args.compile_mode,
        "conv_gemm": fst["conv_gemm"], "cuda_graph": fst["cuda_graph"], "cuda_graph_why": fst["cuda_graph_why"],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_bf16_claimed": cpu_claims_bf16(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "torch": torch.__version__,
    }
    if top is not None:
        result["ceiling"] = top
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
