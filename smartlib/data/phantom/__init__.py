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

Modules, by subject: :mod:`.anatomy` (the subject, organs, vessels, bones), :mod:`.canvas` (smooth
random fields, the painted window), :mod:`.lesions` (nodules, tumours), :mod:`.scanner` (slice
thickness, kernel, noise, contrast) and :mod:`.core` (:func:`make_phantom`).
"""
from .anatomy import ORGAN_CLASSES, TISSUE_CLASSES, Subject, make_subject
from .core import Phantom, make_phantom
from .lesions import NoduleSpec, TumourSpec, insert_lesion, tumour_mask
from .scanner import KERNELS, SLICE_MM, Acquisition, apply_acquisition

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
