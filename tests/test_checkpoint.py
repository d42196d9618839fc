import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from gan_core import checkpoint as ckpt
from gan_core import kinds
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.hub import resolve
from gan_core.inference.loading import export, load_model
from gan_core.models.dcgan import DCGANConfig
from gan_core.training import train


def _run(tmp_path, steps=2, **kw):
    cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4), data=DataConfig(source="shapes", num_images=16, image_size=32),
                    train=TrainConfig(steps=steps, batch_size=4, log_every=1, checkpoint_every=1, keep_checkpoints=2,
                                      out_dir=str(tmp_path / "run"), device="cpu", precision="fp32", **kw))
    return cfg, train(cfg)


def test_keeps_the_newest_checkpoints_and_latest_points_at_a_complete_one(tmp_path):
    cfg, result = _run(tmp_path, steps=4)
    folders = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert folders == ["step_00000003", "step_00000004"]  # no temp folders left behind
    assert (tmp_path / "run" / "latest").read_text().strip() == "step_00000004"
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_00000004" / "config.json").read_text())
    assert meta["format"] == ckpt.FORMAT and meta["step"] == 4 and meta["config"]["model"]["nz"] == 8
    assert resolve(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "step_00000004"


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg, _ = _run(tmp_path, steps=2)
    g, d = kinds.KINDS["dcgan"].build(cfg.model)
    calls = {"n": 0}
    real_save = ckpt.save_file

    def dying_save(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", dying_save)
    with pytest.raises(OSError):
        ckpt.save_training_checkpoint(tmp_path / "run", cfg, 3, {"generator": g, "discriminator": d}, {})
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_00000002"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]


def test_export_fp16_loads_and_matches(tmp_path):
    cfg, result = _run(tmp_path, steps=2, ema_decay=0.5)
    out = export(tmp_path / "run", tmp_path / "bundled", model_card="# card\n")
    names = {p.name for p in out.iterdir()}
    assert names == {"config.json", "README.md", "generator.safetensors", "discriminator.safetensors",
                     "generator_ema.safetensors"}
    assert load_file(str(out / "generator.safetensors"))["main.0.weight"].dtype == torch.float16
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask  # a shared folder, not a private temp dir
    assert ((out / "config.json").stat().st_mode & 0o777) == 0o666 & ~umask
    g32 = load_model(tmp_path / "run").g
    m16 = load_model(out)
    g16, meta = m16.g, m16.meta
    z = torch.randn(3, 8)
    assert meta["step"] == 2 and torch.allclose(g32(z), g16(z), atol=2e-2)
    assert next(g16.parameters()).dtype == torch.float32  # cast back for CPU inference


def test_a_stray_safetensors_file_is_left_alone_by_load_and_export(tmp_path):
    """Only the kind's module roles are read: a file that is no module of this model (notes, an
    embedding someone saved beside it) neither stops loading nor travels with an export."""
    _run(tmp_path, steps=1)
    folder = ckpt.latest_checkpoint(tmp_path / "run")
    save_file({"x": torch.zeros(3)}, str(folder / "notes.safetensors"))
    assert "notes" in ckpt.weight_roles(folder) and "notes" not in kinds.known_roles(kinds.read_config(folder)[0])
    model = load_model(folder)
    assert set(model.modules) == {"generator", "discriminator"}
    out = export(folder, tmp_path / "shipped")
    assert not (out / "notes.safetensors").exists() and (out / "generator.safetensors").exists()


def test_mismatched_shapes_and_foreign_files_are_refused(tmp_path):
    cfg, _ = _run(tmp_path)
    folder = resolve(tmp_path / "run")
    t = load_file(str(folder / "generator.safetensors"))
    t["main.0.weight"] = torch.zeros(3, 3)
    save_file(t, str(folder / "generator.safetensors"))
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        load_model(folder, ema=False)
    (folder / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ckpt.CheckpointError, match="not a GAN Lab checkpoint"):
        load_model(folder)
    with pytest.raises(ckpt.CheckpointError):
        resolve(tmp_path / "does-not-exist")


def test_pickles_are_never_loaded(tmp_path):
    cfg, _ = _run(tmp_path)
    folder = resolve(tmp_path / "run")
    (folder / "generator.safetensors").unlink()
    torch.save({"evil": 1}, folder / "generator.pt")
    with pytest.raises(ckpt.CheckpointError, match="generator.pt .a pickle. but no generator.safetensors"):
        load_model(folder, ema=False)
    # A pickle renamed to .safetensors is recognised and refused before anything reads it.
    (folder / "generator.pt").rename(folder / "generator.safetensors")
    with pytest.raises(ckpt.CheckpointError, match="is a pickle"):
        load_model(folder, ema=False)
    import pickle

    (folder / "generator.safetensors").write_bytes(pickle.dumps({"evil": 1}))
    with pytest.raises(ckpt.CheckpointError, match="is a pickle"):
        load_model(folder, ema=False)


def test_load_from_hub_repo_id_offline(tmp_path, monkeypatch):
    """A Hub repo id resolves through huggingface_hub's cache with HF_HUB_OFFLINE=1: the same code path
    a Space uses online, fed from a cache laid out as huggingface_hub lays it out."""
    cfg, _ = _run(tmp_path)
    exported = export(tmp_path / "run", tmp_path / "exp")
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--someone--tiny-dcgan" / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in exported.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--tiny-dcgan" / "refs").mkdir()
    (cache / "models--someone--tiny-dcgan" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    model = load_model("someone/tiny-dcgan")
    assert model.meta["folder"] == str(snap) and model.g(torch.randn(1, 8)).shape == (1, 3, 32, 32)
    with pytest.raises(ckpt.CheckpointError, match="could not get"):
        load_model("someone/not-cached")


@pytest.mark.parametrize("field,value,says", [("ngf", 10**9, "model.ngf"), ("ngf", "32", "model.ngf"),
                                              ("nz", -1, "model.nz"), ("kind", "evil", "kind"),
                                              ("image_size", 4096, "image_size"), ("unknown_field", 1, "unknown")])
def test_config_values_are_checked_before_any_tensor_is_allocated(tmp_path, monkeypatch, field, value, says):
    _run(tmp_path)
    folder = resolve(tmp_path / "run")
    meta = json.loads((folder / "config.json").read_text())
    section = "data" if field == "image_size" else "model"
    meta["config"][section][field] = value
    (folder / "config.json").write_text(json.dumps(meta))

    def no_models(*_a, **_k):
        raise AssertionError("a model was built from an invalid config")

    for name, kind in list(kinds.KINDS.items()):
        monkeypatch.setitem(kinds.KINDS, name, dataclasses.replace(kind, build=no_models))
    with pytest.raises(ckpt.CheckpointError, match=says):
        load_model(folder)
