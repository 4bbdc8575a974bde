"""Volume readers: NIfTI, NRRD and DICOM series in, ``(X, Y, Z)`` float32 HU arrays out.

Volumes are ``(X, Y, Z)`` float32 arrays in HU, ``Z`` the axial slice axis, exactly as MONAI's
readers return them (``NibabelReader`` for NIfTI, ``NrrdReader`` for NRRD, ``PydicomReader`` for a
DICOM series folder), together with a RAS affine. :func:`find_volumes` lists the volumes under a
folder; :func:`volume_format` names a file's format from its suffix.

Every problem with a file is raised as :class:`~smartlib.errors.SmartError` with a one-line
message that names the file and says what is wrong. Nothing here writes files.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SmartError

__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "load_volume",
    "find_volumes",
    "is_volume_file",
    "is_dicom_series_dir",
    "volume_format",
    "volume_stem",
    "source_name",
    "short_error",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
# DICOM objects that live beside image slices but carry no image of their own
_NON_IMAGE_DICOM_NAMES = {"DICOMDIR"}


# --------------------------------------------------------------------------- helpers
def volume_stem(path: str | os.PathLike) -> str:
    """File name without its volume suffix (``lung_001.nii.gz`` -> ``lung_001``); a folder's own name."""
    p = Path(path)
    name = p.name
    for suf in NIFTI_SUFFIXES + NRRD_SUFFIXES + (".dcm",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def volume_format(path: str | os.PathLike) -> str | None:
    """``"NIfTI"``, ``"NRRD"`` or ``"DICOM"`` (a single ``.dcm`` file) from the file name; None otherwise."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "NIfTI"
    if name.endswith(NRRD_SUFFIXES):
        return "NRRD"
    if name.endswith(".dcm"):
        return "DICOM"
    return None


def is_volume_file(path: str | os.PathLike) -> bool:
    """True for a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) file name."""
    return volume_format(Path(path)) in ("NIfTI", "NRRD")


def _is_dicom_file(path: Path) -> bool:
    import pydicom

    if path.name.startswith(".") or path.name.upper() in _NON_IMAGE_DICOM_NAMES or not path.is_file():
        return False
    try:
        return bool(pydicom.misc.is_dicom(path))
    except OSError:
        return False


def is_dicom_series_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder directly holding at least one DICOM image file (preamble ``DICM``).

    Folders whose DICOM files carry no image (an RTSTRUCT, a DICOMDIR) are not series folders.
    """
    import pydicom

    p = Path(path)
    if not p.is_dir():
        return False
    for f in sorted(p.iterdir()):
        if _is_dicom_file(f):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - unreadable: let load_volume say so
                return True
            if "Rows" in ds:
                return True
    return False


def source_name(v: Any) -> str:
    """A path as text, ``"<array>"`` for an in-memory volume (for error messages)."""
    return str(v) if isinstance(v, (str, os.PathLike)) else "<array>"


