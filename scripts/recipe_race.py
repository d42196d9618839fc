#!/usr/bin/env python
"""Train several recipes side by side until one deadline, then score every checkpoint of each.

    python -m scripts.recipe_race --out runs/race --minutes 5 --device cuda \\
        --base model.kind=dcgan data.source=shapes model.r1_gamma=1 \\
        --recipe b64 train.batch_size=64 --recipe b256 train.batch_size=256 model.ndf=64

Settings are dotted NAME=VALUE pairs over the run config (`data.*`, `model.*`, `train.*`; `model.kind`
picks the kind); each recipe is the base settings, then its own. Every recipe trains in a process of
its own (its own CUDA context; `--threads` CPU threads), stops at the deadline with a checkpoint, and
then each of its checkpoints is scored by `scripts.evaluate_samples` (`--n` samples against `--real`
training images, in the evaluator's feature space). This is how a recipe is compared on one GPU
(where a small model leaves the card mostly idle) or on a CPU.

The last stdout line is one JSON object: for each recipe its steps, images per second, and each
checkpoint's figures (`fid`, `fid_ratio`, `precision`, `recall`, `class_coverage`, `no_shape`,
`confident`), with `best_step`, the checkpoint of lowest FID.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts._cli import fail, field_type, typed_value

SCORED = ("fid", "fid_ratio", "kid", "precision", "recall", "class_coverage", "no_shape", "confident", "class_kl")


def build_config(settings: list[str]):
    """Dotted NAME=VALUE settings -> a validated RunConfig (unknown names and bad values raise ValueError)."""
    from gan_core import config as config_mod
    from gan_core import kinds

    pairs = []
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name.count(".") != 1 or name.split(".")[0] not in ("data", "model", "train"):
            raise ValueError(f"settings are data.NAME=VALUE, model.NAME=VALUE or train.NAME=VALUE, not {item!r}")
        pairs.append((name, value))
    kind = dict(pairs).get("model.kind", kinds.DEFAULT_KIND)
    base = config_mod.RunConfig(model=kinds.model_config(kind))
    values = config_mod.to_dict(base)
    for name, value in pairs:
        section, field = name.split(".")
        if field not in values[section]:
            raise ValueError(f"{name}: no such setting")
        try:
            values[section][field] = typed_value(value, values[section][field],
                                                 field_type(type(getattr(base, section)), field))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return kinds.validate(config_mod.sync_model_to_data(kinds.config_from_dict(values)))


def train_one(settings: list[str], deadline: float) -> None:
    """One recipe until the deadline (a worker process); its last line is train()'s JSON result."""
    from gan_core.training import train
    from gan_core.viz import image_grid

    cfg = build_config(settings)
    samples = Path(cfg.train.out_dir) / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    result = train(cfg, should_stop=lambda: time.time() > deadline,
                   on_sample=lambda s, x: image_grid(x, 8).save(samples / f"step_{s:08d}.png"))
    print(json.dumps(result, default=str))


def score_run(run: Path, n: int, real: int, every: int) -> None:
    """Score checkpoints of one run (a worker process, so runs are scored side by side): the last one
    first, then every `every`-th one back from it, one JSON line each as it is done (a deadline may cut
    the list short without losing the lines already printed)."""
    from scripts import evaluate_samples

    folders = sorted((run / "checkpoints").glob("step_*"))[::-1][::every]
    for folder in folders:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                r = evaluate_samples.main(["--checkpoint", str(folder), "--n", str(n), "--real", str(real),
                                           "--pixel-n", "50"])
            line = {"step": r["step"], "checkpoint": folder.name, **{k: r.get(k) for k in SCORED}}
        except (Exception, SystemExit) as e:  # one bad checkpoint must not lose the others' scores
            line = {"checkpoint": folder.name, "error": str(e)}
        print(json.dumps(line), flush=True)


