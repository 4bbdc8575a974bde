"""Procedural CT phantoms of the human trunk, in Hounsfield units, deterministic per seed.

A phantom is a field of view (a window of ``shape`` voxels at ``spacing`` mm) onto a randomly
drawn *subject*: a trunk from the lung apices to the proximal femurs built from superellipsoids,
tubes and periodic bone patterns, all evaluated on coordinates that a smooth random displacement
field (a coarse random grid, B-spline interpolated) deforms. Everything is vectorised NumPy: a
128³ volume takes well under a second on one core.

Array convention (as NIfTI / MONAI ``LoadImage`` give): axes ``(X, Y, Z)`` with an affine of
``diag(spacing)`` in RAS+ orientation, i.e. index increases towards the patient's **right** (X),
**anterior** (Y) and **superior** (Z). Axial slices are ``vol[:, :, z]``; the thorax is at high Z,
the pelvis at low Z.

Random streams are split from one :class:`numpy.random.SeedSequence` per seed, so the same seed
with a different acquisition gives the same anatomy (only the imaging changes), and adding a lesion
does not change the anatomy either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import SmartError

__all__ = [
    "ORGAN_CLASSES",
    "TISSUE_CLASSES",
    "KERNELS",
    "SLICE_MM",
    "Acquisition",
    "NoduleSpec",
    "TumourSpec",
    "Phantom",
    "Subject",
    "make_subject",
    "make_phantom",
    "insert_lesion",
    "tumour_mask",
    "apply_acquisition",
]

#: OrganMNIST3D's 11 classes, in its index order; the organ label value is ``index + 1``.
ORGAN_CLASSES: tuple[str, ...] = (
    "liver", "kidney_right", "kidney_left", "femur_right", "femur_left", "bladder",
    "heart", "lung_right", "lung_left", "spleen", "pancreas",
)
#: Tissue classes of :attr:`Phantom.tissue` (value = index).
TISSUE_CLASSES: tuple[str, ...] = (
    "air", "fat", "muscle", "soft_tissue", "lung", "bone", "blood", "airway", "lesion",
)
KERNELS: tuple[str, ...] = ("smooth", "medium", "sharp")
SLICE_MM: tuple[float, ...] = (2.5, 5.0)

_LAB = {name: i + 1 for i, name in enumerate(ORGAN_CLASSES)}
_T = {name: i for i, name in enumerate(TISSUE_CLASSES)}

# Reference adult trunk (mm): full width, AP depth, height (lung apex to proximal femur).
_REF_SIZE = np.array([330.0, 230.0, 560.0])
_REF_HALF = _REF_SIZE / 2.0


# --------------------------------------------------------------------------------------------
# public dataclasses
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acquisition:
    """How a phantom is "scanned".

    Attributes:
        noise_hu: standard deviation (HU) of the additive noise for the medium kernel; the smooth
            kernel gives about 0.6x and the sharp kernel about 1.6x this, with matching texture.
        kernel: reconstruction kernel, one of ``"smooth"`` (Gaussian blur), ``"medium"`` (light
            blur) or ``"sharp"`` (unsharp-mask sharpening).
        slice_mm: reconstructed slice thickness in mm (2.5 or 5.0): partial-volume averaging along
            Z over a slab of this thickness, on the native grid. ``None`` = native (no averaging).
        contrast: intravenous contrast (enhances blood, heart, aorta, kidneys, liver, spleen).
    """

    noise_hu: float = 10.0
    kernel: str = "medium"
    slice_mm: float | None = None
    contrast: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.noise_hu, (int, float, np.floating, np.integer)) or isinstance(self.noise_hu, bool) \
                or not math.isfinite(float(self.noise_hu)) or float(self.noise_hu) < 0:
            raise SmartError(f"Acquisition noise_hu={self.noise_hu!r}: must be a finite number >= 0")
        if self.kernel not in KERNELS:
            raise SmartError(f"Acquisition kernel={self.kernel!r}: unknown kernel, expected one of {KERNELS}")
        if self.slice_mm is not None:
            if isinstance(self.slice_mm, bool) or not isinstance(self.slice_mm, (int, float, np.floating, np.integer)) \
                    or not (0 < float(self.slice_mm) <= 20):
                raise SmartError(f"Acquisition slice_mm={self.slice_mm!r}: must be None or a thickness in (0, 20] mm")
        if not isinstance(self.contrast, (bool, np.bool_)):
            raise SmartError(f"Acquisition contrast={self.contrast!r}: must be True or False")

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Acquisition":
        """Draw an acquisition: noise 5–30 HU, kernel uniform, slices 2.5 or 5 mm, contrast p=0.5."""
        noise = float(np.round(rng.uniform(5.0, 30.0), 2))
        kernel = KERNELS[int(rng.integers(len(KERNELS)))]
        slice_mm = SLICE_MM[int(rng.integers(len(SLICE_MM)))]
        contrast = bool(rng.random() < 0.5)
        return cls(noise_hu=noise, kernel=kernel, slice_mm=slice_mm, contrast=contrast)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON/CSV friendly)."""
        return {"noise_hu": float(self.noise_hu), "kernel": self.kernel,
                "slice_mm": None if self.slice_mm is None else float(self.slice_mm),
                "contrast": bool(self.contrast)}


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


@dataclass
class Phantom:
    """One phantom volume and its ground truth.

    Attributes:
        image: ``(X, Y, Z)`` float32, Hounsfield units.
        organs: ``(X, Y, Z)`` uint8, ``ORGAN_CLASSES`` index + 1, 0 = background/other.
        lesion: ``(X, Y, Z)`` uint8, 1 = nodule/tumour voxel.
        spacing: voxel size in mm along (X, Y, Z).
        acquisition: the :class:`Acquisition` applied.
        meta: seed, subject size, window centre, organ centres, lesions, …
        tissue: ``(X, Y, Z)`` uint8 tissue class (``TISSUE_CLASSES`` index), before acquisition effects.
    """

    image: np.ndarray
    organs: np.ndarray
    lesion: np.ndarray
    spacing: tuple[float, float, float]
    acquisition: Acquisition
    meta: dict = field(default_factory=dict)
    tissue: np.ndarray | None = None

    @property
    def affine(self) -> np.ndarray:
        """4x4 ``diag(spacing, 1)`` affine (RAS+)."""
        return np.diag([*map(float, self.spacing), 1.0])


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        t = tuple(shape)
    except TypeError:
        raise SmartError(f"shape={shape!r}: must be a sequence of 3 positive integers") from None
    if len(t) != 3 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 4 for s in t):
        raise SmartError(f"shape={shape!r}: must be 3 integers >= 4 (X, Y, Z)")
    return tuple(int(s) for s in t)  # type: ignore[return-value]


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    if isinstance(spacing, (int, float, np.floating, np.integer)) and not isinstance(spacing, bool):
        spacing = (spacing,) * 3
    try:
        t = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise SmartError(f"spacing={spacing!r}: must be 3 positive numbers (mm)") from None
    if len(t) != 3 or not all(math.isfinite(s) and s > 0 for s in t):
        raise SmartError(f"spacing={spacing!r}: must be 3 positive finite numbers (mm)")
    return t  # type: ignore[return-value]


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    return int(seed)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    names = ("subject", "fields", "lesion", "acquisition", "noise")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: np.random.default_rng(c) for n, c in zip(names, children)}


