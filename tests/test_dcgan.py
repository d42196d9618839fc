import dataclasses
from pathlib import Path

import pytest
import torch

from gan_core.models import dcgan
from gan_core.models.dcgan import DCGANConfig

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seed_dcgan_modules.txt"
SEED_TEXT = """\
# Generator
  (main): Sequential(
    (0): ConvTranspose2d(100, 512, kernel_size=(4, 4), stride=(1, 1), bias=False)
    (1): BatchNorm2d(512, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (2): ReLU(inplace=True)
    (3): ConvTranspose2d(512, 256, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (4): BatchNorm2d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (5): ReLU(inplace=True)
    (6): ConvTranspose2d(256, 128, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (7): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (8): ReLU(inplace=True)
    (9): ConvTranspose2d(128, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (10): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (11): ReLU(inplace=True)
    (12): ConvTranspose2d(64, 3, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (13): Tanh()
  )
# Discriminator
  (main): Sequential(
    (0): Conv2d(3, 64, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (1): LeakyReLU(negative_slope=0.2, inplace=True)
    (2): Conv2d(64, 128, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (3): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (4): LeakyReLU(negative_slope=0.2, inplace=True)
    (5): Conv2d(128, 256, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (6): BatchNorm2d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (7): LeakyReLU(negative_slope=0.2, inplace=True)
    (8): Conv2d(256, 512, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), bias=False)
    (9): BatchNorm2d(512, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    (10): LeakyReLU(negative_slope=0.2, inplace=True)
    (11): Conv2d(512, 1, kernel_size=(4, 4), stride=(1, 1), bias=False)
    (12): Sigmoid()
  )
"""


def _seed_sections() -> dict[str, list[str]]:
    # The shared reference file is used when it is present; the copy above is identical to it.
    text = SEED_FILE.read_text() if SEED_FILE.exists() else SEED_TEXT
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# Generator") or line.startswith("# Discriminator"):
            current = line[2:].strip()
            sections[current] = []
        elif current and line.strip() and not line.startswith("#"):
            sections[current].append(line)
    return sections


def test_seed_modules_print_exactly():
    g, d = dcgan.build(DCGANConfig())
    seed = _seed_sections()
    for name, module in (("Generator", g), ("Discriminator", d)):
        printed = str(module).splitlines()
        assert printed[0] == f"{name}("
        assert printed[1:-1] == seed[name], f"{name} differs from the seed"


def test_embedded_copy_matches_shared_file():
    if not SEED_FILE.exists():
        pytest.skip("shared/seed_dcgan_modules.txt not present")
    lines = [l for l in SEED_FILE.read_text().splitlines() if l.strip() and not l.startswith("# The")]
    assert lines == [l for l in SEED_TEXT.splitlines() if l.strip()]


def test_dcgan_paper_init():
    torch.manual_seed(0)
    g, d = dcgan.build(DCGANConfig())
    convs = torch.cat([m.weight.flatten() for m in list(g.modules()) + list(d.modules())
                       if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    bns = [m for m in list(g.modules()) + list(d.modules()) if isinstance(m, torch.nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in bns])
    assert abs(convs.mean().item()) < 1e-3 and abs(convs.std().item() - 0.02) < 5e-4
    assert abs(scales.mean().item() - 1.0) < 0.01 and abs(scales.std().item() - 0.02) < 0.005
    assert all(torch.all(m.bias == 0) for m in bns)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_sizes_and_channels(size, channels):
    cfg = DCGANConfig(image_size=size, channels=channels, ngf=8, ndf=8, nz=16)
    g, d = dcgan.build(cfg)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, channels, size, size)
    assert x.abs().max() <= 1
    p = d(x)
    assert p.shape == (3,) and torch.all((p > 0) & (p < 1))
    assert torch.allclose(torch.sigmoid(d(x, logits=True)), p, atol=1e-6)
    n_stride2 = sum(1 for m in d.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2))
    assert 2 ** n_stride2 * 4 == size


def test_bad_size_rejected():
    with pytest.raises(ValueError):
        dcgan.build(DCGANConfig(image_size=48))


