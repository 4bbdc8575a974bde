"""Which records a downstream study reads, how they are preprocessed, and how they are split.

``--data`` is ``"builtin"`` (a phantom task set generated once under ``runs_dir/data``) or a
real-format path understood by :func:`smartlib.data.loaders.resolve_data` (manifest CSV,
MedMNIST ``.npz``, Decathlon root). Splits are by patient: a manifest's ``split`` column is used
when every record has one (and checked for patients in two splits); otherwise patients are
assigned with :func:`smartlib.data.tasks.assign_splits`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SmartError

__all__ = [
    "CLASS_TASKS",
    "TASK_CLASSES",
    "BUILTIN_SIZES",
    "PREP",
    "builtin_manifest",
    "task_records",
    "prep_for",
    "split_indices",
    "label_fraction_indices",
    "load_arrays",
]

CLASS_TASKS = ("nodules", "response", "organs")
#: the classes each built-in classification task must have (a label file with others is an error)
TASK_CLASSES: dict[str, list[int]] = {"nodules": [0, 1], "response": [0, 1], "organs": list(range(11))}
#: cases generated for a built-in set, per preset
BUILTIN_SIZES: dict[str, dict[str, int]] = {
    "smoke": {"nodules": 24, "response": 24, "segmentation": 6, "organs": 33},
    "cpu": {"nodules": 120, "response": 100, "segmentation": 18, "organs": 110},
    "paper": {"nodules": 1000, "response": 200, "segmentation": 60, "organs": 550},
}
#: ``make_task`` parameters of the built-in sets (train / val / test fractions by patient)
BUILTIN_PARAMS: dict[str, dict[str, Any]] = {
    "nodules": {"splits": [0.6, 0.0, 0.4]},
    "response": {"splits": [0.6, 0.0, 0.4]},
    "organs": {"splits": [0.6, 0.0, 0.4]},
    "segmentation": {"splits": [0.67, 0.0, 0.33]},
}
_SMALL_SEG = {"shape": [48, 48, 48], "spacing": [2.0, 2.0, 2.0], "radius_mm": [12.0, 24.0]}
#: preprocessing per task: ``roi`` (crop / pad edge, or training patch for segmentation) and ``spacing``
#: (mm; None keeps the native grid). 2 mm is the pretraining spacing, so nodule and response crops
#: are seen at the scale the encoder learned; organ crops keep their own grid (the OrganMNIST3D way).
PREP: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {"nodules": {"roi": 32, "spacing": 2.0}, "response": {"roi": 32, "spacing": 2.0},
              "organs": {"roi": 32, "spacing": None}, "segmentation": {"roi": 32, "spacing": 2.0}},
    "cpu": {"nodules": {"roi": 32, "spacing": 2.0}, "response": {"roi": 32, "spacing": 2.0},
            "organs": {"roi": 32, "spacing": None}, "segmentation": {"roi": 32, "spacing": 2.0}},
    "paper": {"nodules": {"roi": 64, "spacing": 1.0}, "response": {"roi": 64, "spacing": 1.5},
              "organs": {"roi": 32, "spacing": None}, "segmentation": {"roi": 64, "spacing": 2.0}},
}


def builtin_manifest(task: str, preset: str, runs_dir: str | os.PathLike, n: int | None = None, seed: int = 0) -> Path:
    """Manifest of the built-in phantom set for ``task`` at ``preset`` (generated once, then cached).

    Written to ``runs_dir/data/<task>-n<n>-seed<seed>`` so it never overwrites the sets of other chapters.
    Segmentation volumes at the smoke / cpu presets are 48³ at 2 mm with 12–24 mm tumours, so that a
    160-step CPU fine-tune learns them (96³ at 2 mm, 6–20 mm tumours at paper).
    """
    from ..data.tasks import make_task

    if preset not in BUILTIN_SIZES:
        raise SmartError(f"preset {preset!r}: expected one of {', '.join(BUILTIN_SIZES)}")
    if task not in BUILTIN_SIZES[preset]:
        raise SmartError(f"task {task!r}: expected one of {', '.join(BUILTIN_SIZES[preset])}")
    n = BUILTIN_SIZES[preset][task] if n is None else int(n)
    params = dict(BUILTIN_PARAMS[task])
    if task == "segmentation" and preset != "paper":
        params.update(_SMALL_SEG)
    return make_task(task, n=n, seed=seed, out=Path(runs_dir) / "data" / f"{task}-n{n}-seed{seed}", **params)


def task_records(task: str, data: str | os.PathLike | None, preset: str, runs_dir: str | os.PathLike,
                 n: int | None = None, seed: int = 0) -> tuple[list[dict], str]:
    """Records of ``task`` from ``data`` (None / ``"builtin"``: the phantom set) and a name for messages.

    Classification tasks must carry labels of :data:`TASK_CLASSES` (checked by ``resolve_data``; the
    organ task accepts any integer classes of a real file); segmentation records need masks.
    """
    from ..data.loaders import resolve_data

    if data is None or str(data) == "builtin":
        spec: str | Path = builtin_manifest(task, preset, runs_dir, n=n, seed=seed)
    else:
        spec = Path(data)
    kind = "segment" if task == "segmentation" else "classify"
    classes = TASK_CLASSES.get(task) if task in ("nodules", "response") else None
    records = resolve_data(spec, kind, classes=classes)
    if task == "segmentation":
        records = [r for r in records if r.get("mask") is not None]
    return records, str(spec)


def prep_for(task: str, preset: str, roi: int | None = None, spacing: float | None | str = "default") -> dict[str, Any]:
    """``{"roi", "spacing"}`` for ``task`` at ``preset`` with optional overrides (spacing None = native grid)."""
    base = dict(PREP.get(preset, PREP["cpu"])[task])
    if roi is not None:
        if roi % 32 or roi < 32:
            raise SmartError(f"roi={roi}: must be a positive multiple of 32 (the Swin halves the grid five times)")
        base["roi"] = int(roi)
    if spacing != "default":
        base["spacing"] = spacing
    return base


def split_indices(records: Sequence[dict], source: str, fractions: Sequence[float] = (0.6, 0.0, 0.4), seed: int = 0,
                  required: Sequence[str] = ("train", "test")) -> dict[str, np.ndarray]:
    """Indices of the ``train`` / ``val`` / ``test`` records, by patient.

    The records' own ``split`` is used when every record has one of train / val / test and the
    required splits are present; otherwise patients are assigned by ``fractions`` with
    ``numpy.random.default_rng(seed)``.

    Raises:
        SmartError: a patient in two splits, or a required split that is empty.
    """
    from ..data.tasks import assign_splits

    splits = [r.get("split") for r in records]
    given = all(s in ("train", "val", "test") for s in splits) and all(s in splits for s in required)
    if not given:
        pats = [str(r["patient_id"]) for r in records]
        of = assign_splits(pats, list(fractions), np.random.default_rng(seed))
        splits = [of[p] for p in pats]
    owner: dict[str, str] = {}
    for r, s in zip(records, splits):
        p = str(r["patient_id"])
        if owner.setdefault(p, s) != s:
            raise SmartError(f"{source}: patient {p} appears in both the {owner[p]} and the {s} split")
    out = {name: np.array([i for i, s in enumerate(splits) if s == name], dtype=int) for name in ("train", "val", "test")}
    for name in required:
        if len(out[name]) == 0:
            raise SmartError(f"{source}: the {name} split is empty ({len(records)} records)")
    return out


def _check_fraction(fraction: float) -> float:
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise SmartError(f"label fraction {fraction!r}: must be a number in (0, 1]") from None
    if not (0.0 < f <= 1.0) or not math.isfinite(f):
        raise SmartError(f"label fraction {fraction!r}: must lie in (0, 1]")
    return f


def label_fraction_indices(train_idx: np.ndarray, labels: Sequence[int | None], patients: Sequence[str],
                           fraction: float, seed: int = 0) -> np.ndarray:
    """The training records kept when only ``fraction`` of the training labels are available.

    Whole patients are drawn, stratified by each patient's most frequent label (ties: the smaller):
    ``max(1, round(fraction · P_c))`` of the ``P_c`` patients of each stratum, chosen with
    ``numpy.random.default_rng(seed)``. Every class of the training split therefore stays present.
    ``labels`` may be all None (segmentation): one stratum.

    Returns: sorted record indices (a subset of ``train_idx``).
    """
    f = _check_fraction(fraction)
    train_idx = np.asarray(train_idx, dtype=int)
    if f == 1.0:
        return np.sort(train_idx)
    by_patient: dict[str, list[int]] = {}
    for i in train_idx:
        by_patient.setdefault(str(patients[i]), []).append(int(i))
    strata: dict[Any, list[str]] = {}
    for p, idx in by_patient.items():
        labs = [labels[i] for i in idx if labels[i] is not None]
        key = min(set(labs), key=lambda c: (-labs.count(c), c)) if labs else None
        strata.setdefault(key, []).append(p)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for key in sorted(strata, key=lambda k: (k is None, k)):
        pats = sorted(strata[key])
        k = max(1, int(round(f * len(pats))))
        for j in rng.permutation(len(pats))[:k]:
            keep += by_patient[pats[j]]
    return np.array(sorted(keep), dtype=int)


def load_arrays(records: Sequence[dict], roi: int | None, spacing: float | None, hu_window: tuple[float, float] = (-500.0, 500.0),
                with_mask: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """Preprocess records with :func:`smartlib.data.transforms.eval_transforms` (load, RAS, resample to
    ``spacing``, window HU to [0, 1], centre crop / pad to ``roi``).

    Returns: a list of ``(1, X, Y, Z)`` float32 images (all ``(1, roi, roi, roi)`` when ``roi`` is set)
    and, with ``with_mask``, the matching binary masks (else None).
    """
    from ..data.transforms import eval_transforms

    keys = ("image", "mask") if with_mask else ("image",)
    tf = eval_transforms(roi=roi, spacing=spacing, hu_window=hu_window, keys=keys)
    images, masks = [], []
    for r in records:
        if with_mask and r.get("mask") is None:
            raise SmartError(f"{r.get('image')}: no mask (this study needs a lesion mask per case)")
        d = tf({k: v for k, v in r.items() if k in ("image", "mask", "intensity", "spacing", "affine", "patient_id")
                and (k != "mask" or with_mask)})
        images.append(torch.as_tensor(d["image"]).float())
        if with_mask:
            masks.append((torch.as_tensor(d["mask"]) > 0.5).float())
    return images, (masks if with_mask else None)
