import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core import kinds, metrics
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.data import ImageDataset
from gan_core.inference.cluster import ClusterModel
from gan_core.inference.loading import load_model
from gan_core.kinds import validate
from gan_core.models import cluster
from gan_core.models.cluster import ClusterConfig
from gan_core.training import train

from conftest import run_script


def tiny(out_dir, objective="iic", steps=4, input_transform="none", **kw):
    # (scan_min_updates: 32 images are one batch, and the default's 500 passes would only slow the tests;
    # input_transform: the default, auto, spends seconds choosing; its own tests below ask for it)
    return RunConfig(model=ClusterConfig(nz=8, ngf=8, ndf=8, k=3, overcluster=6, subheads=2, objective=objective,
                                         scan_min_updates=20, input_transform=input_transform),
                     data=DataConfig(source="shapes", num_images=32, image_size=32, channels=1),
                     train=TrainConfig(steps=steps, batch_size=8, log_every=2, out_dir=str(out_dir), device="cpu",
                                       precision="fp32", **kw))


KIND = kinds.KINDS["cluster"]


def make_latent(model_cfg, n, gen, codes=None):
    """Latents of the cluster kind: noise, then the one-hot code."""
    return KIND.latent(model_cfg, n, gen, "cpu", codes)


def load_cluster_model(path, ema=True) -> ClusterModel:
    model = load_model(path, ema=ema)
    assert isinstance(model, ClusterModel)
    return model


def test_shapes_of_generator_and_heads():
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=20, subheads=3)
    g, d = cluster.build(cfg)
    z = make_latent(cfg, 5, torch.Generator().manual_seed(0), codes=torch.tensor([0, 1, 2, 3, 0]))
    assert z.shape == (5, cfg.nz + KIND.num_codes(cfg), 1, 1) == (5, 12, 1, 1)
    assert torch.equal(cluster.codes_of(z, cfg), torch.tensor([0, 1, 2, 3, 0]))
    x = g(z)
    assert x.shape == (5, 1, 32, 32)
    adv, clusters, over = d(x, logits=True, heads=True)
    assert adv.shape == (5,) and clusters.shape == (3, 5, 4) and over.shape == (3, 5, 20)
    assert torch.allclose(torch.sigmoid(d(x, logits=True)), d(x))
    ids, probs = cluster.predict_tensor(d, x)
    assert ids.shape == (5,) and torch.allclose(probs.sum(1), torch.ones(5)) and ids.max() < 4


def test_prediction_views_span_the_training_crop_range():
    assert cluster.view_sides(ClusterConfig(aug_scale_min=0.64, predict_views=3)) == pytest.approx([1.0, 0.9, 0.8])
    assert cluster.view_sides(ClusterConfig(aug_scale_min=0.64, predict_views=1)) == [1.0]
    assert cluster.view_sides(ClusterConfig(aug_scale_min=1.0, aug_scale_max=1.5)) == [1.0]
    # A horizontal ramp equal to each pixel centre's x coordinate in [-1, 1]: the centred crop of
    # side 0.5, resampled bilinearly (exact on a linear function), is the same ramp at half the slope.
    u = (torch.arange(8) * 2 + 1) / 8 - 1
    x = u.expand(1, 1, 8, 8).clone()
    assert torch.equal(cluster.centre_crop(x, 1.0), x)
    assert torch.allclose(cluster.centre_crop(x, 0.5), x / 2, atol=1e-6)
    # The averaged prediction is the mean of the single-view ones.
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=20, subheads=2)
    _, d = cluster.build(cfg)
    imgs = torch.rand(6, 1, 32, 32) * 2 - 1
    p1 = cluster.predict_tensor(d, imgs, sides=[1.0])[1]
    p2 = cluster.predict_tensor(d, imgs, sides=[0.8])[1]
    assert torch.allclose(cluster.predict_tensor(d, imgs, sides=[1.0, 0.8])[1], (p1 + p2) / 2, atol=1e-6)


