"""BlobGAN: splat() against hand-computed values, the ellipse geometry, the pure layout edits, and
one training step / checkpoint round trip of the `blobgan` kind."""
import math

import pytest
import torch

from safetensors.torch import load_file

from gan_core import kinds, metrics
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.inference.blobs import BlobModel
from gan_core.inference.loading import export, load_model
from gan_core.kinds import validate
from gan_core.models import blob_layout, blobgan
from gan_core.models.base import Batch
from gan_core.models.blob_layout import Layout
from gan_core.models.blobgan import BlobGANConfig
from gan_core.training import build_models, train


def load_blob_model(path) -> BlobModel:
    model = load_model(path)
    assert isinstance(model, BlobModel)
    return model


def layout(xy, ab=None, angle=None, size=None, d=3):
    xy = torch.tensor(xy, dtype=torch.float32)[None]  # (1, K, 2)
    k = xy.shape[1]
    ab = torch.tensor(ab if ab is not None else [[0.5, 0.5]] * k)[None]
    angle = torch.tensor(angle if angle is not None else [[1.0, 0.0]] * k)[None]
    size = torch.tensor(size if size is not None else [3.0] * k)[None]
    phi = torch.arange(k * d, dtype=torch.float32).view(1, k, d) + 1
    return Layout(xy=xy, ab=ab, angle=angle, size=size, phi=phi, psi=phi.clone(),
                  bg_phi=torch.zeros(1, d), bg_psi=torch.zeros(1, d))


def test_opacity_at_the_centre_is_sigmoid_s_and_weights_sum_to_one():
    # One blob centred on a pixel centre of a 4x4 grid: pixel (row 1, col 2) has centre (2.5/4, 1.5/4).
    lay = layout([[2.5 / 4, 1.5 / 4]], size=[1.3])
    w = blob_layout.splat(lay, 4)  # (1, 2, 4, 4): background, blob
    assert w.shape == (1, 2, 4, 4)
    assert w[0, 1, 1, 2].item() == pytest.approx(1 / (1 + math.exp(-1.3)), abs=1e-6)
    assert torch.allclose(w.sum(1), torch.ones(1, 4, 4), atol=1e-6)
    # A neighbouring pixel, by hand: a = b = 0.5 -> n = 0.02 / 0.5 = 0.04, variances 0.02;
    # pixel (row 1, col 3) is 0.25 away along x: d^2 = 0.0625 / 0.02 = 3.125.
    assert w[0, 1, 1, 3].item() == pytest.approx(1 / (1 + math.exp(-(1.3 - 3.125))), abs=1e-6)


def test_a_blob_with_s_below_zero_draws_nothing_but_can_learn_to_show():
    lay = layout([[0.5, 0.5], [0.3, 0.3]], size=[-0.3, 2.0])
    lay.size.requires_grad_(True)
    w = blob_layout.splat(lay, 8)
    assert torch.equal(w[0, 1], torch.zeros(8, 8))  # sigmoid(-0.3) = 0.43 at its centre without the gate
    assert w[0, 2].max() > 0.5 and torch.allclose(w.sum(1), torch.ones(1, 8, 8), atol=1e-6)
    w[0, 1].sum().backward()  # a loss that wants blob 0 shown raises its s (straight-through gradient)
    assert lay.size.grad[0, 0] > 0
    assert blob_layout.visibility_gate(torch.tensor([-1e4, -0.1, 0.0, 0.1])).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_the_last_slot_is_in_front():
    # Two identical blobs at the same place: the front one takes o, the one behind o * (1 - o).
    lay = layout([[0.5, 0.5], [0.5, 0.5]], size=[2.0, 2.0])
    w = blob_layout.splat(lay, 8)
    o = torch.sigmoid(torch.tensor(2.0) - blob_layout.distance2(lay, 8)[0, 0])
    assert torch.allclose(w[0, 2], o, atol=1e-6)
    assert torch.allclose(w[0, 1], o * (1 - o), atol=1e-6)
    assert torch.allclose(w[0, 0], (1 - o) ** 2, atol=1e-6)
    # Reordering moves every per-blob field with the blob, and leaves the background alone.
    lay = blob_layout.hide(layout([[0.3, 0.5], [0.5, 0.5], [0.7, 0.2]], ab=[[0.5, 0.5], [0.9, 0.1], [0.3, 0.3]],
                              size=[4.0, 2.0, 1.0]), 2)
    moved = blob_layout.reorder(lay, 2, 0)  # blob 2 to the back
    for name in ("xy", "ab", "angle", "size", "phi", "psi", "hidden"):
        assert torch.equal(getattr(moved, name)[0], getattr(lay, name)[0, [2, 0, 1]]), name
    assert torch.equal(moved.bg_phi, lay.bg_phi) and torch.equal(moved.bg_psi, lay.bg_psi)


