"""Robustness to CT acquisition: Dice and HD95 per acquisition stratum, paired Wilcoxon tests, fine-tuning efficiency.

The strata are those of the wild- vs self-pretraining study (MIDL 2024, PMLR 250:708–721): contrast vs
non-contrast, smooth / medium / sharp reconstruction kernel, thin vs thick slices (the phantoms' 2.5 vs
5 mm; real series split at 3.75 mm, midway), plus tumour-volume tertiles. :func:`acquisition_strata`
reads them from a record: the phantom manifest's ``kernel``, ``slice_mm`` and ``contrast`` columns, or,
for a DICOM series, its ConvolutionKernel, SliceThickness and ContrastBolusAgent tags
(:func:`smartlib.data.dicom.acquisition_tags`). A missing value is the stratum ``"unknown"``.

Kernel names are vendor-specific; :func:`kernel_class` maps the common ones with a documented heuristic
(Siemens ``B30f`` / ``Br40d``: the number, ≤ 30 smooth, 31–49 medium, ≥ 50 sharp; GE SOFT / STANDARD /
LUNG / BONE; Philips A / B / C…; Canon ``FC`` numbers). Anything else is ``"unknown"``, with the raw name
kept beside it — check the mapping against your scanners' documentation.

Statistics: :func:`stratum_table` gives each arm's mean Dice per stratum with the seeds × cases bootstrap
CI (:func:`smartlib.downstream.study.seed_case_cis`); :func:`wilcoxon_table` compares two arms on the
same test cases of a stratum (per-case Dice averaged over seeds) with ``scipy.stats.wilcoxon`` and
Holm-adjusts the p-values of each factor together — every pair × every stratum of that factor is one
family, the question "does the difference between the arms hold across kernels?" (and so on); the
overall row is a family of its own (:func:`smartlib.downstream.stats.holm`). A stratum with fewer than
two cases is reported as not testable. :func:`efficiency_table`: the share of the fine-tuning steps
an arm needs to reach 95 % of its final validation Dice.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import SmartError

__all__ = ["FACTORS", "SLICE_CUT_MM", "kernel_class", "acquisition_strata", "add_strata", "stratum_table",
           "wilcoxon_table", "arm_by_stratum", "efficiency", "efficiency_table", "NOT_TESTABLE"]

#: the stratification factors, in table order
FACTORS = ("contrast", "kernel", "slice", "tumour volume")
#: slices thinner than this are "thin" (the phantoms' 2.5 mm), the others "thick" (5 mm)
SLICE_CUT_MM = 3.75
NOT_TESTABLE = "not testable (fewer than 2 cases)"

_GE = {"SOFT": "smooth", "SMOOTH": "smooth", "STANDARD": "medium", "STND": "medium", "DETAIL": "medium",
       "CHEST": "medium", "LUNG": "sharp", "BONE": "sharp", "BONEPLUS": "sharp", "EDGE": "sharp", "SHARP": "sharp"}
_PHILIPS = {"A": "smooth", "B": "medium", "UB": "medium", "C": "sharp", "D": "sharp", "E": "sharp", "L": "sharp",
            "YA": "sharp", "YB": "sharp", "YC": "sharp", "YD": "sharp"}


def kernel_class(name: str | None) -> str:
    """``smooth`` / ``medium`` / ``sharp`` for a reconstruction kernel name, ``unknown`` when it cannot tell.

    The phantom names pass through; GE and Philips names by table; Siemens-style names (a letter, an
    optional lower-case letter, two digits: ``B30f``, ``Br40d``, ``I70f``) and Canon ``FC`` names by their
    number (Siemens ≤ 30 smooth, 31–49 medium, ≥ 50 sharp; Canon FC01–09 smooth, FC10–29 medium, ≥ FC30
    sharp). A multi-valued tag (``"Br40d\\3"``) is read by its first value.
    """
    if name is None:
        return "unknown"
    s = str(name).split("\\")[0].strip()
    if s.lower() in ("smooth", "medium", "sharp"):
        return s.lower()
    up = s.upper()
    if up in _GE:
        return _GE[up]
    if up in _PHILIPS:
        return _PHILIPS[up]
    m = re.fullmatch(r"FC(\d{1,2})", up)
    if m:
        n = int(m.group(1))
        return "smooth" if n < 10 else "medium" if n < 30 else "sharp"
    m = re.fullmatch(r"[A-Z][a-z]?(\d{2})[a-z]?\d?", s)
    if m:
        n = int(m.group(1))
        return "smooth" if n <= 30 else "medium" if n < 50 else "sharp"
    return "unknown"


def _contrast_class(value: Any, from_dicom: bool) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "unknown"
    s = str(value).strip().lower()
    if from_dicom:  # ContrastBolusAgent: present and empty (or NONE) = given without an agent
        return "non-contrast" if s in ("", "none", "no", "n") else "contrast"
    if s in ("1", "1.0", "true", "yes", "contrast"):
        return "contrast"
    if s in ("0", "0.0", "false", "no", "non-contrast"):
        return "non-contrast"
    return "unknown"


def _slice_class(value: Any) -> str:
    try:
        mm = float(value)
    except (TypeError, ValueError):
        return "unknown"
    if not np.isfinite(mm) or mm <= 0:
        return "unknown"
    return f"thin (<{SLICE_CUT_MM:g} mm)" if mm < SLICE_CUT_MM else f"thick (≥{SLICE_CUT_MM:g} mm)"


def _is_dicom(path: Any) -> bool:
    from ..data.dicom import is_dicom_file, is_dicom_series_dir

    if path in (None, ""):
        return False
    p = Path(str(path))
    return is_dicom_series_dir(p) or (p.is_file() and is_dicom_file(p))


def acquisition_strata(record: Mapping[str, Any]) -> dict[str, str]:
    """The contrast, kernel and slice strata of one record, plus ``kernel_raw`` / ``slice_mm`` as read.

    Columns ``kernel``, ``slice_mm``, ``contrast`` of the record win (a phantom manifest, or a manifest you
    annotated); otherwise a DICOM series (or file) is read for its tags; otherwise every stratum is
    ``"unknown"``.
    """
    kernel, slice_mm, contrast = (record.get(k) for k in ("kernel", "slice_mm", "contrast"))
    dicom = False
    if all(v in (None, "") for v in (kernel, slice_mm, contrast)) and _is_dicom(record.get("image")):
        from ..data.dicom import acquisition_tags

        tags = acquisition_tags(record["image"])
        kernel, slice_mm, contrast, dicom = tags["kernel"], tags["slice_thickness_mm"], tags["contrast_agent"], True
    return {"contrast": _contrast_class(None if contrast == "" and not dicom else contrast, dicom),
            "kernel": kernel_class(None if kernel in (None, "") else str(kernel)), "slice": _slice_class(slice_mm),
            "kernel_raw": "" if kernel in (None, "") else str(kernel),
            "slice_mm": "" if slice_mm in (None, "") else slice_mm}


def add_strata(cases: "pd.DataFrame", records: Mapping[str, Mapping[str, Any]]) -> "pd.DataFrame":
    """``cases`` (one row per arm, seed and test case, with ``patient_id`` and ``tumour_volume_ml``) with the
    stratum columns of :data:`FACTORS` added: the acquisition strata of each case's record (``records``:
    patient id → record) and the tumour-volume tertile of the test cases (``small`` / ``medium`` / ``large``)."""
    import pandas as pd

    missing = sorted(set(cases["patient_id"].astype(str)) - set(records))
    if missing:
        raise SmartError(f"add_strata: no record for test case(s) {missing[:3]}")
    strata = {pid: acquisition_strata(rec) for pid, rec in records.items() if pid in set(cases["patient_id"].astype(str))}
    out = cases.drop(columns=[c for c in ("contrast", "kernel", "slice", "kernel_raw", "slice_mm") if c in cases])
    add = pd.DataFrame([{"patient_id": pid, **s} for pid, s in strata.items()])
    out = out.assign(patient_id=out["patient_id"].astype(str)).merge(add, on="patient_id", how="left")
    vol = out.drop_duplicates("patient_id").set_index("patient_id")["tumour_volume_ml"]
    edges = np.quantile(vol.to_numpy(float), [1 / 3, 2 / 3]) if len(vol) else np.array([np.nan, np.nan])
    names = {pid: "small" if v <= edges[0] else "medium" if v <= edges[1] else "large" for pid, v in vol.items()}
    return out.assign(**{"tumour volume": out["patient_id"].map(names)})


def stratum_table(cases: "pd.DataFrame", arms: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Mean Dice of every arm per stratum (and overall) with the seeds × cases 95 % CI, median HD95, n.

    ``cases``: :func:`add_strata` output with ``init`` (the arm), ``seed``, ``case``, ``dice``, ``hd95_mm``.
    Returns ``factor, stratum, init, n_cases, n_seeds, dice, dice_lo, dice_hi, dice_se, hd95_median_mm``.
    """
    import pandas as pd

    from .study import seed_case_cis

    arms = list(dict.fromkeys(cases["init"])) if arms is None else list(arms)
    rows = []
    for factor in ("overall", *FACTORS):
        groups = [("all", cases)] if factor == "overall" else list(cases.groupby(factor, sort=True)) if factor in cases else []
        for stratum, g in groups:
            g = g[g["init"].isin(arms)]
            if g.empty:
                continue
            ci = seed_case_cis(g, ["init"], "dice", n_boot=n_boot, seed=seed).set_index("init")
            hd = g.groupby("init")["hd95_mm"].median() if "hd95_mm" in g else pd.Series(dtype=float)
            for arm in (a for a in arms if a in ci.index):
                r = ci.loc[arm]
                rows.append({"factor": factor, "stratum": str(stratum), "init": arm, "n_cases": int(r["n_cases"]),
                             "n_seeds": int(r["n_seeds"]), "dice": r["dice"], "dice_lo": r["dice_lo"], "dice_hi": r["dice_hi"],
                             "dice_se": r["dice_se"], "hd95_median_mm": float(hd.get(arm, np.nan))})
    return pd.DataFrame(rows)


