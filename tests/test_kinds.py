"""The registry of model kinds (`gan_core.kinds`) is the one place a kind is named: a fourth kind,
defined only here and registered for these tests, trains, checkpoints, resumes, loads, samples,
exports and shows up in the app's model pickers through the code every kind uses, with no edit
anywhere else. An unknown kind in a checkpoint is refused with one line."""
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core import config as config_mod
from gan_core import kinds
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.inference.loading import export, load_model
from gan_core.inference.model import Model
from gan_core.models import dcgan
from gan_core.models.base import Kind, check_widths, generate
from gan_core.training import train

# ---------------------------------------------------------------- the toy kind


@dataclass
class ToyConfig:
    kind: str = "toy"
    image_size: int = 32
    channels: int = 3
    nz: int = 8
    ngf: int = 16
    ndf: int = 16


class ToyGenerator(nn.Module):
    """z (N, nz, 1, 1) -> a small MLP -> tanh -> (N, C, H, W)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.shape = (cfg.channels, cfg.image_size, cfg.image_size)
        self.net = nn.Sequential(nn.Linear(cfg.nz, cfg.ngf), nn.ReLU(), nn.Linear(cfg.ngf, cfg.channels * cfg.image_size ** 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(z.flatten(1))).view(-1, *self.shape)


class ToyDiscriminator(nn.Module):
    """Flatten -> a small MLP -> one logit per image; a probability unless `logits` (as the others)."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(cfg.channels * cfg.image_size ** 2, cfg.ndf),
                                 nn.LeakyReLU(0.2), nn.Linear(cfg.ndf, 1))

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        out = self.net(x).flatten()
        return out if logits else torch.sigmoid(out)


def build(cfg: ToyConfig) -> tuple[ToyGenerator, ToyDiscriminator]:
    return ToyGenerator(cfg), ToyDiscriminator(cfg)


# Its training step is the DCGAN's (the toy D takes `logits=True`); its checks are the shared widths.
TOY = Kind("toy", ToyConfig, build, dcgan.train_step, validate=check_widths)


def toy_cfg(out_dir, steps=4, resume=False) -> RunConfig:
    return RunConfig(model=ToyConfig(), data=DataConfig(source="shapes", image_size=32, num_images=64),
                     train=TrainConfig(steps=steps, batch_size=8, log_every=2, sample_every=2, checkpoint_every=2,
                                       keep_checkpoints=2, out_dir=str(out_dir), device="cpu", precision="fp32",
                                       ema_decay=0.9, resume=resume))


