"""Figures for the book: CT slices with label overlays, organ legends, image galleries.

Volumes are indexed ``(X, Y, Z)`` in RAS+ as everywhere in ``smartlib`` (index grows towards the
patient's right, anterior and superior): the axial slice at height ``z`` is ``vol[:, :, z]``, the
coronal slice at depth ``y`` is ``vol[:, y, :]``. Slices are drawn in the radiological convention:
the patient's right on the viewer's left, anterior up (axial) and head up (coronal). Intensities are
shown through a HU window (default: a wide window showing lung and soft tissue together).

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` it drew on, so a notebook can
both display it and save it with :func:`smartlib.plots.save_figure`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = [
    "DEFAULT_WINDOW",
    "label_colors",
    "label_overlay",
    "axial",
    "coronal",
    "show_slices",
    "organ_legend",
    "gallery",
    "best_slice",
    "manifest_gallery",
]

#: (low, high) HU shown from black to white: wide enough for lung and soft tissue together.
DEFAULT_WINDOW: tuple[float, float] = (-1000.0, 400.0)

# label 1..11 follow OrganMNIST3D's order (liver, kidney R/L, femur R/L, bladder, heart, lung R/L,
# spleen, pancreas); paired organs get neighbouring hues so the pairs read as pairs
_BASE_COLORS = [
    "#8c2d04", "#ffd92f", "#e5c494", "#b3b3b3", "#6f6f6f", "#a6d854",
    "#e41a1c", "#377eb8", "#80b1d3", "#984ea3", "#ff7f00",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e",
]


def label_colors(n: int) -> list[str]:
    """``n`` distinct colours (hex strings), one per label 1..n, stable across figures."""
    if n < 0:
        raise ValueError(f"n={n}: must be >= 0")
    return [_BASE_COLORS[i % len(_BASE_COLORS)] for i in range(n)]


def label_overlay(labels: np.ndarray, n_labels: int | None = None, alpha: float = 0.5) -> np.ndarray:
    """An RGBA image (H, W, 4) colouring each label 1..n; label 0 (background) is transparent."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D slice, got shape {labels.shape}")
    n = int(n_labels if n_labels is not None else max(int(labels.max(initial=0)), 1))
    cmap = ListedColormap(["#000000"] + label_colors(n))
    rgba = cmap(np.clip(labels.astype(int), 0, n))
    rgba[..., 3] = np.where(labels > 0, alpha, 0.0)
    return rgba


def axial(volume: np.ndarray, z: int | None = None) -> np.ndarray:
    """Axial slice ``volume[:, :, z]`` (default: the middle) as a display image.

    Rows run posterior → anterior from the bottom (anterior up), columns from the patient's right
    (left of the image) to the left.
    """
    volume = np.asarray(volume)
    z = volume.shape[2] // 2 if z is None else int(z)
    return volume[:, :, z].T[::-1, ::-1]


def coronal(volume: np.ndarray, y: int | None = None) -> np.ndarray:
    """Coronal slice ``volume[:, y, :]`` (default: the middle) as a display image (head up, patient right on the left)."""
    volume = np.asarray(volume)
    y = volume.shape[1] // 2 if y is None else int(y)
    return volume[:, y, :].T[::-1, ::-1]


def _aspect(spacing: Sequence[float] | None, view: str) -> float:
    if spacing is None:
        return 1.0
    sx, sy, sz = (float(s) for s in spacing)
    return sy / sx if view == "axial" else sz / sx