@pytest.mark.parametrize("objective", ["iic", "none", "catgan"])
def test_each_objective_trains_and_checkpoints(tmp_path, objective):
    result = train(tiny(tmp_path / objective, objective))
    assert result["step"] == 4 and result["stopped"] is None
    assert all(v == v for v in result["metrics"].values())
    model = load_cluster_model(tmp_path / objective)
    cfg, g, d = model.cfg, model.g, model.d
    assert cfg.model.kind == "cluster" and cfg.model.objective == objective
    if objective != "none":
        assert d.head_loss.abs().sum() > 0  # sub-head losses are tracked for selection
    assert g(make_latent(cfg.model, 2, None)).shape == (2, 1, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("head_fit", ["iic", "scan"])
def test_iic_separates_two_obvious_groups(tmp_path, head_fit):
    """Dark vs bright images with random small squares: the cluster head (IIC's, or the SCAN head fitted
    on D's features after the steps) must split them (ACC 1)."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    labels = torch.arange(n) % 2
    images = torch.where(labels[:, None, None, None] == 1, 200, 40).expand(n, 1, 32, 32).clone()
    for i in range(n):
        y, x = torch.randint(0, 24, (2,), generator=gen).tolist()
        images[i, :, y: y + 8, x: x + 8] = 120
    ds = ImageDataset(images.to(torch.uint8), labels)
    cfg = tiny(tmp_path / "sep", "iic", steps=60)
    cfg.model.k, cfg.model.overcluster, cfg.model.head_fit = 2, 4, head_fit
    cfg.train.batch_size = 32
    cfg.train.lr = 1e-3
    train(cfg, dataset=ds)
    d = load_cluster_model(tmp_path / "sep").d
    assert d.uses_fitted_head() == (head_fit == "scan")
    ids, _ = cluster.predict_tensor(d, ds.images)
    assert metrics.cluster_accuracy(labels, ids) == 1.0


def test_cluster_config_validation():
    bad = tiny("x")
    bad.model.objective = "kmeans"
    with pytest.raises(ValueError, match="objective"):
        validate(bad)
    bad = tiny("x")
    bad.model.cluster_names = ["a"]
    with pytest.raises(ValueError, match="cluster_names"):
        validate(bad)


@pytest.mark.slow
def test_cli_trains_a_cluster_model_and_evaluates_it(tmp_path):
    out = tmp_path / "run"
    proc, result = run_script(["scripts/train.py", "model=cluster", "model.nz=8", "model.ngf=4", "model.ndf=4",
                               "model.k=10", "model.subheads=2", "data.num_images=32", "data.image_size=32",
                               "data.channels=1", "train.steps=2", "train.batch_size=4", "train.log_every=1",
                               "train.device=cpu", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 2 and result["scan"]["images"] == 32
    # the second stage shows its parts as bars and its choice as a line
    assert "SCAN heads" in proc.stderr and "SCAN features" in proc.stderr and "SCAN: kept head" in proc.stderr
    proc, result = run_script(["scripts/evaluate_clustering.py", "--checkpoint", str(out), "--data.source", "shapes",
                               "--num-images", "40"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["method"].startswith("SCAN head") and 0 <= result["acc"] <= 1 and result["k"] == 10


def test_iic_repeats_and_augmentation_settings_train(tmp_path):
    cfg = tiny(tmp_path / "rep", "iic")
    cfg.model.iic_repeats, cfg.model.aug_rotate_deg, cfg.model.aug_colour = 3, 180.0, "remap"
    result = train(cfg)
    assert result["step"] == 4 and all(v == v for v in result["metrics"].values())

    for field, value in (("iic_repeats", 0), ("aug_colour", "sepia"), ("aug_rotate_deg", 400.0),
                         ("code_weight_d", float("nan")), ("iic_weight", -1.0)):
        bad = tiny("x")
        setattr(bad.model, field, value)
        with pytest.raises(ValueError, match=field):
            validate(bad)


def test_iic_repeats_pair_each_view_with_its_own_image(monkeypatch, tmp_path):
    """With r repeats the IIC joint sees r * N pairs, and view j of image i pairs with image i."""
    seen = []
    real_iic = cluster.iic_loss

    def spy(a, b):
        seen.append((a.detach().clone(), b.detach().clone()))
        return real_iic(a, b)

    monkeypatch.setattr(cluster, "augment", lambda x, gen=None, cfg=None: x.clone())  # views == images
    monkeypatch.setattr(cluster, "iic_loss", spy)
    cfg = tiny(tmp_path / "pairs", "iic", steps=1)
    cfg.model.iic_repeats = 3
    train(cfg)
    a, b = seen[0]
    assert a.shape[0] == b.shape[0] == 3 * cfg.train.batch_size
    assert torch.allclose(a, b, atol=1e-5)  # identical views -> identical logits, row by row


def test_cluster_model_keeps_an_ema_discriminator_for_inference(tmp_path):
    cfg = tiny(tmp_path / "ema", "iic", steps=6, ema_decay=0.9)
    train(cfg)
    folder = ckpt.latest_checkpoint(tmp_path / "ema")
    assert (folder / "discriminator_ema.safetensors").exists()
    d_ema = load_cluster_model(folder).d
    d_raw = load_cluster_model(folder, ema=False).d
    from safetensors.torch import load_file

    ema_w = load_file(str(folder / "discriminator_ema.safetensors"))
    name = "cluster.weight"
    assert torch.equal(d_ema.state_dict()[name], ema_w[name])
    assert not torch.equal(d_ema.state_dict()[name], d_raw.state_dict()[name])
    # resuming continues the EMA from the file: 6 + 2 steps == 8 straight, bitwise
    cfg.train.steps, cfg.train.resume = 8, True
    assert train(cfg)["step"] == 8
    straight = tiny(tmp_path / "straight", "iic", steps=8, ema_decay=0.9)
    train(straight)
    a = load_file(str(ckpt.latest_checkpoint(tmp_path / "ema") / "discriminator_ema.safetensors"))
    b = load_file(str(ckpt.latest_checkpoint(tmp_path / "straight") / "discriminator_ema.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    train(tiny(out, "iic", steps=4))
    return ckpt.latest_checkpoint(out)


def test_predict_accepts_any_image_kind_and_size(trained, tmp_path):
    import numpy as np
    from PIL import Image

    model = load_cluster_model(trained)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    as_uint8 = torch.from_numpy(arr)[None, None]
    routes = [
        Image.fromarray(arr),  # PIL, gray
        Image.fromarray(np.stack([arr] * 3, -1)),  # PIL, RGB -> converted to the model's 1 channel
        arr,  # numpy (H, W) uint8
        arr[:, :, None].astype(np.float32) / 255,  # numpy (H, W, 1) float in [0, 1]
        as_uint8[0],  # tensor (C, H, W) uint8
        as_uint8.float() / 127.5 - 1,  # tensor (N, C, H, W) in [-1, 1]
    ]
    preds = [model.predict(r) for r in routes]
    for p in preds:
        assert p.ids.shape == (1,) and p.probs.shape == (1, 3)
        assert torch.allclose(p.probs.sum(1), torch.ones(1), atol=1e-5)
        assert torch.allclose(p.probs, preds[0].probs, atol=2e-2)  # the same picture, however it came
    more = [
        torch.from_numpy(arr),  # tensor (H, W) uint8
        torch.from_numpy(arr).float()[None] / 255,  # tensor in [0, 1], with float_range
        arr.astype(np.int64),  # other integer dtypes, 0..255
        arr.astype(np.uint16) * 257,  # 16-bit
        np.stack([arr] * 3)[None],  # numpy (1, C, H, W)
    ]
    ranges = [None, (0.0, 1.0), None, None, None]
    for r, fr in zip(more, ranges):
        p = model.predict(r, float_range=fr)
        assert p.ids.shape == (1,) and torch.allclose(p.probs, preds[0].probs, atol=2e-2)
    batches = {  # several images in one array, and a list mixing kinds
        "numpy (N, H, W)": np.stack([arr] * 4),
        "numpy (N, H, W, C)": np.stack([np.stack([arr] * 3, -1)] * 4),
        "numpy (N, C, H, W)": np.stack([arr[None]] * 4),
        "tensor to resize": torch.from_numpy(np.stack([arr] * 4)).float()[:, None].repeat(1, 3, 2, 2) / 127.5 - 1,
        "list": [np.stack([arr] * 2), Image.fromarray(arr), torch.from_numpy(arr)],
    }
    for name, batch in batches.items():
        p = model.predict(batch)
        n = 4
        assert p.ids.shape == (n,), name
        if name != "tensor to resize":  # that one was upscaled 2x, then resized back: close, not equal
            assert torch.allclose(p.probs, preds[0].probs.expand(n, -1), atol=2e-2), name
    png = tmp_path / "x.png"
    Image.fromarray(arr).save(png)
    for r in (str(png), png.read_bytes()):
        assert torch.allclose(model.predict(r).probs, preds[0].probs, atol=1e-4)
    with pytest.raises(ValueError, match="0..255"):
        model.predict(arr.astype(np.int64) * 3)
    big = model.predict([Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)), Image.new("L", (5, 9))])
    assert big.ids.shape == (2,) and set(big.labels(0)) == set(model.names)
    assert [name for name, _ in big.top(1, 3)] == sorted(model.names, key=lambda n: -big.labels(1)[n])
    assert model.predict([]).probs.shape == (0, 3)


def test_cluster_names_rename_and_save(trained, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    model = load_cluster_model(folder)
    assert model.names == ["cluster 0", "cluster 1", "cluster 2"]
    assert model.rename({1: "  round   things "}) == ["cluster 0", "round things", "cluster 2"]
    with pytest.raises(ValueError, match="differ"):
        model.rename({2: "round things"})
    with pytest.raises(ValueError, match="no cluster"):
        model.rename({7: "x"})
    with pytest.raises(ValueError, match="3 names"):
        model.rename(["a"])
    model.save_names()
    assert (folder / "config.json").stat().st_mode & 0o777 == 0o644
    assert not list(folder.glob(".config.json.*"))  # no temporary file left behind
    again = load_cluster_model(folder)
    assert again.names == ["cluster 0", "round things", "cluster 2"]
    assert again.predict(torch.zeros(1, 1, 32, 32)).names == again.names


def test_exemplars_are_the_most_confident_members(trained):
    model = load_cluster_model(trained)
    pool = model.training_images()
    assert pool.shape == (32, 1, 32, 32)  # the training data named in the config (built-in shapes)
    probs = model.predict(pool).probs
    k = int(probs.argmax(1).bincount(minlength=3).argmax())  # a non-empty cluster
    ex = model.exemplars(k, n=4)
    assert 1 <= len(ex.real) <= 4 and ex.fake.shape == (4, 1, 32, 32)
    assert (ex.confidence[:-1] >= ex.confidence[1:]).all()
    again = model.predict(ex.real)
    assert (again.ids == k).all()
    members = probs[probs.argmax(1) == k, k]
    assert torch.allclose(ex.confidence[0], members.max())
    with pytest.raises(ValueError, match="no cluster"):
        model.exemplars(5)


def test_assign_gives_a_row_per_file_and_marks_the_unreadable(trained, tmp_path):
    """ClusterModel.assign: what Classify and scripts/classify.py write, one row per named file."""
    import io

    from PIL import Image

    from gan_core.inference.cluster import UNREADABLE, UNSURE

    model = load_cluster_model(trained)
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(3)]
    pngs = []
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        pngs.append(buf.getvalue())
    items = [("a.png", pngs[0]), ("broken.png", b"not an image"), ("b.png", pngs[1]), ("c.png", lambda: pngs[2])]
    result = model.assign(items)
    assert result.images == 3 and result.unreadable == 1
    assert [row["file"] for row in result.rows] == ["a.png", "broken.png", "b.png", "c.png"]
    assert result.rows[1] == {"file": "broken.png", "cluster": UNREADABLE, "confidence": 0.0, "top 3": ""}
    pred = model.predict(np.stack(arrays))
    for row, i in zip([result.rows[0], result.rows[2], result.rows[3]], range(3)):
        top = pred.top(i, 3)
        # noise is unlike any training image: listed as unsure, with its best guesses kept in the top 3
        assert row["cluster"] == (UNSURE if pred.unsure(i) else top[0][0]) and row["confidence"] == round(top[0][1], 4)
    assert set(model.names) <= set(result.counts) and sum(result.counts.values()) == 3
    out = io.StringIO()
    result.write_csv(out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "file,cluster,confidence,top 3" and len(lines) == 5
    empty = model.assign([("x.png", b"")])
    assert empty.images == 0 and empty.unreadable == 1 and sum(empty.counts.values()) == 0


def test_code_weight_d_zero_leaves_the_heads_to_iic(tmp_path):
    """Without IIC and with code_weight_d = 0 nothing trains D's cluster heads; with 1 the code term does."""
    heads = {}
    for w in (0.0, 1.0):
        cfg = tiny(tmp_path / f"w{w}", "none", steps=3)
        cfg.model.code_weight_d = w
        train(cfg)
        d = load_cluster_model(tmp_path / f"w{w}").d
        heads[w] = d.cluster.weight.detach().clone()
    torch.manual_seed(0)
    _, d0 = cluster.build(tiny("x").model)
    assert torch.equal(heads[0.0], d0.cluster.weight)
    assert not torch.equal(heads[1.0], d0.cluster.weight)


def test_heads_can_read_a_hidden_layer():
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=12, subheads=2, head_hidden=16)
    g, d = cluster.build(cfg)
    assert d.cluster.in_features == 16 and d.overcluster.in_features == 16
    _, clusters, over = d(g(make_latent(cfg, 3, None)), logits=True, heads=True)
    assert clusters.shape == (2, 3, 4) and over.shape == (2, 3, 12)
    assert isinstance(cluster.build(ClusterConfig(nz=8, ngf=8, ndf=8))[1].hidden, torch.nn.Identity)


