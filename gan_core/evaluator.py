"""Small classifiers fitted for evaluation only: the feature spaces of FID, KID and precision/recall.

FID's usual feature space, Inception-v3 trained on ImageNet, cannot be downloaded here, and on small
datasets of flat shapes or 28 px clothes its features say little anyway. The accepted substitute is a
classifier trained with labels on the dataset itself (as papers do for MNIST with a LeNet): its
penultimate layer is the feature space, and its predictions give each sample a class, so class
coverage can be counted. These nets are trained by `scripts/train_evaluator.py`, shipped under
`evaluation/classifiers/<name>/` (fp16 safetensors, `config.json`, a card with the test accuracy) and
read only by `scripts/evaluate_samples.py`: no training path imports this module.

An evaluator takes images of any size and 1 or 3 channels: they are resized (bilinear, antialiased)
to its own size and converted to its channel count, the same way for generated and real images.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .data import to_float
from .files import atomic_write

ROOT = Path(__file__).resolve().parent.parent / "evaluation" / "classifiers"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass
class EvaluatorConfig:
    name: str
    image_size: int
    channels: int
    classes: list[str] = field(default_factory=list)
    width: int = 32  # features: 4 * width


class EvaluatorNet(nn.Module):
    """Three conv stages (two 3x3 convs + BatchNorm + ReLU, then 2x2 max-pool), global average pool:
    the (N, 4 * width) features; a linear layer gives the class logits."""

    def __init__(self, cfg: EvaluatorConfig):
        super().__init__()
        w = cfg.width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.trunk = nn.Sequential(
            *block(cfg.channels, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classify = nn.Linear(4 * w, len(cfg.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.trunk(x))


class Evaluator:
    """A fitted classifier and its config: `features`, `probabilities` of any uint8 or [-1, 1] images."""

    def __init__(self, cfg: EvaluatorConfig, net: EvaluatorNet, meta: Optional[dict] = None):
        self.cfg, self.net, self.meta = cfg, net.eval(), meta or {}

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [-1, 1] float (N, C, H, W) -> float at this evaluator's size and channel count."""
        x = to_float(images) if images.dtype == torch.uint8 else images.float()
        x = x.to(self.device)
        if x.shape[1] != self.cfg.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.cfg.channels, -1, -1)
            elif self.cfg.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(f"cannot read {x.shape[1]}-channel images with a {self.cfg.channels}-channel evaluator")
        if x.shape[-1] != self.cfg.image_size or x.shape[-2] != self.cfg.image_size:
            x = F.interpolate(x, size=(self.cfg.image_size, self.cfg.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x.contiguous()

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, 4 * width), class probabilities (N, K)), both float32 on the CPU."""
        feats, probs = [], []
        for i in range(0, len(images), batch):
            f = self.net.trunk(self.prepare(images[i: i + batch]))
            feats.append(f.float().cpu())
            probs.append(self.net.classify(f).float().softmax(1).cpu())
        return torch.cat(feats), torch.cat(probs)


def save(folder: str | Path, cfg: EvaluatorConfig, net: EvaluatorNet, meta: Optional[dict] = None) -> Path:
    """Write fp16 weights and `config.json` (the config and `meta`: test accuracy, how it was trained)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in net.state_dict().items()}
    with atomic_write(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    with atomic_write(folder / CONFIG) as tmp:
        tmp.write_text(json.dumps({"config": dataclasses.asdict(cfg), "meta": meta or {}}, indent=2) + "\n")
    return folder


def load(folder: str | Path, device: str | torch.device = "cpu") -> Evaluator:
    folder = Path(folder)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no evaluator in {folder} (needs {CONFIG} and {WEIGHTS})")
    raw = json.loads((folder / CONFIG).read_text())
    cfg = EvaluatorConfig(**raw["config"])
    net = EvaluatorNet(cfg)
    state = load_file(str(folder / WEIGHTS))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return Evaluator(cfg, net.to(device), raw.get("meta", {}))


def name_for(source: str, path: Optional[str]) -> Optional[str]:
    """The shipped evaluator for a training source: the built-in `shapes` and `scenes`, and
    Fashion-MNIST (an IDX, folder or parquet path whose name says fashion-mnist); else None."""
    if source in ("shapes", "scenes"):
        return source
    if path and "fashion" in Path(str(path)).name.lower().replace("_", "-"):
        return "fashion-mnist"
    return None


def for_source(source: str, path: Optional[str], device: str | torch.device = "cpu") -> Optional[Evaluator]:
    name = name_for(source, path)
    if name is None or not (ROOT / name / CONFIG).is_file():
        return None
    return load(ROOT / name, device)
