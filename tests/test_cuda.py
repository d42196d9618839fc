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
    m = train_mod.build_models(_cfg(tmp_path), torch.device("cuda"))
    assert m.autocast_dtype is torch.bfloat16 and m.memory_format is torch.channels_last
    assert m.opt_g.defaults.get("fused") and m.opt_d.defaults.get("fused")
    assert next(m.g_core.parameters()).is_cuda


def test_cuda_train_runs_with_data_on_gpu(tmp_path):
    result = train_mod.train(_cfg(tmp_path))
    assert result["step"] == 20 and result["device"] == "cuda" and result["precision"] == "bfloat16"
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
