"""Record sources: every kind of data path behind one record interface.

A *record* is a plain dict describing one sample::

    {"image": path-or-array, "label": int | None, "mask": path-or-array | None,
     "patient_id": str, "split": str | None, ...extras}

Records are cheap (paths, not voxels) except for MedMNIST (MedMNIST v2, arXiv 2110.14795), whose
volumes are small and held in memory. The kinds of path (:func:`classify_path`, the one place that
decides): a manifest ``.csv`` (:mod:`smartlib.data.manifest`), a MedMNIST 3D ``.npz``, a Medical
Segmentation Decathlon task folder (MSD, arXiv 2106.05735), a folder of volumes, one DICOM series
folder, one volume file. :mod:`smartlib.data.transforms` turns records into tensors.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import SmartError
from ..tasks import KINDS, TASKS, record_kind
from .manifest import allowed_labels, manifest_records
from .readers import find_volumes, is_dicom_series_dir, short_error, volume_format, volume_stem

__all__ = [
    "RECORD_TASKS",
    "MEDMNIST_SPLITS",
    "load_medmnist",
    "medmnist_records",
    "decathlon_records",
    "folder_records",
    "is_decathlon_layout",
    "volume_record",
    "classify_path",
    "canonical_task",
    "resolve_data",
]

MEDMNIST_SPLITS = ("train", "val", "test")
#: task names accepted by :func:`resolve_data` and what each needs from a record
#: what :func:`resolve_data` requires of a record, per record task (from the registry's kinds)
RECORD_TASKS = {record_kind(kind): needs for kind, needs in KINDS.items()}
#: generic spellings; every task name of the registry (:data:`smartlib.tasks.TASKS`) is accepted too
_TASK_ALIASES = {
    "pretraining": "pretrain", "ssl": "pretrain", "unlabeled": "pretrain",
    "classification": "classify", "cls": "classify",
    "segmentation": "segment", "seg": "segment",
}


# --------------------------------------------------------------------------- MedMNIST
def _open_npz(path: Path):
    if not path.exists():
        raise SmartError(f"{path}: not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SmartError(f"{path}: not a readable .npz file ({short_error(exc)})") from None


def load_medmnist(npz_path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of a MedMNIST 3D ``.npz``: images ``(N, D, H, W)`` uint8 and labels ``(N,)`` int64.

    Keys as MedMNIST v2 (arXiv 2110.14795) ships them: ``{split}_images`` (N×D×H×W uint8, a trailing
    channel of 1 is dropped) and ``{split}_labels`` (N×1 or N).
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
            raise SmartError(f"{p}: key {split}_images/{split}_labels unreadable ({short_error(exc)})") from None
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
    """Records of a Medical Segmentation Decathlon task folder (MSD, arXiv 2106.05735; e.g. ``Task06_Lung``).

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
        raise SmartError(f"{js}: not valid JSON ({short_error(exc)})") from None
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


def is_decathlon_layout(folder: str | os.PathLike) -> bool:
    """True for a folder laid out as a Decathlon task (``imagesTr/`` and ``labelsTr/`` side by side)."""
    d = Path(folder)
    return (d / "imagesTr").is_dir() and (d / "labelsTr").is_dir()


def _refuse_decathlon_without_json(root: Path) -> None:
    raise SmartError(
        f"{root}: has imagesTr/ and labelsTr/ (a Decathlon task folder) but no dataset.json; refusing to read it "
        "as an image folder, which would count the label maps in labelsTr/ as CTs: add the task's dataset.json "
        "(it pairs each image with its label map), or pass imagesTr/ for unlabeled pretraining"
    )


def folder_records(folder: str | os.PathLike) -> list[dict]:
    """Unlabeled records for every volume :func:`find_volumes` finds (for pretraining).

    A folder laid out as a Decathlon task (``imagesTr/``, ``labelsTr/``; :func:`is_decathlon_layout`),
    itself or below it, is refused: its label maps would be read as CTs.
    """
    root = Path(folder)
    if is_decathlon_layout(root):
        _refuse_decathlon_without_json(root)
    vols = find_volumes(root)
    seen: set[Path] = set()
    for v in vols:
        for parent in v.relative_to(root).parents:
            if parent == Path(".") or parent in seen:
                continue
            seen.add(parent)
            sub = root / parent
            if is_decathlon_layout(sub):
                raise SmartError(
                    f"{root}: {sub} is a Decathlon task folder (imagesTr/, labelsTr/); read as an image folder its "
                    f"label maps would count as CTs: pass {sub} itself (with its dataset.json) or its imagesTr/"
                )
    records = []
    for v in vols:
        rel = v.relative_to(root)
        pid = volume_stem(v) if v.is_file() else ("/".join(rel.parts) or root.name)
        records.append({"image": v, "label": None, "mask": None, "patient_id": pid, "split": None,
                        "source": str(root)})
    return records


