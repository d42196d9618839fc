"""The app's handlers, on tiny models of every kind built in a temporary folder (no bundled weights
needed, nothing downloaded)."""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import app
import gradio as gr
from gan_core import kinds
from gan_core.config import DataConfig, RunConfig, TrainConfig
from gan_core.inference.blobs import BlobModel
from gan_core.inference.cluster import ClusterModel
from gan_core.inference.loading import export, load_model
from gan_core.jobs import TrainingJob
from gan_core.models import blob_layout
from gan_core.models.blob_layout import Layout
from gan_core.models.blobgan import BlobGANConfig
from gan_core.models.cluster import ClusterConfig
from gan_core.models.dcgan import DCGANConfig
from gan_core.training import train

from conftest import ROOT

N_SLIDERS_ZERO = (0,) * app.N_SLIDERS
TINY_BLOBGAN = dict(nz=8, ngf=4, ndf=4, blobs=3, feature_dim=8, style_dim=8, layout_hidden=16, encoder_ndf=4)


def _make(tmp, name, model, data):
    run = tmp / "runs" / name
    train(RunConfig(model=model, data=data, train=TrainConfig(steps=1, batch_size=4, out_dir=str(run), device="cpu")))
    return export(run, tmp / "checkpoints" / name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app-models")
    _make(tmp, "tiny-dcgan", DCGANConfig(nz=8, ngf=4, ndf=4), DataConfig(num_images=16, image_size=32))
    cluster = _make(tmp, "tiny-cluster", ClusterConfig(nz=8, ngf=4, ndf=4, k=3, overcluster=6, subheads=2,
                                                          input_transform="none"),
                    DataConfig(num_images=32, image_size=32, channels=3))
    meta = json.loads((cluster / "config.json").read_text())
    assert meta["familiarity"]["images"] == 32  # training recorded its familiarity statistics (and export kept them)
    meta["familiarity"]["threshold"] = -1.0  # a one-step model: nothing is unsure unless a test says so
    (cluster / "config.json").write_text(json.dumps(meta))
    folder = _make(tmp, "tiny-blobgan", BlobGANConfig(**TINY_BLOBGAN),
                   DataConfig(source="scenes", num_images=8, image_size=64, channels=3))
    cfg, _ = kinds.read_config(folder)
    save_file(kinds.build_role(cfg, "encoder").state_dict(), str(folder / "encoder.safetensors"))
    return tmp


@pytest.fixture
def models(model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(app, "CHECKPOINTS", model_dir / "checkpoints")
    monkeypatch.setattr(app, "JOB", TrainingJob(tmp_path / "work"))
    monkeypatch.setenv("GANLAB_HUB_MODELS", "someone/model-a")
    app._load.cache_clear()
    yield
    app._load.cache_clear()


def _sample(model="tiny-dcgan", seed=3, count=10, truncation=1.0, code="random", raw_z=False, gallery=False,
            sliders=(0,) * app.N_SLIDERS):
    return app.sample_images(model, seed, count, truncation, code, raw_z, gallery, *sliders)


def _png(colour=(200, 30, 30), size=(40, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_model_pickers_filter_by_kind(models):
    assert app.model_choices() == ["tiny-blobgan", "tiny-cluster", "tiny-dcgan", "someone/model-a"]
    assert app.model_choices(ClusterModel) == ["tiny-cluster", "someone/model-a"]  # a Hub id's kind is unknown yet
    assert app.model_choices(BlobModel)[0] == "tiny-blobgan"
    with pytest.raises(gr.Error, match="tiny-dcgan is a dcgan model; this tab needs a cluster model"):
        app.load("tiny-dcgan", ClusterModel)
    with pytest.raises(gr.Error, match="this tab needs a blobgan model"):
        app.load("tiny-cluster", BlobModel)


def test_sample_is_deterministic_and_sliders_move_it(models):
    grid, singles = _sample()
    # 8 per row, 32 px + 2 px padding, enlarged 4x (nearest) for display
    assert grid.size == (4 * (8 * 34 + 2), 4 * (2 * 34 + 2)) and singles is None
    pixels = np.asarray(grid)
    assert np.array_equal(pixels[::4, ::4].repeat(4, 0).repeat(4, 1), pixels)  # whole pixels, none invented
    same, _ = _sample()
    assert np.array_equal(np.asarray(grid), np.asarray(same))
    assert not np.array_equal(np.asarray(grid), np.asarray(_sample(seed=4)[0]))
    moved, _ = _sample(sliders=(2.0,) + (0,) * (app.N_SLIDERS - 1))
    assert not np.array_equal(np.asarray(grid), np.asarray(moved))
    raw, _ = _sample(raw_z=True, sliders=(2.0,) + (0,) * (app.N_SLIDERS - 1))
    assert not np.array_equal(np.asarray(raw), np.asarray(moved))
    _, singles = _sample(count=3, gallery=True)
    assert len(singles) == 3 and singles[0].size == (128, 128)


def test_truncation_zero_gives_one_image_for_every_seed(models):
    a, _ = _sample(seed=1, count=1, truncation=0.0)
    b, _ = _sample(seed=2, count=1, truncation=0.0)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_principal_directions_are_unit_and_ordered(models):
    dirs, stds = app.load("tiny-dcgan").sampler.directions()
    assert dirs.shape == (app.N_SLIDERS, 8)
    assert torch.allclose(dirs.norm(dim=1), torch.ones(app.N_SLIDERS), atol=1e-5)
    assert (stds > 0).all()


def test_cluster_code_picker_and_codes(models):
    update = app.code_choices("tiny-cluster")
    assert update["visible"] and update["choices"][0] == "random" and len(update["choices"]) == 4
    assert not app.code_choices("tiny-dcgan")["visible"]
    grid, _ = _sample("tiny-cluster", count=2, code="cluster 1")
    assert grid.size[0] > 0
    # a code picked for a cluster model is ignored by a model without codes (the picker may lag behind)
    plain, _ = _sample("tiny-dcgan", count=2)
    assert np.array_equal(np.asarray(plain), np.asarray(_sample("tiny-dcgan", count=2, code="cluster 1")[0]))
    with pytest.raises(gr.Error):
        _sample("tiny-cluster", code="no such cluster")


def test_interpolation_starts_at_seed_a_and_writes_a_gif(models):
    strip, gif = app.interpolate("tiny-dcgan", 5, 6, 4, 1.0, "random")
    assert strip.size == (4 * 34 + 2, 34 + 2)
    first, _ = _sample(seed=5, count=1)  # shown 4x enlarged
    assert np.array_equal(np.asarray(strip)[2:34, 2:34], np.asarray(first)[8:136:4, 8:136:4])
    with Image.open(gif) as im:
        assert im.n_frames == 4 + 2  # there and back


def test_bad_numbers_are_user_errors(models):
    with pytest.raises(gr.Error):
        _sample(count=1000)
    with pytest.raises(gr.Error):
        _sample(truncation=float("nan"))
    with pytest.raises(gr.Error):
        _sample("someone/not-listed")


def test_blobs_sample_edit_and_invert(models):
    image, bmap, ellipses, layout, picker = app.sample_blobs("tiny-blobgan", 0)
    assert image.size == bmap.size == ellipses.size == (256, 256)
    assert len(picker["choices"]) == 3 and layout["xy"][0][0] == pytest.approx(layout["xy"][0][0])
    before = Layout.from_dict(layout)
    *_, moved, _ = app.edit_blob("tiny-blobgan", layout, 1, "move", 0.1, -0.05, 0, 0, 1)
    after = Layout.from_dict(moved)
    expected = (before.xy[0, 1] + torch.tensor([0.1, -0.05])).clamp(0, 1)
    assert torch.allclose(after.xy[0, 1], expected, atol=1e-4)
    assert torch.equal(after.xy[0, 0], before.xy[0, 0])
    *_, hidden, picker = app.edit_blob("tiny-blobgan", layout, 2, "hide", 0, 0, 0, 0, 1)
    assert not Layout.from_dict(hidden).visible()[0, 2] and "hidden" in picker["choices"][2][0]
    # local (the default): only what the edit touches is repainted; the rest is the picture from before
    reference, *_ = app.edit_blob("tiny-blobgan", layout, 1, "move", 0, 0, 0, 0, 1)  # no change: the layout as sent
    for k, action in ((1, "move"), (2, "hide"), (0, "resize")):
        edited_image, *_, edited, _ = app.edit_blob("tiny-blobgan", layout, k, action, 0.2, 0.1, 1.5, 0, 1)
        untouched = blob_layout.edit_mask(before, Layout.from_dict(edited), 64)[0, 0] == 0
        untouched = untouched.repeat_interleave(app.VIEW_SCALE, 0).repeat_interleave(app.VIEW_SCALE, 1).numpy()
        same = np.asarray(edited_image)[untouched] == np.asarray(reference)[untouched]
        assert untouched.any() and same.all(), action
        full, *_ = app.edit_blob("tiny-blobgan", layout, k, action, 0.2, 0.1, 1.5, 0, 1, False)
        assert isinstance(full, Image.Image)
    # a chain of edits, each given the picture the last one returned: what none of them touched never moves
    first_image, *_, first, _ = app.edit_blob("tiny-blobgan", layout, 1, "move", 0.2, 0.1, 0, 0, 1, True, reference)
    second_image, *_, second, _ = app.edit_blob("tiny-blobgan", first, 0, "move", -0.1, 0.2, 0, 0, 1, True, first_image)
    masks = [blob_layout.edit_mask(before, Layout.from_dict(first), 64), blob_layout.edit_mask(
        Layout.from_dict(first), Layout.from_dict(second), 64)]
    untouched = ((masks[0] + masks[1])[0, 0] == 0).repeat_interleave(app.VIEW_SCALE, 0).repeat_interleave(
        app.VIEW_SCALE, 1).numpy()
    assert untouched.any() and (np.asarray(second_image)[untouched] == np.asarray(reference)[untouched]).all()
    *_, shown, _ = app.edit_blob("tiny-blobgan", hidden, 2, "show", 0, 0, 0, 0, 1)
    assert torch.equal(Layout.from_dict(shown).size, before.size)
    *_, deep, picker = app.edit_blob("tiny-blobgan", layout, 0, "depth", 0, 0, 0, 2, 1)
    assert torch.allclose(Layout.from_dict(deep).xy[0, 2], before.xy[0, 0], atol=1e-4)
    assert picker["value"] == 2
    out = app.invert_image("tiny-blobgan", Image.new("RGB", (80, 60), (10, 200, 30)))
    assert out[0].size == (256, 256) and len(out[3]["xy"][0]) == 3


def test_bad_layouts_and_actions_are_user_errors(models):
    *_, layout, _ = app.sample_blobs("tiny-blobgan", 0)
    for bad in ({"xy": [[1, 2]]}, "not a layout", {**layout, "size": [[float("nan")] * 3]}):
        with pytest.raises(gr.Error):
            app.edit_blob("tiny-blobgan", bad, 0, "move", 0.1, 0, 0, 0, 1)
    with pytest.raises(gr.Error):
        app.edit_blob("tiny-blobgan", layout, 0, "explode", 0, 0, 0, 0, 1)
    with pytest.raises(gr.Error):
        app.edit_blob("tiny-blobgan", layout, 9, "move", 0, 0, 0, 0, 1)
    with pytest.raises(gr.Error):
        app.sample_blobs("tiny-dcgan", 0)  # not a BlobGAN


def test_classify_one_image(models):
    image = Image.new("RGB", (50, 40), (0, 0, 255))
    labels, line = app.classify("tiny-cluster", image)
    assert set(labels) == {"cluster 0", "cluster 1", "cluster 2"}
    assert sum(labels.values()) == pytest.approx(1.0, abs=1e-4)
    assert line.startswith("Looks like the model's training images") and "**" not in line  # the top 3 is not repeated
    with pytest.raises(gr.Error):
        app.classify("tiny-cluster", None)
    cm = app.load("tiny-cluster", ClusterModel)
    cm.meta["familiarity"] = {**cm.meta["familiarity"], "threshold": 1.5}  # above any cosine similarity: unsure
    labels, line = app.classify("tiny-cluster", image)
    assert labels == "unsure" and line.startswith("**Unsure:**") and "Best guesses: cluster" in line
    saved = cm.meta.pop("familiarity")  # a checkpoint from before familiarity was recorded: probabilities, and a note
    labels, line = app.classify("tiny-cluster", image)
    assert isinstance(labels, dict) and "no familiarity statistics" in line
    cm.meta["familiarity"] = {**saved, "centroids": {"shape": [2, 2], "fp16_base64": "AAAA"}}  # malformed (an upload)
    with pytest.warns(UserWarning, match="familiarity statistics ignored"):
        labels, line = app.classify("tiny-cluster", image)
    assert isinstance(labels, dict) and "no familiarity statistics" in line
    cm.meta["familiarity"] = saved


def test_classify_batch_with_a_zip_and_a_bad_file(models, tmp_path):
    good = tmp_path / "red.png"
    good.write_bytes(_png())
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a/blue.png", _png((0, 0, 255)))
        z.writestr("../evil.png", _png((0, 255, 0)))
        z.writestr("notes.txt", "skip me")
    table, counts, csv_path = app.classify_batch("tiny-cluster", [str(good), str(bad), str(archive)])
    assert table["file"].tolist() == ["red.png", "fake.png", "more.zip:a/blue.png", "more.zip:evil.png",
                                      "more.zip:notes.txt"]  # left out, but listed: nothing dropped without a word
    assert table["cluster"].tolist()[1] == "(unreadable)"
    assert table["cluster"].tolist()[4] == "(skipped: not an image file)"
    assert counts["images"].sum() == 3 and list(counts["cluster"]) == ["cluster 0", "cluster 1", "cluster 2"]
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[0]["file"] == "red.png" and rows[4]["file"] == "more.zip:notes.txt"


def test_cluster_names_exemplars_and_rename(models, model_dir):
    names, picker = app.cluster_names("tiny-cluster")
    assert names["name"].tolist() == ["cluster 0", "cluster 1", "cluster 2"]
    said = []
    app.load("tiny-cluster", app.ClusterModel)._train_probs = None  # as on a fresh server
    gallery = app.exemplar_gallery("tiny-cluster", picker["value"], progress=lambda *a, **k: said.append(k.get("desc")))
    assert all(isinstance(img, Image.Image) for img, _ in gallery)
    assert len(said) == 1 and "once" in said[0]  # the slow first call says why
    app.exemplar_gallery("tiny-cluster", picker["value"], progress=lambda *a, **k: said.append(k.get("desc")))
    assert len(said) == 1  # scored already: nothing to explain
    assert all(len(caption) <= 10 for _, caption in gallery)  # "train 97%", "generated": not cut in the grid
    renamed = pd.DataFrame({"cluster": [0, 1, 2], "name": ["red things", "blue things", "others"]})
    message, picker = app.save_cluster_names("tiny-cluster", renamed)
    assert picker["choices"] == ["red things", "blue things", "others"]
    labels, _ = app.classify("tiny-cluster", Image.new("RGB", (8, 8)))
    assert set(labels) == {"red things", "blue things", "others"}
    with pytest.raises(gr.Error):
        app.save_cluster_names("tiny-cluster", pd.DataFrame({"cluster": [0], "name": ["too few"]}))
    app.save_cluster_names("tiny-cluster", pd.DataFrame({"cluster": [0, 1, 2], "name": ["cluster 0", "cluster 1", "cluster 2"]}))


@pytest.mark.slow
def test_training_job_end_to_end(models):
    outputs = list(app.start_training("shapes", None, "", "dcgan", 6, 4, 2e-4, 32, 3, 10, "my-run"))
    summary, losses, _, zip_path = outputs[-1]
    assert "done" in summary and zip_path.endswith("my-run.zip")
    assert set(losses["loss"]) == set(app.LOSS_NAMES.values())  # "D (discriminator)", "G (generator)"
    assert losses["step"].dtype.kind == "i" and losses["value"].dtype.kind == "f"
    assert "my-run" in app.model_choices() and "my-run" not in app.model_choices(ClusterModel)
    with zipfile.ZipFile(zip_path) as z:
        assert "my-run/config.json" in z.namelist()
    grid, _ = _sample("my-run", count=2)
    assert grid.size == (4 * (2 * 34 + 2), 4 * (34 + 2))
    updates = app.refresh_pickers("my-run", None, None)
    assert "my-run" in updates[0]["choices"] and updates[0]["value"] == "my-run"


@pytest.mark.slow
def test_one_job_at_a_time_and_stop(models):
    gen = app.start_training("shapes", None, "", "dcgan", 100000, 4, 2e-4, 32, 3, 10, "long-run")
    next(gen)
    try:
        while app.JOB.status().step == 0:  # past the data loading: it has trained a few steps
            next(gen)
        with pytest.raises(gr.Error, match="Another training job"):
            next(app.start_training("shapes", None, "", "dcgan", 5, 4, 2e-4, 32, 3, 10, "second"))
        assert "Stopping" in app.stop_training()
        status = app.JOB.wait(120)
        assert status.state == "stopped" and status.model_dir is not None
    finally:
        app.JOB.stop()
        app.JOB.wait(120)
    assert app.stop_training() == "No training job is running."


def test_training_inputs_are_checked(models):
    with pytest.raises(gr.Error):
        next(app.start_training("upload", None, "", "dcgan", 5, 4, 2e-4, 32, 3, 10, ""))
    with pytest.raises(gr.Error):
        next(app.start_training("shapes", None, "", "dcgan", -5, 4, 2e-4, 32, 3, 10, ""))
    with pytest.raises(gr.Error):
        next(app.start_training("shapes", None, "", "dcgan", 5, 4, 2e-4, 32, 3, 10, "../escape"))
    with pytest.raises(gr.Error):
        app.push_to_hub("user/name", "", True)  # nothing trained, no token: refused before any network


def test_training_on_uploaded_images(models, tmp_path):
    archive = tmp_path / "imgs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(6):
            z.writestr(f"{i}.png", _png((40 * i, 100, 200)))
    outputs = list(app.start_training("upload", [str(archive)], "", "dcgan", 3, 4, 2e-4, 32, 3, 10, "uploaded"))
    assert "done" in outputs[-1][0]


def test_app_builds_with_every_api_name(models):
    demo = app.build()
    names = {dep.get("api_name") for dep in demo.config["dependencies"] if dep.get("api_visibility", "public") == "public"}
    assert {"train", "stop", "sample", "interpolate", "blobs", "edit_blob", "invert", "classify",
            "classify_batch"} <= names


def test_controls_redraw_live_and_uploads_classify_at_once(models):
    """The events, read off the built app: what triggers which handler, and how bursts are handled."""
    demo = app.build()

    def triggers(fn_name: str) -> list[tuple[set, str]]:
        out = []
        for f in demo.fns.values():
            if getattr(f.fn, "__name__", "") == fn_name:
                out.append(({(getattr(demo.blocks.get(t), "label", None), ev) for t, ev in f.targets}, f.trigger_mode))
        return out

    live = [(t, mode) for t, mode in triggers("sample_images") if ("Seed", "submit") in t]
    assert len(live) == 1 and live[0][1] == "always_last"
    assert {("Truncation", "release"), ("How many", "release"), ("Cluster code", "change"), ("Refine with D (steps; slower)", "release"),
            ("direction 1", "release"), (f"direction {app.N_SLIDERS}", "release")} <= live[0][0]
    # another model first sets Refine with D to that model's default draw, then redraws
    first = [(i, f) for i, f in demo.fns.items() if getattr(f.fn, "__name__", "") == "refine_default"]
    assert len(first) == 1 and first[0][1].trigger_mode == "always_last"
    assert {(getattr(demo.blocks.get(t), "label", None), ev) for t, ev in first[0][1].targets} == {("Model", "change")}
    assert [f.trigger_after for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "sample_images"
            and f.trigger_after is not None and demo.fns[f.trigger_after] is first[0][1]]
    assert any(("One image", "upload") in t for t, _ in triggers("classify"))
    cleared = [f for f in demo.fns.values() if ("One image" , "clear") in
               {(getattr(demo.blocks.get(t), "label", None), ev) for t, ev in f.targets}]
    assert len(cleared) == 1 and cleared[0].fn() == (None, "")  # the old result goes with the old image
    tabs = next(b for b in demo.blocks.values() if isinstance(b, app.gr.Tabs))
    assert tabs.selected == "sample"
    gallery = next(b for b in demo.blocks.values() if isinstance(b, app.gr.Gallery) and b.label == "Single images")
    assert gallery.visible is False  # shown only with "Also as a gallery"


def test_a_run_folder_typed_into_a_picker_opens_without_a_restart(models, tmp_path, monkeypatch):
    from gan_core import training
    from gan_core.config import DataConfig, RunConfig, TrainConfig
    from gan_core.models.dcgan import DCGANConfig

    run = tmp_path / "cli-run"
    training.train(RunConfig(model=DCGANConfig(nz=8, ngf=4, ndf=4), data=DataConfig(num_images=16, image_size=32),
                             train=TrainConfig(steps=2, batch_size=4, device="cpu", precision="fp32",
                                               out_dir=str(run))))
    grid, _ = app.sample_images(str(run), 0, 2, 1.0, "random", False, False, *([0] * app.N_SLIDERS))
    assert grid.size == (4 * (2 * 34 + 2), 4 * (34 + 2))  # the run's latest checkpoint, 32 px
    with pytest.raises(gr.Error, match="not a model"):
        app.load(str(tmp_path))
    with pytest.raises(gr.Error, match="or type the path"):
        app.load("no-such-model")
    monkeypatch.setattr(app, "PUBLIC", True)  # a visitor may not open the server's folders
    with pytest.raises(gr.Error, match="pick one from the list[.]"):
        app.load(str(run))
    demo = app.build()
    assert any(getattr(f.fn, "__name__", "") == "refresh_pickers" and any(ev == "load" for _, ev in f.targets)
               for f in demo.fns.values())  # every page load reads the model folders again


def test_bundled_default_checkpoint_is_shipped_and_loads():
    folder = app.ROOT / "checkpoints" / app.DEFAULTS["sample"]
    assert folder.exists(), "the bundled default checkpoint is missing"
    for f in folder.glob("*.safetensors"):
        assert f.stat().st_size < 10 * 2**20, f
    assert (folder / "README.md").exists()
    model = load_model(folder)
    cfg = model.cfg
    x = model.g(torch.randn(2, cfg.model.nz))
    assert x.shape == (2, 3, cfg.data.image_size, cfg.data.image_size) and torch.isfinite(x).all()


def test_public_mode_refuses_server_paths_and_long_jobs(models, monkeypatch):
    monkeypatch.setattr(app, "PUBLIC", True)
    for dataset, text in (("Hub dataset", "/etc"), ("Hub dataset", "../x/y"), ("Hub dataset", "a/b/c"),
                          ("parquet path", "/tmp/data.parquet")):
        with pytest.raises(gr.Error):
            app._run_config(dataset, None, text, "dcgan", 10, 4, 2e-4, 32, 3, 10)
    with pytest.raises(gr.Error, match="Steps"):
        app._run_config("shapes", None, "", "dcgan", 50_000, 4, 2e-4, 32, 3, 10)
    cfg, _ = app._run_config("Hub dataset", None, "user/name", "dcgan", 10, 4, 2e-4, 32, 3, 10)
    assert cfg.data.source == "hub" and cfg.data.path == "user/name"
    with pytest.raises(gr.Error, match="public mode"):
        app.save_cluster_names("tiny-cluster", pd.DataFrame({"cluster": [0, 1, 2], "name": ["a", "b", "c"]}))


@pytest.mark.slow
def test_public_mode_caps_upload_size_and_job_time(models, tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(app, "MAX_UPLOAD_MB", big.stat().st_size / 2**20 / 2)  # half of this file
    with pytest.raises(gr.Error, match="Uploads are limited to"):
        app.classify_batch("tiny-cluster", [str(big)])
    with pytest.raises(gr.Error, match="Uploads are limited to"):
        app._run_config("upload", [str(big)], "", "dcgan", 10, 4, 2e-4, 32, 3, 10)
    monkeypatch.setattr(app, "MAX_UPLOAD_MB", None)
    assert app.classify_batch("tiny-cluster", [str(big)])[1]["images"].sum() == 1

    code = "import app; print(app.MAX_UPLOAD_MB, app.JOB.max_seconds, app.PUBLIC)"
    env = {**os.environ, "GANLAB_PUBLIC": "1", "GANLAB_WORK_DIR": str(tmp_path / "w")}
    env.pop("GANLAB_MAX_UPLOAD_MB", None)
    env.pop("GANLAB_MAX_JOB_MINUTES", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["20.0", "600.0", "True"], out.stderr[-2000:]
    env.update(GANLAB_PUBLIC="", GANLAB_MAX_JOB_MINUTES="2")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["None", "120.0", "False"], out.stderr[-2000:]


@pytest.mark.slow
def test_a_hub_token_is_never_echoed_logged_or_stored(models, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    token = "hf_SECRET_token_1234567890"
    outputs = list(app.start_training("shapes", None, "", "dcgan", 2, 4, 2e-4, 32, 3, 10, "for-push"))
    assert "done" in outputs[-1][0]

    class FailingApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, *a, **k):
            raise RuntimeError(f"401 Unauthorized for token {self.token}\nmore detail")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    with caplog.at_level("DEBUG"):
        with pytest.raises(gr.Error) as e:
            app.push_to_hub("user/name", token, True)
    assert token not in str(e.value) and "***" in str(e.value) and "\n" not in str(e.value)
    assert token not in caplog.text
    for path in app.JOB.work_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_messages_shown_to_visitors_carry_no_server_paths(tmp_path, monkeypatch):
    work = tmp_path / "my work dir"
    monkeypatch.setattr(app, "JOB", TrainingJob(work))
    said = app._no_paths(f"cannot write checkpoints to {work}/runs/model-a: Permission denied")
    assert str(tmp_path) not in said and said == "cannot write checkpoints to runs/model-a: Permission denied"
    said = app._no_paths("cannot identify image file '/var/cache/x/61c9/text.png'")
    assert said == "cannot identify image file 'text.png'"


def test_sample_tab_opens_on_the_bundled_model_that_scored_best_and_shows_its_figures(models, model_dir):
    from gan_core.checkpoint import write_json
    import json
    choices = app.model_choices()
    assert app.default_model("sample", choices) == "tiny-dcgan" or app.best_bundled_sampler(choices) is None
    assert "not measured" in app.quality_text("tiny-dcgan")
    figures = {"tiny-dcgan": 40.0, "tiny-cluster": 3.0}
    for name, ratio in figures.items():
        path = model_dir / "checkpoints" / name / "config.json"
        raw = json.loads(path.read_text())
        raw["sample_quality"] = {"evaluator": "shapes", "n": 100, "fid": ratio * 0.5, "real_fid": 0.5,
                                 "fid_ratio": ratio, "precision": 0.7, "recall": 0.4, "class_coverage": 9,
                                 "classes": 10}
        write_json(path, raw)
    try:
        assert app.default_model("sample", app.model_choices()) == "tiny-cluster"
        text = app.quality_text("tiny-cluster")
        assert "FID 1.5" in text and "x3" in text and "9 of 10 classes" in text
        # only the Sample tab follows the figures
        assert app.default_model("blobs", ["tiny-blobgan"]) == "tiny-blobgan"
    finally:
        for name in figures:
            path = model_dir / "checkpoints" / name / "config.json"
            raw = json.loads(path.read_text())
            raw.pop("sample_quality")
            write_json(path, raw)


def test_every_train_field_says_what_it_is_for(models):
    demo = app.build()
    labels = {"Dataset", "Model kind", "Model name", "Steps", "Batch size", "Learning rate", "Image size", "Channels",
              "K (cluster)"}
    fields = {b.label: b for b in demo.blocks.values() if getattr(b, "label", None) in labels}
    assert set(fields) == labels
    assert all(getattr(b, "info", None) for b in fields.values()), [k for k, b in fields.items() if not b.info]


def test_a_second_visitor_sees_the_running_job_and_its_settings(models):
    from gan_core.jobs import JobStatus

    assert all(update == {"__type__": "update"} for update in app.job_form())  # no job: the form is left alone
    settings = {"dataset": "scenes", "kind": "blobgan", "steps": 1200, "batch": 32, "lr": 1e-4, "size": 64,
                "channels": 3, "k": 10, "name": "someone-else"}
    app.JOB._status = JobStatus(state="training", name="someone-else", kind="blobgan", step=40, steps=1200,
                                settings=settings, losses=[{"step": 40, "loss": "loss_d", "value": 0.5}])
    form = app.job_form()
    assert [u["value"] for u in form] == [settings[f] for f in app.FORM_FIELDS]
    summary, losses, _, _ = app.job_view()
    assert "someone-else" in summary and "step 40 / 1,200" in summary and len(losses) == 1
    app.JOB._status = JobStatus(state="done", name="someone-else", settings=settings)
    assert all(update == {"__type__": "update"} for update in app.job_form())  # finished: the form is free again


def test_the_job_summary_names_the_scan_stage_after_the_last_step(tmp_path):
    from gan_core.jobs import JobStatus, TrainingJob

    job = TrainingJob(tmp_path)
    job._status = JobStatus(state="training", name="fm", kind="cluster", step=2000, steps=2000)
    job._on_stage("heads", 3, 15)
    line = job.status().summary()
    assert line == "Training fm (cluster): 2,000 steps done; fitting the SCAN head: heads, 3 / 15 epochs"
    job._update(step=1000, message="")
    assert "step 1,000 / 2,000" in job.status().summary()  # while the GAN trains, the usual line
    job._update(step=0)
    job._on_stage("input polar: heads", 4, 30)  # before the first step: the choice of input
    assert job.status().summary() == "Training fm (cluster): choosing the input layer: polar: heads, 4 / 30 epochs"


def _zip_folder(folder, archive, prefix="", extra=None):
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, prefix + f.name)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return archive


def test_a_checkpoint_zip_opens_in_the_pickers(models, model_dir, tmp_path):
    source = model_dir / "checkpoints" / "tiny-cluster"
    archive = _zip_folder(source, tmp_path / "download.zip", "my-clusters/", {"my-clusters/notes.txt": "ignored"})
    line, sample, blobs, classify = app.open_model_zip(str(archive), "tiny-dcgan", "tiny-blobgan", "tiny-cluster")
    assert "my-clusters" in line and (app.uploads_dir() / "my-clusters" / "config.json").exists()
    assert not (app.uploads_dir() / "my-clusters" / "notes.txt").exists()  # only a checkpoint's own files
    assert sample["value"] == classify["value"] == "my-clusters" and "my-clusters" in classify["choices"]
    assert blobs["value"] == "tiny-blobgan"  # not a BlobGAN: that picker keeps its model
    labels, _ = app.classify("my-clusters", Image.new("RGB", (8, 8)))
    assert labels  # it classifies
    # the same zip again gets a name of its own; flat zips (files at the top) open too
    assert "my-clusters-2" in app.open_model_zip(str(archive), None, None, None)[0]
    flat = _zip_folder(source, tmp_path / "flat.zip")
    assert "**flat**" in app.open_model_zip(str(flat), None, None, None)[0]


@pytest.mark.parametrize("case", ["traversal", "no-config", "pickle", "not-a-zip", "too-big", "two-folders", "twice",
                                  "lying-size", "corrupt", "dot", "huge-config", "link"])
def test_a_bad_checkpoint_zip_is_refused_and_leaves_nothing(models, model_dir, tmp_path, case):
    source = model_dir / "checkpoints" / "tiny-dcgan"
    archive = tmp_path / f"{case}.zip"
    if case == "traversal":
        _zip_folder(source, archive, extra={"../escape.safetensors": b"x"})
    elif case == "no-config":
        with zipfile.ZipFile(archive, "w") as z:
            z.write(source / "generator.safetensors", "generator.safetensors")
    elif case == "pickle":  # torch.save bytes under a safetensors name: never unpickled
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(2)}, buf)
        with zipfile.ZipFile(archive, "w") as z:
            z.write(source / "config.json", "config.json")
            z.writestr("generator.safetensors", buf.getvalue())
    elif case == "not-a-zip":
        archive.write_bytes(b"PK not really")
    elif case == "too-big":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(source / "config.json", "config.json")
            z.writestr("generator.safetensors", b"\0" * (64 * 2**20))  # a 64 MB member that compresses to nothing
    elif case == "lying-size":  # the header says fewer bytes than the member holds
        _zip_folder(source, archive)
        data = bytearray(archive.read_bytes())
        name = b"generator.safetensors"
        with zipfile.ZipFile(archive) as z:
            info = z.getinfo("generator.safetensors")
        local = info.header_offset
        data[local + 22: local + 26] = (info.file_size // 2).to_bytes(4, "little")  # local header: uncompressed size
        central = data.find(b"PK\x01\x02", 0)
        while central != -1:
            if data[central + 46: central + 46 + len(name)] == name:
                data[central + 24: central + 28] = (info.file_size // 2).to_bytes(4, "little")
            central = data.find(b"PK\x01\x02", central + 4)
        archive.write_bytes(bytes(data))
    elif case == "corrupt":  # a deflate stream cut in the middle
        _zip_folder(source, archive)
        with zipfile.ZipFile(archive) as z:
            info = z.getinfo("generator.safetensors")
        data = bytearray(archive.read_bytes())
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        data[start + 10: start + 60] = bytes(50)
        archive.write_bytes(bytes(data))
    elif case == "dot":
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr(".", b"x")
    elif case == "huge-config":  # a tiny config.json asking for networks of many GB: refused before building
        meta = json.loads((source / "config.json").read_text())
        meta["config"]["model"].update(ngf=1024, ndf=1024, nz=4096)
        meta["config"]["data"]["image_size"] = meta["config"]["model"]["image_size"] = 128
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("config.json", json.dumps(meta))
            z.write(source / "generator.safetensors", "generator.safetensors")
    elif case == "link":
        with zipfile.ZipFile(archive, "w") as z:
            z.write(source / "config.json", "config.json")
            link = zipfile.ZipInfo("generator.safetensors")
            link.external_attr = (0o120777 << 16)
            z.writestr(link, "/etc/passwd")
    elif case == "twice":
        _zip_folder(source, archive, "a/", {"a/sub/config.json": "{}"})
    else:
        _zip_folder(source, archive, "a/", {"b/config.json": "{}"})
    with pytest.raises(gr.Error) as e:
        app.open_model_zip(str(archive), None, None, None)
    why = {"traversal": "outside its folder", "no-config": "no config.json", "pickle": "generator.safetensors is a pickle",
           "not-a-zip": "not a zip", "too-big": "inflates", "two-folders": "in one folder", "twice": "in one folder",
           "lying-size": "CRC", "corrupt": "decompressing", "dot": "outside its folder",
           "huge-config": "far larger than its weight files", "link": "symbolic link"}[case]
    assert why in str(e.value) and "\n" not in str(e.value) and str(tmp_path) not in str(e.value)
    assert not app.uploads_dir().exists() or not any(app.uploads_dir().iterdir())  # nothing left behind


def test_open_pages_pick_up_new_models_only_when_the_set_changes(models, model_dir):
    known, *updates = app.pickers_if_changed(None, "tiny-dcgan", "tiny-blobgan", "tiny-cluster")
    assert "tiny-dcgan" in known and updates[0]["value"] == "tiny-dcgan"
    again, *updates = app.pickers_if_changed(known, "tiny-dcgan", "tiny-blobgan", "tiny-cluster")
    assert again == known and all(u == {"__type__": "update"} for u in updates)  # nothing new: untouched
    (app.CHECKPOINTS / "copied-in").symlink_to(model_dir / "checkpoints" / "tiny-dcgan")
    try:
        now, sample, *_ = app.pickers_if_changed(known, "tiny-dcgan", "tiny-blobgan", "tiny-cluster")
        assert "copied-in" in now and "copied-in" in sample["choices"] and sample["value"] == "tiny-dcgan"
    finally:
        (app.CHECKPOINTS / "copied-in").unlink()


def test_uploaded_models_never_shadow_read_no_server_data_and_are_capped(models, model_dir, tmp_path, monkeypatch):
    source = model_dir / "checkpoints" / "tiny-cluster"
    meta = json.loads((source / "config.json").read_text())
    meta["config"]["data"].update(source="folder", path=str(app.ROOT / "docs" / "screenshots"))  # a server folder
    folder = tmp_path / "tiny-dcgan"  # named like a bundled model
    shutil.copytree(source, folder)
    (folder / "config.json").write_text(json.dumps(meta))
    line, sample, *_ = app.open_model_zip(str(_zip_folder(folder, tmp_path / "tiny-dcgan.zip", "tiny-dcgan/")),
                                          None, None, None)
    assert "**tiny-dcgan-2**" in line and app.model_sources()["tiny-dcgan"].endswith("checkpoints/tiny-dcgan")
    cm = app.load("tiny-dcgan-2", ClusterModel)
    with pytest.raises(gr.Error, match="uploaded"):  # exemplars would show the server folder's images
        app.exemplar_gallery("tiny-dcgan-2", cm.names[0], progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="at most 0 MB"):
        monkeypatch.setattr(app, "MAX_UPLOAD_MB", 0.0001)
        app.open_model_zip(str(_zip_folder(source, tmp_path / "big.zip")), None, None, None)
    monkeypatch.setattr(app, "MAX_UPLOAD_MB", None)
    monkeypatch.setattr(app, "PUBLIC", True)
    monkeypatch.setattr(app, "MAX_UPLOADED_MODELS", 2)
    for i in range(3):
        app.open_model_zip(str(_zip_folder(source, tmp_path / f"m{i}.zip")), None, None, None)
    kept = sorted(p.name for p in app.uploads_dir().iterdir() if not p.name.startswith("."))
    assert len(kept) == 2 and "m2" in kept  # the oldest went first


def test_fit_familiarity_records_into_the_checkpoint(models, model_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(model_dir / "checkpoints" / "tiny-cluster", folder)
    cm = load_model(folder)
    rec = cm.fit_familiarity(record=True)
    saved = json.loads((folder / "config.json").read_text())["familiarity"]
    assert saved == rec and rec["images"] == 32 and -1 <= rec["threshold"] <= 1
    assert load_model(folder).familiarity_stats[0].shape[0] == 3  # K cluster means, read back


def test_refine_with_d_lowers_the_energy_and_keeps_codes_and_d_as_stored(models, monkeypatch):
    from gan_core.inference import sampler as sampler_module

    m = app.load("tiny-cluster")  # a kind whose latents end in a one-hot code
    nz, z = m.sampler.nz, m.sampler.latents(6, 0)
    stored = {k: v.clone() for k, v in m.d.state_dict().items()}
    refined = m.sampler.refine(z, 5)
    assert torch.equal(refined[:, nz:], z[:, nz:]) and not torch.allclose(refined[:, :nz], z[:, :nz])
    assert torch.equal(m.sampler.refine(z, 5), refined)  # deterministic
    assert torch.equal(m.sampler.refine(z, 0), z)
    assert all(torch.equal(v, stored[k]) for k, v in m.d.state_dict().items())  # BatchNorm's statistics untouched
    # Alone in its batch (no companions), each step is a gradient step on |z|^2/2 - D's logits: it goes down.
    monkeypatch.setattr(sampler_module, "REFINE_COMPANIONS", 0)
    d = sampler_module.batch_statistics_only(m.d)

    def energy(w):
        with torch.no_grad():
            m.g.eval()
            return float(0.5 * w[:, :nz].pow(2).sum() - d(m.g(w), logits=True).sum())
    assert energy(m.sampler.refine(z, 3, step_size=0.005)) < energy(z)


def test_a_model_opens_with_the_draw_its_figures_were_recorded_with(models, model_dir):
    from gan_core.checkpoint import write_json
    import json
    assert app.refine_default("tiny-dcgan") == 0 and app.load("tiny-dcgan").default_refine == 0
    path = model_dir / "checkpoints" / "tiny-dcgan" / "config.json"
    before = path.read_text()
    raw = json.loads(before)
    raw["sample_quality"] = {"evaluator": "shapes", "n": 100, "refine": 5, "fid": 2.0, "real_fid": 0.5, "fid_ratio": 4.0,
                             "precision": 0.7, "recall": 0.4, "class_coverage": 9, "classes": 10}
    raw["sampling"] = {"refine": 5}  # recorded before the step size was: the step everything used then
    write_json(path, raw)
    try:
        assert app.refine_default("tiny-dcgan") == 5 and app.load("tiny-dcgan").default_refine == 5
        assert app.load("tiny-dcgan").sampler.refine_step == 0.01
        assert "refined with D for 5 steps" in app.quality_text("tiny-dcgan")
        args = ("tiny-dcgan", 3, 2, 1.0, "random", False, False, *(0,) * app.N_SLIDERS)
        default, explicit, plain = (np.asarray(app.sample_images(*args, r)[0]) for r in (None, 5, 0))
        assert np.array_equal(default, explicit) and not np.array_equal(default, plain)
        # a recorded step size is the model's: the tab draws with it, and the figures' line names it
        raw["sampling"]["refine_step"] = raw["sample_quality"]["refine_step"] = 0.03
        write_json(path, raw)
        app._load.cache_clear()
        assert app.load("tiny-dcgan").sampler.refine_step == 0.03
        assert "refined with D for 5 steps of 0.03" in app.quality_text("tiny-dcgan")
        longer = np.asarray(app.sample_images(*args, 5)[0])
        assert not np.array_equal(longer, default)
    finally:
        path.write_text(before)
        app._load.cache_clear()
    assert app.refine_default("tiny-dcgan") == 0 and app.refine_default("no-such-model") == 0


def test_a_recorded_step_size_is_checked():
    from gan_core.inference.model import recorded_refine_step
    assert recorded_refine_step({}) == recorded_refine_step({"sampling": {"refine": 20}}) == 0.01
    assert recorded_refine_step({"sampling": {"refine": 10, "refine_step": 0.02}}) == 0.02
    for bad in ("fast", 0, -0.01, 0.5, float("nan"), None):
        with pytest.raises(ValueError, match="refinement step size"):
            recorded_refine_step({"sampling": {"refine": 10, "refine_step": bad}})


def test_refine_needs_a_discriminator(models, monkeypatch):
    m = app.load("tiny-dcgan")
    grid, _ = _sample(count=2)
    refined = app.sample_images("tiny-dcgan", 3, 2, 1.0, "random", False, False, *(0,) * app.N_SLIDERS, 5)
    assert not np.array_equal(np.asarray(grid), np.asarray(refined[0]))
    monkeypatch.setattr(m.sampler, "d", None)
    with pytest.raises(gr.Error, match="ships no discriminator"):
        app.sample_images("tiny-dcgan", 3, 2, 1.0, "random", False, False, *(0,) * app.N_SLIDERS, 5)
    with pytest.raises(ValueError, match="no discriminator"):
        m.sampler.refine(m.sampler.latents(1, 0), 1)
    assert app.sample_images("tiny-dcgan", 3, 2, 1.0, "random", False, False, *(0,) * app.N_SLIDERS, 0)[0].size == grid.size
