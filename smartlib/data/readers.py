"""Volume readers: NIfTI, NRRD and DICOM series in, ``(X, Y, Z)`` float32 HU arrays out.

Volumes are ``(X, Y, Z)`` float32 arrays in HU, ``Z`` the axial slice axis, exactly as MONAI's
readers return them (``NibabelReader`` for NIfTI, ``NrrdReader`` for NRRD, ``PydicomReader`` for a
DICOM series folder), together with a RAS affine. :func:`find_volumes` lists the volumes under a
folder; :func:`volume_format` names a file's format from its suffix.

Every problem with a file is raised as :class:`~smartlib.errors.SmartError` with a one-line
message that names the file and says what is wrong. A volume that loads but whose geometry deserves a
look (a gantry-tilted DICOM series) is reported with ``warnings.warn(..., VolumeWarning)``.
:func:`probe_volume` checks a volume from its header alone (for a cheap preflight of many files);
:func:`check_mask_geometry` refuses a label map that is not on its image's voxel grid. Nothing here
writes files.

DICOM series (:func:`load_volume` of a folder) are checked slice by slice: an unreadable or truncated
slice file (named), slices whose positions are unevenly spaced (a missing slice: the positions either
side of the gap are named; a step may differ from the median step by at most
``SLICE_STEP_ATOL_MM + SLICE_STEP_RTOL`` x median), slices of differing orientation, and gantry tilt
(the slice normal ``row x column`` of ImageOrientationPatient more than ``TILT_TOL_DEG`` off the
stacking direction of ImagePositionPatient, or a non-zero GantryDetectorTilt). The first kinds raise;
tilt only warns: tilted series are routine in head and neck CT, and the affine built from the real slice
positions is sheared accordingly, so every voxel keeps its true position (the grid is a parallelepiped,
not a box). ``smart data check`` lists tilt as a problem all the same.
"""
from __future__ import annotations

import gzip
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SmartError, VolumeWarning, short_error
from .dicom import (
    SLICE_STEP_ATOL_MM,
    SLICE_STEP_RTOL,
    TILT_TOL_DEG,
    dicom_series_issues,
    fmt_mm,
    inspect_dicom_series,
    is_dicom_file,
    is_dicom_series_dir,
    raise_first,
    read_dicom_series,
)

__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "SLICE_STEP_ATOL_MM",
    "SLICE_STEP_RTOL",
    "TILT_TOL_DEG",
    "GEOMETRY_SPACING_RTOL",
    "GEOMETRY_DIRECTION_ATOL",
    "GEOMETRY_ORIGIN_VOXELS",
    "VolumeWarning",
    "load_volume",
    "probe_volume",
    "dicom_series_issues",
    "check_mask_geometry",
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
#: image/mask geometry (:func:`check_mask_geometry`): spacing per axis within 0.1 % (relative), direction
#: cosines within 1e-3 (about 0.06 degrees), origin within half a voxel of the image's grid
GEOMETRY_SPACING_RTOL = 1e-3
GEOMETRY_DIRECTION_ATOL = 1e-3
GEOMETRY_ORIGIN_VOXELS = 0.5


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


def source_name(v: Any) -> str:
    """A path as text, ``"<array>"`` for an in-memory volume (for error messages)."""
    return str(v) if isinstance(v, (str, os.PathLike)) else "<array>"


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
            an image that is not 3-D, non-finite voxels or voxel spacing; for a DICOM series also an
            unreadable or truncated slice file (named), uneven slice spacing (a missing slice: the
            positions either side of the gap are named), slices of differing orientation.

    Warns:
        VolumeWarning: a gantry-tilted DICOM series (loaded, on the sheared grid of its slice positions).
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
                arr, affine, meta = read_dicom_series(p)
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
    smart_warnings = list(meta.pop("smart_warnings", None) or [])
    out_meta: dict[str, Any] = {
        k: v for k, v in meta.items() if isinstance(k, str) and not k[:1].isdigit()
    }
    for w in smart_warnings:
        warnings.warn(w, VolumeWarning, stacklevel=2)
    out_meta.update(
        affine=affine, format=fmt, path=str(p), shape=tuple(int(s) for s in arr.shape), spacing=spacing
    )
    return arr, spacing, out_meta


