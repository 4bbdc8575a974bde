"""Manifest CSVs: the one reader behind task-set rows and data records.

A manifest is a CSV whose header names the columns: ``image`` (a path) is always required, ``label``
(an integer class of the whole image) only for classification, ``mask`` (a path to a label map,
voxel-wise) only for segmentation (where :func:`~smartlib.data.sources.resolve_data` asks it of every
training record); ``patient_id`` and ``split`` are optional, anything else is kept as a string extra.
:func:`read_csv_table` is the single CSV parse; on it stand :func:`read_manifest_rows` (rows as
dicts of strings, as :class:`csv.DictReader` gives them: what the task sets and the book's tables
read) and :func:`read_manifest` (validated records with resolved paths and integer labels).
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SmartError
from .readers import short_error, volume_stem

__all__ = [
    "read_csv_table",
    "read_manifest_rows",
    "read_manifest",
    "manifest_records",
    "REQUIRED_COLUMNS",
    "parse_label",
    "allowed_labels",
    "is_int_like",
]


def read_csv_table(path: str | os.PathLike, encoding: str | None = None) -> list[list[str]]:
    """Every row of a CSV file as a list of strings (blank lines are empty lists).

    ``encoding`` None is the platform default, the encoding :func:`smartlib.io.write_csv` writes.
    """
    with open(path, newline="", encoding=encoding) as fh:
        return list(csv.reader(fh))


def _row_dict(header: list[str], row: list[str]) -> dict[Any, Any]:
    """One row keyed by the header, as :class:`csv.DictReader` builds it (restkey/restval None)."""
    d: dict[Any, Any] = dict(zip(header, row))
    if len(header) < len(row):
        d[None] = row[len(header):]
    else:
        for key in header[len(row):]:
            d[key] = None
    return d


def read_manifest_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``manifest.csv`` as dicts of strings (blank lines skipped, nothing resolved or checked)."""
    path = Path(path)
    if not path.is_file():
        raise SmartError(f"{path}: manifest not found")
    table = read_csv_table(path)
    if not table:
        return []
    return [_row_dict(table[0], row) for row in table[1:] if row != []]


def parse_label(raw: str, classes: Sequence | None, where: str) -> int | None:
    """A label cell as an int (None if empty); ``where`` prefixes the error message."""
    raw = (raw or "").strip()
    if raw == "" or raw.lower() in ("none", "nan", "na"):
        return None
    names = None if classes is None else [str(c) for c in classes]
    try:
        f = float(raw)
    except ValueError:
        f = None
    if f is not None:
        if not np.isfinite(f) or f != int(f):
            raise SmartError(f"{where}: label {raw!r} is not an integer class")
        value = int(f)
        if classes is not None and value not in allowed_labels(classes):
            raise SmartError(f"{where}: label {value} is outside the declared classes {list(classes)}")
        return value
    # a class name
    if names is None:
        raise SmartError(f"{where}: label {raw!r} is not an integer and no class names were declared")
    if raw not in names:
        raise SmartError(f"{where}: label {raw!r} is outside the declared classes {list(classes)}")
    return names.index(raw)


def allowed_labels(classes: Sequence) -> list[int]:
    """Integer labels allowed by ``classes``: the classes themselves if integers, else their indices."""
    if all(is_int_like(c) for c in classes):
        return [int(float(c)) for c in classes]
    return list(range(len(classes)))


