import pytest
import torch

from gan_core import metrics


def test_accuracy_is_invariant_to_cluster_names():
    labels = [0, 0, 1, 1, 2, 2]
    assert metrics.cluster_accuracy(labels, [5, 5, 9, 9, 7, 7]) == 1.0
    assert metrics.cluster_accuracy(labels, [1, 1, 2, 2, 0, 0]) == 1.0


def test_accuracy_hand_computed():
    labels = [0, 0, 0, 1, 1, 1]
    clusters = [1, 1, 0, 0, 0, 0]  # best map: 1->0 (2 right), 0->1 (3 right)
    assert metrics.cluster_accuracy(labels, clusters) == pytest.approx(5 / 6)
    # one cluster for everything: only the largest class can be right
    assert metrics.cluster_accuracy([0, 0, 0, 1], [3, 3, 3, 3]) == pytest.approx(3 / 4)
    # more clusters than classes: each class takes one cluster at most
    assert metrics.cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(2 / 4)


def test_nmi_and_ari_match_known_values():
    perfect = metrics.clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])
    assert perfect == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    indep = metrics.clustering_scores([0, 1, 0, 1], [0, 0, 1, 1])
    assert indep["nmi"] == pytest.approx(0.0, abs=1e-12) and indep["ari"] == pytest.approx(-0.5)


def test_bad_inputs():
    with pytest.raises(ValueError):
        metrics.cluster_accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        metrics.cluster_accuracy([], [])


def test_sample_metrics_separate_shapes_from_noise():
    from gan_core.shapes import render_shapes

    real, _ = render_shapes(20, size=32)
    noise = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    assert metrics.two_colour_coverage(real) > 0.9 > 0.3 > metrics.two_colour_coverage(noise)
    assert metrics.nearest_real_distance(real[:5], real) == 0.0
    assert metrics.mean_pairwise_distance(real[:1].repeat(4, 1, 1, 1)) == 0.0
    assert metrics.mean_pairwise_distance(noise) > metrics.mean_pairwise_distance(real) * 0.5