def volume_record(path: Path, patient_id: str) -> dict:
    """The unlabeled record of one volume (a file or a DICOM series folder)."""
    return {"image": path, "label": None, "mask": None, "patient_id": patient_id, "split": None}


# --------------------------------------------------------------------------- what a path is
def classify_path(path: str | os.PathLike, classes: Sequence | None = None, *, problems: list[str] | None = None,
                  npz_dtype: Any = np.float32, task: str | None = None) -> tuple[str, list[dict]]:
    """The kind of a data path and its records: the one dispatch behind :func:`resolve_data` and
    :func:`~smartlib.data.checks.check_path`.

    Kinds, tried in this order: ``"manifest"`` (a ``.csv`` file, read with ``classes``; bad rows
    raise, or are described in ``problems`` when a list is given; ``task`` chooses its required
    columns, see :func:`~smartlib.data.manifest.manifest_records`), ``"MedMNIST file"`` (a ``.npz``,
    images as ``npz_dtype``), ``"Decathlon folder"`` (has ``dataset.json``), ``"image folder"`` (a
    folder that is not itself a DICOM series: every volume under it), ``"DICOM series"`` (a series
    folder) and ``"image"`` (any other file, as one record; its format is not checked here).

    Raises:
        SmartError: the path does not exist, or its reader rejects it; a folder laid out as a
        Decathlon task (``imagesTr/``, ``labelsTr/``) without ``dataset.json`` is refused, not read as
        an image folder (its label maps would count as CTs).
    """
    p = Path(path)
    name = p.name.lower()
    if p.is_file() and name.endswith(".csv"):
        return "manifest", manifest_records(p, classes, problems, task=task)
    if p.is_file() and name.endswith(".npz"):
        return "MedMNIST file", medmnist_records(p, dtype=npz_dtype)
    if p.is_dir() and (p / "dataset.json").is_file():
        return "Decathlon folder", decathlon_records(p)
    if p.is_dir() and is_decathlon_layout(p):
        _refuse_decathlon_without_json(p)
    if p.is_dir() and not is_dicom_series_dir(p):
        return "image folder", folder_records(p)
    if not p.exists():
        raise SmartError(f"{p}: not found")
    if p.is_dir():
        return "DICOM series", [volume_record(p, p.name)]
    return "image", [volume_record(p, volume_stem(p))]


# --------------------------------------------------------------------------- resolve_data
def canonical_task(task: str) -> str:
    """``"pretrain"``, ``"classify"`` or ``"segment"`` for a task name or alias (``"seg"``, ``"nodules"``, ...)."""
    t = str(task).strip().lower()
    t = record_kind(t) if t in TASKS else _TASK_ALIASES.get(t, t)
    if t not in RECORD_TASKS:
        raise SmartError(f"task={task!r}: must be one of {', '.join(RECORD_TASKS)}")
    return t


def resolve_data(spec: str | os.PathLike, task: str = "pretrain", classes: Sequence | None = None) -> list[dict]:
    """Records for ``--data spec``: a manifest ``.csv``, a MedMNIST ``.npz``, a Decathlon root
    (has ``dataset.json``), a folder of images (unlabeled) or a single volume.

    ``task`` is ``"pretrain"`` (images suffice: a manifest needs only an ``image`` column),
    ``"classify"`` (a ``label`` column, and every record needs an integer ``label``) or ``"segment"``
    (every record in a training split needs a ``mask``).
    """
    t = canonical_task(task)
    p = Path(spec)
    if not p.exists():
        raise SmartError(f"{p}: not found (expected a manifest .csv, a MedMNIST .npz, a Decathlon folder or an image folder)")
    kind, records = classify_path(p, classes, task=t)
    if kind == "image" and (not p.is_file() or volume_format(p) is None):
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
            allowed = allowed_labels(classes)
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