def show_slices(
    volume: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    views: Sequence[str | tuple[str, int]] = ("axial", "coronal"),
    index: Mapping[str, int] | None = None,
    window: tuple[float, float] = DEFAULT_WINDOW,
    spacing: Sequence[float] | None = None,
    n_labels: int | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    axes: Sequence[Axes] | None = None,
    size: float = 3.2,
) -> Figure:
    """Draw axial and/or coronal slices of a CT volume, optionally with a label overlay.

    Args:
        volume: HU volume ``(X, Y, Z)``.
        labels: integer label volume of the same shape (0 = background), drawn semi-transparent.
        views: panels in order: ``"axial"``, ``"coronal"``, or ``(view, index)`` pairs such as
            ``("axial", 40)`` (so a view can appear several times at different levels).
        index: slice per view name, e.g. ``{"axial": 20}`` (default: the middle of the volume).
        window: HU range mapped to black..white.
        spacing: voxel size (mm) ``(sx, sy, sz)``, for the correct aspect ratio.
        n_labels: number of label classes, so colours match :func:`organ_legend` (default: max label).
        alpha: overlay opacity.
        title: figure title.
        axes: draw into these axes (one per view) instead of a new figure.
        size: panel size in inches for a new figure.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (X, Y, Z), got shape {volume.shape}")
    if labels is not None and np.shape(labels) != volume.shape:
        raise ValueError(f"labels shape {np.shape(labels)} differs from volume shape {volume.shape}")
    index = dict(index or {})
    slicers = {"axial": axial, "coronal": coronal}
    panels: list[tuple[str, int | None]] = []
    for v in views:
        name, at = (v, index.get(v)) if isinstance(v, str) else (v[0], int(v[1]))
        if name not in slicers:
            raise ValueError(f"view {name!r}: expected 'axial' or 'coronal'")
        panels.append((name, at))
    if axes is None:
        fig, ax_arr = plt.subplots(1, len(views), figsize=(size * len(views), size), squeeze=False)
        axes = list(ax_arr[0])
    else:
        axes = list(axes)
        if len(axes) != len(views):
            raise ValueError(f"got {len(axes)} axes for {len(views)} views")
        fig = axes[0].figure
    if n_labels is None and labels is not None:
        n_labels = max(int(np.max(labels)), 1)
    for ax, (view, at) in zip(axes, panels):
        key = "z" if view == "axial" else "y"
        img = slicers[view](volume, at)
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="upper",
                  aspect=_aspect(spacing, view), interpolation="nearest")
        if labels is not None:
            lab = slicers[view](np.asarray(labels), at)
            ax.imshow(label_overlay(lab, n_labels, alpha), origin="upper",
                      aspect=_aspect(spacing, view), interpolation="nearest")
        pos = at if at is not None else volume.shape[2 if view == "axial" else 1] // 2
        ax.set_title(f"{view} ({key}={pos})", fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def organ_legend(
    names: Mapping[int, str] | Sequence[str],
    ax: Axes | None = None,
    *,
    ncol: int = 1,
    title: str = "organ",
    fontsize: float = 8,
) -> Figure:
    """A legend of label colours (as used by :func:`show_slices`) and names.

    Args:
        names: ``{label: name}`` or a sequence whose i-th entry names label i+1.
        ax: put the legend on these axes (outside the right edge); default: a small figure of its own.
    """
    items = dict(names) if isinstance(names, Mapping) else {i + 1: n for i, n in enumerate(names)}
    labels = sorted(int(k) for k in items)
    colors = label_colors(max(labels, default=0))
    handles = [Patch(facecolor=colors[k - 1], edgecolor="none", label=f"{k}: {items[k]}") for k in labels]
    if ax is None:
        fig = plt.figure(figsize=(2.4 * ncol, 0.24 * (len(handles) / ncol + 2)))
        fig.legend(handles=handles, loc="center", ncol=ncol, title=title, fontsize=fontsize, frameon=False)
        return fig
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), ncol=ncol, title=title,
              fontsize=fontsize, frameon=False)
    return ax.figure


def gallery(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 6,
    window: tuple[float, float] = DEFAULT_WINDOW,
    masks: Sequence[np.ndarray | None] | None = None,
    row_labels: Sequence[str] | None = None,
    suptitle: str | None = None,
    size: float = 1.8,
) -> Figure:
    """A grid of 2-D slices (already cut from their volumes), optionally with a mask contour each.

    Args:
        images: 2-D HU arrays, drawn row by row.
        titles: one short title per image.
        ncols: images per row.
        window: HU range mapped to black..white.
        masks: optional binary 2-D masks drawn as a red contour on the matching image.
        row_labels: a label for the start of each row (e.g. ``["benign", "malignant"]``).
        suptitle: figure title.
        size: panel size in inches.
    """
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("gallery needs at least one image")
    for im in images:
        if im.ndim != 2:
            raise ValueError(f"gallery images must be 2-D slices, got shape {im.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    fig, ax_arr = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(ax_arr.flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
        if masks is not None and i < len(masks) and masks[i] is not None and np.any(masks[i]):
            ax.contour(np.asarray(masks[i]).astype(float), levels=[0.5], colors="red", linewidths=0.8)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if row_labels is not None:
        for r, text in enumerate(row_labels[:nrows]):
            ax_arr[r, 0].text(-0.08, 0.5, text, transform=ax_arr[r, 0].transAxes, rotation=90,
                              ha="right", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def best_slice(mask: np.ndarray, axis: int = 2) -> int:
    """Index along ``axis`` of the slice with the most foreground voxels (the middle if ``mask`` is empty).

    ``best_slice(labels == k)`` gives the axial level through the widest part of structure ``k``.
    """
    mask = np.asarray(mask).astype(bool)
    other = tuple(a for a in range(mask.ndim) if a != axis)
    counts = mask.sum(axis=other)
    if not counts.any():
        return mask.shape[axis] // 2
    return int(np.argmax(counts))


def manifest_gallery(
    manifest: str | os.PathLike,
    n_per_class: int = 4,
    *,
    class_names: Mapping[int, str] | None = None,
    columns: Sequence[str] | Mapping[str, str] = (),
    window: tuple[float, float] = (-1000.0, 400.0),
    crop: int | None = None,
    suptitle: str | None = None,
) -> Figure:
    """One row per class of a task-set manifest: the axial slice through each case's mask.

    Cases are the first ``n_per_class`` rows of each label in manifest order (task sets are
    shuffled at generation, so this is a random sample that does not change between runs).

    Args:
        manifest: a ``manifest.csv`` with ``image``, ``label`` and ``mask`` columns (paths relative to it).
        n_per_class: cases per class.
        class_names: row titles per label (default: ``label k``).
        columns: manifest columns to print above each image: names (``("malignancy",)`` prints
            ``malignancy 4``) or ``{column: format}`` (``{"volume_mm3": "{:.0f} mm³"}``; numeric
            values are formatted as numbers).
        window: HU window.
        crop: show only a ``crop``-voxel square around the mask's centre (default: the whole slice).
        suptitle: figure title.
    """
    import csv

    from ..data.readers import load_volume

    manifest = Path(manifest)
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if str(r.get("label", "")).strip() != ""]
    if not rows:
        raise ValueError(f"{manifest}: no labelled rows")
    labels = sorted({int(float(r["label"])) for r in rows})
    images: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    titles: list[str] = []
    for lab in labels:
        chosen = [r for r in rows if int(float(r["label"])) == lab][:n_per_class]
        for k in range(n_per_class):
            if k >= len(chosen):
                images.append(np.full((8, 8), window[0], np.float32))
                masks.append(None)
                titles.append("")
                continue
            r = chosen[k]
            vol, _, _ = load_volume(manifest.parent / r["image"])
            m = load_volume(manifest.parent / r["mask"])[0] > 0.5 if r.get("mask") else None
            z = best_slice(m) if m is not None else vol.shape[2] // 2
            img, msk = axial(vol, z), (axial(m, z) if m is not None else None)
            if crop is not None:
                cy, cx = (np.argwhere(msk).mean(0).round().astype(int) if msk is not None and msk.any()
                          else (np.array(img.shape) // 2))
                h = crop // 2
                y0 = int(np.clip(cy - h, 0, max(img.shape[0] - crop, 0)))
                x0 = int(np.clip(cx - h, 0, max(img.shape[1] - crop, 0)))
                img = img[y0:y0 + crop, x0:x0 + crop]
                msk = msk[y0:y0 + crop, x0:x0 + crop] if msk is not None else None
            images.append(img)
            masks.append(msk)
            titles.append(_case_title(r, columns))
    names = [(class_names or {}).get(lab, f"label {lab}") for lab in labels]
    return gallery(images, titles, ncols=n_per_class, window=window, masks=masks, row_labels=names,
                   suptitle=suptitle)


def _case_title(row: Mapping[str, str], columns: Sequence[str] | Mapping[str, str]) -> str:
    parts = []
    fmts = columns if isinstance(columns, Mapping) else {c: f"{c} {{}}" for c in columns}
    for col, fmt in fmts.items():
        if col not in row:
            continue
        value: object = row[col]
        try:
            value = float(value)  # type: ignore[arg-type]
            if value == int(value) and "{:" not in fmt:
                value = int(value)
        except (TypeError, ValueError):
            pass
        parts.append(fmt.format(value))
    return ", ".join(parts)
