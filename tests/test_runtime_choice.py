"""Precision and memory format are chosen by measuring (issue 14): the chooser with injected timings,
the cache, explicit settings, the record in config.json and its reuse on resume, fp16 with a scaler."""
import json

import pytest
import torch

from gan_core import checkpoint as ckpt
from gan_core import runtime
from gan_core import training as train_mod
from gan_core.config import TrainConfig
from tests.test_train import tiny_cfg

CPU = torch.device("cpu")
FOUR = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def timed(table: dict, calls: list):
    def time_step(precision, channels_last, give_up_after):
        calls.append((precision, channels_last, give_up_after))
        value = table[(precision, channels_last)]
        if isinstance(value, Exception):
            raise value
        return value
    return time_step


def test_the_fastest_measured_option_wins_and_is_cached(tmp_path):
    cache, calls = tmp_path / "tuning.json", []
    table = {("fp32", False): 0.9, ("fp32", True): 0.5, ("bf16", False): 2.0, ("bf16", True): 1.2}
    said = []
    choice = runtime.choose({"model": 1}, FOUR, timed(table, calls), cache, announce=lambda: said.append(1))
    assert (choice.precision, choice.channels_last, choice.how) == ("fp32", True, "measured") and said == [1]
    assert choice.timings == {"fp32/NCHW": 0.9, "fp32/channels_last": 0.5, "bf16/NCHW": 2.0, "bf16/channels_last": 1.2}
    # each option after the first may stop timing at 1.5x the best so far
    assert [c[2] for c in calls] == [float("inf"), 1.35, 0.75, 0.75]
    # the same key again: read from the cache, nothing timed
    again = runtime.choose({"model": 1}, FOUR, timed(table, calls), cache, announce=lambda: said.append(1))
    assert (again.precision, again.channels_last, again.how) == ("fp32", True, "cached") and len(calls) == 4
    assert said == [1]  # "choosing ..." is said only when something is timed
    # another key (another model, batch or machine) is measured afresh
    table[("bf16", True)] = 0.1
    other = runtime.choose({"model": 2}, FOUR, timed(table, calls), cache)
    assert (other.precision, other.channels_last, other.how) == ("bf16", True, "measured")


def test_auto_never_picks_what_it_measured_slower(tmp_path):
    # the Intel AVX512 CPU of the issue: oneDNN claims bf16 but emulates it (7.3 vs 18.6 img/s)
    table = {("fp32", False): 64 / 18.6, ("fp32", True): 64 / 18.0, ("bf16", False): 64 / 7.3, ("bf16", True): 64 / 7.0}
    choice = runtime.choose({"k": "emulated"}, FOUR, timed(table, []), tmp_path / "t.json")
    assert choice.precision == "fp32" and choice.channels_last is False
    assert all(choice.timings[choice.label] <= t for t in choice.timings.values())


def test_options_that_fail_are_skipped_and_a_stale_cache_entry_is_ignored(tmp_path):
    cache = tmp_path / "tuning.json"
    table = {("fp32", False): 1.0, ("fp32", True): RuntimeError("no kernel"), ("bf16", False): 3.0,
             ("bf16", True): float("nan")}
    choice = runtime.choose({"k": 1}, FOUR, timed(table, []), cache)
    assert choice.label == "fp32/NCHW" and set(choice.timings) == {"fp32/NCHW", "bf16/NCHW"}
    # another set of options is another question: measured again, not answered from fp32's entry
    calls = []
    choice = runtime.choose({"k": 1}, [("bf16", False), ("bf16", True)], timed({("bf16", False): 2.0,
                                                                              ("bf16", True): 1.0}, calls), cache)
    assert choice.label == "bf16/channels_last" and choice.how == "measured" and len(calls) == 2
    with pytest.raises(RuntimeError, match="every option"):
        runtime.choose({"k": 2}, FOUR[:2], timed({o: RuntimeError("x") for o in FOUR[:2]}, []), cache)
    # a corrupt cache file is measured over, not an error
    cache.write_text("{not json")
    assert runtime.choose({"k": 1}, FOUR[:2], timed({FOUR[0]: 2.0, FOUR[1]: 1.0}, []), cache).how == "measured"


def test_one_option_is_taken_without_measuring():
    def never(*_):
        raise AssertionError("nothing should be timed")
    assert runtime.choose({}, [("fp16", True)], never).how == "only"