def json_lines(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith(("{", "[")):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="one run folder per recipe goes under it")
    p.add_argument("--minutes", type=float, required=True, help="training time of every recipe (one deadline)")
    p.add_argument("--base", nargs="*", default=[], help="settings every recipe starts from")
    p.add_argument("--recipe", nargs="+", action="append", default=[], metavar=("NAME", "SETTING"),
                   help="a name, then its own settings (repeat for each recipe)")
    p.add_argument("--device", default=None, help="train.device for every recipe (default: the settings')")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per recipe")
    p.add_argument("--n", type=int, default=2000, help="samples per scored checkpoint")
    p.add_argument("--real", type=int, default=2000, help="training images per scored checkpoint")
    p.add_argument("--score-every", type=int, default=1, help="score the last checkpoint and every k-th one back from it")
    p.add_argument("--score-minutes", type=float, default=None,
                   help="stop scoring after this long (the checkpoints scored by then are reported)")
    p.add_argument("--worker", choices=["train", "score"], help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker == "train":
        return train_one(args.base, args.deadline)
    if args.worker == "score":
        return score_run(Path(args.out), args.n, args.real, args.score_every)
    if not args.recipe:
        fail("name at least one --recipe")
    names = [name for name, *_ in args.recipe]
    if len(set(names)) < len(names):
        fail(f"recipe names must differ: {', '.join(names)}")
    if args.score_every < 1 or (args.score_minutes is not None and args.score_minutes <= 0):
        fail("--score-every takes a whole number >= 1 and --score-minutes a number > 0")
    out = Path(args.out)
    recipes = {}
    for name, *own in args.recipe:
        settings = [*args.base, *own, f"train.out_dir={out / name}"] + ([f"train.device={args.device}"] if args.device else [])
        try:
            build_config(settings)
        except ValueError as e:
            fail(f"recipe {name}: {e}")
        recipes[name] = settings
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    deadline = time.time() + args.minutes * 60
    t0 = time.time()
    procs = {}
    for name, settings in recipes.items():
        log = open(out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen([sys.executable, "-m", "scripts.recipe_race", "--out", str(out), "--minutes", "0",
                                         "--worker", "train", "--deadline", str(deadline), "--base", *settings],
                                        stdout=subprocess.PIPE, stderr=log, text=True, env=env), log)
    trained = {}
    for name, (proc, log) in procs.items():
        stdout, _ = proc.communicate()
        log.close()
        trained[name] = (json_lines(stdout) or [None])[-1] or {"error": f"no result (exit {proc.returncode}); see {out / name}.log"}
    print(f"trained {len(recipes)} recipes in {time.time() - t0:.0f} s; scoring", file=sys.stderr)
    score_env = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(recipes)))}
    scorers = {name: subprocess.Popen([sys.executable, "-m", "scripts.recipe_race", "--out", str(out / name), "--minutes", "0",
                                       "--worker", "score", "--n", str(args.n), "--real", str(args.real),
                                       "--score-every", str(args.score_every)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=score_env)
               for name in recipes}
    score_deadline = time.time() + args.score_minutes * 60 if args.score_minutes is not None else None
    result = {"minutes": args.minutes, "recipes": {}}
    for name, proc in scorers.items():
        try:
            stdout, _ = proc.communicate(timeout=max(1.0, score_deadline - time.time()) if score_deadline else None)
        except subprocess.TimeoutExpired:
            proc.terminate()
            stdout, _ = proc.communicate()
        scores = sorted(json_lines(stdout), key=lambda s: s.get("step", -1))
        good = [s for s in scores if s.get("fid") is not None]
        r = trained[name]
        result["recipes"][name] = {
            "settings": recipes[name], "steps": r.get("step"), "images_per_s": r.get("images_per_s"),
            "precision_used": r.get("precision"), "cuda_graph": r.get("cuda_graph"), "error": r.get("error"),
            "scores": scores, "best_step": min(good, key=lambda s: s["fid"])["step"] if good else None,
            "best_checkpoint": min(good, key=lambda s: s["fid"])["checkpoint"] if good else None}
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
