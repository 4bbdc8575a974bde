"""``smart finetune``, ``smart evaluate clusters`` and ``smart study wild-vs-self`` (downstream studies).

``smart finetune --task findings [--dims 2|3] [--head label-tokens|cls|both]`` runs the label-token study
(:mod:`smartlib.downstream.label_tokens`) on the built-in findings or on a ChestX-ray14 / CheXpert folder.

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
    if TASKS[a.task].kind == "multilabel":
        return _multilabel(a, data, runs_dir)
    if TASKS[a.task].kind == "segmentation":
        from .downstream.segment import segmentation_study

        runs, _ = segmentation_study({"init": a.init}, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data,
                                     fractions=[a.label_fraction], seeds=[a.seed], steps=a.steps, roi=a.roi, spacing=spacing,
                                     n=a.n, n_boot=a.n_boot, eval_every=a.eval_every, n_val=a.n_val, save_models=True,
                                     progress=True)
        print(f"wrote {a.out}/summary.json (Dice {runs['dice_mean'].iloc[0]:.3f})")
        return 0
    from .downstream.classify import classification_study

    res = classification_study(a.task, {"init": a.init}, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data,
                               fractions=[a.label_fraction], seeds=[a.seed], modes=[a.mode], epochs=a.epochs, roi=a.roi,
                               spacing=spacing, n=a.n, n_boot=a.n_boot, progress=True)
    print(f"wrote {a.out}/summary.json (AUC {res['auc'].iloc[0]:.3f})")
    return 0


def _multilabel(a: argparse.Namespace, data: str | None, runs_dir: str) -> int:
    """``smart finetune --task findings``: label tokens and/or the [CLS] baseline (``--head``), 2-D or 3-D (``--dims``)."""
    from .downstream.label_tokens import label_token_study
    from .errors import SmartError

    if a.label_fraction != 1.0:
        raise SmartError(f"--label-fraction {a.label_fraction}: the {a.task} task trains on all its training labels")
    labels = [x.strip() for x in a.labels.split(",") if x.strip()] if a.labels else None
    heads = ["label-tokens", "cls"] if a.head == "both" else [a.head]
    res = label_token_study({"init": a.init}, dims=a.dims, backbone=a.backbone, heads=heads, preset=a.preset,
                            runs_dir=runs_dir, out=a.out, data=data, seeds=[a.seed], epochs=a.epochs, n_boot=a.n_boot,
                            labels=labels, policy=a.policy, n=a.n, data_seed=a.seed, roi=a.roi,
                            spacing="default" if a.spacing is None else a.spacing, progress=True)
    means = ", ".join(f"{r['head']} {r['mean_auroc']:.3f}" for r in res["mean_auroc"].to_dict("records"))
    print(f"wrote {a.out}/summary.json (mean AUROC: {means})")
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


def _encoder(v: str) -> tuple[str, str]:
    """``--encoder ARM=ENCODER.pt``."""
    if "=" not in v:
        raise argparse.ArgumentTypeError(f"{v!r}: expected ARM=ENCODER.pt")
    arm, path = v.split("=", 1)
    return arm.strip(), path.strip()


def _wild_vs_self(a: argparse.Namespace) -> int:
    """The wild- vs self-pretraining study (:func:`smartlib.downstream.wild_self.wild_vs_self_study`)."""
    from .downstream.wild_self import wild_vs_self_study
    from .io import check_out_dir

    check_out_dir(a.out)  # fail before any data or model work
    data = None if a.data in (None, "builtin") else a.data
    runs_dir = a.runs_dir or str(Path(a.out) / "_runs")
    res = wild_vs_self_study(a.arms, preset=a.preset, runs_dir=runs_dir, out=a.out, data=data, wild_data=a.wild_data,
                             seeds=a.seeds, steps=a.steps, eval_every=a.eval_every, n_val=a.n_val,
                             curve_cases=a.curve_cases, overlap=a.overlap, n_boot=a.n_boot,
                             encoders=dict(a.encoder or []), reuse=not a.no_reuse, cka=not a.no_cka, progress=True)
    for r in res["summary"]["overall"]:
        print(f"{r['init']}: Dice {r['dice']:.3f} [{r['dice_lo']:.3f}, {r['dice_hi']:.3f}] "
              f"(n = {r['n_seeds']} seeds × {r['n_cases']} cases)")
    print(f"wrote {a.out}/summary.json")
    return 0


def _register_study(sub: argparse._SubParsersAction) -> None:
    """``smart study wild-vs-self``: pretrains the missing arms, fine-tunes each arm per seed, writes the tables."""
    from .pools import ARMS

    s = sub.add_parser("study", help="multi-arm studies").add_subparsers(dest="sub", required=True)
    w = s.add_parser("wild-vs-self", help="wild- vs self-pretraining: robustness of tumour segmentation to CT acquisition")
    w.add_argument("--arms", nargs="+", default=["scratch", "wild", "self", "wild+self"], choices=list(ARMS), metavar="ARM",
                   help=f"arms to run (default: scratch wild self wild+self; any of {', '.join(ARMS)})")
    w.add_argument("--preset", default="cpu", choices=list(PRESETS))
    w.add_argument("--out", required=True, help="folder for the tables (CSV) and summary.json")
    w.add_argument("--data", default="builtin", help="segmentation data: 'builtin' phantoms, a manifest .csv with masks or a "
                                                     "Decathlon Task06_Lung folder; its training split is the self pool")
    w.add_argument("--wild-data", default="phantom", help="the wild pool: 'phantom' (built-in) or a folder / manifest of CTs")
    w.add_argument("--encoder", action="append", type=_encoder, metavar="ARM=ENCODER.pt",
                   help="use this exported encoder for ARM instead of pretraining it (repeatable)")
    w.add_argument("--seeds", nargs="+", type=_count(0), default=[0, 1, 2])
    w.add_argument("--steps", type=_count(1), default=160, help="fine-tuning steps per run")
    w.add_argument("--eval-every", type=_count(0), default=40, help="steps between evaluation points (0: the last only)")
    w.add_argument("--n-val", type=_count(1), default=None, help="validation volumes that choose the checkpoint (default: all)")
    w.add_argument("--curve-cases", type=_count(0), default=None, help="test volumes logged per evaluation point (default: all)")
    w.add_argument("--overlap", type=float, default=0.0, help="sliding-window overlap in [0, 1)")
    w.add_argument("--n-boot", type=_count(1), default=1000, help="bootstrap resamples for the 95%% CIs")
    w.add_argument("--runs-dir", default=None, help="where built-in data, pretraining runs and the segmentation chapter's "
                                                    "results live (default: OUT/_runs)")
    w.add_argument("--no-reuse", action="store_true", help="retrain scratch and wild even if the segmentation study ran them")
    w.add_argument("--no-cka", action="store_true", help="skip the feature-reuse (CKA) analysis")
    w.set_defaults(func=_wild_vs_self)


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
    f.add_argument("--task", required=True,
                   choices=task_names("classification") + task_names("segmentation") + task_names("multilabel"),
                   help="a classification, segmentation or multi-label task of the registry (smartlib/tasks.py)")
    _common(f)
    f.add_argument("--label-fraction", type=_fraction, default=1.0, help="share of training labels used, in (0, 1]")
    f.add_argument("--mode", default="probe", choices=["probe", "finetune"], help="classification only")
    f.add_argument("--epochs", type=_count(1), default=5, help="fine-tuning epochs (classification)")
    f.add_argument("--steps", type=_count(1), default=30, help="training steps (segmentation)")
    f.add_argument("--eval-every", type=_count(0), default=0,
                   help="segmentation: steps between validation evaluations; the best validation Dice is kept (0: last step)")
    f.add_argument("--n-val", type=_count(1), default=None, help="segmentation: validation volumes scored (default: all)")
    f.add_argument("--n-boot", type=_count(1), default=1000, help="bootstrap resamples for the 95%% CIs")
    ml = f.add_argument_group("multi-label tasks (findings): ChestX-ray14 / CheXpert folders or a manifest via --data")
    ml.add_argument("--dims", type=int, choices=[2, 3], default=2, help="2: radiographs (ViT); 3: CT volumes (Swin stages)")
    ml.add_argument("--head", choices=["label-tokens", "cls", "both"], default="label-tokens",
                    help="label tokens (LT-ViT), the one-[CLS] baseline, or both")
    ml.add_argument("--backbone", choices=["vit", "swin"], default=None, help="default: vit in 2-D, swin in 3-D")
    ml.add_argument("--policy", choices=["U-Ones", "U-Zeros", "ignore"], default="U-Ones",
                    help="what an uncertain (-1) CheXpert label becomes")
    ml.add_argument("--labels", default=None, help="comma-separated label names (default: the set's own)")
    f.set_defaults(func=_finetune)

    e = sub.add_parser("evaluate", help="evaluations without fine-tuning").add_subparsers(dest="sub", required=True)
    c = e.add_parser("clusters", help="UMAP + cluster metrics of frozen features of the organ crops")
    _common(c)
    c.set_defaults(func=_clusters)
    _register_study(sub)
