import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core import kinds, losses, runtime
from gan_core import training as train_mod
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.data import load_dataset
from gan_core.inference.loading import load_model
from gan_core.kinds import validate
from gan_core.models.base import Batch, ema_decay_at, step_generator
from gan_core.models.dcgan import DCGANConfig
from safetensors.torch import load_file


def tiny_cfg(out_dir, **train_kw) -> RunConfig:
    kw = dict(steps=6, batch_size=8, log_every=2, sample_every=3, checkpoint_every=100, out_dir=str(out_dir),
              device="cpu", precision="fp32", ema_decay=0.9, conv_gemm=False)  # (its timings: tests/test_convgemm.py)
    kw.update(train_kw)
    return RunConfig(model=DCGANConfig(nz=16, ngf=8, ndf=8),
                     data=DataConfig(source="shapes", num_images=64, image_size=32), train=TrainConfig(**kw))


def dcgan_step(m, real, noise, real_label=1.0, input_noise_std=0.0, gen=None):
    """One update of the dcgan kind, through the registry."""
    return kinds.KINDS["dcgan"].train_step(m, Batch(real, noise, gen, 0, real_label, input_noise_std))


def test_losses_match_sigmoid_plus_bce():
    torch.manual_seed(0)
    real, fake = torch.randn(17) * 3, torch.randn(17) * 3
    bce = nn.BCELoss()
    expected_d = bce(torch.sigmoid(real), torch.ones(17)) + bce(torch.sigmoid(fake), torch.zeros(17))
    assert torch.allclose(losses.d_loss_bce(real, fake), expected_d, atol=1e-5)
    assert torch.allclose(losses.g_loss_bce(fake), bce(torch.sigmoid(fake), torch.ones(17)), atol=1e-5)
    # Stable where sigmoid + BCELoss is not: a confident wrong logit gives a large finite loss.
    assert torch.isfinite(losses.g_loss_bce(torch.tensor([-200.0]))) and losses.g_loss_bce(torch.tensor([-200.0])) > 100
    assert losses.d_loss_bce(torch.tensor([30.0]), torch.tensor([-30.0])) < 1e-6


def test_train_step_equals_the_tutorial_update():
    """Our step (logits + BCE-with-logits, one D backward, D frozen in the G step) updates the
    weights exactly as the tutorial's (Sigmoid + BCELoss, two D backwards, D grads computed in the G step)."""
    torch.manual_seed(0)
    cfg = RunConfig(model=DCGANConfig(nz=16, ngf=8, ndf=8, image_size=32),
                    data=DataConfig(image_size=32), train=TrainConfig(precision="fp32", channels_last=False))
    m = train_mod.build_models(cfg, torch.device("cpu"))
    g_ref, d_ref = copy.deepcopy(m.g_core), copy.deepcopy(m.d_core)
    opt_g = torch.optim.Adam(g_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d_ref.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(8, 3, 32, 32) * 2 - 1
    noise = torch.randn(8, 16, 1, 1)
    for _ in range(3):
        dcgan_step(m, real, noise)
        criterion = nn.BCELoss()
        d_ref.zero_grad()
        err_real = criterion(d_ref(real), torch.ones(8))
        err_real.backward()
        fake = g_ref(noise)
        err_fake = criterion(d_ref(fake.detach()), torch.zeros(8))
        err_fake.backward()
        opt_d.step()
        g_ref.zero_grad()
        criterion(d_ref(fake), torch.ones(8)).backward()
        opt_g.step()
    for ours, ref in ((m.g_core, g_ref), (m.d_core, d_ref)):
        for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4), name


