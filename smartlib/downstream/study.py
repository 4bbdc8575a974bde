"""One skeleton for every downstream study: inits × label fractions × seeds → per-run rows → files.

A study names its inits (``"scratch"``, a pretraining variant, or an exported encoder), resolves
them all before any data is loaded (a bad checkpoint fails first), builds its list of
:class:`Cell` s, runs one function per cell, and writes its tables only after every cell has run
(each file atomically), so a failure leaves no partial results::

    inits = resolve_inits(inits, preset, runs_dir, log)
    cells = grid(inits, fractions, seeds)                    # or a study's own list of cells
    rows = run_cells(cells, run_one, log)                    # run_one(cell) -> row dict(s)
    write_outputs(out, csv={"runs.csv": rows}, json={"summary.json": {...}})

The classification, segmentation, clustering and attention studies all follow it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import SmartError

__all__ = ["Cell", "Inits", "as_inits", "check_fraction", "check_fractions", "resolve_inits", "grid", "run_cells",
           "write_outputs", "is_builtin"]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a study: an init (its name and resolved path), a label fraction, a seed, a mode."""

    init: str
    path: str
    fraction: float = 1.0
    seed: int = 0
    mode: str | None = None


@dataclasses.dataclass(frozen=True)
class Inits:
    """A study's inits: ``specs`` name → what the user gave, ``paths`` name → resolved encoder path or ``scratch``."""

    specs: dict[str, str]
    paths: dict[str, str]


def as_inits(inits: Mapping[str, str] | Sequence[str] | str) -> dict[str, str]:
    """Name → init spec. A list uses each spec as its name (an export path: its file stem)."""
    if isinstance(inits, (str, os.PathLike)):
        inits = [str(inits)]
    if isinstance(inits, Mapping):
        return {str(k): str(v) for k, v in inits.items()}
    return {Path(str(v)).stem if str(v).endswith(".pt") else str(v): str(v) for v in inits}


def check_fraction(fraction: float) -> float:
    """A label fraction as a float in (0, 1]; anything else is a SmartError naming it."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise SmartError(f"label fraction {fraction!r}: must be a number in (0, 1]") from None
    if not (0.0 < f <= 1.0) or not math.isfinite(f):
        raise SmartError(f"label fraction {fraction!r}: must lie in (0, 1]")
    return f


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """:func:`check_fraction` for each; an empty list is a SmartError."""
    fr = [check_fraction(f) for f in fractions]
    if not fr:
        raise SmartError("fractions: give at least one label fraction")
    return fr


def resolve_inits(inits: Mapping[str, str] | Sequence[str] | str, preset: str, runs_dir: str | os.PathLike,
                  log: Callable[[str], None] = print) -> Inits:
    """Resolve every init up front (pretraining a variant if needed, checking an export's format)."""
    from .features import resolve_init

    specs = as_inits(inits)
    return Inits(specs, {name: resolve_init(spec, preset, runs_dir, log=log) for name, spec in specs.items()})


def grid(inits: Inits, fractions: Iterable[float] = (1.0,), seeds: Iterable[int] = (0,),
         modes: Sequence[str | None] = (None,)) -> list[Cell]:
    """The full product init × mode × fraction × seed, in that nesting order."""
    return [Cell(name, inits.paths[name], float(f), int(s), m)
            for name in inits.paths for m in modes for f in fractions for s in seeds]


def run_cells(cells: Iterable[Cell], run_one: Callable[[Cell], Any]) -> list[Any]:
    """``run_one(cell)`` for every cell, in order; returns what each returned."""
    return [run_one(c) for c in cells]


def write_outputs(out: str | os.PathLike | None, csv: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
                  json: Mapping[str, Any] | None = None) -> None:
    """Write each CSV (rows) and JSON (object) file into ``out``, each atomically; nothing when ``out`` is None."""
    from ..io import write_csv, write_json

    if out is None:
        return
    out = Path(out)
    for name, rows in (csv or {}).items():
        write_csv(out / name, list(rows))
    for name, obj in (json or {}).items():
        write_json(out / name, obj)


def is_builtin(data: str | os.PathLike | None) -> bool:
    """True for the built-in phantom data (``None`` or ``"builtin"``)."""
    return data is None or str(data) == "builtin"