def test_ellipse_axes_and_angle():
    # a = 0.8, b = 0.2 -> n = 0.02 / 0.4 = 0.05; variances 0.04 (along) and 0.01 (across);
    # contour d^2 = s = 1: semi-axes 0.2 and 0.1, the long one along the angle (45 degrees here).
    c = math.sqrt(0.5)
    lay = layout([[0.5, 0.5]], ab=[[0.8, 0.2]], angle=[[c, c]], size=[1.0])
    assert torch.allclose(blob_layout.covariance_axes(lay)[0, 0], torch.tensor([0.04, 0.01]), atol=1e-7)
    pts = blob_layout.ellipse_contour(lay, points=5)[0, 0]  # t = 0, 90, 180, 270, 360 degrees
    assert torch.allclose(pts[0], torch.tensor([0.5 + 0.2 * c, 0.5 + 0.2 * c]), atol=1e-6)
    assert torch.allclose(pts[1], torch.tensor([0.5 - 0.1 * c, 0.5 + 0.1 * c]), atol=1e-6)
    # On that contour the opacity is one half: put the blob so that the single pixel centre of a
    # 1x1 grid, (0.5, 0.5), lies 0.2 along its long axis.
    shifted = layout([[0.5 - 0.2 * c, 0.5 - 0.2 * c]], ab=[[0.8, 0.2]], angle=[[c, c]], size=[1.0])
    assert blob_layout.distance2(shifted, 1).item() == pytest.approx(1.0, abs=1e-5)
    assert blob_layout.splat(shifted, 1)[0, 1].item() == pytest.approx(0.5, abs=1e-6)
    # Hidden blobs have no contour.
    assert torch.isnan(blob_layout.ellipse_contour(blob_layout.hide(lay, 0))).all()


def test_edits_are_pure_and_reversible():
    lay = layout([[0.2, 0.2], [0.7, 0.6]], size=[3.0, 1.5])
    before = {k: v.clone() for k, v in vars(lay).items() if v is not None}
    moved = blob_layout.move(lay, 0, dx=0.1, dy=-0.5)
    assert torch.allclose(moved.xy[0, 0], torch.tensor([0.3, 0.0])) and torch.equal(moved.xy[0, 1], lay.xy[0, 1])
    hidden = blob_layout.hide(lay, 1)
    assert hidden.drawn_size()[0, 1] < 0 and not hidden.visible()[0, 1] and hidden.visible()[0, 0]
    assert blob_layout.splat(hidden, 8)[0, 2].max() < 1e-6  # invisible
    shown = blob_layout.show(hidden, 1)
    assert torch.equal(shown.size, lay.size) and torch.equal(shown.visible(), lay.visible())  # exactly undone
    odd = layout([[0.2, 0.2]], size=[0.1])
    assert torch.equal(blob_layout.show(blob_layout.hide(odd, 0), 0).drawn_size(), odd.size)  # no float drift
    twice = blob_layout.hide(hidden, 1)
    assert torch.equal(twice.drawn_size(), hidden.drawn_size())  # hiding twice changes nothing
    assert not layout([[0.5, 0.5]], size=[-1.0]).visible()[0, 0]  # s < 0 hides too
    assert blob_layout.resize(lay, 0, 1.0).size[0, 0].item() == 4.0
    other = layout([[0.5, 0.5], [0.5, 0.5]])
    other.psi += 100
    restyled = blob_layout.restyle(lay, 1, other, 0)
    assert torch.equal(restyled.psi[0, 1], other.psi[0, 0]) and torch.equal(restyled.phi, lay.phi)
    for k, v in before.items():  # the input layout was not touched
        assert torch.equal(getattr(lay, k), v)


