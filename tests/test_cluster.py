import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core import cluster, metrics
from gan_core.config import ClusterConfig, DataConfig, RunConfig, TrainConfig
from gan_core.data import ImageDataset
from gan_core.latent import latent_dim, make_latent
from gan_core.train import train

from conftest import run_script


def tiny(out_dir, objective="iic", steps=4, **kw):
    return RunConfig(model=ClusterConfig(nz=8, ngf=8, ndf=8, k=3, overcluster=6, subheads=2, objective=objective),
                     data=DataConfig(source="shapes", num_images=32, image_size=32, channels=1),
                     train=TrainConfig(steps=steps, batch_size=8, log_every=2, out_dir=str(out_dir), device="cpu",
                                       precision="fp32", **kw))


def test_shapes_of_generator_and_heads():
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=20, subheads=3)
    g, d = cluster.build(cfg)
    z = make_latent(cfg, 5, torch.Generator().manual_seed(0), codes=torch.tensor([0, 1, 2, 3, 0]))
    assert z.shape == (5, latent_dim(cfg), 1, 1) == (5, 12, 1, 1)
    assert torch.equal(cluster.codes_of(z, cfg), torch.tensor([0, 1, 2, 3, 0]))
    x = g(z)
    assert x.shape == (5, 1, 32, 32)
    adv, clusters, over = d(x, logits=True, heads=True)
    assert adv.shape == (5,) and clusters.shape == (3, 5, 4) and over.shape == (3, 5, 20)
    assert torch.allclose(torch.sigmoid(d(x, logits=True)), d(x))
    ids, probs = cluster.predict_tensor(d, x)
    assert ids.shape == (5,) and torch.allclose(probs.sum(1), torch.ones(5)) and ids.max() < 4


@pytest.mark.parametrize("objective", ["iic", "none", "catgan"])
def test_each_objective_trains_and_checkpoints(tmp_path, objective):
    result = train(tiny(tmp_path / objective, objective))
    assert result["step"] == 4 and result["stopped"] is None
    assert all(v == v for v in result["metrics"].values())
    cfg, g, d, meta = ckpt.load_models(tmp_path / objective)
    assert cfg.model.kind == "cluster" and cfg.model.objective == objective
    if objective != "none":
        assert d.head_loss.abs().sum() > 0  # sub-head losses are tracked for selection
    assert g(make_latent(cfg.model, 2, None)).shape == (2, 1, 32, 32)


def test_iic_separates_two_obvious_groups(tmp_path):
    """Dark vs bright images with random small squares: the cluster head must split them (ACC 1)."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    labels = torch.arange(n) % 2
    images = torch.where(labels[:, None, None, None] == 1, 200, 40).expand(n, 1, 32, 32).clone()
    for i in range(n):
        y, x = torch.randint(0, 24, (2,), generator=gen).tolist()
        images[i, :, y: y + 8, x: x + 8] = 120
    ds = ImageDataset(images.to(torch.uint8), labels)
    cfg = tiny(tmp_path / "sep", "iic", steps=60)
    cfg.model.k, cfg.model.overcluster = 2, 4
    cfg.train.batch_size = 32
    cfg.train.lr = 1e-3
    train(cfg, dataset=ds)
    _, _, d, _ = ckpt.load_models(tmp_path / "sep")
    ids, _ = cluster.predict_tensor(d, ds.images)
    assert metrics.cluster_accuracy(labels, ids) == 1.0


def test_cluster_config_validation():
    from gan_core.config import validate

    bad = tiny("x")
    bad.model.objective = "kmeans"
    with pytest.raises(ValueError, match="objective"):
        validate(bad)
    bad = tiny("x")
    bad.model.cluster_names = ["a"]
    with pytest.raises(ValueError, match="cluster_names"):
        validate(bad)


def test_cli_trains_a_cluster_model_and_evaluates_it(tmp_path):
    out = tmp_path / "run"
    proc, result = run_script(["scripts/train.py", "model=cluster", "model.nz=8", "model.ngf=4", "model.ndf=4",
                               "model.k=10", "model.subheads=2", "data.num_images=32", "data.image_size=32",
                               "data.channels=1", "train.steps=2", "train.batch_size=4", "train.log_every=1",
                               "train.device=cpu", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 2
    proc, result = run_script(["scripts/evaluate_clustering.py", "--checkpoint", str(out), "--data.source", "shapes",
                               "--num-images", "40"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["method"].startswith("cluster head") and 0 <= result["acc"] <= 1 and result["k"] == 10