def test_tiny_run_trains_reports_and_saves(tmp_path):
    progress, samples, saved = [], [], []
    result = train_mod.train(tiny_cfg(tmp_path / "run"), on_progress=lambda s, m: progress.append((s, m)),
                             on_sample=lambda s, x: samples.append((s, x.shape)),
                             on_checkpoint=lambda s, p: saved.append(s))
    assert [s for s, _ in progress] == [1, 2, 4, 6]
    assert all(math.isfinite(m["loss_d"]) and math.isfinite(m["loss_g"]) and m["images_per_s"] > 0
               for _, m in progress)
    assert samples == [(3, (64, 3, 32, 32)), (6, (64, 3, 32, 32))]
    assert saved == [6] and result["step"] == 6 and result["stopped"] is None
    folder = ckpt.latest_checkpoint(tmp_path / "run")
    assert folder.name == "step_00000006" and result["checkpoint"] == str(folder)
    assert {p.name for p in folder.iterdir()} == {"config.json", "generator.safetensors", "discriminator.safetensors",
                                                  "generator_ema.safetensors", "optimizer.safetensors"}
    model = load_model(folder)
    cfg, g, meta = model.cfg, model.g, model.meta
    assert meta["step"] == 6 and cfg.model.image_size == 32 and g(torch.randn(2, 16)).shape == (2, 3, 32, 32)


def test_should_stop_saves_and_resume_is_exact(tmp_path):
    """Interrupted at step 4 and resumed to 8 ends with the same weights as 8 steps straight."""
    full = train_mod.train(tiny_cfg(tmp_path / "full", steps=8))
    calls = []

    def stop_at_4():
        calls.append(1)
        return len(calls) == 4  # polled after every step (one process)

    part = train_mod.train(tiny_cfg(tmp_path / "split", steps=8), should_stop=stop_at_4)
    assert part["step"] == 4 and part["stopped"] == "stopped by request"
    resumed = train_mod.train(tiny_cfg(tmp_path / "split", steps=8, resume=True))
    how = {k: (full[k], part[k], resumed[k]) for k in ("precision", "channels_last", "runtime", "conv_gemm")}
    assert resumed["step"] == 8 and resumed["steps_run"] == 4
    for name in ("generator", "discriminator", "generator_ema"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} (how each run ran: {how})"
    assert full["metrics"]["loss_d"] == resumed["metrics"]["loss_d"]


def test_resume_refuses_a_different_model(tmp_path):
    train_mod.train(tiny_cfg(tmp_path / "r", steps=2))
    cfg = tiny_cfg(tmp_path / "r", steps=4, resume=True)
    cfg.model.ngf = 16
    with pytest.raises(ValueError, match="different model config"):
        train_mod.train(cfg)


def test_resume_takes_new_loss_weights_and_says_so(tmp_path):
    """R1's weight is a loss setting, not the weights': a resumed run may change it (logged, and saved
    with the next checkpoint), while a width change beside it is still refused."""
    from gan_core import kinds
    train_mod.train(tiny_cfg(tmp_path / "r", steps=2, checkpoint_every=2))
    cfg = tiny_cfg(tmp_path / "r", steps=4, resume=True, checkpoint_every=2)
    cfg.model.r1_gamma, cfg.model.r1_every = 0.5, 2
    lines = []
    out = train_mod.train(cfg, on_log=lines.append)
    assert out["step"] == 4 and out["steps_run"] == 2
    assert any("model.r1_gamma 0.0 -> 0.5" in line and "model.r1_every 1 -> 2" in line for line in lines), lines
    saved, _ = kinds.read_config(out["checkpoint"])
    assert saved.model.r1_gamma == 0.5 and saved.model.r1_every == 2
    cfg = tiny_cfg(tmp_path / "r", steps=6, resume=True)
    cfg.model.r1_gamma, cfg.model.ndf = 1.0, 16
    with pytest.raises(ValueError, match=r"differs in model\.ndf;"):
        train_mod.train(cfg)