@pytest.mark.slow
def test_evaluate_clustering_on_a_class_folder_and_idx_files(tmp_path):
    """Any labelled source: a folder with class subfolders and IDX files (test split), for the cluster
    head and for D features + k-means; the last line has the documented keys."""
    import gzip

    import numpy as np
    from PIL import Image

    out = tmp_path / "run"
    train(tiny(out, "iic", steps=2))
    rng = np.random.default_rng(0)
    for cls, value in (("dark", 30), ("light", 220)):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(6):
            arr = np.full((40, 30), value, np.uint8) + rng.integers(0, 20, (40, 30), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "folder" / cls / f"{i}.png")
    idx = tmp_path / "idx"
    idx.mkdir()
    images = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    with gzip.open(idx / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([9, 28, 28], ">i4").tobytes() + images.tobytes())
    with gzip.open(idx / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + np.array([9], ">i4").tobytes() + (np.arange(9, dtype=np.uint8) % 3).tobytes())
    runs = [(["--data.source", "folder", "--data.path", str(tmp_path / "folder")], 12, 2, "SCAN head"),
            (["--data.source", "idx", "--data.path", str(idx), "--split", "test"], 9, 3, "SCAN head"),
            (["--data.source", "idx", "--data.path", str(idx), "--split", "test", "--features"], 9, 3,
             "discriminator features")]
    for args, n, k, method in runs:
        proc, result = run_script(["scripts/evaluate_clustering.py", "--checkpoint", str(out), *args])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert {"acc", "nmi", "ari", "n", "k", "kmeans_acc", "kmeans_nmi"} <= set(result)
        assert result["n"] == n and result["k"] == k and result["method"].startswith(method)
        assert 0 <= result["acc"] <= 1 and 0 <= result["kmeans_acc"] <= 1


def _rect(box, fg, bg, size=64):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), bg)
    ImageDraw.Draw(img).rectangle(box, fill=fg)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 127.5 - 1


def _square(cx, cy, half, fg, bg, size=64):
    return _rect([cx - half, cy - half, cx + half, cy + half], fg, bg, size)


def test_object_mask_ignores_colour_polarity_position_and_size():
    a = cluster.object_mask(_square(20, 20, 8, (220, 30, 30), (20, 20, 200)), size=32)
    b = cluster.object_mask(_square(40, 36, 14, (0, 0, 0), (250, 250, 250)), size=32)  # dark on light, bigger, elsewhere
    assert a.shape == (1, 1, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert (a - b).abs().mean() < 0.05, (a - b).abs().mean()
    # ... but not the shape: a bar is far from the square
    bar = _rect([28, 8, 36, 56], (255, 255, 255), (0, 0, 0))
    assert (a - cluster.object_mask(bar, size=32)).abs().mean() > 0.1
    # centred: the mask's centre of mass is the image centre
    m = (a[0, 0] + 1) / 2
    coords = torch.arange(32) + 0.5
    assert abs(float((m.sum(0) * coords).sum() / m.sum()) - 16) < 0.5
    assert abs(float((m.sum(1) * coords).sum() / m.sum()) - 16) < 0.5


def test_mask_discriminator_reads_one_channel_at_mask_size():
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=8, subheads=2, image_size=64, channels=3,
                        input_transform="mask", mask_size=32)
    g, d = cluster.build(cfg)
    assert d.trunk[0].in_channels == 1
    x = g(make_latent(cfg, 3, torch.Generator().manual_seed(0)))
    assert x.shape == (3, 3, 64, 64)
    adv, clusters, _ = d(x, logits=True, heads=True)
    assert adv.shape == (3,) and clusters.shape == (2, 3, 4)
    assert cluster.view_sides(cfg) == [1.0]
    with pytest.raises(ValueError, match="mask_size"):
        validate(RunConfig(model=ClusterConfig(input_transform="mask", mask_size=48)))
    with pytest.raises(ValueError, match="input_transform"):
        validate(RunConfig(model=ClusterConfig(input_transform="edges")))