def short_error(exc: BaseException, limit: int = 160) -> str:
    """``"ExcType: message"`` on one line, cut to ``limit`` characters (for error messages)."""
    msg = " ".join(str(exc).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    sp = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return tuple(float(s) for s in sp)  # type: ignore[return-value]


# --------------------------------------------------------------------------- load_volume
def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from monai.data import NibabelReader

    reader = NibabelReader()
    img = reader.read(str(path))
    arr, meta = reader.get_data(img)
    return np.asarray(arr), np.asarray(meta["affine"], dtype=np.float64), meta


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        from monai.data import NrrdReader
        import nrrd  # noqa: F401 - MONAI's NrrdReader needs pynrrd
    except ImportError as exc:  # pragma: no cover - pynrrd is a dependency
        raise SmartError(f"{path}: reading NRRD needs the 'pynrrd' package (pip install pynrrd)") from exc
    reader = NrrdReader(dtype=np.float32)
    img = reader.read(str(path))
    header = dict(img.header)
    if "space directions" in header and "space origin" in header:
        arr, meta = reader.get_data(img)
        return np.asarray(arr), np.asarray(meta["affine"], dtype=np.float64), meta
    # a NRRD without physical space: voxel grid with 'spacings' if given (else 1 mm)
    arr = np.asarray(img.array, dtype=np.float32)
    sp = [float(s) for s in header.get("spacings", [1.0] * arr.ndim)][:3]
    affine = np.eye(4)
    for i, s in enumerate(sp):
        affine[i, i] = s if np.isfinite(s) and s > 0 else 1.0
    return arr, affine, {"affine": affine}


def _sort_dicom_slices(path: Path, slices: list, names: list) -> tuple[list, list]:
    """Order slices by position along the slice normal (ascending), InstanceNumber as fallback."""
    positions = []
    for ds, name in zip(slices, names):
        ipp = getattr(ds, "ImagePositionPatient", None)
        iop = getattr(ds, "ImageOrientationPatient", None)
        if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
            row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
            positions.append(float(np.dot(np.cross(row, col), np.asarray(ipp, float))))
        elif getattr(ds, "InstanceNumber", None) is not None:
            positions.append(float(ds.InstanceNumber))
        else:
            raise SmartError(
                f"{path}: DICOM slice {Path(name).name} has neither ImagePositionPatient nor InstanceNumber, "
                "so the slice order is unknown"
            )
    order = np.argsort(np.asarray(positions), kind="stable")
    pos_sorted = np.asarray(positions)[order]
    if len(pos_sorted) > 1 and np.any(np.diff(pos_sorted) <= 1e-6):
        dup = [Path(names[order[i]]).name for i in range(1, len(order)) if pos_sorted[i] - pos_sorted[i - 1] <= 1e-6]
        raise SmartError(
            f"{path}: DICOM slices share one slice position ({', '.join(dup[:3])}); "
            "the folder mixes series or holds duplicate slices"
        )
    return [slices[i] for i in order], [names[i] for i in order]


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from monai.data import PydicomReader

    files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if not any(path.iterdir()):
        raise SmartError(f"{path}: empty folder (expected a DICOM series)")
    if not any(_is_dicom_file(f) for f in files):
        raise SmartError(
            f"{path}: folder holds no DICOM files (expected a DICOM series; "
            "NIfTI/NRRD files in a folder are found with find_volumes)"
        )
    reader = PydicomReader(fname_regex=None)  # None: keep files pydicom.misc.is_dicom accepts
    data = reader.read(str(path))
    slices = data if isinstance(data, list) else [data]
    names = reader.filenames[0] if isinstance(reader.filenames[0], list) else [reader.filenames[0]]
    keep = [
        (ds, n)
        for ds, n in zip(slices, names)
        if Path(n).name.upper() not in _NON_IMAGE_DICOM_NAMES and "PixelData" in ds and "SegmentSequence" not in ds
    ]
    if not keep:
        raise SmartError(f"{path}: no DICOM image slices (only non-image objects such as RTSTRUCT/DICOMDIR)")
    slices, names = [k[0] for k in keep], [k[1] for k in keep]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise SmartError(f"{path}: folder mixes {len(series)} DICOM series; put each series in its own folder")
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in slices}
    if len(shapes) > 1:
        raise SmartError(f"{path}: DICOM slices differ in size {sorted(shapes)}")
    slices, names = _sort_dicom_slices(path, slices, names)
    # PydicomReader stacks by InstanceNumber: renumber (in memory only) to the spatial order
    for i, ds in enumerate(slices):
        ds.InstanceNumber = i + 1
    if len(slices) > 1:
        reader.has_series = True
        reader.filenames = [names]
        arr, meta = reader.get_data(slices)
    else:
        reader.has_series = False
        reader.filenames = names
        arr, meta = reader.get_data(slices[0])
    meta = dict(meta)
    meta["series_uid"] = next(iter(series))
    meta["n_slices"] = len(slices)
    meta["modality"] = str(getattr(slices[0], "Modality", ""))
    return np.asarray(arr, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64), meta


