"""The random subject and its anatomy: organs, vessels, airways and bones of the trunk.

:func:`make_subject` draws every anatomical parameter of subject ``seed`` (body size, organ
centres, radii and orientations, vessel trees, tissue HU) in normalised body coordinates,
independent of the field of view; :func:`paint_anatomy` paints it onto a :class:`~.canvas.Canvas`.
Random streams are split from one :class:`numpy.random.SeedSequence` per seed (:func:`streams`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ...errors import SmartError
from ..validate import check_seed
from .canvas import Canvas

__all__ = [
    "ORGAN_CLASSES",
    "TISSUE_CLASSES",
    "ORGAN_LABEL",
    "TISSUE",
    "Subject",
    "make_subject",
    "paint_anatomy",
    "streams",
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
#: organ name -> its label value in :attr:`Phantom.organs` (index + 1)
ORGAN_LABEL = {name: i + 1 for i, name in enumerate(ORGAN_CLASSES)}
#: tissue name -> its value in :attr:`Phantom.tissue`
TISSUE = {name: i for i, name in enumerate(TISSUE_CLASSES)}

# Reference adult trunk (mm): full width, AP depth, height (lung apex to proximal femur).
_REF_SIZE = np.array([330.0, 230.0, 560.0])
_REF_HALF = _REF_SIZE / 2.0


def streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators for the subject, the fields, the lesions, the acquisition and the noise."""
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
    seed = check_seed(seed)
    rng = streams(seed)["subject"]
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


