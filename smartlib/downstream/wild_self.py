"""Wild- vs self-pretraining for lung-tumour segmentation (MIDL 2024, PMLR 250:708–721; arXiv 2405.08657).

Does pretraining on a large, diverse, uncurated pool ("wild") make segmentation more robust to CT
acquisition than pretraining on the task's own training images ("self")? :func:`wild_vs_self_study`
runs the arms of :data:`smartlib.pools.ARMS` through one skeleton:

1. every arm's encoder is resolved before any fine-tuning — pretrained once per ``runs_dir``
   (:func:`smartlib.pools.pretrain_arm`) or given (``encoders``: an export whose kind must match the
   arm's encoder: a ViT checkpoint given to a Swin arm is refused);
2. arms the segmentation chapter already ran under the same protocol (``scratch``, and ``wild`` = its
   ``smit`` init) on the same data, seeds and test cases are **read** from its folder
   (:func:`reusable_runs`), not retrained;
3. the other arms are fine-tuned by :func:`smartlib.downstream.segment.finetune_segmentation`
   (validation-selected checkpoint, curves);
4. tables: Dice / HD95 per acquisition stratum with seeds × cases CIs, paired Wilcoxon tests per stratum
   (Holm), paired bootstrap comparisons (Holm), fine-tuning efficiency, feature reuse (CKA).

Everything is written atomically at the end (nothing half-written on a failure).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import SmartError
from .results import PUBLISHED as RESULTS_PUBLISHED

__all__ = ["PUBLISHED", "SEGMENTATION_CHAPTER", "study_pairs", "reusable_runs", "wild_vs_self_study"]

#: arm → Swin Dice published for lung-tumour segmentation (public n = 139 / internal n = 196), PMLR 250:708–721
#: (the headline table's entries, :data:`smartlib.downstream.results.PUBLISHED`)
PUBLISHED: dict[str, str] = {arm: v for (task, _, arm), v in RESULTS_PUBLISHED.items() if task == "wild vs self"}
#: the chapter whose per-case results the study reuses, and its init names → arm names
SEGMENTATION_CHAPTER = "05_segmentation"
_REUSE = {"scratch": "scratch", "smit": "wild"}


def study_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, reference) pairs compared: each pretrained arm against its encoder's scratch arm, wild against
    self, wild+self against wild, each single / global pretext against the full (SMIT) wild arm, and the
    ViT's wild against its self; only pairs whose two arms are in ``arms``."""
    from ..pools import arm

    pairs = []
    for name in arms:
        a = arm(name)
        if a.pool is not None:
            pairs.append((name, "scratch" if a.encoder == "swin" else "vit-scratch"))
    for pre in ("", "vit-"):
        pairs += [(f"{pre}wild", f"{pre}self"), (f"{pre}wild+self", f"{pre}wild")]
    pairs += [(name, "wild") for name in arms if name.startswith("wild-")]
    return [(a, r) for a, r in dict.fromkeys(pairs) if a in arms and r in arms]


def reusable_runs(folder: str | os.PathLike, *, preset: str, source: str, phantom: bool, data_seed: int, roi: int, spacing: float,
                  protocol: Mapping[str, Any], seeds: Sequence[int], test_patients: Sequence[str],
                  log: Callable[[str], None] = print) -> dict[str, dict]:
    """The arms whose runs a segmentation study in ``folder`` already holds under exactly these conditions.

    Returns arm → ``{"cases": rows, "curves": rows, "model": path or None}`` for ``scratch`` and ``wild`` (its
    ``smit`` init) at fraction 1.0 and every seed in ``seeds`` (``model``: the saved fine-tuned model of the first
    seed, where the study saved one); an empty dict (with a log line saying why)
    when the folder is missing or differs in preset, data, grid, protocol, seeds or test cases.
    """
    import pandas as pd

    from ..io import read_json

    folder = Path(folder)
    if not (folder / "summary.json").is_file():
        return {}
    js = read_json(folder / "summary.json")
    want = {"preset": preset, "data_seed": data_seed, "roi": roi, "spacing_mm": spacing, "protocol": dict(protocol),
            "test_patients": list(test_patients)}
    diff = [k for k, v in want.items() if js.get(k) != v]
    if not (phantom and js.get("phantom")) and os.path.realpath(str(js.get("source"))) != os.path.realpath(source):
        diff.append("source")  # the built-in set is identified by preset, seed and test patients; real data by its path
    if diff:
        log(f"{folder}: not reused (differs in {', '.join(diff)})")
        return {}
    cases, curves = pd.read_csv(folder / "cases.csv"), pd.read_csv(folder / "curves.csv")
    out = {}
    for init, name in _REUSE.items():
        if js.get("inits", {}).get(init) != init:
            continue
        sel = lambda df: df[(df["init"] == init) & (df["fraction"] == 1.0) & df["seed"].isin(list(seeds))]  # noqa: E731
        c, k = sel(cases), sel(curves)
        if sorted(set(c["seed"])) != sorted(int(s) for s in seeds):
            continue
        saved = js.get("models", {}).get(init) or {}
        model = folder / str(saved.get("path", ""))
        usable = saved.get("path") and saved.get("seed") == int(seeds[0]) and saved.get("fraction") == 1.0 and model.is_file()
        out[name] = {"cases": c.assign(init=name).to_dict("records"), "curves": k.assign(init=name).to_dict("records"),
                     "model": model if usable else None}
    if out:
        log(f"reusing {', '.join(out)} from {folder} (same data, protocol, seeds and test cases)")
    return out