def load_volume(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """Load a CT volume as ``(X, Y, Z)`` float32 (HU for CT), its voxel spacing in mm, and metadata.

    Args:
        path: a NIfTI file (``.nii``/``.nii.gz``), a NRRD file (``.nrrd``/``.nhdr``), or a folder
            holding one DICOM series (slices sorted by position along the slice normal,
            RescaleSlope/RescaleIntercept applied, so CT values are HU).

    Returns:
        ``(array, spacing, meta)`` with ``meta`` holding at least ``affine`` (4x4 RAS, float64),
        ``format``, ``path``, ``shape`` and ``spacing``.

    Raises:
        SmartError: missing path, empty folder, unreadable / truncated / non-image file,
            an image that is not 3-D, non-finite voxels or voxel spacing.
    """
    p = Path(path)
    if not p.exists():
        raise SmartError(f"{p}: not found")
    if p.is_dir():
        fmt = "DICOM"
    else:
        fmt = volume_format(p)
        if fmt is None:
            raise SmartError(
                f"{p}: unsupported file type (expected .nii, .nii.gz, .nrrd, .nhdr or a DICOM series folder)"
            )
        if p.stat().st_size == 0:
            raise SmartError(f"{p}: empty file, not a readable {fmt} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if p.is_dir():
                arr, affine, meta = _read_dicom_dir(p)
            elif fmt == "NIfTI":
                arr, affine, meta = _read_nifti(p)
            elif fmt == "NRRD":
                arr, affine, meta = _read_nrrd(p)
            else:  # a single DICOM file (3-D only if multi-frame)
                from monai.data import PydicomReader

                reader = PydicomReader()
                arr, meta = reader.get_data(reader.read(str(p)))
                arr, affine = np.asarray(arr, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64)
    except SmartError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        what = "DICOM series" if p.is_dir() else f"{fmt} file"
        raise SmartError(f"{p}: not a readable {what} (truncated or corrupt? {short_error(exc)})") from None

    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise SmartError(f"{p}: voxel type {arr.dtype} is not a real-valued image")
    shape0 = arr.shape
    # drop trailing singleton axes (X, Y, Z, 1) -> (X, Y, Z)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        kind = f"{arr.ndim}-D" if arr.ndim < 3 else f"{arr.ndim}-D with {int(np.prod(arr.shape[3:]))} channels/frames"
        raise SmartError(f"{p}: image is {kind} (shape {tuple(shape0)}), expected a single 3-D volume")
    if min(arr.shape) < 2:
        raise SmartError(f"{p}: image has a single slice (shape {tuple(arr.shape)}), expected a 3-D volume")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        raise SmartError(f"{p}: {n_nan} NaN and {n_inf} infinite voxels; voxel values must be finite")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        # a 2-D affine padded to 3-D (rare: NRRD with extra axes); keep the spatial part
        full = np.eye(4)
        k = min(3, affine.shape[0] - 1)
        full[:k, :k] = affine[:k, :k]
        full[:k, 3] = affine[:k, -1]
        affine = full
    spacing = _spacing_from_affine(affine)
    if not np.all(np.isfinite(affine)) or min(spacing) <= 0:
        raise SmartError(f"{p}: invalid voxel spacing {spacing} in the image header")
    out_meta: dict[str, Any] = {
        k: v for k, v in meta.items() if isinstance(k, str) and not k[:1].isdigit()
    }
    out_meta.update(
        affine=affine, format=fmt, path=str(p), shape=tuple(int(s) for s in arr.shape), spacing=spacing
    )
    return arr, spacing, out_meta


# --------------------------------------------------------------------------- find_volumes
def find_volumes(folder: str | os.PathLike) -> list[Path]:
    """NIfTI/NRRD files and DICOM series folders under ``folder`` (recursive, sorted, dot-files skipped)."""
    root = Path(folder)
    if not root.exists():
        raise SmartError(f"{root}: not found")
    if not root.is_dir():
        raise SmartError(f"{root}: not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        d = Path(dirpath)
        files = sorted(f for f in filenames if not f.startswith("."))
        found += [d / f for f in files if is_volume_file(d / f)]
        if any(_is_dicom_file(d / f) for f in files) and is_dicom_series_dir(d):
            found.append(d)
    if not found:
        raise SmartError(f"{root}: no images found (expected .nii, .nii.gz, .nrrd files or DICOM series folders)")
    return sorted(found)
