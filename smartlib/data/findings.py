"""Chest findings painted into the CT phantoms: labels that co-occur, one mask per finding.

Six findings of the ChestX-ray14 label set (Wang et al., CVPR 2017, arXiv 1705.02315), each painted into
a whole-thorax phantom (:mod:`smartlib.data.phantom`) with its own voxel mask:

* **effusion** — pleural fluid (≈ 10 HU) layering in the dependent (posterior) part of one or both lungs
  of a supine patient, deepest at the lung base;
* **nodule** — a small round lesion in the lung (radius 5–8 mm on the set's grid, smooth margin);
* **mass** — a large lobulated lesion (radius 11–16 mm, irregular, heterogeneous interior);
* **pneumothorax** — air (−1000 HU, no vessels) in a rim along the lateral pleura and the apex of one lung;
* **consolidation** — a lung region filled with ≈ 25 HU tissue, its airways spared (air bronchograms);
* **cardiomegaly** — the heart enlarged by 30–45 % in each radius before painting; its mask is the heart.

**Labels co-occur and are imbalanced as in ChestX-ray14.** Each finding is drawn independently with
probability ``prevalence_scale`` × its ChestX-ray14 frequency (:data:`CXR14_COUNTS` of 112,120 images), so
the six keep ChestX-ray14's ratios (effusion 4.8 × as common as cardiomegaly) and about a third of the cases
have two or more. The default scale 2.5 keeps about 40 % of the cases finding-free (ChestX-ray14: 54 % with
14 labels) and gives even the rarest label a few positives in a test split of a hundred cases.

**A label is what was painted.** Findings are painted in the order consolidation, nodule, mass, effusion,
pneumothorax (a later one overwrites an earlier one where they overlap; the earlier mask loses those
voxels); a drawn finding whose mask ends below ``MIN_VOXELS`` voxels (e.g. no lung left to place it) is
placed again (3 tries) and otherwise recorded as absent, so every positive label has a non-empty mask.

**Scale.** The thorax is scaled to fill the field of view (``body_scale`` = field width / 356 mm); lesion
sizes are given on the set's grid, so relative to the chest they are larger than real nodules — at a 64²
radiograph a real 5 mm nodule would be under one pixel.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..errors import SmartError
from .phantom import Acquisition, TumourSpec, apply_acquisition, insert_lesion, tumour_mask
from .phantom.anatomy import ORGAN_LABEL, TISSUE, make_subject, paint_anatomy, streams
from .phantom.canvas import Canvas
from .phantom.lesions import lung_site
from .validate import check_seed, check_shape, check_spacing

__all__ = ["FINDINGS", "CXR14_COUNTS", "CXR14_IMAGES", "MIN_VOXELS", "THORAX_WIDTH_MM", "prevalences", "FindingsCase",
           "make_findings_case", "pack_masks", "unpack_masks"]

#: the findings, most to least frequent in ChestX-ray14; index k is bit k of a packed mask
FINDINGS: tuple[str, ...] = ("effusion", "nodule", "mass", "pneumothorax", "consolidation", "cardiomegaly")
#: images with each finding among the 112,120 of ChestX-ray14 (Data_Entry_2017.csv)
CXR14_COUNTS: dict[str, int] = {"effusion": 13317, "nodule": 6331, "mass": 5782, "pneumothorax": 5302,
                                "consolidation": 4667, "cardiomegaly": 2776}
CXR14_IMAGES = 112120
#: a finding painted into fewer voxels than this counts as absent
MIN_VOXELS = 4
#: the width of the field of view that holds a reference adult thorax at body scale 1 (mm)
THORAX_WIDTH_MM = 356.0
_LUNGS = (ORGAN_LABEL["lung_right"], ORGAN_LABEL["lung_left"])


def prevalences(scale: float = 2.5) -> dict[str, float]:
    """Finding → probability: ``scale`` × its ChestX-ray14 frequency (each must stay ≤ 1)."""
    if not (isinstance(scale, (int, float, np.floating)) and np.isfinite(scale) and scale > 0):
        raise SmartError(f"prevalence_scale={scale!r}: must be a positive number")
    p = {k: float(scale) * CXR14_COUNTS[k] / CXR14_IMAGES for k in FINDINGS}
    if max(p.values()) > 1:
        raise SmartError(f"prevalence_scale={scale!r}: gives effusion a probability above 1 (at most "
                         f"{CXR14_IMAGES / CXR14_COUNTS['effusion']:.2f})")
    return p


@dataclasses.dataclass
class FindingsCase:
    """One thorax with findings: ``image`` (X, Y, Z) float32 HU, ``masks`` (K, X, Y, Z) bool in :data:`FINDINGS`
    order, ``labels`` (K,) int 0/1 (1 exactly where the mask is non-empty), ``organs`` (X, Y, Z) uint8 organ labels
    (``ORGAN_CLASSES`` index + 1), ``spacing`` (mm), ``acquisition``, ``meta`` (seed, body scale, voxels per finding)."""

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    organs: np.ndarray
    spacing: tuple[float, float, float]
    acquisition: Acquisition
    meta: dict


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(K, *spatial) bool, K ≤ 8 → (*spatial) uint8 with bit k set where finding k is (masks may overlap)."""
    m = np.asarray(masks, bool)
    if m.ndim < 2 or m.shape[0] > 8:
        raise SmartError(f"masks shape {m.shape}: expected (K, ...) with K ≤ 8 findings")
    weights = (1 << np.arange(m.shape[0], dtype=np.uint16)).reshape(-1, *([1] * (m.ndim - 1)))
    return (m * weights).sum(axis=0).astype(np.uint8)