# --------------------------------------------------------------------------------------------
# subject: all random anatomy parameters, independent of the field of view
# --------------------------------------------------------------------------------------------
# organ table: centre (normalised u, v, w), radii (mm at the reference size), yaw (deg), exponent
_ORGANS_BASE: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float, float]] = {
    "liver": ((0.40, 0.02, 0.14), (85.0, 78.0, 70.0), 10.0, 2.2),
    "spleen": ((-0.52, -0.36, 0.14), (28.0, 50.0, 45.0), -35.0, 2.0),
    "kidney_right": ((0.33, -0.50, -0.07), (27.0, 24.0, 52.0), 25.0, 2.0),
    "kidney_left": ((-0.33, -0.50, -0.03), (27.0, 24.0, 52.0), -25.0, 2.0),
    "pancreas": ((-0.06, -0.12, 0.02), (72.0, 13.0, 14.0), -12.0, 2.0),
    "bladder": ((0.0, 0.38, -0.70), (42.0, 36.0, 32.0), 0.0, 2.0),
    "heart": ((-0.10, 0.26, 0.40), (54.0, 48.0, 48.0), -30.0, 2.0),
    "femur_right": ((0.50, -0.05, -0.84), (23.0, 23.0, 23.0), 0.0, 2.0),
    "femur_left": ((-0.50, -0.05, -0.84), (23.0, 23.0, 23.0), 0.0, 2.0),
    "lung_right": ((0.44, -0.02, 0.60), (70.0, 80.0, 100.0), 0.0, 2.3),
    "lung_left": ((-0.44, -0.02, 0.60), (67.0, 80.0, 100.0), 0.0, 2.3),
}


@dataclass
class Subject:
    """A random trunk: size in mm and every anatomical parameter (normalised body coordinates).

    Normalised coordinates ``(u, v, w)`` are body-frame millimetres divided by :attr:`half`, with
    ``u`` towards the patient's right, ``v`` anterior and ``w`` superior; the skin is near
    ``|u| = 1`` at the widest level.
    """

    seed: int
    half: np.ndarray  # (3,) half width, half depth, half height in mm
    params: dict

    def to_norm(self, p_mm: Sequence[float]) -> np.ndarray:
        return np.asarray(p_mm, float) / self.half

    def to_mm(self, p_norm: Sequence[float]) -> np.ndarray:
        return np.asarray(p_norm, float) * self.half

    def organ_box_mm(self, organ: str) -> tuple[np.ndarray, np.ndarray]:
        """Centre (body-frame mm) and approximate full extent (mm, per axis) of an organ."""
        if organ not in ORGAN_CLASSES:
            raise SmartError(f"organ={organ!r}: unknown organ, expected one of {ORGAN_CLASSES}")
        o = self.params["organs"][organ]
        c = np.array(o["c"], float)
        r = np.array(o["r"], float)
        if organ.startswith("lung"):
            top, base = self.params["lung_top"], o["base"]
            c = np.array([c[0], c[1], 0.5 * (top + base)])
            r = np.array([r[0], r[1], 0.5 * (top - base)])
        if organ == "liver":
            c = c + np.array([-0.06, 0.04, 0.0])
            r = r * np.array([1.25, 1.1, 1.0])
        if organ.startswith("femur"):
            c = c + np.array([0.03 * np.sign(c[0]), 0.0, -0.03])
            r = r * np.array([1.6, 1.1, 1.6])
        ext = 2 * r
        yaw = math.radians(o.get("yaw", 0.0))
        if yaw:
            ex = abs(math.cos(yaw)) * ext[0] + abs(math.sin(yaw)) * ext[1]
            ey = abs(math.sin(yaw)) * ext[0] + abs(math.cos(yaw)) * ext[1]
            ext = np.array([ex, ey, ext[2]])
        return c * self.half, ext * self.half

    def lung_point_mm(self, rng: np.random.Generator, margin: float = 0.25) -> np.ndarray:
        """A random body-frame point (mm) well inside a lung (``margin`` = fraction of lung radius)."""
        p = self.params
        for _ in range(1000):
            side = "lung_right" if rng.random() < 0.5 else "lung_left"
            o = p["organs"][side]
            c = np.array(o["c"])
            r = np.array(o["r"])
            base = o["base"]
            top = p["lung_top"]
            w = rng.uniform(base + 0.05, top - 0.08)
            u = c[0] + rng.uniform(-1, 1) * r[0]
            v = c[1] + rng.uniform(-1, 1) * r[1]
            taper = np.clip((top - w) / 0.3, 0.05, 1.0) ** 0.5
            lev = ((u - c[0]) / (r[0] * taper)) ** 2 + ((v - c[1]) / (r[1] * taper)) ** 2
            if lev > (1 - margin) ** 2 or w < _dome(u, v, p) + 0.06:
                continue
            h = p["organs"]["heart"]
            dh = _rot(np.array([u, v, w]) - np.array(h["c"]), h["yaw"]) / (np.array(h["r"]) * 1.25)
            if np.sum(dh ** 2) < 1.0:
                continue
            if abs(u) < 0.15:
                continue
            return np.array([u, v, w]) * self.half
        raise RuntimeError("could not sample a lung point")  # pragma: no cover - geometry guarantees one


def _rot(d: np.ndarray, yaw_deg: float) -> np.ndarray:
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])


def _dome(u, v, p: dict):
    """Diaphragm height (normalised w) as a function of (u, v): two domes, the right one higher."""
    du_r = (u - 0.40) / 0.42
    du_l = (u + 0.40) / 0.42
    dv = (v + 0.05) / 0.75
    dome_r = p["dome_r"] - 0.16 * (du_r ** 2 + dv ** 2)
    dome_l = p["dome_l"] - 0.16 * (du_l ** 2 + dv ** 2)
    return np.maximum(dome_r, dome_l)


