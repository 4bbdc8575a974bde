"""DICOM series: find, check slice by slice, and read a folder of CT slices as one volume.

A series folder is read with MONAI's ``PydicomReader`` after every slice has been checked: an
unreadable or truncated slice file (named), slices whose positions are unevenly spaced (a missing
slice: the positions either side of the gap are named; a step may differ from the median step by at
most ``SLICE_STEP_ATOL_MM + SLICE_STEP_RTOL`` x median), slices of differing orientation, and gantry
tilt (the slice normal ``row x column`` of ImageOrientationPatient more than ``TILT_TOL_DEG`` off the
stacking direction of ImagePositionPatient, or a non-zero GantryDetectorTilt). The first kinds are
problems (:func:`read_dicom_series` raises); tilt is only a warning. Hand-written around MONAI's reader
because neither MONAI nor pydicom reports these: MONAI stacks whatever slices it can read.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SmartError, short_error

__all__ = ["SLICE_STEP_ATOL_MM", "SLICE_STEP_RTOL", "TILT_TOL_DEG", "is_dicom_file", "is_dicom_series_dir",
           "inspect_dicom_series", "dicom_series_issues", "read_dicom_series", "raise_first", "fmt_mm", "acquisition_tags"]

_NON_IMAGE_DICOM_NAMES = {"DICOMDIR"}
#: DICOM slice positions: a step between neighbouring slices may differ from the median step by at most
#: ``SLICE_STEP_ATOL_MM + SLICE_STEP_RTOL * median`` (the tolerance of dicom2nifti's slice-increment check)
SLICE_STEP_ATOL_MM = 0.1
SLICE_STEP_RTOL = 0.05
#: gantry tilt: largest angle (degrees) between the slice normal and the stacking direction that is not tilt
TILT_TOL_DEG = 0.1


def is_dicom_file(path: Path) -> bool:
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
        if is_dicom_file(f):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - unreadable: let load_volume say so
                return True
            if "Rows" in ds:
                return True
    return False




def _slice_frame(ds) -> tuple[np.ndarray, np.ndarray] | None:
    """(slice normal row x column, ImagePositionPatient) of a slice, None without both tags."""
    ipp = getattr(ds, "ImagePositionPatient", None)
    iop = getattr(ds, "ImageOrientationPatient", None)
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return np.cross(row, col), np.asarray(ipp, float)


def _sort_dicom_slices(path: Path, slices: list, names: list) -> tuple[list, list, np.ndarray | None]:
    """Order slices by position along the slice normal (ascending), InstanceNumber as fallback.

    Returns the slices, their names and their sorted positions in mm along the normal (None when
    any slice lacks ImagePositionPatient/ImageOrientationPatient: InstanceNumber order, no geometry).
    """
    positions = []
    physical = True
    for ds, name in zip(slices, names):
        frame = _slice_frame(ds)
        if frame is not None:
            positions.append(float(np.dot(frame[0], frame[1])))
        elif getattr(ds, "InstanceNumber", None) is not None:
            positions.append(float(ds.InstanceNumber))
            physical = False
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
    return [slices[i] for i in order], [names[i] for i in order], (pos_sorted if physical else None)


def _sop_class(ds) -> str | None:
    uid = getattr(ds, "SOPClassUID", None)
    if uid is None:
        uid = getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    return None if uid is None else str(uid)


def _pixel_data_shortfall(ds, f: Path) -> str | None:
    """How a slice's native (uncompressed) pixel data falls short of Rows x Columns x ..., None if complete
    (or compressed: then only decoding tells)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and getattr(ts, "is_encapsulated", getattr(ts, "is_compressed", False)):
        return None
    elem = ds.get_item(0x7FE00010)
    if elem is None or getattr(elem, "is_undefined_length", False):
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(getattr(ds, "BitsAllocated", 16))
        spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None  # incomplete image description: decoding will say what is wrong
    n = rows * cols * spp * frames
    expected = (n * bits + 7) // 8
    value = elem.value
    if value is None:  # deferred (header-only read): the bytes the file still holds
        tell = getattr(elem, "value_tell", None)
        if tell is None:
            return None
        available = min(int(elem.length), max(0, f.stat().st_size - int(tell)))
    else:
        available = len(value)
    if available < expected:
        return f"pixel data holds {available} of {expected} bytes"
    return None


