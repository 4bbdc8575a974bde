"""Model selection on held-out patients: the validation score, the probe's regularisation, and k folds.

Nothing here ever sees the test split. Two protocols:

* **Validation split** (smoke / cpu presets): a patient-level ``val`` split, disjoint from train and
  test, chooses the probe's ``C`` and the fine-tuning epoch. At every label fraction only the
  *training* patients are subsampled; the validation split stays whole, so every init and fraction is
  selected on the same cases.
* **k-fold cross-validation on train** (``folds ≥ 2``, the paper preset): train and val patients are
  pooled and split into ``k`` patient-grouped, label-stratified folds
  (scikit-learn ``StratifiedGroupKFold``); each fold's model is selected on its held-out fold and
  predicts the held-out test split, and the ``k`` test predictions are averaged (the protocol of the
  SMIT / SMART downstream studies: k-fold CV on the training data, one held-out test set).

The **validation score** (:func:`val_score`) is the AUC (one-vs-rest macro for K > 2 classes) when
every class is present in the held-out cases, else the negative log-loss (an AUC needs both classes;
the loss is always defined), so a tiny validation split still selects something sensible.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SmartError

__all__ = ["PROBE_CS", "val_score", "select_probe_C", "fold_splits"]

#: the probe's inverse-regularisation grid (scikit-learn ``LogisticRegression(C=...)``)
PROBE_CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


def val_score(y: np.ndarray, probs: np.ndarray) -> tuple[float, str]:
    """Higher-is-better score of class probabilities ``probs`` (n, K) for labels ``y`` (n,) and its name.

    ``("auc", AUC)`` when all K classes occur in ``y`` (binary: the AUC of ``probs[:, 1]``), otherwise
    ``("neg_log_loss", −mean cross-entropy)`` with probabilities clipped at 1e-7.
    """
    from sklearn.metrics import roc_auc_score

    y, p = np.asarray(y).astype(int), np.asarray(probs, dtype=float)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise SmartError(f"val_score: probabilities of shape {p.shape} do not match {len(y)} labels")
    k = p.shape[1]
    if len(set(y.tolist())) == k:
        if k == 2:
            return float(roc_auc_score(y, p[:, 1])), "auc"
        q = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
        return float(roc_auc_score(y, q, multi_class="ovr", labels=list(range(k)))), "auc"
    return float(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)).mean()), "neg_log_loss"


def select_probe_C(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
                   Cs: Sequence[float] = PROBE_CS, seed: int = 0) -> tuple[float, list[dict]]:
    """The ``C`` of :func:`smartlib.downstream.classify.linear_probe` with the best :func:`val_score`.

    Args: x_train (n, F), y_train (n,), x_val (m, F), y_val (m,). Ties go to the smaller C (the
    stronger regularisation). Returns the chosen C and one row per candidate ``{"C", "score", "metric"}``.
    """
    from .classify import linear_probe

    if not Cs or any(not (float(c) > 0) for c in Cs):
        raise SmartError(f"Cs={list(Cs)!r}: give at least one C > 0")
    rows = []
    for c in sorted(float(c) for c in Cs):
        score, metric = val_score(y_val, linear_probe(x_train, y_train, x_val, n_classes, seed=seed, C=c))
        rows.append({"C": c, "score": score, "metric": metric})
    best = max(rows, key=lambda r: (r["score"], -r["C"]))
    return best["C"], rows


def fold_splits(train_idx: np.ndarray, val_idx: np.ndarray, labels: Sequence[int], patients: Sequence[str],
                folds: int = 0, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) record-index pairs for model selection.

    ``folds`` 0: the one pair (``train_idx``, ``val_idx``) — ``val_idx`` may be empty (no selection;
    the last epoch and C = 1 are kept). ``folds`` ≥ 2: train and val pooled, split into ``folds``
    patient-grouped, label-stratified folds (``StratifiedGroupKFold(shuffle=True, random_state=seed)``).

    Raises:
        SmartError: ``folds`` of 1 or negative, or more folds than patients.
    """
    train_idx, val_idx = np.asarray(train_idx, dtype=int), np.asarray(val_idx, dtype=int)
    if folds == 0:
        return [(train_idx, val_idx)]
    if folds < 2:
        raise SmartError(f"folds={folds}: use 0 (the validation split) or at least 2")
    from sklearn.model_selection import StratifiedGroupKFold

    pool = np.sort(np.concatenate([train_idx, val_idx]))
    groups = np.array([str(patients[i]) for i in pool])
    if len(set(groups.tolist())) < folds:
        raise SmartError(f"folds={folds}: only {len(set(groups.tolist()))} training patients to split")
    y = np.array([int(labels[i]) for i in pool])
    kf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(pool[a], pool[b]) for a, b in kf.split(pool, y, groups)]
