"""The headline table: every downstream task × init as measured, beside the published numbers.

Reads only what the chapters wrote under ``runs_dir`` (never retrains):
``03_nodule_malignancy/summary.json``, ``04_treatment_response/summary.json``,
``05_segmentation/summary.json``, ``06_wild_vs_self/summary.json``, ``07_organ_clustering/metrics.json``,
``08_attention/attention.json``, ``09_label_tokens/{2d,3d}/summary.json``, ``10_supervised_masking/summary.json``.
A chapter that has not run contributes no rows.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..tasks import TASKS

__all__ = ["PUBLISHED", "CHAPTERS", "headline_table", "comparison_table"]

#: result key → the chapter (notebook stem) that writes it: each task's chapter from the registry, plus the attention chapter
CHAPTERS = {**{name: t.chapter for name, t in TASKS.items() if t.chapter}, "attention": "08_attention",
            "wild_vs_self": "06_wild_vs_self",
            "supervised_masking": "10_supervised_masking"}

#: (task, metric, init) → published value (text, as reported): SMART, arXiv 2310.01209 (v1: response AUC;
#: v2 / MIDL 2025, PMLR 301:679–694: response accuracy, organ clustering), SMIT baselines as reported there
PUBLISHED: dict[tuple[str, str, str], str] = {
    ("nodule malignancy", "AUC, fine-tune, 100 %", "smart"): "0.895",
    ("nodule malignancy", "AUC, fine-tune, 100 %", "smit"): "0.859",
    ("nodule malignancy", "AUC, linear probe, 100 %", "smart"): "0.642",
    ("nodule malignancy", "AUC, linear probe, 100 %", "smit"): "0.629",
    ("treatment response", "AUC, fine-tune, 100 %", "smart"): "0.916 (v1); accuracy 0.74 (v2)",
    ("segmentation", "Dice, 100 %", "smart"): "0.81",
    ("organ clustering", "intra-class distance ([CLS])", "smart"): "1.28 ± 0.57",
    ("organ clustering", "intra-class distance ([CLS])", "smit"): "1.53",
    ("organ clustering", "inter-class distance ([CLS])", "smart"): "5.93 ± 3.30 (v1: 5.94)",
    ("organ clustering", "inter-class distance ([CLS])", "smit"): "3.73",
    # LT-ViT (arXiv 2311.07263): ViT-B on ChestX-ray14 / CheXpert; no full table could be reached, so the claim only
    ("label tokens (radiographs)", "mean AUROC, label tokens", "mae"): "above the pure-ViT ([CLS]) baselines, for several inits",
    # MSMAE (arXiv 2305.05871), ViT-B/16 against a plain MAE
    ("supervised masking", "token dropping: training FLOPs saved", "msmae"): "74.08 %",
    ("supervised masking", "token dropping: fine-tuning inference time saved", "msmae"): "11.2 %",
    # wild- vs self-pretraining (MIDL 2024, PMLR 250:708–721): Swin Dice, public n = 139 / internal n = 196
    **{("wild vs self", "Dice, 100 %", arm): v for arm, v in (
        ("scratch", "0.54 / 0.68"), ("self", "0.63 / 0.71"), ("wild", "0.69 / 0.72"),
        *((f"wild-{t}", "0.64–0.66 (single pretexts)") for t in ("amip", "ampd", "aitd", "gitd")))},
}


def _fmt(v: float, lo: float | None = None, hi: float | None = None, sd: float | None = None) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{v:.3f}"
    if sd is not None and not math.isnan(sd):
        s += f" ± {sd:.2f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{lo:.2f}, {hi:.2f}]"
    return s


def _n(r: dict) -> str:
    """`` (n = 3 seeds × 46 cases, SE 0.02)`` where the record has them."""
    if r.get("n_cases") is None:
        return f" (n = {r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''})"
    se = next((r[k] for k in ("auc_se", "dice_se") if r.get(k) is not None), None)
    return f" (n = {r['n_seeds']} × {r['n_cases']} cases" + (f", SE {se:.3f})" if se is not None else ")")


def comparison_table(runs_dir: str | os.PathLike) -> "pd.DataFrame":
    """Every paired comparison the chapters wrote (each init vs scratch, SMART vs SMIT), one row each.

    Columns: ``task, setting, arm, reference, test, n, diff`` (arm − reference with its 95 % CI),
    ``p_holm`` (Holm-adjusted within the setting) and ``verdict`` ("no detectable difference" when the
    CI of the difference covers zero).
    """
    import pandas as pd

    from ..io import read_json

    rows = []
    for key, task in (("nodules", "nodule malignancy"), ("response", "treatment response"), ("segmentation", "segmentation"),
                      ("wild_vs_self", "wild vs self"), ("supervised_masking", "supervised masking")):
        p = Path(runs_dir) / CHAPTERS[key] / "summary.json"
        if not p.is_file():
            continue
        for c in read_json(p).get("comparisons", []):
            mode = {"finetune": "fine-tune", "probe": "linear probe"}.get(c.get("mode"), "")
            setting = ", ".join(x for x in (f"{c['metric'].replace('auc', 'AUC').replace('dice', 'Dice')}", mode,
                                            f"{c['fraction'] * 100:g} % labels") if x)
            rows.append({"task": task, "setting": setting, "arm": c["arm"], "reference": c["reference"], "test": c["test"],
                         "n": f"{c['n_seeds']} × {c['n_cases']}",
                         "diff": f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]",
                         "p_holm": c["p_holm"], "verdict": c["verdict"]})
    for part, task in LABEL_TOKEN_PARTS:  # label tokens vs [CLS], per init and label
        p = Path(runs_dir) / CHAPTERS["findings"] / part / "summary.json"
        for c in (read_json(p).get("head_comparisons", []) if p.is_file() else []):
            rows.append({"task": task, "setting": f"AUC, {c['label']}, init {c['init']}", "arm": c["arm"],
                         "reference": c["reference"], "test": c["test"], "n": f"{c['n_seeds']} × {c['n_cases']}",
                         "diff": f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}]", "p_holm": c["p_holm"],
                         "verdict": c["verdict"]})
    return pd.DataFrame(rows, columns=["task", "setting", "arm", "reference", "test", "n", "diff", "p_holm", "verdict"])


#: the label-token chapter's two parts (sub-folders of its results) and their task names in the tables
LABEL_TOKEN_PARTS = (("2d", "label tokens (radiographs)"), ("3d", "label tokens (CT, Swin stages)"))


def _label_token_rows(root: Path, add) -> None:
    """Mean AUROC of label tokens and [CLS] per init, and the pointing game of their maps, from ``09_label_tokens``."""
    from ..io import read_json

    for part, task in LABEL_TOKEN_PARTS:
        p = root / CHAPTERS["findings"] / part / "summary.json"
        if not p.is_file():
            continue
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["mean_auroc"]:
            head = {"label-tokens": "label tokens", "cls": "[CLS]"}.get(r["head"], r["head"])
            add(task, f"mean AUROC, {head}", r["init"], _fmt(r["mean_auroc"], r["lo"], r["hi"]) + _n(r), data)
        for r in js["localisation"]:
            if r["label"] == "all" and r["method"] in ("label tokens", "Grad-CAM"):
                add(task, f"pointing game / mass × uniform, {r['method']} maps", r["init"],
                    f"{r['hit_rate']:.2f} / {r['mass_lift']:.2f} (n = {r['n_seeds']} × {r['n_cases']} findings)", data)


def headline_table(runs_dir: str | os.PathLike, limited_fraction: float = 0.25) -> "pd.DataFrame":
    """One row per (task, metric, init): ``measured`` (mean over seeds, bootstrap 95 % CI of the mean run),
    ``published`` (or empty), ``data`` (``phantom`` or the real source)."""
    import pandas as pd

    from ..io import read_json

    root = Path(runs_dir)
    rows = []

    def add(task, metric, init, measured, data):
        rows.append({"task": task, "metric": metric, "init": init, "measured": measured,
                     "published": PUBLISHED.get((task, metric, init), ""), "data": data})

    for key, task in (("nodules", "nodule malignancy"), ("response", "treatment response")):
        p = root / CHAPTERS[key] / "summary.json"
        if not p.is_file():
            continue
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["summary"]:
            mode = "fine-tune" if r["mode"] == "finetune" else "linear probe"
            if r["fraction"] not in (1.0, limited_fraction):
                continue
            metric = f"AUC, {mode}, {r['fraction'] * 100:g} %"
            add(task, metric, r["init"], _fmt(r["auc_mean"], r["auc_lo"], r["auc_hi"], r["auc_sd"] if r["n_seeds"] > 1 else None)
                + _n(r), data)
    p = root / CHAPTERS["segmentation"] / "summary.json"
    if p.is_file():
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["summary"]:
            add("segmentation", f"Dice, {r['fraction'] * 100:g} %", r["init"],
                _fmt(r["dice_mean"], r["dice_lo"], r["dice_hi"], r["dice_sd"] if r["n_seeds"] > 1 else None) + _n(r), data)
    p = root / CHAPTERS["wild_vs_self"] / "summary.json"
    if p.is_file():
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["overall"]:
            add("wild vs self", "Dice, 100 %", r["init"], _fmt(r["dice"], r["dice_lo"], r["dice_hi"]) + _n(r), data)
    p = root / CHAPTERS["supervised_masking"] / "summary.json"
    if p.is_file():  # MAE vs MSMAE vs SMART's masking rules on nodules; token dropping's cost
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["classification"]:
            if r["mode"] == "finetune":
                add("supervised masking", "nodule AUC, fine-tune, 100 %", r["init"],
                    _fmt(r["auc_mean"], r["auc_lo"], r["auc_hi"], r["auc_sd"] if r["n_seeds"] > 1 else None) + _n(r), data)
        for r in js["reductions"][:3]:
            what = {"training FLOPs per step (forward + backward)": "token dropping: training FLOPs saved",
                    "training step wall time": "token dropping: training step time saved",
                    "inference wall time per sample": "token dropping: fine-tuning inference time saved"}[r["what"]]
            add("supervised masking", what, "msmae", f"{100 * r['reduction']:.1f} % ({r['setting']})", data)
        for r in js["reductions"][3:]:
            add("supervised masking", f"token dropping: {r['what']} saved, {r['setting']}", "msmae",
                f"{100 * r['reduction']:.1f} %", "arithmetic")
    _label_token_rows(root, add)
    p = root / CHAPTERS["organs"] / "metrics.json"
    if p.is_file():
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        for r in js["metrics"]:
            f = "[CLS]" if r["feature"] == "cls" else "avg-pool"
            add("organ clustering", f"intra-class distance ({f})", r["init"], f"{r['intra_mean']:.2f} ± {r['intra_sd']:.2f}", data)
            add("organ clustering", f"inter-class distance ({f})", r["init"], f"{r['inter_mean']:.2f} ± {r['inter_sd']:.2f}", data)
            add("organ clustering", f"silhouette / k-means NMI ({f})", r["init"], f"{r['silhouette']:.3f} / {r['kmeans_nmi']:.3f}", data)
    p = root / CHAPTERS["attention"] / "attention.json"
    if p.is_file():
        js = read_json(p)
        data = "phantom" if js.get("phantom") else js.get("source", "")
        ent = pd.DataFrame(js["entropy"])
        for r in js["localisation"]:
            proxy = " (mean-token proxy)" if r["proxy"] else ""
            add("attention", "mass in lesion / pointing-game hit", r["init"],
                f"{r['mass_mean']:.3f} / {r['hit_rate']:.2f}{proxy}", data)
            e = ent[(ent["init"] == r["init"]) & (ent["stage"] <= 3)]
            if len(e):
                add("attention", "mean head entropy of attention distances, stages 1–3 (nats)", r["init"],
                    f"{e['entropy'].mean():.3f}", data)
    return pd.DataFrame(rows, columns=["task", "metric", "init", "measured", "published", "data"])