@pytest.fixture(scope="module")
def toy_kind():
    """The toy kind, registered for this module's tests; the registry is restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(kinds.KINDS, TOY.name, TOY)  # undone on exit: "toy" leaves the registry again
        assert kinds.register(TOY) is TOY
        yield TOY
    assert "toy" not in kinds.KINDS


@pytest.fixture(scope="module")
def toy_run(toy_kind, tmp_path_factory):
    """A toy run trained 4 steps and resumed to 6, and the same run trained 6 steps straight."""
    root = tmp_path_factory.mktemp("toy")
    first = train(toy_cfg(root / "split", steps=4))
    resumed = train(toy_cfg(root / "split", steps=6, resume=True))
    straight = train(toy_cfg(root / "straight", steps=6))
    return {"root": root, "run": root / "split", "first": first, "resumed": resumed, "straight": straight}


# ---------------------------------------------------------------- the registry


def test_the_registry_knows_the_toy_kind(toy_kind):
    assert kinds.get("toy") is toy_kind and kinds.of(toy_cfg("x")) is toy_kind
    assert "toy" in kinds.KINDS and {"dcgan", "cluster", "blobgan"} <= set(kinds.KINDS)
    made = kinds.model_config("toy", nz=4)
    assert isinstance(made, ToyConfig) and made.nz == 4 and made.kind == "toy"
    with pytest.raises(ValueError, match="unknown ToyConfig fields: blobs"):
        kinds.model_config("toy", blobs=3)
    cfg = toy_cfg("x")
    again = kinds.config_from_dict(config_mod.to_dict(cfg))  # config.json's form, back
    assert isinstance(again.model, ToyConfig) and again == cfg
    kinds.validate(cfg)
    bad = toy_cfg("x")
    bad.model.nz = 0
    with pytest.raises(ValueError, match="model.nz"):  # the kind's own checks run
        kinds.validate(bad)
    wrong = dataclasses.replace(toy_cfg("x"), model=dcgan.DCGANConfig(kind="toy"))
    with pytest.raises(ValueError, match="needs a ToyConfig"):
        kinds.validate(wrong)
    with pytest.raises(ValueError, match="model kind must be one of"):
        kinds.get("no-such-kind")
    z = toy_kind.latent(ToyConfig(), 5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 8, 1, 1) and toy_kind.num_codes(ToyConfig()) == 0


# ---------------------------------------------------------------- training, resuming


def test_the_toy_kind_trains_checkpoints_and_resumes_exactly(toy_run):
    first, resumed, straight = toy_run["first"], toy_run["resumed"], toy_run["straight"]
    assert first["step"] == 4 and first["stopped"] is None
    assert all(v == v for v in first["metrics"].values())  # no NaN
    assert resumed["step"] == 6 and resumed["steps_run"] == 2 and resumed["stopped"] is None
    folder = ckpt.latest_checkpoint(toy_run["run"])
    assert folder.name == "step_00000006" and resumed["checkpoint"] == str(folder)
    assert sorted(p.name for p in (toy_run["run"] / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]
    assert {p.name for p in folder.iterdir()} == {"config.json", "generator.safetensors", "discriminator.safetensors",
                                                  "generator_ema.safetensors", "optimizer.safetensors"}
    cfg, meta = kinds.read_config(folder)
    assert isinstance(cfg.model, ToyConfig) and meta["step"] == 6
    # 4 steps, then 2 more from the checkpoint, end with the weights of 6 steps straight
    other = toy_run["root"] / "straight" / "checkpoints" / "step_00000006"
    for role in ("generator", "discriminator", "generator_ema"):
        a, b = load_file(str(folder / f"{role}.safetensors")), load_file(str(other / f"{role}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), role
    assert resumed["metrics"]["loss_d"] == straight["metrics"]["loss_d"]


# ---------------------------------------------------------------- loading, sampling, exporting


def test_load_model_gives_a_model_whose_sampler_is_seeded(toy_run):
    model = load_model(toy_run["run"])
    assert isinstance(model, Model) and type(model) is Model  # no facade of its own: the plain Model
    assert model.kind is kinds.KINDS["toy"] and isinstance(model.cfg.model, ToyConfig)
    assert isinstance(model.g, ToyGenerator) and isinstance(model.d, ToyDiscriminator)
    assert model.meta["step"] == 6 and model.meta["folder"] == str(ckpt.latest_checkpoint(toy_run["run"]))
    assert not model.g.training and model.code_names == []
    a = model.sampler.sample(5, seed=3)
    assert a.shape == (5, 3, 32, 32) and a.dtype == torch.float32 and a.abs().max() <= 1
    assert torch.equal(a, model.sampler.sample(5, seed=3))  # a seed gives the same images
    assert not torch.equal(a, model.sampler.sample(5, seed=4))
    assert torch.equal(a, generate(model.g, model.kind.seeded_latent(model.cfg.model, 5, 3)))
    z = model.sampler.latents(2, seed=1)
    assert z.shape == (2, 8, 1, 1)
    assert not torch.equal(model.sampler.move(z, [1.0] + [0.0] * 7), z)  # GANSpace directions work too
    assert torch.equal(model.sampler.move(z, [0.0] * 8), z)
    # the EMA generator by default; the trained one on request
    raw = load_model(toy_run["run"], ema=False)
    assert not torch.equal(raw.sampler.sample(5, seed=3), a)


def test_export_ships_every_module_without_the_optimizer_and_loads(toy_run, tmp_path):
    out = export(toy_run["run"], tmp_path / "shipped")
    assert {p.name for p in out.iterdir()} == {"config.json", "generator.safetensors", "discriminator.safetensors",
                                               "generator_ema.safetensors"}
    assert load_file(str(out / "generator.safetensors"))["net.0.weight"].dtype == torch.float16
    shipped, trained = load_model(out), load_model(toy_run["run"])
    assert type(shipped) is Model and shipped.meta["step"] == 6
    assert next(shipped.g.parameters()).dtype == torch.float32
    assert torch.allclose(shipped.sampler.sample(4, seed=0), trained.sampler.sample(4, seed=0), atol=2e-2)


# ---------------------------------------------------------------- the app


def test_the_app_lists_a_toy_model_trained_by_a_job(toy_kind, tmp_path, monkeypatch):
    import app
    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.cluster import ClusterModel
    from gan_core.jobs import TrainingJob

    job = TrainingJob(tmp_path / "work")
    monkeypatch.setattr(app, "JOB", job)
    monkeypatch.delenv("GANLAB_HUB_MODELS", raising=False)
    job.start(toy_cfg(tmp_path / "ignored", steps=2), "tiny-toy")
    status = job.wait(timeout=300)
    assert status.state == "done", status.message
    assert status.model_dir == app.JOB.models_dir / "tiny-toy" and (status.model_dir / "config.json").exists()
    assert app.model_sources()["tiny-toy"] == str(app.JOB.models_dir / "tiny-toy")
    assert "tiny-toy" in app.model_choices()
    assert "tiny-toy" not in app.model_choices(BlobModel)  # the pickers filter by what a model can do
    assert "tiny-toy" not in app.model_choices(ClusterModel)
    assert type(load_model(status.model_dir)) is Model


# ---------------------------------------------------------------- unknown kinds


def test_read_config_refuses_an_unknown_kind_in_one_line(toy_run, tmp_path, monkeypatch):
    folder = tmp_path / "unknown"
    folder.mkdir()
    ckpt.write_json(folder / "config.json", {"format": ckpt.FORMAT, "step": 1, "metrics": {},
                                             "config": {"model": {"kind": "nope", "nz": 8}}})
    for read in (kinds.read_config, load_model):
        with pytest.raises(ckpt.CheckpointError, match="unknown model kind 'nope'") as e:
            read(folder)
        assert "\n" not in str(e.value) and "toy" in str(e.value)  # the known kinds are named
    # A toy checkpoint, once the toy kind is no longer registered, is refused the same way.
    monkeypatch.delitem(kinds.KINDS, "toy")
    toy_folder = ckpt.latest_checkpoint(toy_run["run"])
    for read in (kinds.read_config, load_model):
        with pytest.raises(ckpt.CheckpointError, match="unknown model kind 'toy'") as e:
            read(toy_folder)
        assert "\n" not in str(e.value)
    assert Path(toy_folder, "generator.safetensors").exists()
