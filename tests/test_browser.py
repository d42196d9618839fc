"""The app in a real browser: Playwright driving Debian's chromium (installed by .ci/run). Opens on
Sample and redraws it live (Enter in the seed box, no button), moves a blob, uploads an image to
Classify and sees its result with no button pressed; saves a screenshot of
each tab to $GANLAB_SCREENSHOTS (default: the test's temporary folder; the README's pictures come
from `GANLAB_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py`).

The bundled checkpoints are used where they exist; a tiny BlobGAN stands in until one is bundled."""
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import app

from test_app import model_dir  # noqa: F401  (fixture)

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")]


@pytest.fixture
def served(model_dir, tmp_path, monkeypatch):  # noqa: F811
    bundled = app.ROOT / "checkpoints"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for p in bundled.iterdir():
        if (p / "config.json").exists():
            (folder / p.name).symlink_to(p)
    if not any(issubclass(app.model_facade(str(p)) or object, app.BlobModel) for p in folder.iterdir()):
        (folder / "scenes-blobgan").symlink_to(model_dir / "checkpoints" / "tiny-blobgan")
    monkeypatch.setattr(app, "CHECKPOINTS", folder)
    monkeypatch.setattr(app, "JOB", app.jobs.TrainingJob(tmp_path / "work"))
    app._load.cache_clear()
    demo = app.build()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
        app._load.cache_clear()


def _img_src(page, elem_id: str) -> str | None:
    img = page.locator(f"#{elem_id} img")
    return img.first.get_attribute("src") if img.count() else None


def test_each_tab_in_chromium(served, tmp_path, model_dir):  # noqa: F811
    shots = Path(os.environ.get("GANLAB_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (240, 240, 240)).save(photo)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(served)
        # The app opens on Sample, already drawn; Enter in the seed box redraws with no button pressed.
        page.wait_for_function("() => document.querySelector('#sample-grid img') !== null", timeout=60_000)
        first = _img_src(page, "sample-grid")
        page.locator("#sample-grid").scroll_into_view_if_needed()
        page.get_by_label("Seed").first.fill("7")
        page.get_by_label("Seed").first.press("Enter")
        page.wait_for_function(f"() => document.querySelector('#sample-grid img').src !== {first!r}", timeout=60_000)
        page.screenshot(path=str(shots / "sample.png"), full_page=True)
        # The interpolation GIF plays inline (an <img> of the .gif itself, not only a download).
        page.get_by_text("Interpolate between two seeds").click()
        page.get_by_role("button", name="Interpolate", exact=True).click()
        page.wait_for_function("() => { const i = document.querySelector('#interp-gif img');"
                               " return i !== null && i.src.includes('.gif'); }", timeout=60_000)

        page.get_by_role("tab", name="Blobs").click()
        page.locator("#blobs-button").click()
        page.wait_for_function("() => document.querySelector('#blob-image img') !== null", timeout=60_000)
        before = _img_src(page, "blob-image")
        page.locator("#apply-edit").click()  # "move" by dx = 0.1 is the default edit
        page.wait_for_function(f"() => document.querySelector('#blob-image img').src !== {before!r}", timeout=60_000)

        # An example scene clicked is inverted at once (gr.Examples from the built-in scenes).
        before = _img_src(page, "blob-image")
        page.locator("#invert-examples img").first.click()
        page.wait_for_function(f"() => document.querySelector('#blob-image img').src !== {before!r}", timeout=60_000)
        page.screenshot(path=str(shots / "blobs.png"), full_page=True)

        page.get_by_role("tab", name="Classify").click()
        page.locator("#classify-image input[type=file]").set_input_files(str(photo))
        page.wait_for_function("() => document.querySelector('#classify-image img') !== null", timeout=60_000)
        # classified on upload, no button pressed: a flat grey picture is nothing like the training images
        verdict = page.locator("#classify-verdict")
        verdict.get_by_text("familiarity").first.wait_for(timeout=60_000)
        label = page.locator("#classify-label")
        names = app.load(app.default_model("classify", app.model_choices(app.ClusterModel)), app.ClusterModel).names
        assert "unsure" in label.inner_text() or any(name in label.inner_text() for name in names)
        # An example clicked is classified too: a test image of the training data, with its confidence bars.
        page.locator("#classify-examples img").first.click()  # Fashion-MNIST's, or a shape where it is absent
        label.get_by_text("%").first.wait_for(timeout=60_000)
        assert any(name in label.inner_text() for name in names)
        page.screenshot(path=str(shots / "classify.png"), full_page=True)

        # A model saved while the server runs reaches a new visitor's pickers with no restart.
        (app.CHECKPOINTS / "saved-while-serving").symlink_to(model_dir / "checkpoints" / "tiny-dcgan")
        visitor = browser.new_context().new_page()
        visitor.goto(served)
        visitor.wait_for_function("() => document.querySelector('#sample-grid img') !== null", timeout=60_000)
        visitor.get_by_label("Model").first.click()
        visitor.get_by_role("option", name="saved-while-serving").wait_for(timeout=30_000)
        visitor.close()
        # ... and the page that was open all along, without a reload (its timer looks for new models).
        page.get_by_role("tab", name="Sample").click()
        page.wait_for_timeout(app.PICKER_POLL_S * 1000 + 1500)
        page.get_by_label("Model").first.click()
        page.get_by_role("option", name="saved-while-serving").wait_for(timeout=30_000)
        page.keyboard.press("Escape")

        page.get_by_role("tab", name="Train").click()
        page.get_by_text("No training job yet.").wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "train.png"), full_page=True)
        browser.close()
    for name in ("sample", "blobs", "classify", "train"):
        assert (shots / f"{name}.png").stat().st_size > 10_000