def test_polar_mask_turns_a_rotation_into_a_roll_of_the_rows():
    from gan_core.shapes import render_shapes

    x = render_shapes(3, size=64, seed=3)[0].float() / 127.5 - 1
    p = cluster.polar_mask(x, size=32)
    assert p.shape == (3, 1, 32, 32) and p.min() >= -1 and p.max() <= 1
    turned = cluster.polar_mask(torch.rot90(x, -1, (2, 3)), size=32)  # a quarter turn clockwise
    assert (torch.roll(p, 8, 2) - turned).abs().max() < 1e-4  # = 8 of 32 rows
    assert (p - turned).abs().mean() > 0.05  # (the shapes are not all round)
    # A square's row profile has 4 bumps: its corners lie further out than its edge midpoints.
    sq = cluster.polar_mask(_square(32, 32, 14, (255, 255, 255), (0, 0, 0)), size=32)[0, 0]
    extent = (sq > 0).sum(1).float()  # radial extent per angle
    assert extent[4] > extent[0] + 2 and extent[12] > extent[8] + 2  # corners (45, 135 degrees) vs edges


def test_angle_circular_convs_wrap_around_and_pooled_heads_ignore_rolls():
    cfg = ClusterConfig(nz=8, ngf=8, ndf=8, k=4, overcluster=8, subheads=2, image_size=32, channels=3,
                        input_transform="polar", mask_size=32, head_pool="angle")
    _, d = cluster.build(cfg)
    d.eval()
    assert isinstance(d.trunk[0], cluster.AngleCircularConv) and d.trunk[0].conv.in_channels == 1
    p = torch.randn(2, 1, 32, 32)
    h, h_rolled = d.trunk(p), d.trunk(torch.roll(p, 8, 2))  # 3 stride-2 convs: 8 rows in = 1 row out
    assert torch.allclose(torch.roll(h, 1, 2), h_rolled, atol=1e-5)
    f = d.hidden(h.mean(2).flatten(1))
    assert torch.allclose(d.cluster(f), d.cluster(d.hidden(h_rolled.mean(2).flatten(1))), atol=1e-5)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    adv, clusters, over = d(x, logits=True, heads=True)
    assert adv.shape == (3,) and clusters.shape == (2, 3, 4) and over.shape == (2, 3, 8)
    with pytest.raises(ValueError, match="head_pool"):
        validate(RunConfig(model=ClusterConfig(head_pool="angle")))  # angle pooling needs the polar input


def test_nt_xent_on_hand_made_views():
    from gan_core.losses import nt_xent

    z = torch.eye(8) * 5  # 8 well-separated directions
    assert float(nt_xent(z, z * 2, temperature=0.1)) < 1e-3  # every partner found with certainty
    same = torch.ones(8, 4)  # all views alike: nothing to find a partner by
    assert abs(float(nt_xent(same, same)) - float(torch.log(torch.tensor(15.0)))) < 1e-4
    swapped = float(nt_xent(z, z.roll(1, 0), temperature=0.1))  # every partner is the wrong view
    assert swapped > 10


def test_the_contrastive_term_trains_a_projection_and_loads(tmp_path):
    cfg = tiny(tmp_path / "c", "iic", steps=3)
    cfg.model.contrastive_weight = 1.0
    result = train(cfg)
    assert 0 < result["metrics"]["contrastive"] < 10
    model = load_cluster_model(tmp_path / "c")
    assert model.d.project is not None and model.d(torch.zeros(2, 1, 32, 32), project=True).shape == (2, 64)
    assert len(model.predict(torch.zeros(2, 1, 32, 32)).probs) == 2
    # off (the default, and every checkpoint saved before the option): no projection head, as before
    _, d = cluster.build(tiny("x").model)
    assert d.project is None and not any(k.startswith("project") for k in d.state_dict())
    bad = tiny("x")
    bad.model.contrastive_temperature = 0.0
    with pytest.raises(ValueError, match="contrastive_temperature"):
        validate(bad)


def test_scan_and_self_label_losses_on_hand_made_cases():
    from gan_core.losses import nearest_in_batch, scan_loss, self_label_loss

    confident = torch.eye(4) * 20  # four images, each certain of its own cluster
    # neighbours in the same cluster: no consistency cost; entropy of a balanced batch is log 4
    assert abs(float(scan_loss(confident, confident, entropy_weight=1.0)) + float(torch.log(torch.tensor(4.0)))) < 1e-3
    # neighbours in other clusters cost a lot
    assert float(scan_loss(confident, confident.roll(1, 0), entropy_weight=0.0)) > 10
    # everything in one cluster: consistent but no entropy; worse than the balanced split
    one = torch.zeros(4, 4)
    one[:, 0] = 20
    assert float(scan_loss(one, one, entropy_weight=1.0)) > float(scan_loss(confident, confident, entropy_weight=1.0))
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert nearest_in_batch(z).tolist() == [1, 0, 3, 2]
    # self-labelling: confident weak views teach the strong ones; unconfident rows are ignored
    weak = torch.tensor([[20.0, 0.0], [20.0, 0.0], [20.0, 0.0], [0.0, 20.0], [0.1, 0.0]])
    right = torch.tensor([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, 9.0]])
    wrong = right.flip(1)
    assert float(self_label_loss(weak, right)) < 0.01 < float(self_label_loss(weak, wrong))
    assert float(self_label_loss(torch.zeros(3, 2), torch.randn(3, 2))) == 0.0  # nothing confident
    # class-balanced: the one image of cluster 1 weighs as much as the three of cluster 0
    only_minority_wrong = right.clone()
    only_minority_wrong[3] = torch.tensor([5.0, 0.0])
    only_majority_one_wrong = right.clone()
    only_majority_one_wrong[0] = torch.tensor([0.0, 5.0])
    assert float(self_label_loss(weak, only_minority_wrong)) > 2 * float(self_label_loss(weak, only_majority_one_wrong))


