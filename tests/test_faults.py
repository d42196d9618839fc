"""Training faults: a process killed while writing a checkpoint, an output folder that cannot take
checkpoints, K larger than the dataset, a job that runs past its time limit."""
import collections
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core import jobs
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.data import ImageDataset
from gan_core.inference.loading import load_model
from gan_core.models.cluster import ClusterConfig
from gan_core.models.dcgan import DCGANConfig
from gan_core.training import train

from conftest import ROOT, run_script


def _cfg(out_dir, steps=6, **kw):
    return RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4), data=DataConfig(source="shapes", num_images=16, image_size=32),
                     train=TrainConfig(steps=steps, batch_size=4, log_every=1, checkpoint_every=2, keep_checkpoints=2,
                                       out_dir=str(out_dir), device="cpu", precision="fp32", **kw))


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from gan_core import checkpoint as ckpt
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.models.dcgan import DCGANConfig
    from gan_core.training import train

    real_save = ckpt.save_file

    def hanging_save(tensors, path, metadata=None):
        if "step_00000004" in path:  # the second checkpoint: half a file on disk, then wait to be killed
            with open(path, "wb") as f:
                f.write(b"\\0" * 1000)
                f.flush()
                os.fsync(f.fileno())
            print("WRITING", flush=True)
            time.sleep(600)
        real_save(tensors, path, metadata=metadata)

    ckpt.save_file = hanging_save
    cfg = RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4), data=DataConfig(source="shapes", num_images=16, image_size=32),
                    train=TrainConfig(steps=6, batch_size=4, log_every=1, checkpoint_every=2, keep_checkpoints=2,
                                      out_dir=sys.argv[1], device="cpu", precision="fp32"))
    train(cfg)
""")


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one_and_resume_continues(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    run = tmp_path / "run"
    # The writer imports gan_core from the repository root on PYTHONPATH, as `python -m scripts.X` does.
    env = {**os.environ, "GANLAB_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the writer is mid-checkpoint (or dies)
        assert line.strip() == "WRITING", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers and all(".step_00000004.tmp-" in name for name in leftovers)  # the half-written one
    assert ckpt.latest_checkpoint(run).name == "step_00000002"
    assert (run / "latest").read_text().strip() == "step_00000002"
    before = {k: v.clone() for k, v in load_model(run).g.state_dict().items()}  # loads cleanly

    result = train(_cfg(run, resume=True))
    assert result["step"] == 6 and result["steps_run"] == 4 and result["stopped"] is None
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_00000004", "step_00000006"]  # the half-written temp folder was tidied away
    after = load_model(run).g.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on from step 2


def test_recover_puts_back_a_checkpoint_moved_aside_mid_swap(tmp_path):
    cfg = _cfg(tmp_path / "run", steps=2)
    train(cfg)
    folders = tmp_path / "run" / "checkpoints"
    os.replace(folders / "step_00000002", folders / ".step_00000002.old-12345")  # killed between the two renames
    (folders / ".step_00000003.tmp-abc").mkdir()
    (tmp_path / "run" / ".latest.tmp-xyz").write_text("step_00000003\n")
    assert ckpt.latest_checkpoint(tmp_path / "run") is None
    done = ckpt.recover(tmp_path / "run")
    assert done == ["restored step_00000002", "removed .step_00000003.tmp-abc", "removed .latest.tmp-xyz"]
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_00000002"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoints", "latest"]


def _no_data(*_a, **_k):
    raise AssertionError("the dataset was read before the output folder was checked")


def test_an_output_folder_that_cannot_be_created_fails_before_the_data_is_read(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr("gan_core.training.load_dataset", _no_data)
    with pytest.raises(OSError, match="cannot write checkpoints to"):
        train(_cfg(blocker / "run"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_the_data_is_read(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setattr("gan_core.training.load_dataset", _no_data)
    try:
        with pytest.raises(OSError, match="cannot write checkpoints to"):
            train(_cfg(ro / "run"))
    finally:
        ro.chmod(0o755)


def test_a_read_only_file_system_fails_before_the_data_is_read(monkeypatch):
    target = "/sys/ganlab-test-run"  # sysfs refuses new entries, even to root
    if not os.path.isdir("/sys") or os.path.exists(target):
        pytest.skip("no sysfs here")
    monkeypatch.setattr("gan_core.training.load_dataset", _no_data)
    with pytest.raises(OSError, match="cannot write checkpoints to /sys/ganlab-test-run"):
        train(_cfg(target))


def test_a_full_disk_fails_before_the_first_step(tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda _p: usage(2**30, 2**30 - 2**20, 2**20))
    steps = []
    with pytest.raises(OSError, match=r"not enough free disk space .*: 1.0 MB free"):
        train(_cfg(tmp_path / "run"), on_progress=lambda s, m: steps.append(s))
    assert steps == [] and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_the_cli_says_one_line_for_an_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc, result = run_script(["scripts/train.py", "model=dcgan", "data.source=shapes", "data.num_images=16",
                               "data.image_size=32", "train.steps=2", "train.batch_size=4", "train.device=cpu",
                               f"train.out_dir={blocker / 'run'}"], env={"GANLAB_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write checkpoints" in errors[0] and "Traceback" not in proc.stderr
    assert "cannot write checkpoints" in result["error"]


def test_k_larger_than_the_dataset_is_refused(tmp_path):
    cfg = RunConfig(model=ClusterConfig(k=5, ngf=4, ndf=4, nz=8, overcluster=10, subheads=1),
                    data=DataConfig(source="folder", path=str(tmp_path), image_size=32, channels=3),
                    train=TrainConfig(steps=2, batch_size=2, device="cpu", out_dir=str(tmp_path / "run")))
    tiny = ImageDataset(images=torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="K = 5 clusters need at least 5 images; the dataset has 3"):
        train(cfg, dataset=tiny)


def test_a_job_past_its_time_limit_stops_and_keeps_its_model(tmp_path):
    job = jobs.TrainingJob(tmp_path / "work", max_seconds=0.0)
    job.start(_cfg(tmp_path / "ignored", steps=1000), "capped")
    status = job.wait(timeout=120)
    assert status.state == "stopped" and status.step < 1000
    assert "time limit" in status.message and "Saved as model 'capped'" in status.message
    assert (status.model_dir / "config.json").exists()


def test_a_job_stopped_while_it_chooses_its_input_is_stopped_not_failed(tmp_path):
    cfg = RunConfig(model=ClusterConfig(k=3, ngf=4, ndf=4, nz=8, overcluster=6, subheads=1),  # input: auto
                    data=DataConfig(source="shapes", num_images=32, image_size=32, channels=1),
                    train=TrainConfig(steps=1000, batch_size=8, device="cpu", precision="fp32"))
    job = jobs.TrainingJob(tmp_path / "work", max_seconds=0.0)
    job.start(cfg, "capped")
    status = job.wait(timeout=120)
    assert status.state == "stopped" and status.step == 0 and "time limit" in status.message
    assert status.model_dir is None


def test_a_job_whose_work_folder_cannot_be_written_fails_at_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    job = jobs.TrainingJob(blocker / "work")
    with pytest.raises(OSError, match="cannot write checkpoints"):
        job.start(_cfg(tmp_path / "ignored"), "nowhere")
    assert job.status().state == "idle"