def _wilcoxon(d: np.ndarray) -> tuple[float, float, str]:
    """(statistic, p, note) of the two-sided signed-rank test of paired differences ``d``."""
    from scipy.stats import wilcoxon

    if len(d) < 2:
        return float("nan"), float("nan"), NOT_TESTABLE
    if np.all(d == 0):
        return 0.0, 1.0, "all paired differences are 0"
    res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue), ""


def wilcoxon_table(cases: "pd.DataFrame", pairs: Sequence[tuple[str, str]], factors: Sequence[str] = FACTORS) -> "pd.DataFrame":
    """Paired Wilcoxon signed-rank tests of arm vs reference per stratum, Holm-adjusted within each factor.

    Each arm's per-case Dice is averaged over its seeds; the two arms are paired on the test cases of the
    stratum. A pair with an arm absent from ``cases`` is skipped; a stratum with fewer than two cases is
    kept as :data:`NOT_TESTABLE` (p NaN, not counted by Holm). ``p_holm`` adjusts every testable p of one
    factor (all pairs × all its strata) together; the overall rows form their own family.

    Returns ``factor, stratum, arm, reference, n_cases, dice_arm, dice_reference, median_diff, statistic, p,
    p_holm, note``.
    """
    import pandas as pd

    from .stats import holm

    present = set(cases["init"])
    per_case = cases.groupby(["init", "patient_id"], sort=False)["dice"].mean()
    rows = []
    for arm, ref in pairs:
        if arm not in present or ref not in present:
            continue
        a, b = per_case.loc[arm], per_case.loc[ref]
        if set(a.index) != set(b.index):
            raise SmartError(f"wilcoxon_table: {arm!r} and {ref!r} are not scored on the same test cases")
        for factor in ("overall", *factors):
            if factor != "overall" and factor not in cases:
                continue
            lab = (cases.drop_duplicates("patient_id").set_index("patient_id")[factor] if factor != "overall"
                   else pd.Series("all", index=a.index))
            for stratum in sorted(set(lab.astype(str))):
                ids = [p for p in a.index if str(lab.get(p)) == stratum]
                d = a.loc[ids].to_numpy(float) - b.loc[ids].to_numpy(float)
                stat, p, note = _wilcoxon(d)
                rows.append({"factor": factor, "stratum": stratum, "arm": arm, "reference": ref, "n_cases": len(ids),
                             "dice_arm": float(a.loc[ids].mean()) if ids else np.nan,
                             "dice_reference": float(b.loc[ids].mean()) if ids else np.nan,
                             "median_diff": float(np.median(d)) if len(d) else np.nan, "statistic": stat, "p": p, "note": note})
    t = pd.DataFrame(rows, columns=["factor", "stratum", "arm", "reference", "n_cases", "dice_arm", "dice_reference",
                                    "median_diff", "statistic", "p", "note"])
    t.insert(len(t.columns) - 1, "p_holm", np.nan)
    for _, idx in t.groupby("factor", sort=False).groups.items():
        t.loc[idx, "p_holm"] = holm(t.loc[idx, "p"].to_numpy(float))
    return t


