#!/usr/bin/env python
"""Train a GAN Lab model from the command line (Hydra over gan_core's dataclass configs).

    python -m scripts.train model=dcgan data.source=folder data.path=imgs train.steps=2000
    python -m scripts.train train.out_dir=runs/a train.resume=true train.steps=4000   # continue
    torchrun --nproc_per_node=2 -m scripts.train train.device=cpu ...                 # DDP
    python -m scripts.train logger=wandb                                              # W&B (WANDB_MODE=offline works)

Run it from the repository root. `model=<kind>` picks any kind in `gan_core.kinds.KINDS`.
Prints tqdm progress on stderr, writes sample grids to OUT/samples/ and checkpoints to
OUT/checkpoints/ (every train.checkpoint_every steps and train.checkpoint_minutes of wall time, and on
Ctrl-C or SIGTERM); the LAST stdout line is one JSON object with the checkpoint path and final metrics.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from gan_core import config as config_mod
from gan_core import kinds
from scripts._cli import fail


@dataclass
class CliConfig:
    """RunConfig for Hydra: the model node is left open so `model=<kind>` can pick any kind's config."""
    model: Any = MISSING
    data: config_mod.DataConfig = field(default_factory=config_mod.DataConfig)
    train: config_mod.TrainConfig = field(default_factory=config_mod.TrainConfig)
    logger: str = "none"


cs = ConfigStore.instance()
cs.store(name="ganlab", node=CliConfig)
for _name, _kind in kinds.KINDS.items():
    cs.store(group="model", name=_name, node=_kind.config)
cs.store(name="config", node={"defaults": ["ganlab", {"model": kinds.DEFAULT_KIND}, "_self_"]})

# The training bar shows the loop's own measured rates and ETA, not tqdm's: the loop reports every
# log_every steps, so tqdm would see jumps of log_every steps and extrapolate nonsense from them.
TRAIN_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # tqdm prefixes ", "


def progress_text(metrics: dict, batch_size: int) -> str:
    """The training bar's text: steps/s and images/s measured over the last logging window, the time
    left at that rate, and the losses."""
    from gan_core.jobs import format_duration

    img_s = float(metrics["images_per_s"])
    return (f"{img_s / batch_size:.2f} step/s, {img_s:.0f} img/s, {format_duration(metrics.get('eta_s'))} left, "
            f"loss_d {metrics['loss_d']:.3f}, loss_g {metrics['loss_g']:.3f}")


def help_text(argv: list[str]) -> str:
    """`--help`: usage and every field with its default and description (from the config dataclasses'
    comments), for the kind named by `model=KIND` in `argv` (default: dcgan)."""
    import dataclasses
    import textwrap

    kind = next((a.split("=", 1)[1] for a in argv if a.startswith("model=")), kinds.DEFAULT_KIND)
    if kind not in kinds.KINDS:
        return f"unknown model kind {kind!r}: model= takes {', '.join(kinds.KINDS)}"
    out = [(__doc__ or "").strip(), "",
           f"Fields (group.field=value; these are model={kind}'s, model=KIND --help shows another kind's, "
           f"--hydra-help shows Hydra's own help). Kinds: {', '.join(kinds.KINDS)}."]
    groups = (("model", kinds.KINDS[kind].config), ("data", config_mod.DataConfig), ("train", config_mod.TrainConfig))
    for group, cls in groups:
        out += ["", f"{group}:"]
        described = config_mod.field_help(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            head = f"  {group}.{f.name}={'null' if default is None else default}"
            text = described.get(f.name, "")
            out += textwrap.wrap(text, width=110, initial_indent=f"{head:<40} ", subsequent_indent=" " * 41) or [head]
    out += ["", f"{'  logger=none':<40} none | wandb (Weights & Biases; WANDB_MODE=offline works)"]
    return "\n".join(out)


def one_geometry(cfg_dict: dict, overrides: list[str]) -> dict:
    """data.image_size / data.channels are the ones to set; model.image_size / model.channels follow them.
    A model.* size given on the command line is taken as the data's (it would otherwise be overwritten);
    both given and different is an error."""
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    for name in ("image_size", "channels"):
        if f"model.{name}" in given:
            wanted = cfg_dict["model"][name]
            if f"data.{name}" in given and cfg_dict["data"][name] != wanted:
                raise ValueError(f"model.{name}={wanted} and data.{name}={cfg_dict['data'][name]} differ: set "
                                 f"data.{name} only (the model follows the data)")
            cfg_dict["data"][name] = wanted
    return cfg_dict


# Hydra's own output folder and logging are not wanted: the run folder is train.out_dir.
HYDRA_DEFAULTS = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none",
                  "hydra/hydra_logging=none"]


def _init_distributed(device: str):
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() and not device.startswith("cpu") else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