def test_a_resumed_run_trains_at_the_rates_it_is_given(tmp_path):
    """train.lr / lr_d / betas set at resume are used, not the saved optimizers' (Adam's moments are kept)."""
    from gan_core import checkpoint as ckpt
    train_mod.train(tiny_cfg(tmp_path / "r", steps=2, checkpoint_every=2))
    from gan_core.config import sync_model_to_data
    cfg = sync_model_to_data(tiny_cfg(tmp_path / "r", lr=5e-5, lr_d=1e-4, beta1=0.0))
    m = train_mod.build_models(cfg, torch.device("cpu"))
    ckpt.load_optimizers(ckpt.latest_checkpoint(tmp_path / "r"), m.optimizers())
    assert m.opt_g.param_groups[0]["lr"] == 5e-5 and m.opt_d.param_groups[0]["lr"] == 1e-4
    assert m.opt_g.param_groups[0]["betas"] == (0.0, 0.999)
    assert any(state.get("exp_avg") is not None for state in m.opt_g.state.values())  # the moments came back
    resumed = train_mod.train(tiny_cfg(tmp_path / "r", steps=4, resume=True, lr=5e-5))
    assert resumed["step"] == 4


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path / "nan", steps=8, checkpoint_every=2)
    kind = kinds.KINDS["dcgan"]

    def poisoned(m, batch):  # (by step index: the precision chooser also runs a few steps)
        out = kind.train_step(m, batch)
        if batch.step >= 4:
            out["loss_d"] = out["loss_d"] * float("nan")
        return out

    monkeypatch.setitem(kinds.KINDS, "dcgan", dataclasses.replace(kind, train_step=poisoned))
    result = train_mod.train(cfg)
    assert result["stopped"].startswith("non-finite loss at step 6")
    assert ckpt.latest_checkpoint(tmp_path / "nan").name == "step_00000004"


def test_seeded_runs_are_reproducible(tmp_path):
    a = train_mod.train(tiny_cfg(tmp_path / "a", steps=4))
    b = train_mod.train(tiny_cfg(tmp_path / "b", steps=4))
    ga = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / "generator.safetensors"))
    gb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / "generator.safetensors"))
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    timing = ("images_per_s", "eta_s")
    assert {k: v for k, v in a["metrics"].items() if k not in timing} == \
        {k: v for k, v in b["metrics"].items() if k not in timing}


def test_batches_are_index_gathers_in_range():
    images = load_dataset(DataConfig(source="shapes", num_images=10, image_size=32), use_cache=False).images
    gen = step_generator(0, 0, 5, torch.device("cpu"))
    batch = train_mod.get_batch(images, 7, gen, torch.channels_last)
    assert batch.shape == (7, 3, 32, 32) and batch.is_contiguous(memory_format=torch.channels_last)
    assert batch.min() >= -1 and batch.max() <= 1
    gen2 = step_generator(0, 0, 5, torch.device("cpu"))
    assert torch.equal(batch, train_mod.get_batch(images, 7, gen2, torch.channels_last))


def test_d_learning_rate_defaults_to_g_and_can_differ():
    cfg = RunConfig(model=DCGANConfig(nz=4, ngf=4, ndf=4), train=TrainConfig(lr=1e-4, device="cpu"))
    m = train_mod.build_models(cfg, torch.device("cpu"))
    assert m.opt_g.param_groups[0]["lr"] == m.opt_d.param_groups[0]["lr"] == 1e-4
    cfg.train.lr_d = 4e-4
    m = train_mod.build_models(cfg, torch.device("cpu"))
    assert m.opt_g.param_groups[0]["lr"] == 1e-4 and m.opt_d.param_groups[0]["lr"] == 4e-4
    cfg.train.lr_d = float("nan")
    with pytest.raises(ValueError, match="lr_d"):
        validate(cfg)


def test_bf16_autocast_step_runs_and_is_close_to_fp32():
    torch.manual_seed(0)
    cfg = RunConfig(model=DCGANConfig(nz=16, ngf=8, ndf=8, image_size=32), data=DataConfig(image_size=32),
                    train=TrainConfig(precision="bf16"))
    m = train_mod.build_models(cfg, torch.device("cpu"))
    out = dcgan_step(m, torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16, 1, 1))
    assert all(torch.isfinite(v) for v in out.values())
    assert 0 < out["d_real"] < 1 and abs(out["loss_d"].item() - 2 * math.log(2)) < 0.3


