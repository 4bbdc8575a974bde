"""``smart finetune`` and ``smart evaluate clusters`` (downstream studies).

Each writes its metrics as JSON and CSV into ``--out`` (atomically, only after the whole study has
run) and prints one line per run. Bad input (a checkpoint of another format or architecture, labels
outside the task's classes, a label fraction outside (0, 1], an empty split) is a SmartError: one
line on stderr, exit status 2, nothing written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import PRESETS
from .tasks import TASKS, task_names


def _spacing(v: str):
    """``--spacing``: a positive number of mm, or ``native``."""
    import math

    if v.lower() in ("none", "native"):
        return None
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number of mm or 'native'") from None
    if not (math.isfinite(f) and f > 0):
        raise argparse.ArgumentTypeError(f"{v!r}: must be a positive number of mm")
    return f


def _count(minimum: int):
    """An argparse type: an integer ≥ ``minimum``."""

    def parse(v: str) -> int:
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
        if i < minimum:
            raise argparse.ArgumentTypeError(f"{v!r}: must be ≥ {minimum}")
        return i

    return parse


def _fraction(v: str) -> float:
    from .downstream.study import check_fraction
    from .errors import SmartError

    try:
        return check_fraction(v)
    except SmartError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finetune(a: argparse.Namespace) -> int:
    from .io import check_out_dir

    check_out_dir(a.out)  # fail before any data or model work
    data = None if a.data in (None, "builtin") else a.data
    spacing = "default" if a.spacing is None else a.spacing
    runs_dir = a.runs_dir or str(Path(a.out) / "_runs")
    if TASKS[a.task].kind == "segmentation":
        from .downstream.segment import segmentation_study

        runs, _ = segmentation_study({"init": a.init}, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data,
                                     fractions=[a.label_fraction], seeds=[a.seed], steps=a.steps, roi=a.roi, spacing=spacing,
                                     n=a.n, n_boot=a.n_boot, progress=True)
        print(f"wrote {a.out}/summary.json (Dice {runs['dice_mean'].iloc[0]:.3f})")
        return 0
    from .downstream.classify import classification_study

    res = classification_study(a.task, {"init": a.init}, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data,
                               fractions=[a.label_fraction], seeds=[a.seed], modes=[a.mode], epochs=a.epochs, roi=a.roi,
                               spacing=spacing, n=a.n, n_boot=a.n_boot, progress=True)
    print(f"wrote {a.out}/summary.json (AUC {res['auc'].iloc[0]:.3f})")
    return 0


def _clusters(a: argparse.Namespace) -> int:
    from .downstream.clusters import cluster_study
    from .io import check_out_dir

    check_out_dir(a.out)  # fail before any data or model work
    data = None if a.data in (None, "builtin") else a.data
    spacing = "default" if a.spacing is None else a.spacing
    runs_dir = a.runs_dir or str(Path(a.out) / "_runs")
    cluster_study({"init": a.init}, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data, seed=a.seed, n=a.n,
                  roi=a.roi, spacing=spacing, progress=True)
    print(f"wrote {a.out}/metrics.json")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", required=True, help="'scratch', a pretraining variant (smart, smit, ...) or an exported ENCODER.pt")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--out", required=True, help="folder for the metrics (JSON + CSV)")
    p.add_argument("--data", default="builtin",
                   help="'builtin' (phantom set, default), a manifest .csv, a MedMNIST .npz or a Decathlon folder")
    p.add_argument("--seed", type=_count(0), default=0)
    p.add_argument("--n", type=_count(1), default=None, help="cases of the built-in set (default: the preset's)")
    p.add_argument("--roi", type=_count(32), default=None, help="crop / patch edge in voxels, a multiple of 32 (default: the preset's)")
    p.add_argument("--spacing", type=_spacing, default=None, help="resample to this spacing in mm, or 'native' (default: the preset's)")
    p.add_argument("--runs-dir", default=None,
                   help="where built-in data and pretrained variants live (default: OUT/_runs)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``finetune`` and ``evaluate clusters`` to the ``smart`` parser."""
    f = sub.add_parser("finetune", help="downstream classification (probe / fine-tune) or segmentation")
    f.add_argument("--task", required=True, choices=task_names("classification") + task_names("segmentation"),
                   help="a classification or segmentation task of the registry (smartlib/tasks.py)")
    _common(f)
    f.add_argument("--label-fraction", type=_fraction, default=1.0, help="share of training labels used, in (0, 1]")
    f.add_argument("--mode", default="probe", choices=["probe", "finetune"], help="classification only")
    f.add_argument("--epochs", type=_count(1), default=5, help="fine-tuning epochs (classification)")
    f.add_argument("--steps", type=_count(1), default=30, help="training steps (segmentation)")
    f.add_argument("--n-boot", type=_count(1), default=1000, help="bootstrap resamples for the 95%% CIs")
    f.set_defaults(func=_finetune)

    e = sub.add_parser("evaluate", help="evaluations without fine-tuning").add_subparsers(dest="sub", required=True)
    c = e.add_parser("clusters", help="UMAP + cluster metrics of frozen features of the organ crops")
    _common(c)
    c.set_defaults(func=_clusters)
