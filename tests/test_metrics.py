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


# ---------------------------------------------------------------- feature-space sample quality

def _gaussian(n, d=8, shift=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale + shift


def test_frechet_distance_hand_computed_and_zero_for_identical_sets():
    a = _gaussian(500)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # a pure shift by 2 along every one of 8 dimensions: ||mu_a - mu_b||^2 = 8 * 4, covariances equal
    assert metrics.frechet_distance(a, a + 2.0) == pytest.approx(32.0, rel=1e-6)
    # a pure scale: Tr(S + 4S - 2 * 2S) = Tr(S)
    cov_trace = float(torch.cov(a.T.double()).trace())
    assert metrics.frechet_distance(a, 2 * (a - a.mean(0)) + a.mean(0)) == pytest.approx(cov_trace, rel=1e-4)


def test_kernel_distance_near_zero_for_one_distribution_and_large_for_disjoint():
    same = metrics.kernel_distance(_gaussian(800, seed=1), _gaussian(800, seed=2), subsets=10, subset_size=400)
    apart = metrics.kernel_distance(_gaussian(800, seed=1), _gaussian(800, shift=3.0, seed=2), subsets=10,
                                    subset_size=400)
    assert abs(same) < 0.05 and apart > 10


def test_precision_recall_identical_disjoint_and_collapsed_sets():
    real = _gaussian(600, seed=3)
    assert metrics.precision_recall(real, real) == (1.0, 1.0)
    assert metrics.precision_recall(real, _gaussian(600, shift=20.0, seed=4)) == (0.0, 0.0)
    # a generator that draws only the middle of the data: faithful (precision 1) but covers little
    precision, recall = metrics.precision_recall(real, 0.05 * _gaussian(600, seed=5))
    assert precision == 1.0 and recall < 0.2
    with pytest.raises(ValueError):
        metrics.precision_recall(real, real[:3], k=3)


def test_class_coverage_counts_a_missing_class():
    real = [c for c in range(4) for _ in range(25)]
    full = metrics.class_coverage(real, 4, real)
    assert full["covered"] == 4 and full["shares"] == [0.25] * 4 and full["kl"] == pytest.approx(0.0, abs=1e-2)
    missing = metrics.class_coverage([0] * 40 + [1] * 30 + [2] * 30, 4, real)
    uneven = metrics.class_coverage([0] * 31 + [1] * 23 + [2] * 23 + [3] * 23, 4, real)
    assert missing["covered"] == 3 and missing["shares"][3] == 0.0 and missing["kl"] > 0.5
    assert uneven["covered"] == 4 and uneven["kl"] < 0.05
    # half a uniform share (1/8 of 4 classes) still counts; less does not
    rare = metrics.class_coverage([0] * 30 + [1] * 30 + [2] * 28 + [3] * 12, 4)
    assert rare["covered"] == 3 and "kl" not in rare
