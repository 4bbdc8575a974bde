"""Argument validators shared by the phantom generator, the task sets and the transforms.

Each raises :class:`~smartlib.errors.SmartError` with a one-line ``"name=value: what is wrong"``
message. The generic checks (:func:`int_triple`, :func:`float_triple`, :func:`check_seed`, ...)
are written once; the named validators below them only choose the bounds, the broadcasting of a
single number and the wording their callers have always used.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import SmartError

__all__ = [
    "is_int",
    "is_number",
    "broadcast3",
    "int_triple",
    "float_triple",
    "check_seed",
    "check_shape",
    "check_spacing",
    "as_shape",
    "as_spacing",
    "as_range",
    "as_float",
    "as_int",
    "as_roi",
    "as_target_spacing",
    "as_window",
]

_GIVEN = object()


# --------------------------------------------------------------------------- generic checks
def is_int(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (Python or NumPy int/float), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def broadcast3(value: Any, scalar: Callable[[Any], bool], kind: type = tuple) -> Any:
    """``kind([value] * 3)`` when ``scalar(value)``, else ``value`` unchanged."""
    return kind([value] * 3) if scalar(value) else value


def int_triple(value: Any, name: str, minimum: int, message: str, type_message: str | None = None,
               shown: Any = _GIVEN) -> tuple[int, int, int]:
    """``value`` as three integers ``>= minimum``.

    Raises ``SmartError("{name}={shown!r}: {message}")`` (``shown`` defaults to ``value``), with
    ``type_message`` instead when ``value`` is not iterable (``None``: the same ``message``).
    """
    shown = value if shown is _GIVEN else shown
    try:
        t = tuple(value)
    except TypeError:
        raise SmartError(f"{name}={shown!r}: {type_message or message}") from None
    if len(t) != 3 or not all(is_int(s) and s >= minimum for s in t):
        raise SmartError(f"{name}={shown!r}: {message}")
    return tuple(int(s) for s in t)  # type: ignore[return-value]


def float_triple(value: Any, name: str, message: str, type_message: str | None = None,
                 shown: Any = _GIVEN) -> tuple[float, float, float]:
    """``value`` as three positive finite floats; messages as in :func:`int_triple` (``type_message``
    when ``value`` is not a sequence of numbers)."""
    shown = value if shown is _GIVEN else shown
    try:
        t = tuple(float(s) for s in value)
    except (TypeError, ValueError):
        raise SmartError(f"{name}={shown!r}: {type_message or message}") from None
    if len(t) != 3 or not all(math.isfinite(s) and s > 0 for s in t):
        raise SmartError(f"{name}={shown!r}: {message}")
    return t  # type: ignore[return-value]


def check_seed(seed: Any) -> int:
    """A non-negative integer seed."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    return int(seed)


# --------------------------------------------------------------------------- phantom volumes
def check_shape(shape: Any) -> tuple[int, int, int]:
    """A phantom's ``(X, Y, Z)`` voxel shape: three integers >= 4."""
    return int_triple(shape, "shape", 4, "must be 3 integers >= 4 (X, Y, Z)",
                      "must be a sequence of 3 positive integers")


def check_spacing(spacing: Any) -> tuple[float, float, float]:
    """A phantom's voxel size in mm: one positive number (isotropic) or three."""
    return float_triple(broadcast3(spacing, is_number), "spacing", "must be 3 positive finite numbers (mm)",
                        "must be 3 positive numbers (mm)")


# --------------------------------------------------------------------------- task-set parameters
def as_shape(name: str, v: Any) -> list[int]:
    """A task parameter shape: one integer (a cube) or three, each >= 8."""
    return list(int_triple(broadcast3(v, is_int, list), name, 8, "must be 3 integers >= 8",
                           "must be 3 positive integers"))


def as_spacing(name: str, v: Any) -> list[float]:
    """A task parameter spacing in mm: one positive number or three."""
    return list(float_triple(broadcast3(v, is_number, list), name,
                             "must be a positive number or 3 of them (mm)"))


def as_range(name: str, v: Any, lo: float, hi: float) -> list[float]:
    """A ``(min, max)`` pair with ``lo <= min <= max <= hi``."""
    try:
        a, b = (float(x) for x in v)
    except (TypeError, ValueError):
        raise SmartError(f"{name}={v!r}: must be a (min, max) pair") from None
    if not (lo <= a <= b <= hi):
        raise SmartError(f"{name}={v!r}: must satisfy {lo} <= min <= max <= {hi}")
    return [a, b]


def as_float(name: str, v: Any, lo: float, hi: float) -> float:
    """A number in ``[lo, hi]``."""
    if not is_number(v) or not (lo <= float(v) <= hi):
        raise SmartError(f"{name}={v!r}: must be a number in [{lo}, {hi}]")
    return float(v)


def as_int(name: str, v: Any, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``."""
    if not is_int(v) or not (lo <= int(v) <= hi):
        raise SmartError(f"{name}={v!r}: must be an integer in [{lo}, {hi}]")
    return int(v)


# --------------------------------------------------------------------------- transforms
def as_roi(roi: int | Sequence[int] | None) -> tuple[int, int, int] | None:
    """``64`` -> ``(64, 64, 64)``; a 3-sequence of positive ints is kept; None stays None."""
    if roi is None:
        return None
    msg = "must be a positive integer or three positive integers"
    return int_triple(broadcast3(roi, lambda v: isinstance(v, (int, np.integer))), "roi", 1, msg, shown=roi)


def as_target_spacing(spacing: float | Sequence[float] | None) -> tuple[float, float, float] | None:
    """A resampling target in mm: one positive number or three; None (keep the grid) stays None."""
    if spacing is None:
        return None
    msg = "must be a positive number of mm or three of them (or None)"
    return float_triple(broadcast3(spacing, lambda v: isinstance(v, (int, float, np.number))), "spacing", msg,
                        shown=spacing)


def as_window(hu_window: Sequence[float] | None) -> tuple[float, float] | None:
    """An HU window ``(low, high)`` of finite values with ``low < high``; None stays None."""
    if hu_window is None:
        return None
    t = tuple(float(v) for v in hu_window)
    if len(t) != 2 or not np.all(np.isfinite(t)) or t[0] >= t[1]:
        raise SmartError(f"hu_window={hu_window!r}: must be two finite HU values (low, high) with low < high")
    return t  # type: ignore[return-value]
