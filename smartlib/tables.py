"""Small summary tables for the book (pandas DataFrames / plain dicts, ready for CSV/JSON)."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["organ_volumes", "manifest_summary", "acquisition_summary"]


def organ_volumes(labels: np.ndarray, spacing: Sequence[float], names: Sequence[str]) -> pd.DataFrame:
    """Voxels and volume (ml) of each label 1..len(names) in an integer label volume.

    Args:
        labels: integer label volume (0 = background).
        spacing: voxel size (mm).
        names: name of label 1, 2, …
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=len(names) + 1)
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    return pd.DataFrame(
        {
            "label": np.arange(1, len(names) + 1),
            "organ": list(names),
            "voxels": counts[1 : len(names) + 1],
            "volume_ml": np.round(counts[1 : len(names) + 1] * voxel_ml, 1),
        }
    )


def manifest_summary(manifest: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """One row describing a task set: size, volume shape and spacing, splits, class balance, masks.

    Shape and spacing are read from the first image's header (every image of a built-in task set
    has the same grid; the organ set's spacing varies per case and is reported as a range when the
    manifest has a ``spacing_mm`` column).

    Args:
        manifest: ``manifest.csv`` of a task set (``params.json`` beside it names the task).
        name: row name (default: the task in ``params.json``, else the folder name).
    """
    from .data.manifest import read_manifest_rows
    from .data.readers import load_volume

    manifest = Path(manifest)
    rows = read_manifest_rows(manifest)
    params_file = manifest.parent / "params.json"
    task = name
    if task is None:
        task = json.loads(params_file.read_text()).get("task") if params_file.is_file() else manifest.parent.name
    splits = Counter(r.get("split", "") or "-" for r in rows)
    labels = Counter(r["label"] for r in rows if str(r.get("label", "")).strip() != "")
    shape, spacing = "-", "-"
    if rows:
        vol, sp, _ = load_volume(manifest.parent / rows[0]["image"])
        shape = "x".join(str(s) for s in vol.shape)
        spacing = "x".join(f"{s:g}" for s in sp)
        if "spacing_mm" in rows[0]:
            vals = [float(r["spacing_mm"]) for r in rows]
            spacing = f"{min(vals):.2g}-{max(vals):.2g} (isotropic)"
    n_lab = sum(labels.values())
    if labels and len(set(labels.values())) == 1 and len(labels) > 2:
        balance = f"{len(labels)} classes x {next(iter(labels.values()))}"
    else:
        balance = ", ".join(f"{k}: {v} ({v / n_lab:.0%})" for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])))
    return {
        "task": task,
        "n": len(rows),
        "patients": len({r.get("patient_id") for r in rows}),
        "shape": shape,
        "spacing_mm": spacing,
        "train": splits.get("train", 0),
        "val": splits.get("val", 0),
        "test": splits.get("test", 0),
        "classes": len(labels),
        "class_balance": balance or "unlabelled",
        "masks": sum(1 for r in rows if r.get("mask")),
    }


def acquisition_summary(manifest: str | os.PathLike, columns: Sequence[str] = ("kernel", "slice_mm", "contrast")) -> pd.DataFrame:
    """Counts of cases per acquisition setting (one row per column value) in a task-set manifest."""
    from .data.manifest import read_manifest_rows

    rows = read_manifest_rows(manifest)
    out: list[Mapping[str, Any]] = []
    for col in columns:
        for value, count in sorted(Counter(r.get(col, "") for r in rows).items()):
            out.append({"setting": col, "value": value, "cases": count})
    return pd.DataFrame(out)
