"""Acquisition strata, per-stratum tables, paired Wilcoxon tests with Holm, and fine-tuning efficiency."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import raises_smart

from smartlib.downstream.robustness import (
    NOT_TESTABLE,
    acquisition_strata,
    add_strata,
    arm_by_stratum,
    efficiency,
    efficiency_table,
    kernel_class,
    stratum_table,
    wilcoxon_table,
)


@pytest.mark.parametrize("name, cls", [
    ("smooth", "smooth"), ("Sharp", "sharp"), ("B30f", "smooth"), ("Br40d", "medium"), ("B45f", "medium"),
    ("B70f", "sharp"), ("Br64d\\3", "sharp"), ("SOFT", "smooth"), ("STANDARD", "medium"), ("LUNG", "sharp"),
    ("BONE", "sharp"), ("A", "smooth"), ("B", "medium"), ("YB", "sharp"), ("FC03", "smooth"), ("FC13", "medium"),
    ("FC52", "sharp"), ("my-kernel", "unknown"), (None, "unknown"), ("", "unknown"),
])
def test_kernel_class(name, cls):
    assert kernel_class(name) == cls


def test_phantom_record_strata():
    s = acquisition_strata({"kernel": "sharp", "slice_mm": "2.5", "contrast": "1"})
    assert (s["kernel"], s["slice"], s["contrast"]) == ("sharp", "thin (<3.75 mm)", "contrast")
    s = acquisition_strata({"kernel": "smooth", "slice_mm": 5.0, "contrast": 0})
    assert (s["kernel"], s["slice"], s["contrast"]) == ("smooth", "thick (≥3.75 mm)", "non-contrast")
    s = acquisition_strata({"image": "nowhere.nii.gz"})  # no columns, not DICOM: every stratum unknown
    assert (s["kernel"], s["slice"], s["contrast"]) == ("unknown", "unknown", "unknown")


def test_dicom_series_strata_from_tags(ct5n_dir):
    # pydicom's CT5N series: ConvolutionKernel STANDARD, SliceThickness 2.5, no ContrastBolusAgent
    s = acquisition_strata({"image": str(ct5n_dir)})
    assert (s["kernel"], s["kernel_raw"], s["slice"], s["contrast"]) == ("medium", "STANDARD", "thin (<3.75 mm)", "unknown")


def test_acquisition_tags_of_a_series_and_a_file(ct5n_dir):
    from pydicom.data import get_testdata_file

    from smartlib.data.dicom import acquisition_tags

    assert acquisition_tags(ct5n_dir) == {"kernel": "STANDARD", "slice_thickness_mm": 2.5, "contrast_agent": None}
    assert acquisition_tags(get_testdata_file("CT_small.dcm"))["contrast_agent"] == "ISOVUE300/100"


def test_dicom_file_with_contrast_agent():
    from pydicom.data import get_testdata_file

    s = acquisition_strata({"image": get_testdata_file("CT_small.dcm")})  # STANDARD, 5 mm, ISOVUE contrast
    assert (s["kernel"], s["slice"], s["contrast"]) == ("medium", "thick (≥3.75 mm)", "contrast")


def test_dicom_series_without_acquisition_tags_is_unknown(ct5n_copy):
    import pydicom

    for f in ct5n_copy.iterdir():
        ds = pydicom.dcmread(f)
        for tag in ("ConvolutionKernel", "SliceThickness", "ContrastBolusAgent"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(f)
    s = acquisition_strata({"image": str(ct5n_copy)})
    assert (s["kernel"], s["slice"], s["contrast"]) == ("unknown", "unknown", "unknown")


def test_empty_contrast_agent_is_non_contrast(ct5n_copy):
    import pydicom

    for f in ct5n_copy.iterdir():
        ds = pydicom.dcmread(f)
        ds.ContrastBolusAgent = ""
        ds.save_as(f)
    assert acquisition_strata({"image": str(ct5n_copy)})["contrast"] == "non-contrast"


def _cases(dice: dict[str, list[list[float]]], volumes=None) -> tuple[pd.DataFrame, dict]:
    """Long cases (arm × seed × case) and records: case k has kernel smooth/sharp alternating, slice 2.5, contrast 1."""
    rows, n = [], len(next(iter(dice.values()))[0])
    volumes = volumes or [float(k + 1) for k in range(n)]
    for arm, seeds in dice.items():
        for s, vals in enumerate(seeds):
            rows += [{"init": arm, "seed": s, "case": k, "patient_id": f"P{k}", "dice": v, "hd95_mm": 3.0 + k,
                      "tumour_volume_ml": volumes[k]} for k, v in enumerate(vals)]
    records = {f"P{k}": {"kernel": "smooth" if k % 2 == 0 else "sharp", "slice_mm": 2.5, "contrast": 1} for k in range(n)}
    return pd.DataFrame(rows), records


def test_add_strata_tertiles_by_hand():
    cases, recs = _cases({"a": [[0.5] * 6]}, volumes=[1.0, 9.0, 2.0, 8.0, 5.0, 6.0])
    out = add_strata(cases, recs).set_index("patient_id")
    # sorted volumes 1 2 5 6 8 9: tertile edges at the 1/3, 2/3 quantiles (3.0, 6.67) → small 1,2; medium 5,6; large 8,9
    assert out.loc[["P0", "P2"], "tumour volume"].tolist() == ["small", "small"]
    assert out.loc[["P4", "P5"], "tumour volume"].tolist() == ["medium", "medium"]
    assert out.loc[["P1", "P3"], "tumour volume"].tolist() == ["large", "large"]
    assert out.loc["P1", "kernel"] == "sharp" and out.loc["P0", "kernel"] == "smooth"
    raises_smart(add_strata, cases, {"P0": recs["P0"]}, words=["no record"])


def test_wilcoxon_hand_computed_exact_p_and_not_testable():
    # 5 cases, arm b better on every case by distinct margins → exact two-sided signed-rank p = 2 / 2**5
    a = [0.5, 0.6, 0.4, 0.7, 0.3]
    b = [x + d for x, d in zip(a, (0.01, 0.02, 0.03, 0.04, 0.05))]
    cases, recs = _cases({"a": [a, a], "b": [b, b]})
    t = wilcoxon_table(add_strata(cases, recs), [("b", "a")])
    overall = t[t["factor"] == "overall"].iloc[0]
    assert overall["n_cases"] == 5 and overall["p"] == pytest.approx(2 / 32)
    assert overall["median_diff"] == pytest.approx(0.03)
    # kernel strata: smooth holds cases 0, 2, 4 (exact p = 2/8), sharp 1, 3 (2/4); tumour tertiles hold 1–2 cases
    k = t[t["factor"] == "kernel"].set_index("stratum")
    assert k.loc["smooth", "p"] == pytest.approx(0.25) and k.loc["sharp", "p"] == pytest.approx(0.5)
    # Holm within each factor: the overall row alone keeps its p; the two kernel strata: smaller × 2, larger max'ed
    assert overall["p_holm"] == pytest.approx(2 / 32)
    assert k.loc["smooth", "p_holm"] == pytest.approx(0.5) and k.loc["sharp", "p_holm"] == pytest.approx(0.5)
    ok = t["p"].notna()
    assert (t.loc[ok, "p_holm"] >= t.loc[ok, "p"] - 1e-12).all()


def test_wilcoxon_one_case_stratum_is_not_testable():
    cases, recs = _cases({"a": [[0.5, 0.6, 0.4]], "b": [[0.6, 0.7, 0.5]]})
    recs["P1"]["contrast"] = 0  # the only non-contrast case
    t = wilcoxon_table(add_strata(cases, recs), [("b", "a")])
    row = t[(t["factor"] == "contrast") & (t["stratum"] == "non-contrast")].iloc[0]
    assert row["note"] == NOT_TESTABLE and np.isnan(row["p"]) and np.isnan(row["p_holm"])
    # pairs with an absent arm are skipped; arms scored on other cases are refused
    assert wilcoxon_table(add_strata(cases, recs), [("c", "a")]).empty
    other = cases[~((cases["init"] == "b") & (cases["patient_id"] == "P2"))]
    raises_smart(wilcoxon_table, add_strata(other, recs), [("b", "a")], words=["same test cases"])


def test_all_zero_differences_are_p_one():
    cases, recs = _cases({"a": [[0.5, 0.6, 0.4]], "b": [[0.5, 0.6, 0.4]]})
    t = wilcoxon_table(add_strata(cases, recs), [("b", "a")])
    assert (t.loc[t["p"].notna(), "p"] == 1.0).all()


def test_stratum_table_ci_and_n():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.4, 0.6, (3, 8)).tolist()
    b = (np.asarray(a) + 0.2).tolist()
    cases, recs = _cases({"a": a, "b": b})
    t = stratum_table(add_strata(cases, recs), ["b", "a"], n_boot=200)
    ov = t[t["factor"] == "overall"]
    assert ov["init"].tolist() == ["b", "a"]  # arms in the given order
    assert ov.set_index("init").loc["b", "dice"] == pytest.approx(np.mean(b))
    assert (ov["n_cases"] == 8).all() and (ov["n_seeds"] == 3).all()
    assert (t["dice_lo"] <= t["dice"] + 1e-12).all() and (t["dice"] <= t["dice_hi"] + 1e-12).all()
    k = t[(t["factor"] == "kernel") & (t["stratum"] == "sharp")].set_index("init")
    assert k.loc["a", "n_cases"] == 4 and k.loc["a", "dice"] == pytest.approx(np.asarray(a)[:, 1::2].mean())
    table = arm_by_stratum(t, wilcoxon_table(add_strata(cases, recs), [("b", "a")]))
    row = table[(table["factor"] == "overall")].iloc[0]
    assert row["n cases"] == 8 and row["b"].startswith(f"{np.mean(b):.2f} [") and "p b vs a" in table


def test_efficiency_interpolates_by_hand():
    step, share = efficiency([40, 80, 120, 160], [0.1, 0.5, 0.6, 0.62])
    # 95 % of 0.62 = 0.589, reached between 80 (0.5) and 120 (0.6): 80 + 0.089 / 0.1 × 40
    assert step == pytest.approx(115.6) and share == pytest.approx(115.6 / 160)
    assert efficiency([40, 80], [0.7, 0.7]) == (40.0, 0.5)  # already there at the first point: bounded by it
    raises_smart(efficiency, [80, 40], [0.1, 0.2], words=["ascending"])
    raises_smart(efficiency, [40, 80], [0.1, 0.2], level=1.5, words=["level"])


def test_efficiency_table_on_seed_mean_curve():
    curves = pd.DataFrame([{"init": "a", "seed": s, "step": st, "val_dice": v}
                           for s, vals in enumerate(([0.0, 0.4, 0.8, 1.0], [0.2, 0.6, 1.0, 1.0]))
                           for st, v in zip((10, 20, 30, 40), vals)])
    e = efficiency_table(curves).iloc[0]
    # mean curve 0.1, 0.5, 0.9, 1.0: 0.95 is reached halfway between 30 and 40
    assert e["final_val_dice"] == pytest.approx(1.0) and e["step"] == pytest.approx(35.0)
    assert e["fewer"] == pytest.approx(1 - 35 / 40) and e["n_seeds"] == 2