# --------------------------------------------------------------------------- probe_volume (header only)
def _squeeze_shape(p: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A header's shape as load_volume would give it (trailing singleton axes dropped), checked 3-D."""
    shape0 = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        kind = f"{len(shape)}-D" if len(shape) < 3 else f"{len(shape)}-D with {int(np.prod(shape[3:]))} channels/frames"
        raise SmartError(f"{p}: image is {kind} (shape {shape0}), expected a single 3-D volume")
    if min(shape) < 2:
        raise SmartError(f"{p}: image has a single slice (shape {tuple(int(s) for s in shape)}), expected a 3-D volume")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _gzip_holds(path: Path, start: int, need: int) -> str | None:
    """None if the gzip stream from byte ``start`` of ``path`` decompresses to at least ``need`` bytes,
    else what is wrong. The gzip trailer's size field is read first (it matches for an intact file); the
    stream is decompressed (nothing kept) only when it does not."""
    size = path.stat().st_size
    if size - start >= 18:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            if int.from_bytes(fh.read(4), "little") == need % 2**32:
                return None
    got = 0
    try:
        with open(path, "rb") as raw:
            raw.seek(start)
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                while got < need:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    got += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        return f"compressed data ends early or is corrupt ({short_error(exc)})"
    return None if got >= need else f"data block holds {got} of {need} bytes"


def _probe_nifti(p: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    import nibabel as nib

    try:
        img = nib.load(str(p))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        offset = int(getattr(img.dataobj, "offset", 0))
        itemsize = int(img.get_data_dtype().itemsize)
    except Exception as exc:  # noqa: BLE001 - any header failure is the file's fault
        raise SmartError(f"{p}: not a readable NIfTI file (truncated or corrupt? {short_error(exc)})") from None
    shape3 = _squeeze_shape(p, shape)
    need = offset + int(np.prod(shape)) * itemsize
    if p.name.lower().endswith(".gz"):
        short = _gzip_holds(p, 0, need)
    else:
        have = p.stat().st_size
        short = None if have >= need else f"file holds {have} of the {need} bytes its header announces"
    if short:
        raise SmartError(f"{p}: not a readable NIfTI file (truncated? {short})")
    return shape3, _spacing_from_affine(affine)


def _probe_nrrd(p: Path) -> tuple[tuple[int, int, int], tuple[float, float, float]] | None:
    """Header and data size of an attached raw/gzip NRRD; None for other encodings (then load in full)."""
    import nrrd

    datatype = getattr(getattr(nrrd, "reader", None), "_determine_datatype", None)
    if datatype is None:  # pragma: no cover - another pynrrd: read in full
        return None
    try:
        with open(p, "rb") as fh:
            header = nrrd.read_header(fh)
            start = fh.tell()
        sizes = tuple(int(s) for s in header["sizes"])
        dtype = np.dtype(datatype(header))
    except Exception as exc:  # noqa: BLE001
        raise SmartError(f"{p}: not a readable NRRD file (truncated or corrupt? {short_error(exc)})") from None
    encoding = str(header.get("encoding", "raw")).lower()
    if any(k in header for k in ("data file", "datafile")) or encoding not in ("raw", "gzip", "gz"):
        return None
    shape3 = _squeeze_shape(p, sizes)
    need = int(np.prod(sizes)) * dtype.itemsize
    if encoding == "raw":
        have = p.stat().st_size - start
        short = None if have >= need else f"data block holds {have} of {need} bytes"
    else:
        short = _gzip_holds(p, start, need)
    if short:
        raise SmartError(f"{p}: not a readable NRRD file (truncated? {short})")
    if "space directions" in header:
        dirs = np.asarray([d for d in header["space directions"] if d is not None and np.all(np.isfinite(d))], float)
        sp = tuple(float(v) for v in np.linalg.norm(dirs, axis=1))[:3] if len(dirs) else (1.0, 1.0, 1.0)
    else:
        sp = tuple(float(s) if np.isfinite(s) and s > 0 else 1.0 for s in header.get("spacings", [1.0] * 3))[:3]
    return shape3, sp  # type: ignore[return-value]


def probe_volume(path: str | os.PathLike) -> tuple[tuple[int, int, int], tuple[float, float, float], list[str]]:
    """A volume's ``(X, Y, Z)`` shape and voxel spacing (mm) from its header, without decoding voxels.

    Cheap checks for a preflight over many files: NIfTI header (nibabel) and the presence of the whole
    data block (file size, or for ``.gz`` the gzip size field, decompressing only if that disagrees);
    raw / gzip NRRD likewise; a DICOM series from the headers of every slice (:func:`dicom_series_issues`:
    unreadable or truncated slices, uneven spacing, orientation; the shape is Columns x Rows x slices);
    other files (NRRD of other encodings, a single ``.dcm``) are read in full with :func:`load_volume`.
    Voxel values are not checked (NaN / infinite voxels are found only by :func:`load_volume`).

    Returns:
        ``(shape, spacing, warnings)``: ``warnings`` one line each (gantry tilt).

    Raises:
        SmartError: what :func:`load_volume` would refuse, as far as headers tell.
    """
    p = Path(path)
    if not p.exists():
        raise SmartError(f"{p}: not found")
    if p.is_dir():
        slices, _, problems, warns, positions = inspect_dicom_series(p, header_only=True)
        raise_first(problems)
        ds = slices[0]
        try:
            ps = [float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0))][:2]
        except (TypeError, ValueError):
            ps = [1.0, 1.0]
        z = float(np.median(np.diff(positions))) if positions is not None and len(positions) > 1 else 1.0
        shape = (int(ds.Columns), int(ds.Rows), len(slices))
        if len(slices) < 2:
            raise SmartError(f"{p}: image has a single slice (shape {shape}), expected a 3-D volume")
        return shape, (ps[1], ps[0], z), warns
    fmt = volume_format(p)
    if fmt is None:
        raise SmartError(f"{p}: unsupported file type (expected .nii, .nii.gz, .nrrd, .nhdr or a DICOM series folder)")
    if p.stat().st_size == 0:
        raise SmartError(f"{p}: empty file, not a readable {fmt} image")
    if fmt == "NIfTI":
        shape, sp = _probe_nifti(p)
        return shape, sp, []
    if fmt == "NRRD" and p.name.lower().endswith(".nrrd"):
        got = _probe_nrrd(p)
        if got is not None:
            return got[0], got[1], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VolumeWarning)
        arr, sp, _ = load_volume(p)
    return tuple(int(s) for s in arr.shape), sp, [str(w.message) for w in caught if issubclass(w.category, VolumeWarning)]  # type: ignore[return-value]