def test_generator_renders_layouts_and_moving_a_blob_changes_the_image_locally():
    torch.manual_seed(0)
    cfg = BlobGANConfig(ngf=4, ndf=4, blobs=3, feature_dim=8, style_dim=8, layout_hidden=16)
    g, d = blobgan.build(cfg)
    z = torch.randn(2, cfg.nz, 1, 1)
    img = g(z)
    assert img.shape == (2, 3, 64, 64) and img.abs().max() <= 1
    assert d(img, logits=True).shape == (2,)
    lay = g.layout_net(z.flatten(1))
    assert torch.allclose(g.render(lay), img)
    assert lay.xy.shape == (2, 3, 2) and torch.allclose(lay.angle.norm(dim=-1), torch.ones(2, 3))
    assert torch.allclose(g.layout_net.decode(g.layout_net.mlp(z.flatten(1))).xy, lay.xy)


def test_moving_a_blob_changes_pixels_only_near_it():
    # The painter is local by construction (per-pixel modulation, 3x3 convs), even untrained.
    torch.manual_seed(0)
    cfg = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16)
    g, _ = blobgan.build(cfg)
    lay = layout([[0.25, 0.25], [0.75, 0.75]], size=[4.0, 4.0], d=8)
    moved = blob_layout.move(lay, 0, dx=0.0, dy=0.3)
    with torch.no_grad():
        change = (g.render(moved) - g.render(lay)).abs().sum(1)[0]  # (64, 64)
    region = (blob_layout.splat(lay, 64)[0, 1] > 1e-3) | (blob_layout.splat(moved, 64)[0, 1] > 1e-3)
    near = torch.nn.functional.max_pool2d(region[None, None].float(), 17, 1, 8)[0, 0] > 0  # +-8 px
    assert change.sum() > 0 and change[~near].sum() < 1e-3 * change.sum()
    assert change[region].sum() > 0.5 * change.sum()


def test_match_objects_by_hand():
    objs = torch.full((4, 7), -1.0)
    objs[0] = torch.tensor([3, 0.2, 0.2, 0.1, 0.1, 0.3, 0.3])
    objs[1] = torch.tensor([5, 0.8, 0.8, 0.7, 0.7, 0.9, 0.9])
    # Blob 0 sits in object 1's box, blob 1 just outside object 0's box, blob 2 (hidden) on object 0.
    lay = blob_layout.hide(layout([[0.81, 0.79], [0.32, 0.2], [0.2, 0.2]]), 2)
    hits, pairs = metrics.match_objects(objs, lay)
    assert hits == 1 and sorted(pairs) == [(0, 1), (1, 0)]
    hits, pairs = metrics.match_objects(objs, blob_layout.show(lay, 2))  # now blob 2 takes object 0
    assert hits == 2 and sorted(pairs) == [(0, 2), (1, 0)]
    assert metrics.match_objects(torch.full((4, 7), -1.0), lay) == (0, [])


def test_blobgan_trains_saves_and_loads(tmp_path):
    cfg = RunConfig(model=BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16,
                                        r1_every=2),
                    data=DataConfig(source="scenes", num_images=16, image_size=32),
                    train=TrainConfig(steps=4, batch_size=4, log_every=2, device="cpu", precision="fp32",
                                      ema_decay=0.9, out_dir=str(tmp_path / "run")))
    result = train(cfg)
    assert result["step"] == 4 and result["stopped"] is None
    assert result["metrics"]["r1"] > 0  # R1 ran on the even steps
    model = load_blob_model(tmp_path / "run")
    loaded_cfg, g = model.cfg, model.g
    assert loaded_cfg.model.kind == "blobgan" and g(torch.randn(1, 64, 1, 1)).shape == (1, 3, 32, 32)