def test_candidates_explicit_settings_win(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_claims_bf16", lambda: True)
    assert runtime.candidates("auto", None, CPU) == FOUR  # a CPU that claims bf16: measured, not trusted
    assert runtime.candidates("fp32", None, CPU) == [("fp32", False), ("fp32", True)]
    assert runtime.candidates("auto", True, CPU) == [("fp32", True), ("bf16", True)]
    assert runtime.candidates("bf16", False, CPU) == [("bf16", False)]
    monkeypatch.setattr(runtime, "cpu_claims_bf16", lambda: False)
    assert runtime.candidates("auto", None, CPU) == [("fp32", False), ("fp32", True)]  # bf16 would be emulated
    # compile on CUDA: channels_last failed in inductor's backward there, so auto means contiguous
    cuda = torch.device("cuda")
    assert runtime.channels_last_setting(TrainConfig(compile=True), cuda) is False
    assert runtime.channels_last_setting(TrainConfig(compile=True), CPU) is None
    assert runtime.channels_last_setting(TrainConfig(compile=True, channels_last=True), cuda) is True
    assert runtime.channels_last_setting(TrainConfig(), cuda) is None


def test_train_records_the_choice_and_a_resumed_run_reuses_it(tmp_path, monkeypatch):
    # Injected timings through the real train(): channels_last measured slower, so NCHW is chosen.
    monkeypatch.setattr(train_mod, "time_calls",
                        lambda fn, device, give_up_after=None, **_: (fn(), 2.0 if m_is_channels_last(fn) else 1.0)[1])
    logs = []
    cfg = tiny_cfg(tmp_path / "r", steps=4, precision="auto", channels_last=None, checkpoint_every=2)
    result = train_mod.train(cfg, on_log=logs.append)
    assert result["precision"] == "fp32" and result["channels_last"] is False and result["runtime"] == "measured"
    assert any("fp32/NCHW (measured" in line for line in logs)
    meta = json.loads((tmp_path / "r" / "checkpoints" / "step_00000004" / "config.json").read_text())
    assert meta["runtime"]["precision"] == "fp32" and meta["runtime"]["channels_last"] is False
    assert meta["runtime"]["device"] == runtime.device_key(CPU)
    assert meta["config"]["train"]["precision"] == "auto"  # the request is kept as given

    # Resumed, the recorded choice is reused although timings now say channels_last, and the run is
    # bit-identical with one trained straight through.
    monkeypatch.setattr(train_mod, "time_calls",
                        lambda fn, device, give_up_after=None, **_: (fn(), 0.5 if m_is_channels_last(fn) else 1.0)[1])
    from gan_core.config import sync_model_to_data

    other = sync_model_to_data(tiny_cfg(tmp_path / "other", precision="auto", channels_last=None))
    assert train_mod.choose_runtime(other, CPU, cache=tmp_path / "fresh.json").channels_last is True
    resumed = train_mod.train(tiny_cfg(tmp_path / "r", steps=6, precision="auto", channels_last=None, resume=True))
    assert resumed["runtime"] == "recorded" and resumed["channels_last"] is False
    straight = train_mod.train(tiny_cfg(tmp_path / "s", steps=6, precision="fp32", channels_last=False))
    assert straight["runtime"] == "set"
    for role in ("generator", "discriminator"):
        a = ckpt.weights_file(resumed["checkpoint"], role).read_bytes()
        b = ckpt.weights_file(straight["checkpoint"], role).read_bytes()
        assert a == b, role


def m_is_channels_last(fn) -> bool:
    """Which candidate a timing closure belongs to (the Models it closes over, directly or through the
    step function it calls)."""
    cells = [c.cell_contents for c in fn.__closure__ or ()]
    models = [c for c in cells if hasattr(c, "memory_format")]
    if not models:
        return any(m_is_channels_last(c) for c in cells if callable(c) and getattr(c, "__closure__", None))
    return models[0].memory_format == torch.channels_last


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(tmp_path):
    from gan_core.config import sync_model_to_data

    cfg = tiny_cfg(tmp_path / "h", steps=4, precision="fp16", channels_last=True, checkpoint_every=2)
    result = train_mod.train(cfg)
    assert result["precision"] == "fp16" and result["metrics"]["loss_d"] == result["metrics"]["loss_d"]
    state = ckpt.read_scaler_state(result["checkpoint"])
    assert state is not None and state["_growth_tracker"] >= 0
    # a checkpoint whose scaler is at an unusual scale: resume() puts exactly that scale back
    cfg = sync_model_to_data(cfg)
    m = train_mod.build_models(cfg, CPU, runtime.Choice("fp16", True))
    assert m.scaler is not None and m.autocast_dtype is torch.float16
    odd = {**m.scaler.state_dict(), "scale": 1234.0, "_growth_tracker": 7}
    ckpt.save_training_checkpoint(tmp_path / "odd", cfg, 4, m.modules(), m.optimizers(), scaler=odd)
    fresh = train_mod.build_models(cfg, CPU, runtime.Choice("fp16", True))
    assert train_mod.resume(cfg, fresh, tmp_path / "odd") == 4
    assert fresh.scaler.get_scale() == 1234.0 and fresh.scaler.state_dict()["_growth_tracker"] == 7
    resumed = train_mod.train(tiny_cfg(tmp_path / "h", steps=6, precision="fp16", channels_last=True, resume=True))
    assert resumed["step"] == 6 and ckpt.read_scaler_state(resumed["checkpoint"]) is not None
    assert train_mod.build_models(tiny_cfg(tmp_path / "x"), CPU).scaler is None  # fp32: no scaler


def test_inference_paints_in_the_measured_choice(tmp_path, monkeypatch):
    from gan_core.inference.loading import load_model
    from gan_core.inference import model as model_mod

    result = train_mod.train(tiny_cfg(tmp_path / "run", steps=2))
    model = load_model(result["checkpoint"])
    # A CPU that claims bf16: on this one bf16 + channels_last times fastest, so painting uses it.
    monkeypatch.setattr(runtime, "cpu_claims_bf16", lambda: True)
    seen = []

    def fake_time(fn, device, give_up_after=None):
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        cl = next(model.g.parameters()).is_contiguous(memory_format=torch.channels_last) and \
            not next(model.g.parameters()).is_contiguous()
        seen.append((bf16, cl))
        fn()
        return 0.1 if (bf16 and cl) else 1.0

    monkeypatch.setattr(model_mod, "time_calls", fake_time)
    choice = model.choose_runtime(cache=tmp_path / "tuning.json")
    assert len(seen) == 4 and (choice.precision, choice.channels_last, choice.how) == ("bf16", True, "measured")
    with model.painting():
        assert torch.is_inference_mode_enabled() and torch.get_autocast_dtype("cpu") == torch.bfloat16
        images = model.sampler.sample(2, seed=0)
    assert images.dtype == torch.float32 and images.shape[0] == 2
    # an explicit precision wins; only the memory format is measured then
    assert model.choose_runtime("fp32", cache=tmp_path / "tuning.json").precision == "fp32"
    with pytest.raises(ValueError, match="precision must be"):
        model.choose_runtime("int8")


def test_the_graph_step_dry_runs_on_cpu_and_refuses_what_it_cannot_capture(tmp_path):
    logs = []
    result = train_mod.train(tiny_cfg(tmp_path / "g", steps=4, cuda_graph=True), on_log=logs.append)
    assert result["cuda_graph"] is True and result["step"] == 4
    assert all(v == v for v in result["metrics"].values())  # finite metrics from the static step
    assert any("CUDA graph step: on" in line and "dry run" in line for line in logs)
    # default on a CPU: off, nothing measured
    assert train_mod.choose_graph(tiny_cfg(tmp_path / "x"), CPU, runtime.Choice()) == (False, "off (no CUDA)")
    cfg = tiny_cfg(tmp_path / "n", cuda_graph=True, instance_noise=0.1, instance_noise_steps=10)
    with pytest.raises(ValueError, match="annealed instance noise"):
        train_mod.choose_graph(cfg, CPU, runtime.Choice())
    with pytest.raises(ValueError, match="loss scaler"):
        train_mod.choose_graph(tiny_cfg(tmp_path / "h", cuda_graph=True), CPU, runtime.Choice("fp16"))
    assert train_mod.choose_graph(tiny_cfg(tmp_path / "h"), CPU, runtime.Choice("fp16"))[0] is False


def test_blobgan_steps_are_never_captured(tmp_path):
    from gan_core import kinds
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.models.blobgan import BlobGANConfig

    assert kinds.KINDS["blobgan"].graph_safe is False and kinds.KINDS["dcgan"].graph_safe
    cfg = RunConfig(model=BlobGANConfig(), data=DataConfig(source="scenes"), train=TrainConfig(cuda_graph=True))
    with pytest.raises(ValueError, match="changes with the step number"):
        train_mod.choose_graph(cfg, CPU, runtime.Choice())


def test_graph_warm_up_leaves_no_trace(tmp_path):
    """Capture runs a few warm-up steps; every weight, buffer and Adam state is put back afterwards."""
    from gan_core import graphs

    from gan_core.config import sync_model_to_data

    cfg = sync_model_to_data(tiny_cfg(tmp_path / "w"))
    m = train_mod.build_models(cfg, CPU, runtime.Choice())
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    # a fresh run: the Adam state the warm-up creates is zeroed, as a fresh Adam's first step expects
    saved = graphs._snapshot(m)
    graphs.StaticStep(cfg, m, images, capture=False).step()
    graphs._restore(m, saved)
    state = m.opt_g.state[next(m.g_core.parameters())]
    assert all(float(v.abs().sum()) == 0 for v in state.values() if torch.is_tensor(v))
    train_mod.run_step(cfg, m, train_mod.make_batch(cfg, images, m, 0, 0, CPU))  # Adam state exists now
    before = {k: v.clone() for k, v in m.g_core.state_dict().items()}
    adam_before = {k: v.clone() for k, v in m.opt_d.state[next(m.d_core.parameters())].items()}
    saved = graphs._snapshot(m)
    stepper = graphs.StaticStep(cfg, m, images, capture=False)
    for _ in range(3):
        stepper.step()
    assert not torch.equal(m.g_core.state_dict()["main.0.weight"], before["main.0.weight"])
    graphs._restore(m, saved)
    assert all(torch.equal(v, before[k]) for k, v in m.g_core.state_dict().items())
    after = m.opt_d.state[next(m.d_core.parameters())]
    assert all(torch.equal(after[k], v) for k, v in adam_before.items())


def test_several_seeds_at_once_on_a_cpu_run_one_after_another(tmp_path):
    cfgs = [tiny_cfg(tmp_path / f"s{seed}", seed=seed, steps=2) for seed in (0, 1)]
    results = train_mod.train_many(cfgs)
    assert [r["step"] for r in results] == [2, 2]
    a, b = (ckpt.weights_file(r["checkpoint"], "generator").read_bytes() for r in results)
    assert a != b  # two seeds, two models


def test_cpu_threads_follow_the_physical_cores_and_the_quota(monkeypatch, tmp_path):
    import os

    # two hyper-threads of one core, then a quota of 1.5 CPUs over 4 cores
    topo = {0: ("0", "0"), 1: ("0", "0"), 2: ("0", "1"), 3: ("0", "2")}
    real_read = runtime.Path.read_text

    def fake_read(self, *a, **k):
        s = str(self)
        if s.startswith("/sys/devices/system/cpu/cpu"):
            cpu = int(s.split("/cpu/cpu")[1].split("/")[0])
            return topo[cpu][0 if s.endswith("physical_package_id") else 1] + "\n"
        if s == "/sys/fs/cgroup/cpu.max":
            return quota["text"]
        return real_read(self, *a, **k)

    quota = {"text": "max 100000\n"}
    monkeypatch.setattr(runtime.Path, "read_text", fake_read)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert runtime.cpu_threads() == 1  # one physical core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert runtime.cpu_threads() == 3
    quota["text"] = "150000 100000\n"
    assert runtime.cpu_threads() == 1


def test_auto_with_a_graph_leaves_fp16_out_and_broken_candidates_are_dropped(tmp_path, monkeypatch):
    options = [("fp16", False), ("bf16", False), ("fp32", False)]
    monkeypatch.setattr(train_mod, "candidates", lambda *a: list(options))
    monkeypatch.setattr(train_mod, "build_models", lambda cfg, device, choice, **kw: choice)
    monkeypatch.setattr(train_mod, "make_batch", lambda cfg, images, m, step, rank, device: m)

    def fake_step(cfg, choice, batch):  # fp16 fastest; bf16 fast but its losses are NaN
        nan = torch.tensor(float("nan") if choice.precision == "bf16" else 0.5)
        return {"loss_d": nan, "loss_g": torch.tensor(0.1)}
    monkeypatch.setattr(train_mod, "run_step", fake_step)
    speed = {"fp16": 0.1, "bf16": 0.2, "fp32": 1.0}
    monkeypatch.setattr(train_mod, "time_calls", lambda fn, device, give_up_after=None: (fn(), speed[seen[-1]])[1])
    seen = []
    real_choice = runtime.Choice

    def spy(precision="fp32", *a, **k):
        seen.append(precision)
        return real_choice(precision, *a, **k)
    monkeypatch.setattr(train_mod, "Choice", spy)
    cfg = tiny_cfg(tmp_path / "a", precision="auto")
    assert train_mod.choose_runtime(cfg, CPU, cache=tmp_path / "1.json").precision == "fp16"
    cfg.train.cuda_graph = True  # one graph cannot hold the scaler: fp16 is no candidate; bf16 is NaN
    assert train_mod.choose_runtime(cfg, CPU, cache=tmp_path / "2.json").precision == "fp32"


def test_resuming_keeps_this_runs_optimizer_flags(tmp_path):
    p = torch.nn.Parameter(torch.ones(3))
    old = torch.optim.Adam([p], lr=0.1, foreach=False)
    p.grad = torch.ones(3)
    old.step()
    from gan_core.config import sync_model_to_data

    cfg = sync_model_to_data(tiny_cfg(tmp_path / "f"))
    m = train_mod.build_models(cfg, CPU, runtime.Choice())
    m.opt_g = old
    ckpt.save_training_checkpoint(tmp_path / "f", cfg, 1, m.modules(), {"G": old, "D": m.opt_d})
    new = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1, foreach=True)
    ckpt.load_optimizers(ckpt.latest_checkpoint(tmp_path / "f"), {"G": new})
    assert new.param_groups[0]["foreach"] is True  # not the saved False
    assert float(next(iter(new.state.values()))["step"]) == 1.0  # the state itself is restored


