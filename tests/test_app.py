import numpy as np
import pytest
import torch

import app
from gan_core import checkpoint as ckpt
from gan_core.config import DataConfig, DCGANConfig, RunConfig, TrainConfig
from gan_core.train import train


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4), data=DataConfig(num_images=16, image_size=32),
                    train=TrainConfig(steps=1, batch_size=4, out_dir=str(tmp_path / "run"), device="cpu"))
    train(cfg)
    ckpt.export(tmp_path / "run", tmp_path / "checkpoints" / "tiny")
    monkeypatch.setattr(app, "CHECKPOINTS", tmp_path / "checkpoints")
    monkeypatch.setenv("GANLAB_HUB_MODELS", "someone/model-a, someone/model-b")
    app.load.cache_clear()
    yield
    app.load.cache_clear()


def test_model_choices_list_local_folders_and_hub_ids(tiny_models):
    assert app.model_choices() == ["tiny", "someone/model-a", "someone/model-b"]


def test_sample_grid_handler(tiny_models):
    img = app.sample_grid("tiny", 3, 10)
    # 8 per row, 2 rows of 32x32 images with 2px padding
    assert img.size == (8 * 34 + 2, 2 * 34 + 2)
    again = app.sample_grid("tiny", 3, 10)
    assert np.asarray(img).tolist() == np.asarray(again).tolist()  # same seed, same images
    assert np.asarray(app.sample_grid("tiny", 4, 10)).tolist() != np.asarray(img).tolist()


def test_missing_model_is_a_user_error(tiny_models):
    import gradio as gr

    with pytest.raises(gr.Error):
        app.sample_grid("someone/not-there", 0, 1)


def test_app_builds(tiny_models):
    demo = app.build()
    assert demo is not None


def test_bundled_default_checkpoint_is_shipped_and_loads():
    folder = app.ROOT / "checkpoints" / app.DEFAULT_MODEL
    if not folder.exists():
        pytest.fail("the bundled default checkpoint is missing")
    for f in folder.glob("*.safetensors"):
        assert f.stat().st_size < 10 * 2**20, f
    assert (folder / "README.md").exists()
    cfg, g, d, meta = ckpt.load_models(folder)
    x = g(torch.randn(2, cfg.model.nz))
    assert x.shape == (2, 3, cfg.data.image_size, cfg.data.image_size) and torch.isfinite(x).all()