def test_scan_and_self_labelling_train_in_the_step(tmp_path):
    cfg = tiny(tmp_path / "s", "iic", steps=3)
    cfg.model.contrastive_weight, cfg.model.scan_weight, cfg.model.self_label_weight = 1.0, 1.0, 1.0
    cfg.model.self_label_threshold = 0.0  # every prediction counts as confident in a 3-step run
    result = train(cfg)
    assert {"contrastive", "scan", "self_label"} <= set(result["metrics"])
    assert all(v == v for v in result["metrics"].values()) and result["metrics"]["self_label"] > 0
    bad = tiny("x")
    bad.model.scan_weight = 1.0
    with pytest.raises(ValueError, match="contrastive_weight"):
        validate(bad)
    bad = tiny("x", "none")
    bad.model.self_label_weight = 1.0
    with pytest.raises(ValueError, match="objective=iic"):
        validate(bad)


# ---------------------------------------------------------------- the second stage: a SCAN head on D's frozen features

def blobs_in_feature_space(n_per=40, k=3, width=32, seed=0):
    """Images that are only ids, and a `features` function giving each id its group's centre plus noise
    (more noise for an augmented view): k groups a head should recover exactly."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, width, generator=gen) * 4
    labels = torch.arange(n_per * k) % k
    base = centres[labels] + torch.randn(len(labels), width, generator=gen)
    images = torch.arange(len(labels), dtype=torch.int64)[:, None, None, None]  # the id, as a 1x1 "image"

    def features(batch, augmented):
        ids = batch.flatten()
        return base[ids] + (torch.randn(len(ids), width, generator=gen) * 0.5 if augmented else 0)
    return images, labels, features, base


def test_scan_fit_recovers_groups_in_feature_space():
    from gan_core import scan

    images, labels, features, base = blobs_in_feature_space()
    head = scan.FittedHead(32, 16, 32, 3)
    assert not bool(head.ready)
    report = scan.fit(features, images, 3, scan.ScanSettings(heads=3, epochs=20, neighbours=5, views=2, batch=64), head)
    assert bool(head.ready) and report["heads"] == 3 and report["images"] == 120 and report["dims"] == 16
    assert report["loss_range"][0] == report["loss"] <= report["loss_range"][1]  # the lowest-loss head is kept
    with torch.no_grad():
        ids = head(base).argmax(1)
    assert metrics.cluster_accuracy(labels, ids) == 1.0
    head.train()
    assert not head.training and not head.mlp[1].training  # the fitted BatchNorm statistics stay in use


def test_scan_fit_pads_the_projection_when_there_are_few_images():
    from gan_core import scan

    images, _, features, _ = blobs_in_feature_space(n_per=3, k=2, width=8)
    head = scan.FittedHead(8, 16, 8, 2)
    report = scan.fit(features, images, 2, scan.ScanSettings(heads=1, epochs=2, neighbours=20, views=1), head)
    assert report["dims"] == 16 and report["neighbours"] == 5  # 6 images: 5 PCA directions, then zero rows
    assert torch.all(head.project[5:] == 0) and torch.any(head.project[:5] != 0)
    with pytest.raises(ValueError, match="at least 2 images"):
        scan.fit(features, images[:1], 2, scan.ScanSettings(), scan.FittedHead(8, 4, 8, 2))


def test_small_sets_get_more_scan_epochs_so_the_heads_take_min_updates_steps(monkeypatch):
    from gan_core import scan

    s = scan.ScanSettings(epochs=15, min_updates=100, batch=64)
    assert scan.epochs_for(60_000, 64, s) == 15  # large sets: the epochs decide
    assert scan.epochs_for(130, 64, s) == 50  # 2 full batches a pass: 50 passes for 100 steps
    assert scan.epochs_for(10, 10, scan.ScanSettings(epochs=3, min_updates=0)) == 3
    images, _, features, _ = blobs_in_feature_space()  # 120 images
    steps = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), real_step(self, *a, **k))[1])
    report = scan.fit(features, images, 3, scan.ScanSettings(heads=1, epochs=2, min_updates=30, neighbours=5, views=1,
                                                             batch=50), scan.FittedHead(32, 8, 16, 3))
    assert report["epochs"] == 15 and len(steps) == 30  # 2 full batches of 50 a pass


def test_nearest_neighbours_are_the_closest_other_rows():
    from gan_core.scan import nearest_neighbours

    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.05]])
    nb = nearest_neighbours(z, 2, block=2)
    assert nb[:, 0].tolist() == [1, 0, 3, 2, 2]
    assert all(i not in row for i, row in enumerate(nb.tolist()))


def test_a_finished_run_predicts_with_its_scan_head(tmp_path):
    cfg = tiny(tmp_path / "scan", "iic", steps=3)
    result = train(cfg)
    assert result["scan"]["heads"] == cfg.model.scan_heads and 0 < result["scan"]["code_agreement"] <= 1
    folder = ckpt.latest_checkpoint(tmp_path / "scan")
    assert ckpt.read_meta(folder)["scan"] == result["scan"]
    model = load_cluster_model(folder)
    d = model.d
    assert d.uses_fitted_head() and d.head_name().startswith("SCAN")
    # two heads were fitted, on D's trunk and on its input layer; the lower SCAN loss predicts
    scan = result["scan"]
    layer = "input" if scan["input_layer"]["loss"] < scan["loss"] else "trunk"
    assert scan["layer"] == layer == d.fitted_head() and bool(d.fitted.ready) == (layer == "trunk")
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        kept = d.fitted(d.features(x).flatten(1)) if layer == "trunk" else d.fitted_input(d.input_layer(x))
        assert torch.equal(d.cluster_logits(x), kept)
        assert not torch.equal(d.cluster_logits(x), d(x, logits=True, heads=True)[1][d.best_head()])
    # both discriminators carry the same heads, so a later resume (or the live D) agrees with inference
    live = load_cluster_model(folder, ema=False).d
    for head in ("fitted", "fitted_input"):
        ours, theirs = getattr(live, head).state_dict(), getattr(d, head).state_dict()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours)


@pytest.mark.parametrize("input_wins", [True, False])
def test_the_scan_stage_keeps_the_head_with_the_lower_loss(monkeypatch, tmp_path, input_wins):
    """The stage fits a head on D's trunk and one on its input layer; the one with the lower SCAN loss
    predicts (and takes the generator's code numbering), the other is set aside."""
    real_fit = cluster.scan_fit
    widths = []

    def fit(features, images, k, settings, head, *args, **kw):
        report = real_fit(features, images, k, settings, head, *args, **kw)
        widths.append(head.mean.shape[0])
        on_input = head.mean.shape[0] == 32 * 32  # the pixels' width; the trunk's is 8 * 4 * 16
        report["loss"] = -20.0 if on_input == input_wins else -10.0
        return report

    monkeypatch.setattr(cluster, "scan_fit", fit)
    result = train(tiny(tmp_path / "r", "iic", steps=2))
    assert widths == [8 * 4 * 16, 32 * 32]
    d = load_cluster_model(tmp_path / "r").d
    layer = "input" if input_wins else "trunk"
    assert result["scan"]["layer"] == layer == d.fitted_head()
    assert d.head_name() == ("SCAN head on D's input layer (the pixels)" if input_wins else "SCAN head on D's features")
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        kept = d.fitted_input(d.input_layer(x)) if input_wins else d.fitted(d.features(x).flatten(1))
        assert torch.equal(d.cluster_logits(x), kept)


def test_a_failing_input_layer_head_keeps_the_trunks_head(monkeypatch, tmp_path):
    real_fit, calls = cluster.scan_fit, []

    def fit(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # the input layer's head
            raise MemoryError("no room for the pixels")
        return real_fit(*args, **kw)

    monkeypatch.setattr(cluster, "scan_fit", fit)
    lines = []
    result = train(tiny(tmp_path / "f", "iic", steps=2), on_log=lines.append)
    assert result["scan"]["layer"] == "trunk" and "no room" in result["scan"]["input_layer"]["error"]
    assert any("input layer's head failed" in line for line in lines)
    assert load_cluster_model(tmp_path / "f").d.fitted_head() == "trunk"


def test_fp16_export_keeps_the_scan_heads_feature_means_in_fp32():
    d = cluster.ClusterDiscriminator(ClusterConfig(nz=8, ngf=8, ndf=8, k=3, image_size=32, channels=1,
                                                   input_transform="mask"))
    d.fitted_input.mean.fill_(-0.99971)  # a mask's near-constant background: -1.0 in fp16
    tensors = ckpt._module_tensors(d, torch.float16)
    assert tensors["fitted_input.mean"].dtype == torch.float32 and tensors["fitted.mean"].dtype == torch.float32
    assert torch.equal(tensors["fitted_input.mean"], d.fitted_input.mean)
    assert tensors["fitted_input.project"].dtype == torch.float16 and tensors["trunk.0.weight"].dtype == torch.float16


def test_ddp_expects_unused_parameters_while_a_scan_head_waits_for_its_fit():
    assert cluster.unused_parameters(ClusterConfig())  # head_fit=scan: the SCAN heads get no gradient
    assert not cluster.unused_parameters(ClusterConfig(head_fit="iic"))


def test_without_the_input_layer_head_the_trunks_head_predicts(tmp_path):
    cfg = tiny(tmp_path / "t", "iic", steps=2)
    cfg.model.scan_input_head = False
    result = train(cfg)
    d = load_cluster_model(tmp_path / "t").d
    assert d.fitted_input is None and d.fitted_head() == "trunk" and "layer" not in result["scan"]


def test_a_stopped_run_keeps_predicting_with_its_iic_head(tmp_path):
    result = train(tiny(tmp_path / "stop", "iic", steps=50), should_stop=lambda: True)
    assert result["stopped"] == "stopped by request" and "scan" not in result
    d = load_cluster_model(tmp_path / "stop").d
    assert d.fitted is not None and not d.uses_fitted_head() and d.head_name().startswith("cluster head")


def test_iic_head_fit_builds_no_scan_head(tmp_path):
    cfg = tiny(tmp_path / "iic", "iic", steps=2)
    cfg.model.head_fit = "iic"
    result = train(cfg)
    assert "scan" not in result and "scan" not in ckpt.read_meta(ckpt.latest_checkpoint(tmp_path / "iic"))
    assert load_cluster_model(tmp_path / "iic").d.fitted is None
    bad = tiny("x")
    bad.model.head_fit = "kmeans"
    with pytest.raises(ValueError, match="head_fit"):
        validate(bad)


def test_checkpoints_from_before_the_scan_head_read_as_iic(tmp_path):
    cfg = tiny(tmp_path / "old", "iic", steps=2)
    cfg.model.head_fit = "iic"
    train(cfg)
    folder = ckpt.latest_checkpoint(tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["model"]["head_fit"]  # as written before the field existed
    (folder / "config.json").write_text(json.dumps(meta))
    assert kinds.read_config(folder)[0].model.head_fit == "iic"
    assert load_cluster_model(folder).d.fitted is None
    assert kinds.config_from_dict(meta["config"]).model.head_fit == "scan"  # a new run gets today's default


def test_checkpoints_from_before_the_input_layer_head_load_without_it(tmp_path):
    cfg = tiny(tmp_path / "old", "iic", steps=2)
    cfg.model.scan_input_head = False
    train(cfg)
    folder = ckpt.latest_checkpoint(tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["model"]["scan_input_head"]  # as written before the field existed
    (folder / "config.json").write_text(json.dumps(meta))
    assert kinds.read_config(folder)[0].model.scan_input_head is False
    d = load_cluster_model(folder).d
    assert d.fitted_input is None and d.fitted_head() == "trunk"
    assert kinds.config_from_dict(meta["config"]).model.scan_input_head is True  # a new run gets today's default


def test_fit_clusters_script_gives_an_iic_model_a_scan_head(tmp_path):
    cfg = tiny(tmp_path / "iic", "iic", steps=2)
    cfg.model.head_fit, cfg.model.cluster_names = "iic", ["a", "b", "c"]
    train(cfg)
    src = Path(load_cluster_model(tmp_path / "iic").folder) / "config.json"
    record = json.loads(src.read_text())
    src.write_text(json.dumps({**record, "sample_quality": {"fid": 1.5}}))  # a figure the refit must not drop
    out = tmp_path / "scan"
    proc, result = run_script(["scripts/fit_clusters.py", "--checkpoint", str(tmp_path / "iic"), "--out", str(out),
                               "--set", "scan_heads=2", "--set", "scan_epochs=2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["scan"]["heads"] == 2 and result["images"] == 32
    assert result["scan"]["layer"] in ("trunk", "input")  # today's stage: the input layer's head was fitted too
    model = load_cluster_model(out)
    assert model.cfg.model.head_fit == "scan" and model.d.uses_fitted_head() and "familiarity" in model.meta
    assert model.meta["sample_quality"] == {"fid": 1.5} and model.meta["scan"]["heads"] == 2
    assert model.cfg.model.cluster_names is None  # named after the old head's clusters: they no longer apply
    ids, probs = cluster.predict_tensor(model.d, torch.zeros(4, 1, 32, 32, dtype=torch.uint8))
    assert probs.shape == (4, 3)
    proc, result = run_script(["scripts/fit_clusters.py", "--checkpoint", str(tmp_path / "iic"), "--out", str(out),
                               "--set", "scan_colour=2"])
    assert proc.returncode == 2 and "scan_colour" in proc.stderr
    proc, result = run_script(["scripts/fit_clusters.py", "--checkpoint", str(tmp_path / "iic"), "--out", str(out),
                               "--set", "scan_input_head=maybe"])
    assert proc.returncode == 2 and "true or false" in proc.stderr


def test_align_to_codes_numbers_clusters_after_the_generators_codes(tmp_path):
    """After the renumbering, the images each code draws fall in that code's cluster as often as any
    one-to-one matching allows: counting again gives the reported share on the diagonal, and no
    permutation of the clusters gives more."""
    import itertools

    from gan_core.models.base import generate, make_latent

    cfg = tiny(tmp_path / "al", "iic", steps=6)
    train(cfg)
    model = load_cluster_model(tmp_path / "al")
    d, g, mc = model.d, model.g, model.cfg.model
    share = cluster.align_to_codes(d, g, mc, per_code=40, seed=3)
    codes = torch.arange(mc.k).repeat_interleave(40)
    images = generate(g, make_latent(mc.nz, mc.k, len(codes), torch.Generator().manual_seed(3), "cpu", codes))
    ids, _ = cluster.predict_tensor(d, images, sides=[1.0])
    counts = torch.zeros(mc.k, mc.k)
    counts.index_put_((codes, ids), torch.ones(len(ids)), accumulate=True)
    assert abs(float(counts.trace() / counts.sum()) - share) < 1e-6
    best = max(sum(counts[c, p[c]] for c in range(mc.k)) for p in itertools.permutations(range(mc.k)))
    assert float(counts.trace()) == float(best)


def test_more_steps_after_the_scan_stage_retire_the_head_until_it_is_fitted_again(tmp_path):
    out = tmp_path / "more"
    train(tiny(out, "iic", steps=3))
    assert load_cluster_model(out).d.uses_fitted_head()
    again = tiny(out, "iic", steps=8, resume=True)
    result = train(again, should_stop=lambda: True)  # one more step, then a stop: the trunk has moved on
    assert result["step"] == 4 and "scan" not in result
    assert not load_cluster_model(out).d.uses_fitted_head() and not load_cluster_model(out, ema=False).d.uses_fitted_head()


def test_resuming_a_finished_run_neither_refits_nor_rewrites_it(tmp_path):
    out = tmp_path / "done"
    first = train(tiny(out, "iic", steps=3))
    config = (ckpt.latest_checkpoint(out) / "config.json").read_text()
    result = train(tiny(out, "iic", steps=3, resume=True))
    assert result["steps_run"] == 0 and "scan" not in result and "scan" in first
    assert (ckpt.latest_checkpoint(out) / "config.json").read_text() == config


def test_a_failing_scan_stage_keeps_the_trained_model(tmp_path, monkeypatch):
    def broken(*_args, **_kw):
        raise ValueError("no memory for features")

    monkeypatch.setattr(cluster, "fit_head", broken)
    lines = []
    result = train(tiny(tmp_path / "bad", "iic", steps=3), on_log=lines.append)
    assert result["step"] == 3 and result["checkpoint"] and "scan" not in result
    assert any("last stage failed" in line and "no memory for features" in line for line in lines)
    d = load_cluster_model(tmp_path / "bad").d
    assert ckpt.read_meta(ckpt.latest_checkpoint(tmp_path / "bad"))["step"] == 3 and not d.uses_fitted_head()


def test_the_scan_head_does_not_change_the_discriminators_initial_weights():
    weights = []
    for head_fit in ("iic", "scan"):
        torch.manual_seed(0)
        _, d = cluster.build(ClusterConfig(nz=8, ngf=8, ndf=8, k=3, overcluster=6, subheads=2, head_fit=head_fit))
        weights.append({k: v for k, v in d.state_dict().items() if not k.startswith("fitted.")})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_fit_clusters_refits_a_scan_model_with_other_sizes(tmp_path):
    train(tiny(tmp_path / "s", "iic", steps=2))
    proc, result = run_script(["scripts/fit_clusters.py", "--checkpoint", str(tmp_path / "s"), "--out",
                               str(tmp_path / "s2"), "--set", "scan_dims=8", "--set", "scan_hidden=16",
                               "--set", "scan_epochs=1"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = load_cluster_model(tmp_path / "s2").d
    assert d.fitted.project.shape[0] == 8 and d.fitted.mlp[0].out_features == 16 and d.uses_fitted_head()


# ---------------------------------------------------------------- input_transform=auto


def test_auto_input_is_the_lowest_scan_loss_and_is_recorded(monkeypatch):
    cfg = tiny("unused", input_transform="auto")
    assert ClusterConfig().input_transform == "auto"  # the default
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    seen = []

    def fake_fit(features, picked, k, settings, head, *_a, **_kw):
        seen.append(features(picked[:2], True).shape)  # augmented pixels of each candidate input
        return {"loss": losses[len(seen) - 1], "images": len(picked)}

    monkeypatch.setattr(cluster, "scan_fit", fake_fit)
    lines, losses = [], [-1.0, -3.0, -2.0]  # none, mask, polar
    values, record = cluster.choose(cfg, images, None, lines.append)
    assert values == {"input_transform": "mask"} and record["input_choice"]["chosen"] == "mask"
    assert record["input_choice"]["losses"] == {"none": -1.0, "mask": -3.0, "polar": -2.0}
    assert len(seen) == 3 and seen[0][0] == 2 and "input: mask" in lines[0]
    seen.clear()
    losses[:] = [-1.0, -1.05, -0.5]  # a mask must beat the pixels clearly (cluster.CHOICE_MARGIN)
    assert cluster.choose(cfg, images)[0] == {"input_transform": "none"}
    assert cluster.choose(tiny("unused", input_transform="none"), images) == ({}, {})  # set by hand


def test_a_resumed_auto_run_keeps_its_choice_without_choosing_again(monkeypatch):
    monkeypatch.setattr(cluster, "scan_fit", lambda *a, **k: pytest.fail("a resumed run must not choose again"))
    saved = tiny("x")
    saved.model.input_transform = "polar"
    record = {"input_choice": {"chosen": "polar", "losses": {"none": 0.0, "mask": 0.0, "polar": -1.0}}}
    images = torch.zeros(8, 1, 32, 32, dtype=torch.uint8)
    values, meta = cluster.choose(tiny("y", input_transform="auto"), images, (saved, record))
    assert values == {"input_transform": "polar"} and meta == record
    assert cluster.choose(tiny("y", input_transform="polar"), images, (saved, record)) == ({}, record)  # set as saved
    assert cluster.choose(tiny("y", input_transform="none"), images, (saved, record)) == ({}, {})  # resume refuses it
    other = RunConfig(model=kinds.KINDS["dcgan"].config())  # another kind's checkpoint: resume says so, not choose
    assert cluster.choose(tiny("y", input_transform="auto"), images, (other, {})) == ({}, {})
    old = kinds.config_from_dict({"model": {"kind": "cluster"}}, saved=True)  # written before the field existed
    assert old.model.input_transform == "none"
    # the saved cluster names go on unless new ones are given
    saved.model.cluster_names = ["a", "b", "c"]
    assert cluster.choose(tiny("y", input_transform="auto"), images, (saved, record))[0] == {
        "input_transform": "polar", "cluster_names": ["a", "b", "c"]}
    renamed = tiny("y", input_transform="polar")
    renamed.model.cluster_names = ["x", "y", "z"]
    assert cluster.choose(renamed, images, (saved, record)) == ({}, record)


def test_a_stop_during_the_input_choice_ends_the_run_before_anything_is_built(tmp_path):
    stages = []
    result = train(tiny(tmp_path / "c", "iic", steps=3, input_transform="auto"),
                   on_stage=lambda stage, done, total: stages.append(stage), should_stop=lambda: bool(stages))
    assert result["stopped"] == "stopped by request before the first step" and result["checkpoint"] is None
    assert len(stages) == 1 and stages[0].startswith("input ")  # answered at the first report, not after the choice
    assert ckpt.latest_checkpoint(tmp_path / "c") is None


def test_a_stop_during_the_scan_stage_keeps_the_steps_and_a_resume_fits_the_head(tmp_path):
    out, stages, lines = tmp_path / "s", [], []
    result = train(tiny(out, "iic", steps=3), on_stage=lambda stage, done, total: stages.append(stage),
                   should_stop=lambda: bool(stages), on_log=lines.append)
    assert result["stopped"] == "stopped by request" and result["step"] == 3 and "scan" not in result
    assert len(stages) == 1 and any("last stage was stopped" in line for line in lines)
    assert ckpt.read_meta(ckpt.latest_checkpoint(out))["step"] == 3 and not load_cluster_model(out).d.uses_fitted_head()
    again = train(tiny(out, "iic", steps=3, resume=True))
    assert again["steps_run"] == 0 and again["stopped"] is None and "scan" in again
    assert load_cluster_model(out).d.uses_fitted_head()


def test_a_default_run_trains_with_the_chosen_input_and_resumes(tmp_path):
    out = tmp_path / "auto"
    first = train(tiny(out, "iic", steps=2, input_transform="auto"))
    chosen = first["input_choice"]["chosen"]
    assert chosen in cluster.INPUTS and set(first["input_choice"]["losses"]) == set(cluster.INPUTS)
    saved, meta = kinds.read_config(ckpt.latest_checkpoint(out))
    assert saved.model.input_transform == chosen and meta["input_choice"]["chosen"] == chosen
    model = load_cluster_model(out)
    assert model.d.input_transform == chosen
    # auto again: the saved choice, and no "differs in model.input_transform" error
    again = train(tiny(out, "iic", steps=3, input_transform="auto", resume=True))
    assert again["step"] == 3 and again["input_choice"] == first["input_choice"]
    assert kinds.read_config(ckpt.latest_checkpoint(out))[1]["input_choice"] == first["input_choice"]


def test_choose_input_script_prints_the_pick_without_training(tmp_path):
    from PIL import Image

    for i in range(24):
        Image.new("RGB", (40, 40), (200 * (i % 2), 30, 90)).save(tmp_path / f"{i}.png")
    proc, result = run_script(["scripts/choose_input.py", "--data.source", "folder", "--data.path", str(tmp_path),
                               "--channels", "3", "--k", "2"])
    assert proc.returncode == 0, proc.stderr
    assert result["input_transform"] in cluster.INPUTS and set(result["losses"]) == set(cluster.INPUTS)
    assert result["images"] == 24 and f"input: {result['input_transform']}" in proc.stderr
    # the augmentation a run will use: other views, so other losses on the same images and seed
    proc, rotated = run_script(["scripts/choose_input.py", "--data.source", "folder", "--data.path", str(tmp_path),
                                "--channels", "3", "--k", "2", "--set", "aug_rotate_deg=180", "--set", "aug_colour=remap"])
    assert proc.returncode == 0, proc.stderr
    assert rotated["set"] == {"aug_rotate_deg": 180.0, "aug_colour": "remap"} and rotated["losses"] != result["losses"]
    for bad, says in (("lr=1", "NAME one of"), ("mask_size=big", "takes whole numbers"), ("aug_colour=sepia", "jitter or remap")):
        proc, result = run_script(["scripts/choose_input.py", "--data.path", str(tmp_path), "--set", bad])
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    proc, result = run_script(["scripts/choose_input.py", "--data.source", "folder", "--data.path",
                               str(tmp_path / "missing")])
    assert proc.returncode == 2 and "error" in result and proc.stderr.startswith("error:")


def test_input_pixels_ignore_what_each_input_is_meant_to_ignore():
    x = torch.full((2, 3, 32, 32), -1.0)
    x[:, :, 10:20, 12:18] = 0.5  # a bar on a flat background
    x[1] = x[1].roll(5, dims=2)  # moved
    recoloured = x.clone()
    recoloured[:, 0] = torch.where(x[:, 0] > 0, torch.tensor(-0.2), x[:, 0])
    none, mask = (cluster.input_pixels(x, t, 32) for t in ("none", "mask"))
    assert not torch.allclose(none[0], none[1])
    assert torch.allclose(mask[0], mask[1], atol=0.05)  # position: gone in the mask
    assert torch.allclose(cluster.input_pixels(recoloured, "mask", 32), mask, atol=0.1)  # colour: gone
    turned = x.transpose(2, 3)  # a quarter turn (and a flip: the bar is symmetric)
    polar = cluster.input_pixels(x, "polar", 32)
    assert torch.allclose(cluster.input_pixels(turned, "polar", 32), polar, atol=0.15 * float(polar.abs().max()))
    big = torch.zeros(1, 3, 64, 64)
    assert cluster.input_pixels(big, "none", 32).shape == (1, 3 * 32 * 32)  # compared at 32 px at most


@pytest.mark.slow
def test_auto_input_picks_the_polar_mask_for_shapes_and_the_pixels_for_colours():
    from gan_core.data import load_dataset

    shapes = load_dataset(DataConfig(source="shapes", num_images=2000, image_size=32, channels=3)).images
    cfg = RunConfig(model=ClusterConfig(k=10, channels=3), data=DataConfig(source="shapes", channels=3))
    values, record = cluster.choose(cfg, shapes)
    assert values == {"input_transform": "polar"}, record  # colour, size, position and turn are nuisances there
    # ten flat colours with pixel noise: no object, so a mask keeps nothing and the pixels must win
    gen = torch.Generator().manual_seed(0)
    palette = torch.randint(0, 256, (10, 3, 1, 1), generator=gen).float()
    noise = torch.randn(1000, 3, 32, 32, generator=gen) * 12
    colours = (palette[torch.arange(1000) % 10] + noise).clamp(0, 255).to(torch.uint8)
    values, record = cluster.choose(cfg, colours)
    assert values == {"input_transform": "none"}, record


def test_init_from_a_cluster_run_keeps_its_input_choice_and_names(tmp_path):
    first = train(tiny(tmp_path / "a", "iic", steps=2, input_transform="mask"))
    folder = ckpt.latest_checkpoint(tmp_path / "a")
    raw = json.loads((folder / "config.json").read_text())
    raw["config"]["model"]["cluster_names"] = ["one", "two", "three"]
    (folder / "config.json").write_text(json.dumps(raw))
    # input_transform=auto and no names given: the source's mask and names, no new choice, no config error
    lines = []
    on = train(tiny(tmp_path / "b", "iic", steps=2, input_transform="auto", init_from=str(tmp_path / "a")),
               on_log=lines.append)
    assert not any(line.startswith("input: ") for line in lines)  # (the choice's log line)
    saved, _ = kinds.read_config(ckpt.latest_checkpoint(tmp_path / "b"))
    assert on["step"] == 2 and saved.model.input_transform == "mask" and saved.model.cluster_names == ["one", "two", "three"]
    assert first["step"] == 2
