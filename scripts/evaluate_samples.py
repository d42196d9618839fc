#!/usr/bin/env python
"""Measure a generator's samples against real images of its training source.

    python -m scripts.evaluate_samples --checkpoint checkpoints/shapes-dcgan

The feature space is a small classifier trained with labels on the same source, for evaluation only
(`gan_core.evaluator`, shipped under `evaluation/classifiers/` for the built-in shapes and scenes and
for Fashion-MNIST; FID's Inception network cannot be downloaded here). In it, against `--real`
training images:
- `fid`, `kid`: Frechet and kernel distances (lower is better);
- `precision`, `recall`: improved precision/recall, k = 3 (fidelity and coverage of the real manifold);
- `class_coverage`: how many classes hold at least half a uniform share of the samples, with every
  class's share (`class_shares`) and `class_kl`, KL(real class shares || sample class shares);
- `confident`: the share of samples given a class (not "no shape") with a top probability at the
  level 95% of held-out real images reach (and, for shapes, `no_shape`: the share classed as an empty background or an
  amorphous blob).
The same figures for held-out real images (`real_fid`, `real_kid`, ...: another render seed of a
built-in source, or the test split) are the floor: what a perfect generator would score with the
same numbers of images. Pixel statistics (two-colour coverage, nearest-training-image distance,
diversity) follow under `pixels`. `--inception` adds the standard Inception FID through torchmetrics
where its weights can be had; offline it says in one line why not. Samples are drawn as the Sample
tab draws them by default: truncation 1 and the checkpoint's recorded Refine-with-D steps and step size
(`--refine N` and `--refine-step S` set them; `--record` stores the figures and that draw). Last stdout
line: one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time


def inception_fid(real, fake) -> tuple[float | None, str]:
    """Standard FID via torchmetrics (Inception-v3 weights fetched on first use), or None and why not."""
    try:
        import torch
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        return None, f"--inception needs torchmetrics[image] installed ({e.name} is missing)"
    try:
        fid = FrechetInceptionDistance(feature=2048)
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), 200):
                x = images[i: i + 200]
                fid.update(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, real=is_real)
        return float(fid.compute()), "ok"
    except Exception as e:  # the weights download fails offline
        return None, f"--inception could not load the Inception-v3 weights: {type(e).__name__}: {str(e)[:160]}"


def held_out(cfg_data, n: int):
    """Real images the model never saw: another seed of a built-in source, the test split, or None."""
    from gan_core.data import DataError, load_dataset
    if cfg_data.source in ("shapes", "scenes"):
        return load_dataset(dataclasses.replace(cfg_data, num_images=n, seed=cfg_data.seed + 10_000, limit=None)).images
    if cfg_data.split != "test":
        try:
            return load_dataset(dataclasses.replace(cfg_data, split="test", limit=None)).images[:n]
        except (DataError, FileNotFoundError, ValueError):
            return None
    return None


def figures(ev, reference, feats, probs, real_ids, level, prefix: str = "") -> dict:
    """The figures of one image set, from its evaluator features and class probabilities (`ev.run`)."""
    from gan_core import metrics
    ids = probs.argmax(1)
    precision, recall = metrics.precision_recall(reference, feats, k=3)
    # "no shape" is no class to cover: samples given it count in the total, never as a covered class
    covered_classes = [c for c in ev.cfg.classes if c != "no shape"]
    coverage = metrics.class_coverage(ids, len(covered_classes), real_ids)
    out = {"fid": metrics.frechet_distance(reference, feats), "kid": metrics.kernel_distance(reference, feats),
           "precision": precision, "recall": recall, "class_coverage": coverage["covered"],
           "class_kl": coverage["kl"], "confident": float(((probs.max(1).values >= level) & (ids < len(covered_classes))).float().mean()),
           "class_shares": dict(zip(covered_classes, coverage["shares"]))}
    if "no shape" in ev.cfg.classes:
        out["no_shape"] = float((ids == ev.cfg.classes.index("no shape")).float().mean())
    return {prefix + k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


HEADLINE = ("evaluator", "n", "truncation", "refine", "refine_step", "fid", "kid", "precision", "recall", "class_coverage",
            "class_kl", "confident", "no_shape", "real_fid", "real_precision", "real_recall", "fid_ratio")


def record(folder: str, result: dict) -> None:
    """Write the headline figures into FOLDER/config.json under `sample_quality`, and the draw they were
    measured with under `sampling` (the model's default draw from then on), atomically."""
    from pathlib import Path

    from gan_core.checkpoint import write_json
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SystemExit(f"--record needs a local checkpoint folder, not {folder}")
    raw = json.loads(path.read_text())
    raw["sample_quality"] = {k: result[k] for k in HEADLINE if k in result}
    raw["sample_quality"]["classes"] = len(result.get("class_shares", {}))
    raw["sampling"] = {"refine": int(result.get("refine", 0)), "refine_step": float(result["refine_step"])}
    write_json(path, raw)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, run folder or Hub repo id")
    p.add_argument("--n", type=int, default=10000, help="generated images (and held-out real ones for the floor)")
    p.add_argument("--real", type=int, default=10000, help="training images: the reference set")
    p.add_argument("--evaluator", default=None,
                   help="an evaluator folder (default: the one shipped for the checkpoint's data source)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--truncation", type=float, default=1.0, help="1.0: as the Sample tab draws by default")
    p.add_argument("--refine", type=int, default=None,
                   help="refine each latent with this many steps guided by the checkpoint's discriminator "
                        "(the Sample tab's 'Refine with D'; default: the checkpoint's default draw, as recorded "
                        "under `sampling`, else 0: no refinement)")
    p.add_argument("--refine-step", type=float, default=None,
                   help="the size of each refinement step (default: the checkpoint's recorded one, else 0.01)")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--inception", action="store_true", help="also the standard Inception FID (needs its weights)")
    p.add_argument("--pixel-n", type=int, default=500, help="images for the (quadratic) pixel statistics")
    p.add_argument("--record", action="store_true",
                   help="also store the headline figures in the checkpoint folder's config.json "
                        "(`sample_quality`: the app's Sample tab shows them and opens on the best bundled model), "
                        "and the draw they were measured with (`sampling`: the --refine steps and step size) as the model's "
                        "default draw, which the Sample tab and this script then use")
    args = p.parse_args(argv)
    from gan_core.inference.sampler import REFINE_MAX, check_refine_step
    if args.refine is not None and not 0 <= args.refine <= REFINE_MAX:
        p.error(f"--refine takes 0 to {REFINE_MAX} steps (as the Sample tab does), not {args.refine}")
    if args.refine_step is not None:
        try:
            check_refine_step(args.refine_step)
        except ValueError as e:
            p.error(f"--refine-step: {e}")

    import torch
    from tqdm import tqdm

    from gan_core import evaluator, metrics
    from gan_core.data import load_dataset
    from gan_core.inference.loading import load_model

    t0 = time.time()
    model = load_model(args.checkpoint, ema=not args.no_ema)
    if args.refine is None:
        args.refine = model.default_refine
    if args.refine_step is not None:
        model.sampler.refine_step = args.refine_step
    if args.refine and not model.sampler.can_refine:
        raise SystemExit(f"--refine needs a discriminator, and {args.checkpoint} ships none")
    cfg, meta = model.cfg, model.meta
    ev = evaluator.load(args.evaluator) if args.evaluator else evaluator.for_source(cfg.data.source, cfg.data.path)
    data = cfg.data
    if data.source in ("shapes", "scenes"):  # render only what is used: the same source and seed, fewer images
        data = dataclasses.replace(data, num_images=min(data.num_images, args.real))
    reference = load_dataset(data).images[: args.real]
    chunk = 250
    batches = []
    for i in tqdm(range(0, args.n, chunk), desc="sampling", unit="batch", disable=None):
        x = model.sampler.sample(min(chunk, args.n - i), args.seed + i, truncation=args.truncation,
                                 refine=args.refine)
        batches.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    generated = torch.cat(batches)
    held = held_out(cfg.data, args.n)
    result = {"checkpoint": meta["folder"], "step": meta["step"], "n": args.n, "real": len(reference),
              "truncation": args.truncation, "refine": args.refine, "refine_step": model.sampler.refine_step}
    if ev is None:
        print(f"no evaluator for data source {cfg.data.source!r} ({cfg.data.path}): pass --evaluator; "
              "only pixel statistics follow", file=sys.stderr)
        result["evaluator"] = None
    else:
        result["evaluator"] = ev.cfg.name
        ref_feats, ref_probs = ev.run(reference)
        ref_ids = ref_probs.argmax(1)
        held_run = ev.run(held) if held is not None else None
        level = float((held_run[1] if held_run else ref_probs).max(1).values.quantile(0.05))
        result["confidence_level"] = round(level, 4)
        result.update(figures(ev, ref_feats, *ev.run(generated), ref_ids, level))
        if held_run:
            result.update(figures(ev, ref_feats, *held_run, ref_ids, level, prefix="real_"))
            result["fid_ratio"] = round(result["fid"] / max(result["real_fid"], 1e-9), 3)
    if args.inception:
        value, why = inception_fid(reference, generated)
        result["inception_fid"] = value
        if value is None:
            print(why, file=sys.stderr)
    pix = {}
    few = generated[: args.pixel_n]
    sets = [("generated", few)] + ([("real_heldout", held[: args.pixel_n])] if held is not None else [])
    for name, images in sets:
        pix[f"{name}_two_colour_coverage"] = round(metrics.two_colour_coverage(images), 4)
        pix[f"{name}_nearest_train_distance"] = round(metrics.nearest_real_distance(images, reference[:5000]), 4)
        pix[f"{name}_pairwise_distance"] = round(metrics.mean_pairwise_distance(images), 4)
    result["pixels"] = pix
    result["seconds"] = round(time.time() - t0, 1)
    if args.record and ev is not None:
        record(meta["folder"], result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