def _check_arms(arms: Sequence[str], encoders: Mapping[str, str]) -> list[str]:
    from ..pools import arm

    arms = list(dict.fromkeys(str(a) for a in arms))
    if not arms:
        raise SmartError("arms: give at least one arm")
    for a in [*arms, *encoders]:
        arm(a)
    extra = sorted(set(encoders) - set(arms))
    if extra:
        raise SmartError(f"encoders: {extra} are not arms of this study ({', '.join(arms)})")
    for a, path in encoders.items():
        if arm(a).pool is None:
            raise SmartError(f"encoders: arm {a!r} is trained from scratch and takes no encoder ({path})")
    return arms


def wild_vs_self_study(arms: Sequence[str], *, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                       out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                       wild_data: str = "phantom", seeds: Sequence[int] = (0,), steps: int = 30, lr: float = 1e-3,
                       eval_every: int = 0, n_val: int | None = None, curve_cases: int | None = None,
                       overlap: float = 0.25, n_boot: int = 1000, data_seed: int = 0,
                       encoders: Mapping[str, str] | None = None, reuse: bool = True, cka: bool = True,
                       dataset=None, log: Callable[[str], None] = print, progress: bool = False) -> dict[str, Any]:
    """Pretrain (or read) every arm's encoder, fine-tune each arm per seed, and tabulate robustness.

    Args:
        arms: names of :data:`smartlib.pools.ARMS` (``scratch``, ``wild``, ``self``, ``wild+self``, ``vit-*``,
            ``wild-<pretext>``).
        data: segmentation data (None: the built-in phantoms); its training split is the self pool.
        wild_data: the wild pool (``"phantom"``: the built-in pretraining set, or a folder / manifest of CTs).
        seeds, steps, lr, eval_every, n_val, curve_cases, overlap: the fine-tuning protocol
            (:class:`smartlib.downstream.segment.SegProtocol`), at label fraction 1.0.
        encoders: arm → exported encoder used instead of pretraining that arm (that arm only: a ``wild+self``
            arm still continues its own wild run, since continued pretraining needs a run's student and teacher).
        reuse: read ``scratch`` / ``wild`` from ``runs_dir/05_segmentation`` when it ran the same protocol.
        cka: compute feature reuse (needs the fine-tuned model of the first seed).

    Returns a dict of DataFrames (``cases, curves, runs, strata, wilcoxon, comparisons, efficiency, pools,
    cka``) and ``summary``; with ``out`` the same as CSV files and ``summary.json``.
    """
    import pandas as pd

    from ..pools import ARMS, VIT_ARCH, pool_records, pool_table, pretrain_arm, self_manifest
    from .features import resolve_init
    from .feature_reuse import cka_patches, reuse_matrices, reuse_table
    from .robustness import add_strata, efficiency_table, stratum_table, wilcoxon_table
    from .segment import SegProtocol, build_segmenter, finetune_segmentation, load_segmentation, load_segmenter, segmenter_arch
    from .study import Cell, comparisons, write_outputs

    encoders = {str(k): str(v) for k, v in (encoders or {}).items()}
    arms = _check_arms(arms, encoders)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SmartError("seeds: give at least one seed")
    protocol = SegProtocol(steps=steps, lr=lr, eval_every=eval_every, n_val=n_val, curve_cases=curve_cases, overlap=overlap)
    # ---- every check before any compute: encoder files and their kind, the data, the pools
    for a, path in encoders.items():
        resolve_init(path, preset, runs_dir, log=log)
        segmenter_arch(path, preset, {"arch": ARMS[a].encoder})
    ds = dataset or load_segmentation(data, preset, runs_dir, data_seed=data_seed)
    te = ds.split["test"]
    test_patients = [str(ds.records[i]["patient_id"]) for i in te]
    self_records = [ds.records[i] for i in ds.split["train"]]
    pools_used = sorted({ARMS[a].pool for a in arms if ARMS[a].pool and a not in encoders})
    self_data = self_manifest(self_records, runs_dir) if {"self", "wild+self"} & set(pools_used) else None
    pool_recs = {p: pool_records(p, preset, runs_dir, self_records, wild_data) for p in pools_used if p != "wild+self"}

    # ---- encoders, then reused runs
    paths = {a: encoders.get(a) or pretrain_arm(a, preset, runs_dir, ds.roi, self_data, wild_data, progress, log) for a in arms}
    arch_of = {a: ({"arch": "vit", "img_size": ds.roi, **VIT_ARCH[preset]} if ARMS[a].encoder == "vit" and paths[a] == "scratch"
                   else {"arch": ARMS[a].encoder}) for a in arms}
    reused = {}
    if reuse:
        found = reusable_runs(Path(runs_dir) / SEGMENTATION_CHAPTER, preset=preset, source=ds.source, phantom=ds.phantom,
                              data_seed=data_seed,
                              roi=ds.roi, spacing=ds.spacing, protocol=protocol.to_dict(), seeds=seeds,
                              test_patients=test_patients, log=log)
        # the chapter's wild arm is the smit variant, pretrained on the built-in pool
        reused = {a: r for a, r in found.items() if a in arms and a not in encoders and (a != "wild" or wild_data == "phantom")}

    # ---- fine-tuning of the other arms; CKA on the first seed's model
    cases, curves, runs, matrices = [], [], [], {}
    patches = cka_patches([ds.images[i] for i in te], [ds.masks[i] for i in te], ds.roi, seed=0) if cka else None

    def reuse_cka(a: str, finetuned) -> None:
        if patches is not None and finetuned is not None:
            pre = build_segmenter(paths[a], preset, ds.roi, seed=seeds[0], arch=arch_of[a])
            matrices[a] = reuse_matrices(pre, finetuned, patches)

    for a in arms:
        if a in reused:
            cases += reused[a]["cases"]
            curves += reused[a]["curves"]
            m = reused[a]["model"]
            reuse_cka(a, load_segmenter(m)[0] if m is not None else None)
            continue
        for s in seeds:
            r = finetune_segmentation(ds, Cell(a, paths[a], 1.0, s), preset, protocol, arch_of[a], n_boot=n_boot,
                                      progress=progress, log=log)
            cases += r.cases
            curves += r.curves
            runs.append(r.row)
            if s == seeds[0]:
                reuse_cka(a, r.model)

    # ---- tables
    records = {str(r["patient_id"]): r for r in (ds.records[i] for i in te)}
    cases_df = add_strata(pd.DataFrame(cases), records)
    curves_df = pd.DataFrame(curves)
    pairs = study_pairs(arms)
    strata = stratum_table(cases_df, arms, n_boot=n_boot)
    wil = wilcoxon_table(cases_df, pairs)
    comps = comparisons(cases_df.assign(fraction=1.0), ["fraction"], "dice", n_boot=n_boot, pairs=pairs)
    eff = efficiency_table(curves_df)
    pools_df = pool_table(pool_recs) if pool_recs else pd.DataFrame()
    cka_df = reuse_table(matrices) if matrices else pd.DataFrame()
    overall = strata[strata["factor"] == "overall"]
    summary = {"task": "segmentation", "study": "wild vs self", "source": ds.source, "phantom": ds.phantom, "preset": preset,
               "wild_data": wild_data, "spacing_mm": ds.spacing, "roi": ds.roi, "protocol": protocol.to_dict(),
               "seeds": seeds, "n_train": int(len(ds.split["train"])), "n_test": int(len(te)),
               "arms": {a: {"encoder": ARMS[a].encoder, "pool": ARMS[a].pool, "pretext": ARMS[a].pretext,
                            "init": paths[a], "source": "reused from " + SEGMENTATION_CHAPTER if a in reused else "trained here",
                            "published_dice": PUBLISHED.get(a, "")} for a in arms},
               "overall": overall.to_dict("records"), "efficiency": eff.to_dict("records"),
               "comparisons": comps.to_dict("records"),
               "reuse_diagonal": {a: dict(zip(m["layers"], np.diag(m["cross"]).tolist())) for a, m in matrices.items()}}
    tables = {"cases": cases_df, "curves": curves_df, "runs": pd.DataFrame(runs), "strata": strata, "wilcoxon": wil,
              "comparisons": comps, "efficiency": eff, "pools": pools_df, "cka": cka_df}
    write_outputs(out, csv={f"{k}.csv": v.to_dict("records") for k, v in tables.items()}, json={"summary.json": summary})
    return {**tables, "summary": summary}
