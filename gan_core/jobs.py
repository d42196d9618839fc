"""One training job at a time, in a background thread, for the app (the CLI calls `train` directly).

The job runs `gan_core.training.train` with callbacks that record progress, losses and the latest
sample grid; `stop()` asks the loop to stop at its next check (it then saves a checkpoint). When
the loop ends, the last checkpoint is exported (fp16, no optimizer state) to `work_dir/models/NAME`
and zipped, so the app's model pickers and its download button find it.

    job = TrainingJob(Path("runs/app"))
    job.start(cfg, "my-shapes")          # raises JobBusy while another job runs
    job.status().step, job.status().eta_s
    job.stop(); job.wait()
"""
from __future__ import annotations

import copy
import re
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from PIL import Image

from . import kinds
from .checkpoint import check_output_folder
from .data import load_dataset
from .inference.loading import export
from .scan import counts_epochs
from .training import train
from .viz import image_grid

RUNNING = ("loading", "training", "saving")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class JobBusy(RuntimeError):
    """Another training job is running on this app instance."""


@dataclass
class JobStatus:
    state: str = "idle"  # idle | loading | training | saving | done | stopped | failed
    name: str = ""
    kind: str = ""
    step: int = 0
    steps: int = 0
    images_per_s: float = 0.0
    eta_s: Optional[float] = None
    message: str = ""
    started_at: Optional[float] = None  # time.time()
    losses: list = field(default_factory=list)  # {"step", "loss", "value"} rows for a line plot
    sample: Optional[Image.Image] = None
    sample_step: int = 0
    model_dir: Optional[Path] = None
    zip_path: Optional[Path] = None
    settings: dict = field(default_factory=dict)  # what the caller started it with (the app's form), shown to others

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def summary(self) -> str:
        """One line for people: what runs, how far, how fast, and when it ends."""
        if self.state == "idle":
            return "No training job yet."
        if self.state == "loading" or (self.state == "training" and self.step == 0 and self.message):
            return f"Training {self.name} ({self.kind}): {self.message or 'loading the dataset'}"
        if self.running and self.steps and self.step >= self.steps and self.message:  # the kind's last stage
            return f"Training {self.name} ({self.kind}): {self.steps:,} steps done; {self.message}"
        if self.running:
            eta = f", about {format_duration(self.eta_s)} left" if self.eta_s is not None else ""
            ends = (f" (ends near {time.strftime('%H:%M', time.localtime(time.time() + self.eta_s))})"
                    if self.eta_s is not None else "")
            return (f"Training {self.name} ({self.kind}): step {self.step:,} / {self.steps:,}, "
                    f"{self.images_per_s:,.0f} images/s{eta}{ends}")
        return f"{self.name} ({self.kind}): {self.state} at step {self.step:,}. {self.message}".strip()