def test_label_smoothing_and_instance_noise_options():
    real, fake = torch.randn(9), torch.randn(9)
    bce = nn.BCELoss()
    smoothed = bce(torch.sigmoid(real), torch.full((9,), 0.9)) + bce(torch.sigmoid(fake), torch.zeros(9))
    assert torch.allclose(losses.d_loss_bce(real, fake, real_label=0.9), smoothed, atol=1e-5)
    t = TrainConfig(instance_noise=0.2, instance_noise_steps=100)
    assert train_mod.instance_noise_std(t, 0) == pytest.approx(0.2)
    assert train_mod.instance_noise_std(t, 50) == pytest.approx(0.1)
    assert train_mod.instance_noise_std(t, 200) == 0.0
    assert train_mod.instance_noise_std(TrainConfig(), 5) == 0.0
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 10**6) == 0.999

    cfg = RunConfig(model=DCGANConfig(nz=16, ngf=8, ndf=8, image_size=32), data=DataConfig(image_size=32),
                    train=TrainConfig(precision="fp32"))
    real_images, noise = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16, 1, 1)
    outs = []
    for std in (0.0, 0.5, 0.5):
        torch.manual_seed(0)
        m = train_mod.build_models(cfg, torch.device("cpu"))
        outs.append(dcgan_step(m, real_images, noise, 0.9, std, torch.Generator().manual_seed(1)))
    assert outs[1]["loss_d"] != outs[0]["loss_d"]  # noise changes what D sees
    assert outs[1]["loss_d"] == outs[2]["loss_d"]  # and is reproducible from the generator


def test_iic_loss_bounds_and_gradients():
    k = 4
    big = 50.0
    codes = torch.arange(8) % k
    agree = torch.nn.functional.one_hot(codes, k).float() * big
    # Perfect, balanced agreement reaches the minimum -log K.
    assert losses.iic_loss(agree, agree).item() == pytest.approx(-math.log(k), abs=1e-4)
    # Everything in one cluster carries no information.
    one = torch.zeros(8, k)
    one[:, 0] = big
    assert losses.iic_loss(one, one).item() == pytest.approx(0.0, abs=1e-4)
    # Independent views: mutual information 0.
    view_a = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1]), 2).float() * big
    view_b = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1]), 2).float() * big
    assert losses.iic_loss(view_a, view_b).item() == pytest.approx(0.0, abs=1e-4)
    # Hand-computed: pairs (0,0) (0,1) (1,1) (1,1) -> symmetrised joint [[1/4, 1/8], [1/8, 1/2]],
    # marginals (3/8, 5/8).
    half = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1]), 2).float() * big
    mostly = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1]), 2).float() * big
    mi = (1 / 4) * math.log((1 / 4) / (9 / 64)) + 2 * (1 / 8) * math.log((1 / 8) / (15 / 64)) \
        + (1 / 2) * math.log((1 / 2) / (25 / 64))
    assert losses.iic_loss(half, mostly).item() == pytest.approx(-mi, abs=1e-4)
    # Hand-computed: uniform predictions give joint = 1/K^2 everywhere -> 0.
    assert losses.iic_loss(torch.zeros(5, k), torch.zeros(5, k)).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(16, k, requires_grad=True)
    losses.iic_loss(logits, logits + 0.1 * torch.randn(16, k)).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_code_ce_and_catgan_losses():
    codes = torch.tensor([0, 1, 2])
    right = torch.nn.functional.one_hot(codes, 3).float() * 20
    assert losses.code_ce(right, codes) < 1e-6 and losses.code_ce(-right, codes) > 10
    uniform = torch.zeros(6, 3)
    certain = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float() * 30
    # CatGAN D: certain+balanced on real, uncertain on fake -> -log3 - log3
    assert losses.catgan_d_loss(certain, uniform).item() == pytest.approx(-2 * math.log(3), abs=1e-4)
    assert losses.catgan_g_loss(certain).item() == pytest.approx(-math.log(3), abs=1e-4)
    assert losses.catgan_g_loss(uniform).item() == pytest.approx(0.0, abs=1e-5)


