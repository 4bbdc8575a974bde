"""Statistics for comparing initialisations ("scratch", "smit", "smart") scored on the same test cases over seeds.

A downstream study trains every arm with S seeds and scores each run on the *same* N test cases, so its
uncertainty has two sources — which seeds were drawn and which cases were drawn — and two arms are
*paired* through the cases. The functions here honour both:

* :func:`seed_case_bootstrap` / :func:`seed_case_bootstrap_auc` — a two-level bootstrap CI of one arm
  (resample seeds, then cases, the same case indices for every resampled seed);
* :func:`paired_difference` / :func:`paired_auc_difference` — the paired bootstrap of arm a − arm b
  (shared case resample; seeds paired by index when both arms have as many, else resampled per arm),
  with CI, SE and a two-sided bootstrap p-value;
* :func:`delong_test` — DeLong, DeLong & Clarke-Pearson (Biometrics 1988) test of two correlated AUCs
  from the structural components (placement values), computed with the midrank algorithm of
  Sun & Xu (IEEE SPL 2014);
* :func:`holm` — Holm (1979) step-down adjusted p-values;
* :func:`compare_arms` — one table row per arm against a reference, from a long per-case DataFrame.

Why hand-written: SciPy has neither a DeLong test nor Holm's adjustment (``statsmodels`` has Holm but is
not a dependency, and has no DeLong either); ``scipy.stats.bootstrap`` resamples one level of i.i.d.
observations, so it can neither resample seeds and cases jointly, nor share the case resample between
two arms with different seed counts, nor skip single-class resamples where AUC is undefined.

Resampling convention (so that tests can rebuild the draws): ``rng = np.random.default_rng(seed)``, then
seed indices ``rng.integers(0, S, (n_boot, S))`` (for an unpaired comparison: those of arm a, then those
of arm b), then case indices ``rng.integers(0, N, (n_boot, N))``. Percentile limits are the
``alpha/2`` and ``1 - alpha/2`` percentiles of the valid resamples; ``se`` is their SD (ddof = 1).

Calibration (what the two-level bootstrap can and cannot do; there is no exact bootstrap for a crossed
seeds × cases design, McCullagh, Bernoulli 2000): the seed × case residual enters both the seed and the
case resampling, so when runs differ little between seeds the intervals are *conservative* (false
positives well under alpha). With a real seed-to-seed spread and few seeds they are *anti-conservative*:
resampling S seeds shrinks their variance by (S - 1) / S and cannot see a spread one seed never shows
(with S = 1 seed-level uncertainty is absent altogether). Report the seed count next to every p-value.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from ..errors import SmartError

__all__ = [
    "seed_case_bootstrap",
    "seed_case_bootstrap_auc",
    "paired_difference",
    "paired_auc_difference",
    "delong_auc_variance",
    "delong_test",
    "holm",
    "compare_arms",
    "verdict",
]

# at most this many floats in one (S, chunk, N) block of resampled scores
_BLOCK = 4_000_000


# ------------------------------------------------------------------------------ argument checks
def _check_boot(n_boot: int, alpha: float) -> int:
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise SmartError(f"n_boot={n_boot!r}: must be a positive integer")
    if not isinstance(alpha, (int, float, np.floating)) or not 0 < float(alpha) < 1:
        raise SmartError(f"alpha={alpha!r}: must lie in (0, 1)")
    return int(n_boot)


def _matrix(values: ArrayLike, name: str, n_cases: int | None = None) -> np.ndarray:
    """(S, N) finite float matrix; a (N,) vector is one seed."""
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise SmartError(f"{name}: not numeric ({e})") from None
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise SmartError(f"{name} shape {np.shape(values)}: expected (seeds, cases) with at least one of each")
    if n_cases is not None and v.shape[1] != n_cases:
        raise SmartError(f"{name} shape {v.shape}: expected {n_cases} cases (columns), the same cases as the other inputs")
    if not np.isfinite(v).all():
        bad = np.argwhere(~np.isfinite(v))[0]
        raise SmartError(f"{name}[{bad[0]}, {bad[1]}] is not finite: drop or impute undefined cases before comparing")
    return v


def _labels(y: ArrayLike, need_each: int = 1) -> np.ndarray:
    """(N,) bool labels from {0, 1} (or bool); both classes present at least ``need_each`` times."""
    a = np.asarray(y)
    if a.ndim != 1 or a.size == 0:
        raise SmartError(f"y shape {a.shape}: expected (N,) binary labels")
    try:
        f = a.astype(float)
    except (TypeError, ValueError):
        raise SmartError(f"y: labels must be 0/1, got values like {a[:3].tolist()}") from None
    if not np.isin(f, (0.0, 1.0)).all():
        raise SmartError(f"y: labels must be 0/1, got {sorted(set(np.unique(a).tolist()))[:5]}")
    yb = f == 1.0
    n1, n0 = int(yb.sum()), int((~yb).sum())
    if min(n1, n0) < need_each:
        raise SmartError(f"y has {n1} positives and {n0} negatives: need at least {need_each} of each class")
    return yb


def _pvalue(observed: float, boot: np.ndarray) -> float:
    """Two-sided bootstrap p: twice the share of resampled differences on the other side of 0 from the
    observed one (ties with 0 count), floored at 1 / (valid resamples), capped at 1; 1 when observed is 0."""
    if len(boot) == 0 or not np.isfinite(observed):
        return float("nan")
    if observed == 0:
        return 1.0
    other = np.mean(boot <= 0) if observed > 0 else np.mean(boot >= 0)
    return float(min(1.0, max(2.0 * other, 1.0 / len(boot))))


def _summary(boot: np.ndarray, alpha: float) -> dict[str, float]:
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return {"lo": float("nan"), "hi": float("nan"), "se": float("nan")}
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    se = float(boot.std(ddof=1)) if len(boot) > 1 else float("nan")
    return {"lo": float(lo), "hi": float(hi), "se": se}


def _seed_weights(idx: np.ndarray, n_seeds: int) -> np.ndarray:
    """(B, S) resampled seed indices → (B, S) weights (counts / S) that sum to 1 per row."""
    B = idx.shape[0]
    w = np.zeros((B, n_seeds))
    np.add.at(w, (np.repeat(np.arange(B), idx.shape[1]), idx.ravel()), 1.0)
    return w / idx.shape[1]


def _case_counts(idx: np.ndarray, n_cases: int) -> np.ndarray:
    """(B, N) resampled case indices → (B, N) counts."""
    B = idx.shape[0]
    c = np.zeros((B, n_cases))
    np.add.at(c, (np.repeat(np.arange(B), idx.shape[1]), idx.ravel()), 1.0)
    return c


def _auc_full(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(S,) Mann–Whitney AUC (ties count one half) of each row of ``scores`` (S, N) on labels ``y`` (N,)."""
    from scipy.stats import rankdata

    r = rankdata(scores, axis=-1)
    n1 = y.sum()
    n0 = len(y) - n1
    return (r[:, y].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _auc_resampled(y: np.ndarray, scores: np.ndarray, case_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC of every seed on every case resample.

    Args: y (N,) bool; scores (S, N); case_idx (B, N).
    Returns: ``(auc, valid)`` — auc (B, S), NaN on resamples with one class; valid (B,) bool.
    """
    from scipy.stats import rankdata

    S, N = scores.shape
    B = case_idx.shape[0]
    yb = y[case_idx]                                # (B, N)
    n1 = yb.sum(axis=1).astype(float)
    n0 = N - n1
    valid = (n1 > 0) & (n0 > 0)
    out = np.full((B, S), np.nan)
    chunk = max(1, _BLOCK // max(1, S * N))
    for start in range(0, B, chunk):
        sl = slice(start, min(B, start + chunk))
        sc = scores[:, case_idx[sl]]                # (S, b, N)
        r = rankdata(sc, axis=-1)
        pos = np.where(yb[sl][None], r, 0.0).sum(axis=-1)     # (S, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos - n1[sl] * (n1[sl] + 1) / 2) / (n1[sl] * n0[sl])
        out[sl] = auc.T
    out[~valid] = np.nan
    return out, valid


# ------------------------------------------------------------------------------ one arm
def seed_case_bootstrap(
    values: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    stat: Callable[[np.ndarray], float] = np.mean,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Two-level (seeds × cases) percentile bootstrap CI of a per-case metric.

    Each resample draws S seeds with replacement, then N cases with replacement — the *same* case
    indices for all resampled seeds, since every seed is scored on the same cases — and evaluates
    ``stat`` on the resampled (S, N) matrix. With the default ``np.mean`` this is vectorised through
    resample counts; any other ``stat`` is called once per resample (same draws, same result for an
    equivalent statistic).

    Args:
        values: (S, N) per-case metric (e.g. Dice) of S seeds on N cases; a (N,) vector is one seed.
            Must be finite (decide undefined cases before calling).
        n_boot: resamples; seed: ``default_rng`` seed; stat: ``f((S, N) array) -> float``;
        alpha: two-sided level of the ``1 - alpha`` CI.

    Returns:
        ``{"mean": stat(values), "lo", "hi", "se", "n_seeds": S, "n_cases": N}``.
    """
    n_boot = _check_boot(n_boot, alpha)
    v = _matrix(values, "values")
    S, N = v.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, (n_boot, S))
    ci = rng.integers(0, N, (n_boot, N))
    if stat is np.mean:
        per_seed = _case_counts(ci, N) @ v.T / N               # (B, S): case-resampled mean of each seed
        boot = (_seed_weights(si, S) * per_seed).sum(axis=1)
    else:
        boot = np.array([float(stat(v[si[b]][:, ci[b]])) for b in range(n_boot)])
    return {"mean": float(stat(v)), **_summary(boot, alpha), "n_seeds": S, "n_cases": N}


def seed_case_bootstrap_auc(
    y: ArrayLike,
    scores: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Two-level (seeds × cases) percentile bootstrap CI of the seed-averaged AUC.

    Each resample draws S seeds and N cases with replacement; the AUC of each resampled seed's scores
    on the resampled cases (Mann–Whitney, ties one half) is averaged over the resampled seeds.
    Resamples whose cases hold a single class are skipped.

    Args:
        y: (N,) 0/1 labels with both classes; scores: (S, N) class-1 scores of S seeds ((N,) = one seed).

    Returns:
        ``{"mean": mean over seeds of the full-data AUC, "lo", "hi", "se", "n_seeds", "n_cases",
        "n_valid": resamples used}``.
    """
    n_boot = _check_boot(n_boot, alpha)
    yb = _labels(y)
    sc = _matrix(scores, "scores", len(yb))
    S, N = sc.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, S, (n_boot, S))
    ci = rng.integers(0, N, (n_boot, N))
    auc, valid = _auc_resampled(yb, sc, ci)
    boot = (_seed_weights(si, S) * auc).sum(axis=1)[valid]
    point = float(_auc_full(yb, sc).mean())
    return {"mean": point, **_summary(boot, alpha), "n_seeds": S, "n_cases": N, "n_valid": int(valid.sum())}


# ------------------------------------------------------------------------------ two arms
def _pairing(pair_seeds: bool | None, sa: int, sb: int) -> bool:
    if pair_seeds is None:
        return sa == sb
    if pair_seeds and sa != sb:
        raise SmartError(f"pair_seeds=True but the arms have {sa} and {sb} seeds: pairing by index needs equal counts")
    return bool(pair_seeds)


def _seed_draws(rng: np.random.Generator, n_boot: int, sa: int, sb: int, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    ia = rng.integers(0, sa, (n_boot, sa))
    ib = ia if paired else rng.integers(0, sb, (n_boot, sb))
    return _seed_weights(ia, sa), _seed_weights(ib, sb)


def paired_difference(
    a: ArrayLike,
    b: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    pair_seeds: bool | None = None,
) -> dict[str, float]:
    """Paired bootstrap of mean(a) − mean(b) for two arms scored on the same cases.

    Every resample shares one case resample between the arms (the pairing through cases). Seeds are
    paired by index — one seed resample for both arms — when ``pair_seeds`` is True, or when it is None
    (default) and both arms have as many seeds; otherwise each arm's seeds are resampled independently.
    The statistic of an arm is the mean over its resampled (seeds × cases) matrix.

    Args:
        a: (Sa, N) per-case metric of arm a; b: (Sb, N) of arm b, columns = the same cases in the same order.
        n_boot, seed, alpha: as :func:`seed_case_bootstrap`; pair_seeds: see above.

    Returns:
        ``{"mean_a", "mean_b", "diff": mean_a − mean_b, "lo", "hi", "se", "p", "n_seeds_a", "n_seeds_b",
        "n_cases", "paired_seeds"}``. ``p`` is two-sided: twice the share of resampled differences on
        the other side of 0, floored at ``1 / n_boot`` (so never 0), capped at 1.
    """
    n_boot = _check_boot(n_boot, alpha)
    va = _matrix(a, "a")
    vb = _matrix(b, "b", va.shape[1])
    (sa, N), sb = va.shape, vb.shape[0]
    paired = _pairing(pair_seeds, sa, sb)
    rng = np.random.default_rng(seed)
    wa, wb = _seed_draws(rng, n_boot, sa, sb, paired)
    cc = _case_counts(rng.integers(0, N, (n_boot, N)), N)
    boot = (wa * (cc @ va.T)).sum(axis=1) / N - (wb * (cc @ vb.T)).sum(axis=1) / N
    ma, mb = float(va.mean()), float(vb.mean())
    d = ma - mb
    return {"mean_a": ma, "mean_b": mb, "diff": d, **_summary(boot, alpha), "p": _pvalue(d, boot),
            "n_seeds_a": sa, "n_seeds_b": sb, "n_cases": N, "paired_seeds": paired}


def paired_auc_difference(
    y: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    pair_seeds: bool | None = None,
) -> dict[str, float]:
    """Paired bootstrap of the difference of seed-averaged AUCs, arm a − arm b, on the same cases.

    As :func:`paired_difference`, with each arm's statistic the mean over its resampled seeds of the AUC
    on the shared case resample; single-class case resamples are skipped (``n_valid`` counts the rest,
    and the p-value floor is ``1 / n_valid``).

    Args:
        y: (N,) 0/1 labels; scores_a: (Sa, N); scores_b: (Sb, N) class-1 scores ((N,) = one seed).

    Returns:
        ``{"auc_a", "auc_b", "diff", "lo", "hi", "se", "p", "n_seeds_a", "n_seeds_b", "n_cases",
        "paired_seeds", "n_valid"}``.
    """
    n_boot = _check_boot(n_boot, alpha)
    yb = _labels(y)
    sa_ = _matrix(scores_a, "scores_a", len(yb))
    sb_ = _matrix(scores_b, "scores_b", len(yb))
    sa, sb, N = sa_.shape[0], sb_.shape[0], len(yb)
    paired = _pairing(pair_seeds, sa, sb)
    rng = np.random.default_rng(seed)
    wa, wb = _seed_draws(rng, n_boot, sa, sb, paired)
    ci = rng.integers(0, N, (n_boot, N))
    auc_a, valid = _auc_resampled(yb, sa_, ci)
    auc_b, _ = _auc_resampled(yb, sb_, ci)
    boot = ((wa * auc_a).sum(axis=1) - (wb * auc_b).sum(axis=1))[valid]
    A, B = float(_auc_full(yb, sa_).mean()), float(_auc_full(yb, sb_).mean())
    d = A - B
    return {"auc_a": A, "auc_b": B, "diff": d, **_summary(boot, alpha), "p": _pvalue(d, boot),
            "n_seeds_a": sa, "n_seeds_b": sb, "n_cases": N, "paired_seeds": paired, "n_valid": int(valid.sum())}


# ------------------------------------------------------------------------------ DeLong
def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Structural components by midranks (Sun & Xu 2014).

    Args: y (N,) bool; scores (K, N).
    Returns: ``(auc (K,), v10 (K, m), v01 (K, n))`` with m positives, n negatives:
    ``v10[k, i] = mean_j psi(x_i, y_j)``, ``v01[k, j] = mean_i psi(x_i, y_j)``, psi = 1 / ½ / 0 for >, =, <.
    """
    from scipy.stats import rankdata

    x, z = scores[:, y], scores[:, ~y]
    m, n = x.shape[1], z.shape[1]
    tz = rankdata(scores, axis=-1)
    tx, ty = rankdata(x, axis=-1), rankdata(z, axis=-1)
    v10 = (tz[:, y] - tx) / n                # negatives below each positive (ties ½)
    v01 = 1.0 - (tz[:, ~y] - ty) / m         # positives above each negative (ties ½)
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _delong_cov(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    auc, v10, v01 = _placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return auc, s10 / m + s01 / n


def delong_auc_variance(y: ArrayLike, score: ArrayLike) -> tuple[float, float]:
    """AUC and its DeLong variance ``S10 / m + S01 / n`` (placement-value variances, ddof = 1).

    Args: y (N,) 0/1 labels with at least 2 cases of each class; score (N,).
    Returns: ``(auc, var)``.
    """
    yb = _labels(y, need_each=2)
    s = _matrix(score, "score", len(yb))
    if s.shape[0] != 1:
        raise SmartError(f"score shape {np.shape(score)}: expected (N,)")
    auc, cov = _delong_cov(yb, s)
    return float(auc[0]), float(cov[0, 0])


def delong_test(y: ArrayLike, score_a: ArrayLike, score_b: ArrayLike, alpha: float = 0.05) -> dict[str, float]:
    """DeLong et al. (1988) test of two correlated AUCs measured on the same cases.

    The covariance of (AUC_a, AUC_b) is ``S10 / m + S01 / n`` from the placement values of both scores
    (Sun & Xu 2014 midrank computation); ``se = sqrt(var_a + var_b - 2 cov_ab)``, ``z = diff / se``,
    ``p = 2 (1 - Phi(|z|))``. When ``se == 0`` (e.g. ``score_b`` a monotone transform of ``score_a``)
    a zero difference gives ``z = 0, p = 1``; a non-zero one gives ``z = ±inf, p = 0``.

    Args:
        y: (N,) 0/1 labels with at least 2 cases of each class; score_a, score_b: (N,) class-1 scores.
        alpha: level of the normal CI ``diff ± z_{1-alpha/2} se``.

    Returns:
        ``{"auc_a", "auc_b", "diff": auc_a − auc_b, "se", "z", "p", "lo", "hi", "var_a", "var_b",
        "cov_ab", "n_pos", "n_neg"}``.
    """
    from scipy.stats import norm

    if not isinstance(alpha, (int, float, np.floating)) or not 0 < float(alpha) < 1:
        raise SmartError(f"alpha={alpha!r}: must lie in (0, 1)")
    yb = _labels(y, need_each=2)
    a = _matrix(score_a, "score_a", len(yb))
    b = _matrix(score_b, "score_b", len(yb))
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise SmartError(f"score_a / score_b shapes {np.shape(score_a)} / {np.shape(score_b)}: expected (N,) each")
    auc, cov = _delong_cov(yb, np.vstack([a, b]))
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(var)) if var > 1e-15 else 0.0   # round-off below 1e-15 is a zero variance
    if se == 0.0:
        z = 0.0 if abs(diff) < 1e-12 else float(np.sign(diff) * np.inf)
        p = 1.0 if z == 0.0 else 0.0
    else:
        z = diff / se
        p = float(min(1.0, 2 * norm.sf(abs(z))))
    h = float(norm.ppf(1 - alpha / 2)) * se
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "diff": diff, "se": se, "z": float(z), "p": p,
            "lo": diff - h, "hi": diff + h, "var_a": float(cov[0, 0]), "var_b": float(cov[1, 1]),
            "cov_ab": float(cov[0, 1]), "n_pos": int(yb.sum()), "n_neg": int((~yb).sum())}


# ------------------------------------------------------------------------------ Holm
def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values.

    With the m non-NaN p-values sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``
    (monotone in the raw p, capped at 1); NaNs are passed through and do not count in m.

    Args: pvalues: array of any shape with values in [0, 1] or NaN.
    Returns: adjusted p-values, same shape, float.
    """
    p = np.asarray(pvalues, dtype=float)
    flat = p.ravel()
    ok = ~np.isnan(flat)
    if ((flat[ok] < 0) | (flat[ok] > 1)).any():
        raise SmartError(f"holm: p-values must lie in [0, 1], got {flat[ok][(flat[ok] < 0) | (flat[ok] > 1)][:3].tolist()}")
    out = np.full(flat.shape, np.nan)
    q = flat[ok]
    m = len(q)
    if m:
        order = np.argsort(q, kind="stable")
        adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        res = np.empty(m)
        res[order] = adj
        out[ok] = res
    return out.reshape(p.shape)


# ------------------------------------------------------------------------------ table
_COLUMNS = ["arm", "reference", "metric", "test", "n_cases", "n_seeds", "n_seeds_reference", "value",
            "value_reference", "diff", "lo", "hi", "se", "p", "p_holm", "verdict"]


def verdict(lo: float, hi: float, p_holm: float, alpha: float = 0.05) -> str:
    """The words a comparison earns: ``"higher"`` / ``"lower"`` only when the CI of the difference
    excludes 0 **and** the Holm-adjusted p is below ``alpha``; else ``"no detectable difference"``
    (``"not estimable"`` without a finite CI). With several comparisons an unadjusted CI that just
    excludes 0 is not evidence on its own, so the adjusted p decides together with the CI."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "not estimable"
    if lo <= 0 <= hi or not (np.isfinite(p_holm) and p_holm < alpha):
        return "no detectable difference"
    return "higher" if lo > 0 else "lower"


def compare_arms(
    table: "pd.DataFrame",
    arm_col: str = "arm",
    reference: str = "scratch",
    metric: str = "auc",
    *,
    arms: Sequence[str] | None = None,
    seed_col: str = "seed",
    case_col: str = "case",
    y_col: str = "y",
    score_col: str = "score",
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> "pd.DataFrame":
    """Every arm against ``reference`` on the same test cases, one row per arm, Holm-adjusted.

    ``table`` is long: one row per (arm, seed, case). With ``metric="auc"`` it needs ``y_col`` (0/1
    label) and ``score_col`` (class-1 score), and the AUC of each run is compared — by
    :func:`delong_test` when both arms have exactly one seed, else by :func:`paired_auc_difference`.
    With any other ``metric`` it names a column of per-case values (e.g. ``"dice"``) compared by
    :func:`paired_difference` (mean over seeds and cases). Seeds are sorted and paired by position when
    the two arms have as many; cases are aligned by ``case_col``, and every seed of every compared arm
    must score exactly the reference's cases (else :class:`SmartError`: a silent intersection would
    hide a failed run).

    Args:
        table: long DataFrame (columns ``arm_col``, ``seed_col``, ``case_col`` and the metric's columns).
        arm_col: column naming the initialisation; reference: the arm compared against ("scratch");
        metric: ``"auc"`` or a per-case metric column; arms: arms to compare (default all others, in
        order of appearance) — e.g. ``compare_arms(df, "init", "smit", "dice", arms=["smart"])``;
        seed_col, case_col, y_col, score_col: column names; n_boot, seed, alpha: bootstrap settings.

    Returns:
        DataFrame with one row per arm ≠ reference and columns ``arm, reference, metric, test
        ("delong" or "paired bootstrap"), n_cases, n_seeds, n_seeds_reference, value, value_reference,
        diff (arm − reference), lo, hi (1 − alpha CI of diff), se, p, p_holm (Holm over the rows),
        verdict`` — :func:`verdict`: "higher" / "lower" (the arm's metric against the reference's;
        whether higher is better depends on the metric) when the CI excludes 0 and ``p_holm < alpha``,
        else "no detectable difference".
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise SmartError(f"compare_arms: table must be a pandas DataFrame, got {type(table).__name__}")
    is_auc = metric == "auc"
    need = [arm_col, seed_col, case_col] + ([y_col, score_col] if is_auc else [metric])
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise SmartError(f"compare_arms: table lacks column(s) {missing}; it has {list(table.columns)}")
    present = list(pd.unique(table[arm_col]))
    if reference not in present:
        raise SmartError(f"compare_arms: reference arm {reference!r} not in column {arm_col!r} (arms: {present})")
    others = [a for a in present if a != reference] if arms is None else list(arms)
    for a in others:
        if a == reference or a not in present:
            raise SmartError(f"compare_arms: arm {a!r} is the reference or not in {arm_col!r} (arms: {present})")
    dup = table.duplicated([arm_col, seed_col, case_col])
    if dup.any():
        r = table.loc[dup].iloc[0]
        raise SmartError(f"compare_arms: more than one row for {arm_col}={r[arm_col]!r}, {seed_col}={r[seed_col]!r}, "
                         f"{case_col}={r[case_col]!r}")
    cases = sorted(pd.unique(table.loc[table[arm_col] == reference, case_col]))

    def pivot(arm: str, col: str) -> np.ndarray:
        sub = table.loc[table[arm_col] == arm]
        got = set(pd.unique(sub[case_col]))
        if got != set(cases):
            extra, lack = sorted(got - set(cases))[:3], sorted(set(cases) - got)[:3]
            raise SmartError(f"compare_arms: arm {arm!r} is not scored on the reference's cases "
                             f"(lacks e.g. {lack}, has extra e.g. {extra}); compare arms on the same test cases")
        wide = sub.pivot(index=seed_col, columns=case_col, values=col).reindex(columns=cases).sort_index()
        if wide.isna().to_numpy().any():
            s = wide.index[wide.isna().any(axis=1)][0]
            raise SmartError(f"compare_arms: arm {arm!r} seed {s!r} lacks a value of {col!r} for some cases")
        return wide.to_numpy(dtype=float)

    y = None
    if is_auc:
        sub = table.loc[table[arm_col].isin([reference, *others])]
        if (sub.groupby(case_col)[y_col].nunique() > 1).any():
            raise SmartError(f"compare_arms: column {y_col!r} differs between rows of the same case")
        y = sub.groupby(case_col)[y_col].first().reindex(cases).to_numpy()

    ref = pivot(reference, score_col if is_auc else metric)
    rows = []
    for arm in others:
        cur = pivot(arm, score_col if is_auc else metric)
        if is_auc and cur.shape[0] == 1 and ref.shape[0] == 1:
            r = delong_test(y, cur[0], ref[0], alpha=alpha)
            test, va, vr = "delong", r["auc_a"], r["auc_b"]
        elif is_auc:
            r = paired_auc_difference(y, cur, ref, n_boot=n_boot, seed=seed, alpha=alpha)
            test, va, vr = "paired bootstrap", r["auc_a"], r["auc_b"]
        else:
            r = paired_difference(cur, ref, n_boot=n_boot, seed=seed, alpha=alpha)
            test, va, vr = "paired bootstrap", r["mean_a"], r["mean_b"]
        rows.append({"arm": arm, "reference": reference, "metric": metric, "test": test, "n_cases": len(cases),
                     "n_seeds": cur.shape[0], "n_seeds_reference": ref.shape[0], "value": va, "value_reference": vr,
                     "diff": r["diff"], "lo": r["lo"], "hi": r["hi"], "se": r["se"], "p": r["p"],
                     "verdict": ""})
    out = pd.DataFrame(rows, columns=[c for c in _COLUMNS if c != "p_holm"])
    out.insert(out.columns.get_loc("p") + 1, "p_holm", holm(out["p"].to_numpy(dtype=float)) if len(out) else [])
    out["verdict"] = [verdict(lo, hi, ph, alpha) for lo, hi, ph in zip(out["lo"], out["hi"], out["p_holm"])]
    return out
