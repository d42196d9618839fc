#!/usr/bin/env python
"""Go on training a `dcgan` run with a generator (or discriminator) of twice the width, from where it stands.

    python -m scripts.widen_checkpoint --checkpoint runs/exp/lz_lo/checkpoints/step_00116047 --out runs/exp/wide
    python -m scripts.train model=dcgan model.ngf=64 ... train.out_dir=runs/exp/wide train.resume=true

Writes a training checkpoint at the same step into OUT/checkpoints, with model.ngf doubled: G and its EMA
copy widened so that they paint what they painted (`gan_core.models.dcgan.widen_generator`, Net2WiderNet),
plus `--noise` (a fraction of each layer's weight spread) so the copies of a channel can learn apart; D,
its EMA copy if any and D's Adam state as they were; G's Adam state fresh (both fresh from an exported
checkpoint, which has none). Resume it with the same settings as before and `model.ngf` doubled.
`--part discriminator` widens D instead (model.ndf doubled, `widen_discriminator`: the same logits as
before, up to the noise), keeping G, its EMA copy and G's Adam state, with D's Adam state fresh. Last
stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from scripts._cli import fail


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a training checkpoint folder of a dcgan run (or the run folder)")
    p.add_argument("--out", required=True, help="the new run folder (must not hold checkpoints yet)")
    p.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise, a fraction of each weight spread")
    p.add_argument("--part", choices=("generator", "discriminator"), default="generator",
                   help="which network to widen (model.ngf or model.ndf doubled)")
    args = p.parse_args(argv)

    import torch

    from gan_core import checkpoint as ckpt, kinds
    from gan_core.checkpoint import CheckpointError
    from gan_core.inference.loading import resolve
    from gan_core.models.dcgan import widen_discriminator, widen_generator
    from gan_core.training import build_models

    try:
        src = resolve(args.checkpoint)
        cfg, meta = kinds.read_config(src)
    except CheckpointError as e:
        fail(str(e))
    if cfg.model.kind != "dcgan":
        fail(f"{src} is a {cfg.model.kind} run; only dcgan runs can be widened")
    with_state = ckpt.has_optimizer_state(src)
    if not with_state:
        print(f"{src} has no optimizer state (an exported checkpoint): both networks' Adam states start fresh",
              file=sys.stderr)
    out = Path(args.out)
    if ckpt.latest_checkpoint(out) is not None:
        fail(f"{out} already holds checkpoints: pick a new folder")
    cpu = torch.device("cpu")
    field = "ngf" if args.part == "generator" else "ndf"
    if field == "ndf" and cfg.model.d_recon > 0:
        fail("--part discriminator cannot widen the decoder of model.d_recon: widen a run without it")
    wide = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{field: 2 * getattr(cfg.model, field)}),
                               train=dataclasses.replace(cfg.train, out_dir=str(out)))
    old, new = build_models(cfg, cpu, wrap=False), build_models(wide, cpu, wrap=False)
    trained = old.modules()
    for role, module in trained.items():
        ckpt.load_weights(module, ckpt.weights_file(src, role))
    widened = ((ckpt.GENERATOR, ckpt.ema_role(ckpt.GENERATOR)) if field == "ngf"
               else (ckpt.DISCRIMINATOR, ckpt.ema_role(ckpt.DISCRIMINATOR)))
    widen = widen_generator if field == "ngf" else widen_discriminator
    for role, module in new.modules().items():
        if role in widened:
            widen(trained[role], module, noise=args.noise)
        else:
            module.load_state_dict(trained[role].state_dict())
    kept = {"D": new.opt_d} if field == "ngf" else {"G": new.opt_g}  # the widened network's Adam starts fresh
    if with_state:
        ckpt.load_optimizers(src, kept)
    folder = ckpt.save_training_checkpoint(out, wide, meta["step"], new.modules(), new.optimizers(),
                                           metrics=meta.get("metrics"), keep=cfg.train.keep_checkpoints,
                                           extra={"ema_age": meta["ema_age"]} if meta.get("ema_age") else None)
    result = {"checkpoint": str(folder), "step": meta["step"], "part": args.part,
              field: [getattr(cfg.model, field), getattr(wide.model, field)], "noise": args.noise,
              "optimizer": "kept for the other network" if with_state else "fresh"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