def format_duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TrainingJob:
    def __init__(self, work_dir: str | Path, max_loss_rows: int = 4000, max_seconds: Optional[float] = None):
        self.work_dir = Path(work_dir)
        self.max_loss_rows = max_loss_rows
        self.max_seconds = max_seconds  # a job that trains longer stops (and saves) at its next check
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def models_dir(self) -> Path:
        return self.work_dir / "models"

    def status(self) -> JobStatus:
        with self._lock:
            return copy.copy(self._status)

    def _update(self, **changes) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    def start(self, cfg, name: str, dataset_fn: Optional[Callable] = None, settings: Optional[dict] = None) -> None:
        """Start training `cfg` (a RunConfig) in the background as model `name`. `dataset_fn()`, when
        given, returns the ImageDataset (uploads); otherwise `cfg.data` is loaded. `settings` (the form
        that started it) is kept in the status, so whoever looks next sees what runs. The run folder and
        the exported model both live under the work folder, whatever `cfg.train.out_dir` said."""
        if not NAME_PATTERN.match(name or ""):
            raise ValueError("the model name may use letters, digits, '.', '-' and '_' (at most 64), "
                             f"not {name!r}")
        with self._lock:
            if self._status.running:
                raise JobBusy("busy: " + self._status.summary())
            run_dir = self.work_dir / "runs" / name
            cfg = replace(cfg, train=replace(cfg.train, out_dir=str(run_dir), resume=False))
            kinds.validate(cfg)
            check_output_folder(run_dir)  # OSError now, not a failed job later
            self._stop.clear()
            self._status = JobStatus(state="loading", name=name, kind=cfg.model.kind, steps=cfg.train.steps,
                                     started_at=time.time(), settings=dict(settings or {}))
            self._thread = threading.Thread(target=self._run, args=(cfg, name, dataset_fn), daemon=True,
                                            name=f"train-{name}")
            self._thread.start()

    def stop(self) -> bool:
        """Ask the running job to stop (it saves first). False when nothing runs."""
        if not self.status().running:
            return False
        self._stop.set()
        return True

    def wait(self, timeout: Optional[float] = None) -> JobStatus:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    # ------------------------------------------------------------ the thread

    def _on_progress(self, step: int, metrics: dict) -> None:
        rows = [{"step": step, "loss": key, "value": float(metrics[key])} for key in ("loss_d", "loss_g") if key in metrics]
        with self._lock:
            losses = (self._status.losses + rows)[-self.max_loss_rows:]
            self._status = replace(self._status, state="training", step=step, losses=losses,
                                   images_per_s=float(metrics.get("images_per_s", 0.0)),
                                   eta_s=float(metrics["eta_s"]) if "eta_s" in metrics else None)

    def _on_stage(self, stage: str, done: int, total: int) -> None:
        """The kind's stages, shown in the summary: before the first step (the cluster kind's choice of
        input, stages "input NAME: part") and after the last (its SCAN head)."""
        unit = "epochs" if counts_epochs(stage) else "images"
        what = "choosing the input layer" if stage.startswith("input ") else "fitting the SCAN head"
        self._update(message=f"{what}: {stage.removeprefix('input ')}, {done:,} / {total:,} {unit}")

    def _on_sample(self, step: int, images) -> None:
        self._update(sample=image_grid(images[:32], nrow=8), sample_step=step)

    def _run(self, cfg, name: str, dataset_fn: Optional[Callable]) -> None:
        try:
            def data_progress(done: int, total: int) -> None:
                self._update(message=f"decoding images {done:,} / {total:,}")

            dataset = dataset_fn() if dataset_fn is not None else load_dataset(cfg.data, progress=data_progress)
            if self._stop.is_set():
                self._update(state="stopped", message="stopped before training began")
                return
            self._update(state="training", message="")
            began, timed_out = self.status().started_at or time.time(), []  # the cap counts the loading too

            def should_stop() -> bool:
                if self.max_seconds is not None and time.time() - began > self.max_seconds:
                    timed_out.append(True)
                    return True
                return self._stop.is_set()

            result = train(cfg, on_progress=self._on_progress, should_stop=should_stop,
                           on_sample=self._on_sample, dataset=dataset, on_log=lambda line: self._update(message=line),
                           on_stage=self._on_stage)
            if timed_out and (result["stopped"] or "").startswith("stopped by request"):
                result["stopped"] = f"Stopped at the time limit of {format_duration(self.max_seconds)} per job"
            if not result["checkpoint"]:
                if result["stopped"] and (timed_out or self._stop.is_set()):  # stopped before the first step
                    self._update(state="stopped", message=result["stopped"])
                else:
                    self._update(state="failed", message=result["stopped"] or "no checkpoint was written")
                return
            self._update(state="saving", step=result["step"], message="exporting")
            model_dir = self.models_dir / name
            staging = self.models_dir / f".{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            export(result["checkpoint"], staging)
            shutil.rmtree(model_dir, ignore_errors=True)
            staging.rename(model_dir)
            zip_base = self.work_dir / "downloads" / name
            zip_base.parent.mkdir(parents=True, exist_ok=True)
            zip_path = Path(shutil.make_archive(str(zip_base), "zip", root_dir=model_dir.parent, base_dir=name))
            stopped = result["stopped"]
            self._update(state="stopped" if stopped else "done", step=result["step"], model_dir=model_dir,
                         zip_path=zip_path, eta_s=0.0,
                         message=(f"{stopped}. " if stopped else "") + f"Saved as model '{name}'.")
        except Exception as e:  # noqa: BLE001 - the app shows one line; the thread must not die silently
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            self._update(state="failed", message=f"{type(e).__name__}: {first}"[:300])
