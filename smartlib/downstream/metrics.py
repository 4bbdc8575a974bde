"""Metric definitions of the downstream studies (SMART, arXiv 2310.01209; MedMNIST v2, arXiv 2110.14795), each small enough to check by hand.

* Classification: AUC, accuracy and balanced accuracy from scikit-learn, with percentile bootstrap
  95 % confidence intervals over test cases (:func:`bootstrap_ci`).
* Organ clustering: intra-class distance (mean Euclidean distance of each sample to its class
  centroid) and inter-class distance (mean pairwise distance between class centroids), both hand
  written because neither scikit-learn nor umap-learn defines them; silhouette, Davies–Bouldin and
  k-means NMI / ARI from scikit-learn.

The segmentation metrics (Dice, HD95) are MONAI's and live in :mod:`smartlib.downstream.segment`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import SmartError

__all__ = [
    "classification_metrics",
    "bootstrap_ci",
    "binary_metrics_batch",
    "metrics_with_ci",
    "intra_class_distance",
    "inter_class_distance",
    "cluster_metrics",
]


def _as_scores(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=float)
    if s.ndim == 1:
        s = np.stack([1.0 - s, s], axis=1)
    if s.ndim != 2 or s.shape[0] != y.shape[0]:
        raise SmartError(f"scores shape {np.shape(scores)}: expected (N,) or (N, K) with N = {y.shape[0]} labels")
    return y, s


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC, accuracy and balanced accuracy of class scores.

    Args:
        y_true: (N,) integer labels 0..K-1.
        scores: (N,) probability of class 1 (binary) or (N, K) class probabilities.

    Returns:
        ``{"auc", "accuracy", "balanced_accuracy"}``. The prediction is the arg-max class (0.5 threshold
        for a binary score). AUC is ``roc_auc_score`` (one-vs-rest macro average for K > 2); it is NaN
        when ``y_true`` holds a single class.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    y, s = _as_scores(y_true, scores)
    pred = s.argmax(axis=1)
    present = np.unique(y)
    if len(present) < 2:
        auc = float("nan")
    elif s.shape[1] == 2:
        auc = float(roc_auc_score(y, s[:, 1]))
    else:
        p = s / np.clip(s.sum(axis=1, keepdims=True), 1e-12, None)
        auc = float(roc_auc_score(y, p, multi_class="ovr", labels=list(range(s.shape[1]))))
    return {"auc": auc, "accuracy": float(accuracy_score(y, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred))}


def _resamples(y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) bootstrap indices from ``default_rng(seed)``, keeping only rows that contain every
    class present in ``y``."""
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise SmartError(f"n_boot={n_boot!r}: must be a positive integer")
    if len(y) == 0:
        raise SmartError("bootstrap: no test cases")
    idx = np.random.default_rng(seed).integers(0, len(y), (int(n_boot), len(y)))
    yb = y[idx]
    ok = np.ones(len(idx), dtype=bool)
    for c in np.unique(y):
        ok &= (yb == c).any(axis=1)
    return idx[ok]


def _percentiles(vals: np.ndarray, alpha: float) -> tuple[float, float]:
    vals = np.asarray(vals, dtype=float)
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, int]:
    """Percentile bootstrap confidence interval of ``metric(y, scores)`` over test cases.

    ``n_boot`` resamples of the N cases with replacement are drawn at once as
    ``default_rng(seed).integers(0, N, (n_boot, N))``; a resample that misses a class present in
    ``y_true`` is skipped (AUC is undefined there), and so is one whose metric is not finite.
    Hand-written: scikit-learn has no bootstrap and ``scipy.stats.bootstrap`` cannot skip
    degenerate resamples.

    Args:
        y_true: (N,) labels; scores: (N,) or (N, K); metric: ``f(y, scores) -> float``.

    Returns:
        ``(low, high, n_valid)``: the ``alpha/2`` and ``1 - alpha/2`` percentiles of the valid
        resamples (NaN, NaN if none) and how many resamples were valid.
    """
    if not 0 < alpha < 1:
        raise SmartError(f"alpha={alpha!r}: must lie in (0, 1)")
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=float)
    vals = np.array([metric(y[i], s[i]) for i in _resamples(y, n_boot, seed)], dtype=float)
    lo, hi = _percentiles(vals, alpha)
    return lo, hi, int(np.isfinite(vals).sum())