def test_r1_regularises_d_and_is_off_by_default(tmp_path):
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.kinds import validate
    from gan_core.training import train

    def run(gamma, name):
        cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4, r1_gamma=gamma), data=DataConfig(num_images=16, image_size=32),
                        train=TrainConfig(steps=2, batch_size=4, log_every=1, device="cpu", precision="fp32",
                                          channels_last=False, out_dir=str(tmp_path / name)))
        return train(cfg)

    plain, penalised = run(0.0, "plain"), run(10.0, "r1")
    assert "r1" not in plain["metrics"] and penalised["metrics"]["r1"] > 0
    # same seed, same data: only D's extra term differs, so the second step's losses differ
    assert plain["metrics"]["loss_d"] != penalised["metrics"]["loss_d"]
    with pytest.raises(ValueError, match="r1_gamma"):
        validate(RunConfig(model=DCGANConfig(r1_gamma=-1.0)))
    with pytest.raises(ValueError, match="double backward"):
        validate(RunConfig(model=DCGANConfig(r1_gamma=1.0), train=TrainConfig(compile=True)))


def test_diffaugment_option_is_checked_and_changes_what_d_sees():
    from gan_core import kinds
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.kinds import validate
    from gan_core import training as train_mod
    from gan_core.models.base import Batch

    with pytest.raises(ValueError, match="diffaugment"):
        validate(RunConfig(model=DCGANConfig(diffaugment="color,blur")))
    validate(RunConfig(model=DCGANConfig(diffaugment="color, translation,cutout")))
    real, noise = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8, 1, 1)
    outs = []
    for policy in ("", "translation,cutout", "translation,cutout"):
        cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4, image_size=32, diffaugment=policy),
                        data=DataConfig(image_size=32), train=TrainConfig(precision="fp32"))
        torch.manual_seed(0)
        m = train_mod.build_models(cfg, torch.device("cpu"))
        outs.append(kinds.KINDS["dcgan"].train_step(m, Batch(real, noise, torch.Generator().manual_seed(3))))
    assert outs[1]["loss_d"] != outs[0]["loss_d"]  # D saw augmented images
    assert outs[1]["loss_d"] == outs[2]["loss_d"]  # drawn from the step's generator: reproducible


def test_lazy_r1_runs_on_every_nth_step_scaled_and_blocks_the_graph():
    from gan_core import kinds
    from gan_core import training as train_mod
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.graphs import graph_blocker
    from gan_core.kinds import validate
    from gan_core.models.base import Batch

    real, noise = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8, 1, 1)

    def step(gamma, every, step_number):
        cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4, image_size=32, r1_gamma=gamma, r1_every=every),
                        data=DataConfig(image_size=32), train=TrainConfig(precision="fp32"))
        torch.manual_seed(0)
        m = train_mod.build_models(cfg, torch.device("cpu"))
        out = kinds.KINDS["dcgan"].train_step(m, Batch(real, noise, None, step_number))
        return out, next(m.d_core.parameters()).detach().clone()

    plain, w_plain = step(0.0, 1, 3)
    skipped, w_skipped = step(1.0, 4, 3)  # step 3 of every 4th: no penalty, the plain update
    assert skipped["r1"] == 0 and torch.equal(w_plain, w_skipped)
    lazy, w_lazy = step(1.0, 4, 4)
    eager, _ = step(1.0, 1, 4)
    assert lazy["r1"] == pytest.approx(4 * eager["r1"].item(), rel=1e-5)  # reported x4: a window's mean estimates it
    assert not torch.equal(w_lazy, w_plain)
    with pytest.raises(ValueError, match="r1_every"):
        validate(RunConfig(model=DCGANConfig(r1_every=0)))
    assert "lazy R1" in graph_blocker(RunConfig(model=DCGANConfig(r1_gamma=1.0, r1_every=16)), "bf16")
    assert graph_blocker(RunConfig(model=DCGANConfig(r1_gamma=1.0)), "bf16") is None


