import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # on the import path through pyproject.toml's pytest settings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# The app (imported by several test files) keeps its work folder and Gradio's cache here, not in the repo.
os.environ.setdefault("GANLAB_WORK_DIR", tempfile.mkdtemp(prefix="ganlab-test-work-"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own dataset cache and HF caches: nothing shared, nothing downloaded."""
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "ganlab-cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    yield


def run_script(args, cwd=None, env=None, timeout=300):
    """Run a script with this interpreter, as `python -m scripts.NAME ARGS` from the repository root
    (args[0] is "scripts/NAME.py" or "scripts.NAME"); returns (completed process, parsed last JSON line)."""
    import json
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    # `python -m scripts.NAME` finds the repository (gan_core and scripts) from any working folder.
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    script = str(args[0])
    module = script[:-3].replace("/", ".") if script.endswith(".py") else script
    proc = subprocess.run([sys.executable, "-m", module, *args[1:]], cwd=ROOT if cwd is None else cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    return proc, result
