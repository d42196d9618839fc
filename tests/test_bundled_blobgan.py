"""The shipped BlobGAN (`checkpoints/scenes-blobgan`) scored by scripts/evaluate_blobs.py on held-out
scenes against the issue's targets (a correctness check of what is bundled, not a timing)."""
import pytest
from pathlib import Path

import torch

from conftest import run_script
from gan_core.inference.blobs import BlobModel
from gan_core.inference.loading import load_model
from gan_core.models import blob_layout

pytestmark = pytest.mark.slow  # the bundled models scored

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "checkpoints" / "scenes-blobgan"


def test_bundled_blobgan_meets_the_targets_on_held_out_scenes():
    # The card's numbers are on 500 scenes; 200 keep CI short, and the targets still hold there.
    proc, scores = run_script(["scripts/evaluate_blobs.py", "--checkpoint", str(BUNDLED), "--num-images", "200"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert scores["psnr"] >= 22 and scores["hit_rate"] >= 0.8 and scores["locality"] >= 0.8, scores


def test_bundled_blobgan_hides_and_moves_objects_with_their_blobs():
    model = load_model(BUNDLED)
    assert isinstance(model, BlobModel)
    lay = model.sample_layout(seed=0)
    k = int(lay.size[0].argmax())
    assert lay.visible()[0, k]
    before = model.render(lay)
    hidden = model.render(blob_layout.hide(lay, k))
    region = blob_layout.splat(lay, before.shape[-1])[0, k + 1] >= 0.1
    change = (hidden - before).abs().sum(1)[0]
    assert change[region].sum() > 0.8 * change.sum() and change[region].mean() > 0.1  # the object went, only there
    assert torch.equal(model.render(blob_layout.show(blob_layout.hide(lay, k), k)), before)