def test_d_input_blur_fades_keeps_flat_images_and_changes_what_d_sees():
    from gan_core import kinds
    from gan_core import training as train_mod
    from gan_core.augment import gaussian_blur
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.graphs import graph_blocker
    from gan_core.kinds import validate
    from gan_core.models.base import Batch

    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat, atol=1e-6)  # a flat image stays flat, also at the border
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 8:] = 1
    blurred = gaussian_blur(edge, 1.5)
    assert blurred[0, 0, 0, 7] > 0.1 and blurred[0, 0, 0, 8] < 0.9  # the step is softened
    assert torch.allclose(blurred.mean(), edge.mean(), atol=0.02)
    cfg = DCGANConfig(d_blur=4.0, d_blur_steps=1000)
    assert dcgan.d_blur_sigma(cfg, 0) == 4.0 and dcgan.d_blur_sigma(cfg, 500) == 2.0 and dcgan.d_blur_sigma(cfg, 2000) == 0
    assert dcgan.d_blur_sigma(DCGANConfig(d_blur=1.0), 10**6) == 1.0  # no fade: constant
    with pytest.raises(ValueError, match="d_blur"):
        validate(RunConfig(model=DCGANConfig(d_blur=-1.0)))
    assert "blur" in graph_blocker(RunConfig(model=cfg), "bf16")
    real, noise = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8, 1, 1)
    losses = []
    for sigma in (0.0, 3.0):
        run = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4, image_size=32, d_blur=sigma, d_blur_steps=100),
                        data=DataConfig(image_size=32), train=TrainConfig(precision="fp32"))
        torch.manual_seed(0)
        m = train_mod.build_models(run, torch.device("cpu"))
        losses.append(kinds.KINDS["dcgan"].train_step(m, Batch(real, noise, None, 10))["loss_d"])
    assert losses[0] != losses[1]


def test_d_norm_none_judges_each_image_alone():
    """model.d_norm=none drops D's BatchNorm (same layer indices) and gives its convs biases instead, so
    an image's logit no longer depends on the other images in its batch; the seed's D (batch) does in
    training mode."""
    from gan_core.config import RunConfig
    from gan_core.kinds import validate
    cfg = DCGANConfig(nz=8, ngf=4, ndf=4, image_size=32)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    for norm, alone in (("batch", False), ("none", True)):
        torch.manual_seed(0)
        _, d = dcgan.build(dataclasses.replace(cfg, d_norm=norm))
        d.train()
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) is not alone
        assert len(d.main) == len(dcgan.build(cfg)[1].main)  # checkpoints keep the seed's key names
        whole, half = d(x, logits=True), d(x[:3], logits=True)
        assert torch.allclose(whole[:3], half, atol=1e-5) is alone
        convs = [m for m in d.main if isinstance(m, torch.nn.Conv2d)][:-1]  # without BatchNorm's shift, a bias
        assert all((c.bias is not None) is alone for c in convs)
    with pytest.raises(ValueError, match="d_norm"):
        validate(RunConfig(model=DCGANConfig(d_norm="layer")))


