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
           "write_outputs", "is_builtin", "seed_case_cis", "comparisons", "PAIRS"]

#: the paired comparisons every study reports: each init against scratch, and SMART against SMIT
PAIRS = (("*", "scratch"), ("smart", "smit"))


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


def seed_case_cis(cases: "pd.DataFrame", group: Sequence[str], metric: str, n_boot: int = 2000,
                  seed: int = 0) -> "pd.DataFrame":
    """One row per ``group`` value: the metric with a CI that combines seeds and test cases.

    ``cases`` is long (one row per run and test case, with ``seed``, ``case`` and, for ``metric="auc"``,
    ``y`` / ``score``; else the per-case ``metric`` column). Returns ``group`` columns and
    ``<metric>, <metric>_lo, <metric>_hi, <metric>_se, n_seeds, n_cases`` from
    :func:`smartlib.downstream.stats.seed_case_bootstrap` (``_auc`` for AUC).
    """
    import pandas as pd

    from .stats import seed_case_bootstrap, seed_case_bootstrap_auc

    rows = []
    for key, g in cases.groupby(list(group), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if metric == "auc":
            wide = g.pivot(index="seed", columns="case", values="score")
            y = g.drop_duplicates("case").set_index("case").loc[wide.columns, "y"].to_numpy()
            r = seed_case_bootstrap_auc(y, wide.to_numpy(), n_boot=n_boot, seed=seed)
        else:
            r = seed_case_bootstrap(g.pivot(index="seed", columns="case", values=metric).to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(group, key)), metric: r["mean"], f"{metric}_lo": r["lo"], f"{metric}_hi": r["hi"],
                     f"{metric}_se": r["se"], "n_seeds": int(r["n_seeds"]), "n_cases": int(r["n_cases"])})
    return pd.DataFrame(rows)


def comparisons(cases: "pd.DataFrame", group: Sequence[str], metric: str, n_boot: int = 2000,
                seed: int = 0, pairs: Sequence[tuple[str, str]] = PAIRS) -> "pd.DataFrame":
    """The paired comparisons of ``pairs`` (default :data:`PAIRS`; ``(arm, reference)``, arm ``"*"`` = every
    other init) within each ``group`` value, Holm-adjusted within the group.

    Every init is compared with ``scratch`` and ``smart`` with ``smit`` (where present) on the same test
    cases (:func:`smartlib.downstream.stats.compare_arms`: DeLong for one-seed AUCs, else a paired
    seeds × cases bootstrap); the verdict follows the CI and the Holm-adjusted p of the group
    (:func:`smartlib.downstream.stats.verdict`). Returns ``group`` columns and ``arm, reference, test, n_cases, n_seeds,
    value, value_reference, diff, lo, hi, se, p, p_holm, verdict``.
    """
    import pandas as pd

    from .stats import compare_arms, holm, verdict

    out = []
    for key, g in cases.groupby(list(group), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        present = list(dict.fromkeys(g["init"]))
        parts = []
        for arm, ref in pairs:
            arms = [a for a in present if a != ref] if arm == "*" else [arm]
            if ref in present and arms and all(a in present for a in arms):
                parts.append(compare_arms(g, "init", ref, metric, arms=arms, n_boot=n_boot, seed=seed))
        if parts:
            t = pd.concat(parts, ignore_index=True)
            t["p_holm"] = holm(t["p"].to_numpy())
            t["verdict"] = [verdict(lo, hi, ph) for lo, hi, ph in zip(t["lo"], t["hi"], t["p_holm"])]
            for c, v in zip(group, key):
                t.insert(list(group).index(c), c, v)
            out.append(t)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
