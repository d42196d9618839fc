"""CUDA paths; skipped without a GPU (run by scripts/gpu_check.sh on a lent GPU machine)."""
import pytest
import torch

from gan_core import kinds
from gan_core import training as train_mod
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.models.base import Batch
from gan_core.models.dcgan import DCGANConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cfg(tmp_path, **kw):
    return RunConfig(model=DCGANConfig(), data=DataConfig(source="shapes", num_images=512),
                     train=TrainConfig(**{"steps": 20, "batch_size": 64, "log_every": 10, "out_dir": str(tmp_path / "run"),
                                          "device": "cuda", "ema_decay": 0.99, **kw}))


def test_cuda_fast_path_is_configured(tmp_path):
    m = train_mod.build_models(_cfg(tmp_path, precision="bf16", channels_last=True), torch.device("cuda"))
    assert m.autocast_dtype is torch.bfloat16 and m.memory_format is torch.channels_last
    assert m.opt_g.defaults.get("fused") and m.opt_d.defaults.get("fused")
    assert next(m.g_core.parameters()).is_cuda


def test_cuda_train_runs_with_data_on_gpu(tmp_path):
    result = train_mod.train(_cfg(tmp_path))
    assert result["step"] == 20 and result["device"] == "cuda" and result["precision"] in ("fp32", "bf16", "fp16")
    assert result["runtime"] == "measured"
    assert all(v == v for v in result["metrics"].values())  # no NaN


def test_cuda_bf16_step_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    real = torch.rand(64, 3, 64, 64, device="cuda") * 2 - 1
    noise = torch.randn(64, 100, 1, 1, device="cuda")
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        m = train_mod.build_models(_cfg(tmp_path, precision=precision), torch.device("cuda"))
        out[precision] = kinds.KINDS["dcgan"].train_step(m, Batch(real, noise))
    for k in ("loss_d", "loss_g"):
        assert abs(out["fp32"][k].item() - out["bf16"][k].item()) < 0.05 * max(1.0, out["fp32"][k].item())


def test_cuda_compile_path(tmp_path):
    result = train_mod.train(_cfg(tmp_path, compile=True, steps=10))
    assert result["step"] == 10 and all(v == v for v in result["metrics"].values())


def test_cuda_graph_step_trains_and_its_warm_up_leaves_no_trace(tmp_path):
    cfg = _cfg(tmp_path, precision="bf16", channels_last=False, cuda_graph=True, checkpoint_every=10)
    result = train_mod.train(cfg)
    assert result["cuda_graph"] is True and result["step"] == 20
    assert all(v == v for v in result["metrics"].values())
    # resumed in graph mode: the optimizers stay capturable (the saved param groups must not undo it)
    resumed = train_mod.train(_cfg(tmp_path, precision="bf16", channels_last=False, cuda_graph=True, steps=30,
                                   resume=True))
    assert resumed["cuda_graph"] is True and resumed["step"] == 30

    from gan_core import config as config_mod
    from gan_core.graphs import StaticStep
    from gan_core.runtime import Choice

    cfg = config_mod.sync_model_to_data(_cfg(tmp_path, cuda_graph=True))
    m = train_mod.build_models(cfg, torch.device("cuda"), Choice("bf16", False), capturable=True)
    before = {k: v.clone() for k, v in m.g_core.state_dict().items()}
    images = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, device="cuda")
    stepper = StaticStep(cfg, m, images)
    assert all(torch.equal(v, before[k]) for k, v in m.g_core.state_dict().items())
    for opt in (m.opt_g, m.opt_d):  # the warm-up's Adam state is back to a fresh Adam's
        assert all(float(v.abs().sum()) == 0 for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    out = stepper.step()
    torch.cuda.synchronize()
    assert not torch.equal(m.g_core.state_dict()["main.0.weight"], before["main.0.weight"])
    assert float(out["loss_d"]) == float(out["loss_d"])
    assert all(float(st["step"]) == 1.0 for st in m.opt_g.state.values())  # one replay, one Adam step


def test_cuda_graph_on_a_second_device(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    result = train_mod.train(_cfg(tmp_path, device="cuda:1", cuda_graph=True, precision="bf16", steps=10))
    assert result["step"] == 10 and all(v == v for v in result["metrics"].values())


def test_cuda_fp16_with_scaler_and_several_seeds_at_once(tmp_path):
    result = train_mod.train(_cfg(tmp_path, precision="fp16", steps=10))
    assert result["precision"] == "fp16" and all(v == v for v in result["metrics"].values())
    # eager runs side by side in streams train exactly as they would one after another
    cfgs = [_cfg(tmp_path / f"s{seed}", seed=seed, steps=10, precision="fp32", channels_last=False, cuda_graph=False)
            for seed in (0, 1)]
    together = train_mod.train_many(cfgs)
    alone = [train_mod.train(_cfg(tmp_path / f"a{seed}", seed=seed, steps=10, precision="fp32", channels_last=False,
                                  cuda_graph=False)) for seed in (0, 1)]
    for a, b in zip(together, alone):
        assert a["step"] == b["step"] == 10
        # (cuDNN may pick other TF32 algorithms per call: 2e-3 apart after 10 steps on an H200)
        assert abs(a["metrics"]["loss_d"] - b["metrics"]["loss_d"]) < 1e-2 * max(1.0, abs(b["metrics"]["loss_d"]))
    # and graph runs side by side, each with its own generator
    graphs = train_mod.train_many([_cfg(tmp_path / f"g{seed}", seed=seed, steps=10, precision="bf16", cuda_graph=True)
                                   for seed in (0, 1)])
    assert all(r["cuda_graph"] and r["step"] == 10 for r in graphs)