def make_subject(seed: int, fov_mm: Sequence[float] | None = None, body_scale: float | None = None) -> Subject:
    """Draw the random anatomy of subject ``seed``.

    Args:
        seed: non-negative integer.
        fov_mm: field of view ``(X, Y, Z)`` in mm, used when ``body_scale`` is None.
        body_scale: ``None`` = fit the whole trunk into ``fov_mm`` (a "whole-trunk" volume,
            anisotropically scaled); a float = physical scale relative to the reference adult
            (330 x 230 x 560 mm), times per-subject variation.
    """
    seed = _check_seed(seed)
    rng = _streams(seed)["subject"]
    size_f = rng.uniform(0.85, 1.1)
    depth_ratio = rng.uniform(0.62, 0.76)
    height_f = rng.uniform(0.92, 1.08)
    fit_f = rng.uniform(0.80, 0.97)
    fit_z = rng.uniform(0.95, 1.08)
    p: dict[str, Any] = {}
    p["t_fat"] = rng.uniform(0.03, 0.13)
    p["t_mus"] = rng.uniform(0.04, 0.07)
    p["belly"] = rng.uniform(-0.05, 0.12)
    p["waist"] = rng.uniform(0.04, 0.14)
    p["hips"] = rng.uniform(-0.04, 0.06)
    p["vis_fat"] = rng.uniform(-0.6, 0.6)
    p["gas"] = rng.uniform(0.9, 1.5)
    p["dome_r"] = rng.uniform(0.28, 0.34)
    p["dome_l"] = p["dome_r"] - rng.uniform(0.0, 0.05)
    p["lung_top"] = rng.uniform(0.93, 0.99)
    p["lung_hu"] = rng.uniform(-880, -820)
    p["fat_hu"] = rng.uniform(-110, -85)
    p["mus_hu"] = rng.uniform(40, 60)
    p["enh"] = rng.uniform(0.75, 1.25)
    p["bone_hu"] = rng.uniform(180, 280)
    p["cortex_hu"] = rng.uniform(650, 900)
    p["warp"] = rng.uniform(0.015, 0.035)
    p["spine_v"] = rng.uniform(-0.60, -0.52)
    organs: dict[str, dict] = {}
    for name, (c, r_mm, yaw, pe) in _ORGANS_BASE.items():
        jit = np.array([0.03, 0.03, 0.03]) * rng.standard_normal(3)
        rf = np.exp(0.10 * rng.standard_normal(3))
        organs[name] = {
            "c": (np.array(c) + jit).tolist(),
            "r": (np.array(r_mm) / _REF_HALF * rf).tolist(),
            "yaw": float(yaw + 8.0 * rng.standard_normal()),
            "p": float(pe),
        }
    # symmetric structures: keep femurs level-ish and lungs consistent with the domes
    for side in ("femur_right", "femur_left"):
        organs[side]["yaw"] = 0.0
    fr = organs["femur_right"]["r"][0]
    organs["femur_right"]["r"] = organs["femur_left"]["r"] = [fr, fr * _REF_HALF[0] / _REF_HALF[1], fr * _REF_HALF[0] / _REF_HALF[2]]
    organs["lung_right"]["base"] = p["dome_r"] + 0.02
    organs["lung_left"]["base"] = p["dome_l"] + 0.02
    for side in ("lung_right", "lung_left"):
        organs[side]["yaw"] = 0.0
    p["organs"] = organs
    # vessel trees and other stochastic structures: drawn here so the anatomy is fixed by the seed
    p["trees"] = _draw_trees(rng)
    p["gas_seed"] = int(rng.integers(2**31))
    dims = _REF_SIZE * np.array([size_f, size_f * depth_ratio / (_REF_SIZE[1] / _REF_SIZE[0]), height_f])
    if body_scale is None:
        if fov_mm is None:
            raise SmartError("make_subject: give fov_mm when body_scale is None")
        fov = np.asarray(fov_mm, float)
        # fit: the widest level spans fit_f of the X field of view, depth follows the subject's ratio
        hx = min(0.5 * fov[0] * fit_f, 0.5 * fov[1] * fit_f / depth_ratio)
        half = np.array([hx, hx * depth_ratio, 0.5 * fov[2] * fit_z])
    else:
        bs = float(body_scale)
        if not (math.isfinite(bs) and bs > 0):
            raise SmartError(f"body_scale={body_scale!r}: must be a positive number or None")
        half = dims / 2.0 * bs
    p["size_mm"] = (2 * half).tolist()
    return Subject(seed=seed, half=half, params=p)


