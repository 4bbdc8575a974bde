"""Thorough checks of a user's data (``smart data check PATH``): load everything, report every problem."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SmartError
from .manifest import allowed_labels
from .readers import load_volume, source_name
from .sources import classify_path

__all__ = ["check_record", "check_path"]


def check_record(rec: dict) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    """Load a record's image (and mask) and check them; returns (shape, spacing). Raises SmartError.

    In-memory arrays are checked for being 3-D and finite; a mask must match its image's shape.
    """
    img = rec.get("image")
    if img is None:
        raise SmartError(f"record {rec.get('patient_id')!r}: no image")
    if isinstance(img, (str, os.PathLike)):
        arr, spacing, _ = load_volume(img)
    else:
        arr = np.asarray(img)
        spacing = rec.get("spacing")
        _check_array(arr, f"record {rec.get('patient_id')!r} image")
    mask = rec.get("mask")
    if mask is not None:
        if isinstance(mask, (str, os.PathLike)):
            marr, _, _ = load_volume(mask)
        else:
            marr = np.asarray(mask)
            _check_array(marr, f"record {rec.get('patient_id')!r} mask")
        if marr.shape != arr.shape:
            raise SmartError(
                f"{source_name(img)} and {source_name(mask)}: image/mask shape mismatch {tuple(arr.shape)} vs {tuple(marr.shape)}"
            )
    return tuple(int(s) for s in arr.shape), (tuple(float(s) for s in spacing) if spacing is not None else None)


def _check_array(arr: np.ndarray, what: str) -> None:
    if arr.ndim != 3:
        raise SmartError(f"{what}: array is {arr.ndim}-D (shape {arr.shape}), expected a 3-D volume")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise SmartError(f"{what}: {int((~np.isfinite(arr)).sum())} NaN/infinite voxels; values must be finite")


def check_path(path: str | os.PathLike, classes: Sequence | None = None) -> tuple[str, list[str]]:
    """Validate a data folder, file or manifest thoroughly (for ``smart data check PATH``).

    Loads every volume, checks image/mask shapes, finite values, labels against ``classes``
    and patients appearing in more than one split. Returns a one-line summary and a list of
    one-line problems (empty when all is well), each naming the file and what is wrong.
    """
    p = Path(path)
    problems: list[str] = []
    try:
        kind, records = classify_path(p, classes, problems=problems, npz_dtype=np.uint8)
    except SmartError as exc:
        return f"{p}: not checked", [str(exc)]

    shapes: Counter = Counter()
    spacings: list[tuple[float, ...]] = []
    n_ok = 0
    for rec in records:
        try:
            shape, spacing = check_record(rec)
        except SmartError as exc:
            problems.append(str(exc))
            continue
        n_ok += 1
        shapes[shape] += 1
        if spacing is not None:
            spacings.append(spacing)
        if classes is not None and rec.get("label") is not None:
            lab = rec["label"]
            if lab not in allowed_labels(classes):
                problems.append(f"{source_name(rec['image'])}: label {lab} is outside the declared classes {list(classes)}")
    # the same patient in two splits leaks test data into training
    splits_of: dict[str, set] = {}
    for rec in records:
        if rec.get("split"):
            splits_of.setdefault(str(rec.get("patient_id")), set()).add(str(rec["split"]))
    leaks = sorted(pid for pid, s in splits_of.items() if len(s) > 1)
    if leaks and kind != "MedMNIST file":
        problems.append(f"{p}: patient(s) {', '.join(leaks[:5])} appear in more than one split")

    labels = Counter(r.get("label") for r in records if r.get("label") is not None)
    splits = Counter(r.get("split") for r in records if r.get("split"))
    n_mask = sum(1 for r in records if r.get("mask") is not None)
    parts = [f"{p}: {kind}, {len(records)} record(s), {n_ok} loaded OK"]
    if shapes:
        lo = tuple(min(s[i] for s in shapes) for i in range(3))
        hi = tuple(max(s[i] for s in shapes) for i in range(3))
        parts.append("shape " + ("x".join(map(str, lo)) if lo == hi else f"{'x'.join(map(str, lo))}..{'x'.join(map(str, hi))}"))
    if spacings:
        sp = np.asarray(spacings)
        parts.append("spacing " + "x".join(f"{v:.2g}" for v in np.median(sp, axis=0)) + " mm (median)")
    if labels:
        parts.append("labels " + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())))
    if n_mask:
        parts.append(f"{n_mask} mask(s)")
    if splits:
        parts.append("splits " + " ".join(f"{k}:{v}" for k, v in sorted(splits.items())))
    parts.append(f"{len(problems)} problem(s)")
    return ", ".join(parts), problems