def test_joint_reconstruction_trains_an_encoder_and_the_painter_and_resumes(tmp_path):
    from gan_core import checkpoint

    model = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4,
                          recon_weight=5.0, r1_every=2)
    cfg = RunConfig(model=model, data=DataConfig(source="scenes", num_images=16, image_size=32),
                    train=TrainConfig(steps=3, batch_size=4, log_every=1, checkpoint_every=2, device="cpu",
                                      precision="fp32", ema_decay=0.9, out_dir=str(tmp_path / "run")))
    result = train(cfg)
    assert result["step"] == 3 and {"enc_mse_real", "enc_mse_fake", "enc_latent"} <= set(result["metrics"])
    folder = checkpoint.latest_checkpoint(tmp_path / "run")
    assert (folder / "encoder.safetensors").exists()
    assert load_blob_model(folder).encoder is not None  # the app and evaluate_blobs can invert with it

    # The painter's update includes recon_weight x the reconstruction of real images: with the D that
    # G's step sees made flat (zero logits, zero gradient), G still moves, and E moves too.
    import copy
    cfg.model.recon_weight = 1.0
    m = build_models(cfg, torch.device("cpu"))
    m.d_for_g = lambda x, logits=True: x.sum((1, 2, 3)) * 0.0
    encoder = m.extras["encoder"].module
    g0, e0 = copy.deepcopy(m.g_core.blocks.state_dict()), copy.deepcopy(encoder.state_dict())
    out = kinds.KINDS["blobgan"].train_step(m, Batch(torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 64)))
    assert out["enc_mse_real"] > 0
    assert any(not torch.equal(v, m.g_core.blocks.state_dict()[k]) for k, v in g0.items())
    assert any(not torch.equal(v, encoder.state_dict()[k]) for k, v in e0.items())

    # several processes would average G and D but not the encoder: refused before any building
    from gan_core.training import check_world
    with pytest.raises(ValueError, match="encoder beside G and D.*torchrun"):
        check_world(cfg, 2)
    check_world(RunConfig(model=BlobGANConfig(recon_weight=0.0), data=cfg.data), 2)

    # resume: the encoder and its optimizer come back from the checkpoint
    cfg.model.recon_weight, cfg.model.r1_gamma = 5.0, 0.1
    cfg.train.resume, cfg.train.steps = True, 4
    saved_e = load_file(str(folder / "encoder.safetensors"))
    resumed = train(cfg)
    assert resumed["steps_run"] == 1
    assert not torch.equal(saved_e["trunk.0.weight"], load_file(
        str(checkpoint.latest_checkpoint(tmp_path / "run") / "encoder.safetensors"))["trunk.0.weight"])


def test_blobgan_config_is_validated():
    good = RunConfig(model=BlobGANConfig(), data=DataConfig(source="scenes"))
    validate(good)
    with pytest.raises(ValueError, match="model.blobs"):
        validate(RunConfig(model=BlobGANConfig(blobs=0), data=DataConfig(source="scenes")))
    for bad in ({"recon_weight": -1.0}, {"recon_weight": float("nan")}, {"encoder_lr": 0.0},
                {"encoder_latent_weight": -0.5}):
        with pytest.raises(ValueError, match="model." + next(iter(bad))):
            validate(RunConfig(model=BlobGANConfig(**bad), data=DataConfig(source="scenes")))
    with pytest.raises(ValueError, match="double backward"):
        validate(RunConfig(model=BlobGANConfig(), data=DataConfig(source="scenes"), train=TrainConfig(compile=True)))
    validate(RunConfig(model=BlobGANConfig(r1_gamma=0), data=DataConfig(source="scenes"), train=TrainConfig(compile=True)))
    with pytest.raises(ValueError, match="real_label"):
        validate(RunConfig(model=BlobGANConfig(), data=DataConfig(source="scenes"), train=TrainConfig(real_label=0.9)))


def test_blob_map_and_ellipse_drawing():
    from gan_core import viz

    lay = layout([[0.25, 0.25], [0.75, 0.75]], size=[3.0, 3.0])
    m = viz.blob_map(lay, size=16, scale=2)
    assert m.size == (32, 32)
    assert m.getpixel((8, 8)) == pytest.approx(viz.blob_colour(0), abs=40)  # blob 0's centre, mostly its colour
    assert m.getpixel((31, 0)) == viz.BACKGROUND_COLOUR  # a corner far from both blobs
    img = torch.zeros(3, 16, 16)  # mid grey
    drawn = viz.draw_blobs(img, lay, scale=4)
    assert drawn.size == (64, 64)
    colours = {drawn.getpixel((x, y)) for x in range(64) for y in range(64)}
    assert viz.blob_colour(0) in colours and viz.blob_colour(1) in colours
    hidden = viz.draw_blobs(img, blob_layout.hide(lay, 1), scale=4, labels=False)
    colours = {hidden.getpixel((x, y)) for x in range(64) for y in range(64)}
    assert viz.blob_colour(1) not in colours and viz.blob_colour(0) in colours