def _draw_trees(rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """Pulmonary vessel trees: list of (side, start_norm, end_norm, radius_mm_at_reference)."""
    segs = []
    for side in (1, -1):
        hilum = np.array([0.20 * side, -0.02, 0.52])
        for k in range(4):
            # principal directions: upper, lateral, lower, posterior-lower
            base_dir = [np.array([0.3 * side, 0.0, 1.0]), np.array([1.0 * side, 0.2, 0.2]),
                        np.array([0.5 * side, 0.1, -1.0]), np.array([0.5 * side, -0.8, -0.6])][k]
            stack = [(hilum, base_dir / np.linalg.norm(base_dir), 0.22, 5.0, 0)]
            while stack:
                a, d, length, rad, depth = stack.pop()
                d = d + 0.35 * rng.standard_normal(3)
                d /= np.linalg.norm(d)
                b = a + d * length * np.array([1.0, 1.4, 1.0])
                segs.append((side, a, b, rad))
                if depth < 3:
                    for _ in range(2):
                        stack.append((b, d, length * rng.uniform(0.6, 0.85), rad * 0.68, depth + 1))
    return segs


# --------------------------------------------------------------------------------------------
# smooth random fields
# --------------------------------------------------------------------------------------------
def _bspline_matrix(t: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """(len(t), n) cubic B-spline interpolation weights of coarse nodes spanning [lo, hi]."""
    s = (np.clip(t, lo, hi) - lo) / (hi - lo) * (n - 1)
    i0 = np.floor(s).astype(int)
    f = s - i0
    w = np.stack([(1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
                  (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6, f ** 3 / 6], axis=1)
    m = np.zeros((len(t), n), np.float64)
    rows = np.arange(len(t))
    for k in range(4):
        idx = np.clip(i0 - 1 + k, 0, n - 1)
        np.add.at(m, (rows, idx), w[:, k])
    return m


def _smooth_field(rng: np.random.Generator, channels: int, n: int, u: np.ndarray, v: np.ndarray,
                  w: np.ndarray, lo: float = -1.4, hi: float = 1.4) -> np.ndarray:
    """``channels`` smooth random fields (unit-ish std) on the separable grid u x v x w (normalised)."""
    g = rng.standard_normal((channels, n, n, n)).astype(np.float32)
    bu, bv, bw = (_bspline_matrix(a, lo, hi, n).astype(np.float32) for a in (u, v, w))
    out = np.tensordot(g, bw, axes=([3], [1]))            # c, a, b, Z
    out = np.einsum("cabz,yb->cayz", out, bv)             # c, a, Y, Z
    out = np.tensordot(bu, out, axes=([1], [1]))           # X, c, Y, Z
    out = np.moveaxis(out, 1, 0).astype(np.float32)
    return out * np.float32(3.0)  # B-spline smoothing shrinks the std to ~0.33


# --------------------------------------------------------------------------------------------
# the canvas: warped coordinates of the window plus the image / label / tissue arrays
# --------------------------------------------------------------------------------------------
class _Canvas:
    def __init__(self, subj: Subject, shape, spacing, center_mm, fields_rng) -> None:
        self.subj = subj
        self.half = subj.half
        self.shape = shape
        self.spacing = np.array(spacing)
        axes_mm = [center_mm[i] + (np.arange(shape[i]) - (shape[i] - 1) / 2.0) * spacing[i] for i in range(3)]
        self.u1, self.v1, self.w1 = (axes_mm[i] / self.half[i] for i in range(3))
        f = _smooth_field(fields_rng, 4, 7, self.u1, self.v1, self.w1)
        g = _smooth_field(fields_rng, 3, 14, self.u1, self.v1, self.w1)
        a = np.float32(subj.params["warp"])
        self.U = self.u1[:, None, None].astype(np.float32) + a * f[0]
        self.V = self.v1[None, :, None].astype(np.float32) + a * f[1]
        self.W = self.w1[None, None, :].astype(np.float32) + a * f[2]
        self.T = f[3]            # low-frequency texture
        self.T2 = g[0]           # mid-frequency texture / boundary roughness
        self.G1, self.G2 = g[1], g[2]  # bowel gas / visceral fat patterns
        self.pad = float(subj.params["warp"]) * 3.0
        self.img = np.full(shape, -1000.0, np.float32)
        self.lab = np.zeros(shape, np.uint8)
        self.tis = np.zeros(shape, np.uint8)
        self.vox_mm = float(np.mean(spacing))

    # index ranges of the box [lo, hi] (normalised), padded by the warp amplitude
    def box(self, lo, hi):
        sl = []
        for ax, a in enumerate((self.u1, self.v1, self.w1)):
            i0 = int(np.searchsorted(a, lo[ax] - self.pad, "left"))
            i1 = int(np.searchsorted(a, hi[ax] + self.pad, "right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)

    def coords(self, sl):
        return self.U[sl], self.V[sl], self.W[sl]

    def paint(self, sl, m, hu, label=None, tissue=None):
        if isinstance(hu, np.ndarray):
            self.img[sl][m] = hu[m]
        else:
            self.img[sl][m] = hu
        if label is not None:
            self.lab[sl][m] = label
        if tissue is not None:
            self.tis[sl][m] = tissue

    def ellipsoid(self, c, r, yaw=0.0, p=2.0, rough=0.0):
        """(slices, level) of a (super)ellipsoid; inside where level < 1."""
        c = np.asarray(c, float)
        r = np.asarray(r, float)
        ext = np.full(3, r.max()) if yaw else r
        ext = np.array([ext[0], ext[1], r[2]]) if yaw else ext
        sl = self.box(c - ext * (1 + rough), c + ext * (1 + rough))
        if sl is None:
            return None, None
        U, V, W = self.coords(sl)
        du, dv, dw = U - np.float32(c[0]), V - np.float32(c[1]), W - np.float32(c[2])
        if yaw:
            ca, sa = np.float32(math.cos(math.radians(yaw))), np.float32(math.sin(math.radians(yaw)))
            du, dv = ca * du + sa * dv, -sa * du + ca * dv
        if p == 2.0:
            lev = (du / np.float32(r[0])) ** 2 + (dv / np.float32(r[1])) ** 2 + (dw / np.float32(r[2])) ** 2
        else:
            pp = np.float32(p)
            lev = (np.abs(du / np.float32(r[0])) ** pp + np.abs(dv / np.float32(r[1])) ** pp
                   + np.abs(dw / np.float32(r[2])) ** pp)
        if rough:
            lev = lev + np.float32(rough) * self.T2[sl]
        return sl, lev

    def tube(self, a, b, r0_mm, r1_mm, hu, label=None, tissue=None, where=None, blend=True):
        """Anti-aliased tube from a to b (normalised) with radius r0→r1 mm; returns (sl, alpha)."""
        a = np.asarray(a, float)
        b = np.asarray(b, float)
        rmax = max(r0_mm, r1_mm) + self.vox_mm
        rn = rmax / self.half
        sl = self.box(np.minimum(a, b) - rn, np.maximum(a, b) + rn)
        if sl is None:
            return None, None
        U, V, W = self.coords(sl)
        h = self.half.astype(np.float32)
        A = (a * self.half).astype(np.float32)
        D = ((b - a) * self.half).astype(np.float32)
        dd = float(np.dot(D, D)) or 1e-6
        px, py, pz = U * h[0] - A[0], V * h[1] - A[1], W * h[2] - A[2]
        t = np.clip((px * D[0] + py * D[1] + pz * D[2]) / np.float32(dd), 0, 1)
        dist = np.sqrt((px - t * D[0]) ** 2 + (py - t * D[1]) ** 2 + (pz - t * D[2]) ** 2)
        r = np.float32(r0_mm) + t * np.float32(r1_mm - r0_mm)
        alpha = np.clip((r - dist) / np.float32(self.vox_mm) + 0.5, 0, 1)
        if where is not None:
            alpha = alpha * where(sl)
        m = alpha > 0
        if not m.any():
            return sl, alpha
        img = self.img[sl]
        if blend:
            img[m] = img[m] + alpha[m] * (np.float32(hu) - img[m])
        else:
            img[m] = hu
        core = alpha >= 0.5
        if label is not None:
            self.lab[sl][core] = label
        if tissue is not None:
            self.tis[sl][core] = tissue
        return sl, alpha


# --------------------------------------------------------------------------------------------
# anatomy
# --------------------------------------------------------------------------------------------
def _hu(p: dict, contrast: bool) -> dict[str, float]:
    e = p["enh"] if contrast else 0.0
    return {
        "fat": p["fat_hu"], "muscle": p["mus_hu"], "soft": 30.0, "lung": p["lung_hu"],
        "blood": 40.0 + 250.0 * e, "myo": 45.0 + 70.0 * e, "vessel_lung": 40.0 + 160.0 * e,
        "liver": 60.0 + 55.0 * e, "spleen": 48.0 + 75.0 * e, "kidney": 33.0 + 140.0 * e,
        "pancreas": 45.0 + 55.0 * e, "bladder": 10.0, "portal": 45.0 + 130.0 * e,
        "bone": p["bone_hu"], "cortex": p["cortex_hu"], "disc": 80.0, "csf": 10.0,
        "cartilage": 140.0, "marrow": 60.0,
    }


def _paint_anatomy(cv: _Canvas, contrast: bool) -> None:
    p = cv.subj.params
    hu = _hu(p, contrast)
    og = p["organs"]
    U, V, W = cv.U, cv.V, cv.W
    w1 = cv.w1.astype(np.float32)[None, None, :]
    # ---- body outline: ellipse in (u, v) whose half-axes vary with height
    waist = np.exp(-((w1 - 0.0) / 0.35) ** 2)
    hips = np.exp(-((w1 + 0.72) / 0.25) ** 2)
    a_w = 1.0 - np.float32(p["waist"]) * waist + np.float32(p["hips"]) * hips - 0.05 * np.clip(w1 - 0.85, 0, None) / 0.15
    b_ant = 0.92 + np.float32(p["belly"]) * np.exp(-((w1 + 0.15) / 0.4) ** 2)
    vb = np.float32(0.0)
    b = np.where(V > vb, b_ant, np.float32(0.95))
    r2 = (U / a_w) ** 2 + ((V - vb) / b) ** 2 + np.float32(0.04) * cv.T2
    inner1 = np.float32((1 - p["t_fat"]) ** 2)
    inner2 = np.float32((1 - p["t_fat"] - p["t_mus"]) ** 2)
    body = r2 < 1.0
    cv.paint((slice(None),) * 3, body, hu["fat"] + 6.0 * cv.T, tissue=_T["fat"])
    mus = r2 < inner1
    cv.paint((slice(None),) * 3, mus, hu["muscle"] + 5.0 * cv.T, tissue=_T["muscle"])
    interior = r2 < inner2
    cv.interior = interior
    cv.r2 = r2
    # interior: thorax = mediastinal fat; abdomen / pelvis = bowel soft tissue, visceral fat, gas
    dome = _dome(U, V, p)
    thorax = W > dome
    abd = interior & ~thorax
    vis = cv.G2 > np.float32(p["vis_fat"] * 1.0)
    soft = abd & ~vis
    cv.paint((slice(None),) * 3, interior & thorax, hu["fat"] + 5.0 * cv.T, tissue=_T["fat"])
    cv.paint((slice(None),) * 3, abd & vis, hu["fat"] + 5.0 * cv.T, tissue=_T["fat"])
    cv.paint((slice(None),) * 3, soft, hu["soft"] + 8.0 * cv.T2, tissue=_T["soft_tissue"])
    gas = soft & (cv.G1 > np.float32(p["gas"])) & (W < 0.05) & (W > -0.62) & (V > -0.35)
    cv.paint((slice(None),) * 3, gas, -990.0, tissue=_T["air"])

    # ---- muscles: paraspinal (whole trunk) and psoas (abdomen)
    sv = p["spine_v"]
    for s in (1, -1):
        sl, lev = cv.ellipsoid((0.16 * s, sv - 0.26, 0.1), (0.14, 0.22, 1.1))
        if sl is not None:
            cv.paint(sl, (lev < 1) & interior[sl], hu["muscle"] + 5.0 * cv.T[sl], tissue=_T["muscle"])
        sl, lev = cv.ellipsoid((0.19 * s, sv + 0.12, -0.33), (0.09, 0.15, 0.3))
        if sl is not None:
            cv.paint(sl, (lev < 1) & interior[sl], hu["muscle"] + 5.0 * cv.T[sl], tissue=_T["muscle"])

    below = lambda sl: (cv.W[sl] < dome[sl] - 0.01) & interior[sl]  # noqa: E731
    # ---- abdominal organs
    o = og["liver"]
    sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], o["p"], rough=0.12)
    if sl is not None:
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["liver"] + 6.0 * cv.T2[sl], _LAB["liver"], _T["soft_tissue"])
    c2 = np.array(o["c"]) + np.array([-0.40, 0.28, 0.03])
    sl, lev = cv.ellipsoid(c2, np.array(o["r"]) * np.array([0.6, 0.45, 0.45]), o["yaw"], 2.0, rough=0.1)
    if sl is not None:
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["liver"] + 6.0 * cv.T2[sl], _LAB["liver"], _T["soft_tissue"])
    # portal / hepatic vessels inside the liver
    lc = np.array(o["c"])
    in_liver = lambda sl: (cv.lab[sl] == _LAB["liver"]).astype(np.float32)  # noqa: E731
    for d in ([-0.25, 0.1, 0.05], [0.2, 0.25, 0.1], [0.1, -0.3, 0.08], [0.05, 0.2, -0.1]):
        cv.tube(lc + np.array([-0.18, -0.05, 0.0]), lc + np.array(d), 6.0, 2.5, hu["portal"], where=in_liver)
    for name in ("spleen", "pancreas", "bladder"):
        o = og[name]
        sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], o["p"], rough=0.10)
        if sl is None:
            continue
        hv = {"spleen": hu["spleen"], "pancreas": hu["pancreas"], "bladder": hu["bladder"]}[name]
        cv.paint(sl, (lev < 1) & below(sl), hv + 5.0 * cv.T2[sl], _LAB[name], _T["soft_tissue"])
    for name in ("kidney_right", "kidney_left"):
        o = og[name]
        sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], 2.0, rough=0.05)
        if sl is None:
            continue
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["kidney"] + 5.0 * cv.T2[sl], _LAB[name], _T["soft_tissue"])
        s = 1 if name == "kidney_right" else -1
        csn = np.array(o["c"]) + np.array([-0.35 * o["r"][0] * s, 0.1 * o["r"][1], 0.0])
        sl2, lev2 = cv.ellipsoid(csn, np.array(o["r"]) * np.array([0.35, 0.35, 0.45]), o["yaw"])
        if sl2 is not None:
            m2 = (lev2 < 1) & (cv.lab[sl2] == _LAB[name])
            cv.paint(sl2, m2, hu["fat"], tissue=_T["fat"])

    # ---- lungs (above the diaphragm, inside the rib cage)
    top = p["lung_top"]
    for name in ("lung_right", "lung_left"):
        o = og[name]
        c, r, base = np.array(o["c"]), np.array(o["r"]), o["base"]
        sl = cv.box([c[0] - r[0] * 1.1, c[1] - r[1] * 1.1, base - 0.2], [c[0] + r[0] * 1.1, c[1] + r[1] * 1.1, top])
        if sl is None:
            continue
        Us, Vs, Ws = cv.coords(sl)
        taper = np.clip((np.float32(top) - Ws) / np.float32(0.3), 0.0025, 1.0)
        pp = np.float32(o["p"])
        lev = (np.abs(Us - np.float32(c[0])) / np.float32(r[0])) ** pp + (np.abs(Vs - np.float32(c[1])) / np.float32(r[1])) ** pp
        m = (lev < taper) & (Ws > dome[sl] + 0.01) & (cv.r2[sl] < inner2 * 0.9) & (Ws < top)
        lhu = hu["lung"] + 12.0 * cv.T2[sl] - 40.0 * (Vs - np.float32(c[1]))
        cv.paint(sl, m, lhu, _LAB[name], _T["lung"])

    # ---- heart (myocardium + blood pool + pericardial fat), overwriting the medial lungs
    o = og["heart"]
    sl, lev = cv.ellipsoid(o["c"], np.array(o["r"]) * 1.12, o["yaw"])
    if sl is not None:
        cv.paint(sl, (lev < 1) & interior[sl], hu["fat"], 0, _T["fat"])
    sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], rough=0.04)
    if sl is not None:
        m = (lev < 1) & interior[sl]
        cv.paint(sl, m, hu["myo"] + 4.0 * cv.T2[sl], _LAB["heart"], _T["muscle"])
        # two chambers
        c = np.array(o["c"])
        for off, sc in (([0.05, 0.03, 0.02], 0.55), ([-0.08, -0.05, -0.02], 0.5)):
            sl2, lev2 = cv.ellipsoid(c + np.array(off), np.array(o["r"]) * sc, o["yaw"])
            if sl2 is not None:
                m2 = (lev2 < 1) & (cv.lab[sl2] == _LAB["heart"])
                cv.paint(sl2, m2, hu["blood"] + 4.0 * cv.T2[sl2], tissue=_T["blood"])

    # ---- great vessels: aorta (ascending, arch, descending, iliacs) and IVC
    s_mm = float(np.mean(cv.half / _REF_HALF))
    hc = np.array(o["c"])
    asc0 = hc + np.array([0.10, 0.0, 0.08])
    arch = np.array([0.02, 0.05, 0.74])
    desc0 = np.array([-0.10, sv + 0.22, 0.70])
    desc1 = np.array([-0.07, sv + 0.20, -0.42])
    aorta = [(asc0, arch, 15.0, 14.0), (arch, desc0, 14.0, 12.5), (desc0, desc1, 12.5, 10.5)]
    for s in (1, -1):
        aorta.append((desc1, np.array([0.22 * s, sv + 0.3, -0.62]), 7.0, 6.0))
    for a_, b_, r0, r1 in aorta:
        cv.tube(a_, b_, r0 * s_mm, r1 * s_mm, hu["blood"], 0, _T["blood"])
    cv.tube(np.array([0.12, sv + 0.25, -0.45]), np.array([0.10, sv + 0.35, 0.30]), 11.0 * s_mm, 12.0 * s_mm,
            40.0 + (hu["portal"] - 45.0) * 0.8, 0, _T["blood"])
    # pulmonary trunk / arteries from the heart to the hila
    for s in (1, -1):
        cv.tube(hc + np.array([0.0, 0.05, 0.1]), np.array([0.20 * s, -0.02, 0.52]), 11.0 * s_mm, 8.0 * s_mm,
                hu["blood"], 0, _T["blood"])

    # ---- pulmonary vessels (only inside lung)
    lung_labs = (_LAB["lung_right"], _LAB["lung_left"])
    in_lung = lambda sl: ((cv.lab[sl] == lung_labs[0]) | (cv.lab[sl] == lung_labs[1])).astype(np.float32)  # noqa: E731
    for side, a_, b_, rad in p["trees"]:
        cv.tube(a_, b_, rad * s_mm, rad * 0.75 * s_mm, hu["vessel_lung"], None, _T["blood"], where=in_lung)

    # ---- airways: trachea, main bronchi, lobar bronchi
    tr0 = np.array([0.0, 0.10, 1.2])
    carina = np.array([0.0, 0.02, 0.60])
    airways = [(tr0, carina, 9.0, 8.0)]
    for s in (1, -1):
        mb = np.array([0.20 * s, -0.02, 0.52])
        airways.append((carina, mb, 6.5, 5.5))
        for d in ([0.15 * s, 0.0, 0.18], [0.18 * s, 0.05, -0.08], [0.10 * s, -0.1, -0.15]):
            airways.append((mb, mb + np.array(d), 4.0, 2.5))
    for a_, b_, r0, r1 in airways:
        cv.tube(a_, b_, (r0 + 1.5) * s_mm, (r1 + 1.2) * s_mm, 20.0, None, _T["soft_tissue"], where=lambda sl: interior[sl].astype(np.float32))
    for a_, b_, r0, r1 in airways:
        cv.tube(a_, b_, r0 * s_mm, r1 * s_mm, -1000.0, None, _T["airway"], where=lambda sl: interior[sl].astype(np.float32))

    _paint_bones(cv, hu, p, s_mm)


