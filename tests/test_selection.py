"""Model selection on held-out patients: validation score, probe C, k folds."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import mw_auc

from smartlib.downstream.selection import PROBE_CS, fold_splits, select_probe_C, val_score
from smartlib.errors import SmartError



def test_val_score_is_the_auc_or_the_log_loss():
    rng = np.random.default_rng(0)
    y = np.arange(30) % 2
    p1 = np.clip(0.5 + 0.3 * (y - 0.5) + 0.2 * rng.standard_normal(30), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1)
    score, metric = val_score(y, probs)
    assert metric == "auc" and score == pytest.approx(mw_auc(y, p1))
    # one class only: the AUC is undefined, the negative log-loss is used
    y0 = np.zeros(30, int)
    score, metric = val_score(y0, probs)
    assert metric == "neg_log_loss" and score == pytest.approx(np.log(1 - p1).mean())
    with pytest.raises(SmartError, match="do not match"):
        val_score(y[:5], probs)


def test_select_probe_C_takes_the_validation_best():
    rng = np.random.default_rng(0)

    def make(n):  # 2 informative features among 200: few cases, strong regularisation should help
        y = np.arange(n) % 2
        x = rng.standard_normal((n, 200))
        x[:, :2] += 1.2 * y[:, None]
        return x, y

    xtr, ytr = make(30)
    xva, yva = make(60)
    C, rows = select_probe_C(xtr, ytr, xva, yva, 2)
    assert [r["C"] for r in rows] == sorted(PROBE_CS) and C in PROBE_CS
    assert C == max(rows, key=lambda r: (r["score"], -r["C"]))["C"]
    assert len({round(r["score"], 6) for r in rows}) > 1  # the grid matters on this problem
    # permuting the validation labels changes the scores (selection reads them)
    _, rows_perm = select_probe_C(xtr, ytr, xva, rng.permutation(yva), 2)
    assert [r["score"] for r in rows] != [r["score"] for r in rows_perm]
    with pytest.raises(SmartError, match="C > 0"):
        select_probe_C(xtr, ytr, xva, yva, 2, Cs=[0.0])


def test_fold_splits_are_patient_disjoint_and_leave_test_alone():
    train, val, test = np.arange(0, 40), np.arange(40, 60), np.arange(60, 80)
    patients = [f"p{i // 2}" for i in range(80)]  # two records per patient
    labels = [(i // 2) % 2 for i in range(80)]
    assert [(list(a), list(b)) for a, b in fold_splits(train, val, labels, patients)] == [(list(train), list(val))]
    folds = fold_splits(train, val, labels, patients, folds=5, seed=0)
    assert len(folds) == 5
    held = np.concatenate([b for _, b in folds])
    assert sorted(held.tolist()) == list(range(60))  # the held-out folds partition train + val
    for a, b in folds:
        assert not set(a) & set(b) and not (set(a) | set(b)) & set(test.tolist())
        assert not {patients[i] for i in a} & {patients[i] for i in b}  # by patient
        assert {labels[i] for i in b} == {0, 1}  # stratified
    with pytest.raises(SmartError, match="folds=1"):
        fold_splits(train, val, labels, patients, folds=1)
    with pytest.raises(SmartError, match="only 30 training patients"):
        fold_splits(train, val, labels, patients, folds=31)


def test_warmup_cosine_schedule():
    from smartlib.downstream.classify import warmup_cosine

    f = [warmup_cosine(i, 100, 10) for i in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10]))  # rising during warm-up
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # then decaying
    assert f[-1] < 0.01


def test_study_selects_on_validation_and_writes_curves(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from smartlib.downstream.classify import classification_study
    from smartlib.plots.downstream import finetune_curves

    out = tmp_path / "out"
    res = classification_study("nodules", ["scratch"], preset="smoke", runs_dir=tmp_path / "runs", out=out,
                               modes=["probe", "finetune"], epochs=2, n_boot=20, log=lambda s: None)
    assert (res["n_val"] > 0).all() and (res["n_test"] > 0).all()
    probe = res[res["mode"] == "probe"].iloc[0]
    assert float(probe["selected"]) in PROBE_CS and np.isfinite(probe["val_score"])
    ft = res[res["mode"] == "finetune"].iloc[0]
    assert int(ft["selected"]) in (1, 2)
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves["epoch"]) == [1, 2] and curves["selected"].sum() == 1
    assert {"train_loss", "val_score", "test_auc", "lr"} <= set(curves.columns)
    fig = finetune_curves(out / "curves.csv")
    assert sum(len(ax.lines) for ax in fig.axes) >= 3
