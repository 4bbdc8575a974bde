"""Figures of the label-token chapter (LT-ViT, arXiv 2311.07263); each function returns its matplotlib Figure."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

__all__ = ["findings_examples", "auroc_by_label", "localisation_by_method", "map_gallery", "training_curves"]

_HEAD_STYLE = {"label-tokens": dict(color="#e41a1c"), "cls": dict(color="#377eb8")}


def findings_examples(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, names: "Sequence[str]", n: int = 6) -> Figure:
    """The first ``n`` cases: each image (a volume: its coronal slice through the middle) with every finding's outline
    in its own colour and the case's labels as the title. images (N, *S), masks (N, K, *S) bool, labels (N, K)."""
    colors = plt.get_cmap("tab10")
    n = min(n, len(images))
    fig, axes = plt.subplots(1, max(n, 1), figsize=(2.3 * max(n, 1), 2.8), squeeze=False)
    for i in range(n):
        ax = axes[0][i]
        img = images[i]
        ax.imshow(_view(img, np.zeros_like(img, bool)), cmap="gray")
        for k in range(masks.shape[1]):
            if masks[i, k].any():
                ax.contour(_view(masks[i, k].astype(float), np.zeros_like(img, bool)), levels=[0.5], colors=[colors(k)],
                           linewidths=0.8)
        found = [names[k] for k in range(len(names)) if labels[i, k] == 1]
        ax.set_title("\n".join(found) or "no finding", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], color=colors(k), label=nm) for k, nm in enumerate(names)]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=len(names), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def auroc_by_label(auroc: "pd.DataFrame", title: str = "") -> Figure:
    """Test AUROC per label with its seeds × cases 95 % interval, one bar per head, one panel per init.

    ``auroc`` is :func:`smartlib.downstream.multilabel.auroc_table` output (``init, head, label, auc, auc_lo, auc_hi,
    n_seeds, n_cases``). A label without an AUROC (no positive test case) is marked "n/a"; the dashed line is chance.
    """
    inits = list(dict.fromkeys(auroc["init"]))
    heads = list(dict.fromkeys(auroc["head"]))
    labels = list(dict.fromkeys(auroc["label"]))
    fig, axes = plt.subplots(1, len(inits), figsize=(max(4.0, 0.9 * len(labels)) * len(inits), 3.4), squeeze=False, sharey=True)
    w = 0.8 / len(heads)
    for ax, init in zip(axes[0], inits):
        sub = auroc[auroc["init"] == init]
        for j, head in enumerate(heads):
            g = sub[sub["head"] == head].set_index("label").reindex(labels)
            x = np.arange(len(labels)) + (j - (len(heads) - 1) / 2) * w
            y = g["auc"].to_numpy(float)
            err = np.vstack([y - g["auc_lo"].to_numpy(float), g["auc_hi"].to_numpy(float) - y])
            n = g[["n_seeds", "n_cases"]].dropna()
            tag = f" (n = {int(n.iloc[0, 0])} × {int(n.iloc[0, 1])})" if len(n) else ""
            ax.bar(x, np.nan_to_num(y, nan=0.0), w, yerr=np.nan_to_num(err), capsize=2, label=f"{head}{tag}",
                   **_HEAD_STYLE.get(head, {}))
            for xi, yi in zip(x, y):
                if np.isnan(yi):
                    ax.text(xi, 0.02, "n/a", ha="center", fontsize=6, rotation=90)
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(init, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("test AUROC")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def localisation_by_method(table: "pd.DataFrame", label: str = "all") -> Figure:
    """Pointing-game hit rate and attention mass in the finding (× the uniform map) per method, one group per init.

    ``table`` is the study's ``localisation`` (``init, method, label, n_seeds, n_cases, hit_rate, mass_lift,
    chance_hit``); rows of ``label`` are drawn. The dotted line is the chance hit rate (uniform map: lift 1).
    """
    sub = table[table["label"] == label]
    inits = list(dict.fromkeys(sub["init"]))
    methods = list(dict.fromkeys(sub["method"]))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    w = 0.8 / max(len(methods), 1)
    for ax, col, name in zip(axes, ("hit_rate", "mass_lift"), ("pointing-game hit rate", "mass in finding (× uniform map)")):
        for j, m in enumerate(methods):
            g = sub[sub["method"] == m].set_index("init").reindex(inits)
            n = g[["n_seeds", "n_cases"]].dropna()
            lab = f"{m} (n = {int(n.iloc[0, 0])} × {int(n.iloc[0, 1])})" if len(n) else m
            ax.bar(np.arange(len(inits)) + (j - (len(methods) - 1) / 2) * w, g[col].to_numpy(float), w, label=lab, color=colors(j))
        ref = float(sub["chance_hit"].mean()) if col == "hit_rate" and len(sub) else 1.0
        ax.axhline(ref, color="k", ls=":", lw=1)
        ax.set_xticks(np.arange(len(inits)))
        ax.set_xticklabels(inits, fontsize=8)
        ax.set_title(name, fontsize=9)
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _view(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A 2-D image as is; a 3-D volume (X, Y, Z) as its coronal slice through the finding's centre, head up."""
    if a.ndim == 2:
        return a
    y = int(round(np.argwhere(mask).mean(axis=0)[1])) if mask.any() else a.shape[1] // 2
    return a[:, y, :].T[::-1]


def map_gallery(gallery: Mapping[str, Any], alpha: float = 0.55) -> Figure:
    """One row per test finding: the image with the finding's outline, then each method's map over it.

    ``gallery`` is the study's ``gallery`` (``labels``, ``images`` (n, *S), ``masks`` (n, *S), ``maps`` method →
    (n, *grid)); maps are upsampled to the image (:func:`smartlib.downstream.attention.upsample_attention`). Volumes
    are shown as the coronal slice through the finding.
    """
    from ..downstream.attention import upsample_attention

    methods = list(gallery.get("maps", {}))
    n = len(gallery.get("labels", []))
    fig, axes = plt.subplots(max(n, 1), 1 + len(methods), figsize=(2.2 * (1 + len(methods)), 2.3 * max(n, 1)), squeeze=False)
    if n == 0:
        axes[0][0].text(0.5, 0.5, "no positive test finding with a mask", ha="center", va="center")
        axes[0][0].set_axis_off()
        return fig
    for i in range(n):
        img, mask = gallery["images"][i], gallery["masks"][i]
        shown, outline = _view(img, mask), _view(mask.astype(float), mask)
        axes[i][0].imshow(shown, cmap="gray")
        axes[i][0].contour(outline, levels=[0.5], colors="lime", linewidths=0.8)
        axes[i][0].set_ylabel(gallery["labels"][i], fontsize=8)
        for j, m in enumerate(methods):
            up = upsample_attention(torch.as_tensor(gallery["maps"][m][i:i + 1]).float(), tuple(img.shape))[0].numpy()
            ax = axes[i][1 + j]
            ax.imshow(shown, cmap="gray")
            ax.imshow(_view(up, mask), cmap="inferno", alpha=alpha)
            ax.contour(outline, levels=[0.5], colors="lime", linewidths=0.6)
            if i == 0:
                ax.set_title(m, fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("image, finding", fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(curves: "pd.DataFrame") -> Figure:
    """Train loss and validation mean AUROC per epoch (mean over seeds), one line per init × head."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for (init, head), g in curves.groupby(["init", "head"], sort=False):
        mean = g.groupby("epoch").mean(numeric_only=True)
        for ax, col in zip(axes, ("train_loss", "val_score")):
            if col in mean:
                ax.plot(mean.index, mean[col], label=f"{init} / {head}", ls="-" if head == "label-tokens" else "--")
    axes[0].set_title("train loss", fontsize=9)
    axes[1].set_title("validation mean AUROC (selects the epoch)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("epoch")
    n = int(curves.groupby(["init", "head"])["seed"].nunique().max()) if len(curves) else 0
    axes[1].legend(fontsize=7, title=f"mean of {n} seeds", title_fontsize=7)
    fig.tight_layout()
    return fig