def _read_dicom_slices(path: Path, header_only: bool) -> tuple[list, list[str], list[str]]:
    """The image slices of a series folder (each file read with ``pydicom.dcmread`` as MONAI's
    ``PydicomReader`` reads it; pixel data deferred when ``header_only``), their file names, and one
    line per slice file that is unreadable, truncated or without pixel data.

    DICOM objects without an image (RTSTRUCT, SEG, DICOMDIR) are skipped; a file of the same SOP class
    as the image slices (or with Rows) but no pixel data is a truncated slice.
    """
    import pydicom

    files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
    problems: list[str] = []
    read: list[tuple[Any, Path]] = []
    for f in files:
        if not is_dicom_file(f):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(f), defer_size="1 KB") if header_only else pydicom.dcmread(str(f))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the slice's fault
            problems.append(f"{path}: DICOM slice {f.name} is unreadable (truncated or corrupt? {short_error(exc)})")
            continue
        read.append((ds, f))
    image_sops = {_sop_class(ds) for ds, _ in read if "PixelData" in ds} - {None}
    slices, names = [], []
    for ds, f in read:
        if "SegmentSequence" in ds:
            continue
        if "PixelData" not in ds:
            if "Rows" in ds or _sop_class(ds) in image_sops:
                problems.append(f"{path}: DICOM slice {f.name} has no pixel data (truncated file?)")
            continue
        short = _pixel_data_shortfall(ds, f)
        if short:
            problems.append(f"{path}: DICOM slice {f.name} is truncated ({short})")
            continue
        slices.append(ds)
        names.append(str(f))
    return slices, names, problems


def fmt_mm(v: float) -> str:
    return f"{v:.4g}"


def _spacing_problems(path: Path, positions: np.ndarray) -> list[str]:
    """One line if the sorted slice positions are not evenly spaced (a missing slice, a gap)."""
    if positions is None or len(positions) < 3:
        return []
    steps = np.diff(positions)
    med = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - med) > SLICE_STEP_ATOL_MM + SLICE_STEP_RTOL * med)
    if not len(bad):
        return []
    gaps = [f"{fmt_mm(steps[i])} mm between slice positions {fmt_mm(positions[i])} and {fmt_mm(positions[i + 1])} mm"
            for i in bad[:3]]
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return [f"{path}: uneven slice spacing: {', '.join(gaps)}{more} (median step {fmt_mm(med)} mm); "
            "a slice is missing or unreadable, or the folder mixes series"]


def _orientation_problems(path: Path, slices: list, names: list) -> list[str]:
    """One line if the slices do not share one ImageOrientationPatient (not one volume)."""
    iops = [getattr(ds, "ImageOrientationPatient", None) for ds in slices]
    if any(i is None or len(i) != 6 for i in iops):
        return []
    ref = np.asarray(iops[0], float)
    odd = [Path(n).name for i, n in zip(iops, names) if np.max(np.abs(np.asarray(i, float) - ref)) > 1e-3]
    if not odd:
        return []
    return [f"{path}: DICOM slices differ in ImageOrientationPatient ({', '.join(odd[:3])} vs {Path(names[0]).name}); "
            "the folder mixes series (a localizer?)"]


def _tilt_warnings(path: Path, slices: list, positions: np.ndarray | None) -> list[str]:
    """One line if the series is gantry-tilted (slice normal off the stacking direction, or GantryDetectorTilt)."""
    angle = 0.0
    if positions is not None and len(slices) > 1:
        first, last = _slice_frame(slices[0]), _slice_frame(slices[-1])
        normal = first[0] / max(np.linalg.norm(first[0]), 1e-12)
        stack = last[1] - first[1]
        c = abs(float(np.dot(normal, stack))) / max(float(np.linalg.norm(stack)), 1e-12)
        angle = float(np.degrees(np.arccos(min(1.0, c))))
    try:
        gantry = float(getattr(slices[0], "GantryDetectorTilt", 0.0) or 0.0)
    except (TypeError, ValueError):
        gantry = 0.0
    if angle <= TILT_TOL_DEG and abs(gantry) <= 1e-3:
        return []
    what = []
    if angle > TILT_TOL_DEG:
        what.append(f"slices stacked {angle:.1f} degrees off their normal (ImageOrientationPatient rows not "
                    "perpendicular to the stacking direction)")
    if abs(gantry) > 1e-3:
        what.append(f"GantryDetectorTilt {gantry:g} degrees")
    return [f"{path}: gantry tilt: {', '.join(what)}; loaded on a sheared grid (voxel positions are correct, "
            "the voxels are not rectangular)"]