def test_self_supervised_d_redraws_real_images(monkeypatch):
    """model.d_recon > 0 gives D a decoder that redraws each real image from D's last feature map; the
    loss compares it with the image D was shown, area-averaged to the decoder's size (at most 32 px);
    D's updates lower it on a fixed batch, and the seed's D (0) has no decoder."""
    from gan_core import kinds
    from gan_core import training as train_mod
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.losses import reconstruction_loss
    from gan_core.models.base import Batch

    img = torch.rand(2, 3, 64, 64) * 2 - 1
    assert reconstruction_loss(torch.nn.functional.avg_pool2d(img, 2), img) < 1e-10  # same picture at 32 px
    assert reconstruction_loss(-torch.nn.functional.avg_pool2d(img, 2), img) > 0.1
    assert dcgan.build(DCGANConfig())[1].decoder is None

    cfg = DCGANConfig(nz=8, ngf=8, ndf=8, image_size=64, d_recon=1.0)
    _, d = dcgan.build(cfg)
    logits, redrawn = d(img, logits=True, redraw=True)
    assert logits.shape == (2,) and redrawn.shape == (2, 3, 32, 32)
    assert torch.allclose(logits, d(img, logits=True), atol=1e-5)

    with pytest.raises(ValueError, match="no decoder"):
        dcgan.build(DCGANConfig(nz=8, ngf=8, ndf=8))[1](img, redraw=True)

    run = RunConfig(model=dataclasses.replace(cfg, image_size=32), data=DataConfig(image_size=32),
                    train=TrainConfig(precision="fp32"))
    m = train_mod.build_models(run, torch.device("cpu"))
    real = (torch.rand(8, 3, 1, 1) * 2 - 1).expand(8, 3, 32, 32).clone()  # flat colours: easy to redraw
    real[:4, :, 8:20, 8:20] = -real[:4, :, 8:20, 8:20]
    step = kinds.KINDS["dcgan"].train_step
    # the target is the image D was shown (here with instance noise), not the clean batch
    shown, targets = [], []
    hook = m.d_core.register_forward_pre_hook(lambda mod, args, kwargs: shown.append(args[0].detach().clone()),
                                              with_kwargs=True)
    with monkeypatch.context() as patch:
        patch.setattr(dcgan, "reconstruction_loss",
                      lambda redrawn, image: targets.append(image.detach().clone()) or reconstruction_loss(redrawn, image))
        step(m, Batch(real, torch.randn(8, 8, 1, 1), torch.Generator().manual_seed(0), 0, 1.0, 0.2))
    hook.remove()
    assert torch.equal(targets[0], shown[0]) and not torch.equal(targets[0], real)
    recons = [float(step(m, Batch(real, torch.randn(8, 8, 1, 1), None, i))["recon"]) for i in range(1, 121)]
    assert sum(recons[-10:]) / 10 < 0.7 * recons[0]
    with pytest.raises(ValueError, match="d_recon"):
        kinds.validate(RunConfig(model=DCGANConfig(d_recon=-1.0)))


@pytest.mark.parametrize("d_norm", ["batch", "none"])
def test_widen_discriminator_gives_the_same_logits_and_refuses_other_sizes(d_norm):
    from gan_core.models.dcgan import DCGANConfig, Discriminator, widen_discriminator
    torch.manual_seed(0)
    old, new = Discriminator(DCGANConfig(ndf=4, d_norm=d_norm)), Discriminator(DCGANConfig(ndf=8, d_norm=d_norm))
    x = torch.randn(6, 3, 64, 64)
    old.train()(x)  # running statistics that are not the init's
    widen_discriminator(old, new)
    for mode in (True, False):
        assert torch.allclose(old.train(mode)(x, logits=True), new.train(mode)(x, logits=True), atol=1e-5)
    widen_discriminator(old, new, noise=0.05)
    moved = (old.train()(x, logits=True) - new.train()(x, logits=True)).abs().max()
    assert 0 < moved < 0.5
    with pytest.raises(ValueError, match="twice the width"):
        widen_discriminator(old, Discriminator(DCGANConfig(ndf=12, d_norm=d_norm)))


def test_latent_mmd_is_near_zero_for_one_distribution_and_grows_with_the_gap():
    from gan_core.losses import latent_mmd
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 16, generator=gen), torch.randn(256, 16, generator=gen)
    same = float(latent_mmd(a, b))
    assert abs(same) < 0.01
    assert float(latent_mmd(a + 0.5, b)) > 10 * abs(same)
    assert float(latent_mmd(a * 0.2, b)) > float(latent_mmd(a * 0.8, b)) > abs(same)  # codes bunched up: far
    assert float(latent_mmd(b, b)) < 0  # unbiased: identical samples are not scored as a perfect match of 0