@hydra.main(version_base=None, config_name="config")
def main(raw) -> None:
    import torch
    from tqdm import tqdm

    from gan_core.scan import counts_epochs
    from gan_core.training import train as run_training
    from gan_core.viz import image_grid

    from hydra.core.hydra_config import HydraConfig

    cfg_dict = OmegaConf.to_container(raw, resolve=True)
    try:
        cfg_dict = one_geometry(cfg_dict, list(HydraConfig.get().overrides.task))
        cfg = kinds.validate(config_mod.sync_model_to_data(kinds.config_from_dict(cfg_dict)))
    except ValueError as e:
        fail(str(e))
    dist_device = _init_distributed(cfg.train.device)
    if dist_device is not None and cfg.train.device == "auto":
        cfg.train.device = dist_device
    rank = int(os.environ.get("RANK", "0"))
    out_dir = Path(cfg.train.out_dir)

    run = None
    if cfg.logger == "wandb" and rank == 0:
        try:
            import wandb
        except ImportError:
            fail("logger=wandb needs the wandb package (pip install wandb)")
        run = wandb.init(project=os.environ.get("WANDB_PROJECT", "ganlab"), config=config_mod.to_dict(cfg),
                         dir=str(out_dir), resume="allow")

    bars: dict = {}  # opened at their first update, so an early error is a line of its own

    def progress_bar(name: str, **kw):
        if name not in bars:
            bars[name] = tqdm(desc=name, disable=rank != 0, file=sys.stderr, **kw)
        return bars[name]

    def on_data(done: int, total: int) -> None:
        # opened at the first report with that count as its start, so its rate counts only what is
        # decoded while it is open (a first jump of 500 images in no time read as 56 million img/s)
        data_bar = progress_bar("decode", unit="img", leave=False, initial=done, total=total)
        data_bar.update(done - data_bar.n)
        if done >= total:  # decoded: the bar goes, before the precision choice and training print
            bars.pop("decode").close()

    def on_progress(step: int, metrics: dict) -> None:
        bar = progress_bar("train", total=cfg.train.steps, unit="step", bar_format=TRAIN_BAR)
        bar.n = step
        bar.set_postfix_str(progress_text(metrics, cfg.train.batch_size))  # (redraws the bar)
        if run is not None:
            run.log(metrics, step=step)

    def on_sample(step: int, images: torch.Tensor) -> None:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        grid = image_grid(images, nrow=8)
        grid.save(out_dir / "samples" / f"step_{step:08d}.png")
        if run is not None:
            import wandb

            run.log({"samples": wandb.Image(grid)}, step=step)

    def on_log(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    def on_stage(stage: str, done: int, total: int) -> None:
        """The kind's stages before the first step (the cluster kind's choice of input, "input ...") and after
        the last (its SCAN head): one bar per part."""
        if "train" in bars:  # the steps are over: their bar stays as it ended
            bars.pop("train").close()
        bar = progress_bar(f"SCAN {stage}", total=total, unit="epoch" if counts_epochs(stage) else "img")
        bar.update(done - bar.n)
        if done >= total:
            bars.pop(f"SCAN {stage}").close()

    # Ctrl-C or SIGTERM (a scheduler, `kill`) stops after the current step with a checkpoint; a second
    # Ctrl-C aborts at once.
    stop_requested: list[str] = []

    def request_stop(signum, _frame) -> None:
        if stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop_requested.append(signal.Signals(signum).name)
        tqdm.write(f"{stop_requested[-1]}: stopping after this step and saving a checkpoint"
                   + (" (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""), file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)

    try:
        result = run_training(cfg, on_progress=on_progress, on_sample=on_sample, on_data_progress=on_data,
                              on_log=on_log, on_stage=on_stage, should_stop=lambda: bool(stop_requested))
        if run is not None and result.get("input_choice"):  # W&B was told "auto" before the run chose
            model = {**config_mod.to_dict(cfg)["model"], "input_transform": result["input_choice"]["chosen"]}
            run.config.update({"model": model, "input_choice": result["input_choice"]}, allow_val_change=True)
    except (ValueError, OSError) as e:  # bad data, config or output folder: one line, no traceback
        for b in bars.values():
            b.close()
        if rank == 0:
            fail(str(e))
        print(f"error: {e}", file=sys.stderr)  # the other ranks: the line only, rank 0 reports the JSON
        sys.exit(2)
    finally:
        for b in bars.values():
            b.close()
        if run is not None:
            run.finish()
    if dist_device is not None:
        import torch.distributed as dist

        # Every rank tears down together: a rank that left while rank 0 still saved its checkpoint once
        # aborted in gloo's teardown ("terminate called without an active exception", a CI run).
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(result))


if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text(sys.argv[1:]))
        sys.exit(0)
    if "--hydra-help" in sys.argv[1:]:
        sys.argv[sys.argv.index("--hydra-help")] = "--help"
    sys.argv[1:1] = [a for a in HYDRA_DEFAULTS if a.split("=")[0] not in " ".join(sys.argv[1:])]
    main()