def paint_anatomy(cv: Canvas, contrast: bool) -> None:
    """Paint the subject's body, organs, vessels, airways and bones onto the canvas."""
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
    cv.paint((slice(None),) * 3, body, hu["fat"] + 6.0 * cv.T, tissue=TISSUE["fat"])
    mus = r2 < inner1
    cv.paint((slice(None),) * 3, mus, hu["muscle"] + 5.0 * cv.T, tissue=TISSUE["muscle"])
    interior = r2 < inner2
    cv.interior = interior
    cv.r2 = r2
    # interior: thorax = mediastinal fat; abdomen / pelvis = bowel soft tissue, visceral fat, gas
    dome = _dome(U, V, p)
    thorax = W > dome
    abd = interior & ~thorax
    vis = cv.G2 > np.float32(p["vis_fat"] * 1.0)
    soft = abd & ~vis
    cv.paint((slice(None),) * 3, interior & thorax, hu["fat"] + 5.0 * cv.T, tissue=TISSUE["fat"])
    cv.paint((slice(None),) * 3, abd & vis, hu["fat"] + 5.0 * cv.T, tissue=TISSUE["fat"])
    cv.paint((slice(None),) * 3, soft, hu["soft"] + 8.0 * cv.T2, tissue=TISSUE["soft_tissue"])
    gas = soft & (cv.G1 > np.float32(p["gas"])) & (W < 0.05) & (W > -0.62) & (V > -0.35)
    cv.paint((slice(None),) * 3, gas, -990.0, tissue=TISSUE["air"])

    # ---- muscles: paraspinal (whole trunk) and psoas (abdomen)
    sv = p["spine_v"]
    for s in (1, -1):
        sl, lev = cv.ellipsoid((0.16 * s, sv - 0.26, 0.1), (0.14, 0.22, 1.1))
        if sl is not None:
            cv.paint(sl, (lev < 1) & interior[sl], hu["muscle"] + 5.0 * cv.T[sl], tissue=TISSUE["muscle"])
        sl, lev = cv.ellipsoid((0.19 * s, sv + 0.12, -0.33), (0.09, 0.15, 0.3))
        if sl is not None:
            cv.paint(sl, (lev < 1) & interior[sl], hu["muscle"] + 5.0 * cv.T[sl], tissue=TISSUE["muscle"])

    below = lambda sl: (cv.W[sl] < dome[sl] - 0.01) & interior[sl]  # noqa: E731
    # ---- abdominal organs
    o = og["liver"]
    sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], o["p"], rough=0.12)
    if sl is not None:
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["liver"] + 6.0 * cv.T2[sl], ORGAN_LABEL["liver"], TISSUE["soft_tissue"])
    c2 = np.array(o["c"]) + np.array([-0.40, 0.28, 0.03])
    sl, lev = cv.ellipsoid(c2, np.array(o["r"]) * np.array([0.6, 0.45, 0.45]), o["yaw"], 2.0, rough=0.1)
    if sl is not None:
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["liver"] + 6.0 * cv.T2[sl], ORGAN_LABEL["liver"], TISSUE["soft_tissue"])
    # portal / hepatic vessels inside the liver
    lc = np.array(o["c"])
    in_liver = lambda sl: (cv.lab[sl] == ORGAN_LABEL["liver"]).astype(np.float32)  # noqa: E731
    for d in ([-0.25, 0.1, 0.05], [0.2, 0.25, 0.1], [0.1, -0.3, 0.08], [0.05, 0.2, -0.1]):
        cv.tube(lc + np.array([-0.18, -0.05, 0.0]), lc + np.array(d), 6.0, 2.5, hu["portal"], where=in_liver)
    for name in ("spleen", "pancreas", "bladder"):
        o = og[name]
        sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], o["p"], rough=0.10)
        if sl is None:
            continue
        hv = {"spleen": hu["spleen"], "pancreas": hu["pancreas"], "bladder": hu["bladder"]}[name]
        cv.paint(sl, (lev < 1) & below(sl), hv + 5.0 * cv.T2[sl], ORGAN_LABEL[name], TISSUE["soft_tissue"])
    for name in ("kidney_right", "kidney_left"):
        o = og[name]
        sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], 2.0, rough=0.05)
        if sl is None:
            continue
        m = (lev < 1) & below(sl)
        cv.paint(sl, m, hu["kidney"] + 5.0 * cv.T2[sl], ORGAN_LABEL[name], TISSUE["soft_tissue"])
        s = 1 if name == "kidney_right" else -1
        csn = np.array(o["c"]) + np.array([-0.35 * o["r"][0] * s, 0.1 * o["r"][1], 0.0])
        sl2, lev2 = cv.ellipsoid(csn, np.array(o["r"]) * np.array([0.35, 0.35, 0.45]), o["yaw"])
        if sl2 is not None:
            m2 = (lev2 < 1) & (cv.lab[sl2] == ORGAN_LABEL[name])
            cv.paint(sl2, m2, hu["fat"], tissue=TISSUE["fat"])

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
        cv.paint(sl, m, lhu, ORGAN_LABEL[name], TISSUE["lung"])

    # ---- heart (myocardium + blood pool + pericardial fat), overwriting the medial lungs
    o = og["heart"]
    sl, lev = cv.ellipsoid(o["c"], np.array(o["r"]) * 1.12, o["yaw"])
    if sl is not None:
        cv.paint(sl, (lev < 1) & interior[sl], hu["fat"], 0, TISSUE["fat"])
    sl, lev = cv.ellipsoid(o["c"], o["r"], o["yaw"], rough=0.04)
    if sl is not None:
        m = (lev < 1) & interior[sl]
        cv.paint(sl, m, hu["myo"] + 4.0 * cv.T2[sl], ORGAN_LABEL["heart"], TISSUE["muscle"])
        # two chambers
        c = np.array(o["c"])
        for off, sc in (([0.05, 0.03, 0.02], 0.55), ([-0.08, -0.05, -0.02], 0.5)):
            sl2, lev2 = cv.ellipsoid(c + np.array(off), np.array(o["r"]) * sc, o["yaw"])
            if sl2 is not None:
                m2 = (lev2 < 1) & (cv.lab[sl2] == ORGAN_LABEL["heart"])
                cv.paint(sl2, m2, hu["blood"] + 4.0 * cv.T2[sl2], tissue=TISSUE["blood"])

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
        cv.tube(a_, b_, r0 * s_mm, r1 * s_mm, hu["blood"], 0, TISSUE["blood"])
    cv.tube(np.array([0.12, sv + 0.25, -0.45]), np.array([0.10, sv + 0.35, 0.30]), 11.0 * s_mm, 12.0 * s_mm,
            40.0 + (hu["portal"] - 45.0) * 0.8, 0, TISSUE["blood"])
    # pulmonary trunk / arteries from the heart to the hila
    for s in (1, -1):
        cv.tube(hc + np.array([0.0, 0.05, 0.1]), np.array([0.20 * s, -0.02, 0.52]), 11.0 * s_mm, 8.0 * s_mm,
                hu["blood"], 0, TISSUE["blood"])

    # ---- pulmonary vessels (only inside lung)
    lung_labs = (ORGAN_LABEL["lung_right"], ORGAN_LABEL["lung_left"])
    in_lung = lambda sl: ((cv.lab[sl] == lung_labs[0]) | (cv.lab[sl] == lung_labs[1])).astype(np.float32)  # noqa: E731
    for side, a_, b_, rad in p["trees"]:
        cv.tube(a_, b_, rad * s_mm, rad * 0.75 * s_mm, hu["vessel_lung"], None, TISSUE["blood"], where=in_lung)

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
        cv.tube(a_, b_, (r0 + 1.5) * s_mm, (r1 + 1.2) * s_mm, 20.0, None, TISSUE["soft_tissue"], where=lambda sl: interior[sl].astype(np.float32))
    for a_, b_, r0, r1 in airways:
        cv.tube(a_, b_, r0 * s_mm, r1 * s_mm, -1000.0, None, TISSUE["airway"], where=lambda sl: interior[sl].astype(np.float32))

    _paint_bones(cv, hu, p, s_mm)