def test_encoder_teaches_g_to_redraw_real_images_and_is_saved_with_the_run(tmp_path):
    """model.recon_weight > 0 trains an encoder beside the GAN: G's loss adds the error of G's redrawing of
    each real image from the encoder's latent, and the encoder's latents are pulled towards the noise's
    distribution. On a fixed batch both fall over 120 steps; the encoder is saved and resumed with its
    optimizer, refused under torchrun and in a CUDA graph; off (0), the step has no encoder."""
    from gan_core import kinds
    from gan_core import training as train_mod
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.graphs import graph_blocker
    from gan_core.models.base import Batch

    cfg = DCGANConfig(nz=8, ngf=8, ndf=8, image_size=32, recon_weight=100.0, encoder_lr=1e-3)
    run = RunConfig(model=cfg, data=DataConfig(image_size=32), train=TrainConfig(precision="fp32", lr=5e-4))
    m = train_mod.build_models(run, torch.device("cpu"))
    enc = m.extras["encoder"].module
    assert isinstance(enc, dcgan.Encoder) and enc(torch.zeros(2, 3, 32, 32)).shape == (2, 8, 1, 1)
    assert not train_mod.build_models(dataclasses.replace(run, model=dataclasses.replace(cfg, recon_weight=0.0)),
                                      torch.device("cpu")).extras
    real = (torch.rand(8, 3, 1, 1) * 2 - 1).expand(8, 3, 32, 32).clone()  # flat colours: easy to redraw
    real[:4, :, 8:20, 8:20] = -real[:4, :, 8:20, 8:20]
    step = kinds.KINDS["dcgan"].train_step
    gen = torch.Generator().manual_seed(0)
    first = step(m, Batch(real, torch.randn(8, 8, 1, 1, generator=gen), None, 0))
    assert {"redraw", "mmd", "loss_g"} <= set(first)
    logs = [step(m, Batch(real, torch.randn(8, 8, 1, 1, generator=gen), None, i)) for i in range(1, 120)]
    redraws = [float(x["redraw"]) for x in logs]
    assert sum(redraws[-10:]) / 10 < 0.5 * float(first["redraw"])
    mmds = [float(x["mmd"]) for x in logs]
    assert sum(mmds[-10:]) / 10 < 0.5 * float(first["mmd"])  # the latents move towards the noise's distribution

    # D learns from its own loss only: G's phase (the adversarial term, the redrawing, the MMD) leaves D's
    # gradients as D's update left them
    snapshots = []
    plain_update = m.update

    def update(optimizer, loss):
        plain_update(optimizer, loss)
        if optimizer is m.opt_d:
            snapshots.append([p.grad.clone() for p in m.d_core.parameters()])
    m.update = update
    step(m, Batch(real, torch.randn(8, 8, 1, 1, generator=gen), None, 200))
    assert len(snapshots) == 1
    assert all(torch.equal(a, p.grad) for a, p in zip(snapshots[0], m.d_core.parameters()))
    assert all(p.requires_grad for p in m.d_core.parameters())  # unfrozen again for the next step
    m.update = plain_update

    assert graph_blocker(run, "fp32") is not None and "beside G and D" in graph_blocker(run, "fp32")
    with pytest.raises(ValueError, match="encoder beside G and D.*torchrun"):
        train_mod.check_world(run, 2)
    train_mod.check_world(run, 1)
    train_mod.check_world(dataclasses.replace(run, model=dataclasses.replace(cfg, recon_weight=0.0)), 2)
    for bad in (dict(recon_weight=-1.0), dict(latent_mmd=float("nan")), dict(encoder_lr=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            kinds.validate(RunConfig(model=DCGANConfig(**bad)))
    with pytest.raises(ValueError, match="batch_size must be 2"):  # the MMD compares latents within a batch
        kinds.validate(RunConfig(model=DCGANConfig(recon_weight=1.0), train=TrainConfig(batch_size=1)))
    # off, a config describes G and D only: loading and the upload size check count no encoder
    assert not kinds.KINDS["dcgan"].extra_modules(DCGANConfig(), None)
    from gan_core.inference.loading import parameter_bytes
    g, d = dcgan.build(DCGANConfig())
    assert parameter_bytes(RunConfig(model=DCGANConfig())) == 2 * sum(p.numel() for net in (g, d) for p in net.parameters())
    assert "recon_weight" in kinds.KINDS["dcgan"].loss_fields  # a resumed run may switch it on

    # a run saves the encoder and its optimizer; resumed, it goes on from them
    from safetensors.torch import load_file

    from gan_core import checkpoint
    run = RunConfig(model=dataclasses.replace(cfg, recon_weight=1.0),
                    data=DataConfig(source="shapes", num_images=16, image_size=32),
                    train=TrainConfig(steps=2, batch_size=4, log_every=1, checkpoint_every=2, device="cpu",
                                      precision="fp32", out_dir=str(tmp_path / "run")))
    result = train_mod.train(run)
    assert result["step"] == 2 and {"redraw", "mmd"} <= set(result["metrics"])
    folder = checkpoint.latest_checkpoint(tmp_path / "run")
    saved = load_file(str(folder / "encoder.safetensors"))
    assert checkpoint.has_optimizer_state(folder)
    run.train.resume, run.train.steps = True, 3
    back = train_mod.build_models(run, torch.device("cpu"))
    assert train_mod.resume(run, back, tmp_path / "run") == 2
    assert torch.equal(back.extras["encoder"].module.state_dict()["main.0.weight"], saved["main.0.weight"])
    assert back.extras["encoder"].optimizer.state  # its Adam moments came back too
    assert train_mod.train(run)["steps_run"] == 1
    again = load_file(str(checkpoint.latest_checkpoint(tmp_path / "run") / "encoder.safetensors"))
    assert not torch.equal(saved["main.0.weight"], again["main.0.weight"])

    # switched off at a resume, the trained encoder is left behind, and the log says so; switched on again,
    # it starts from D's trained layers, and the log says that too
    logs = []
    off = dataclasses.replace(run, model=dataclasses.replace(run.model, recon_weight=0.0))
    off.train.steps = 4
    train_mod.train(off, on_log=logs.append)
    assert any("encoder is not used by this config" in line for line in logs)
    latest = checkpoint.latest_checkpoint(tmp_path / "run")
    assert not (latest / "encoder.safetensors").exists()
    logs.clear()
    back = train_mod.build_models(run, torch.device("cpu"))
    train_mod.resume(run, back, tmp_path / "run", on_log=logs.append)
    assert any("the encoder starts from the discriminator's layers" in line for line in logs)
    d_trunk, e = back.d_core.main.state_dict(), back.extras["encoder"].module.main.state_dict()
    last = str(len(back.extras["encoder"].module.main) - 1)  # its own last conv stays as initialised
    assert all(torch.equal(v, d_trunk[k]) for k, v in e.items() if not k.startswith(last + "."))
    assert e[last + ".weight"].shape[0] == cfg.nz
    run.train.steps = 5
    assert train_mod.train(run)["steps_run"] == 1


def test_batchnorm_momentum_zero_leaves_batchnorm_running_statistics_alone():
    """G's redrawing of real images (model.recon_weight) normalises by its batch but must not move the running
    statistics that sampling in eval mode uses."""
    g = dcgan.Generator(DCGANConfig(nz=8, ngf=8, image_size=32)).train()
    norm = g.main[1]
    before = norm.running_mean.clone()
    from gan_core.models.base import batchnorm_momentum
    with batchnorm_momentum(g, 0.0):
        g(torch.randn(4, 8) * 5)
    assert torch.equal(norm.running_mean, before) and norm.momentum == 0.1
    g(torch.randn(4, 8) * 5)
    assert not torch.equal(norm.running_mean, before)


def test_top_k_option_is_checked_and_changes_g_loss(tmp_path):
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.kinds import validate
    from gan_core.training import train

    for bad in (0.0, 1.5, "half"):
        with pytest.raises(ValueError, match="g_topk"):
            validate(RunConfig(model=DCGANConfig(g_topk=bad)))

    def run(keep, name):
        cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4, g_topk=keep), data=DataConfig(num_images=16, image_size=32),
                        train=TrainConfig(steps=1, batch_size=8, log_every=1, device="cpu", precision="fp32",
                                          channels_last=False, out_dir=str(tmp_path / name)))
        return train(cfg)["metrics"]

    every, top = run(1.0, "all"), run(0.25, "top")
    # same seed, same first D update: G's loss over the two fakes D likes best is below the batch's mean
    assert top["loss_d"] == pytest.approx(every["loss_d"]) and top["loss_g"] < every["loss_g"]
