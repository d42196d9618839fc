"""Convolution products as matmuls over patches (gan_core.convgemm, issue 14): each equals torch's own,
a planned layer trains as the plain one, and the plan is chosen by (injected) timings, cached, refused
where it cannot apply, recorded with the run and reused on resume."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gan_core import checkpoint as ckpt
from gan_core import convgemm
from gan_core import training as train_mod
from gan_core.config import sync_model_to_data
from gan_core.runtime import Choice
from tests.test_train import tiny_cfg

CPU = torch.device("cpu")
CL = torch.channels_last
# (transposed, in, out, kernel, stride, padding, input size): the DCGAN's shapes and some that are not
GEOMETRIES = [(False, 3, 8, 4, 2, 1, 16), (False, 8, 16, 4, 2, 1, 8), (False, 16, 1, 4, 1, 0, 4),
              (False, 5, 7, 3, 2, 1, 7), (False, 4, 6, 3, 1, 1, 5), (True, 16, 8, 4, 1, 0, 1),
              (False, 5, 7, 4, 2, 1, 7), (False, 3, 4, 3, 2, 0, 8),  # strides that leave a remainder
              (True, 8, 4, 4, 2, 1, 4), (True, 8, 3, 4, 2, 1, 8), (True, 6, 5, 3, 1, 1, 5)]


def operands(transposed, cin, cout, k, s, p, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cin, size, size, generator=gen).contiguous(memory_format=CL)
    w = torch.randn(*((cin, cout) if transposed else (cout, cin)), k, k, generator=gen).contiguous(memory_format=CL)
    y = convgemm.layer_forward(x, w, s, p, transposed, False)
    gy = torch.randn(y.shape, generator=gen).contiguous(memory_format=CL)
    return x, w, y, gy


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_each_product_as_a_matmul_equals_torchs(geometry):
    transposed, _, _, k, s, p, _ = geometry
    x, w, y, gy = operands(*geometry)
    fn = torch.nn.functional.conv_transpose2d if transposed else torch.nn.functional.conv2d
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = fn(xr, wr, None, s, p)
    ref.backward(gy)
    assert torch.allclose(convgemm.layer_forward(x, w, s, p, transposed, True), ref, atol=1e-4)
    assert torch.allclose(convgemm.layer_input_grad(gy, x, w, s, p, transposed, True), xr.grad, atol=1e-4)
    assert torch.allclose(convgemm.layer_weight_grad(gy, x, w, s, p, transposed, True), wr.grad, atol=1e-3)
    # and the oneDNN way, as the plan calls it, is torch's too
    assert torch.allclose(convgemm.layer_input_grad(gy, x, w, s, p, transposed, False), xr.grad, atol=1e-4)


@pytest.mark.parametrize("ops", ["", "f", "i", "w", "iw", "fiw"])
@pytest.mark.parametrize("kind", [nn.Conv2d, nn.ConvTranspose2d])
def test_a_planned_layer_computes_what_the_plain_one_does(ops, kind):
    torch.manual_seed(0)
    plain = kind(6, 5, 4, 2, 1, bias=True)
    planned = copy.deepcopy(plain)
    convgemm.install({"D": nn.Sequential(planned)}, {"D.0": ops})
    assert type(planned).__name__.startswith("Planned") and planned.gemm_ops == ops
    assert planned.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(3, 6, 8, 8).contiguous(memory_format=CL)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), planned(xb)
    assert torch.allclose(ya, yb, atol=1e-4)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-4)
    for a, b in zip(plain.parameters(), planned.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-3)
    # a deep copy (the EMA copies) keeps the plan and its own weights
    twin = copy.deepcopy(planned)
    assert twin.gemm_ops == ops and twin.weight.data_ptr() != planned.weight.data_ptr()
    # outside the plan's scope (fp16, a double input) the layer runs as torch runs it
    wide = copy.deepcopy(planned).double()
    assert torch.allclose(wide(x.double()).float(), ya, atol=1e-4) and convgemm.run_dtype(x.half()) is None


@pytest.mark.parametrize("kind", [nn.Conv2d, nn.ConvTranspose2d])
def test_under_bf16_autocast_a_planned_layer_computes_what_autocast_does(kind):
    torch.manual_seed(0)
    plain = kind(6, 5, 4, 2, 1, bias=True)
    planned = copy.deepcopy(plain)
    convgemm.install({"G": nn.Sequential(planned)}, {"G.0": "fiw"})
    x = torch.randn(3, 6, 8, 8).contiguous(memory_format=CL)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = plain(xa), planned(xb)
    assert ya.dtype == yb.dtype == torch.bfloat16
    assert torch.allclose(ya.float(), yb.float(), atol=0.1, rtol=0.02)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert xb.grad.dtype == torch.float32 and planned.weight.grad.dtype == torch.float32
    assert torch.allclose(xa.grad, xb.grad, atol=0.1, rtol=0.02)
    assert torch.allclose(plain.weight.grad, planned.weight.grad, atol=0.3, rtol=0.02)


def test_install_refuses_a_plan_for_other_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 3, 1, 1, dilation=1, groups=2))
    with pytest.raises(ValueError, match="D.1"):
        convgemm.install({"D": model}, {"D.1": "f"})  # grouped: not eligible
    with pytest.raises(ValueError, match="D.7"):
        convgemm.install({"D": model}, {"D.7": "f"})
    with pytest.raises(ValueError, match="D.0"):
        convgemm.install({"D": model}, {"D.0": "fx"})
    # a subclass with a forward of its own (here a spectral-normed weight) is not touched
    assert convgemm.eligible(model[0]) and not convgemm.eligible(
        nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4, 3, 1, 1)))


def test_a_gradient_penalty_through_planned_layers_equals_the_plain_one():
    # R1 differentiates D's input gradient again (create_graph): the planned layers must allow it
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 1, 0))
    planned = copy.deepcopy(plain)
    convgemm.install({"D": planned}, {"D.0": "fiw", "D.2": "fiw"})
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=CL)
    grads = []
    for net in (plain, planned):
        real = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(net(real).sum(), real, create_graph=True)
        penalty = g.pow(2).sum()
        penalty.backward()
        grads.append([p.grad for p in net.parameters()])
    assert sum(g is not None for g in grads[0]) == 3  # the last bias does not move the input gradient
    for a, b in zip(*grads):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-4)


def test_the_plan_takes_a_matmul_only_where_it_timed_5_percent_faster_and_is_cached(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(), nn.Conv2d(8, 16, 4, 2, 1),
                          nn.LeakyReLU(), nn.Conv2d(16, 1, 4, 1, 0))
    shapes = convgemm.input_shapes({"D": model}, lambda: model(torch.randn(2, 3, 16, 16)))
    assert shapes == {"D.0": (2, 3, 16, 16), "D.2": (2, 8, 8, 8), "D.4": (2, 16, 4, 4)}
    table = {("D.0", "f"): (1.0, 0.5), ("D.0", "i"): (1.0, 0.97), ("D.0", "w"): (1.0, 2.0),
             ("D.2", "f"): (1.0, 1.5), ("D.2", "i"): (1.0, 1.5), ("D.2", "w"): (1.0, 0.9)}
    layer_path = {id(layer): path for path, layer in convgemm.layers({"D": model}).items()}
    calls = []

    def time_one(layer, shape, op, gemm, limit):
        path = layer_path[id(layer)]
        calls.append((path, op, gemm))
        return table.get((path, op), (1.0, 1.0))[gemm]
    cache = tmp_path / "tuning.json"
    said = []
    plan, timings = convgemm.plan({"D": model}, shapes, CPU, cache, time_one, announce=lambda: said.append(1))
    assert plan == {"D.0": "f", "D.2": "w"}  # D.0's input grad was only 3% faster: noise, not taken
    assert timings["D.0"]["f"] == {"oneDNN": 1.0, "matmul": 0.5 / 0.95} and len(calls) == 18 and said == [1]
    again, _ = convgemm.plan({"D": model}, shapes, CPU, cache, time_one, announce=lambda: said.append(1))
    assert again == plan and len(calls) == 18  # each layer's products are timed once per shape and machine
    assert said == [1]  # and nothing is announced when the cache answers
    # a layer whose shape was not seen is left alone
    assert convgemm.plan({"D": model}, {"D.2": shapes["D.2"]}, CPU, tmp_path / "b.json", time_one)[0] == {"D.2": "w"}


def layer_timer(winners):
    """Injected per-layer timings: matmul twice as fast for the (layer kind, weight shape, op) in `winners`."""
    def time_one(layer, shape, op, gemm, limit):
        kind = "T" if isinstance(layer, nn.ConvTranspose2d) else "C"
        return 0.5 if gemm and (kind, tuple(layer.weight.shape), op) in winners else 1.0
    return time_one


def test_choose_conv_gemm_keeps_the_plan_only_if_the_step_is_faster(tmp_path, monkeypatch):
    cfg = sync_model_to_data(tiny_cfg(tmp_path / "a", channels_last=True, conv_gemm=None))
    # the tiny DCGAN's D: 3 -> 8 -> 16 -> 32 -> 1 (main.0, 2, 5, 8); make its 16 -> 32 layer's weight grad win
    winners = {("C", (32, 16, 4, 4), "w")}
    fp32_cl = Choice("fp32", True, how="set")
    step_time = {"oneDNN": 1.0, "planned": 0.8}
    monkeypatch.setattr(train_mod, "time_calls", lambda fn, device, give_up_after=None, **_: (
        fn(), step_time["planned" if seen_plan(fn) else "oneDNN"])[1])
    logs = []
    chosen = train_mod.choose_conv_gemm(cfg, CPU, fp32_cl, cache=tmp_path / "1.json", on_log=logs.append,
                                        time_layer=layer_timer(winners))
    assert dict(chosen.conv_gemm) == {"D.main.5": "w"} and "kept" in logs[-1]
    step_time["planned"] = 1.2  # now the whole step is slower with it: dropped
    dropped = train_mod.choose_conv_gemm(cfg, CPU, fp32_cl, cache=tmp_path / "2.json", on_log=logs.append,
                                         time_layer=layer_timer(winners))
    assert dropped.conv_gemm == () and "not kept" in logs[-1]
    # conv_gemm=true takes the layers' plan without timing the step; false never plans
    forced = sync_model_to_data(tiny_cfg(tmp_path / "b", channels_last=True, conv_gemm=True))
    assert dict(train_mod.choose_conv_gemm(forced, CPU, fp32_cl, cache=tmp_path / "3.json",
                                           time_layer=layer_timer(winners)).conv_gemm) == {"D.main.5": "w"}
    bf16 = train_mod.choose_conv_gemm(forced, CPU, Choice("bf16", True), cache=tmp_path / "4.json",
                                      time_layer=layer_timer(winners))
    assert dict(bf16.conv_gemm) == {"D.main.5": "w"} and bf16.precision == "bf16"
    off = sync_model_to_data(tiny_cfg(tmp_path / "c", channels_last=True, conv_gemm=False))
    assert train_mod.choose_conv_gemm(off, CPU, fp32_cl, time_layer=never) is fp32_cl
    # only for channels_last eager steps on one CPU process, in fp32 or bf16
    for choice, c, world in ((Choice("fp16", True), cfg, 1), (Choice("fp32", False), cfg, 1), (fp32_cl, cfg, 2),
                             (fp32_cl, sync_model_to_data(tiny_cfg(tmp_path / "d", compile=True, conv_gemm=None)), 1)):
        assert train_mod.choose_conv_gemm(c, CPU, choice, world, time_layer=never) is choice


def never(*_):
    raise AssertionError("nothing should be timed")


def seen_plan(fn) -> bool:
    """Whether the step a timing closure runs has planned layers."""
    cells = [c.cell_contents for c in fn.__closure__ or ()]
    models = [c for c in cells if hasattr(c, "g_core")]
    if not models:
        return any(seen_plan(c) for c in cells if callable(c) and getattr(c, "__closure__", None))
    return any(type(m).__name__.startswith("Planned") for m in models[0].d_core.modules())


def test_train_records_the_plan_and_a_resumed_run_reuses_it(tmp_path, monkeypatch):
    winners = {("C", (32, 16, 4, 4), "w"), ("C", (8, 3, 4, 4), "f")}
    monkeypatch.setattr(train_mod.convgemm, "time_layer",
                        lambda layer, shape, op, gemm, device, limit, dtype:
                        layer_timer(winners)(layer, shape, op, gemm, limit))
    cfg = tiny_cfg(tmp_path / "r", steps=4, channels_last=True, conv_gemm=True, checkpoint_every=2)
    logs = []
    result = train_mod.train(cfg, on_log=logs.append)
    assert result["conv_gemm"] == {"D.main.0": "f", "D.main.5": "w"}
    assert any("as matmuls: D.main.0 f, D.main.5 w" in line for line in logs)
    meta = json.loads((tmp_path / "r" / "checkpoints" / "step_00000004" / "config.json").read_text())
    assert meta["runtime"]["conv_gemm"] == {"D.main.0": "f", "D.main.5": "w"}
    monkeypatch.setattr(train_mod.convgemm, "time_layer", never)
    resumed = train_mod.train(tiny_cfg(tmp_path / "r", steps=6, channels_last=True, resume=True, conv_gemm=None))
    assert resumed["runtime"] == "recorded" and resumed["conv_gemm"] == result["conv_gemm"]
    # the planned run trains as the plain one does, up to float rounding
    plain = train_mod.train(tiny_cfg(tmp_path / "p", steps=6, channels_last=True, conv_gemm=False))
    assert plain["conv_gemm"] == {}
    for role in ("generator", "discriminator"):
        a = load_file(ckpt.weights_file(resumed["checkpoint"], role))
        b = load_file(ckpt.weights_file(plain["checkpoint"], role))
        assert a.keys() == b.keys()
        for name in a:  # Adam steps of lr 2e-4: rounding may move a weight by a step or two, no more
            diff = (a[name].float() - b[name].float()).abs()
            assert diff.max() < 2e-3 and diff.mean() < 2e-4, (role, name)


def test_a_cached_plan_is_the_measured_one_even_for_microsecond_products(tmp_path):
    # the cache keeps times to 10 us; the 5% margin must not be applied again to rounded times
    model = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1))
    shapes = {"D.0": (2, 3, 8, 8)}

    def time_one(layer, shape, op, gemm, limit):
        return 21.5e-6 if gemm else 23.4e-6  # the matmul 8% faster
    first, _ = convgemm.plan({"D": model}, shapes, CPU, tmp_path / "t.json", time_one)
    again, _ = convgemm.plan({"D": model}, shapes, CPU, tmp_path / "t.json", never)
    assert first == again == {"D.0": "fiw"}


def test_a_run_with_a_plan_stopped_and_resumed_is_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod.convgemm, "time_layer", lambda layer, shape, op, gemm, *rest: 0.5 if gemm else 1.0)
    kw = dict(steps=8, channels_last=True, conv_gemm=True)
    full = train_mod.train(tiny_cfg(tmp_path / "full", **kw))
    assert len(full["conv_gemm"]) == 8 and all(ops == "fiw" for ops in full["conv_gemm"].values())
    calls = []

    def stop_at_4():
        calls.append(1)
        return len(calls) == 4
    train_mod.train(tiny_cfg(tmp_path / "split", **kw), should_stop=stop_at_4)
    resumed = train_mod.train(tiny_cfg(tmp_path / "split", resume=True, **kw))
    assert resumed["runtime"] == "recorded" and resumed["conv_gemm"] == full["conv_gemm"]
    for name in ("generator", "discriminator", "generator_ema"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_recorded_plan_that_does_not_fit_the_model_is_timed_again(tmp_path, monkeypatch):
    # a run recorded by other model code names a layer this model does not have: resume times a new plan
    winners = {("C", (32, 16, 4, 4), "w")}
    monkeypatch.setattr(train_mod.convgemm, "time_layer",
                        lambda layer, shape, op, gemm, device, limit, dtype:
                        layer_timer(winners)(layer, shape, op, gemm, limit))
    cfg = sync_model_to_data(tiny_cfg(tmp_path / "r", channels_last=True, conv_gemm=True))
    recorded = {"device": train_mod.device_key(CPU), "precision": "fp32", "channels_last": True,
                "conv_gemm": {"D.main.99": "w"}}
    assert not train_mod.plan_fits(cfg, recorded["conv_gemm"])
    assert train_mod.plan_fits(cfg, {"D.main.5": "w"}) and not train_mod.plan_fits(cfg, {"D.main.5": "wx"})
    for bad in ({"D.main.99": "w"}, {"D.main.5": "wx"}):  # an unknown layer, an unknown product
        logs = []
        choice = train_mod.choose_runtime(cfg, CPU, {**recorded, "conv_gemm": bad}, cache=tmp_path / "c.json",
                                          on_log=logs.append)
        assert dict(choice.conv_gemm) == {"D.main.5": "w"} and any("does not fit" in line for line in logs)
    recorded["conv_gemm"] = {"D.main.5": "w"}  # one that fits is reused without timing anything
    monkeypatch.setattr(train_mod.convgemm, "time_layer", never)
    assert dict(train_mod.choose_runtime(cfg, CPU, recorded, on_log=logs.append).conv_gemm) == {"D.main.5": "w"}
