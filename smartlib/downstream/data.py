"""Which records a downstream study reads, how they are preprocessed, and how they are split.

``--data`` is ``"builtin"`` (a phantom task set generated once under ``runs_dir/data``) or a
real-format path understood by :func:`smartlib.data.sources.resolve_data` (manifest CSV,
MedMNIST ``.npz``, Decathlon root). Splits are by patient: a manifest's ``split`` column is used
when every record has one (and checked for patients in two splits); otherwise patients are
assigned with :func:`smartlib.data.tasks.assign_splits`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import SmartError

__all__ = ["task_records", "split_indices", "label_fraction_indices", "load_arrays"]


def task_records(task: str, data: str | os.PathLike | None, preset: str, runs_dir: str | os.PathLike,
                 n: int | None = None, seed: int = 0) -> tuple[list[dict], str]:
    """Records of ``task`` from ``data`` (None / ``"builtin"``: the phantom set) and a name for messages.

    Classification tasks must carry labels of their registry classes (:data:`smartlib.tasks.TASKS`,
    checked by ``resolve_data``; the organ task accepts any integer classes of a real file);
    segmentation records need masks.
    """
    from ..data.sources import resolve_data
    from ..tasks import builtin_manifest, record_kind
    from ..tasks import task as task_spec
    from .study import is_builtin

    t = task_spec(task)
    spec: str | Path = builtin_manifest(task, preset, runs_dir, n=n, seed=seed) if is_builtin(data) else Path(data)
    records = resolve_data(spec, record_kind(task), classes=list(t.classes) if t.classes is not None else None)
    if t.kind == "segmentation":
        records = [r for r in records if r.get("mask") is not None]
    return records, str(spec)


def split_indices(records: Sequence[dict], source: str, fractions: Sequence[float] = (0.6, 0.0, 0.4), seed: int = 0,
                  required: Sequence[str] = ("train", "test")) -> dict[str, np.ndarray]:
    """Indices of the ``train`` / ``val`` / ``test`` records, by patient.

    A declared split is used as declared or refused: when any record has a ``split``, every record
    must have one of train / val / test and each required split must be non-empty. Only data
    without any declared split are assigned, by patient, with ``fractions`` and
    ``numpy.random.default_rng(seed)``.

    Raises:
        SmartError: a split value other than train / val / test, records without a split beside
        records with one, a patient in two splits, or a required split that is empty.
    """
    from ..data.tasks import assign_splits

    splits = [r.get("split") for r in records]
    declared = [s not in (None, "") for s in splits]
    if any(declared):
        bad = next((s for s in splits if s not in (None, "") and s not in ("train", "val", "test")), None)
        if bad is not None:
            raise SmartError(f"{source}: split {bad!r} is not one of train, val, test")
        if not all(declared):
            i = declared.index(False)
            raise SmartError(f"{source}: {declared.count(False)} of {len(records)} records have no split (e.g. "
                             f"{records[i].get('patient_id')}) while others declare one; declare a split for every record or none")
    else:
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
            how = "declared" if any(declared) else "assigned"
            raise SmartError(f"{source}: the {name} split is empty ({len(records)} records, splits {how})")
    return out


def label_fraction_indices(train_idx: np.ndarray, labels: Sequence[int | None], patients: Sequence[str],
                           fraction: float, seed: int = 0) -> np.ndarray:
    """The training records kept when only ``fraction`` of the training labels are available.

    Whole patients are drawn, stratified by each patient's most frequent label (ties: the smaller):
    ``max(1, round(fraction · P_c))`` of the ``P_c`` patients of each stratum, chosen with
    ``numpy.random.default_rng(seed)``. Every class of the training split therefore stays present.
    ``labels`` may be all None (segmentation): one stratum.

    Returns: sorted record indices (a subset of ``train_idx``).
    """
    from .study import check_fraction

    f = check_fraction(fraction)
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
