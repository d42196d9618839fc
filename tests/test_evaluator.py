"""The evaluation-only classifiers and scripts/evaluate_samples.py."""
import torch

from conftest import ROOT, run_script
from gan_core import evaluator


def test_save_load_round_trip_and_input_conversion(tmp_path):
    cfg = evaluator.EvaluatorConfig(name="toy", image_size=16, channels=3, classes=["a", "b", "c"], width=4)
    net = evaluator.EvaluatorNet(cfg)
    torch.nn.init.normal_(net.classify.weight)
    evaluator.save(tmp_path / "toy", cfg, net, {"test_accuracy": 0.5})
    ev = evaluator.load(tmp_path / "toy")
    assert ev.cfg == cfg and ev.meta == {"test_accuracy": 0.5}
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    feats, probs = ev.run(images)
    assert feats.shape == (5, 16) and probs.shape == (5, 3)
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    # grey, larger images become 3 equal channels at the evaluator's size
    grey = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    x = ev.prepare(grey)
    assert x.shape == (2, 3, 16, 16) and torch.equal(x[:, 0], x[:, 2])
    assert evaluator.EvaluatorNet(cfg).state_dict().keys() == ev.net.state_dict().keys()


def test_shipped_evaluators_are_found_by_source():
    assert evaluator.name_for("shapes", None) == "shapes"
    assert evaluator.name_for("idx", "/usr/share/datasets/fashion-mnist") == "fashion-mnist"
    assert evaluator.name_for("folder", "/data/cats") is None
    ev = evaluator.for_source("shapes", None)
    assert ev is not None and "no shape" in ev.cfg.classes and ev.meta["test_accuracy"] >= 0.99
    for folder in (ROOT / "evaluation" / "classifiers").iterdir():
        assert (folder / "README.md").is_file() and (folder / evaluator.WEIGHTS).stat().st_size < 2_000_000


def test_evaluate_samples_reports_every_figure_and_a_floor_the_samples_do_not_beat():
    proc, res = run_script(["scripts/evaluate_samples.py", "--checkpoint", "checkpoints/shapes-dcgan",
                            "--n", "300", "--real", "300", "--pixel-n", "40", "--inception"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for key in ("fid", "kid", "precision", "recall", "class_coverage", "class_kl", "confident", "no_shape",
                "real_fid", "real_precision", "real_recall", "real_class_coverage", "fid_ratio", "pixels"):
        assert key in res, key
    assert len(res["class_shares"]) == 10 and "no shape" not in res["class_shares"]
    # real held-out images against real training images: the floor
    assert res["real_fid"] < res["fid"] and res["real_precision"] > res["precision"]
    assert res["real_class_coverage"] == 10 and abs(res["real_confident"] - 0.95) < 0.03
    # offline, --inception says in one line why it cannot run, and the rest still reports
    assert res["inception_fid"] is None and "--inception" in proc.stderr


def test_refine_with_d_scores_better_than_the_plain_draw_and_record_keeps_the_draw(tmp_path):
    import json
    import shutil
    args = ["scripts/evaluate_samples.py", "--n", "300", "--real", "300", "--pixel-n", "20"]
    proc, plain = run_script(args + ["--checkpoint", "checkpoints/shapes-dcgan", "--refine", "0"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, refined = run_script(args + ["--checkpoint", "checkpoints/shapes-dcgan", "--refine", "10", "--refine-step", "0.01"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert plain["refine"] == 0 and refined["refine"] == 10 and refined["refine_step"] == 0.01
    assert refined["fid"] < plain["fid"] and refined["confident"] > plain["confident"]
    # --record stores the figures with the draw they were measured with (steps and step size), which becomes
    # the default draw
    copy = tmp_path / "model"
    shutil.copytree(ROOT / "checkpoints" / "shapes-dcgan", copy)
    proc, recorded = run_script(args + ["--checkpoint", str(copy), "--refine", "10", "--refine-step", "0.02", "--record"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    raw = json.loads((copy / "config.json").read_text())
    assert raw["sampling"] == {"refine": 10, "refine_step": 0.02}
    assert raw["sample_quality"]["refine"] == 10 and raw["sample_quality"]["refine_step"] == 0.02
    assert raw["sample_quality"]["fid"] == recorded["fid"] != refined["fid"]  # a longer step draws other samples
    proc, again = run_script(args + ["--checkpoint", str(copy)])
    assert proc.returncode == 0 and (again["refine"], again["refine_step"]) == (10, 0.02)
    assert again["fid"] == recorded["fid"]
    proc, _ = run_script(args + ["--checkpoint", str(copy), "--refine", "51"])
    assert proc.returncode != 0 and "--refine takes 0 to 50" in proc.stderr
    proc, _ = run_script(args + ["--checkpoint", str(copy), "--refine-step", "0"])
    assert proc.returncode != 0 and "--refine-step: a refinement step size is above 0" in proc.stderr
