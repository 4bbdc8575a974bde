"""Recorded runs in the chapters: each chapter shows, beside its live figures, what a recorded run wrote.

The live book runs at the ``cpu`` preset. Runs recorded once with ``smart results record PRESET`` (the
``long`` preset on 2 CPU cores, the ``gpu`` preset on one GPU; :mod:`smartlib.archive`) keep every chapter's
tables and figures under ``results/<preset>/<chapter>/``. :func:`show_recorded` displays, for one chapter,
the main tables and figures of every recorded preset other than the live one, each under a label with its
provenance (commit, date, machine, threads, the chapter's wall time), so that a reader never mistakes a
recorded figure for one computed in this build. :data:`VIEWS` names what each chapter shows; a file a
recorded run did not write is skipped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .errors import SmartError

__all__ = ["VIEWS", "recorded_presets", "provenance_label", "show_recorded"]

#: chapter → the files (relative to the chapter's folder) shown from a recorded run, tables (.csv) and figures (.png)
VIEWS: dict[str, tuple[str, ...]] = {
    "00_data": ("dataset_sizes.csv",),
    "01_pretraining": ("summary.csv", "loss_curves.png"),
    "02_ablations": ("movement.csv", "ablations.csv", "downstream/comparisons.csv", "ablation_focus.png"),
    "03_nodule_malignancy": ("summary.csv", "comparisons.csv", "auc_vs_fraction.png"),
    "04_treatment_response": ("summary.csv", "comparisons.csv", "auc_vs_fraction.png"),
    "05_segmentation": ("comparisons.csv", "subsets.csv", "segmentation_curves.png"),
    "06_wild_vs_self": ("strata.csv", "comparisons.csv", "efficiency.csv", "dice_by_stratum.png"),
    "07_organ_clustering": ("metrics.csv", "umap_cls.png"),
    "08_attention": ("localisation.csv", "comparisons.csv", "localisation.png"),
    "09_label_tokens": ("2d/mean_auroc.csv", "2d/head_comparisons.csv", "3d/mean_auroc.csv", "3d/head_comparisons.csv",
                        "3d/localisation.csv", "auroc_3d.png"),
    "10_supervised_masking": ("classification/summary.csv", "comparisons.csv", "lesion_masking.csv", "reductions.csv"),
    "11_results": ("headline.csv", "comparisons.csv"),
}
_MAX_ROWS = 40  #: longer tables are cut (the full CSV is in the archive)


def recorded_presets(results: str | os.PathLike, live: str | None = None) -> list[str]:
    """The presets recorded under ``results`` (folders with a ``provenance.json``), other than ``live``."""
    root = Path(results)
    if not root.is_dir():
        return []
    return [p.parent.name for p in sorted(root.glob("*/provenance.json")) if p.parent.name != live]


def provenance_label(results: str | os.PathLike, preset: str, chapter: str | None = None) -> str:
    """One line saying where a recorded run comes from: preset, commit, date, machine, threads and the wall
    time of ``chapter`` (or of the whole run). An unreadable ``provenance.json`` is a SmartError naming it."""
    from .archive import read_provenance

    prov = read_provenance(Path(results) / preset / "provenance.json")
    m = prov.get("machine", {})
    device = m.get("gpu") or f"{m.get('cpu') or 'CPU'} ({m.get('cpu_count', '?')} cores)"
    total = prov.get("sittings_wall_s") or prov.get("total_wall_s")
    n = len(prov.get("sittings") or [])
    run = (f"the whole run {total / 60:.0f} min" + (f" over {n} sittings" if n > 1 else "")) if isinstance(total, (int, float)) \
        else "wall time not recorded"
    if chapter:
        wall = (prov.get("wall_s") or {}).get(chapter)
        threads = (prov.get("notebook_threads") or {}).get(chapter, prov.get("threads", "?"))
        when = run + (f", this chapter's last execution {wall / 60:.0f} min" if isinstance(wall, (int, float)) else "")
    else:
        threads, when = prov.get("threads", "?"), run
    commit = (prov.get("commit") or "unknown")[:10] + (" + uncommitted changes" if prov.get("dirty") else "")
    return (f"Recorded run, preset {preset}: commit {commit}, {str(prov.get('recorded', ''))[:10]}, {device}, "
            f"{threads} CPU thread{'' if threads == 1 else 's'}, {when}. Not computed in this build; `smart results verify {preset}` checks it.")


def show_recorded(chapter: str, results: str | os.PathLike = "../results", live: str | None = None,
                  display: Callable[[Any], Any] | None = None) -> list[str]:
    """Display ``chapter``'s recorded tables and figures for every recorded preset other than ``live``.

    Args:
        chapter: a notebook stem (a key of :data:`VIEWS`).
        results: the archive root (``results/`` of the repository; notebooks pass ``../results``).
        live: the preset of this build, whose own figures the chapter already shows (not repeated).
        display: where objects go (default: IPython's ``display``; tests pass a list's ``append``).
    Returns:
        The archive paths shown, relative to ``results`` (empty when nothing is recorded).
    Raises:
        SmartError: an unknown chapter, or a recorded file that cannot be read.
    """
    import pandas as pd

    if chapter not in VIEWS:
        raise SmartError(f"chapter {chapter!r}: expected one of {', '.join(VIEWS)}")
    if display is None:  # in a notebook: lines of text render as Markdown, not as a quoted str
        from IPython.display import Markdown, display

        def say(text: str) -> None:
            display(Markdown(text))
    else:
        say = display
    shown: list[str] = []
    presets = recorded_presets(results, live)
    if not presets:
        say(f"No recorded run in `{results}` yet (`make book PRESET=long`, then `smart results record long`).")
        return shown
    for preset in presets:
        say(provenance_label(results, preset, chapter))
        for name in VIEWS[chapter]:
            path = Path(results) / preset / chapter / name
            if not path.is_file():
                continue
            rel = path.relative_to(results).as_posix()
            if path.suffix == ".csv":
                try:
                    table = pd.read_csv(path)
                except (OSError, ValueError) as exc:
                    raise SmartError(f"{path}: not readable as CSV ({exc})") from None
                say(f"`{rel}` ({len(table)} rows{'; first ' + str(_MAX_ROWS) if len(table) > _MAX_ROWS else ''})")
                display(table.head(_MAX_ROWS).round(3))
            else:
                from IPython.display import Image

                say(f"`{rel}`")
                display(Image(filename=str(path)))
            shown.append(rel)
        if not shown:
            say(f"The {preset} record holds no results of this chapter.")
    return shown