def is_int_like(v: Any) -> bool:
    """An integer, or a number / string with an integral value (not a bool)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return np.isfinite(f) and f == int(f)


#: the columns a manifest must have, per record task (None: no task, as ``smart data check`` reads it)
REQUIRED_COLUMNS = {None: ("image",), "pretrain": ("image",), "classify": ("image", "label"), "segment": ("image",)}
_WHY_COLUMN = {"label": "classification needs an integer class per image"}


def manifest_records(csv_path: str | os.PathLike, classes: Sequence | None = None,
                     problems: list[str] | None = None, task: str | None = None) -> list[dict]:
    """Records of a manifest; a bad row raises, or with a ``problems`` list is skipped and described there.

    ``task`` (``"pretrain"``, ``"classify"``, ``"segment"`` or None) chooses the required columns
    (:data:`REQUIRED_COLUMNS`): ``image`` always, ``label`` for ``"classify"``; a missing ``label``
    column otherwise means every record is unlabeled (``label`` None), a missing ``mask`` column no masks.
    Shared by :func:`read_manifest` (raise) and :func:`~smartlib.data.checks.check_path` (collect).
    """
    if task not in REQUIRED_COLUMNS:
        raise SmartError(f"task={task!r}: must be one of {', '.join(str(t) for t in REQUIRED_COLUMNS)}")
    def fail(msg: str) -> None:
        if problems is None:
            raise SmartError(msg)
        problems.append(" ".join(msg.split()))

    p = Path(csv_path)
    if not p.exists():
        raise SmartError(f"{p}: manifest not found")
    if not p.is_file():
        raise SmartError(f"{p}: manifest is not a file")
    try:
        rows = read_csv_table(p, encoding="utf-8-sig")
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise SmartError(f"{p}: not a readable CSV manifest ({short_error(exc)})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SmartError(f"{p}: empty manifest (expected a header with columns image[,label][,mask])")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS[task] if c not in header]
    if missing:
        why = "; ".join(_WHY_COLUMN[c] for c in missing if c in _WHY_COLUMN)
        raise SmartError(f"{p}: manifest is missing required column(s) {', '.join(missing)} (header: {','.join(header)})"
                         + (f"; {why}" if why else ""))
    if len(set(header)) != len(header):
        dup = [h for h, n in Counter(header).items() if n > 1]
        raise SmartError(f"{p}: manifest has duplicate column(s) {', '.join(dup)}")
    if len(rows) == 1:
        raise SmartError(f"{p}: manifest has a header but no rows")
    base = p.parent
    records: list[dict] = []
    for i, row in enumerate(rows[1:], start=1):
        where = f"{p}: row {i}"
        if len(row) != len(header):
            fail(f"{where}: has {len(row)} fields, the header has {len(header)}")
            continue
        cells = {h: c.strip() for h, c in zip(header, row)}
        if not cells["image"]:
            fail(f"{where}: empty image path")
            continue
        img = Path(cells["image"])
        img = img if img.is_absolute() else base / img
        if not img.exists():
            fail(f"{where}: image {cells['image']} not found ({img})")
            continue
        mask = None
        if cells.get("mask"):
            mask = Path(cells["mask"])
            mask = mask if mask.is_absolute() else base / mask
            if not mask.exists():
                fail(f"{where}: mask {cells['mask']} not found ({mask})")
                continue
        try:
            label = parse_label(cells.get("label", ""), classes, where)
        except SmartError as exc:
            fail(str(exc))
            continue
        rec: dict[str, Any] = {
            "image": img,
            "label": label,
            "mask": mask,
            "patient_id": cells.get("patient_id") or volume_stem(img),
            "split": cells.get("split") or None,
        }
        for k, v in cells.items():
            if k not in rec:
                rec[k] = v
        rec["source"] = str(p)
        rec["row"] = i
        records.append(rec)
    return records


def read_manifest(csv_path: str | os.PathLike, classes: Sequence | None = None,
                  task: str | None = "classify") -> list[dict]:
    """Read a CSV manifest into records.

    Columns ``image,label`` are required (``task="classify"``, the default; ``task="pretrain"`` or
    None requires only ``image``), ``mask``, ``patient_id`` and ``split`` optional; any other
    column is kept as a string extra. Relative paths are resolved against the manifest's folder. An
    empty ``label`` cell means unlabeled (``None``). With ``classes`` given, labels must be one of them:
    integer classes are compared as integers; with class names, a cell may hold the name (mapped to its
    index) or the index. Rows are numbered from 1 after the header in error messages.
    """
    return manifest_records(Path(csv_path), classes, None, task=task)
