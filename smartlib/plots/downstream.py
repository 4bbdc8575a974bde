"""Figures of the downstream chapters; each function returns its matplotlib Figure."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = ["metric_vs_fraction", "umap_grid", "attention_overlays", "entropy_heatmap", "dice_vs_volume", "localisation_bars",
           "finetune_curves", "segmentation_curves"]


def metric_vs_fraction(summary: "pd.DataFrame", metric: str = "auc", title: str = "") -> Figure:
    """Mean metric (± SD over seeds, as error bars) vs label fraction, one line per init, one panel per mode.

    ``summary`` is :func:`smartlib.downstream.classify.summarise` output (or segmentation's, with
    ``metric="dice"``): columns ``init, fraction, <metric>_mean, <metric>_sd`` and optionally ``mode``.
    """
    modes = list(dict.fromkeys(summary["mode"])) if "mode" in summary else [None]
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 3.4), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        sub = summary if mode is None else summary[summary["mode"] == mode]
        for init, g in sub.groupby("init", sort=False):
            g = g.sort_values("fraction")
            ax.errorbar(g["fraction"] * 100, g[f"{metric}_mean"], yerr=g[f"{metric}_sd"], marker="o", capsize=3, label=init)
        ax.set_xscale("log")
        ticks = sorted(set((sub["fraction"] * 100).round(1)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())  # no "3×10¹" labels between the fractions
        ax.set_xlabel("training labels (%)")
        ax.set_title(mode or "")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def umap_grid(embeddings: Mapping[tuple[str, str], np.ndarray], labels: np.ndarray, class_names: Sequence[str],
              feature: str = "cls") -> Figure:
    """One UMAP scatter per init for ``feature``, coloured by organ class, with a shared legend."""
    from .volumes import label_colors

    keys = [k for k in embeddings if k[1] == feature]
    colors = label_colors(len(class_names))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        e = embeddings[key]
        for c, name in enumerate(class_names):
            sel = labels == c
            if sel.any():
                ax.scatter(e[sel, 0], e[sel, 1], s=10, color=colors[c], label=name)
        ax.set_title(f"{key[0]} ({feature})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(6, len(names)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def attention_overlays(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray], n_cases: int = 3) -> Figure:
    """Rows: cases; columns: the CT slice through the lesion centre with its contour, then one [CLS] attention
    overlay per init. images / masks (N, S, S, S); maps name → (N, S, S, S) voxel attention."""
    n = min(n_cases, len(images))
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(2.3 * cols, 2.3 * n), squeeze=False)
    for r in range(n):
        m = masks[r]
        z = int(np.argmax(m.sum(axis=(0, 1)))) if m.any() else images.shape[-1] // 2
        sl = np.rot90(images[r][:, :, z])
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(sl, cmap="gray", vmin=0, vmax=1)
            if m.any():
                ax.contour(np.rot90(m[:, :, z]), levels=[0.5], colors="red", linewidths=0.8)
            if c > 0:
                name = list(maps)[c - 1]
                a = np.rot90(maps[name][r][:, :, z])
                ax.imshow(a, cmap="inferno", alpha=0.55)
                if r == 0:
                    ax.set_title(name, fontsize=9)
            elif r == 0:
                ax.set_title("CT + lesion", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig


def entropy_heatmap(df: "pd.DataFrame", value: str = "entropy") -> Figure:
    """Stage × head heat map of ``value`` per init (columns ``init, stage, head, <value>``); one panel per init."""
    inits = list(dict.fromkeys(df["init"]))
    n_heads = int(df["head"].max()) + 1
    stages = sorted(df["stage"].unique())
    vmin, vmax = df[value].min(), df[value].max()
    fig, axes = plt.subplots(1, len(inits), figsize=(2.2 + 0.35 * n_heads * len(inits), 2.6), squeeze=False)
    for ax, init in zip(axes[0], inits):
        grid = np.full((len(stages), n_heads), np.nan)
        for _, r in df[df["init"] == init].iterrows():
            grid[stages.index(r["stage"]), int(r["head"])] = r[value]
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(stages)))
        ax.set_yticklabels([f"stage {s}" for s in stages], fontsize=7)
        ax.set_xticks(range(n_heads))
        ax.set_xticklabels(range(n_heads), fontsize=6)
        ax.set_xlabel("head", fontsize=8)
        ax.set_title(init, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"{value} (nats)" if value == "entropy" else value)
    return fig


def dice_vs_volume(cases: "pd.DataFrame") -> Figure:
    """Per-case Dice against reference tumour volume (ml, log axis), one colour per init, one panel per fraction."""
    fractions = sorted(cases["fraction"].unique(), reverse=True)
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.4), squeeze=False, sharey=True)
    for ax, f in zip(axes[0], fractions):
        for init, g in cases[cases["fraction"] == f].groupby("init", sort=False):
            ax.scatter(g["tumour_volume_ml"], g["dice"], s=18, label=init, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("tumour volume (ml)")
        ax.set_title(f"{f * 100:g} % of training labels", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


_BASELINE_STYLE = {"centre prior": dict(color="#e41a1c", ls="--"), "uniform": dict(color="k", ls=":")}


def localisation_bars(table: "pd.DataFrame") -> Figure:
    """Attention mass in the lesion and pointing-game hit rate per init, with the baselines as reference lines.

    ``table`` is :func:`smartlib.downstream.attention.attention_study`'s ``localisation``: columns ``init,
    mass_mean, hit_rate`` and optionally ``mass_lift`` (drawn instead of ``mass_mean``: mass / lesion share,
    the uniform map at 1), ``baseline`` (bool: that row is drawn as a horizontal line across the panel, not a
    bar) and ``n`` (cases, shown under each bar). Without baseline rows the ``lesion_share`` /
    ``chance_hit`` columns are marked on each bar instead.
    """
    is_base = table["baseline"].astype(bool) if "baseline" in table else np.zeros(len(table), bool)
    enc, base = table[~np.asarray(is_base)], table[np.asarray(is_base)]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
    x = np.arange(len(enc))
    names = [f"{r['init']}\nn={int(r['n'])}" if "n" in enc else r["init"] for _, r in enc.iterrows()]
    lift = "mass_lift" in table
    mass_col, mass_label = ("mass_lift", "attention mass in lesion (× uniform map)") if lift else ("mass_mean", "attention mass in lesion")
    for ax, col, label in zip(axes, (mass_col, "hit_rate"), (mass_label, "pointing-game hit rate")):
        ax.bar(x, enc[col], color="#377eb8", label="encoder [CLS] map")
        for _, r in base.iterrows():
            style = _BASELINE_STYLE.get(r["init"], dict(color="grey", ls="-."))
            ax.axhline(r[col], lw=1.3, label=f"{r['init']} (n={int(r['n'])})" if "n" in base else r["init"], **style)
        if base.empty and col == "mass_mean" and "lesion_share" in enc:  # (a lift needs no marker: uniform = 1)
            ax.plot(x, enc["lesion_share"], "k_", markersize=20, label="lesion share of the volume (uniform map)")
        if base.empty and col == "hit_rate" and "chance_hit" in enc:
            ax.plot(x, enc["chance_hit"], "k_", markersize=20, label="chance (random unit)")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _read_table(src: "str | os.PathLike | pd.DataFrame") -> "pd.DataFrame":
    """``src`` as a DataFrame: itself, or the CSV it names; empty when that file is missing or empty."""
    import pandas as pd

    if isinstance(src, pd.DataFrame):
        return src
    try:
        return pd.read_csv(src)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def _no_runs(fig: Figure, axes) -> Figure:
    """Every panel of ``axes`` says there is nothing to plot."""
    for ax in axes:
        ax.text(0.5, 0.5, "no fine-tuning runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    return fig


def finetune_curves(curves_csv: "str | os.PathLike") -> Figure:
    """Train loss, validation score and test AUC per fine-tuning epoch, one line per init × fraction (mean
    over seeds and folds), from a study's ``curves.csv``; a dot marks the epoch selected most often. The test
    AUC is drawn for reading only: selection used the validation score."""
    df = _read_table(curves_csv)
    panels = [("train_loss", "train loss"), ("val_score", "validation AUC"), ("test_auc", "test AUC")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    if df.empty:
        return _no_runs(fig, axes)
    for (init, frac), g in df.groupby(["init", "fraction"], sort=False):
        mean = g.groupby("epoch").mean(numeric_only=True)
        sel = g[g["selected"].astype(bool)]["epoch"]
        for ax, (col, name) in zip(axes, panels):
            if col not in mean:
                continue
            line, = ax.plot(mean.index, mean[col], marker=".", label=f"{init} ({frac:g})")
            if len(sel):
                e = int(sel.mode().iloc[0])
                ax.plot([e], [mean.loc[e, col]], "o", color=line.get_color(), ms=8, mfc="none")
            ax.set_title(name)
            ax.set_xlabel("epoch")
    n = df.groupby(["init", "fraction"]).apply(lambda g: len(g[["seed", "fold"]].drop_duplicates())).max()
    axes[0].legend(fontsize=7, title=f"init (fraction), n = {n} runs", title_fontsize=7)
    fig.tight_layout()
    return fig


def segmentation_curves(curves: "str | os.PathLike | pd.DataFrame", x: str = "step") -> Figure:
    """Train loss, validation Dice and test Dice per evaluation point of segmentation fine-tuning, one line per
    init × fraction (mean over seeds), from a study's ``curves.csv`` (or its DataFrame); a ring marks the step
    selected most often. ``x``: ``"step"`` or ``"epoch"``. The test Dice (of the ``n_curve_cases`` logged test
    volumes) is drawn for reading only: selection used the validation Dice."""
    df = _read_table(curves)
    panels = [("train_loss", "train loss (Dice + CE)"), ("val_dice", "validation Dice"), ("test_dice", "test Dice (curve cases)")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    if df.empty:
        return _no_runs(fig, axes)
    group = [c for c in ("init", "fraction") if c in df]
    for key, g in df.groupby(group, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mean = g.groupby("step").mean(numeric_only=True)
        sel = g[g["selected"].astype(bool)]["step"]
        label = f"{key[0]} ({key[1]:g})" if len(key) > 1 else str(key[0])
        for ax, (col, name) in zip(axes, panels):
            if col not in mean or mean[col].isna().all():
                continue
            line, = ax.plot(mean[x] if x != "step" else mean.index, mean[col], marker=".", label=label)
            if len(sel):
                s = int(sel.mode().iloc[0])
                ax.plot([mean.loc[s, x] if x != "step" else s], [mean.loc[s, col]], "o", color=line.get_color(), ms=8, mfc="none")
    for ax, (col, name) in zip(axes, panels):
        ax.set_title(name)
        ax.set_xlabel("fine-tuning " + x)
        if not ax.lines:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    n_seeds = int(df.groupby(group)["seed"].nunique().max())
    n_val = int(df["n_val"].max()) if "n_val" in df else 0
    n_test = int(df["n_curve_cases"].max()) if "n_curve_cases" in df else 0
    axes[0].legend(fontsize=7, title=f"n = {n_seeds} seeds; {n_val} val / {n_test} test volumes", title_fontsize=7)
    fig.tight_layout()
    return fig
