#!/usr/bin/env python
"""Train one of the small classifiers that give `scripts/evaluate_samples.py` its feature space.

    python -m scripts.train_evaluator --dataset shapes
    python -m scripts.train_evaluator --dataset scenes
    python -m scripts.train_evaluator --dataset fashion-mnist --data-path /usr/share/datasets/fashion-mnist

They are trained with labels, for evaluation only (no training path reads them), on images that no
bundled model was trained on where the source allows it: the built-in sources are rendered with
their own seeds (training 1001, test 2002; the bundled models train on seed 0). Classes:
- shapes: the 10 shapes plus "no shape" (flat backgrounds, sharp amorphous blobs, ragged blurred
  ellipses and noise textures), so that empty and smeared samples are counted as none of the shapes;
- scenes: the number of objects (1-4);
- fashion-mnist: the 10 labelled classes (train split; accuracy on the test split).
Every evaluator reads 32x32 images (64 px ones are downsampled, antialiased: the shapes and the
object counts stay clear and training takes minutes on a CPU); built-in images are also shown in
grey now and then, so that 1-channel models can be measured in the same space. Writes `evaluation/classifiers/<dataset>/`
(fp16 safetensors, config.json with the test accuracy, README.md). Last stdout line: one JSON object.
"""
from __future__ import annotations

import argparse
import math
import json
import time
from pathlib import Path

FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot"]


def blanks_like(images):
    """Flat images in each image's border colour: what a generator draws when it draws no object."""
    import torch

    from gan_core.augment import border_median
    return border_median(images.float()).expand_as(images).round().to(torch.uint8).contiguous()


