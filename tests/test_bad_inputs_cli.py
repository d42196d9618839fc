"""The bad inputs of test_bad_inputs.py, through the command line: scripts/classify.py for images and
zips, scripts/train.py for datasets and hyperparameters. Each is handled or is one `error:` line on
stderr with exit code 2, never a traceback, and nothing is written outside the output folder."""
import re
import zipfile

import pandas as pd
import pytest
from PIL import Image

from conftest import run_script
from test_app import model_dir  # noqa: F401  (fixture: tiny exported models)
from test_bad_inputs import BAD, GOOD

pytestmark = pytest.mark.slow  # the scripts run as subprocesses

TINY = ["model.nz=8", "model.ngf=4", "model.ndf=4", "data.image_size=32", "train.batch_size=4", "train.steps=2",
        "train.device=cpu", "train.precision=fp32"]


def _error_lines(stderr: str) -> list[str]:
    """stderr's `error:` lines (progress bars redraw with carriage returns, so split on those too)."""
    return [part.strip() for part in re.split(r"[\r\n]", stderr) if part.strip().startswith("error:")]


def _one_clear_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _files(root) -> set:
    return {p for p in root.rglob("*")}


@pytest.fixture
def uploads(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    for name, make in {**GOOD, **BAD}.items():
        (folder / name).write_bytes(make())
    return folder


def test_classify_cli_reads_the_good_marks_the_bad_and_says_one_line_for_nothing(model_dir, uploads, tmp_path):  # noqa: F811
    model = str(model_dir / "checkpoints" / "tiny-cluster")
    proc, result = run_script(["scripts/classify.py", "--checkpoint", model, str(uploads), "--out", str(tmp_path / "a.csv")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "a.csv")
    assert set(table[table["cluster"] == "(unreadable)"]["file"]) == set(BAD)
    assert result["images"] == len(GOOD) and sum(result["counts"].values()) == len(GOOD)
    for name in sorted(BAD):
        proc, result = run_script(["scripts/classify.py", "--checkpoint", model, str(uploads / name)])
        assert "could be read" in _one_clear_line(proc) and result["error"], name
    proc, _ = run_script(["scripts/classify.py", "--checkpoint", model, str(tmp_path / "missing.png")])
    assert "no such file" in _one_clear_line(proc)
    proc, _ = run_script(["scripts/classify.py", "--checkpoint", str(tmp_path), str(uploads / "1x1.png")])
    assert "cannot load" in _one_clear_line(proc)


def test_classify_cli_zip_traversal_bomb_and_empty(model_dir, tmp_path):  # noqa: F811
    model = str(model_dir / "checkpoints" / "tiny-cluster")
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "tricky.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("../../outside.png", GOOD["1x1.png"]())
        z.writestr("/abs/path.png", GOOD["palette.png"]())
        z.writestr("bomb.png", b"\0" * (80 * 2**20))
    before = _files(tmp_path)
    proc, result = run_script(["scripts/classify.py", "--checkpoint", model, str(archive), "--out", str(work / "out.csv")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pd.read_csv(work / "out.csv")["file"].tolist() == ["tricky.zip:outside.png", "tricky.zip:abs/path.png"]
    assert _files(tmp_path) - before == {work / "out.csv"}  # nothing extracted anywhere
    empty = work / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no images")
    proc, _ = run_script(["scripts/classify.py", "--checkpoint", model, str(empty)])
    assert "no images" in _one_clear_line(proc)


def test_train_cli_bad_datasets_are_one_line(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name, make in BAD.items():
        (broken / name).write_bytes(make())
    proc, result = run_script(["scripts/train.py", *TINY, "data.source=folder", f"data.path={broken}",
                               f"train.out_dir={tmp_path / 'o1'}"])
    assert "no readable images" in _one_clear_line(proc) and "no readable images" in result["error"]

    pd.DataFrame({"text": ["a", "b"]}).to_parquet(tmp_path / "no-images.parquet")
    proc, _ = run_script(["scripts/train.py", *TINY, "data.source=parquet", f"data.path={tmp_path / 'no-images.parquet'}",
                          f"train.out_dir={tmp_path / 'o2'}"])
    assert "no image column" in _one_clear_line(proc)

    three = tmp_path / "three"
    three.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(three / f"{i}.png")
    proc, _ = run_script(["scripts/train.py", *TINY, "model=cluster", "model.k=5", "data.source=folder",
                          f"data.path={three}", f"train.out_dir={tmp_path / 'o3'}"])
    assert "K = 5 clusters need at least 5 images; the dataset has 3" in _one_clear_line(proc)


@pytest.mark.parametrize("setting,says", [("train.lr=nan", "train.lr"), ("train.lr=inf", "train.lr"),
                                          ("train.steps=-3", "train.steps"), ("train.batch_size=0", "batch_size"),
                                          ("train.ema_decay=1.5", "ema_decay"), ("model.k=1", "model.k")])
def test_train_cli_nan_and_out_of_range_hyperparameters_are_one_line(tmp_path, setting, says):
    model = ["model=cluster"] if setting.startswith("model.k") else []
    proc, result = run_script(["scripts/train.py", *model, *TINY, "data.source=shapes", "data.num_images=16", setting,
                               f"train.out_dir={tmp_path / 'run'}"])
    assert says in _one_clear_line(proc) and says in result["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_cli_zip_dataset_with_traversal_names_and_a_bomb_stays_in_memory(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(4):
            z.writestr(f"../../evil{i}.png", GOOD["palette.png"]())
        z.writestr("/abs/evil.png", GOOD["1x1.png"]())
        z.writestr("bomb.png", b"\0" * (80 * 2**20))
    before = _files(tmp_path)
    proc, result = run_script(["scripts/train.py", *TINY, "data.source=zip", f"data.path={archive}",
                               f"train.out_dir={tmp_path / 'run'}"], env={"GANLAB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["step"] == 2
    created = _files(tmp_path) - before
    assert all((tmp_path / "run") in p.parents or (tmp_path / "cache") in p.parents or p in (tmp_path / "run", tmp_path / "cache")
               for p in created), sorted(map(str, created))
    assert not list(tmp_path.parent.glob("evil*")) and not list(tmp_path.glob("evil*"))