def test_resume_edge_cases(tmp_path):
    first = train_mod.train(tiny_cfg(tmp_path / "r", steps=4))
    saved = json.loads((Path(first["checkpoint"]) / "config.json").read_text())
    again = train_mod.train(tiny_cfg(tmp_path / "r", steps=4, resume=True))  # already finished
    assert again["steps_run"] == 0 and again["checkpoint"] == first["checkpoint"]
    assert json.loads((Path(first["checkpoint"]) / "config.json").read_text()) == saved  # not rewritten
    (tmp_path / "r" / "latest").unlink()  # e.g. killed between the folder rename and the pointer
    assert ckpt.latest_checkpoint(tmp_path / "r").name == "step_00000004"
    (Path(first["checkpoint"]) / "optimizer.safetensors").unlink()
    with pytest.raises(ValueError, match="no optimizer state"):
        train_mod.train(tiny_cfg(tmp_path / "r", steps=6, resume=True))


def test_resume_with_the_ema_copy_switched_off_says_it_is_left_behind(tmp_path):
    train_mod.train(tiny_cfg(tmp_path / "r", steps=2, checkpoint_every=2))
    lines = []
    out = train_mod.train(tiny_cfg(tmp_path / "r", steps=4, resume=True, ema_decay=0.0), on_log=lines.append)
    assert out["steps_run"] == 2
    assert any("generator_ema is not used by this config" in line for line in lines), lines
    assert not (Path(out["checkpoint"]) / "generator_ema.safetensors").exists()


def test_bad_loop_settings_and_devices_are_clear_errors(tmp_path):
    for field, value in (("log_every", 0), ("checkpoint_every", 0), ("sample_every", -1)):
        cfg = tiny_cfg(tmp_path)
        setattr(cfg.train, field, value)
        with pytest.raises(ValueError, match=field):
            validate(cfg)
    cfg = tiny_cfg(tmp_path)
    cfg.data.limit = -3
    with pytest.raises(ValueError, match="data.limit"):
        validate(cfg)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            runtime.resolve_device("cuda")
    with pytest.raises(ValueError, match="train.device"):
        runtime.resolve_device("tpu9")


def test_step_streams_do_not_collide():
    cpu = torch.device("cpu")
    draws = {tuple(torch.randint(0, 2**30, (4,), generator=step_generator(s, r, k, cpu)).tolist())
             for s, r, k in ((0, 1, 0), (0, 0, 7919), (1, 0, 0), (0, 0, 1_000_003), (0, 0, 0))}
    assert len(draws) == 5


def test_the_cli_bar_shows_the_measured_rate_and_time_left():
    from scripts.train import TRAIN_BAR, progress_text

    text = progress_text({"images_per_s": 640.0, "eta_s": 100.0, "loss_d": 0.6931, "loss_g": 0.7}, batch_size=64)
    assert text == "10.00 step/s, 640 img/s, 1 min 40 s left, loss_d 0.693, loss_g 0.700"
    assert "{rate" not in TRAIN_BAR and "{remaining" not in TRAIN_BAR  # tqdm's own guesses are not shown


