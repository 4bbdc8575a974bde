"""Digitally reconstructed radiographs (DRRs): a CT volume projected to an anterior–posterior chest radiograph.

A DRR simulates the X-ray film a CT would have produced, so one phantom gives both a 3D CT and a 2D
chest radiograph with the *same* findings and masks (the 2D setting of LT-ViT, arXiv 2311.07263,
which used ChestX-ray14 and CheXpert radiographs).

Physics, in three steps (parallel beam, one effective energy):

1. **HU → linear attenuation**: ``μ = μ_water · (1 + HU / 1000)``, clipped at 0 (air); ``μ_water``
   = 0.02 / mm, water's attenuation near the 60–70 keV effective energy of a chest radiograph.
2. **Line integral** along the anterior–posterior axis (Y of the RAS+ array): ``L(x, z) = Σ_y μ(x, y, z) · Δy``
   (Beer–Lambert: the detector sees ``I = I₀ · exp(−L)``).
3. **Detector log transform**: the radiograph value is ``−ln(I / I₀) = L`` — bright where much was
   absorbed (bone, heart, fluid), dark where little was (lung, air), as on a film.

:func:`to_radiograph_view` puts a projected (X, Z) array into the viewing convention of a chest
radiograph: rows run from head to feet, and the patient's right is on the viewer's left. Finding
masks are projected with :func:`project_mask` (a pixel is in the finding when its ray crosses it).

Why hand-written: the projection is one sum; the DRR tools of the field (e.g. DeepDRR, ITK's ray-cast
interpolator) model perspective geometry, spectra and scatter, and need a GPU or compiled extensions —
more than a 64² phantom radiograph needs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SmartError

__all__ = ["MU_WATER", "AP_AXIS", "hu_to_mu", "line_integral", "project_mask", "to_radiograph_view", "drr", "to_uint8"]

#: linear attenuation of water (1 / mm) at the effective energy of a chest radiograph (~60–70 keV)
MU_WATER = 0.02
#: the anterior–posterior axis of a RAS+ ``(X, Y, Z)`` array
AP_AXIS = 1


def _volume(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3 or min(a.shape) < 1:
        raise SmartError(f"{name} shape {a.shape}: expected a 3-D (X, Y, Z) array")
    return a


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """Linear attenuation (1 / mm) of Hounsfield units: ``μ_water · (1 + HU / 1000)``, clipped at 0. Any shape."""
    if not (np.isfinite(mu_water) and mu_water > 0):
        raise SmartError(f"mu_water={mu_water!r}: must be a positive number (1 / mm)")
    return np.clip(mu_water * (1.0 + np.asarray(hu, np.float64) / 1000.0), 0.0, None)


def line_integral(hu: np.ndarray, spacing: Sequence[float], axis: int = AP_AXIS, mu_water: float = MU_WATER) -> np.ndarray:
    """``L = Σ μ · Δ`` along ``axis`` of a volume (X, Y, Z) in HU with voxel ``spacing`` (mm) → (X, Z) float64.

    ``L`` is dimensionless (attenuation per mm × mm); ``exp(−L)`` is the transmitted fraction of the beam.
    """
    v = _volume(hu, "volume")
    sp = [float(s) for s in spacing]
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise SmartError(f"spacing={spacing!r}: expected 3 positive numbers (mm)")
    if axis not in (0, 1, 2):
        raise SmartError(f"axis={axis!r}: expected 0, 1 or 2")
    return hu_to_mu(v, mu_water).sum(axis=axis) * sp[axis]


def project_mask(mask: np.ndarray, axis: int = AP_AXIS) -> np.ndarray:
    """A finding mask (X, Y, Z) projected like the radiograph: a pixel is in the finding when its ray crosses
    at least one mask voxel (any along ``axis``). Returns (X, Z) bool, before :func:`to_radiograph_view`."""
    return _volume(mask, "mask").astype(bool).any(axis=axis)


def to_radiograph_view(xz: np.ndarray) -> np.ndarray:
    """(X, Z) projection → (rows, columns) of a chest radiograph: row 0 the most superior Z, column 0 the
    patient's right (the highest X of a RAS+ array), i.e. ``out[r, c] = xz[X − 1 − c, Z − 1 − r]``.
    Leading axes (e.g. findings) are kept: (..., X, Z) → (..., Z, X)."""
    a = np.asarray(xz)
    if a.ndim < 2:
        raise SmartError(f"projection shape {a.shape}: expected (..., X, Z)")
    return np.swapaxes(a[..., ::-1, ::-1], -1, -2)


def drr(hu: np.ndarray, spacing: Sequence[float], mu_water: float = MU_WATER) -> np.ndarray:
    """AP radiograph of a CT volume (X, Y, Z) in HU: the line integral along Y (``−ln(I / I₀)``) in the
    radiograph view (:func:`to_radiograph_view`), (Z, X) float64 ≥ 0."""
    return to_radiograph_view(line_integral(hu, spacing, AP_AXIS, mu_water))


def to_uint8(radiograph: np.ndarray, full_scale: float) -> np.ndarray:
    """8-bit image of a radiograph (any shape): ``round(255 · min(L / full_scale, 1))``.

    One fixed ``full_scale`` for a whole set (not a per-image window) keeps the grey values of different
    cases comparable — what a detector with a fixed exposure would record.
    """
    if not (np.isfinite(full_scale) and full_scale > 0):
        raise SmartError(f"full_scale={full_scale!r}: must be a positive number")
    return np.rint(255.0 * np.clip(np.asarray(radiograph, np.float64) / float(full_scale), 0.0, 1.0)).astype(np.uint8)
