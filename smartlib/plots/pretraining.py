"""Figures for the pretraining chapters: loss curves, attention/mask/reconstruction panels, variant bars.

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` it drew on (save it with
:func:`smartlib.plots.save_figure`). Volumes are ``(X, Y, Z)`` as everywhere in ``smartlib``; slices
are axial, drawn with :func:`smartlib.plots.volumes.axial` (radiological convention).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from ..errors import SmartError
from .volumes import axial

__all__ = ["TERM_LABELS", "loss_curves", "inspection_panels", "variant_bars"]

TERM_LABELS = {
    "loss": "total",
    "amip": "AMIP (masked-voxel L1)",
    "ampd": "AMPD (masked patch distillation)",
    "aitd": "AITD ([CLS] distillation)",
    "gitd": "GITD (pooled-token distillation)",
}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    k = np.ones(window) / window
    pad = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(pad, k, mode="valid")


def loss_curves(runs: Any, terms: Sequence[str] = ("loss", "amip", "ampd", "aitd", "gitd"), log: bool = False,
                smooth: int = 1, size: float = 3.0) -> Figure:
    """One panel per loss term, loss against step; one line per run.

    Args:
        runs: a metrics DataFrame (:func:`smartlib.inspection.load_metrics`) or a mapping name → DataFrame.
        terms: columns to plot, one panel each.
        log: logarithmic y axis.
        smooth: moving-average window in logged steps (the raw curve is drawn faintly behind it).
        size: panel size in inches.
    """
    if not isinstance(runs, Mapping):
        runs = {"": runs}
    if not runs:
        raise SmartError("loss_curves: no runs to plot")
    terms = [t for t in terms if any(t in df for df in runs.values())]
    if not terms:
        raise SmartError("loss_curves: none of the requested loss terms is in the metrics")
    fig, axes = plt.subplots(1, len(terms), figsize=(size * len(terms), size * 0.85), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for name, df in runs.items():
            if term not in df:
                continue
            x, y = df["step"].to_numpy(), df[term].to_numpy(dtype=float)
            line, = ax.plot(x, _smooth(y, smooth), lw=1.5, label=name or None)
            if smooth > 1:
                ax.plot(x, y, lw=0.7, alpha=0.3, color=line.get_color())
        ax.set_title(TERM_LABELS.get(term, term), fontsize=9)
        ax.set_xlabel("step")
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def inspection_panels(res: Mapping[str, Any], z: int | None = None, size: float = 2.4) -> Figure:
    """Axial panels per inspected view: input, teacher attention, chosen mask, masked input, reconstruction.

    The last panel shows the student's prediction inside the masked units and the visible input elsewhere.

    Args:
        res: the dict of :func:`smartlib.inspection.inspect_run`.
        z: axial slice (default: the middle of the crop).
        size: panel size in inches.
    """
    need = ("view", "attention", "mask", "masked_input", "recon")
    missing = [k for k in need if k not in res]
    if missing:
        raise SmartError(f"inspection_panels: result lacks {', '.join(missing)} (expected inspect_run's output)")
    n = res["view"].shape[0]
    cols = ["view", "teacher attention", "mask (red = masked)", "student input", "reconstruction (masked units)"]
    fig, axes = plt.subplots(n, len(cols), figsize=(size * len(cols), size * n), squeeze=False)
    for i in range(n):
        view = axial(res["view"][i], z)
        att = axial(res["attention"][i], z)
        mask = axial(res["mask"][i], z)
        panels = [(view, "gray", (0, 1)), (view, "gray", (0, 1)), (view, "gray", (0, 1)),
                  (axial(res["masked_input"][i], z), "gray", (0, 1)),
                  (axial(np.where(res["mask"][i], res["recon"][i], res["view"][i]), z), "gray", (0, 1))]
        for j, (img, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
        if np.isfinite(att).all():
            axes[i][1].imshow(att, cmap="inferno", alpha=0.55, interpolation="nearest")
        else:
            axes[i][1].text(0.5, 0.5, "no [CLS] attention\n(semantic attention off)", ha="center", va="center",
                            transform=axes[i][1].transAxes, color="w", fontsize=8)
        overlay = np.zeros((*mask.shape, 4))
        overlay[mask] = (1.0, 0.1, 0.1, 0.45)
        axes[i][2].imshow(overlay, interpolation="nearest")
        if "amip" in res:
            axes[i][4].text(0.02, 0.02, f"L1 masked {res['amip'][i]:.3f}", transform=axes[i][4].transAxes,
                            color="yellow", fontsize=7)
    title = f"step {res.get('step', '?')}, mask mode {res.get('mask_mode', '?')}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def variant_bars(table, value: str, label: str = "variant", error: str | None = None, reference: float | None = None,
                 title: str | None = None, ylabel: str | None = None, size: tuple[float, float] = (6.0, 3.2)) -> Figure:
    """Bar chart of ``table[value]`` per ``table[label]`` (a DataFrame), with optional error bars and reference line.

    Rows whose value is NaN (e.g. attention focus of a variant without semantic attention) are
    drawn as an empty slot labelled "n/a".
    """
    if value not in table or label not in table:
        raise SmartError(f"variant_bars: table lacks column {value!r} or {label!r}")
    names = [str(v) for v in table[label]]
    vals = table[value].to_numpy(dtype=float)
    err = table[error].to_numpy(dtype=float) if error and error in table else None
    fig, ax = plt.subplots(figsize=size)
    x = np.arange(len(names))
    ok = np.isfinite(vals)
    ax.bar(x[ok], vals[ok], yerr=None if err is None else np.nan_to_num(err[ok]), capsize=3,
           color=plt.cm.tab10(x[ok] % 10))
    for xi in x[~ok]:
        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8, color="gray")
    if reference is not None:
        ax.axhline(reference, color="k", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel or value)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
