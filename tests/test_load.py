"""The load test's short version: concurrent clients mixing /sample, /classify and /blobs while a
training job runs (tiny models; the 60-second, 20-client run is `scripts/load_test.py`)."""
import pytest
from scripts import load_test
from test_app import model_dir, models  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # concurrent clients while a job trains


def test_every_request_succeeds_while_training(models):
    out = load_test.main(["--clients", "4", "--seconds", "6"])
    assert out["count"] >= 8 and out["errors"] == 0, out
    assert set(out["per_endpoint"]) == {"sample", "classify", "blobs"}
    assert out["training"]["state"] == "training" and out["training"]["step"] > 0, out["training"]