def unpack_masks(packed: np.ndarray, k: int = len(FINDINGS)) -> np.ndarray:
    """(*spatial) integer bit mask → (k, *spatial) bool (inverse of :func:`pack_masks`)."""
    p = np.rint(np.asarray(packed)).astype(np.int64)
    if (p < 0).any() or (p >= 1 << k).any():
        raise SmartError(f"packed mask values {int(p.min())}..{int(p.max())}: expected 0..{(1 << k) - 1} for {k} findings")
    return np.stack([(p >> i) & 1 for i in range(k)]).astype(bool)


def _lesion(cv: Canvas, lung: np.ndarray, rng: np.random.Generator, radius: tuple[float, float],
            irregularity: tuple[float, float], heterogeneity: float) -> np.ndarray:
    spec = TumourSpec(radius_mm=float(rng.uniform(*radius)), irregularity=float(rng.uniform(*irregularity)),
                      heterogeneity=heterogeneity)
    m, hu = tumour_mask(spec, cv.spacing, rng)
    c = lung_site(lung, m.shape, rng)
    if c is None:
        return np.zeros(lung.shape, bool)
    return insert_lesion(cv.img, np.zeros(lung.shape, np.uint8), m, hu, c, allowed=lung, tissue=cv.tis)


def _consolidation(cv: Canvas, lung: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lung inside a rough ellipsoid (radii 14–24 mm) around a random lung voxel, airways spared."""
    idx = np.argwhere(lung)
    if len(idx) == 0:
        return np.zeros(lung.shape, bool)
    c = idx[rng.integers(len(idx))]
    r = rng.uniform(14.0, 24.0, 3) / cv.spacing
    grids = np.ogrid[tuple(slice(0, s) for s in lung.shape)]
    lev = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) + 0.3 * cv.T2
    m = (lev < 1.0) & lung & (cv.tis != TISSUE["airway"])
    cv.img[m] = 25.0 + 8.0 * cv.T2[m]
    cv.tis[m] = TISSUE["lesion"]
    return m


def _effusion(cv: Canvas, lungs: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Fluid layering posteriorly (supine) in one or both lungs: depth D·√(1 − height / (0.6 · lung height)),
    D ~ U(12, 25) mm, measured from each (x, z) column's most posterior lung voxel."""
    sides = [lungs[int(rng.random() < 0.45)]] if rng.random() < 0.8 else list(lungs)
    out = np.zeros(lungs[0].shape, bool)
    sy, sz = cv.spacing[1], cv.spacing[2]
    for lung in sides:
        zs = np.flatnonzero(lung.any(axis=(0, 1)))
        if len(zs) == 0:
            continue
        height = (zs[-1] - zs[0] + 1) * sz
        depth = rng.uniform(12.0, 25.0) * np.sqrt(np.clip(1.0 - (np.arange(lung.shape[2]) - zs[0]) * sz / (0.6 * height), 0, 1))
        post = lung.argmax(axis=1)  # (X, Z): first lung voxel from posterior (Y grows anteriorly)
        y = np.arange(lung.shape[1])[None, :, None]
        m = lung & ((y - post[:, None, :]) * sy < depth[None, None, :])
        out |= m
    cv.img[out] = 10.0 + 4.0 * cv.T2[out]
    cv.tis[out] = TISSUE["soft_tissue"]
    return out


def _pneumothorax(cv: Canvas, lungs: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Air in a rim (6–12 mm from the pleura) over the lateral upper half and the apex of one lung."""
    from scipy.ndimage import distance_transform_edt

    right = rng.random() < 0.5
    lung = lungs[0 if right else 1]
    if not lung.any():
        return np.zeros(lung.shape, bool)
    dist = distance_transform_edt(lung, sampling=cv.spacing)
    xs, zs = np.flatnonzero(lung.any(axis=(1, 2))), np.flatnonzero(lung.any(axis=(0, 1)))
    xc, zmid, ztop = 0.5 * (xs[0] + xs[-1]), 0.5 * (zs[0] + zs[-1]), zs[-1]
    x = np.arange(lung.shape[0])[:, None, None]
    z = np.arange(lung.shape[2])[None, None, :]
    lateral = (x > xc) if right else (x < xc)  # X grows towards the patient's right
    apex = (ztop - z) * cv.spacing[2] < 25.0
    m = lung & (dist <= rng.uniform(6.0, 12.0)) & (z > zmid) & (lateral | apex)
    cv.img[m] = -1000.0
    cv.tis[m] = TISSUE["air"]
    return m


def make_findings_case(seed: int, labels: Sequence[int] | None = None, shape: Sequence[int] = (64, 56, 64),
                       spacing: Sequence[float] | float = (2.0, 2.0, 2.0), prevalence_scale: float = 2.5,
                       acquisition: Acquisition | None = None) -> FindingsCase:
    """A whole-thorax phantom (the field of view centred between lung base and apex) with findings.

    Args:
        seed: phantom seed (anatomy, acquisition and noise as :func:`~smartlib.data.phantom.make_phantom`; the
            findings draw from their own stream of the seed, so the same seed gives the same anatomy).
        labels: (K,) 0/1 per finding of :data:`FINDINGS`; None draws them with :func:`prevalences`.
        shape, spacing: the (X, Y, Z) grid; the body is scaled so the thorax fills the X field of view.
        prevalence_scale: see :func:`prevalences`. acquisition: None draws one from the seed.

    Returns: a :class:`FindingsCase`.
    """
    shape_t, spacing_t, seed = check_shape(shape), check_spacing(spacing), check_seed(seed)
    k = len(FINDINGS)
    frng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1D]))
    p = prevalences(prevalence_scale)
    if labels is None:
        want = np.array([frng.random() < p[f] for f in FINDINGS], dtype=int)
    else:
        want = np.asarray(labels).astype(int).ravel()
        if want.shape != (k,) or not np.isin(want, (0, 1)).all():
            raise SmartError(f"labels={list(labels)!r}: expected {k} values 0/1 in the order {', '.join(FINDINGS)}")
    rs = streams(seed)
    body_scale = shape_t[0] * spacing_t[0] / THORAX_WIDTH_MM
    subj = make_subject(seed, body_scale=body_scale)
    heart = subj.params["organs"]["heart"]
    factor = float(frng.uniform(1.30, 1.45))
    if want[FINDINGS.index("cardiomegaly")]:
        heart["r"] = [r * factor for r in heart["r"]]
    centre = [0.0, 0.0, 0.5 * (subj.params["lung_top"] + subj.params["dome_r"]) * subj.half[2]]
    acq = acquisition if acquisition is not None else Acquisition.random(rs["acquisition"])
    if not isinstance(acq, Acquisition):
        raise SmartError(f"acquisition={acquisition!r}: must be an Acquisition or None")
    cv = Canvas(subj, shape_t, spacing_t, centre, rs["fields"])
    paint_anatomy(cv, acq.contrast)
    lungs = [cv.lab == lab for lab in _LUNGS]
    owner = np.full(shape_t, -1, np.int8)
    painters = {
        "consolidation": lambda lung: _consolidation(cv, lung, frng),
        "nodule": lambda lung: _lesion(cv, lung, frng, (5.0, 8.0), (0.0, 0.3), 0.2),
        "mass": lambda lung: _lesion(cv, lung, frng, (11.0, 16.0), (0.3, 1.0), float(frng.uniform(0.3, 1.0))),
        "effusion": lambda lung: _effusion(cv, lungs, frng),
        "pneumothorax": lambda lung: _pneumothorax(cv, lungs, frng),
    }
    for name, paint in painters.items():
        i = FINDINGS.index(name)
        if not want[i]:
            continue
        for _ in range(3):
            lung = (lungs[0] | lungs[1]) & (owner < 0)
            m = paint(lung)
            if m.sum() >= MIN_VOXELS:
                owner[m] = i
                break
    masks = np.zeros((k, *shape_t), bool)
    for i in range(k):
        masks[i] = owner == i
    if want[FINDINGS.index("cardiomegaly")]:
        masks[FINDINGS.index("cardiomegaly")] = cv.lab == ORGAN_LABEL["heart"]
    masks &= masks.reshape(k, -1).sum(axis=1).reshape(k, 1, 1, 1) >= MIN_VOXELS
    got = masks.reshape(k, -1).any(axis=1).astype(int)
    image = apply_acquisition(cv.img, spacing_t, acq, rs["noise"])
    meta = {"seed": seed, "body_scale": round(body_scale, 4), "drawn": want.tolist(), "labels": got.tolist(),
            "heart_factor": round(factor, 4) if want[FINDINGS.index("cardiomegaly")] else 1.0,
            "voxels": {f: int(masks[i].sum()) for i, f in enumerate(FINDINGS)}}
    return FindingsCase(image=image, masks=masks, labels=got, organs=cv.lab, spacing=spacing_t, acquisition=acq, meta=meta)