def _paint_bones(cv: Canvas, hu: dict, p: dict, s_mm: float) -> None:
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
        cv.paint(sl, vert, hu["bone"] + 15.0 * cv.T2[sl], 0, TISSUE["bone"])
        cv.paint(sl, shell, hu["cortex"], 0, TISSUE["bone"])
        cv.paint(sl, disc, hu["disc"], 0, TISSUE["soft_tissue"])
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
        cv.paint(sl, post, hu["bone"] + 150.0, 0, TISSUE["bone"])
        canal = (dcan < canal_r ** 2) & (W > w_lo) & (W < w_hi)
        cv.paint(sl, canal, hu["csf"], 0, TISSUE["soft_tissue"])

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
        cv.paint(sl, bone, hu["cortex"] * 0.65 + 10.0 * cv.T2[sl], 0, TISSUE["bone"])
        cv.paint(sl, cart, hu["cartilage"], 0, TISSUE["soft_tissue"])
    # sternum
    cv.tube(np.array([0.0, 0.86, top - 0.08]), np.array([0.0, 0.90, top - 0.55]), 9.0 * s_mm, 8.0 * s_mm,
            hu["cortex"] * 0.55, 0, TISSUE["bone"], where=lambda sl: cv.interior[sl].astype(np.float32) + (cv.r2[sl] < 1.0))

    # ---- pelvis: iliac wings, sacrum, pubic rami
    for s in (1, -1):
        sl, lev = cv.ellipsoid((0.45 * s, sv + 0.25, -0.56), (0.20, 0.35, 0.13), 25.0 * s)
        if sl is not None:
            m = (lev < 1) & (lev > 0.72) & (cv.V[sl] < sv + 0.5) & cv.interior[sl]
            cv.paint(sl, m, hu["bone"] + 120.0, 0, TISSUE["bone"])
        fc = np.array(og["femur_right" if s == 1 else "femur_left"]["c"])
        cv.tube(fc + np.array([-0.1 * s, 0.05, 0.06]), np.array([0.02 * s, 0.40, -0.82]), 9.0 * s_mm, 8.0 * s_mm,
                hu["bone"] + 150.0, 0, TISSUE["bone"], where=lambda sl: (cv.r2[sl] < 1.0).astype(np.float32))
        # acetabular roof
        rr = np.array(og["femur_right"]["r"])
        sl, lev = cv.ellipsoid(fc, rr * 1.55)
        if sl is not None:
            m = (lev < 1) & (lev > 0.6) & (cv.W[sl] > fc[2] + 0.005) & (cv.r2[sl] < 1.0)
            cv.paint(sl, m, hu["bone"] + 200.0, 0, TISSUE["bone"])
    sl, lev = cv.ellipsoid((0.0, sv - 0.02, -0.62), (0.16, 0.12, 0.11))
    if sl is not None:
        cv.paint(sl, lev < 1, hu["bone"] + 60.0, 0, TISSUE["bone"])

    # ---- femurs: head (sphere), neck, shaft; cortex + cancellous / marrow
    for name, s in (("femur_right", 1), ("femur_left", -1)):
        o = og[name]
        c = np.array(o["c"])
        r = np.array(o["r"])
        body = lambda sl: (cv.r2[sl] < 1.0).astype(np.float32)  # noqa: E731
        troch = c + np.array([0.16 * s, -0.02, -0.05])
        shaft = troch + np.array([-0.03 * s, 0.04, -0.45])
        r_mm = r[0] * half[0]
        cv.tube(c, troch, 0.6 * r_mm, 0.75 * r_mm, hu["cortex"], ORGAN_LABEL[name], TISSUE["bone"], where=body)
        cv.tube(troch, shaft, 0.7 * r_mm, 0.55 * r_mm, hu["cortex"], ORGAN_LABEL[name], TISSUE["bone"], where=body)
        cv.tube(troch, shaft, 0.4 * r_mm, 0.3 * r_mm, hu["marrow"] + 150.0, ORGAN_LABEL[name], TISSUE["bone"], where=body)
        sl, lev = cv.ellipsoid(c, r)
        if sl is not None:
            m = (lev < 1) & (cv.r2[sl] < 1.0)
            cv.paint(sl, m, hu["cortex"], ORGAN_LABEL[name], TISSUE["bone"])
            cv.paint(sl, m & (lev < 0.7), hu["bone"] + 40.0 + 15.0 * cv.T2[sl], ORGAN_LABEL[name], TISSUE["bone"])