def arm_by_stratum(strata: "pd.DataFrame", wilcoxon: "pd.DataFrame", digits: int = 2) -> "pd.DataFrame":
    """The arm × stratum Dice table for reading: one row per (factor, stratum) with its ``n`` cases, one column
    per arm (``Dice [95 % CI]``) and one per compared pair (``p_holm`` of the Wilcoxon test, or "n/t" where
    the stratum is not testable). Inputs: :func:`stratum_table` and :func:`wilcoxon_table` output."""
    import pandas as pd

    rows = []
    for (factor, stratum), g in strata.groupby(["factor", "stratum"], sort=False):
        row = {"factor": factor, "stratum": stratum, "n cases": int(g["n_cases"].max())}
        for r in g.to_dict("records"):
            row[r["init"]] = f"{r['dice']:.{digits}f} [{r['dice_lo']:.{digits}f}, {r['dice_hi']:.{digits}f}]"
        w = wilcoxon[(wilcoxon["factor"] == factor) & (wilcoxon["stratum"] == stratum)] if len(wilcoxon) else wilcoxon
        for r in w.to_dict("records") if len(w) else []:
            p = r["p_holm"]
            row[f"p {r['arm']} vs {r['reference']}"] = "n/t" if not np.isfinite(p) else "<0.001" if p < 0.001 else f"{p:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