def test_ema_generator_gets_batchnorm_statistics_of_its_own(tmp_path):
    """The EMA copy's running statistics are measured on its own activations, not the live G's."""
    from gan_core.models.base import recalibrate_batchnorm
    from gan_core.models.dcgan import build

    torch.manual_seed(0)
    g, _ = build(DCGANConfig(nz=16, ngf=8, ndf=8, image_size=32))
    ema = copy.deepcopy(g)
    with torch.no_grad():  # EMA weights that differ from the live G's
        for p in ema.parameters():
            p.mul_(1.5).add_(0.01)
    first_bn = ema.main[1]
    seen = []
    hook = ema.main[0].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    latents = [torch.randn(32, 16, 1, 1) for _ in range(3)]
    ema.eval()
    assert recalibrate_batchnorm(ema, latents)
    hook.remove()
    acts = torch.cat(seen)  # the first conv's outputs over all three batches
    assert torch.allclose(first_bn.running_mean, acts.mean((0, 2, 3)), atol=1e-5)
    assert not ema.training and first_bn.momentum == 0.1  # mode and momentum restored
    assert not recalibrate_batchnorm(nn.Sequential(nn.Linear(2, 2)), [torch.randn(3, 2)])

    # The loop recalibrates before it saves: the saved EMA statistics are not the live G's.
    result = train_mod.train(tiny_cfg(tmp_path / "run"))
    folder = Path(result["checkpoint"])
    live, averaged = load_file(folder / "generator.safetensors"), load_file(folder / "generator_ema.safetensors")
    key = "main.1.running_mean"
    assert not torch.allclose(live[key].float(), averaged[key].float())


