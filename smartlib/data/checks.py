"""Checks of a user's data: thorough (``smart data check PATH``: load everything, report every problem)
and cheap (:func:`preflight`: headers only, before pretraining starts)."""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SmartError
from .manifest import allowed_labels
from .readers import VolumeWarning, check_mask_geometry, dicom_series_issues, load_volume, probe_volume, source_name
from .sources import classify_path
from .validate import as_roi, as_target_spacing

__all__ = ["check_record", "check_path", "preflight", "WARNING_PREFIX"]

#: how :func:`preflight` marks a problem line that keeps its record
WARNING_PREFIX = "warning: "


def check_record(rec: dict) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    """Load a record's image (and mask) and check them; returns (shape, spacing). Raises SmartError.

    In-memory arrays are checked for being 3-D and finite; a mask must match its image's shape and,
    when both are files, its geometry (:func:`~smartlib.data.readers.check_mask_geometry`: spacing
    within 0.1 %, the same orientation, origin within half a voxel).
    """
    img = rec.get("image")
    if img is None:
        raise SmartError(f"record {rec.get('patient_id')!r}: no image")
    image_affine = None
    if isinstance(img, (str, os.PathLike)):
        arr, spacing, meta = load_volume(img)
        image_affine = meta["affine"]
    else:
        arr = np.asarray(img)
        spacing = rec.get("spacing")
        _check_array(arr, f"record {rec.get('patient_id')!r} image")
    mask = rec.get("mask")
    if mask is not None:
        mask_affine = None
        if isinstance(mask, (str, os.PathLike)):
            marr, _, mmeta = load_volume(mask)
            mask_affine = mmeta["affine"]
        else:
            marr = np.asarray(mask)
            _check_array(marr, f"record {rec.get('patient_id')!r} mask")
        check_mask_geometry(img, image_affine, arr.shape, mask, mask_affine, marr.shape)
    return tuple(int(s) for s in arr.shape), (tuple(float(s) for s in spacing) if spacing is not None else None)


def _check_array(arr: np.ndarray, what: str) -> None:
    if arr.ndim != 3:
        raise SmartError(f"{what}: array is {arr.ndim}-D (shape {arr.shape}), expected a 3-D volume")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise SmartError(f"{what}: {int((~np.isfinite(arr)).sum())} NaN/infinite voxels; values must be finite")


def _check_collecting_warnings(rec: dict, problems: list[str]):
    """:func:`check_record`, its :class:`VolumeWarning` s appended to ``problems`` (other warnings re-issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VolumeWarning)
        try:
            return check_record(rec)
        finally:
            for w in caught:
                if issubclass(w.category, VolumeWarning):
                    problems.append(str(w.message))
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def check_path(path: str | os.PathLike, classes: Sequence | None = None) -> tuple[str, list[str]]:
    """Validate a data folder, file or manifest thoroughly (for ``smart data check PATH``).

    Loads every volume and lists, one line each naming the file: unreadable, truncated, non-3-D or
    non-finite images; for DICOM series every unreadable or truncated slice file, uneven slice spacing
    (a missing slice), slices of differing orientation and gantry tilt (which :func:`load_volume`
    only warns about); an image and mask of different geometry (shape, spacing, orientation, origin);
    labels outside ``classes``; patients appearing in more than one split; bad manifest rows; a
    Decathlon-shaped folder without ``dataset.json``. Returns a one-line summary and the list of
    problems (empty when all is well).
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
        img = rec.get("image")
        if isinstance(img, (str, os.PathLike)) and Path(img).is_dir():
            errs, warns = dicom_series_issues(img)
            if errs:  # every slice problem on its own line (load_volume names only the first)
                problems += errs + warns
                continue
        try:
            shape, spacing = _check_collecting_warnings(rec, problems)
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


# --------------------------------------------------------------------------- preflight
def _fmt(values: Sequence[float], digits: str = ".3g") -> str:
    return "x".join(f"{int(v):d}" if digits == "d" else f"{float(v):{digits}}" for v in values)


def _array_shape(img) -> tuple[int, ...]:
    shape = tuple(int(s) for s in getattr(img, "shape", np.shape(img)))
    return shape[1:] if len(shape) == 4 and shape[0] == 1 else shape