def _paint_bones(cv: _Canvas, hu: dict, p: dict, s_mm: float) -> None:
    og = p["organs"]
    sv = p["spine_v"]
    half = cv.half
    # ---- spine: periodic vertebral bodies with discs, spinal canal, neural arch, spinous process
    w_lo, w_hi, n_vert = -0.60, 1.1, 18
    period = (w_hi - w_lo) / n_vert
    sl = cv.box([-0.35, sv - 0.6, w_lo], [0.35, sv + 0.3, w_hi])
    if sl is not None:
        U, V, W = cv.coords(sl)
        curve = np.float32(0.04) * np.cos((W - np.float32(0.2)) * np.float32(3.0))  # kyphosis / lordosis
        vc = np.float32(sv) + curve
        um, vm = U * np.float32(half[0]), (V - vc) * np.float32(half[1])  # mm from the column axis
        rad = np.float32(18.0 * s_mm) * (1.0 + 0.25 * np.clip(-W, 0, None))
        phase = ((W - np.float32(w_lo)) / np.float32(period)) % 1.0
        rbody = (um ** 2 + vm ** 2) / rad ** 2
        inbody = (rbody < 1.0) & (W > w_lo) & (W < w_hi)
        disc = inbody & ((phase < 0.12) | (phase > 0.92))
        vert = inbody & ~disc
        shell = vert & ((rbody > 0.72) | (phase < 0.17) | (phase > 0.87))
        cv.paint(sl, vert, hu["bone"] + 15.0 * cv.T2[sl], 0, _T["bone"])
        cv.paint(sl, shell, hu["cortex"], 0, _T["bone"])
        cv.paint(sl, disc, hu["disc"], 0, _T["soft_tissue"])
        # canal behind the body
        canal_r = np.float32(8.0 * s_mm)
        vcan = vm + rad + canal_r + np.float32(2.0 * s_mm)
        dcan = um ** 2 + vcan ** 2
        ring = (dcan < (canal_r + np.float32(6.0 * s_mm)) ** 2) & (phase > 0.2) & (phase < 0.8) & (W > w_lo) & (W < w_hi)
        spin = (np.abs(um) < np.float32(4.0 * s_mm)) & (vcan < 0) & (vcan > -np.float32(45.0 * s_mm)) \
            & (phase > 0.3) & (phase < 0.7) & (W > w_lo) & (W < w_hi)
        transv = (np.abs(vcan) < np.float32(5.0 * s_mm)) & (np.abs(um) < np.float32(38.0 * s_mm)) \
            & (phase > 0.35) & (phase < 0.6) & (W > w_lo) & (W < w_hi)
        post = ring | spin | transv
        cv.paint(sl, post, hu["bone"] + 150.0, 0, _T["bone"])
        canal = (dcan < canal_r ** 2) & (W > w_lo) & (W < w_hi)
        cv.paint(sl, canal, hu["csf"], 0, _T["soft_tissue"])

    # ---- ribs: 12 pairs sloping down anteriorly, just inside the muscle wall
    top = p["lung_top"] + 0.02
    n_ribs, pitch = 12, 0.072
    sl = cv.box([-1.1, -1.1, top - pitch * n_ribs - 0.2], [1.1, 1.1, top + 0.05])
    if sl is not None:
        U, V, W = cv.coords(sl)
        r2 = cv.r2[sl]
        rin = np.float32((1 - p["t_fat"] - p["t_mus"] * 0.4) ** 2)
        shell = (r2 < rin) & (r2 > rin * np.float32(0.84))
        ant = np.clip(V / np.float32(0.9), -1, 1)                  # -1 posterior .. +1 anterior
        wr = W + np.float32(0.10) * (ant + 1)                        # anterior ends lower
        k = (np.float32(top) - wr) / np.float32(pitch)
        frac = k - np.floor(k)
        rib = shell & (k > 0) & (k < n_ribs) & (np.abs(frac - 0.5) < 0.16) & (np.abs(U) > 0.12)
        # costal cartilage near the sternum, bone elsewhere
        cart = rib & (ant > 0.75) & (np.abs(U) < 0.45)
        bone = rib & ~cart
        cv.paint(sl, bone, hu["cortex"] * 0.65 + 10.0 * cv.T2[sl], 0, _T["bone"])
        cv.paint(sl, cart, hu["cartilage"], 0, _T["soft_tissue"])
    # sternum
    cv.tube(np.array([0.0, 0.86, top - 0.08]), np.array([0.0, 0.90, top - 0.55]), 9.0 * s_mm, 8.0 * s_mm,
            hu["cortex"] * 0.55, 0, _T["bone"], where=lambda sl: cv.interior[sl].astype(np.float32) + (cv.r2[sl] < 1.0))

    # ---- pelvis: iliac wings, sacrum, pubic rami
    for s in (1, -1):
        sl, lev = cv.ellipsoid((0.45 * s, sv + 0.25, -0.56), (0.20, 0.35, 0.13), 25.0 * s)
        if sl is not None:
            m = (lev < 1) & (lev > 0.72) & (cv.V[sl] < sv + 0.5) & cv.interior[sl]
            cv.paint(sl, m, hu["bone"] + 120.0, 0, _T["bone"])
        fc = np.array(og["femur_right" if s == 1 else "femur_left"]["c"])
        cv.tube(fc + np.array([-0.1 * s, 0.05, 0.06]), np.array([0.02 * s, 0.40, -0.82]), 9.0 * s_mm, 8.0 * s_mm,
                hu["bone"] + 150.0, 0, _T["bone"], where=lambda sl: (cv.r2[sl] < 1.0).astype(np.float32))
        # acetabular roof
        rr = np.array(og["femur_right"]["r"])
        sl, lev = cv.ellipsoid(fc, rr * 1.55)
        if sl is not None:
            m = (lev < 1) & (lev > 0.6) & (cv.W[sl] > fc[2] + 0.005) & (cv.r2[sl] < 1.0)
            cv.paint(sl, m, hu["bone"] + 200.0, 0, _T["bone"])
    sl, lev = cv.ellipsoid((0.0, sv - 0.02, -0.62), (0.16, 0.12, 0.11))
    if sl is not None:
        cv.paint(sl, lev < 1, hu["bone"] + 60.0, 0, _T["bone"])

    # ---- femurs: head (sphere), neck, shaft; cortex + cancellous / marrow
    for name, s in (("femur_right", 1), ("femur_left", -1)):
        o = og[name]
        c = np.array(o["c"])
        r = np.array(o["r"])
        body = lambda sl: (cv.r2[sl] < 1.0).astype(np.float32)  # noqa: E731
        troch = c + np.array([0.16 * s, -0.02, -0.05])
        shaft = troch + np.array([-0.03 * s, 0.04, -0.45])
        r_mm = r[0] * half[0]
        cv.tube(c, troch, 0.6 * r_mm, 0.75 * r_mm, hu["cortex"], _LAB[name], _T["bone"], where=body)
        cv.tube(troch, shaft, 0.7 * r_mm, 0.55 * r_mm, hu["cortex"], _LAB[name], _T["bone"], where=body)
        cv.tube(troch, shaft, 0.4 * r_mm, 0.3 * r_mm, hu["marrow"] + 150.0, _LAB[name], _T["bone"], where=body)
        sl, lev = cv.ellipsoid(c, r)
        if sl is not None:
            m = (lev < 1) & (cv.r2[sl] < 1.0)
            cv.paint(sl, m, hu["cortex"], _LAB[name], _T["bone"])
            cv.paint(sl, m & (lev < 0.7), hu["bone"] + 40.0 + 15.0 * cv.T2[sl], _LAB[name], _T["bone"])


