#!/usr/bin/env python
"""Train BlobGAN's inversion encoder E for a trained generator (G and its layout net frozen):

    L = LPIPS(x_r, G(E(x_r))) + LPIPS(x_f, G(E(x_f))) + MSE(x_r, G(E(x_r))) + MSE(x_f, G(E(x_f)))
        + 10 * MSE(beta_f, E(x_f))

    python -m scripts.train_encoder --checkpoint runs/scenes-blobgan --out checkpoints/scenes-blobgan-enc

LPIPS uses VGG16 ImageNet weights from the torch hub cache (or --lpips-weights / $GANLAB_VGG16).
Without them the run says so in one line, trains on the MSE terms only, and records that as
`model.inversion_loss` in the output checkpoint's config. The output folder is the input checkpoint
(weights only, no optimizer state) plus `encoder.safetensors`. Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a blobgan run or checkpoint folder (or Hub id)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (generator + encoder)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None, help="stop earlier at this wall-clock budget")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--latent-weight", type=float, default=10.0)
    p.add_argument("--geometry-weight", type=float, default=0.0,
                   help="add this x the blob-placement error on generated images (0: the plain loss)")
    p.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"],
                   help="autocast for the forward passes (auto: bf16 where the hardware is fast at it)")
    p.add_argument("--lpips-weights", default=None, help="VGG16 ImageNet weights file (torchvision's)")
    p.add_argument("--no-lpips", action="store_true", help="train on the MSE terms only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--resume-encoder", action="store_true", help="start from the encoder in --out")
    p.add_argument("--from-checkpoint-encoder", action="store_true",
                   help="start from the encoder in --checkpoint (one trained alongside the GAN: model.recon_weight)")
    args = p.parse_args(argv)

    import torch
    from tqdm import tqdm

    from gan_core import checkpoint as ckpt
    from gan_core.checkpoint import CheckpointError
    from gan_core.config import to_dict
    from gan_core.data import load_dataset, to_float
    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.loading import load_model
    from gan_core.losses import load_lpips
    from gan_core.models.blobgan import build_encoder, encoder_losses
    from gan_core.runtime import PRECISIONS, autocast, choose, device_key, precision_candidates, resolve_device
    from gan_core.runtime import time_calls, tuning_cache

    device = resolve_device(args.device)
    try:
        model = load_model(args.checkpoint, device)
        raw = load_model(args.checkpoint, "cpu", ema=False)
    except CheckpointError as e:
        fail(str(e))
    if not isinstance(model, BlobModel):
        fail(f"{args.checkpoint} is a {model.cfg.model.kind} model, not blobgan")
    cfg, g, meta = model.cfg, model.g, model.meta
    raw_cfg, raw_g, raw_d = raw.cfg, raw.g, raw.d
    folder = Path(model.folder)  # the checkpoint folder --checkpoint names (a run's latest, a Hub download)
    source, out_dir = folder.resolve(), Path(args.out).resolve()
    if out_dir == source or out_dir in source.parents:
        fail(f"--out {args.out} would replace the checkpoint it reads (or the run holding it); pick a new folder")
    lpips, line = (None, "LPIPS off: --no-lpips") if args.no_lpips else load_lpips(args.lpips_weights)
    print(line, file=sys.stderr)
    if lpips is not None:
        lpips = lpips.to(device)
    g.requires_grad_(False)
    torch.manual_seed(args.seed)
    encoder = build_encoder(cfg.model, g)
    if args.resume_encoder and args.from_checkpoint_encoder:
        fail("--resume-encoder and --from-checkpoint-encoder each choose where the encoder starts; give one")
    if args.from_checkpoint_encoder:
        if not ckpt.weights_file(source, "encoder").exists():
            fail(f"{args.checkpoint} has no encoder to start from")
        ckpt.load_weights(encoder, ckpt.weights_file(source, "encoder"))
    if args.resume_encoder and ckpt.weights_file(args.out, "encoder").exists():
        ckpt.load_weights(encoder, ckpt.weights_file(args.out, "encoder"))
    encoder = encoder.to(device).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=args.lr, betas=(0.9, 0.999))
    images = load_dataset(cfg.data).images

    def time_step(precision: str, _channels_last: bool, give_up_after: float) -> float:
        """One encoder update in `precision`, on copies (the timing must not train the encoder)."""
        enc = copy.deepcopy(encoder)
        o = torch.optim.Adam(enc.parameters(), lr=args.lr)
        real = to_float(images[: args.batch]).to(device)
        z = torch.randn(len(real), cfg.model.nz, generator=torch.Generator().manual_seed(0)).to(device)

        def update():
            with autocast(device, PRECISIONS[precision]):
                loss = encoder_losses(enc, g, real, z, lpips, args.latent_weight, args.geometry_weight)["loss"]
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return time_calls(update, device, give_up_after=give_up_after)

    # auto: the fastest precision here, timed (no fp16: this loop has no gradient scaler)
    options = [(p, False) for p in precision_candidates(args.precision, device) if p != "fp16"]
    choice = choose({"encoder": to_dict(cfg.model), "batch": args.batch, "lpips": lpips is not None,
                     "device": device_key(device)}, options, time_step, tuning_cache())
    amp_dtype = choice.dtype
    print(f"precision: {choice.describe()}", file=sys.stderr)
    gen = torch.Generator().manual_seed(args.seed)
    sums: dict[str, float] = {}
    t0 = time.time()
    bar = tqdm(range(1, args.steps + 1), desc="encoder", file=sys.stderr, mininterval=2)
    deadline = time.time() + args.minutes * 60 if args.minutes else None
    last, done = {}, 0
    for step in bar:
        if deadline and time.time() > deadline:
            break
        done = step
        idx = torch.randint(0, len(images), (args.batch,), generator=gen)
        real = to_float(images[idx]).to(device)
        z = torch.randn(args.batch, cfg.model.nz, generator=gen).to(device)
        with autocast(device, amp_dtype):
            losses = encoder_losses(encoder, g, real, z, lpips, args.latent_weight, args.geometry_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if step % args.log_every == 0:
            bar.set_postfix({k: round(v / args.log_every, 4) for k, v in sums.items()})
            last = {k: v / args.log_every for k, v in sums.items()}
            sums = {}
    used = ("lpips+mse+latent" if lpips is not None else "mse+latent (no LPIPS: " +
            ("--no-lpips" if args.no_lpips else "VGG16 ImageNet weights absent") + ")")
    if args.latent_weight != 10:
        used += f", latent weight {args.latent_weight:g} (the written loss has 10)"
    if args.geometry_weight > 0:
        used += f" + {args.geometry_weight:g} x geometry"
    if args.from_checkpoint_encoder:
        used += "; started from the encoder trained alongside the GAN (model.recon_weight)"
    raw_cfg.model.inversion_loss = used
    modules = {"generator": raw_g, "discriminator": raw_d}
    if "generator_ema" in ckpt.weight_roles(folder):
        modules["generator_ema"] = g.cpu()
    modules["encoder"] = encoder.cpu()
    metrics = dict(meta.get("metrics") or {})
    metrics.update({f"encoder_{k}": v for k, v in last.items()})
    metrics["encoder_steps"] = done
    out = ckpt.write_folder(Path(args.out), raw_cfg, meta["step"], modules, metrics=metrics)
    result = {"out": str(out), "steps": done, "inversion_loss": used, "seconds": round(time.time() - t0, 1),
              "losses": {k: round(v, 5) for k, v in metrics.items() if k.startswith("encoder_")}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
