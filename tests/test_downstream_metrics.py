"""Metric definitions against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from smartlib.downstream.metrics import (
    binary_metrics_batch,
    bootstrap_ci,
    classification_metrics,
    cluster_metrics,
    inter_class_distance,
    intra_class_distance,
    metrics_with_ci,
)
from smartlib.errors import SmartError


def test_classification_metrics_by_hand():
    # 4 positives / 2 negatives; score pairs (pos > neg): 0.9 beats both, 0.8 both, 0.4 beats 0.3 only, 0.2 none
    y = np.array([1, 1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.4, 0.2, 0.3, 0.6])
    # pairs: (0.9: 2) + (0.8: 2) + (0.4: 1) + (0.2: 0) = 5 of 8
    m = classification_metrics(y, s)
    assert m["auc"] == pytest.approx(5 / 8)
    # prediction s > 0.5 -> [1, 1, 0, 0, 0, 1]: correct 1,1,_,_,1,_ = 3 of 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    # recall positives 2/4, negatives 1/2 -> mean 0.5
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_ties_count_half_and_batch_matches_sklearn():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.5, 0.5, 0.7, 0.1])
    # pairs: (0.5 vs 0.5: 0.5) + (0.5 vs 0.1: 1) + (0.7 vs 0.5: 1) + (0.7 vs 0.1: 1) = 3.5 / 4
    assert classification_metrics(y, s)["auc"] == pytest.approx(3.5 / 4)
    rng = np.random.default_rng(3)
    yb = rng.integers(0, 2, (50, 30))
    yb[:, 0], yb[:, 1] = 0, 1
    sb = np.round(rng.random((50, 30)), 1)  # many ties
    batch = binary_metrics_batch(yb, sb)
    for i in range(50):
        ref = classification_metrics(yb[i], sb[i])
        for k in ref:
            assert batch[k][i] == pytest.approx(ref[k]), k


def test_multiclass_scores():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
    m = classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_bootstrap_skips_resamples_missing_a_class_and_is_seeded():
    y = np.array([0] * 9 + [1])  # one positive: many resamples miss it
    s = np.linspace(0, 1, 10)
    auc = lambda a, b: classification_metrics(a, b)["auc"]  # noqa: E731
    lo, hi, n_valid = bootstrap_ci(y, s, auc, n_boot=300, seed=1)
    # P(resample contains the positive) = 1 - 0.9^10 ~ 0.651
    assert 0.55 * 300 < n_valid < 0.75 * 300
    assert (lo, hi) == (1.0, 1.0)  # the positive has the top score: every valid resample has AUC 1
    assert bootstrap_ci(y, s, auc, n_boot=300, seed=1) == (lo, hi, n_valid)


def test_bootstrap_percentiles_match_manual_resampling():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    s = rng.random(40)
    m = metrics_with_ci(y, s, n_boot=500, seed=7)
    idx = np.random.default_rng(7).integers(0, 40, (500, 40))
    vals = [classification_metrics(y[i], s[i])["accuracy"] for i in idx if len(set(y[i])) == 2]
    assert m["accuracy_lo"] == pytest.approx(np.percentile(vals, 2.5))
    assert m["accuracy_hi"] == pytest.approx(np.percentile(vals, 97.5))
    assert m["auc_lo"] <= m["auc"] <= m["auc_hi"]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(SmartError):
        bootstrap_ci(np.array([0, 1]), np.array([0.1, 0.9]), lambda a, b: 0.0, n_boot=0)
    with pytest.raises(SmartError):
        bootstrap_ci(np.array([]), np.array([]), lambda a, b: 0.0)


def test_intra_and_inter_class_distances_by_hand():
    # class 0 at (0,0),(2,0): centroid (1,0), distances 1, 1; class 1 at (0,4),(0,6),(0,8): centroid (0,6), distances 2,0,2
    x = np.array([[0, 0], [2, 0], [0, 4], [0, 6], [0, 8]], float)
    y = np.array([0, 0, 1, 1, 1])
    mean, sd = intra_class_distance(x, y)
    d = np.array([1, 1, 2, 0, 2], float)
    assert mean == pytest.approx(d.mean()) and sd == pytest.approx(d.std())
    mean, sd = inter_class_distance(x, y)
    assert mean == pytest.approx(math.hypot(1, 6)) and sd == pytest.approx(0.0)


def test_inter_class_distance_averages_centroid_pairs():
    # centroids (0,0), (3,0), (0,4): pair distances 3, 4, 5
    x = np.array([[0, 0], [3, 0], [0, 4]], float)
    mean, sd = inter_class_distance(x, np.array([0, 1, 2]))
    assert mean == pytest.approx(4.0) and sd == pytest.approx(np.std([3, 4, 5]))


def test_cluster_metrics_separated_vs_mixed():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    y = np.repeat([0, 1, 2], 20)
    good = centres[y] + rng.normal(0, 0.5, (60, 2))
    bad = rng.normal(0, 5, (60, 2))
    g, b = cluster_metrics(good, y, seed=0), cluster_metrics(bad, y, seed=0)
    assert g["kmeans_nmi"] == pytest.approx(1.0) and g["kmeans_ari"] == pytest.approx(1.0)
    assert g["silhouette"] > 0.8 > b["silhouette"]
    assert g["davies_bouldin"] < b["davies_bouldin"]
    assert b["kmeans_nmi"] < 0.3
    with pytest.raises(SmartError):
        cluster_metrics(good, np.zeros(60))
