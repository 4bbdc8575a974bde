"""The book's figures, one module per part; every plotting function returns its matplotlib Figure.

- :mod:`smartlib.plots.volumes` — CT slices with label overlays, organ legends, image galleries;
- :mod:`smartlib.plots.pretraining` — loss curves, attention / mask / reconstruction panels, variant bars;
- :mod:`smartlib.plots.downstream` — the downstream chapters' figures.

:func:`save_figure` writes any of them atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` atomically as PNG (or the format of ``path``'s suffix) and return the path."""
    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path
