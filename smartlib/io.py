"""Atomic file output: write to a temporary file beside the target, then rename.

``os.replace`` is atomic on POSIX within one filesystem, so a reader (or a run
killed mid-write) sees either the old file or the complete new one, never a
half-written file. Hand-written because neither MONAI nor the standard library
offers an atomic writer for the several formats used here.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_json",
    "read_json",
    "write_csv",
    "save_torch",
    "load_torch",
    "json_safe",
    "check_out_dir",
    "describe_key_mismatch",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole.

    Used for dataset caches: a generation that fails half-way leaves no folder behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode mkdir() would
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check, before any compute, that ``path`` can become an output folder; returns it. Creates nothing.

    Refused (a SmartError naming the path): an existing file, a path below a file, or a folder in
    which this process cannot create files (tried with a temporary file, so it also holds for root
    and read-only file systems).
    """
    from .errors import SmartError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SmartError(f"{what} {p}: exists and is not a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SmartError(f"{what} {p}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise SmartError(f"{what} {p}: cannot write in {probe} ({exc.strerror or type(exc).__name__})") from None
    return p


def describe_key_mismatch(expected: Iterable[str], given: Iterable[str], first: int = 4) -> str:
    """``"missing a, b, … (N); unexpected c, … (M)"`` for two sets of state-dict keys (empty when equal)."""
    exp, got = set(expected), set(given)
    parts = []
    for what, keys in (("missing", sorted(exp - got)), ("unexpected", sorted(got - exp))):
        if keys:
            more = f", … ({len(keys)} in all)" if len(keys) > first else ""
            parts.append(f"{what} {', '.join(keys[:first])}{more}")
    return "; ".join(parts)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_safe(obj: Any) -> Any:
    """``obj`` with NumPy/torch values as Python ones and NaN / ±inf as None (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if not isinstance(obj, (str, bytes, int, float, bool, type(None))):
        try:
            obj = _jsonable(obj)
        except TypeError:
            return obj
        return json_safe(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, strict JSON (NumPy/torch scalars and arrays allowed).

    NaN and infinite numbers become ``null``: strict JSON readers reject a bare ``NaN``. Where a
    metric can be undefined, the record says why beside it (e.g. ``auc_note``).
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, default=_jsonable, allow_nan=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """Atomically write a list of dicts as CSV; columns are the union of keys in first-seen order."""
    rows = list(rows)
    if fieldnames is None:
        fieldnames = []
        for r in rows:
            for k in r:
                if k not in fieldnames:
                    fieldnames.append(k)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fieldnames)
            w.writeheader()
            for r in rows:
                w.writerow({k: _jsonable(v) if hasattr(v, "tolist") else v for k, v in r.items()})
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``obj`` (a checkpoint survives a kill at any instant)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU; a missing or corrupt file is a SmartError."""
    from .errors import SmartError

    path = Path(path)
    if not path.is_file():
        raise SmartError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise SmartError(f"{path}: not a plain-tensor checkpoint (it holds pickled Python objects); "
                             "it will not be loaded") from None
        raise SmartError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise SmartError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