# --------------------------------------------------------------------------------------------
# lesions
# --------------------------------------------------------------------------------------------
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
        tissue[dst_t][m] = _T["lesion"]
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
    f = _smooth_field(rng, 2, 5, *ax, lo=-1.5, hi=1.5)
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


# --------------------------------------------------------------------------------------------
# acquisition
# --------------------------------------------------------------------------------------------
def _slab_kernel(slice_mm: float, dz: float) -> np.ndarray:
    """Box of width slice_mm (in voxels of size dz) with fractional end weights, normalised."""
    width = slice_mm / dz
    if width <= 1.0:
        return np.ones(1, np.float32)
    half = width / 2.0
    k = int(math.ceil(half - 0.5))
    offs = np.arange(-k, k + 1, dtype=float)
    w = np.clip(np.minimum(offs + 0.5, half) - np.maximum(offs - 0.5, -half), 0, 1)
    return (w / w.sum()).astype(np.float32)


def apply_acquisition(image: np.ndarray, spacing: Sequence[float], acq: Acquisition,
                      rng: np.random.Generator) -> np.ndarray:
    """Apply slice thickness, reconstruction kernel and noise to an ideal HU volume.

    Order: partial-volume averaging along Z over ``slice_mm`` → kernel (smooth: Gaussian σ=1 voxel
    in-plane, 0.5 along Z; medium: σ=0.5; sharp: unsharp mask ``x + 0.8·(x − G_1(x))``) → additive
    Gaussian noise whose in-plane texture follows the kernel, whose Z correlation follows the slab,
    and whose std is ``noise_hu`` × (0.6 smooth, 1.0 medium, 1.6 sharp).

    Args:
        image: ``(X, Y, Z)`` float32 HU.
        spacing: voxel size in mm.
        acq: the acquisition.
        rng: random generator for the noise.

    Returns:
        a new ``(X, Y, Z)`` float32 array.
    """
    out = image.astype(np.float32, copy=True)
    slab = _slab_kernel(float(acq.slice_mm), float(spacing[2])) if acq.slice_mm else np.ones(1, np.float32)
    if slab.size > 1:
        out = ndimage.convolve1d(out, slab, axis=2, mode="nearest")
    if acq.kernel == "smooth":
        out = ndimage.gaussian_filter(out, (1.0, 1.0, 0.5), truncate=3.0)
    elif acq.kernel == "medium":
        out = ndimage.gaussian_filter(out, (0.5, 0.5, 0.3), truncate=3.0)
    else:
        out = out + 0.8 * (out - ndimage.gaussian_filter(out, (1.0, 1.0, 0.5), truncate=3.0))
    if acq.noise_hu > 0:
        n = rng.standard_normal(image.shape, dtype=np.float32)
        if acq.kernel == "smooth":
            n = ndimage.gaussian_filter(n, (1.0, 1.0, 0.0), truncate=3.0)
            factor = 0.6
        elif acq.kernel == "medium":
            n = ndimage.gaussian_filter(n, (0.6, 0.6, 0.0), truncate=3.0)
            factor = 1.0
        else:
            n = n - 0.5 * ndimage.gaussian_filter(n, (1.0, 1.0, 0.0), truncate=3.0)
            factor = 1.6
        if slab.size > 1:
            n = ndimage.convolve1d(n, slab, axis=2, mode="nearest")
        sd = float(n.std()) or 1.0
        out += n * np.float32(acq.noise_hu * factor / sd)
    return out.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# the public generator
