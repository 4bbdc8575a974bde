"""Figures of the wild- vs self-pretraining chapter: Dice per acquisition stratum, fine-tuning efficiency, feature reuse."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["stratum_boxes", "efficiency_curves", "cka_heatmaps", "reuse_profile"]


def _arms(df: "pd.DataFrame", arms: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(df["init"]))
    return [a for a in (arms or present) if a in present]


def stratum_boxes(cases: "pd.DataFrame", arms: Sequence[str] | None = None,
                  factors: Sequence[str] = ("contrast", "kernel", "slice", "tumour volume")) -> Figure:
    """Box plots of per-case Dice (mean over seeds) per stratum, one box per arm, one panel per factor.

    ``cases``: one row per arm (``init``), seed and test case with ``patient_id``, ``dice`` and the stratum
    columns (:func:`smartlib.downstream.robustness.add_strata`). Each stratum's label carries its n (cases).
    """
    arms = _arms(cases, arms)
    factors = [f for f in factors if f in cases]
    per_case = cases.groupby(["init", "patient_id", *factors], sort=False, dropna=False)["dice"].mean().reset_index()
    fig, axes = plt.subplots(1, max(1, len(factors)), figsize=(3.6 * max(1, len(factors)), 3.6), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(arms))
    for ax, factor in zip(axes[0], factors):
        strata = sorted(set(per_case[factor].astype(str)))
        for k, arm in enumerate(arms):
            sub = per_case[per_case["init"] == arm]
            data = [sub.loc[sub[factor].astype(str) == s, "dice"].to_numpy(float) for s in strata]
            pos = np.arange(len(strata)) - 0.4 + width * (k + 0.5)
            bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True,
                            flierprops={"markersize": 2}, medianprops={"color": "black"})
            for patch in bp["boxes"]:
                patch.set_facecolor(colors[k % len(colors)])
                patch.set_alpha(0.75)
        n = per_case.drop_duplicates("patient_id")[factor].astype(str).value_counts()
        ax.set_xticks(range(len(strata)))
        ax.set_xticklabels([f"{s}\nn={n.get(s, 0)}" for s in strata], fontsize=7)
        ax.set_title(factor, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("Dice (per case, mean over seeds)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[k % len(colors)], alpha=0.75) for k in range(len(arms))]
    n_seeds = int(cases.groupby("init")["seed"].nunique().max()) if len(cases) else 0
    fig.legend(handles, arms, loc="lower center", ncol=min(len(arms), 7), fontsize=7, frameon=False,
               title=f"n = {n_seeds} seeds per arm", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def efficiency_curves(curves: "pd.DataFrame", efficiency: "pd.DataFrame | None" = None, arms: Sequence[str] | None = None,
                      level: float = 0.95) -> Figure:
    """Validation Dice vs fine-tuning epoch per arm (mean over seeds), and the same relative to its final value
    with the ``level`` line; a marker at each arm's crossing (``efficiency``:
    :func:`smartlib.downstream.robustness.efficiency_table`)."""
    arms = _arms(curves, arms)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.5))
    for arm in arms:
        g = curves[curves["init"] == arm]
        mean = g.groupby("step")[["epoch", "val_dice"]].mean()
        line, = axes[0].plot(mean["epoch"], mean["val_dice"], marker=".", label=arm)
        final = mean["val_dice"].iloc[-1]
        if final > 0:
            axes[1].plot(mean["epoch"], mean["val_dice"] / final, marker=".", color=line.get_color())
        if efficiency is not None and arm in set(efficiency["init"]):
            row = efficiency[efficiency["init"] == arm].iloc[0]
            if np.isfinite(row["step"]):
                ep = row["step"] * (mean["epoch"].iloc[-1] / mean.index[-1])
                axes[1].plot([ep], [level], "o", color=line.get_color(), ms=7, mfc="none")
    axes[1].axhline(level, color="grey", ls="--", lw=1)
    axes[0].set_ylabel("validation Dice")
    axes[1].set_ylabel("validation Dice / final")
    for ax in axes:
        ax.set_xlabel("fine-tuning epoch")
        ax.grid(alpha=0.3)
    n_seeds = int(curves.groupby("init")["seed"].nunique().max()) if len(curves) else 0
    axes[0].legend(fontsize=7, title=f"n = {n_seeds} seeds", title_fontsize=7)
    fig.tight_layout()
    return fig


def cka_heatmaps(cka: "pd.DataFrame", arms: Sequence[str] | None = None) -> Figure:
    """Per arm (rows): CKA of pretrained × fine-tuned blocks, and the self-similarity of each network
    (columns), as heat maps on a shared 0–1 scale. ``cka``: :func:`smartlib.downstream.feature_reuse.reuse_table`."""
    arms = _arms(cka, arms)
    kinds = [("cross", "pretrained (rows) × fine-tuned"), ("self_pretrained", "pretrained × pretrained"),
             ("self_finetuned", "fine-tuned × fine-tuned")]
    fig, axes = plt.subplots(len(arms), 3, figsize=(10, 3.0 * len(arms)), squeeze=False)
    im = None
    for r, arm in enumerate(arms):
        g = cka[cka["init"] == arm]
        layers = list(dict.fromkeys(g["layer_a"]))
        for c, (kind, title) in enumerate(kinds):
            sub = g[g["kind"] == kind].pivot(index="layer_a", columns="layer_b", values="cka").reindex(index=layers, columns=layers)
            ax = axes[r][c]
            im = ax.imshow(sub.to_numpy(float), vmin=0, vmax=1, cmap="magma", origin="lower")
            ticks = range(len(layers))
            short = [name.replace("stage", "s").replace(".block", "b").replace("block", "b") for name in layers]
            ax.set_xticks(ticks)
            ax.set_xticklabels(short, rotation=90, fontsize=6)
            ax.set_yticks(ticks)
            ax.set_yticklabels(short, fontsize=6)
            ax.set_title(f"{arm}: {title}", fontsize=8)
    if im is not None:
        n = int(cka["n"].max())
        fig.colorbar(im, ax=axes, shrink=0.6, label=f"linear CKA (unbiased HSIC), n = {n} patches")
    return fig


def reuse_profile(cka: "pd.DataFrame", arms: Sequence[str] | None = None) -> Figure:
    """Per-block feature reuse: CKA of each block with itself before and after fine-tuning (the diagonal of the
    pretrained × fine-tuned matrix), one line per arm."""
    arms = _arms(cka, arms)
    fig, ax = plt.subplots(figsize=(6.5, 3.3))
    layers: list[str] = []
    for arm in arms:
        g = cka[(cka["init"] == arm) & (cka["kind"] == "cross") & (cka["layer_a"] == cka["layer_b"])]
        layers = list(g["layer_a"])
        ax.plot(range(len(g)), g["cka"], marker="o", label=arm)
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("CKA(pretrained, fine-tuned)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    n = int(cka["n"].max()) if len(cka) else 0
    ax.legend(fontsize=7, title=f"n = {n} test patches", title_fontsize=7)
    fig.tight_layout()
    return fig