def blobs_like(images, seed: int):
    """Amorphous blobs (thresholded smooth noise) in a random colour on each image's border colour:
    an object that is none of the shapes, as a generator draws when it smears one."""
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    field = F.interpolate(torch.rand(n, 1, 6, 6, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
    share = 0.1 + 0.25 * torch.rand(n, generator=gen)  # of the image the blob covers
    ranked = field.flatten(1).sort(1).values
    level = ranked[torch.arange(n), ((1 - share) * (h * w - 1)).long()]
    mask = (field > level[:, None, None, None]).float()
    mask = F.avg_pool2d(mask, 3, 1, 1)  # soft edges, as antialiased shapes have
    background = blanks_like(images).float()
    colour = torch.randint(0, 256, (n, c, 1, 1), generator=gen).float()
    return (background * (1 - mask) + colour * mask).round().to(torch.uint8)


def smears_like(images, seed: int):
    """What an unfinished generator draws: ragged, blurred ellipses with pixel noise (half of them),
    or colour-noise textures (the other half), over each image's border colour."""
    import torch
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    centre = (torch.rand(n, 2, generator=gen) - 0.5) * 1.0
    radii = 0.15 + 0.35 * torch.rand(n, 2, generator=gen)
    angle = torch.rand(n, generator=gen) * math.pi
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    dx, dy = xx - centre[:, 0, None, None], yy - centre[:, 1, None, None]
    u, v = (dx * cos + dy * sin) / radii[:, 0, None, None], (-dx * sin + dy * cos) / radii[:, 1, None, None]
    ragged = F.interpolate(torch.rand(n, 1, 8, 8, generator=gen), size=(h, w), mode="bicubic", align_corners=False)
    mask = ((u ** 2 + v ** 2)[:, None] < 0.6 + 0.8 * ragged).float()
    for _ in range(2):
        mask = F.avg_pool2d(mask, 5, 1, 2)  # soft edges, as a blurry generator draws
    background = blanks_like(images).float()
    colour = torch.randint(0, 256, (n, c, 1, 1), generator=gen).float()
    blobs = background * (1 - mask) + colour * mask
    texture = F.interpolate(torch.rand(n, c, 8, 8, generator=gen) * 255, size=(h, w), mode="nearest")
    texture = 0.5 * background + 0.5 * F.avg_pool2d(texture, 3, 1, 1)
    noisy = torch.rand(n, generator=gen) < 0.5
    out = torch.where(noisy[:, None, None, None], texture, blobs)
    out = out + 12 * torch.randn(out.shape, generator=gen)
    return out.clamp(0, 255).round().to(torch.uint8)


def built_in(dataset: str, n: int, seed: int, size: int = 64):
    import torch

    from gan_core.shapes import SHAPE_CLASSES, render_scenes, render_shapes
    if dataset == "shapes":
        images, labels = render_shapes(n, size, 3, seed=seed)
        extra = n // 30  # "no shape" (flat, an amorphous blob or a smear) as common as any one shape
        images = torch.cat([images, blanks_like(images[:extra]), blobs_like(images[extra: 2 * extra], seed),
                            smears_like(images[2 * extra: 3 * extra], seed + 1)])
        labels = torch.cat([labels, torch.full((3 * extra,), len(SHAPE_CLASSES), dtype=torch.long)])
        return images, labels, [*SHAPE_CLASSES, "no shape"]
    images, objects = render_scenes(n, size, 3, seed=seed)
    counts = (objects[:, :, 0] >= 0).sum(1).long() - 1
    return images, counts, ["1 object", "2 objects", "3 objects", "4 objects"]


def augment(x, gen):
    """Built-in images: grey (as 3 equal channels) with p 0.25."""
    import torch
    grey = torch.rand(len(x), generator=gen) < 0.25
    return torch.where(grey[:, None, None, None], x.mean(1, keepdim=True).expand_as(x), x)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["shapes", "scenes", "fashion-mnist"], required=True)
    p.add_argument("--data-path", default="/usr/share/datasets/fashion-mnist", help="fashion-mnist: its IDX folder")
    p.add_argument("--train-images", type=int, default=20000, help="built-in sources: images to render")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="default: evaluation/classifiers/<dataset>")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from gan_core import evaluator
    from gan_core.config import DataConfig
    from gan_core.data import load_dataset
    from gan_core.runtime import configure_cpu, device_key

    configure_cpu(torch.device("cpu"))
    torch.manual_seed(args.seed)
    t0 = time.time()
    if args.dataset == "fashion-mnist":
        def split(name):
            ds = load_dataset(DataConfig(source="idx", path=args.data_path, image_size=32, channels=1, split=name))
            return ds.images, ds.labels
        (x_train, y_train), (x_test, y_test) = split("train"), split("test")
        classes, size, channels = FASHION_CLASSES, 32, 1
    else:
        x_train, y_train, classes = built_in(args.dataset, args.train_images, 1001)
        x_test, y_test, _ = built_in(args.dataset, max(2000, args.train_images // 5), 2002)
        size, channels = 32, 3
    data_s = time.time() - t0
    cfg = evaluator.EvaluatorConfig(name=args.dataset, image_size=size, channels=channels, classes=classes,
                                    width=args.width)
    net = evaluator.EvaluatorNet(cfg)
    # resized once, exactly as the evaluator resizes the images it measures
    x_train = torch.cat([evaluator.Evaluator(cfg, net).prepare(x_train[i: i + 1000]) for i in range(0, len(x_train), 1000)])
    steps = args.epochs * (len(x_train) // args.batch)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(args.seed)
    t1 = time.time()
    net.train()
    bar = tqdm(total=steps, desc=f"training the {args.dataset} evaluator", unit="step")
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[i: i + args.batch]
            x = x_train[idx]
            if args.dataset != "fashion-mnist":
                x = augment(x, gen)
            loss = F.cross_entropy(net(x), y_train[idx], label_smoothing=0.1)  # no 100% on what it never saw
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    train_s = time.time() - t1
    model = evaluator.Evaluator(cfg, net)
    _, probs = model.run(x_test)
    accuracy = float((probs.argmax(1) == y_test).float().mean())
    grey_probs = model.run(x_test.float().mean(1, keepdim=True).round().to(torch.uint8))[1] if channels == 3 else probs
    grey_accuracy = float((grey_probs.argmax(1) == y_test).float().mean())
    machine = device_key(torch.device("cpu"))
    meta = {"test_accuracy": round(accuracy, 4), "test_accuracy_grey": round(grey_accuracy, 4),
            "test_images": len(x_test), "train_images": len(x_train), "epochs": args.epochs,
            "train_s": round(train_s, 1), "machine": machine, "seed": args.seed,
            "trained_on": "FashionMNIST train split" if args.dataset == "fashion-mnist"
            else f"built-in {args.dataset}, render seed 1001 (test: seed 2002)"}
    out = Path(args.out or evaluator.ROOT / args.dataset)
    evaluator.save(out, cfg, net, meta)
    (out / "README.md").write_text(card(args, cfg, meta))
    result = {"dataset": args.dataset, "out": str(out), **meta, "data_s": round(data_s, 1)}
    print(json.dumps(result))
    return result


LIMITS = {"shapes": """Known limit: "no shape" was taught with flat backgrounds, sharp amorphous blobs, ragged blurred
ellipses and noise textures. It is strict: a blurred blob that a person might call a circle counts as
no shape, so class coverage and `confident` may underrate a soft but recognisable generator.

"""}


def card(args, cfg, meta) -> str:
    grey = (f" The same test images in grey (one channel, as a 1-channel model's samples are read): "
            f"accuracy {meta['test_accuracy_grey']:.4f}." if cfg.channels == 3 else "")
    return f"""# Evaluation classifier: {cfg.name}

For measuring generated images only (`scripts/evaluate_samples.py`): its penultimate layer
({4 * cfg.width} features) is the feature space of FID, KID and precision/recall, and its predictions
count class coverage. No training path reads it.

- Input: {cfg.image_size}x{cfg.image_size}, {cfg.channels} channel(s); other sizes and channel counts are
  resized and converted by `gan_core.evaluator`.
- Classes ({len(cfg.classes)}): {", ".join(cfg.classes)}.
- Trained on: {meta['trained_on']}; {meta['train_images']} images, {meta['epochs']} epochs, seed {meta['seed']},
  in {meta['train_s']:.0f} s on {meta.get('machine', 'a CPU')}.
- **Test accuracy: {meta['test_accuracy']:.4f}** on {meta['test_images']} held-out images.{grey}

{LIMITS.get(cfg.name, "")}Rebuild: `python -m scripts.train_evaluator --dataset {args.dataset}{'' if cfg.name != 'fashion-mnist' else ' --data-path FASHION_MNIST_IDX_FOLDER'}`
"""


if __name__ == "__main__":
    main()