def test_progress_from_the_first_step_saves_on_the_clock_and_stops_mid_window(tmp_path):
    steps_seen = []
    result = train_mod.train(tiny_cfg(tmp_path / "a", steps=4, log_every=50, checkpoint_minutes=1e-9,
                                      keep_checkpoints=10), on_progress=lambda step, _m: steps_seen.append(step))
    assert steps_seen[0] == 1  # not only at log_every
    saved = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert saved == [f"step_{i:08d}" for i in (1, 2, 3, 4)]  # every step was due on the clock
    plain = train_mod.train(tiny_cfg(tmp_path / "b", steps=4, checkpoint_minutes=0, keep_checkpoints=10))
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step_00000004"]
    assert plain["step"] == 4

    calls = []
    stopped = train_mod.train(tiny_cfg(tmp_path / "c", steps=50, log_every=40),
                              should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert stopped["stopped"] == "stopped by request" and stopped["step"] == 3  # not at step 40
    assert Path(stopped["checkpoint"]).name == "step_00000003"
    with pytest.raises(ValueError, match="checkpoint_minutes"):
        validate(dataclasses.replace(tiny_cfg(tmp_path / "d"), train=TrainConfig(checkpoint_minutes=-1)))


def test_init_from_starts_a_new_run_from_an_exported_checkpoints_weights(tmp_path):
    from gan_core.config import sync_model_to_data
    from gan_core.inference.loading import export
    first = train_mod.train(tiny_cfg(tmp_path / "a", steps=4))
    shipped = export(first["checkpoint"], tmp_path / "shipped")  # fp16 weights, no optimizer state
    logs = []
    # the models it builds hold exactly the shipped weights (cast back from fp16)
    cfg = sync_model_to_data(tiny_cfg(tmp_path / "b", init_from=str(shipped)))
    m = train_mod.build_models(cfg, torch.device("cpu"), wrap=False)
    assert train_mod.init_weights(cfg, m, str(shipped), on_log=logs.append) == shipped
    assert any("fresh optimizers, step 0" in line for line in logs)
    built = m.modules()
    for role in ("generator", "discriminator", "generator_ema"):
        a, b = load_file(ckpt.weights_file(shipped, role)), built[role].state_dict()
        assert all(torch.equal(a[k].float(), b[k].float()) for k in a), role
    # and it trains on from there, counting its own steps
    on = train_mod.train(tiny_cfg(tmp_path / "c", steps=3, init_from=str(shipped)))
    assert on["step"] == 3 and ckpt.has_optimizer_state(on["checkpoint"])
    # its EMA copy goes on as an average of the shipped run's 4 steps and these (no second warm-up), and
    # a resume keeps counting so
    assert m.ema_age == 4 and ckpt.read_meta(on["checkpoint"])["ema_age"] == 4
    g = load_file(ckpt.weights_file(on["checkpoint"], "generator"))
    fresh = train_mod.train(tiny_cfg(tmp_path / "d", steps=3, seed=1))  # (seed 0 would start where "a" did)
    g_fresh = load_file(ckpt.weights_file(fresh["checkpoint"], "generator"))
    g0 = load_file(ckpt.weights_file(shipped, "generator"))
    convs = [k for k in g0 if k.endswith("weight") and g0[k].dim() == 4]
    near = sum((g[k].float() - g0[k].float()).abs().mean() for k in convs)
    far = sum((g_fresh[k].float() - g0[k].float()).abs().mean() for k in convs)
    assert near < far / 5  # three small Adam steps from the shipped weights, not from a new init
    # a model config that is not the checkpoint's, or no checkpoint at all, is one clear error
    wider = tiny_cfg(tmp_path / "e", steps=1, init_from=str(shipped))
    wider = dataclasses.replace(wider, model=dataclasses.replace(wider.model, ngf=16))
    with pytest.raises(ValueError, match="model.ngf"):
        train_mod.train(wider)
    with pytest.raises(ValueError, match="train.init_from"):
        train_mod.train(tiny_cfg(tmp_path / "f", steps=1, init_from=str(tmp_path / "nowhere")))
    # a resumed run that has checkpoints goes on from them, not from init_from
    again = train_mod.train(tiny_cfg(tmp_path / "c", steps=4, resume=True, init_from=str(tmp_path / "nowhere")))
    assert again["step"] == 4 and again["steps_run"] == 1 and ckpt.read_meta(again["checkpoint"])["ema_age"] == 4
    # exported, it keeps that age and forgets the local path it started from; a run from it counts both runs
    shipped_c = export(again["checkpoint"], tmp_path / "shipped_c")
    meta_c = ckpt.read_meta(shipped_c)
    assert meta_c["ema_age"] == 4 and meta_c["config"]["train"]["init_from"] is None
    m2 = train_mod.build_models(cfg, torch.device("cpu"), wrap=False)
    train_mod.init_weights(cfg, m2, str(shipped_c))
    assert m2.ema_age == 4 + 4
    # without an EMA of its own, the run says that the source's EMA copy is not used
    no_ema = sync_model_to_data(tiny_cfg(tmp_path / "g", ema_decay=0.0))
    lines = []
    train_mod.init_weights(no_ema, train_mod.build_models(no_ema, torch.device("cpu"), wrap=False), str(shipped),
                           on_log=lines.append)
    assert any("does not keep" in line for line in lines)


def test_top_k_generator_loss_counts_only_the_fakes_d_rates_most_real():
    logits = torch.tensor([-5.0, 3.0, -1.0, 2.0, 0.5], requires_grad=True)
    assert torch.allclose(losses.g_loss_bce(logits, keep=1.0), losses.g_loss_bce(logits))
    loss = losses.g_loss_bce(logits, keep=0.5)  # ceil(2.5) = 3 kept: 3.0, 2.0, 0.5
    expected = F.binary_cross_entropy_with_logits(torch.tensor([3.0, 2.0, 0.5]), torch.ones(3))
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits.grad[0] == 0 and logits.grad[2] == 0  # the worst two do not pull G
    assert torch.allclose(logits.grad[[1, 3, 4]], (torch.sigmoid(torch.tensor([3.0, 2.0, 0.5])) - 1) / 3)
    assert torch.allclose(losses.g_loss_bce(logits.detach(), keep=0.01), F.softplus(torch.tensor(-3.0)))  # at least one
    hundred = -torch.arange(100.0) / 10  # 0.07 of 100 keeps 7 (not 8, as the float product's ceiling would)
    assert torch.allclose(losses.g_loss_bce(hundred, keep=0.07), F.softplus(torch.arange(7.0) / 10).mean())