def test_precision_is_chosen_for_the_step_that_will_run_graph_or_eager(tmp_path):
    # where the step can be one CUDA graph, each precision is timed as its faster step (eager or graph):
    # on an H200 fp32 was fastest eagerly and bf16/channels_last 1.7x faster than it as graphs
    cuda = torch.device("cuda")
    cfg = tiny_cfg(tmp_path)
    assert train_mod.graph_possible(cfg, cuda, "bf16") and train_mod.graph_possible(cfg, cuda, "fp32")
    assert not train_mod.graph_possible(cfg, cuda, "fp16")  # the scaler steps on the host
    assert not train_mod.graph_possible(cfg, cuda, "bf16", world=2)  # DDP
    assert not train_mod.graph_possible(cfg, CPU, "bf16")
    assert not train_mod.graph_possible(tiny_cfg(tmp_path, cuda_graph=False), cuda, "bf16")
    assert train_mod.graph_possible(tiny_cfg(tmp_path, cuda_graph=True), cuda, "bf16")


def test_the_chooser_times_graph_steps_and_keeps_eager_when_a_capture_fails(tmp_path, monkeypatch):
    # pretend the CPU could capture: each candidate is then timed as eager AND as a graph step
    calls = []

    class FakeStaticStep:
        def __init__(self, cfg, m, images):
            calls.append(m.autocast_dtype)
            if fail:
                raise RuntimeError("capture failed")
            self.step = train_mod.eager_steps(cfg, m, images, CPU)

    real_build = train_mod.build_models
    monkeypatch.setattr(train_mod, "graph_possible", lambda *a, **k: True)
    monkeypatch.setattr(train_mod, "StaticStep", FakeStaticStep)
    # (capturable Adam needs CUDA tensors: the CPU stand-in builds plain ones)
    monkeypatch.setattr(train_mod, "build_models", lambda cfg, dev, choice, **kw: real_build(cfg, dev, choice, wrap=False))
    from gan_core.config import sync_model_to_data
    cfg = sync_model_to_data(tiny_cfg(tmp_path, precision="auto", channels_last=None))
    for fail in (False, True):
        calls.clear()
        logs = []
        choice = train_mod.choose_runtime(cfg, CPU, cache=tmp_path / f"t{fail}.json", on_log=logs.append)
        assert len(calls) == len(choice.timings) >= 2  # one graph attempt per candidate
        assert all(0 < t < float("inf") for t in choice.timings.values())  # eager timings stand on failure
        assert any("as one CUDA graph failed" in line for line in logs) == fail


def test_cpu_bf16_flags_reads_only_the_native_bf16_flags(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_bf16 avx512_bf16x\n")
    real_path = runtime.Path
    monkeypatch.setattr(runtime, "Path", lambda p: info if p == "/proc/cpuinfo" else real_path(p))
    assert runtime.cpu_bf16_flags() == ["amx_bf16", "amx_tile"]  # not the made-up "avx512_bf16x"
    monkeypatch.setattr(runtime, "Path", lambda p: tmp_path / "missing" if p == "/proc/cpuinfo" else real_path(p))
    assert runtime.cpu_bf16_flags() == []
