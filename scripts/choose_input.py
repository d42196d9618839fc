"""Which input would `model=cluster` give its discriminator for this data? Runs the choice that
`model.input_transform=auto` (the default) makes before a run's first step, and prints it, without
training anything: the pixels, the object mask or the polar mask, by the SCAN loss of a quick clustering
of each one's pixels (lower is better; a mask must beat the pixels by a margin). No label is read.
It uses the default augmentation and mask size, as a run that sets neither; `--set NAME=VALUE` gives
one of them as a run would (`--set aug_rotate_deg=180` for `model.aug_rotate_deg=180`).

    python -m scripts.choose_input --data.source folder --data.path my_images --k 10
    python -m scripts.choose_input --data.source folder --data.path my_images --set aug_colour=remap
    python -m scripts.choose_input --data.source idx --data.path /usr/share/datasets/fashion-mnist \
        --image-size 32 --channels 1 --seed 1

Last stdout line: {"input_transform", "losses": {"none", "mask", "polar"}, "images", "seconds", "seed", "set"}.
"""
from __future__ import annotations

import argparse
import json
import sys

from scripts._cli import fail, parse_sets

# the model settings the choice reads: the augmentation of its views, the masks' side and SCAN's loss
SETTABLE = ("aug_rotate_deg", "aug_scale_min", "aug_scale_max", "aug_translate", "aug_aspect", "aug_photometric",
            "aug_colour", "mask_size", "scan_neighbours", "scan_entropy_weight")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data.source", dest="source", default="shapes", help="folder, idx, parquet, hub or shapes")
    p.add_argument("--data.path", dest="path", default=None)
    p.add_argument("--split", default="train", help="idx/parquet/hub split")
    p.add_argument("--image-size", type=int, default=64, help="as data.image_size")
    p.add_argument("--channels", type=int, default=3, choices=[1, 3], help="as data.channels")
    p.add_argument("--k", type=int, default=10, help="clusters, as model.k")
    p.add_argument("--num-images", type=int, default=20000, help="for the procedural sources")
    p.add_argument("--seed", type=int, default=0, help="as train.seed")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help=f"a model setting the choice reads, as the run will have it ({', '.join(SETTABLE)})")
    args = p.parse_args(argv)
    try:
        from gan_core.models.cluster import ClusterConfig

        sets = parse_sets(args.set, SETTABLE, ClusterConfig)
    except ValueError as e:
        p.error(str(e))

    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.data import DataError, load_dataset
    from gan_core.kinds import validate
    from gan_core.models.cluster import choose

    data = DataConfig(source=args.source, path=args.path, split=args.split, image_size=args.image_size,
                      channels=args.channels, num_images=args.num_images)
    cfg = RunConfig(model=ClusterConfig(k=args.k, image_size=args.image_size, channels=args.channels, **sets), data=data,
                    train=TrainConfig(seed=args.seed))
    try:
        validate(cfg)
        ds = load_dataset(data)
        if len(ds) < args.k:
            raise ValueError(f"K = {args.k} clusters need at least {args.k} images; the dataset has {len(ds)}")
        _, record = choose(cfg, ds.images, None, lambda line: print(line, file=sys.stderr))
    except (DataError, ValueError) as e:
        fail(str(e))
    result = {"input_transform": record["input_choice"]["chosen"], **record["input_choice"], "seed": args.seed,
              "set": sets}
    del result["chosen"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
