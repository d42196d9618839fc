"""scripts/push_to_hub.py uploads every module a checkpoint holds (a BlobGAN's inversion encoder
included), never the optimizer state unless asked, through the same `gan_core.hub` code as the app.
The Hub is faked: `huggingface_hub.HfApi` is replaced by a recorder, and nothing leaves the machine."""
import json
import shutil
from fnmatch import fnmatch

import huggingface_hub
import pytest

from gan_core import checkpoint as ckpt
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.data import load_dataset
from gan_core.inference.blobs import BlobModel
from gan_core.inference.loading import load_model
from gan_core.models.blobgan import BlobGANConfig
from gan_core.training import train
from scripts import push_to_hub


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory):
    """A run folder whose latest checkpoint is a tiny BlobGAN trained 2 steps with its encoder
    (recon_weight > 0), an EMA generator and the optimizer state."""
    out = tmp_path_factory.mktemp("blob-run")
    model = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4,
                          recon_weight=5.0, r1_every=2)
    cfg = RunConfig(model=model, data=DataConfig(source="scenes", num_images=8, image_size=32),
                    train=TrainConfig(steps=2, batch_size=4, log_every=1, device="cpu", precision="fp32",
                                      ema_decay=0.9, out_dir=str(out)))
    result = train(cfg, dataset=load_dataset(cfg.data, use_cache=False))
    folder = ckpt.latest_checkpoint(out)
    assert result["step"] == 2 and str(folder) == result["checkpoint"]
    names = {p.name for p in folder.iterdir()}
    # What the bug lost, and what must never ship by default, are both there to be chosen from.
    assert {"encoder.safetensors", "optimizer.safetensors", "generator_ema.safetensors"} <= names
    return out


class FakeApi:
    """Records what `HfApi` would have been asked to do."""
    calls: list = []

    def __init__(self, token=None, **kw):
        FakeApi.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def upload_file(self, **kw):
        FakeApi.calls.append(("upload_file", kw))

    def upload_folder(self, **kw):
        FakeApi.calls.append(("upload_folder", kw))
        return type("Commit", (), {"commit_url": "https://example.invalid/me/blobs/commit/1"})()


@pytest.fixture
def fake_hub(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi.calls


def _one(calls, name):
    found = [kw for n, kw in calls if n == name]
    assert len(found) == 1, calls
    return found[0]


def _selected(folder, patterns) -> set:
    """The files of `folder` that `upload_folder(allow_patterns=patterns)` uploads (fnmatch, as the Hub does)."""
    return {p.name for p in folder.iterdir() if p.is_file() and any(fnmatch(p.name, pat) for pat in patterns)}


def test_push_uploads_the_encoder_and_every_module_but_not_the_optimizer(blob_run, fake_hub, capsys, tmp_path):
    folder = ckpt.latest_checkpoint(blob_run)
    result = push_to_hub.main(["--checkpoint", str(blob_run), "--repo", "me/blobs", "--token", "hf_secret"])
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(printed) == result and "hf_secret" not in printed

    assert _one(fake_hub, "init") == {"token": "hf_secret"}
    repo = _one(fake_hub, "create_repo")
    assert repo["repo_id"] == "me/blobs" and repo["private"] is False and repo.get("exist_ok") is True
    card = _one(fake_hub, "upload_file")  # a training checkpoint has no card: one is generated
    assert card["path_in_repo"] == "README.md" and card["repo_id"] == "me/blobs"
    assert b"blobgan" in card["path_or_fileobj"] and b"me/blobs" in card["path_or_fileobj"]
    upload = _one(fake_hub, "upload_folder")
    assert upload["repo_id"] == "me/blobs" and upload["folder_path"] == str(folder)
    assert upload["commit_message"] == "GAN Lab checkpoint, step 2"
    # What the Hub would receive: every module's weights (the encoder too) and the config; no optimizer state.
    shipped = _selected(folder, list(upload["allow_patterns"]))
    assert {"encoder.safetensors", "generator.safetensors", "discriminator.safetensors",
            "generator_ema.safetensors", "config.json"} <= shipped
    assert "optimizer.safetensors" not in shipped
    weights = {ckpt.weights_file(folder, role).name for role in ckpt.weight_roles(folder)}
    assert shipped == weights | {"config.json"}
    assert result == {"repo": "me/blobs", "files": sorted(shipped) + ["README.md (generated)"], "dry_run": False,
                      "url": "https://example.invalid/me/blobs/commit/1"}

    # ... and a model pulled from there can still read layouts out of images.
    pulled = tmp_path / "pulled"
    pulled.mkdir()
    for name in shipped:
        shutil.copy(folder / name, pulled / name)
    model = load_model(pulled)
    assert isinstance(model, BlobModel) and model.encoder is not None


def test_push_with_optimizer_and_private(blob_run, fake_hub, capsys):
    folder = ckpt.latest_checkpoint(blob_run)
    result = push_to_hub.main(["--checkpoint", str(folder), "--repo", "me/blobs", "--private", "--with-optimizer"])
    assert _one(fake_hub, "init") == {"token": None}
    assert _one(fake_hub, "create_repo")["private"] is True
    allowed = _one(fake_hub, "upload_folder")["allow_patterns"]
    assert {"optimizer.safetensors", "encoder.safetensors"} <= _selected(folder, allowed)
    assert "optimizer.safetensors" in result["files"] and "encoder.safetensors" in result["files"]


def test_dry_run_lists_the_encoder_and_uploads_nothing(blob_run, fake_hub, capsys):
    result = push_to_hub.main(["--checkpoint", str(blob_run), "--repo", "me/blobs", "--dry-run"])
    assert fake_hub == []  # no HfApi was even made
    assert result["dry_run"] is True and result["url"] is None and result["repo"] == "me/blobs"
    assert {"encoder.safetensors", "generator.safetensors", "generator_ema.safetensors",
            "discriminator.safetensors", "config.json", "README.md (generated)"} <= set(result["files"])
    assert "optimizer.safetensors" not in result["files"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result


def test_a_folder_that_is_no_checkpoint_is_one_error_line(tmp_path, fake_hub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(["--checkpoint", str(tmp_path), "--repo", "me/blobs"])
    assert exit_info.value.code == 2 and fake_hub == []
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "error" in json.loads(captured.out.strip().splitlines()[-1])
