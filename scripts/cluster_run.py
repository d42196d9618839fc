#!/usr/bin/env python
"""Train one `cluster` model for a step count or a wall-clock budget, then score every checkpoint it
kept on a labelled split and export the last one (fp16). Needs no Hydra, so it also runs on a bare
GPU machine (scripts/gpu_check.sh runs several of these side by side, one per seed).

    python -m scripts.cluster_run --data-path /usr/share/datasets/fashion-mnist --seed 0 \
        --minutes 5 --device cuda --out runs/fmnist-s0 --export runs/fmnist-s0.tar

Scores use the labels of `--eval-split` only; training never sees a label. `train_mi` is the
label-free selection signal: the mutual information (nats) between the chosen sub-head's
assignments of each training image and of an augmented view of it, over the whole training split
(the IIC objective at full batch, computed the same way for every run). Last stdout line: one
JSON object with the run's settings, steps, time, `scores` per checkpoint step and `final`.
"""
from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path

from scripts._cli import field_type, typed_value


def train_mutual_information(d, images, cfg, device, batch: int = 1024, seed: int = 0) -> float:
    """I(cluster of x; cluster of aug(x)) over `images` (uint8), with the model's own augmentations."""
    import torch

    from gan_core.augment import augment
    from gan_core.data import to_float
    from gan_core.losses import iic_loss
    from gan_core.models.cluster import augment_config

    gen = torch.Generator(device=device).manual_seed(seed)
    d.eval()
    head = d.best_head()
    logits_a, logits_b = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_float(images[i: i + batch].to(device))
            _, ca, _ = d(x, logits=True, heads=True)
            _, cb, _ = d(augment(x, gen, augment_config(cfg)), logits=True, heads=True)
            logits_a.append(ca[head].float())
            logits_b.append(cb[head].float())
    return float(-iic_loss(torch.cat(logits_a), torch.cat(logits_b)))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-source", default="idx")
    p.add_argument("--data-path", default=None, help="IDX folder, image folder, ... (not for shapes/scenes)")
    p.add_argument("--num-images", type=int, default=20000, help="shapes/scenes: images to train on")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--eval-split", default="test")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--ndf", type=int, default=32)
    p.add_argument("--iic-repeats", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1_000_000, help="stop here at the latest")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget for the training loop")
    p.add_argument("--checkpoint-every", type=int, default=5000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--export", default=None, help="write the last checkpoint, fp16, as this .tar")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other ClusterConfig fields, e.g. input_transform=mask aug_rotate_deg=180")
    args = p.parse_args(argv)

    from gan_core import metrics
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.data import load_dataset
    from gan_core.inference.loading import export, load_model
    from gan_core.kinds import validate
    from gan_core.models.cluster import ClusterConfig, predict_tensor
    from gan_core.runtime import resolve_device
    from gan_core.training import train

    overrides = {}
    for item in args.model:
        key, sep, value = item.partition("=")
        if not sep or key not in ClusterConfig.__dataclass_fields__:
            p.error(f"--model takes KEY=VALUE with a ClusterConfig field, not {item!r}")
        try:
            overrides[key] = typed_value(value, ClusterConfig.__dataclass_fields__[key].default,
                                         field_type(ClusterConfig, key))
        except ValueError as e:
            p.error(f"--model {key} {e}")
    device = resolve_device(args.device)
    data = DataConfig(source=args.data_source, path=args.data_path, image_size=args.image_size,
                      channels=args.channels, num_images=args.num_images)
    cfg = RunConfig(
        model=ClusterConfig(k=args.k, ngf=args.ngf, ndf=args.ndf, iic_repeats=args.iic_repeats,
                            image_size=args.image_size, channels=args.channels, **overrides),
        data=data,
        train=TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed, device=str(device),
                          ema_decay=args.ema, log_every=100, sample_every=10**6,
                          checkpoint_every=args.checkpoint_every, keep_checkpoints=1000, out_dir=args.out,
                          resume=args.resume))
    validate(cfg)
    train_set = load_dataset(data)
    deadline = time.time() + args.minutes * 60 if args.minutes else None
    t0 = time.time()
    result = train(cfg, dataset=train_set, should_stop=(lambda: time.time() > deadline) if deadline else None)
    train_s = time.time() - t0

    # Procedural sources have no splits: score on other images, drawn with another seed.
    procedural = args.data_source in ("shapes", "scenes")
    test = load_dataset(DataConfig(source=args.data_source, path=args.data_path, image_size=args.image_size,
                                   channels=args.channels, split=args.eval_split,
                                   seed=1 if procedural else 0, num_images=min(args.num_images, 5000)))
    if test.labels is None:
        raise SystemExit(f"the {args.eval_split} split has no labels to score against")
    labels = test.labels.numpy()
    scores = {}
    folders = sorted(Path(args.out, "checkpoints").glob("step_*"))
    for folder in folders:
        checkpoint = load_model(folder, device)
        ids, _ = predict_tensor(checkpoint.d, test.images)
        scores[int(checkpoint.meta["step"])] = {k: round(v, 4) for k, v in metrics.clustering_scores(labels, ids.numpy()).items()}
    final_folder = Path(result["checkpoint"])
    model = load_model(final_folder, device)  # a ClusterModel
    mi = train_mutual_information(model.d, train_set.images, cfg.model, device)
    out = {"seed": args.seed, "batch": args.batch, "ngf": args.ngf, "ndf": args.ndf, "iic_repeats": args.iic_repeats,
           "device": result["device"], "precision": result["precision"], "step": result["step"],
           "train_s": round(train_s, 1), "images_per_s": result["images_per_s"],
           "train_mi": round(mi, 4), "head": model.d.best_head(), "scores": scores,
           "final": scores.get(result["step"])}
    if args.export:
        exported = export(final_folder, Path(args.out) / "export")
        with tarfile.open(args.export, "w") as tar:
            tar.add(exported, arcname=Path(args.export).stem)
        out["export"] = args.export
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