@pytest.mark.slow
def test_lpips_code_path_with_a_random_backbone_and_a_backbone_file(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.delenv("GANLAB_VGG16", raising=False)
    from gan_core import losses

    lp = losses.LPIPS(random_backbone=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(lp(x, x), torch.zeros(2)) and (lp(x, -x) > 0).all()
    assert lp.random_backbone
    # A backbone file in torchvision's format is loaded into LPIPS' VGG slices, layer by layer.
    state = torchvision.models.vgg16().state_dict()
    torch.save(state, tmp_path / "vgg16.pth")
    lp2 = losses.LPIPS(tmp_path / "vgg16.pth")
    assert torch.equal(dict(lp2.net.net.slice5.named_children())["28"].weight, state["features.28.weight"])
    assert not lp2.random_backbone
    # Where no weights exist, load_lpips says so in one line and returns None.
    monkeypatch.delenv("GANLAB_VGG16", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    module, line = losses.load_lpips()
    assert module is None and line.startswith("LPIPS off") and "\n" not in line
    monkeypatch.setenv("GANLAB_VGG16", str(tmp_path / "vgg16.pth"))
    module, line = losses.load_lpips()
    assert isinstance(module, losses.LPIPS) and line.startswith("LPIPS on")


def test_encoder_loss_terms_and_gradients_reach_only_the_encoder():
    torch.manual_seed(0)
    cfg = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4,
                        image_size=32)
    g, _ = blobgan.build(cfg)
    g.requires_grad_(False)
    e = blobgan.build_encoder(cfg, g)
    from gan_core.losses import LPIPS
    real = torch.rand(3, 3, 32, 32) * 2 - 1
    out = blobgan.encoder_losses(e, g, real, torch.randn(3, cfg.nz), LPIPS(random_backbone=True))
    parts = out["lpips_real"] + out["lpips_fake"] + out["mse_real"] + out["mse_fake"] + 10 * out["latent"]
    assert torch.allclose(out["loss"], parts) and out["lpips_real"] > 0
    out["loss"].backward()
    assert all(p.grad is not None for p in e.parameters())
    assert all(p.grad is None for p in g.parameters())
    no_lpips = blobgan.encoder_losses(e, g, real, torch.randn(3, cfg.nz), None)
    assert no_lpips["lpips_real"] == 0 and no_lpips["lpips_fake"] == 0


@pytest.mark.slow
def test_encoder_script_then_evaluation_and_the_blob_model_api(tmp_path, monkeypatch):
    from conftest import run_script

    tiny = ["model=blobgan", "model.ngf=4", "model.ndf=4", "model.blobs=3", "model.feature_dim=8",
            "model.style_dim=8", "model.layout_hidden=16", "model.encoder_ndf=4", "data.source=scenes",
            "data.num_images=16", "data.image_size=32", "train.batch_size=4", "train.steps=2", "train.device=cpu",
            "train.ema_decay=0.9", "model.recon_weight=0", f"train.out_dir={tmp_path / 'run'}"]
    proc, _ = run_script(["scripts/train.py", *tiny])
    assert proc.returncode == 0, proc.stderr[-2000:]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    proc, result = run_script(["scripts/train_encoder.py", "--checkpoint", str(tmp_path / "run"), "--out",
                               str(tmp_path / "model"), "--steps", "4", "--batch", "4", "--log-every", "2"],
                              env={"TORCH_HOME": str(tmp_path / "no-weights"), "GANLAB_VGG16": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LPIPS off" in proc.stderr and result["inversion_loss"].startswith("mse+latent (no LPIPS")
    assert result["losses"]["encoder_lpips_real"] == 0
    files = {f.name for f in (tmp_path / "model").iterdir()}
    assert {"encoder.safetensors", "generator_ema.safetensors", "config.json"} <= files
    assert "optimizer.safetensors" not in files

    model = load_blob_model(tmp_path / "model")
    assert model.cfg.model.inversion_loss == result["inversion_loss"]
    lay = model.sample_layout(seed=5)
    assert torch.equal(lay.xy, model.sample_layout(seed=5).xy) and lay.k == 3
    img = model.render(lay)
    assert img.shape == (1, 3, 32, 32)
    inv = model.invert(((img[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())  # an (H, W, C) array
    assert inv.xy.shape == (1, 3, 2)
    shipped = export(tmp_path / "model", tmp_path / "shipped")
    assert (shipped / "encoder.safetensors").exists()
    assert torch.allclose(load_blob_model(shipped).invert(img).xy, model.invert(img).xy, atol=1e-2)

    proc, scores = run_script(["scripts/evaluate_blobs.py", "--checkpoint", str(tmp_path / "model"),
                               "--num-images", "12", "--batch", "5"],
                              env={"TORCH_HOME": str(tmp_path / "no-weights"), "GANLAB_VGG16": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert scores["n"] == 12 and scores["objects"] >= 12 and scores["lpips"] is None
    assert 0 <= scores["hit_rate"] <= 1 and 0 <= scores["locality"] <= 1 and scores["psnr"] > 0
    proc, refused = run_script(["scripts/train_encoder.py", "--checkpoint", str(tmp_path / "run"), "--out",
                                str(tmp_path / "run"), "--steps", "1"])
    assert proc.returncode == 2 and "would replace" in refused["error"] and (tmp_path / "run" / "latest").exists()
    proc, scores = run_script(["scripts/evaluate_blobs.py", "--checkpoint", str(tmp_path / "run")])
    assert proc.returncode == 2 and scores["error"] == "no encoder"
    proc, demo = run_script(["scripts/blob_edit_demo.py", "--checkpoint", str(tmp_path / "run"), "--seeds", "0", "1",
                             "--out", str(tmp_path / "demo.png"), "--scale", "2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image
    assert Image.open(tmp_path / "demo.png").size == (3 * 64 + 16, 2 * 68 + 4) and len(demo["rows"]) == 2
    proc, demo = run_script(["scripts/blob_edit_demo.py", "--checkpoint", str(tmp_path / "model"), "--invert-scenes",
                             "3", "--out", str(tmp_path / "real.png"), "--scale", "2"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(tmp_path / "real.png").size == (4 * 64 + 20, 3 * 68 + 4) and demo["columns"][0] == "image"
    assert [row["scene"] for row in demo["rows"]] == [0, 1, 2]
    proc, refused = run_script(["scripts/blob_edit_demo.py", "--checkpoint", str(tmp_path / "run"), "--invert-scenes",
                                "2", "--out", str(tmp_path / "x.png")])
    assert proc.returncode == 2 and "needs a checkpoint with an encoder" in refused["error"]


def test_layouts_start_spread_out_and_d_sees_batch_diversity():
    torch.manual_seed(0)
    g, d = blobgan.build(BlobGANConfig())
    lay = g.layout_net(torch.randn(256, 64))
    assert lay.xy.std(0).mean() > 0.1  # different z, different blob positions (default init gave ~0.03)
    assert lay.ab.min() >= 0.2 and lay.ab.max() <= 1  # min_axis bounds the elongation (no needles)
    same = torch.randn(1, 8, 4, 4).repeat(8, 1, 1, 1)
    assert blobgan.minibatch_stddev(same).abs().max() < 1e-3
    varied = torch.randn(8, 8, 4, 4)
    sd = blobgan.minibatch_stddev(varied)
    assert sd.shape == (8, 1, 4, 4) and (sd > 0.1).all()
    assert torch.equal(blobgan.minibatch_stddev(torch.randn(6, 8, 4, 4)), torch.zeros(6, 1, 4, 4))  # 6 % 4 != 0


def test_layout_geometry_loss_weighs_shown_blobs_and_their_visibility():
    def lay(xy, s):
        n, k = len(xy), len(xy[0])
        return Layout(xy=torch.tensor(xy), ab=torch.full((n, k, 2), 0.5), angle=torch.tensor([[[1.0, 0.0]] * k] * n),
                              size=torch.tensor(s), phi=torch.zeros(n, k, 2), psi=torch.zeros(n, k, 2),
                              bg_phi=torch.zeros(n, 2), bg_psi=torch.zeros(n, 2))
    target = lay([[[0.2, 0.2], [0.8, 0.8]]], [[10.0, -10.0]])  # blob 0 shown, blob 1 hidden
    assert blobgan.layout_geometry_loss(target, target) == 0
    hidden_moved = lay([[[0.2, 0.2], [0.1, 0.9]]], [[10.0, -10.0]])
    assert blobgan.layout_geometry_loss(hidden_moved, target) < 1e-3  # a hidden blob's place hardly counts
    shown_moved = lay([[[0.5, 0.6], [0.8, 0.8]]], [[10.0, -10.0]])
    assert blobgan.layout_geometry_loss(shown_moved, target) == pytest.approx(0.3 ** 2 + 0.4 ** 2, rel=1e-3)
    swapped_visibility = lay([[[0.2, 0.2], [0.8, 0.8]]], [[-10.0, 10.0]])
    assert blobgan.layout_geometry_loss(swapped_visibility, target) == pytest.approx(1.0, rel=1e-3)


def test_encoder_geometry_term_is_added_with_its_weight():
    torch.manual_seed(0)
    cfg = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4,
                        image_size=32)
    g, _ = blobgan.build(cfg)
    e = blobgan.build_encoder(cfg, g)
    real, z = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, cfg.nz)
    out = blobgan.encoder_losses(e, g, real, z, None, geometry_weight=5.0)
    parts = out["mse_real"] + out["mse_fake"] + 10 * out["latent"] + 5.0 * out["geometry"]
    assert out["geometry"] > 0 and torch.allclose(out["loss"], parts)
    assert blobgan.encoder_losses(e, g, real, z, None)["geometry"] == 0


@pytest.mark.slow
def test_encoder_script_can_start_from_the_encoder_trained_alongside_the_gan(tmp_path):
    from conftest import run_script

    tiny = ["model=blobgan", "model.ngf=4", "model.ndf=4", "model.blobs=2", "model.feature_dim=8",
            "model.style_dim=8", "model.layout_hidden=16", "model.encoder_ndf=4", "data.source=scenes",
            "data.num_images=8", "data.image_size=32", "train.batch_size=4", "train.steps=2", "train.device=cpu",
            "train.ema_decay=0.9"]
    proc, _ = run_script(["scripts/train.py", *tiny, f"train.out_dir={tmp_path / 'joint'}"])  # recon_weight 30
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = ["scripts/train_encoder.py", "--steps", "1", "--batch", "2", "--no-lpips", "--lr", "0"]
    proc, result = run_script([*base, "--checkpoint", str(tmp_path / "joint"), "--out", str(tmp_path / "enc"),
                               "--from-checkpoint-encoder"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = load_file(str(tmp_path / "joint" / "checkpoints" / "step_00000002" / "encoder.safetensors"))
    after = load_file(str(tmp_path / "enc" / "encoder.safetensors"))
    assert all(torch.equal(start[k], after[k]) for k in start)  # lr 0: the encoder is the one it started from
    assert result["inversion_loss"].endswith("started from the encoder trained alongside the GAN (model.recon_weight)")
    proc, result = run_script([*base, "--checkpoint", str(tmp_path / "joint"), "--out", str(tmp_path / "enc"),
                               "--resume-encoder", "--latent-weight", "0.1"])
    assert proc.returncode == 0 and "latent weight 0.1 (the written loss has 10)" in result["inversion_loss"]

    proc, _ = run_script(["scripts/train.py", *tiny, "model.recon_weight=0", f"train.out_dir={tmp_path / 'plain'}"])
    proc, refused = run_script([*base, "--checkpoint", str(tmp_path / "plain"), "--out", str(tmp_path / "e2"),
                                "--from-checkpoint-encoder"])
    assert proc.returncode == 2 and "no encoder" in refused["error"]
    proc, refused = run_script([*base, "--checkpoint", str(tmp_path / "joint"), "--out", str(tmp_path / "e3"),
                                "--from-checkpoint-encoder", "--resume-encoder"])
    assert proc.returncode == 2 and "give one" in refused["error"]


def test_a_run_saved_before_recon_weight_existed_resumes_with_a_fresh_encoder(tmp_path):
    import json

    from gan_core import checkpoint

    model = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4,
                          recon_weight=0.0)
    cfg = RunConfig(model=model, data=DataConfig(source="scenes", num_images=8, image_size=32),
                    train=TrainConfig(steps=2, batch_size=4, device="cpu", precision="fp32", out_dir=str(tmp_path)))
    train(cfg)
    folder = checkpoint.latest_checkpoint(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    for key in ("recon_weight", "encoder_lr", "encoder_latent_weight"):  # as an older checkpoint wrote it
        del meta["config"]["model"][key]
    (folder / "config.json").write_text(json.dumps(meta))
    cfg.model = BlobGANConfig(ngf=4, ndf=4, blobs=2, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4)
    cfg.train.resume, cfg.train.steps = True, 3
    result = train(cfg)
    assert result["steps_run"] == 1 and "enc_mse_real" in result["metrics"]
    assert (checkpoint.latest_checkpoint(tmp_path) / "encoder.safetensors").exists()


def test_edit_mask_covers_what_an_edit_changes_and_blending_keeps_the_rest():
    lay = layout([[0.25, 0.25], [0.75, 0.75]], size=[4.0, 4.0], d=8)
    assert blob_layout.edit_mask(lay, lay, 64).sum() == 0  # no edit: nothing to repaint
    moved = blob_layout.move(lay, 0, dx=0.0, dy=0.3)
    mask = blob_layout.edit_mask(lay, moved, 64)[0, 0]
    old_region = blob_layout.splat(lay, 64)[0, 1] > 0.5
    new_region = blob_layout.splat(moved, 64)[0, 1] > 0.5
    assert (mask[old_region] == 1).all() and (mask[new_region] == 1).all()  # where it was and where it went
    exact = blob_layout.edit_mask(lay, moved, 64, grow=0)[0, 0]
    assert (exact[blob_layout.splat(lay, 64)[0, 2] > 0.9] == 0).all()  # the other blob is untouched
    restyled = blob_layout.restyle(lay, 1, layout([[0.1, 0.1], [0.9, 0.9]], d=8).__class__(
        **{**lay.__dict__, "psi": lay.psi + 1}))
    assert blob_layout.edit_mask(lay, restyled, 64)[0, 0][blob_layout.splat(lay, 64)[0, 2] > 0.5].min() == 1
    before, after = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    blended = blob_layout.blend_edit(before, after, blob_layout.edit_mask(lay, moved, 64))
    assert (blended[0, :, mask == 0] == 0).all() and (blended[0, :, mask == 1] == 1).all()


def test_most_visible_blob_is_the_largest_shown_one():
    lay = layout([[0.25, 0.25], [0.7, 0.7], [0.5, 0.5]], size=[1.0, 6.0, -1.0], d=4)
    area = blob_layout.visible_area(lay, 32)[0]
    assert area[2] == 0 and area[1] > area[0] > 0
    assert blob_layout.most_visible(lay, 32) == 1
    assert blob_layout.most_visible(blob_layout.hide(lay, 1), 32) == 0
    assert blob_layout.most_visible(layout([[0.5, 0.5]], size=[-2.0]), 32) is None


def test_ellipse_labels_do_not_overlap():
    from gan_core.viz import LABEL_GAP, label_positions

    spots = label_positions([(100.0, 100.0), (102.0, 101.0), (99.0, 98.0), (5.0, 250.0)], 256)
    assert spots[0] == (100.0, 100.0)  # the first stays at its centre
    for i, p in enumerate(spots):
        assert LABEL_GAP / 2 <= p[0] <= 256 - LABEL_GAP / 2 and LABEL_GAP / 2 <= p[1] <= 256 - LABEL_GAP / 2
        for q in spots[:i]:
            assert math.dist(p, q) >= LABEL_GAP - 1e-6


def test_most_visible_counts_what_a_blob_paints_unlike_the_background():
    lay = layout([[0.25, 0.25], [0.75, 0.75]], size=[8.0, 3.0], d=4)  # blob 0 is the larger
    owner = blob_layout.splat(lay, 32).argmax(1)[0]
    image = torch.zeros(1, 3, 32, 32)
    image[0, :, owner == 2] = 1.0  # only blob 1's area differs from the background colour
    assert blob_layout.most_visible(lay, 32) == 0 and blob_layout.most_visible(lay, 32, image) == 1
