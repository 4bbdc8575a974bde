"""Figures of the supervised-masking chapter: masks over lesions, lesion masking rates, token-dropping cost."""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["mask_overlays", "lesion_rate_bars"]

#: patch states (0 visible, 1 masked, 2 thrown): visible stays clear
_STATES = ListedColormap([(0, 0, 0, 0), (1.0, 0.55, 0.0, 0.55), (0.25, 0.45, 0.95, 0.55)])


def mask_overlays(images: np.ndarray, lesions: np.ndarray, panels: Mapping[str, np.ndarray], n_cases: int = 3) -> Figure:
    """Rows: cases; columns: the CT slice through the lesion (red contour), then one overlay per panel.

    images / lesions (N, S, S, S); panels name → (N, S, S, S): a name containing "attention" is drawn as a
    heat map, the others as patch states (orange masked, blue thrown, clear visible).
    """
    n = min(n_cases, len(images))
    cols = 1 + len(panels)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n + 0.4), squeeze=False)
    for r in range(n):
        m = lesions[r]
        z = int(np.argmax(m.sum(axis=(0, 1)))) if m.any() else images.shape[-1] // 2
        for c in range(cols):
            ax = axes[r][c]
            ax.imshow(np.rot90(images[r][:, :, z]), cmap="gray", vmin=0, vmax=1)
            if c:
                name = list(panels)[c - 1]
                sl = np.rot90(panels[name][r][:, :, z])
                if "attention" in name:
                    ax.imshow(sl, cmap="inferno", alpha=0.55)
                else:
                    ax.imshow(sl.astype(int), cmap=_STATES, vmin=0, vmax=2, interpolation="nearest")
                if r == 0:
                    ax.set_title(name, fontsize=8)
            elif r == 0:
                ax.set_title("CT + lesion", fontsize=8)
            if m.any():
                ax.contour(np.rot90(m[:, :, z]), levels=[0.5], colors="red", linewidths=0.8)
            ax.axis("off")
    fig.legend(handles=[Patch(color=_STATES(1), label="masked"), Patch(color=_STATES(2), label="thrown away"),
                        Patch(facecolor="white", edgecolor="gray", label="visible")], loc="lower center", ncol=3,
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def lesion_rate_bars(table: "pd.DataFrame") -> Figure:
    """Share of lesion patches per state and rule with 95 % CIs (rows of
    :func:`smartlib.downstream.msmae.lesion_masking`), the nominal share of all patches as a tick."""
    rules = list(dict.fromkeys(table["rule"]))
    states = ["masked", "thrown", "visible"]
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    w = 0.8 / len(rules)
    for i, rule in enumerate(rules):
        t = table[table["rule"] == rule].set_index("state").reindex(states)
        x = np.arange(len(states)) + (i - (len(rules) - 1) / 2) * w
        ax.bar(x, t["share"], w, yerr=[t["share"] - t["lo"], t["hi"] - t["share"]], capsize=3, label=rule)
        ax.scatter(x, t["nominal"], marker="_", s=300, color="black", zorder=3, label="share of all patches" if i == 0 else None)
    ax.set_xticks(np.arange(len(states)), states)
    ax.set_ylabel("share of lesion patches")
    ax.set_ylim(0, 1)
    n = int(table["n_cases"].iloc[0])
    ax.set_title(f"Where lesion patches go (n = {n} test cases)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