def efficiency(steps: Sequence[float], dice: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(first step, share of the last step) at which a fine-tuning curve reaches ``level`` × its final value.

    ``steps`` ascending evaluation points, ``dice`` the (seed-mean) validation Dice there; the crossing is
    interpolated linearly between points. A curve already above the level at its first point returns that
    point (an upper bound: nothing was measured before it).
    """
    s, d = np.asarray(steps, float), np.asarray(dice, float)
    if len(s) == 0 or len(s) != len(d) or np.any(np.diff(s) <= 0) or not np.all(np.isfinite(d)):
        raise SmartError(f"efficiency: need ascending steps and finite Dice values of the same length, got {len(s)} and {len(d)}")
    if not 0 < level <= 1:
        raise SmartError(f"level={level}: must lie in (0, 1]")
    target = level * d[-1]
    k = int(np.argmax(d >= target))  # the last point always qualifies
    if k == 0:
        step = s[0]
    else:
        step = s[k - 1] + (target - d[k - 1]) / (d[k] - d[k - 1]) * (s[k] - s[k - 1])
    return float(step), float(step / s[-1])


def efficiency_table(curves: "pd.DataFrame", level: float = 0.95) -> "pd.DataFrame":
    """Per arm (``init``): the seed-mean validation curve's final Dice, the step that reaches ``level`` of it,
    its share of the steps and ``fewer`` = 1 − share (the paper's "fewer epochs"), with ``n_seeds``.

    ``curves``: one row per (init, seed, evaluation step) with ``val_dice`` (segmentation ``curves.csv``).
    """
    import pandas as pd

    rows = []
    for arm, g in curves.groupby("init", sort=False):
        mean = g.groupby("step")["val_dice"].mean().sort_index()
        if mean.isna().any():
            rows.append({"init": arm, "n_seeds": g["seed"].nunique(), "final_val_dice": np.nan, "step": np.nan,
                         "share": np.nan, "fewer": np.nan, "note": "no validation Dice"})
            continue
        step, share = efficiency(mean.index.to_numpy(float), mean.to_numpy(float), level)
        rows.append({"init": arm, "n_seeds": g["seed"].nunique(), "final_val_dice": float(mean.iloc[-1]), "step": step,
                     "share": share, "fewer": 1.0 - share,
                     "note": "reached at the first evaluation point (an upper bound)" if step == mean.index[0] else ""})
    return pd.DataFrame(rows)