# --------------------------------------------------------------------------------------------
def make_phantom(
    shape: Sequence[int] = (128, 128, 128),
    spacing: Sequence[float] | float = (2.0, 2.0, 2.0),
    seed: int = 0,
    acquisition: Acquisition | None = None,
    nodules: Sequence[NoduleSpec] = (),
    tumour: bool | TumourSpec = False,
    body_scale: float | None = None,
    center_mm: Sequence[float] | str | None = None,
) -> Phantom:
    """Generate one CT phantom.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        spacing: voxel size in mm (a number = isotropic).
        seed: non-negative integer; fixes anatomy, lesion placement and noise.
        acquisition: imaging parameters; ``None`` = :meth:`Acquisition.random` from the seed.
        nodules: lung nodules to insert (masks at this ``spacing``); clipped to the lung.
        tumour: ``True`` = a random :class:`TumourSpec` from the seed, or a spec; clipped to the lung.
        body_scale: ``None`` = the whole trunk (lung apices to proximal femurs) is fitted into the
            field of view; a float = physical size relative to a reference adult (~330 x 230 x 560
            mm) and the window shows the part of the body around ``center_mm``.
        center_mm: window centre in body-frame mm (origin = trunk centre, axes as the array);
            ``"lung"`` = a random point inside a lung (drawn from the seed); ``None`` = the origin.

    Returns:
        a :class:`Phantom` with ``image`` ``(X, Y, Z)`` float32 HU, ``organs`` uint8 (label =
        ``ORGAN_CLASSES`` index + 1), ``lesion`` uint8 and ``tissue`` uint8 maps.

    Raises:
        SmartError: a non-3-D or too small shape, non-positive spacing, negative seed, bad
            acquisition, bad lesion specification.
    """
    shape_t = _check_shape(shape)
    spacing_t = _check_spacing(spacing)
    seed = _check_seed(seed)
    if acquisition is not None and not isinstance(acquisition, Acquisition):
        raise SmartError(f"acquisition={acquisition!r}: must be an Acquisition or None")
    if not (isinstance(tumour, (bool, np.bool_)) or isinstance(tumour, TumourSpec)):
        raise SmartError(f"tumour={tumour!r}: must be True/False or a TumourSpec")
    for nd in nodules:
        if not isinstance(nd, NoduleSpec):
            raise SmartError(f"nodules: {nd!r} is not a NoduleSpec")
    rs = _streams(seed)
    fov = np.array(shape_t) * np.array(spacing_t)
    subj = make_subject(seed, fov_mm=fov, body_scale=body_scale)
    if isinstance(center_mm, str):
        if center_mm != "lung":
            raise SmartError(f"center_mm={center_mm!r}: expected 3 numbers, 'lung' or None")
        center = subj.lung_point_mm(rs["lesion"])
    elif center_mm is None:
        center = np.zeros(3)
    else:
        try:
            center = np.array([float(c) for c in center_mm])
        except (TypeError, ValueError):
            raise SmartError(f"center_mm={center_mm!r}: expected 3 numbers, 'lung' or None") from None
        if center.shape != (3,) or not np.all(np.isfinite(center)):
            raise SmartError(f"center_mm={center_mm!r}: expected 3 finite numbers")
    if acquisition is None:
        acquisition = Acquisition.random(rs["acquisition"])
    cv = _Canvas(subj, shape_t, spacing_t, center, rs["fields"])
    _paint_anatomy(cv, acquisition.contrast)
    img, lab, tis = cv.img, cv.lab, cv.tis
    lesion = np.zeros(shape_t, np.uint8)
    lung = (lab == _LAB["lung_right"]) | (lab == _LAB["lung_left"])
    lesion_meta: list[dict] = []
    lrng = rs["lesion"]
    for nd in nodules:
        m = np.asarray(nd.mask, bool)
        if m.ndim != 3 or not m.any():
            raise SmartError(f"nodule mask of shape {m.shape}: must be a non-empty 3-D boolean array")
        c = nd.center if nd.center is not None else _lung_site(lung, m.shape, lrng)
        if c is None:
            lesion_meta.append({"kind": "nodule", "center": None, "voxels": 0})
            continue
        hu = nd.hu
        if acquisition.contrast:
            hu = np.asarray(hu, np.float32) + np.float32(15.0 * subj.params["enh"])
        painted = insert_lesion(img, lesion, m, hu, c, allowed=lung, tissue=tis)
        lesion_meta.append({"kind": "nodule", "center": [int(x) for x in c], "voxels": int(painted.sum())})
    if isinstance(tumour, TumourSpec) or bool(tumour):
        spec = tumour if isinstance(tumour, TumourSpec) else TumourSpec.random(lrng)
        m, hu = tumour_mask(spec, spacing_t, lrng)
        if acquisition.contrast:
            hu = hu + np.float32(35.0 * subj.params["enh"])
        c = spec.center if spec.center is not None else _lung_site(lung, m.shape, lrng)
        voxels = 0
        if c is not None:
            painted = insert_lesion(img, lesion, m, hu, c, allowed=lung, tissue=tis)
            voxels = int(painted.sum())
        lesion_meta.append({"kind": "tumour", "center": None if c is None else [int(x) for x in c],
                            "voxels": voxels, "volume_ml": voxels * float(np.prod(spacing_t)) / 1000.0,
                            "radius_mm": spec.radius_mm, "irregularity": spec.irregularity,
                            "heterogeneity": spec.heterogeneity})
    image = apply_acquisition(img, spacing_t, acquisition, rs["noise"])
    meta = {
        "seed": seed,
        "body_size_mm": [float(x) for x in subj.params["size_mm"]],
        "body_scale": body_scale,
        "center_mm": [float(x) for x in center],
        "axes": "RAS+ (X: right, Y: anterior, Z: superior)",
        "lesions": lesion_meta,
    }
    return Phantom(image=image, organs=lab, lesion=lesion, spacing=spacing_t, acquisition=acquisition,
                   meta=meta, tissue=tis)


def _lung_site(lung: np.ndarray, mshape: Sequence[int], rng: np.random.Generator, tries: int = 40):
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