# --------------------------------------------------------------------------- image / mask geometry
def _axcodes(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(str(c) for c in nib.orientations.aff2axcodes(affine))


def check_mask_geometry(image: Any, image_affine: Any, image_shape: Any,
                        mask: Any, mask_affine: Any, mask_shape: Any) -> None:
    """Refuse a label map (mask) that is not on its image's voxel grid.

    Compares the shape (exactly), then, when both affines are known (4x4, RAS, as :func:`load_volume`
    returns them; None skips these), per axis the spacing (within ``GEOMETRY_SPACING_RTOL`` = 0.1 %
    relative), the orientation (direction cosines within ``GEOMETRY_DIRECTION_ATOL`` = 1e-3, about
    0.06 degrees) and the origin (the mask's first voxel within ``GEOMETRY_ORIGIN_VOXELS`` = half a
    voxel of the image's, measured in image voxels).

    Raises:
        SmartError: one line naming both files and every difference found.
    """
    names = f"{source_name(image)} and {source_name(mask)}"
    if tuple(int(s) for s in image_shape) != tuple(int(s) for s in mask_shape):
        raise SmartError(f"{names}: image/mask shape mismatch {tuple(image_shape)} vs {tuple(mask_shape)}")
    if image_affine is None or mask_affine is None:
        return
    a = np.asarray(image_affine, dtype=np.float64)[:4, :4]
    b = np.asarray(mask_affine, dtype=np.float64)[:4, :4]
    sa, sb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    diffs = []
    if np.any(np.abs(sa - sb) > GEOMETRY_SPACING_RTOL * np.maximum(sa, sb)):
        diffs.append(f"spacing {'x'.join(fmt_mm(v) for v in sa)} vs {'x'.join(fmt_mm(v) for v in sb)} mm")
    da, db = a[:3, :3] / np.where(sa > 0, sa, 1.0), b[:3, :3] / np.where(sb > 0, sb, 1.0)
    dmax = float(np.max(np.abs(da - db)))
    if dmax > GEOMETRY_DIRECTION_ATOL:
        ca, cb = _axcodes(a), _axcodes(b)
        diffs.append(f"orientation {ca} vs {cb}" if ca != cb else f"orientation: direction cosines differ by up to {dmax:.2g}")
    try:
        off = np.linalg.solve(a[:3, :3], b[:3, 3] - a[:3, 3])
    except np.linalg.LinAlgError:
        off = np.full(3, np.inf)
    if np.any(np.abs(off) > GEOMETRY_ORIGIN_VOXELS):
        diffs.append(f"origin ({', '.join(fmt_mm(v) for v in a[:3, 3])}) vs ({', '.join(fmt_mm(v) for v in b[:3, 3])}) mm, "
                     f"{float(np.max(np.abs(off))):.3g} voxels apart")
    if diffs:
        raise SmartError(f"{names}: image/mask geometry mismatch: {'; '.join(diffs)} (a mask must lie on its image's "
                         "voxel grid: same shape, spacing within 0.1 %, orientation, origin within half a voxel)")


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
        if any(is_dicom_file(d / f) for f in files) and is_dicom_series_dir(d):
            found.append(d)
    if not found:
        raise SmartError(f"{root}: no images found (expected .nii, .nii.gz, .nrrd files or DICOM series folders)")
    return sorted(found)
