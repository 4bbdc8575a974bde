"""Real CT formats behind one record interface.

A *record* is a plain dict describing one sample::

    {"image": path-or-array, "label": int | None, "mask": path-or-array | None,
     "patient_id": str, "split": str | None, ...extras}

Records are cheap (paths, not voxels) except for MedMNIST, whose volumes are small and
held in memory. :mod:`smartlib.data.transforms` turns records into tensors.

Volumes are ``(X, Y, Z)`` float32 arrays in HU, ``Z`` the axial slice axis, exactly as
MONAI's readers return them (``NibabelReader`` for NIfTI, ``NrrdReader`` for NRRD,
``PydicomReader`` for a DICOM series folder), together with a RAS affine.

Every problem with a user's data is raised as :class:`~smartlib.errors.SmartError` with a
one-line message that names the file and says what is wrong. Nothing here writes files.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SmartError

__all__ = [
    "NIFTI_SUFFIXES",
    "NRRD_SUFFIXES",
    "TASKS",
    "load_volume",
    "is_volume_file",
    "is_dicom_series_dir",
    "find_volumes",
    "read_manifest",
    "load_medmnist",
    "medmnist_records",
    "decathlon_records",
    "folder_records",
    "resolve_data",
    "check_path",
    "check_record",
    "volume_stem",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
MEDMNIST_SPLITS = ("train", "val", "test")
#: task names accepted by :func:`resolve_data` and what each needs from a record
TASKS = {
    "pretrain": None,  # images only; labels/masks ignored if present
    "classify": "label",
    "segment": "mask",
}
_TASK_ALIASES = {
    "pretraining": "pretrain", "ssl": "pretrain", "unlabeled": "pretrain",
    "classification": "classify", "cls": "classify",
    "segmentation": "segment", "seg": "segment",
    # the built-in phantom task sets
    "nodules": "classify", "response": "classify", "organs": "classify",
}
# DICOM objects that live beside image slices but carry no image of their own
_NON_IMAGE_DICOM_NAMES = {"DICOMDIR"}


# --------------------------------------------------------------------------- helpers
def _lower_name(path: Path) -> str:
    return path.name.lower()


def volume_stem(path: str | os.PathLike) -> str:
    """File name without its volume suffix (``lung_001.nii.gz`` -> ``lung_001``); a folder's own name."""
    p = Path(path)
    name = p.name
    for suf in NIFTI_SUFFIXES + NRRD_SUFFIXES + (".dcm",):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _format_of(path: Path) -> str | None:
    name = _lower_name(path)
    if name.endswith(NIFTI_SUFFIXES):
        return "NIfTI"
    if name.endswith(NRRD_SUFFIXES):
        return "NRRD"
    if name.endswith(".dcm"):
        return "DICOM"
    return None


def is_volume_file(path: str | os.PathLike) -> bool:
    """True for a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) file name."""
    return _format_of(Path(path)) in ("NIfTI", "NRRD")


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


def _short(exc: BaseException, limit: int = 160) -> str:
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
        fmt = _format_of(p)
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
        raise SmartError(f"{p}: not a readable {what} (truncated or corrupt? {_short(exc)})") from None

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


# --------------------------------------------------------------------------- manifest
def _parse_label(raw: str, classes: Sequence | None, where: str) -> int | None:
    raw = (raw or "").strip()
    if raw == "" or raw.lower() in ("none", "nan", "na"):
        return None
    names = None if classes is None else [str(c) for c in classes]
    try:
        f = float(raw)
    except ValueError:
        f = None
    if f is not None:
        if not np.isfinite(f) or f != int(f):
            raise SmartError(f"{where}: label {raw!r} is not an integer class")
        value = int(f)
        if classes is not None and value not in _allowed_labels(classes):
            raise SmartError(f"{where}: label {value} is outside the declared classes {list(classes)}")
        return value
    # a class name
    if names is None:
        raise SmartError(f"{where}: label {raw!r} is not an integer and no class names were declared")
    if raw not in names:
        raise SmartError(f"{where}: label {raw!r} is outside the declared classes {list(classes)}")
    return names.index(raw)


def _allowed_labels(classes: Sequence) -> list[int]:
    """Integer labels allowed by ``classes``: the classes themselves if integers, else their indices."""
    if all(_is_int_like(c) for c in classes):
        return [int(float(c)) for c in classes]
    return list(range(len(classes)))


