"""The public generator: :func:`make_phantom` and the :class:`Phantom` it returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ...errors import SmartError
from ..validate import check_seed, check_shape, check_spacing
from .anatomy import ORGAN_LABEL, make_subject, paint_anatomy, streams
from .canvas import Canvas
from .lesions import NoduleSpec, TumourSpec, insert_lesion, lung_site, tumour_mask
from .scanner import Acquisition, apply_acquisition

__all__ = ["Phantom", "make_phantom"]


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
    shape_t = check_shape(shape)
    spacing_t = check_spacing(spacing)
    seed = check_seed(seed)
    if acquisition is not None and not isinstance(acquisition, Acquisition):
        raise SmartError(f"acquisition={acquisition!r}: must be an Acquisition or None")
    if not (isinstance(tumour, (bool, np.bool_)) or isinstance(tumour, TumourSpec)):
        raise SmartError(f"tumour={tumour!r}: must be True/False or a TumourSpec")
    for nd in nodules:
        if not isinstance(nd, NoduleSpec):
            raise SmartError(f"nodules: {nd!r} is not a NoduleSpec")
    rs = streams(seed)
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
    cv = Canvas(subj, shape_t, spacing_t, center, rs["fields"])
    paint_anatomy(cv, acquisition.contrast)
    img, lab, tis = cv.img, cv.lab, cv.tis
    lesion = np.zeros(shape_t, np.uint8)
    lung = (lab == ORGAN_LABEL["lung_right"]) | (lab == ORGAN_LABEL["lung_left"])
    lesion_meta: list[dict] = []
    lrng = rs["lesion"]
    for nd in nodules:
        m = np.asarray(nd.mask, bool)
        if m.ndim != 3 or not m.any():
            raise SmartError(f"nodule mask of shape {m.shape}: must be a non-empty 3-D boolean array")
        c = nd.center if nd.center is not None else lung_site(lung, m.shape, lrng)
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
        c = spec.center if spec.center is not None else lung_site(lung, m.shape, lrng)
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
