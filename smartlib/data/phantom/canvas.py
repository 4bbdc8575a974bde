"""The canvas a phantom is painted on: smooth random fields and the warped window coordinates.

A coarse random grid, cubic B-spline interpolated onto the window's axes, gives smooth fields of
unit-ish standard deviation (:func:`smooth_field`); four of them deform the body coordinates,
the others texture the tissues. :class:`Canvas` holds the warped coordinates and the image /
label / tissue arrays that :mod:`.anatomy` paints.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .anatomy import Subject

__all__ = ["smooth_field", "Canvas"]


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


def smooth_field(rng: np.random.Generator, channels: int, n: int, u: np.ndarray, v: np.ndarray,
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
class Canvas:
    """A window of ``shape`` voxels at ``spacing`` mm onto a subject, centred at ``center_mm``: the
    warped normalised coordinates ``U, V, W``, texture fields, and the arrays painted into."""

    def __init__(self, subj: Subject, shape, spacing, center_mm, fields_rng) -> None:
        self.subj = subj
        self.half = subj.half
        self.shape = shape
        self.spacing = np.array(spacing)
        axes_mm = [center_mm[i] + (np.arange(shape[i]) - (shape[i] - 1) / 2.0) * spacing[i] for i in range(3)]
        self.u1, self.v1, self.w1 = (axes_mm[i] / self.half[i] for i in range(3))
        f = smooth_field(fields_rng, 4, 7, self.u1, self.v1, self.w1)
        g = smooth_field(fields_rng, 3, 14, self.u1, self.v1, self.w1)
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