def inspect_dicom_series(path: Path, header_only: bool) -> tuple[list, list[str], list[str], list[str], np.ndarray | None]:
    """Read and check a series folder: (sorted slices, names, problems, warnings, positions).

    Raises SmartError for what stops the check itself (no DICOM, mixed series, duplicate positions).
    """
    files = [f for f in sorted(path.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if not any(path.iterdir()):
        raise SmartError(f"{path}: empty folder (expected a DICOM series)")
    if not any(is_dicom_file(f) for f in files):
        raise SmartError(
            f"{path}: folder holds no DICOM files (expected a DICOM series; "
            "NIfTI/NRRD files in a folder are found with find_volumes)"
        )
    slices, names, problems = _read_dicom_slices(path, header_only)
    if not slices:
        if problems:
            return [], [], problems, [], None
        raise SmartError(f"{path}: no DICOM image slices (only non-image objects such as RTSTRUCT/DICOMDIR)")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise SmartError(f"{path}: folder mixes {len(series)} DICOM series; put each series in its own folder")
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in slices}
    if len(shapes) > 1:
        raise SmartError(f"{path}: DICOM slices differ in size {sorted(shapes)}")
    slices, names, positions = _sort_dicom_slices(path, slices, names)
    problems += _orientation_problems(path, slices, names)
    problems += _spacing_problems(path, positions)
    warns = _tilt_warnings(path, slices, positions)
    return slices, names, problems, warns, positions


def dicom_series_issues(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Problems and warnings of a DICOM series folder from the slice headers alone (pixel data not decoded).

    Returns ``(problems, warnings)``, one line each: problems are what :func:`load_volume` refuses
    (an unreadable / truncated slice file, uneven slice spacing, slices of differing orientation, mixed
    series, ...), warnings what it loads with a :class:`VolumeWarning` (gantry tilt).
    """
    p = Path(path)
    try:
        _, _, problems, warns, _ = inspect_dicom_series(p, header_only=True)
    except SmartError as exc:
        return [str(exc)], []
    return problems, warns


def raise_first(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s); smart data check lists them)" if len(problems) > 1 else ""
        raise SmartError(problems[0] + more)


def read_dicom_series(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from monai.data import PydicomReader

    slices, names, problems, warns, _ = inspect_dicom_series(path, header_only=False)
    raise_first(problems)
    reader = PydicomReader(fname_regex=None)  # None: keep files pydicom.misc.is_dicom accepts
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    # PydicomReader stacks by InstanceNumber: renumber (in memory only) to the spatial order
    for i, ds in enumerate(slices):
        ds.InstanceNumber = i + 1
    try:
        if len(slices) > 1:
            reader.has_series = True
            reader.filenames = [names]
            arr, meta = reader.get_data(slices)
        else:
            reader.has_series = False
            reader.filenames = names
            arr, meta = reader.get_data(slices[0])
    except Exception as exc:  # noqa: BLE001 - name the slice whose pixels do not decode
        for ds, name in zip(slices, names):
            try:
                ds.pixel_array  # noqa: B018
            except Exception as exc2:  # noqa: BLE001
                raise SmartError(f"{path}: DICOM slice {Path(name).name} has undecodable pixel data "
                                 f"({short_error(exc2)})") from None
        raise exc
    meta = dict(meta)
    meta["series_uid"] = next(iter(series))
    meta["n_slices"] = len(slices)
    meta["modality"] = str(getattr(slices[0], "Modality", ""))
    if warns:
        meta["smart_warnings"] = warns
    return np.asarray(arr, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64), meta


def acquisition_tags(path: str | os.PathLike) -> dict[str, Any]:
    """The acquisition tags of a DICOM series folder (or one DICOM file), read from the first image slice's header.

    Returns ``{"kernel": ConvolutionKernel (multi-valued: joined by "\\"), "slice_thickness_mm": SliceThickness,
    "contrast_agent": ContrastBolusAgent}``, each None where the tag is absent or unreadable (an empty
    ContrastBolusAgent is ``""``: the attribute is there without an agent).
    """
    import pydicom

    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if is_dicom_file(f)) if p.is_dir() else []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - an unreadable slice has no tags; the readers report it
            continue
        if "Rows" not in ds:
            continue
        kernel = ds.get("ConvolutionKernel")
        if kernel is not None and not isinstance(kernel, str):
            kernel = "\\".join(str(k) for k in kernel) if kernel else ""
        try:
            thickness = float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None
        except (TypeError, ValueError):
            thickness = None
        agent = ds.get("ContrastBolusAgent")
        return {"kernel": None if kernel in (None, "") else str(kernel), "slice_thickness_mm": thickness,
                "contrast_agent": None if agent is None else str(agent).strip()}
    return {"kernel": None, "slice_thickness_mm": None, "contrast_agent": None}