def _array_spacing(rec: dict) -> tuple[float, float, float] | None:
    """The spacing an in-memory image is resampled from (LoadRecordd: ``affine``, else ``spacing``), None: not resampled."""
    if rec.get("affine") is not None:
        a = np.asarray(rec["affine"], dtype=np.float64)
        return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))  # type: ignore[return-value]
    if rec.get("spacing") is not None:
        return tuple(float(v) for v in np.broadcast_to(np.asarray(rec["spacing"], dtype=np.float64), (3,)))  # type: ignore[return-value]
    return None


def preflight(records: Sequence[dict], roi: int, spacing: float | None) -> tuple[list[dict], list[str]]:
    """Check every pretraining record cheaply before the first step; returns ``(usable, problems)``.

    Each record's ``image`` is checked from headers only (:func:`~smartlib.data.readers.probe_volume`:
    NIfTI header and the presence of its whole data block, DICOM headers of every slice: unreadable or
    truncated slices, uneven spacing, orientation; no voxel decoding, no resampling); an in-memory image
    must be 3-D (and finite). Masks and labels are not looked at (pretraining uses neither).

    Args:
        records: records as :func:`~smartlib.data.sources.resolve_data` returns them.
        roi: the pretraining crop edge in voxels (an int; three ints also accepted).
        spacing: the resampling target in mm (None: the native grid, as in ``pretrain_transforms``).

    Returns:
        ``usable``: the records that passed, the same dict objects in their input order (records with
        only warnings included). ``problems``: one line each, in record order. A line that starts with
        :data:`WARNING_PREFIX` (``"warning: "``) kept its record: a gantry-tilted series, or an image
        smaller than half the crop along some axis after resampling to ``spacing`` (``shape x
        spacing / target < roi / 2``: its crops would be mostly zero padding; in-memory images of one
        source and shape share one line). Any other line excluded its record and names the file and
        what is wrong. Non-finite voxel values in files are not detected here (:func:`load_volume`
        refuses them when the record is loaded).

    Raises:
        SmartError: ``roi`` or ``spacing`` invalid (nothing about the records).
    """
    roi_t = as_roi(roi)
    target = as_target_spacing(spacing)
    usable: list[dict] = []
    problems: list[str] = []
    grouped: dict[tuple, dict] = {}  # in-memory images too small: one line per (source, shape, spacing)

    def small(shape, sp) -> str | None:
        size = np.asarray(shape, float) if (target is None or sp is None) else np.asarray(shape, float) * np.asarray(sp) / np.asarray(target)
        if not np.any(size < np.asarray(roi_t) / 2.0):
            return None
        at = f"{_fmt(shape, 'd')} voxels" + ("" if sp is None else f" of {_fmt(sp)} mm")
        resampled = "" if (target is None or sp is None) else f" are about {_fmt(size, '.3g')} voxels at {_fmt(target)} mm and"
        return (f"{at}{resampled} fall below half the {_fmt(roi_t, 'd')} crop along some axis: its crops would be "
                "mostly zero padding")

    for rec in records:
        img = rec.get("image")
        if img is None:
            problems.append(f"record {rec.get('patient_id')!r}: no image")
            continue
        if isinstance(img, (str, os.PathLike)):
            try:
                shape, sp, warns = probe_volume(img)
            except SmartError as exc:
                problems.append(str(exc))
                continue
            usable.append(rec)
            problems += [WARNING_PREFIX + w for w in warns]
            why = small(shape, sp)
            if why:
                problems.append(f"{WARNING_PREFIX}{img}: {why}")
            continue
        where = f"record {rec.get('patient_id')!r} image"
        shape = _array_shape(img)
        if len(shape) != 3:
            problems.append(f"{where}: array has shape {shape}, expected a 3-D (X, Y, Z) volume")
            continue
        arr = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            problems.append(f"{where}: {int((~np.isfinite(arr)).sum())} NaN/infinite voxels; values must be finite")
            continue
        usable.append(rec)
        sp = _array_spacing(rec)
        why = small(shape, sp)
        if why:
            key = (str(rec.get("source") or "in-memory records"), shape, sp)
            if key in grouped:
                grouped[key]["n"] += 1
            else:
                grouped[key] = {"n": 1, "at": len(problems), "where": where, "source": key[0], "why": why}
                problems.append("")  # filled in below, once the count is known
    for g in grouped.values():
        if g["n"] == 1:
            problems[g["at"]] = f"{WARNING_PREFIX}{g['where']}: {g['why']}"
        else:
            why = g["why"].replace("its crops", "their crops")
            problems[g["at"]] = f"{WARNING_PREFIX}{g['source']}: {g['n']} in-memory images of {why}"
    return usable, problems
