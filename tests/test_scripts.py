import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script
from gan_core import checkpoint as ckpt
from gan_core.inference.loading import load_model

pytestmark = pytest.mark.slow  # the scripts run as subprocesses

TINY = ["model.nz=8", "model.ngf=4", "model.ndf=4", "data.num_images=32", "data.image_size=32",
        "train.batch_size=4", "train.log_every=1", "train.sample_every=2", "train.device=cpu", "train.precision=fp32"]


def test_train_cli_runs_resumes_and_ends_with_json(tmp_path):
    out = tmp_path / "run"
    proc, result = run_script(["scripts/train.py", *TINY, "train.steps=2", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 2 and Path(result["checkpoint"]).is_dir()
    assert "loss_d" in result["metrics"] and (out / "samples" / "step_00000002.png").exists()
    assert "train" in proc.stderr  # tqdm progress on stderr
    # The bar shows the loop's measured rate (last window), not tqdm's extrapolation from jumps of log_every steps.
    last = [part for part in proc.stderr.replace("\r", "\n").splitlines() if part.startswith("train:")][-1]
    img_s = result["metrics"]["images_per_s"]
    assert f"{img_s:.0f} img/s" in last and "step/s" in last and "left" in last, last
    step_s = float(last.split(" step/s")[0].split()[-1])
    batch = int(next(a for a in TINY if a.startswith("train.batch_size=")).split("=")[1])
    assert abs(step_s - img_s / batch) <= 0.01 + 0.01 * step_s, last
    proc, result = run_script(["scripts/train.py", *TINY, "train.steps=3", "train.resume=true", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 3 and result["steps_run"] == 1
    assert not (ROOT / "outputs").exists()  # Hydra's own output folder is switched off


def test_train_cli_saves_on_sigterm(tmp_path):
    """A scheduler's SIGTERM (or Ctrl-C) stops after the current step with a checkpoint and the JSON line."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "scripts/train.py", *TINY, "train.steps=100000", "train.log_every=1000",
                             "train.checkpoint_every=100000", f"train.out_dir={out}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "latest").exists() and not (out / "samples").exists() and time.time() < deadline:
        time.sleep(0.5)  # the first sample grid (step 2) shows training has begun
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["stopped"] == "stopped by request" and 2 <= result["step"] < 100000
    assert Path(result["checkpoint"]).name == f"step_{result['step']:08d}"
    assert "SIGTERM: stopping after this step" in stderr


def test_train_cli_bad_config_is_one_clear_line(tmp_path):
    proc, result = run_script(["scripts/train.py", *TINY, "data.image_size=48", f"train.out_dir={tmp_path}"])
    assert proc.returncode == 2 and "image_size must be one of" in result["error"]
    assert "Traceback" not in proc.stderr
    proc, result = run_script(["scripts/train.py", *TINY, "data.source=folder", f"data.path={tmp_path}/none",
                               f"train.out_dir={tmp_path}"])
    assert proc.returncode == 2 and "not a folder" in result["error"] and "Traceback" not in proc.stderr


def test_train_cli_wandb_offline(tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    proc, result = run_script(["scripts/train.py", *TINY, "train.steps=2", "logger=wandb", f"train.out_dir={out}"],
                              env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 2
    assert list((out / "wandb").glob("offline-run-*"))


WANDB_STUB = textwrap.dedent("""
    # a stand-in for the wandb package: it keeps the run's config in a JSON file
    import json, os

    class Image:
        def __init__(self, *args, **kw):
            pass

    class _Config(dict):
        def update(self, values, allow_val_change=False):
            dict.update(self, values)
            _write(self)

    class _Run:
        def __init__(self, config):
            self.config = _Config(config)

        def log(self, *args, **kw):
            pass

        def finish(self):
            pass

    def _write(config):
        with open(os.environ["WANDB_STUB_OUT"], "w") as f:
            json.dump(config, f)

    def init(project=None, config=None, dir=None, resume=None):
        _write(config)
        return _Run(config)
""")


def test_train_cli_tells_wandb_the_input_a_cluster_run_chose(tmp_path):
    (tmp_path / "stub" / "wandb").mkdir(parents=True)
    (tmp_path / "stub" / "wandb" / "__init__.py").write_text(WANDB_STUB)
    logged = tmp_path / "config.json"
    proc, result = run_script(["scripts/train.py", "model=cluster", "model.k=3", "model.overcluster=6", "model.subheads=1",
                               "model.scan_heads=2", "model.scan_min_updates=10", *TINY, "data.channels=1",
                               "train.steps=2", "logger=wandb", f"train.out_dir={tmp_path / 'run'}"],
                              env={"PYTHONPATH": str(tmp_path / "stub"), "WANDB_STUB_OUT": str(logged)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    chosen = result["input_choice"]["chosen"]
    config = json.loads(logged.read_text())
    assert config["model"]["input_transform"] == chosen != "auto" and config["input_choice"]["chosen"] == chosen
    assert config["model"]["k"] == 3  # the rest of the model config is still there


def test_torchrun_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    # torchrun runs the script as a module (-m), from the repository root, like `python -m scripts.train`.
    # --standalone: a free local port for the rendezvous, so concurrent test runs do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scripts.train", *TINY, "train.steps=3", f"train.out_dir={out}", "train.checkpoint_every=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    result = json.loads(lines[0])
    assert result["world_size"] == 2 and result["step"] == 3
    assert ckpt.latest_checkpoint(out).name == "step_00000003"
    g = load_model(out).g
    assert g(torch.randn(2, 8)).shape == (2, 3, 32, 32)


def test_torchrun_trains_a_cluster_model_whose_scan_heads_wait_for_their_fit(tmp_path):
    # the SCAN heads get no gradient during the steps: without find_unused_parameters DDP failed at step 2
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "scripts.train", "model=cluster", "model.k=3", "model.overcluster=6", "model.subheads=1",
           "model.input_transform=none", *TINY, "data.channels=1", "train.steps=3", f"train.out_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert result["world_size"] == 2 and result["step"] == 3
    assert "skipped under torchrun" in proc.stderr  # the stage runs later, with scripts/fit_clusters.py


def test_prepare_dataset_makes_a_parquet_the_parquet_source_reads(tmp_path):
    from PIL import Image

    for cls in ("x", "y"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 60), (i * 50, 10, 200)).save(tmp_path / "imgs" / cls / f"{i}.jpg")
    out = tmp_path / "out.parquet"
    proc, result = run_script(["scripts/prepare_dataset.py", "--source", "folder", "--path", str(tmp_path / "imgs"),
                               "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["n"] == 6 and result["labels"] and out.exists()
    from gan_core.config import DataConfig
    from gan_core.data import load_dataset

    ds = load_dataset(DataConfig(source="parquet", path=str(out)), use_cache=False)
    assert ds.images.shape == (6, 3, 64, 64) and ds.class_names == ["x", "y"]


def test_push_to_hub_dry_run_and_upload_calls(tmp_path, monkeypatch):
    proc, _ = run_script(["scripts/train.py", *TINY, "train.steps=1", f"train.out_dir={tmp_path / 'run'}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, result = run_script(["scripts/push_to_hub.py", "--checkpoint", str(tmp_path / "run"), "--repo", "me/tiny",
                               "--dry-run"])
    assert proc.returncode == 0 and result["dry_run"]
    assert "config.json" in result["files"] and "optimizer.safetensors" not in result["files"]

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id))

        def upload_file(self, **kw):
            calls.append(("file", kw["path_in_repo"]))

        def upload_folder(self, **kw):
            calls.append(("folder", kw["repo_id"], tuple(kw["allow_patterns"])))
            return "https://example.invalid/commit"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    from scripts import push_to_hub

    res = push_to_hub.main(["--checkpoint", str(tmp_path / "run"), "--repo", "me/tiny", "--token", "hf_secret"])
    assert calls[0] == ("init", "hf_secret") and ("create", "me/tiny") in calls and ("file", "README.md") in calls
    assert calls[-1][0] == "folder" and "optimizer.safetensors" not in calls[-1][2]
    assert "hf_secret" not in json.dumps(res)


def test_benchmark_tiny_run_reports_both_paths_and_the_ceiling():
    proc, result = run_script(["scripts/benchmark.py", "--device", "cpu", "--steps", "1", "--batch", "4",
                               "--warmup", "1", "--images", "16", "--workers", "0", "--ceiling"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for key in ("device", "batch", "steps", "reference_img_s", "fast_img_s", "speedup", "reference_loss_d",
                "fast_loss_d", "fast_loss_g"):
        assert key in result
    assert result["reference_img_s"] > 0 and result["fast_img_s"] > 0 and result["batch"] == 4
    # what the CPU reports about bf16: oneDNN's claim and the native flags, apart (a claim can be emulation)
    from gan_core.runtime import BF16_FLAGS
    assert isinstance(result["cpu_bf16_claimed"], bool) and set(result["cpu_bf16_flags"]) <= set(BF16_FLAGS)
    top = result["ceiling"]
    # The seed DCGAN's step: 8 D passes' and 3 G passes' worth of about 0.21 GFLOP each per image.
    assert 2.0 < top["step_gflop_per_image"] < 2.6
    assert result["fast_precision"] in top["best_gflop_s"] and "fp32" in top["best_gflop_s"]
    best = max(max(r.values()) for r in top["best_gflop_s"].values())
    assert top["ceiling_img_s"] == pytest.approx(best / top["step_gflop_per_image"], rel=1e-2)
    assert top["ceiling_speedup"] == pytest.approx(top["ceiling_img_s"] / result["reference_img_s"], rel=2e-2)


def test_evaluate_clustering_baseline_and_d_features(tmp_path):
    proc, _ = run_script(["scripts/train.py", *TINY, "train.steps=1", f"train.out_dir={tmp_path / 'run'}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, result = run_script(["scripts/evaluate_clustering.py", "--checkpoint", str(tmp_path / "run"),
                               "--data.source", "shapes", "--num-images", "60"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["n"] == 60 and result["k"] == 10 and result["method"].startswith("discriminator")
    for key in ("acc", "nmi", "ari", "kmeans_acc", "kmeans_nmi"):
        assert 0 <= result[key] <= 1 or key == "ari"
    proc, result = run_script(["scripts/evaluate_clustering.py", "--data.source", "scenes", "--num-images", "5"])
    assert proc.returncode == 2 and result["error"] == "no labels"


def test_push_dry_run_ships_both_discriminators_of_a_cluster_model():
    proc, result = run_script(["scripts/push_to_hub.py", "--checkpoint", "checkpoints/fashion-mnist-clusters",
                               "--repo", "me/fmnist", "--dry-run"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"discriminator.safetensors", "discriminator_ema.safetensors", "generator_ema.safetensors",
            "config.json", "README.md", "exemplars.png"} <= set(result["files"])


def test_cluster_run_scores_every_checkpoint_and_exports_a_sheet_ready_model(tmp_path):
    proc, result = run_script(["scripts/cluster_run.py", "--data-source", "shapes", "--num-images", "48",
                               "--ngf", "4", "--ndf", "4", "--channels", "3", "--batch", "8", "--steps", "4",
                               "--checkpoint-every", "2", "--device", "cpu", "--out", str(tmp_path / "run"),
                               "--export", str(tmp_path / "model.tar")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 4 and set(result["scores"]) == {"2", "4"} and result["final"] == result["scores"]["4"]
    assert 0 <= result["final"]["acc"] <= 1 and result["train_mi"] >= -1e-6  # MI is never negative
    import tarfile
    with tarfile.open(tmp_path / "model.tar") as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    assert {"model/config.json", "model/discriminator_ema.safetensors"} <= names
    assert not any("optimizer" in n for n in names)
    proc, sheet = run_script(["scripts/exemplars.py", "--checkpoint", str(tmp_path / "model"), "--n", "3",
                              "--limit", "48", "--out", str(tmp_path / "sheet.png")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image
    img = Image.open(tmp_path / "sheet.png")
    assert img.size == (2 * (7 * 34 + 2), 2 * (10 * 34 + 2))  # 10 rows of 3 + gap + 3 tiles, zoom 2
    assert len(sheet["clusters"]) == 10 and sum(c["images"] for c in sheet["clusters"]) == 48


def test_train_cli_help_lists_described_fields_and_model_image_size_sets_the_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scripts.train", "model=cluster", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "model.k=10" in proc.stdout and "how many clusters" in proc.stdout
    out = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("data.image_size")]
    proc, result = run_script(["scripts/train.py", *tiny, "model.image_size=32", "train.steps=1", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_model(result["checkpoint"]).cfg.data.image_size == 32  # not silently 64


def test_recipe_race_settings_are_typed_and_bad_ones_are_one_line():
    from scripts.recipe_race import build_config
    cfg = build_config(["model.kind=dcgan", "model.ngf=4", "model.r1_gamma=1", "train.lr_d=4e-4",
                        "model.diffaugment=color,translation", "train.channels_last=false"])
    assert cfg.model.ngf == 4 and isinstance(cfg.model.ngf, int)
    assert cfg.model.r1_gamma == 1.0 and isinstance(cfg.model.r1_gamma, float)
    assert cfg.train.lr_d == 4e-4 and cfg.train.channels_last is False
    assert cfg.model.diffaugment == "color,translation"
    for bad in ("train.steps=1.5", "model.nope=1", "steps=3", "model.r1_gamma=x"):
        with pytest.raises(ValueError):
            build_config(["model.kind=dcgan", bad])
    proc, result = run_script(["scripts/recipe_race.py", "--out", "unused", "--minutes", "1",
                               "--recipe", "a", "train.steps=-2"])
    assert proc.returncode == 2 and "recipe a" in result["error"]
    proc, result = run_script(["scripts/recipe_race.py", "--out", "unused", "--minutes", "1",
                               "--recipe", "a", "--recipe", "a", "train.steps=2"])
    assert proc.returncode == 2 and "must differ" in result["error"]


def test_recipe_race_trains_side_by_side_and_scores_each_checkpoint(tmp_path):
    base = ["model.kind=dcgan", "data.source=shapes", "data.num_images=32", "model.ngf=4", "model.ndf=4",
            "train.batch_size=4", "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=10",
            "train.sample_every=100", "train.log_every=2"]
    proc, result = run_script(["scripts/recipe_race.py", "--out", str(tmp_path), "--minutes", "5", "--device", "cpu",
                               "--n", "16", "--real", "16", "--base", *base,
                               "--recipe", "plain", "--recipe", "r1", "model.r1_gamma=1", "train.batch_size=8"],
                              env={"GANLAB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert set(result["recipes"]) == {"plain", "r1"}
    for name, r in result["recipes"].items():
        assert r["steps"] == 4 and r["error"] is None, r
        assert [s["step"] for s in r["scores"]] == [2, 4]  # every checkpoint, oldest first
        assert all(s["fid"] >= 0 and 0 <= s["recall"] <= 1 for s in r["scores"])
        assert r["best_step"] == min(r["scores"], key=lambda s: s["fid"])["step"]
    assert load_model(tmp_path / "r1" / "checkpoints" / "step_00000004").cfg.model.r1_gamma == 1.0
    assert result["recipes"]["r1"]["images_per_s"] > 0 and "train.batch_size=8" in result["recipes"]["r1"]["settings"]


def test_widen_checkpoint_keeps_what_g_paints_and_the_run_goes_on_wider(tmp_path):
    from gan_core import kinds
    from gan_core.training import build_models
    out, wide = tmp_path / "run", tmp_path / "wide"
    proc, _ = run_script(["scripts/train.py", *TINY, "train.steps=2", "train.ema_decay=0.9", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, res = run_script(["scripts/widen_checkpoint.py", "--checkpoint", str(out), "--out", str(wide), "--noise", "0"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert res["step"] == 2 and res["ngf"] == [4, 8]
    before, after = load_model(out), load_model(wide)  # the EMA generators, in eval mode
    assert after.cfg.model.ngf == 8 and before.cfg.model.ngf == 4
    z = before.sampler.latents(6, 0)
    assert torch.allclose(before.sampler.generate(z), after.sampler.generate(z), atol=1e-5)
    # the raw G too, in train mode (batch statistics), and D as it was
    cfg_a, _ = kinds.read_config(out / "checkpoints" / "step_00000002")
    cfg_b, _ = kinds.read_config(Path(res["checkpoint"]))
    a, b = build_models(cfg_a, torch.device("cpu"), wrap=False), build_models(cfg_b, torch.device("cpu"), wrap=False)
    for m, folder in ((a, out / "checkpoints" / "step_00000002"), (b, Path(res["checkpoint"]))):
        for role, module in m.modules().items():
            ckpt.load_weights(module, ckpt.weights_file(folder, role))
    assert torch.allclose(a.g_core.train()(z), b.g_core.train()(z), atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(a.d_core.state_dict().values(), b.d_core.state_dict().values()))
    # with noise, the copies differ a little; and the wider run resumes from it
    proc, res = run_script(["scripts/widen_checkpoint.py", "--checkpoint", str(out), "--out", str(wide)])
    assert proc.returncode != 0 and "already holds checkpoints" in proc.stderr
    shutil.rmtree(wide)
    proc, res = run_script(["scripts/widen_checkpoint.py", "--checkpoint", str(out), "--out", str(wide)])
    assert proc.returncode == 0 and res["noise"] == 0.01
    moved = (load_model(wide).sampler.generate(z) - before.sampler.generate(z)).abs().mean()
    assert 0 < moved < 0.05
    tiny_wide = [a for a in TINY if not a.startswith("model.ngf=")] + ["model.ngf=8"]
    proc, result = run_script(["scripts/train.py", *tiny_wide, "train.steps=3", "train.ema_decay=0.9", "train.resume=true",
                               f"train.out_dir={wide}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 3 and result["steps_run"] == 1


def test_widen_checkpoint_part_discriminator_keeps_ds_logits_and_g(tmp_path):
    from gan_core import kinds
    from gan_core.training import build_models
    out, wide = tmp_path / "run", tmp_path / "wide"
    proc, _ = run_script(["scripts/train.py", *TINY, "train.steps=2", "train.ema_decay=0.9", f"train.out_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, res = run_script(["scripts/widen_checkpoint.py", "--checkpoint", str(out), "--out", str(wide),
                            "--part", "discriminator", "--noise", "0"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert res["part"] == "discriminator" and res["ndf"][1] == 2 * res["ndf"][0]
    cfg_a, _ = kinds.read_config(out / "checkpoints" / "step_00000002")
    cfg_b, _ = kinds.read_config(Path(res["checkpoint"]))
    assert cfg_b.model.ndf == 2 * cfg_a.model.ndf and cfg_b.model.ngf == cfg_a.model.ngf
    a, b = build_models(cfg_a, torch.device("cpu"), wrap=False), build_models(cfg_b, torch.device("cpu"), wrap=False)
    for m, folder in ((a, out / "checkpoints" / "step_00000002"), (b, Path(res["checkpoint"]))):
        for role, module in m.modules().items():
            ckpt.load_weights(module, ckpt.weights_file(folder, role))
    x = torch.rand(5, cfg_a.model.channels, cfg_a.model.image_size, cfg_a.model.image_size) * 2 - 1
    for mode in (True, False):  # batch statistics and stored ones
        assert torch.allclose(a.d_core.train(mode)(x, logits=True), b.d_core.train(mode)(x, logits=True), atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(a.g_core.state_dict().values(), b.g_core.state_dict().values()))
    # an exported checkpoint (no optimizer state) widens too, both Adam states fresh
    from gan_core.inference.loading import export
    shipped = export(out / "checkpoints" / "step_00000002", tmp_path / "shipped")
    proc, res2 = run_script(["scripts/widen_checkpoint.py", "--checkpoint", str(shipped), "--out", str(tmp_path / "w2"),
                             "--part", "discriminator", "--noise", "0"])
    assert proc.returncode == 0 and res2["optimizer"] == "fresh" and "start fresh" in proc.stderr
    tiny_wide = [s for s in TINY if not s.startswith("model.ndf=")] + [f"model.ndf={cfg_b.model.ndf}"]
    proc, result = run_script(["scripts/train.py", *tiny_wide, "train.steps=3", "train.ema_decay=0.9",
                               "train.resume=true", f"train.out_dir={wide}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 3 and result["steps_run"] == 1


def test_one_typed_value_parser_for_the_scripts_settings():
    from gan_core.models.cluster import ClusterConfig
    from scripts._cli import parse_sets, typed_value
    assert typed_value("2.0", 3) == 2 and isinstance(typed_value("2", 3), int)
    assert typed_value("1", 0.5) == 1.0 and isinstance(typed_value("1", 0.5), float)
    assert typed_value("False", True) is False and typed_value("a,b", "") == "a,b"
    assert typed_value("null", None) is None and typed_value("[1, 2]", None) == [1, 2] and typed_value("x", None) == "x"
    # a None default with a declared type: that type (Optional[str] stays text, Optional[bool] takes true/false)
    from gan_core.config import TrainConfig
    from scripts._cli import field_type
    assert field_type(TrainConfig, "init_from") is str and field_type(TrainConfig, "channels_last") is bool
    assert field_type(TrainConfig(), "init_from") is str  # an instance's hints are its class's
    assert typed_value("2024", None, str) == "2024" and typed_value("True", None, bool) is True
    assert typed_value("null", None, bool) is None and typed_value("4e-4", None, float) == 4e-4
    with pytest.raises(ValueError, match="true or false"):
        typed_value("sometimes", None, bool)
    assert typed_value("9007199254740993", 0) == 9007199254740993 and typed_value("1e3", 0) == 1000
    for text, default, why in (("1.5", 3, "whole numbers"), ("x", 3, "whole numbers"), ("x", 0.5, "numbers"),
                               ("inf", 3, "whole numbers"), ("nan", 3, "whole numbers"), ("nan", 0.5, "numbers"),
                               ("yes", True, "true or false")):
        with pytest.raises(ValueError, match=why):
            typed_value(text, default)
    field = next(f for f, v in vars(ClusterConfig()).items() if isinstance(v, int) and not isinstance(v, bool))
    assert parse_sets([f"{field}=4"], (field,), ClusterConfig) == {field: 4}
    with pytest.raises(ValueError, match=f"--set {field} takes whole numbers"):
        parse_sets([f"{field}=abc"], (field,), ClusterConfig)
