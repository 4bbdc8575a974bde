"""smartlib.downstream.stats against hand computations, rebuilt resamples and planted / null effects."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from smartlib.downstream.stats import (
    verdict,
    compare_arms,
    delong_auc_variance,
    delong_test,
    holm,
    paired_auc_difference,
    paired_difference,
    seed_case_bootstrap,
    seed_case_bootstrap_auc,
)
from smartlib.errors import SmartError


# ------------------------------------------------------------------------------ simulators
def _dice(rng, S, N, mu=0.8, sd_seed=0.0, sd_case=0.1, sd_noise=0.03, case=None):
    """(S, N) per-case metric: mu + seed effect + case effect (shared if given) + noise."""
    case = rng.normal(0, sd_case, (1, N)) if case is None else case
    return mu + rng.normal(0, sd_seed, (S, 1)) + case + rng.normal(0, sd_noise, (S, N))


def _scores(rng, y, S, sep, sd=1.0):
    """(S, N) scores: sep * y + independent noise per seed."""
    return sep * y[None, :] + rng.normal(0, sd, (S, len(y)))


# ------------------------------------------------------------------------------ seed_case_bootstrap
def test_seed_case_bootstrap_fast_path_equals_per_resample_loop():
    v = _dice(np.random.default_rng(0), 4, 25, sd_seed=0.02)
    fast = seed_case_bootstrap(v, n_boot=300, seed=3)
    slow = seed_case_bootstrap(v, n_boot=300, seed=3, stat=lambda m: float(np.mean(m)))
    for k in ("mean", "lo", "hi", "se"):
        assert fast[k] == pytest.approx(slow[k], abs=1e-12)
    assert (fast["n_seeds"], fast["n_cases"]) == (4, 25)
    assert fast["mean"] == pytest.approx(v.mean())


def test_seed_case_bootstrap_rebuilt_draws_share_case_indices():
    # the documented convention: seed indices (B, S), then case indices (B, N), same cases for every seed
    v = np.random.default_rng(1).normal(size=(3, 7))
    B = 50
    rng = np.random.default_rng(9)
    si, ci = rng.integers(0, 3, (B, 3)), rng.integers(0, 7, (B, 7))
    boot = np.array([v[si[b]][:, ci[b]].mean() for b in range(B)])
    r = seed_case_bootstrap(v, n_boot=B, seed=9)
    assert r["se"] == pytest.approx(boot.std(ddof=1))
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


def test_seed_case_bootstrap_covers_truth_and_sees_seed_spread():
    # seed spread comparable to case spread: a case-only interval would be far too narrow
    hits, ses, means = 0, [], []
    for k in range(150):
        v = _dice(np.random.default_rng(100 + k), S=6, N=50, sd_seed=0.03, sd_case=0.1)
        r = seed_case_bootstrap(v, n_boot=400, seed=k)
        hits += r["lo"] <= 0.8 <= r["hi"]
        ses.append(r["se"])
        means.append(r["mean"])
    assert 0.85 <= hits / 150 <= 1.0
    true_sd = np.std(means, ddof=1)   # true SD of the estimate over replications
    assert 0.7 * true_sd < np.mean(ses) < 1.4 * true_sd
    # SE must include the seed component sqrt(0.03**2 / 6) ≈ 0.012, not only the case one ≈ 0.014
    assert np.mean(ses) > 0.016


def test_seed_case_bootstrap_auc_matches_sklearn_loop_and_skips_single_class():
    rng = np.random.default_rng(2)
    y = np.array([1, 0, 0, 0, 0, 1, 0, 0])          # few positives: some resamples hold one class
    sc = _scores(rng, y, 3, 1.0)
    B = 60
    g = np.random.default_rng(4)
    si, ci = g.integers(0, 3, (B, 3)), g.integers(0, 8, (B, 8))
    boot = []
    for b in range(B):
        yb = y[ci[b]]
        if yb.min() == yb.max():
            continue
        boot.append(np.mean([roc_auc_score(yb, sc[s, ci[b]]) for s in si[b]]))
    r = seed_case_bootstrap_auc(y, sc, n_boot=B, seed=4)
    assert 0 < r["n_valid"] == len(boot) < B
    assert r["mean"] == pytest.approx(np.mean([roc_auc_score(y, s) for s in sc]))
    assert r["se"] == pytest.approx(np.std(boot, ddof=1))
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))


# ------------------------------------------------------------------------------ paired_difference
def test_paired_difference_rebuilt_draws_unequal_seeds():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 9)), rng.normal(size=(3, 9))
    B = 40
    g = np.random.default_rng(5)
    ia, ib, ci = g.integers(0, 2, (B, 2)), g.integers(0, 3, (B, 3)), g.integers(0, 9, (B, 9))
    boot = np.array([a[ia[k]][:, ci[k]].mean() - b[ib[k]][:, ci[k]].mean() for k in range(B)])
    r = paired_difference(a, b, n_boot=B, seed=5)
    assert r["paired_seeds"] is False
    assert r["diff"] == pytest.approx(a.mean() - b.mean())
    assert r["se"] == pytest.approx(boot.std(ddof=1))
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))
    other = np.mean(boot <= 0) if r["diff"] > 0 else np.mean(boot >= 0)
    assert r["p"] == pytest.approx(min(1, max(2 * other, 1 / B)))


def test_paired_difference_detects_planted_effect_through_shared_cases():
    rng = np.random.default_rng(7)
    case = rng.normal(0, 0.1, (1, 60))               # case spread 5x the effect: only pairing sees it
    b = _dice(rng, 3, 60, case=case)
    a = _dice(rng, 3, 60, mu=0.82, case=case)
    r = paired_difference(a, b, n_boot=2000, seed=0)
    assert r["paired_seeds"] is True
    assert r["p"] < 0.01 and r["lo"] > 0
    assert r["lo"] <= 0.02 <= r["hi"]
    assert r["se"] < 0.01                          # independent case resampling would give ≈ 0.018
    assert r["p"] >= 1 / 2000
    huge = paired_difference(a + 1.0, b, n_boot=500, seed=0)
    assert huge["p"] == pytest.approx(1 / 500)     # the floor, never 0


def test_paired_difference_null_not_detected_and_calibrated():
    rng = np.random.default_rng(8)
    case = rng.normal(0, 0.1, (1, 60))
    r = paired_difference(_dice(rng, 3, 60, case=case), _dice(rng, 3, 60, case=case), seed=1)
    assert r["p"] > 0.05 and r["lo"] <= 0 <= r["hi"]
    rej = hit = 0
    for k in range(150):
        g = np.random.default_rng(500 + k)
        case = g.normal(0, 0.1, (1, 40))
        null = paired_difference(_dice(g, 3, 40, case=case), _dice(g, 2, 40, case=case), n_boot=300, seed=k)
        rej += null["p"] < 0.05
        planted = paired_difference(_dice(g, 3, 40, mu=0.83, case=case), _dice(g, 2, 40, case=case), n_boot=300, seed=k)
        hit += planted["p"] < 0.05
    assert rej / 150 <= 0.08
    assert hit / 150 >= 0.9
    assert paired_difference(np.ones((2, 5)), np.ones((2, 5)))["p"] == 1.0


def test_paired_auc_difference_rebuilt_draws_and_planted_null():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 12)
    sa, sb = _scores(rng, y, 2, 1.0), _scores(rng, y, 3, 0.5)
    B = 30
    g = np.random.default_rng(6)
    ia, ib, ci = g.integers(0, 2, (B, 2)), g.integers(0, 3, (B, 3)), g.integers(0, 12, (B, 12))
    boot = []
    for k in range(B):
        yb = y[ci[k]]
        if yb.min() == yb.max():
            continue
        boot.append(np.mean([roc_auc_score(yb, sa[s, ci[k]]) for s in ia[k]])
                    - np.mean([roc_auc_score(yb, sb[s, ci[k]]) for s in ib[k]]))
    r = paired_auc_difference(y, sa, sb, n_boot=B, seed=6)
    assert r["n_valid"] == len(boot)
    assert r["se"] == pytest.approx(np.std(boot, ddof=1))
    assert (r["lo"], r["hi"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))

    y = rng.integers(0, 2, 200)
    good, weak = _scores(rng, y, 3, 1.5), _scores(rng, y, 3, 0.4)
    r = paired_auc_difference(y, good, weak, seed=0)
    assert r["p"] < 0.01 and r["lo"] > 0
    r = paired_auc_difference(y, _scores(rng, y, 3, 1.0), _scores(rng, y, 2, 1.0), seed=0)
    assert r["p"] > 0.05 and r["lo"] <= 0 <= r["hi"]


def test_paired_auc_bootstrap_agrees_with_delong_for_one_seed():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    a, b = y + rng.normal(0, 1, 300), y + rng.normal(0, 1.5, 300)
    boot = paired_auc_difference(y, a, b, n_boot=2000, seed=0)
    dl = delong_test(y, a, b)
    assert boot["diff"] == pytest.approx(dl["diff"])
    assert boot["se"] == pytest.approx(dl["se"], rel=0.15)


# ------------------------------------------------------------------------------ DeLong
def _psi(x, z):
    return Fraction(1) if x > z else Fraction(1, 2) if x == z else Fraction(0)


def _longhand(y, sa, sb):
    """DeLong variance/covariance from the placement values, written out with exact fractions."""
    pos = [i for i in range(len(y)) if y[i] == 1]
    neg = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos), len(neg)
    comp = {}
    for name, s in (("a", sa), ("b", sb)):
        v10 = [sum(_psi(s[i], s[j]) for j in neg) / n for i in pos]
        v01 = [sum(_psi(s[i], s[j]) for i in pos) / m for j in neg]
        comp[name] = (sum(v10) / m, v10, v01)
    def cov(p, q):
        (A, a10, a01), (B, b10, b01) = comp[p], comp[q]
        s10 = sum((u - A) * (w - B) for u, w in zip(a10, b10)) / (m - 1)
        s01 = sum((u - A) * (w - B) for u, w in zip(a01, b01)) / (n - 1)
        return s10 / m + s01 / n
    return comp["a"][0], cov("a", "a"), cov("b", "b"), cov("a", "b")


def test_delong_variance_by_hand_with_ties():
    # positives 0.9, 0.5, 0.5; negatives 0.5, 0.3, 0.9, 0.1 (ties across classes)
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.3, 0.9, 0.1])
    # V10 = 7/8, 5/8, 5/8 → AUC 17/24, S10 = 1/48; V01 = 2/3, 1, 1/6, 1 → S01 = 67/432
    # var = S10/3 + S01/4 = 79/1728
    auc, var = delong_auc_variance(y, s)
    assert auc == pytest.approx(17 / 24) and auc == pytest.approx(roc_auc_score(y, s))
    assert var == pytest.approx(79 / 1728, abs=1e-12)
    A, vaa, _, _ = _longhand(y, s, s)
    assert (A, vaa) == (Fraction(17, 24), Fraction(79, 1728))


def test_delong_test_covariance_matches_longhand():
    rng = np.random.default_rng(0)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    sa = np.round(y + rng.normal(0, 1, 9), 1)            # rounding makes ties
    sb = np.round(0.5 * y + rng.normal(0, 1, 9), 1)
    A, vaa, vbb, vab = _longhand(y, sa, sb)
    r = delong_test(y, sa, sb)
    assert r["auc_a"] == pytest.approx(float(A))
    assert (r["var_a"], r["var_b"], r["cov_ab"]) == pytest.approx((float(vaa), float(vbb), float(vab)), abs=1e-12)
    assert r["se"] == pytest.approx(float(vaa + vbb - 2 * vab) ** 0.5)
    assert r["z"] == pytest.approx(r["diff"] / r["se"])


def test_delong_identical_scores_give_p_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    s = y + rng.normal(0, 1, 50)
    for other in (s, np.exp(s)):                           # itself, and a monotone transform
        r = delong_test(y, s, other)
        assert r["diff"] == pytest.approx(0, abs=1e-12) and r["se"] == 0.0
        assert r["z"] == 0.0 and r["p"] == 1.0


def test_delong_detects_informative_vs_noise_and_not_equal_signals():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    signal = y + rng.normal(0, 0.8, 300)
    r = delong_test(y, signal, rng.normal(size=300))
    assert r["p"] < 0.01 and r["lo"] > 0
    r = delong_test(y, signal + rng.normal(0, 0.05, 300), signal + rng.normal(0, 0.05, 300))
    assert r["p"] > 0.2 and r["lo"] <= 0 <= r["hi"]
    rej = sum(delong_test(yy, yy + g.normal(0, 1, 150), yy + g.normal(0, 1, 150))["p"] < 0.05
              for g in (np.random.default_rng(900 + k) for k in range(200))
              for yy in (g.integers(0, 2, 150),))
    assert rej / 200 <= 0.09                                # nominal 0.05 under the null


# ------------------------------------------------------------------------------ Holm
def test_holm_by_hand_nan_and_cap():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max-accumulate 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([np.nan, 0.01, 0.04, np.nan, 0.03, 0.005])
    assert np.isnan(out[[0, 3]]).all()
    assert out[[1, 2, 4, 5]] == pytest.approx([0.03, 0.06, 0.06, 0.02])   # m counts only non-NaN
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == pytest.approx([0.2])
    assert holm([]).shape == (0,) and np.isnan(holm([np.nan])).all()
    p = np.random.default_rng(0).uniform(size=20)
    adj = holm(p)
    order = np.argsort(p)
    assert (np.diff(adj[order]) >= 0).all() and (adj >= p).all() and (adj <= 1).all()


# ------------------------------------------------------------------------------ compare_arms
def _long(arrays: dict, col: str, y=None):
    rows = []
    for arm, m in arrays.items():
        for s, row in enumerate(np.atleast_2d(m)):
            for c, v in enumerate(row):
                rows.append({"init": arm, "seed": 10 + s, "case": f"c{c:03d}", col: v,
                             **({"y": int(y[c])} if y is not None else {})})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)   # order must not matter


def test_compare_arms_dice_verdicts_and_holm():
    rng = np.random.default_rng(3)
    case = rng.normal(0, 0.1, (1, 60))
    arms = {"scratch": _dice(rng, 3, 60, case=case), "smit": _dice(rng, 2, 60, case=case),
            "smart": _dice(rng, 3, 60, mu=0.83, case=case), "worse": _dice(rng, 3, 60, mu=0.77, case=case)}
    df = _long(arms, "dice")
    out = compare_arms(df, "init", "scratch", "dice")
    assert list(out["arm"]) == list(pd.unique(df["init"][df["init"] != "scratch"]))
    o = out.set_index("arm")
    assert o.loc["smart", "verdict"] == "higher" and o.loc["smart", "p"] < 0.01
    assert o.loc["worse", "verdict"] == "lower"
    assert o.loc["smit", "verdict"] == "no detectable difference" and o.loc["smit", "p"] > 0.05
    assert o.loc["smit", "n_seeds"] == 2 and o.loc["smit", "n_seeds_reference"] == 3 and o.loc["smit", "n_cases"] == 60
    assert (o["test"] == "paired bootstrap").all()
    assert out["p_holm"].to_numpy() == pytest.approx(holm(out["p"].to_numpy()))
    direct = paired_difference(arms["smart"], arms["scratch"])
    assert o.loc["smart", "diff"] == pytest.approx(direct["diff"])
    assert o.loc["smart", "lo"] == pytest.approx(direct["lo"])
    one = compare_arms(df, "init", "smit", "dice", arms=["smart"])
    assert list(one["arm"]) == ["smart"] and one["p_holm"].iloc[0] == pytest.approx(one["p"].iloc[0])


def test_compare_arms_auc_delong_for_one_seed_else_bootstrap():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 250)
    one = {"scratch": _scores(rng, y, 1, 0.5), "smart": _scores(rng, y, 1, 1.5), "smit": _scores(rng, y, 1, 0.5)}
    out = compare_arms(_long(one, "score", y), "init", "scratch", "auc").set_index("arm")
    assert (out["test"] == "delong").all()
    dl = delong_test(y, one["smart"][0], one["scratch"][0])
    assert out.loc["smart", "p"] == pytest.approx(dl["p"]) and out.loc["smart", "verdict"] == "higher"
    assert out.loc["smit", "verdict"] == "no detectable difference"
    many = {"scratch": _scores(rng, y, 3, 0.5), "smart": _scores(rng, y, 3, 1.5)}
    out = compare_arms(_long(many, "score", y), "init", "scratch", "auc")
    assert out["test"].iloc[0] == "paired bootstrap" and out["verdict"].iloc[0] == "higher"


def test_compare_arms_rejects_misaligned_tables():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 20)
    df = _long({"scratch": _scores(rng, y, 2, 1.0), "smart": _scores(rng, y, 2, 1.0)}, "score", y)
    with pytest.raises(SmartError, match="reference arm"):
        compare_arms(df, "init", "smit", "auc")
    with pytest.raises(SmartError, match="lacks column"):
        compare_arms(df, "init", "scratch", "dice")
    with pytest.raises(SmartError, match="not scored on the reference's cases"):
        compare_arms(df[~((df["init"] == "smart") & (df["case"] == "c003"))], "init", "scratch", "auc")
    with pytest.raises(SmartError, match="lacks a value"):
        compare_arms(df[~((df["init"] == "smart") & (df["case"] == "c003") & (df["seed"] == 10))], "init", "scratch", "auc")
    with pytest.raises(SmartError, match="more than one row"):
        compare_arms(pd.concat([df, df.iloc[:1]]), "init", "scratch", "auc")
    bad = df.copy()
    bad.loc[(bad["init"] == "smart") & (bad["case"] == "c000"), "y"] = 1 - y[0]
    with pytest.raises(SmartError, match="differs between rows"):
        compare_arms(bad, "init", "scratch", "auc")
    with pytest.raises(SmartError, match="reference or not"):
        compare_arms(df, "init", "scratch", "auc", arms=["scratch"])


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("call", [
    lambda: seed_case_bootstrap(np.ones((2, 3)), n_boot=0),
    lambda: seed_case_bootstrap(np.ones((2, 3)), alpha=1.5),
    lambda: seed_case_bootstrap(np.ones((2, 3, 4))),
    lambda: seed_case_bootstrap([[1.0, np.nan]]),
    lambda: seed_case_bootstrap_auc([0, 1, 1], np.ones((2, 4))),
    lambda: seed_case_bootstrap_auc([1, 1, 1], np.ones((2, 3))),
    lambda: seed_case_bootstrap_auc([0, 2, 1], np.ones((2, 3))),
    lambda: paired_difference(np.ones((2, 3)), np.ones((2, 4))),
    lambda: paired_difference(np.ones((2, 3)), np.ones((3, 3)), pair_seeds=True),
    lambda: paired_auc_difference([0, 1, 0], np.ones(3), np.ones(4)),
    lambda: delong_test([0, 1, 0, 1], [1, 2, 3, 4], [1, 2, 3]),
    lambda: delong_test([0, 1, 0, 0], [1, 2, 3, 4], [1, 2, 3, 4]),      # one positive: no variance
    lambda: delong_test([0, 1, 0, 1], np.ones((2, 4)), np.ones(4)),
    lambda: holm([0.2, 1.2]),
    lambda: compare_arms({"arm": ["a"]}, "arm", "a"),
])
def test_bad_arguments_raise_smart_error(call):
    with pytest.raises(SmartError):
        call()


def test_verdict_follows_the_holm_adjusted_p():
    # a CI that just excludes 0 with an unadjusted p of 0.018 but a Holm p of 0.054 is no evidence
    assert verdict(-0.092, -0.008, 0.054) == "no detectable difference"
    assert verdict(-0.092, -0.008, 0.012) == "lower"
    assert verdict(0.01, 0.2, 0.001) == "higher"
    assert verdict(-0.1, 0.2, 0.001) == "no detectable difference"   # the CI covers 0
    assert verdict(float("nan"), 0.2, 0.001) == "not estimable"


def test_comparisons_verdict_uses_the_group_adjustment():
    # small effects near the threshold: some arms pass after Holm, others pass only unadjusted;
    # the study's table must call the latter "no detectable difference"
    from smartlib.downstream.study import comparisons

    rng = np.random.default_rng(11)
    case = rng.normal(0, 0.05, (1, 40))
    base = _dice(rng, 3, 40, case=case)
    arms = {"scratch": base, **{a: base + rng.normal(0.006, 0.02, base.shape) for a in ("smit", "smart", "other")}}
    df = _long(arms, "dice").assign(fraction=1.0)
    out = comparisons(df, ["fraction"], "dice", n_boot=2000)
    assert len(out) == 4  # three arms vs scratch, smart vs smit
    for _, r in out.iterrows():
        want = "no detectable difference" if (r["lo"] <= 0 <= r["hi"] or r["p_holm"] >= 0.05) else ("higher" if r["lo"] > 0 else "lower")
        assert r["verdict"] == want, r.to_dict()
    vs = out[out["reference"] == "scratch"]
    assert (vs["verdict"] == "higher").any() and ((vs["p"] < 0.05) & (vs["verdict"] == "no detectable difference")).any(), \
        vs[["arm", "lo", "hi", "p", "p_holm", "verdict"]]
