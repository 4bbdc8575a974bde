"""Phantom task sets written to disk: NIfTI volumes + ``manifest.csv`` + ``params.json``.

Every task folder holds ``images/*.nii.gz`` (int16 HU, affine ``diag(spacing)``, RAS+),
``masks/*.nii.gz`` where the task has masks (uint8), ``manifest.csv`` and ``params.json`` (the
exact parameters it was generated with, compared on the next call for caching). The folder is
written through :func:`smartlib.io.atomic_dir`: a generation that fails half-way leaves nothing.

Common manifest columns: ``image`` (path relative to the manifest folder), ``label`` (int or empty),
``mask`` (relative path or empty), ``patient_id``, ``split`` (train/val/test, by patient),
``noise_hu``, ``kernel``, ``slice_mm``, ``contrast``; then task-specific extras (see
:func:`make_task`).

Generation is deterministic: case ``i`` of a set uses a phantom seed derived from
``(seed, task, i)``, so the same call gives byte-identical arrays.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import SmartError
from ..tasks import TASKS as REGISTRY
from ..io import atomic_dir, read_json, write_csv, write_json
from .lidc import LABEL_RULES, RATING_NAMES, load_annotations, malignancy_label, nodule_hu, rasterise
from .manifest import read_manifest_rows as read_manifest
from .phantom import (
    KERNELS,
    ORGAN_CLASSES,
    SLICE_MM,
    Acquisition,
    NoduleSpec,
    TumourSpec,
    make_phantom,
    make_subject,
)
from .validate import as_float as _as_float
from .validate import as_int as _as_int
from .validate import as_range as _as_range
from .validate import as_shape as _as_shape
from .validate import as_spacing as _as_spacing

__all__ = ["TASKS", "TASK_DEFAULTS", "TASK_VERSION", "make_task", "task_params", "read_manifest", "assign_splits",
           "response_probability", "expected_auc"]

#: task names in generator order (from the registry, :data:`smartlib.tasks.TASKS`; the order seeds the cases)
TASKS: tuple[str, ...] = tuple(REGISTRY)
#: Bumped whenever generation changes, so old caches are regenerated.
TASK_VERSION = 1
#: Default generator parameters per task (the registry's ``defaults``; sized for a 2-core CPU).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {name: dict(spec.defaults) for name, spec in REGISTRY.items()}
_COMMON = {"splits": [0.6, 0.2, 0.2]}
_ACQ_COLS = ("noise_hu", "kernel", "slice_mm", "contrast")
_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# parameter handling
# --------------------------------------------------------------------------------------------
def task_params(task: str, n: int, seed: int, **params: Any) -> dict[str, Any]:
    """The full, normalised parameter dict of a task set (what ``params.json`` holds).

    Raises:
        SmartError: unknown task, ``n < 1``, negative seed, unknown or invalid parameter.
    """
    if task not in TASKS:
        raise SmartError(f"task={task!r}: unknown task, expected one of {TASKS}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SmartError(f"n={n!r}: must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    allowed = {**TASK_DEFAULTS[task], **_COMMON}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SmartError(f"{task}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    p = {**allowed, **params}
    out: dict[str, Any] = {"task": task, "n": int(n), "seed": int(seed), "version": TASK_VERSION}
    sp = p["splits"]
    try:
        fr = [float(x) for x in sp]
    except (TypeError, ValueError):
        raise SmartError(f"splits={sp!r}: must be 3 fractions (train, val, test)") from None
    if len(fr) != 3 or any(not math.isfinite(x) or x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise SmartError(f"splits={sp!r}: must be 3 non-negative fractions summing to 1 with train > 0")
    out["splits"] = fr
    for k, v in p.items():
        if k == "splits":
            continue
        if k == "shape":
            out[k] = _as_shape(k, v)
        elif k == "spacing":
            out[k] = _as_spacing(k, v)
        elif k == "size":
            out[k] = _as_int(k, v, 8, 512)
        elif k == "rule":
            if v not in LABEL_RULES:
                raise SmartError(f"rule={v!r}: unknown label rule, expected one of {LABEL_RULES}")
            out[k] = v
        elif k == "radius_mm":
            out[k] = _as_range(k, v, 2.0, 60.0)
        elif k == "beta":
            try:
                b = [float(x) for x in v]
            except (TypeError, ValueError):
                raise SmartError(f"beta={v!r}: must be 3 numbers (volume, irregularity, heterogeneity)") from None
            if len(b) != 3 or not all(math.isfinite(x) for x in b):
                raise SmartError(f"beta={v!r}: must be 3 finite numbers (volume, irregularity, heterogeneity)")
            out[k] = b
        elif k == "beta0":
            out[k] = _as_float(k, v, -20.0, 20.0)
        elif k in ("zoom_fraction",):
            out[k] = _as_float(k, v, 0.0, 1.0)
        elif k == "offset_mm":
            out[k] = _as_float(k, v, 0.0, 1000.0)
        elif k == "min_mm":
            out[k] = _as_float(k, v, 0.5, 60.0)
        elif k in ("max_fill", "fill"):
            out[k] = _as_float(k, v, 0.1, 1.0)
        elif k == "body_scale":
            out[k] = _as_float(k, v, 0.2, 2.0)
        elif k == "per_subject":
            out[k] = _as_int(k, v, 1, len(ORGAN_CLASSES))
        elif k == "prevalence_scale":
            out[k] = _as_float(k, v, 0.1, 4.0)
        else:  # pragma: no cover - every default key is handled above
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _case_seed(seed: int, task: str, i: int, salt: int = 0) -> int:
    ss = np.random.SeedSequence([int(seed), TASKS.index(task), int(i), int(salt)])
    return int(ss.generate_state(1, np.uint32)[0])


def _rng(seed: int, task: str, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), TASKS.index(task), 10**6 + purpose]))


def _save_nifti(path: Path, array: np.ndarray, spacing: Any) -> None:
    """Write ``array`` as gzip NIfTI with affine ``diag(spacing)``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, np.diag([*map(float, spacing), 1.0]))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _hu_int16(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def assign_splits(patients: list[str], fractions: list[float], rng: np.random.Generator) -> dict[str, str]:
    """Patient → split, shuffling the patients and cutting by ``fractions`` (each split with a
    positive fraction gets at least one patient when there are enough patients)."""
    uniq = list(dict.fromkeys(patients))
    order = [uniq[i] for i in rng.permutation(len(uniq))]
    n = len(order)
    counts = [int(math.floor(f * n + 0.5)) for f in fractions]
    positive = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                counts[i] = 1
    # fix the total on the largest split
    while sum(counts) > n:
        j = int(np.argmax(counts))
        counts[j] -= 1
    while sum(counts) < n:
        counts[0] += 1
    out, k = {}, 0
    for s, c in zip(_SPLITS, counts):
        for p in order[k:k + c]:
            out[p] = s
        k += c
    return out


def _acq_cols(acq: Acquisition) -> dict[str, Any]:
    d = acq.to_dict()
    return {"noise_hu": d["noise_hu"], "kernel": d["kernel"],
            "slice_mm": "" if d["slice_mm"] is None else d["slice_mm"], "contrast": int(d["contrast"])}


def _balanced_acquisitions(n: int, rng: np.random.Generator) -> list[Acquisition]:
    """n acquisitions cycling through every (kernel, slice, contrast) combination in random order."""
    combos = [(k, s, c) for k in KERNELS for s in SLICE_MM for c in (False, True)]
    out: list[Acquisition] = []
    while len(out) < n:
        for j in rng.permutation(len(combos)):
            k, s, c = combos[j]
            out.append(Acquisition(noise_hu=float(np.round(rng.uniform(5.0, 30.0), 2)), kernel=k, slice_mm=s, contrast=c))
    return out[:n]


# --------------------------------------------------------------------------------------------
# response model
# --------------------------------------------------------------------------------------------
def _log_radius_moments(a: float, b: float) -> tuple[float, float]:
    """Mean and std of log R for R ~ Uniform(a, b)."""
    if b - a < 1e-9:
        return math.log(a), 1e-9
    la, lb = math.log(a), math.log(b)
    m1 = (b * lb - b - a * la + a) / (b - a)
    m2 = (b * (lb ** 2 - 2 * lb + 2) - a * (la ** 2 - 2 * la + 2)) / (b - a)
    return m1, math.sqrt(max(m2 - m1 ** 2, 1e-12))


def response_probability(volume_ml: float, irregularity: float, heterogeneity: float,
                         radius_mm: tuple[float, float] = (8.0, 22.0), beta: tuple[float, float, float] = (1.0, 1.5, 1.0),
                         beta0: float = 0.0) -> tuple[float, float]:
    """True response probability of the ``response`` task.

    ``logit = beta0 + beta[0]·z_vol + beta[1]·z_irr + beta[2]·z_het`` and ``p_true = sigmoid(logit)``,
    where ``z_vol = (ln V − μ)/σ`` with μ, σ the mean and std of ``ln(4/3·π·R³/1000)`` for the nominal
    radius ``R ~ U(radius_mm)``, and ``z_irr = (irregularity − 0.5)·√12``, ``z_het = (heterogeneity −
    0.5)·√12`` (irregularity and heterogeneity are uniform on [0, 1], so these are standardised).
    The outcome is ``Bernoulli(p_true)``: the only noise is the draw, so ``p_true`` is the best
    possible score and its AUC is the ceiling.

    Returns:
        ``(p_true, logit)``.
    """
    m, s = _log_radius_moments(*radius_mm)
    mu = math.log(4.0 / 3.0 * math.pi / 1000.0) + 3 * m
    sd = 3 * s
    z_vol = (math.log(max(volume_ml, 1e-6)) - mu) / sd
    z_irr = (irregularity - 0.5) * math.sqrt(12.0)
    z_het = (heterogeneity - 0.5) * math.sqrt(12.0)
    logit = beta0 + beta[0] * z_vol + beta[1] * z_irr + beta[2] * z_het
    return 1.0 / (1.0 + math.exp(-logit)), logit


def expected_auc(p: np.ndarray) -> float:
    """Expected AUC of the score ``p`` when each outcome is ``Bernoulli(p_i)`` (ratio of expectations)."""
    p = np.asarray(p, float)
    num = den = 0.0
    for i in range(len(p)):
        w = p[i] * (1 - p)
        w[i] = 0.0
        num += float(np.sum(w * ((p[i] > p) + 0.5 * (p[i] == p))))
        den += float(np.sum(w))
    return num / den if den > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# task generators: each returns manifest rows, writing files into ``root``
# --------------------------------------------------------------------------------------------
def _gen_pretrain(P: dict, root: Path) -> list[dict]:
    rows = []
    rng = _rng(P["seed"], "pretrain", 0)
    for i in range(P["n"]):
        cs = _case_seed(P["seed"], "pretrain", i)
        zoom = bool(rng.random() < P["zoom_fraction"])
        bs, center, view = None, None, "trunk"
        if zoom:
            bs = float(rng.uniform(0.55, 0.9))
            subj = make_subject(cs, body_scale=bs)
            center = (subj.half * rng.uniform([-0.3, -0.2, -0.7], [0.3, 0.2, 0.7])).tolist()
            view = "zoom"
        ph = make_phantom(P["shape"], P["spacing"], seed=cs, body_scale=bs, center_mm=center)
        rel = f"images/pretrain_{i:05d}.nii.gz"
        _save_nifti(root / rel, _hu_int16(ph.image), ph.spacing)
        rows.append({"image": rel, "label": "", "mask": "", "patient_id": f"phantom-{cs:010d}",
                     **_acq_cols(ph.acquisition), "view": view, "phantom_seed": cs})
    return rows


def _offset_centre(shape: tuple[int, ...], size: int, spacing: list[float], offset_mm: float,
                   rng: np.random.Generator) -> tuple[int, int, int]:
    """Voxel where a nodule mask of ``shape`` is centred in a ``size``³ crop: the crop centre moved by a
    per-axis offset ~ U(−offset_mm, offset_mm) (rounded to voxels), clipped so the whole mask stays inside.

    The mask's box starts at ``c − shape // 2`` (:func:`~smartlib.data.phantom.lesions.insert_lesion`), so
    ``c`` lies in ``[shape // 2, size − shape + shape // 2]``; a mask wider than the crop stays centred.
    Always draws three numbers from ``rng`` (also for ``offset_mm = 0``).
    """
    d = rng.uniform(-1.0, 1.0, 3) * float(offset_mm)
    out = []
    for ax in range(3):
        c = size // 2 + int(np.rint(d[ax] / float(spacing[ax])))
        lo, hi = shape[ax] // 2, size - shape[ax] + shape[ax] // 2
        out.append(int(np.clip(c, lo, hi)) if lo <= hi else size // 2)
    return out[0], out[1], out[2]


def _window_at_lung_point(seed: int, size: int, spacing: list[float], centre: tuple[int, int, int],
                          rng: np.random.Generator) -> list[float]:
    """Body-frame window centre (mm) that puts voxel ``centre`` of a ``size``³ crop on a random lung point
    of subject ``seed`` (voxel i lies at ``window + (i − (size − 1) / 2)·spacing``, as in the phantom canvas)."""
    sp = np.asarray(spacing, float)
    subj = make_subject(seed, fov_mm=size * sp, body_scale=1.0)
    p = subj.lung_point_mm(rng)
    return (p - (np.asarray(centre, float) - (size - 1) / 2.0) * sp).tolist()


def _gen_nodules(P: dict, root: Path) -> list[dict]:
    """Nodule crops (tasks ``nodules`` and ``localisation``; the task name seeds the cases).

    Without ``offset_mm`` in ``P`` (the ``nodules`` task) each nodule is centred in the crop and the window
    is centred on a random lung point. With ``offset_mm`` (``localisation``) the nodule centre is moved by
    :func:`_offset_centre` (drawn from the case's own rng after its HU texture) and the window is shifted so
    that the nodule sits on a random lung point (:func:`_window_at_lung_point`); the centre voxel is recorded
    as ``center_x, center_y, center_z``.
    """
    tname = P["task"]
    size, sp, rule = P["size"], P["spacing"], P["rule"]
    offset_mm, min_mm = P.get("offset_mm"), P.get("min_mm", 3.0)
    limit_mm = P["max_fill"] * size * min(sp)
    recs = load_annotations()
    pools: dict[int, list] = {0: [], 1: []}
    for r in recs:
        lab = malignancy_label(r.malignancy, rule)
        if lab is None:
            continue
        ext = r.extent_mm()
        if ext.max() > limit_mm or ext.max() < min_mm:
            continue
        pools[lab].append(r)
    rng = _rng(P["seed"], tname, 0)
    n = P["n"]
    # one annotation per nodule, in a seeded random order, per class
    distinct: dict[int, list] = {}
    for lab in (0, 1):
        seen: set[str] = set()
        distinct[lab] = []
        for j in rng.permutation(len(pools[lab])):
            r = pools[lab][j]
            if r.nodule_id not in seen:
                seen.add(r.nodule_id)
                distinct[lab].append(r)
    if n > len(distinct[0]) + len(distinct[1]):
        raise SmartError(f"{tname}: n={n} exceeds the {len(distinct[0]) + len(distinct[1])} LIDC nodules that "
                         f"fit size={size} at spacing={sp} under rule={rule!r}")
    # half malignant; if a class runs out the other fills up
    n_mal = min(n // 2, len(distinct[1]))
    n_ben = min(n - n_mal, len(distinct[0]))
    n_mal = n - n_ben
    chosen: list[tuple[int, Any]] = [(0, r) for r in distinct[0][:n_ben]] + [(1, r) for r in distinct[1][:n_mal]]
    order = rng.permutation(len(chosen))
    rows = []
    for i, k in enumerate(order):
        lab, rec = chosen[int(k)]
        cs = _case_seed(P["seed"], tname, i)
        hrng = np.random.default_rng(cs)
        mask = rasterise(rec, sp, pad=0)
        hu = nodule_hu(mask, rec.texture, rec.calcification, hrng, sp)
        centre = (size // 2,) * 3 if offset_mm is None else _offset_centre(mask.shape, size, sp, offset_mm, hrng)
        best = None
        for attempt in range(6):
            ps = _case_seed(P["seed"], tname, i, attempt)
            window = "lung" if offset_mm is None else _window_at_lung_point(ps, size, sp, centre, hrng)
            ph = make_phantom((size,) * 3, sp, seed=ps, body_scale=1.0,
                              center_mm=window, nodules=[NoduleSpec(mask=mask, hu=hu, center=centre)])
            frac = ph.lesion.sum() / max(int(mask.sum()), 1)
            if best is None or frac > best[0]:
                best = (frac, ph)
            if frac >= 0.9:
                break
        ph = best[1]
        img_rel, msk_rel = f"images/nodule_{i:05d}.nii.gz", f"masks/nodule_{i:05d}.nii.gz"
        _save_nifti(root / img_rel, _hu_int16(ph.image), ph.spacing)
        _save_nifti(root / msk_rel, ph.lesion.astype(np.uint8), ph.spacing)
        row = {"image": img_rel, "label": lab, "mask": msk_rel, "patient_id": rec.patient_id,
               **_acq_cols(ph.acquisition), "annotation_id": rec.annotation_id, "nodule_id": rec.nodule_id}
        row.update({name: rec.ratings[name] for name in RATING_NAMES})
        row["volume_mm3"] = round(float(ph.lesion.sum()) * float(np.prod(sp)), 2)
        if offset_mm is not None:
            row.update({"center_x": centre[0], "center_y": centre[1], "center_z": centre[2]})
        row["phantom_seed"] = ph.meta["seed"]
        rows.append(row)
    return rows


def _gen_response(P: dict, root: Path) -> list[dict]:
    rng = _rng(P["seed"], "response", 0)
    shape, sp = P["shape"], P["spacing"]
    centre = tuple(s // 2 for s in shape)
    rows = []
    for i in range(P["n"]):
        cs = _case_seed(P["seed"], "response", i)
        spec = TumourSpec(radius_mm=float(rng.uniform(*P["radius_mm"])), irregularity=float(rng.random()),
                          heterogeneity=float(rng.random()), center=centre)
        ph = make_phantom(shape, sp, seed=cs, body_scale=1.0, center_mm="lung", tumour=spec)
        vol_ml = float(ph.lesion.sum()) * float(np.prod(sp)) / 1000.0
        p_true, logit = response_probability(vol_ml, spec.irregularity, spec.heterogeneity,
                                             tuple(P["radius_mm"]), tuple(P["beta"]), P["beta0"])
        outcome = int(rng.random() < p_true)
        img_rel, msk_rel = f"images/response_{i:05d}.nii.gz", f"masks/response_{i:05d}.nii.gz"
        _save_nifti(root / img_rel, _hu_int16(ph.image), ph.spacing)
        _save_nifti(root / msk_rel, ph.lesion.astype(np.uint8), ph.spacing)
        rows.append({"image": img_rel, "label": outcome, "mask": msk_rel, "patient_id": f"phantom-{cs:010d}",
                     **_acq_cols(ph.acquisition), "p_true": round(p_true, 6), "logit": round(logit, 6),
                     "volume_ml": round(vol_ml, 4), "irregularity": round(spec.irregularity, 6),
                     "heterogeneity": round(spec.heterogeneity, 6), "radius_mm": round(spec.radius_mm, 4),
                     "phantom_seed": cs})
    return rows


def _gen_segmentation(P: dict, root: Path) -> list[dict]:
    rng = _rng(P["seed"], "segmentation", 0)
    acqs = _balanced_acquisitions(P["n"], rng)
    rows = []
    for i in range(P["n"]):
        cs = _case_seed(P["seed"], "segmentation", i)
        spec = TumourSpec(radius_mm=float(rng.uniform(*P["radius_mm"])), irregularity=float(rng.random()),
                          heterogeneity=float(rng.random()))
        ph = make_phantom(P["shape"], P["spacing"], seed=cs, acquisition=acqs[i], body_scale=P["body_scale"],
                          center_mm="lung", tumour=spec)
        vol_ml = float(ph.lesion.sum()) * float(np.prod(P["spacing"])) / 1000.0
        img_rel, msk_rel = f"images/seg_{i:05d}.nii.gz", f"masks/seg_{i:05d}.nii.gz"
        _save_nifti(root / img_rel, _hu_int16(ph.image), ph.spacing)
        _save_nifti(root / msk_rel, ph.lesion.astype(np.uint8), ph.spacing)
        rows.append({"image": img_rel, "label": "", "mask": msk_rel, "patient_id": f"phantom-{cs:010d}",
                     **_acq_cols(ph.acquisition), "tumour_volume_ml": round(vol_ml, 4),
                     "radius_mm": round(spec.radius_mm, 4), "irregularity": round(spec.irregularity, 6),
                     "heterogeneity": round(spec.heterogeneity, 6), "phantom_seed": cs})
    return rows


def _gen_organs(P: dict, root: Path) -> list[dict]:
    rng = _rng(P["seed"], "organs", 0)
    n, size, per = P["n"], P["size"], P["per_subject"]
    classes: list[int] = []
    while len(classes) < n:
        classes += [int(c) for c in rng.permutation(len(ORGAN_CLASSES))]
    classes = classes[:n]
    rows = []
    for i, k in enumerate(classes):
        subj_idx = i // per
        cs = _case_seed(P["seed"], "organs", subj_idx)
        organ = ORGAN_CLASSES[k]
        subj = make_subject(cs, body_scale=1.0)
        c, ext = subj.organ_box_mm(organ)
        spacing = float(ext.max()) / (P["fill"] * size)
        c = c + ext * rng.uniform(-0.05, 0.05, 3)
        ph = make_phantom((size,) * 3, spacing, seed=cs, body_scale=1.0, center_mm=c.tolist())
        img_rel, msk_rel = f"images/organ_{i:05d}.nii.gz", f"masks/organ_{i:05d}.nii.gz"
        _save_nifti(root / img_rel, _hu_int16(ph.image), ph.spacing)
        _save_nifti(root / msk_rel, (ph.organs == k + 1).astype(np.uint8), ph.spacing)
        rows.append({"image": img_rel, "label": k, "mask": msk_rel, "patient_id": f"phantom-{cs:010d}",
                     **_acq_cols(ph.acquisition), "organ": organ, "spacing_mm": round(spacing, 4),
                     "organ_fraction": round(float((ph.organs == k + 1).mean()), 4), "phantom_seed": cs})
    return rows


def _gen_findings(P: dict, root: Path) -> list[dict]:
    """Thoraxes with co-occurring findings (:mod:`smartlib.data.findings`): the CT and its AP radiograph
    (:mod:`smartlib.data.drr`), each with its findings' masks packed into one bit mask (bit k = finding k)."""
    from PIL import Image

    from .drr import MU_WATER, drr, project_mask, to_radiograph_view, to_uint8
    from .findings import FINDINGS, make_findings_case, pack_masks

    full_scale = MU_WATER * P["shape"][1] * P["spacing"][1]  # a whole water-filled field of view is white
    rows = []
    for i in range(P["n"]):
        cs = _case_seed(P["seed"], "findings", i)
        c = make_findings_case(cs, shape=P["shape"], spacing=P["spacing"], prevalence_scale=P["prevalence_scale"])
        rel = {k: f"{k}/findings_{i:05d}.{ext}" for k, ext in
               (("images", "nii.gz"), ("findings_masks", "nii.gz"), ("drr", "png"), ("drr_masks", "png"))}
        _save_nifti(root / rel["images"], _hu_int16(c.image), c.spacing)
        _save_nifti(root / rel["findings_masks"], pack_masks(c.masks), c.spacing)
        (root / "drr").mkdir(exist_ok=True)
        (root / "drr_masks").mkdir(exist_ok=True)
        Image.fromarray(to_uint8(drr(c.image, c.spacing), full_scale)).save(root / rel["drr"])
        Image.fromarray(pack_masks(to_radiograph_view(np.stack([project_mask(m) for m in c.masks])))).save(root / rel["drr_masks"])
        rows.append({"image": rel["images"], "label": "", "mask": "", "patient_id": f"phantom-{cs:010d}",
                     **_acq_cols(c.acquisition), "findings_mask": rel["findings_masks"], "drr": rel["drr"],
                     "drr_mask": rel["drr_masks"],
                     **dict(zip(FINDINGS, c.labels.tolist())), "phantom_seed": cs})
    return rows


_GENERATORS: dict[str, Callable[[dict, Path], list[dict]]] = {
    "pretrain": _gen_pretrain, "nodules": _gen_nodules, "response": _gen_response,
    "segmentation": _gen_segmentation, "organs": _gen_organs, "localisation": _gen_nodules,
    "findings": _gen_findings,
}


def make_task(task: str, n: int, seed: int, out: str | os.PathLike, **params: Any) -> Path:
    """Generate (or reuse) a task set in ``out`` and return the path of its ``manifest.csv``.

    Tasks and defaults (all volumes int16 HU NIfTI, RAS+ affine ``diag(spacing)``):

    * ``pretrain`` — unlabeled phantoms, ``shape`` 96³ at ``spacing`` 2 mm; a fraction
      ``zoom_fraction`` (0.3) are zoomed views (body scale 0.55–0.9, random centre) and the rest
      whole trunks fitted into the field of view; random acquisition each. Extras: ``view``.
    * ``nodules`` — ``size``³ (64³) crops at 1 mm centred on a real LIDC-IDRI nodule shape
      (:func:`~smartlib.data.lidc.rasterise`) inserted into phantom lung with HU from its texture /
      calcification ratings; ``label`` from malignancy by ``rule`` ("paper", the default: 1–3 → 0, 4–5 → 1;
      "medmnist": <=2 → 0, >=4 → 1, 3 excluded); half the cases malignant (the other class fills up
      beyond the ~900 malignant nodules), one annotation per nodule, nodules at most ``max_fill``
      (0.75) of the crop and at least 3 mm;
      ``patient_id`` is the LIDC patient. ``mask`` = nodule. Extras: ``annotation_id, nodule_id``,
      the nine ratings (``subtlety … malignancy``), ``volume_mm3``.
    * ``response`` — 64³ crops at 1.5 mm centred on a lung tumour with ``radius_mm`` ~ U(8, 22),
      irregularity, heterogeneity ~ U(0, 1); ``label`` ~ Bernoulli(``p_true``) with the model of
      :func:`response_probability` (``beta`` = (1.0, 1.5, 1.0), ``beta0`` = 0). ``mask`` = tumour.
      Extras: ``p_true, logit, volume_ml, irregularity, heterogeneity, radius_mm``; ``ceiling.json``
      holds the AUC of ``p_true`` on the drawn labels and its expectation.
    * ``segmentation`` — 96³ at 2 mm thorax views (body scale 0.7, centred in a lung) with one lung
      tumour (radius 6–20 mm); ``mask`` = tumour, ``label`` empty; acquisitions cycle through all
      kernel x slice x contrast combinations so every subset is populated. Extras:
      ``tumour_volume_ml, radius_mm, irregularity, heterogeneity``.
    * ``organs`` — OrganMNIST3D-like ``size``³ crops (32³: divisible by 32, so a Swin with patch 2
      and five halvings fits; MedMNIST uses 28³) centred on one organ, isotropic spacing chosen so
      the organ spans ``fill`` (0.8) of the crop; ``label`` = index in ``ORGAN_CLASSES``, classes
      balanced; ``per_subject`` (3) organs per phantom subject. ``mask`` = that organ. Extras:
      ``organ, spacing_mm, organ_fraction``.
    * ``localisation`` — the ``nodules`` generator on the pretraining grid (``size``³ = 64³ at 2 mm;
      nodules of ``min_mm`` (6) to ``max_fill`` (0.4) of the crop) with the nodule **off centre**: per axis
      the centre moves by ~U(−``offset_mm``, ``offset_mm``) (64 mm, half the crop edge, so a nodule can sit
      anywhere), drawn from the case's own rng and clipped so the whole nodule stays inside; the window is
      shifted so that the nodule lies on a random lung point. ``offset_mm`` = 0 gives centred nodules.
      Extras: those of ``nodules`` plus ``center_x, center_y, center_z`` (the nodule's centre voxel).

    * ``findings`` — whole-thorax phantoms (``shape`` 64×56×64 at 2 mm, the body scaled to fill the field)
      with six co-occurring findings drawn at ``prevalence_scale`` × their ChestX-ray14 frequencies
      (:mod:`smartlib.data.findings`); ``mask`` is empty (no single label map): ``findings_mask`` holds the findings'
      masks packed as bits (bit k = finding k), ``drr`` / ``drr_mask`` the AP radiograph (8-bit PNG,
      :mod:`smartlib.data.drr`) and its projected packed masks. Extras: those, and one 0/1 column per finding.

    Every task also takes ``splits`` (train, val, test fractions, default 0.6/0.2/0.2), assigned by
    patient so no patient spans splits.

    Caching: if ``out/params.json`` equals the requested parameters (task, n, seed, version and
    every task parameter, defaults filled in) and the manifest exists, nothing is written.
    Otherwise the whole folder is regenerated atomically.

    Raises:
        SmartError: unknown task, ``n < 1``, negative seed, unknown / invalid parameter.
    """
    P = task_params(task, n, seed, **params)
    out = Path(out)
    manifest = out / "manifest.csv"
    pj = out / "params.json"
    if pj.is_file() and manifest.is_file():
        try:
            if read_json(pj) == P:
                return manifest
        except (OSError, ValueError):
            pass
    with atomic_dir(out) as tmp:
        rows = _GENERATORS[task](P, tmp)
        split_of = assign_splits([r["patient_id"] for r in rows], P["splits"], _rng(P["seed"], task, 1))
        cols = ["image", "label", "mask", "patient_id", "split", *_ACQ_COLS]
        final = []
        for r in rows:
            r = {**r, "split": split_of[r["patient_id"]]}
            final.append({**{c: r[c] for c in cols}, **{k: v for k, v in r.items() if k not in cols}})
        write_csv(tmp / "manifest.csv", final)
        if task == "response":
            p = np.array([r["p_true"] for r in final])
            y = np.array([r["label"] for r in final])
            emp = None
            if 0 < y.sum() < len(y):
                from sklearn.metrics import roc_auc_score

                emp = float(roc_auc_score(y, p))
            write_json(tmp / "ceiling.json", {
                "auc_p_true": emp, "auc_expected": expected_auc(p), "n": len(final), "positives": int(y.sum()),
                "model": "logit = beta0 + beta . (z_vol, z_irr, z_het); label ~ Bernoulli(sigmoid(logit))",
                "beta": P["beta"], "beta0": P["beta0"],
            })
        write_json(tmp / "params.json", P)
    return manifest