def binary_metrics_batch(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """AUC, accuracy and balanced accuracy of many binary resamples at once.

    Args: y (B, N) labels in {0, 1}; s (B, N) scores for class 1. Every row needs both classes.
    Returns: each metric as (B,). AUC is the Mann–Whitney statistic from average ranks (ties count
    one half), the prediction is ``s > 0.5`` (the arg-max of ``(1 - s, s)``), exactly as
    :func:`classification_metrics`. Vectorised by hand because calling scikit-learn 1000 times per
    run costs seconds; the tests check it against scikit-learn.
    """
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=float)
    n1 = y.sum(axis=1).astype(float)
    n0 = y.shape[1] - n1
    r = rankdata(s, axis=1)
    auc = (np.where(y, r, 0.0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    pred = s > 0.5
    acc = (pred == y).mean(axis=1)
    bacc = 0.5 * ((pred & y).sum(axis=1) / n1 + (~pred & ~y).sum(axis=1) / n0)
    return {"auc": auc, "accuracy": acc, "balanced_accuracy": bacc}


def metrics_with_ci(y_true: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    alpha: float = 0.05) -> dict[str, float]:
    """:func:`classification_metrics` plus ``<name>_lo`` / ``<name>_hi`` percentile bootstrap limits.

    The resamples are those of :func:`bootstrap_ci` (same seed → same resamples); binary scores use
    :func:`binary_metrics_batch`, K > 2 classes call scikit-learn per resample.
    """
    y = np.asarray(y_true).astype(int).ravel()
    s = np.asarray(scores, dtype=float)
    out = classification_metrics(y, s)
    idx = _resamples(y, n_boot, seed)
    if s.ndim == 1 or s.shape[1] == 2:
        s1 = s if s.ndim == 1 else s[:, 1]
        batch = binary_metrics_batch(y[idx], s1[idx]) if len(idx) else {k: np.array([]) for k in out}
    else:
        per = [classification_metrics(y[i], s[i]) for i in idx]
        batch = {k: np.array([p[k] for p in per]) for k in out}
    for name in list(out):
        out[f"{name}_lo"], out[f"{name}_hi"] = _percentiles(batch[name], alpha)
    if np.isnan(out["auc"]):
        out["auc_note"] = f"AUC undefined: only class {int(y[0])} in the test split" if len(y) else "AUC undefined: no test cases"
    return out


# ------------------------------------------------------------------------------ clustering
def _check_embedding(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(labels).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise SmartError(f"embedding shape {x.shape}: expected (N, D) with N = {y.shape[0]} labels")
    classes = np.unique(y)
    return x, y, classes


def _centroids(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.stack([x[y == c].mean(axis=0) for c in classes])


def intra_class_distance(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean ± SD over samples of the Euclidean distance from each sample to its class centroid.

    Args: x (N, D) embedding; labels (N,). Returns ``(mean, sd)`` (population SD).
    """
    x, y, classes = _check_embedding(x, labels)
    cent = _centroids(x, y, classes)
    d = np.linalg.norm(x - cent[np.searchsorted(classes, y)], axis=1)
    return float(d.mean()), float(d.std())


def inter_class_distance(x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean ± SD over the K(K-1)/2 unordered class pairs of the distance between class centroids.

    Args: x (N, D) embedding; labels (N,) with at least two classes. Returns ``(mean, sd)``.
    """
    x, y, classes = _check_embedding(x, labels)
    if len(classes) < 2:
        raise SmartError(f"labels: inter-class distance needs at least 2 classes, got {len(classes)}")
    cent = _centroids(x, y, classes)
    i, j = np.triu_indices(len(classes), k=1)
    d = np.linalg.norm(cent[i] - cent[j], axis=1)
    return float(d.mean()), float(d.std())


def cluster_metrics(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Every clustering metric of an embedding ``x`` (N, D) with true ``labels`` (N,).

    Returns ``intra_mean, intra_sd, inter_mean, inter_sd`` (see above), ``silhouette`` and
    ``davies_bouldin`` (scikit-learn, Euclidean, true labels), and ``kmeans_nmi`` / ``kmeans_ari``:
    ``KMeans(n_clusters=K, n_init=10, random_state=seed)`` on ``x`` compared with the labels.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, normalized_mutual_info_score, silhouette_score

    x, y, classes = _check_embedding(x, labels)
    if not 2 <= len(classes) < len(y):
        raise SmartError(f"labels: clustering metrics need 2 <= classes < samples, got {len(classes)} classes for {len(y)} samples")
    intra = intra_class_distance(x, y)
    inter = inter_class_distance(x, y)
    km = KMeans(n_clusters=len(classes), n_init=10, random_state=seed).fit_predict(x)
    return {
        "intra_mean": intra[0], "intra_sd": intra[1], "inter_mean": inter[0], "inter_sd": inter[1],
        "silhouette": float(silhouette_score(x, y)), "davies_bouldin": float(davies_bouldin_score(x, y)),
        "kmeans_nmi": float(normalized_mutual_info_score(y, km)), "kmeans_ari": float(adjusted_rand_score(y, km)),
    }