def _is_int_like(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return np.isfinite(f) and f == int(f)


def _read_manifest(csv_path: Path, classes: Sequence | None, problems: list[str] | None) -> list[dict]:
    """Shared by :func:`read_manifest` (raise) and :func:`check_path` (collect into ``problems``)."""
    def fail(msg: str) -> None:
        if problems is None:
            raise SmartError(msg)
        problems.append(" ".join(msg.split()))

    p = Path(csv_path)
    if not p.exists():
        raise SmartError(f"{p}: manifest not found")
    if not p.is_file():
        raise SmartError(f"{p}: manifest is not a file")
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise SmartError(f"{p}: not a readable CSV manifest ({_short(exc)})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SmartError(f"{p}: empty manifest (expected a header with columns image,label[,mask])")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("image", "label") if c not in header]
    if missing:
        raise SmartError(f"{p}: manifest is missing required column(s) {', '.join(missing)} (header: {','.join(header)})")
    if len(set(header)) != len(header):
        dup = [h for h, n in Counter(header).items() if n > 1]
        raise SmartError(f"{p}: manifest has duplicate column(s) {', '.join(dup)}")
    if len(rows) == 1:
        raise SmartError(f"{p}: manifest has a header but no rows")
    base = p.parent
    records: list[dict] = []
    for i, row in enumerate(rows[1:], start=1):
        where = f"{p}: row {i}"
        if len(row) != len(header):
            fail(f"{where}: has {len(row)} fields, the header has {len(header)}")
            continue
        cells = {h: c.strip() for h, c in zip(header, row)}
        if not cells["image"]:
            fail(f"{where}: empty image path")
            continue
        img = Path(cells["image"])
        img = img if img.is_absolute() else base / img
        if not img.exists():
            fail(f"{where}: image {cells['image']} not found ({img})")
            continue
        mask = None
        if cells.get("mask"):
            mask = Path(cells["mask"])
            mask = mask if mask.is_absolute() else base / mask
            if not mask.exists():
                fail(f"{where}: mask {cells['mask']} not found ({mask})")
                continue
        try:
            label = _parse_label(cells["label"], classes, where)
        except SmartError as exc:
            fail(str(exc))
            continue
        rec: dict[str, Any] = {
            "image": img,
            "label": label,
            "mask": mask,
            "patient_id": cells.get("patient_id") or volume_stem(img),
            "split": cells.get("split") or None,
        }
        for k, v in cells.items():
            if k not in rec:
                rec[k] = v
        rec["source"] = str(p)
        rec["row"] = i
        records.append(rec)
    return records


def read_manifest(csv_path: str | os.PathLike, classes: Sequence | None = None) -> list[dict]:
    """Read a CSV manifest into records.

    Columns ``image,label`` are required, ``mask``, ``patient_id`` and ``split`` optional; any other
    column is kept as a string extra. Relative paths are resolved against the manifest's folder. An
    empty ``label`` cell means unlabeled (``None``). With ``classes`` given, labels must be one of them:
    integer classes are compared as integers; with class names, a cell may hold the name (mapped to its
    index) or the index. Rows are numbered from 1 after the header in error messages.
    """
    return _read_manifest(Path(csv_path), classes, None)


# --------------------------------------------------------------------------- MedMNIST
def _open_npz(path: Path):
    if not path.exists():
        raise SmartError(f"{path}: not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SmartError(f"{path}: not a readable .npz file ({_short(exc)})") from None


def load_medmnist(npz_path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of a MedMNIST 3D ``.npz``: images ``(N, D, H, W)`` uint8 and labels ``(N,)`` int64.

    Keys per SPEC §2: ``{split}_images`` (N×D×H×W uint8, a trailing channel of 1 is dropped) and
    ``{split}_labels`` (N×1 or N).
    """
    p = Path(npz_path)
    if split not in MEDMNIST_SPLITS:
        raise SmartError(f"split={split!r}: must be one of {', '.join(MEDMNIST_SPLITS)}")
    z = _open_npz(p)
    with z:
        missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in z.files]
        if missing:
            raise SmartError(
                f"{p}: missing key(s) {', '.join(missing)} (has {', '.join(z.files) or 'no arrays'}); "
                "expected a MedMNIST 3D file"
            )
        try:
            images = np.asarray(z[f"{split}_images"])
            labels = np.asarray(z[f"{split}_labels"])
        except Exception as exc:  # noqa: BLE001 - truncated member
            raise SmartError(f"{p}: key {split}_images/{split}_labels unreadable ({_short(exc)})") from None
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 4:
        raise SmartError(
            f"{p}: key {split}_images has shape {images.shape}, expected N×D×H×W (3-D MedMNIST volumes)"
        )
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.number) and images.size and images.min() >= 0 and images.max() <= 255:
            images = images.astype(np.uint8)
        else:
            raise SmartError(f"{p}: key {split}_images has dtype {images.dtype}, expected uint8 in 0..255")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise SmartError(
            f"{p}: key {split}_labels has shape {labels.shape}, expected N×1 (multi-label files are not supported)"
        )
    if labels.shape[0] != images.shape[0]:
        raise SmartError(
            f"{p}: key {split}_labels has {labels.shape[0]} entries but {split}_images has {images.shape[0]}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise SmartError(f"{p}: key {split}_labels holds non-integer values ({labels.dtype})")
    return images, labels.astype(np.int64)


def medmnist_records(
    npz_path: str | os.PathLike, splits: Sequence[str] = MEDMNIST_SPLITS, dtype: Any = np.float32
) -> list[dict]:
    """Records for every volume of a MedMNIST 3D ``.npz`` (28³ or 64³), with in-memory arrays.

    Each ``image`` is ``(X, Y, Z) = (W, H, D)`` (the same axis convention as a DICOM series: ``Z`` the
    slice axis), scaled to [0, 1] as ``dtype`` (float32; pass ``np.uint8`` to keep the raw bytes and
    let the transforms scale them, 4x less memory). MedMNIST is already intensity-normalised, so
    records carry ``intensity="unit"`` (transforms skip the HU window) and ``spacing=None`` (no
    resampling). ``patient_id`` is ``"{split}-{index:05d}"``.
    """
    p = Path(npz_path)
    records: list[dict] = []
    for split in splits:
        images, labels = load_medmnist(p, split)
        for i in range(images.shape[0]):
            vol = np.ascontiguousarray(images[i].transpose(2, 1, 0))
            vol = vol if np.dtype(dtype) == np.uint8 else vol.astype(dtype) / np.asarray(255.0, dtype)
            records.append(
                {
                    "image": vol,
                    "label": int(labels[i]),
                    "mask": None,
                    "patient_id": f"{split}-{i:05d}",
                    "split": split,
                    "intensity": "unit",
                    "spacing": None,
                    "source": str(p),
                    "index": i,
                }
            )
    return records


# --------------------------------------------------------------------------- Decathlon
def decathlon_records(root: str | os.PathLike) -> list[dict]:
    """Records of a Medical Segmentation Decathlon task folder (e.g. ``Task06_Lung``).

    ``dataset.json``'s ``training`` entries become ``split="train"`` records with the segmentation
    as ``mask`` (``label`` None); its ``test`` entries become ``split="test"`` records without mask.
    """
    r = Path(root)
    if not r.exists():
        raise SmartError(f"{r}: not found")
    js = r / "dataset.json"
    if not js.is_file():
        raise SmartError(f"{r}: no dataset.json (expected a Decathlon task folder with imagesTr/, labelsTr/)")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmartError(f"{js}: not valid JSON ({_short(exc)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
        raise SmartError(f"{js}: missing 'training' list of {{image, label}} entries")
    if not meta["training"]:
        raise SmartError(f"{js}: 'training' list is empty")

    def resolve(rel: Any, where: str) -> Path:
        if not isinstance(rel, str) or not rel:
            raise SmartError(f"{js}: {where}: expected a file path, got {rel!r}")
        q = Path(rel)
        q = q if q.is_absolute() else r / q
        if not q.exists():
            raise SmartError(f"{js}: {where}: {rel} not found ({q})")
        return q

    records: list[dict] = []
    for i, entry in enumerate(meta["training"], start=1):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise SmartError(f"{js}: training entry {i} must be an object with 'image' and 'label'")
        img = resolve(entry["image"], f"training entry {i} image")
        seg = resolve(entry["label"], f"training entry {i} label")
        records.append(
            {"image": img, "label": None, "mask": seg, "patient_id": volume_stem(img), "split": "train",
             "source": str(js)}
        )
    for i, entry in enumerate(meta.get("test") or [], start=1):
        rel = entry.get("image") if isinstance(entry, dict) else entry
        img = resolve(rel, f"test entry {i}")
        records.append(
            {"image": img, "label": None, "mask": None, "patient_id": volume_stem(img), "split": "test",
             "source": str(js)}
        )
    return records


def folder_records(folder: str | os.PathLike) -> list[dict]:
    """Unlabeled records for every volume :func:`find_volumes` finds (for pretraining)."""
    root = Path(folder)
    vols = find_volumes(root)
    records = []
    for v in vols:
        rel = v.relative_to(root)
        pid = volume_stem(v) if v.is_file() else ("/".join(rel.parts) or root.name)
        records.append({"image": v, "label": None, "mask": None, "patient_id": pid, "split": None,
                        "source": str(root)})
    return records


# --------------------------------------------------------------------------- resolve_data
def _canonical_task(task: str) -> str:
    t = str(task).strip().lower()
    t = _TASK_ALIASES.get(t, t)
    if t not in TASKS:
        raise SmartError(f"task={task!r}: must be one of {', '.join(TASKS)}")
    return t


def resolve_data(spec: str | os.PathLike, task: str = "pretrain", classes: Sequence | None = None) -> list[dict]:
    """Records for ``--data spec``: a manifest ``.csv``, a MedMNIST ``.npz``, a Decathlon root
    (has ``dataset.json``), a folder of images (unlabeled) or a single volume.

    ``task`` is ``"pretrain"`` (images suffice), ``"classify"`` (every record needs an integer
    ``label``) or ``"segment"`` (every record in a training split needs a ``mask``).
    """
    t = _canonical_task(task)
    p = Path(spec)
    if not p.exists():
        raise SmartError(f"{p}: not found (expected a manifest .csv, a MedMNIST .npz, a Decathlon folder or an image folder)")
    name = _lower_name(p)
    if p.is_file() and name.endswith(".csv"):
        records = read_manifest(p, classes)
    elif p.is_file() and name.endswith(".npz"):
        records = medmnist_records(p)
    elif p.is_dir() and (p / "dataset.json").is_file():
        records = decathlon_records(p)
    elif p.is_dir() and is_dicom_series_dir(p):
        records = [{"image": p, "label": None, "mask": None, "patient_id": p.name, "split": None}]
    elif p.is_dir():
        records = folder_records(p)
    elif p.is_file() and _format_of(p) is not None:
        records = [{"image": p, "label": None, "mask": None, "patient_id": volume_stem(p), "split": None}]
    else:
        raise SmartError(
            f"{p}: unsupported data (expected a manifest .csv, a MedMNIST .npz, a Decathlon folder with "
            "dataset.json, a folder of NIfTI/NRRD/DICOM images, or one image file)"
        )
    if not records:
        raise SmartError(f"{p}: no records")
    if t == "classify":
        unlabeled = [r for r in records if r.get("label") is None]
        if unlabeled:
            raise SmartError(
                f"{p}: {len(unlabeled)} of {len(records)} records have no label (e.g. {unlabeled[0]['patient_id']}); "
                "classification needs a label per image"
            )
        if classes is not None:
            allowed = _allowed_labels(classes)
            bad = [r for r in records if r["label"] not in allowed]
            if bad:
                raise SmartError(f"{p}: label {bad[0]['label']} of {bad[0]['patient_id']} is outside the declared classes {list(classes)}")
    elif t == "segment":
        nomask = [r for r in records if r.get("mask") is None and r.get("split") != "test"]
        if nomask:
            raise SmartError(
                f"{p}: {len(nomask)} of {len(records)} records have no mask (e.g. {nomask[0]['patient_id']}); "
                "segmentation needs a mask per training image"
            )
    return records


# --------------------------------------------------------------------------- checks
def _name(v: Any) -> str:
    return str(v) if isinstance(v, (str, os.PathLike)) else "<array>"


def check_record(rec: dict) -> tuple[tuple[int, ...] | None, tuple[float, ...] | None]:
    """Load a record's image (and mask) and check them; returns (shape, spacing). Raises SmartError.

    In-memory arrays are checked for being 3-D and finite; a mask must match its image's shape.
    """
    img = rec.get("image")
    if img is None:
        raise SmartError(f"record {rec.get('patient_id')!r}: no image")
    if isinstance(img, (str, os.PathLike)):
        arr, spacing, _ = load_volume(img)
    else:
        arr = np.asarray(img)
        spacing = rec.get("spacing")
        _check_array(arr, f"record {rec.get('patient_id')!r} image")
    mask = rec.get("mask")
    if mask is not None:
        if isinstance(mask, (str, os.PathLike)):
            marr, _, _ = load_volume(mask)
        else:
            marr = np.asarray(mask)
            _check_array(marr, f"record {rec.get('patient_id')!r} mask")
        if marr.shape != arr.shape:
            raise SmartError(
                f"{_name(img)} and {_name(mask)}: image/mask shape mismatch {tuple(arr.shape)} vs {tuple(marr.shape)}"
            )
    return tuple(int(s) for s in arr.shape), (tuple(float(s) for s in spacing) if spacing is not None else None)


def _check_array(arr: np.ndarray, what: str) -> None:
    if arr.ndim != 3:
        raise SmartError(f"{what}: array is {arr.ndim}-D (shape {arr.shape}), expected a 3-D volume")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise SmartError(f"{what}: {int((~np.isfinite(arr)).sum())} NaN/infinite voxels; values must be finite")


def check_path(path: str | os.PathLike, classes: Sequence | None = None) -> tuple[str, list[str]]:
    """Validate a data folder, file or manifest thoroughly (for ``smart data check PATH``).

    Loads every volume, checks image/mask shapes, finite values, labels against ``classes``
    and patients appearing in more than one split. Returns a one-line summary and a list of
    one-line problems (empty when all is well), each naming the file and what is wrong.
    """
    p = Path(path)
    problems: list[str] = []
    try:
        name = _lower_name(p)
        if p.is_file() and name.endswith(".csv"):
            records = _read_manifest(p, classes, problems)
            kind = "manifest"
        elif p.is_file() and name.endswith(".npz"):
            records = medmnist_records(p, dtype=np.uint8)
            kind = "MedMNIST file"
        elif p.is_dir() and (p / "dataset.json").is_file():
            records = decathlon_records(p)
            kind = "Decathlon folder"
        elif p.is_dir() and not is_dicom_series_dir(p):
            records = folder_records(p)
            kind = "image folder"
        else:
            if not p.exists():
                raise SmartError(f"{p}: not found")
            records = [{"image": p, "label": None, "mask": None, "patient_id": volume_stem(p), "split": None}]
            kind = "DICOM series" if p.is_dir() else "image"
    except SmartError as exc:
        return f"{p}: not checked", [str(exc)]

    shapes: Counter = Counter()
    spacings: list[tuple[float, ...]] = []
    n_ok = 0
    for rec in records:
        try:
            shape, spacing = check_record(rec)
        except SmartError as exc:
            problems.append(str(exc))
            continue
        n_ok += 1
        shapes[shape] += 1
        if spacing is not None:
            spacings.append(spacing)
        if classes is not None and rec.get("label") is not None:
            lab = rec["label"]
            if lab not in _allowed_labels(classes):
                problems.append(f"{_name(rec['image'])}: label {lab} is outside the declared classes {list(classes)}")
    # the same patient in two splits leaks test data into training
    splits_of: dict[str, set] = {}
    for rec in records:
        if rec.get("split"):
            splits_of.setdefault(str(rec.get("patient_id")), set()).add(str(rec["split"]))
    leaks = sorted(pid for pid, s in splits_of.items() if len(s) > 1)
    if leaks and kind != "MedMNIST file":
        problems.append(f"{p}: patient(s) {', '.join(leaks[:5])} appear in more than one split")

    labels = Counter(r.get("label") for r in records if r.get("label") is not None)
    splits = Counter(r.get("split") for r in records if r.get("split"))
    n_mask = sum(1 for r in records if r.get("mask") is not None)
    parts = [f"{p}: {kind}, {len(records)} record(s), {n_ok} loaded OK"]
    if shapes:
        lo = tuple(min(s[i] for s in shapes) for i in range(3))
        hi = tuple(max(s[i] for s in shapes) for i in range(3))
        parts.append("shape " + ("x".join(map(str, lo)) if lo == hi else f"{'x'.join(map(str, lo))}..{'x'.join(map(str, hi))}"))
    if spacings:
        sp = np.asarray(spacings)
        parts.append("spacing " + "x".join(f"{v:.2g}" for v in np.median(sp, axis=0)) + " mm (median)")
    if labels:
        parts.append("labels " + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())))
    if n_mask:
        parts.append(f"{n_mask} mask(s)")
    if splits:
        parts.append("splits " + " ".join(f"{k}:{v}" for k, v in sorted(splits.items())))
    parts.append(f"{len(problems)} problem(s)")
    return ", ".join(parts), problems
