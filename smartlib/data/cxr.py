"""Multi-label image sets as published: ChestX-ray14, CheXpert, and multi-label manifests (the built-in findings).

Every reader only reads: the files are never changed. Each returns :class:`MultiLabelRecords` — image paths,
an (N, K) label matrix (1, 0, or NaN = not used for that label), patients and splits — and refuses bad input
before any image is loaded, with one line naming the file and what is wrong:

* **ChestX-ray14** (Wang et al., CVPR 2017, arXiv 1705.02315; :func:`read_chestxray14`): ``Data_Entry_2017.csv``
  (``Image Index``, ``Finding Labels`` — pipe-separated names or ``No Finding`` — and ``Patient ID``), the
  official patient-wise ``train_val_list.txt`` / ``test_list.txt``, and the PNGs in ``images/`` (or the
  ``images_001/images`` … layout of the public download). A label outside the 14 names, an image named in a
  list but missing from the folders, an image in both lists or a patient in both splits is refused.
* **CheXpert** (Irvin et al., AAAI 2019, arXiv 1901.07031; :func:`read_chexpert`): ``train.csv`` / ``valid.csv``
  with ``Path`` and the 14 observation columns, each 1 (positive), 0 (negative), −1 (uncertain) or blank (not
  mentioned = 0). The uncertainty policy of the CheXpert paper decides −1: ``U-Ones`` (→ 1), ``U-Zeros`` (→ 0)
  or ``ignore`` (left out of the loss and of that label's AUROC). ``valid.csv`` (radiologist consensus) is the
  test split — the official test set is not public; a patient in both files is refused.
* **Multi-label manifest** (:func:`read_multilabel_manifest`): ``image`` (or, for the built-in set in 2D,
  ``drr``), ``patient_id``, optional ``split`` and masks (``findings_mask`` or ``mask``; ``drr_mask`` beside
  ``drr``) with the findings packed as bits (bit k = label k), and one column per label with values as CheXpert's.

Splits: the official test split stays the test split; the official training patients are divided into train /
validation by patient (``val_fraction``, seeded), so the validation split that chooses the epoch never holds a
test patient.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SmartError

__all__ = ["CXR14_LABELS", "CHEXPERT_LABELS", "CHEXPERT_COMPETITION", "POLICIES", "MultiLabelRecords", "parse_label_value",
           "read_chestxray14", "read_chexpert", "read_multilabel_manifest", "read_multilabel", "load_radiographs"]

#: the 14 labels of ChestX-ray14, in the order of its paper
CXR14_LABELS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                                 "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
                                 "Hernia")
#: the 14 observation columns of CheXpert's CSVs
CHEXPERT_LABELS: tuple[str, ...] = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                                    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                                    "Pleural Other", "Fracture", "Support Devices")
#: the five labels of the CheXpert competition (the default label set of :func:`read_chexpert`)
CHEXPERT_COMPETITION: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
#: what an uncertain (−1) label becomes: U-Ones → 1, U-Zeros → 0, ignore → not used
POLICIES: tuple[str, ...] = ("U-Ones", "U-Zeros", "ignore")


@dataclasses.dataclass
class MultiLabelRecords:
    """What a reader returns: ``images`` (N paths), ``labels`` (N, K) float 1 / 0 / NaN, ``label_names`` (K),
    ``patients`` (N), ``splits`` (N of train / val / test), ``masks`` (N paths of bit-packed masks, or None),
    ``source`` (for messages), ``dims`` (2 or 3) and ``policy`` (the uncertainty policy, or None)."""

    images: list[Path]
    labels: np.ndarray
    label_names: tuple[str, ...]
    patients: list[str]
    splits: list[str]
    masks: list[Path | None] | None
    source: str
    dims: int
    policy: str | None = None


def _check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise SmartError(f"uncertainty policy {policy!r}: expected one of {', '.join(POLICIES)}")
    return policy


def parse_label_value(raw: str, policy: str, where: str) -> float:
    """One label cell → 1.0 / 0.0 / NaN: ``1``, ``0``, ``-1`` (by ``policy``) or blank (not mentioned → 0)."""
    s = str(raw).strip()
    if s == "":
        return 0.0
    try:
        v = float(s)
    except ValueError:
        v = float("nan")
    if v == 1.0 or v == 0.0:
        return v
    if v == -1.0:
        return {"U-Ones": 1.0, "U-Zeros": 0.0, "ignore": float("nan")}[_check_policy(policy)]
    raise SmartError(f"{where}: label {s!r} is not one of 1, 0, -1 or blank")


def _read_table(path: Path, need: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise SmartError(f"{path}: not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h for h in (reader.fieldnames or [])]
        missing = [c for c in need if c not in header]
        if missing:
            raise SmartError(f"{path}: no column(s) {', '.join(repr(c) for c in missing)} (it has {', '.join(header[:20])})")
        return list(reader)


def _choose(labels: Sequence[str] | None, known: Sequence[str], default: Sequence[str], what: str) -> tuple[str, ...]:
    chosen = tuple(default if labels is None else labels)
    bad = [x for x in chosen if x not in known]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise SmartError(f"labels {list(chosen)}: {what} labels are {', '.join(known)}" + (f" ({bad[0]!r} is not one)" if bad else ""))
    return chosen


def _carve_val(splits: list[str], patients: list[str], val_fraction: float, seed: int) -> list[str]:
    """Move a ``val_fraction`` of the training patients (seeded) to ``val``."""
    from .tasks import assign_splits

    if not 0.0 <= float(val_fraction) < 1.0:
        raise SmartError(f"val_fraction={val_fraction!r}: must lie in [0, 1)")
    train_p = [p for p, s in zip(patients, splits) if s == "train"]
    of = assign_splits(train_p, [1.0 - val_fraction, val_fraction, 0.0], np.random.default_rng(seed)) if train_p else {}
    return [of.get(p, "train") if s == "train" else s for p, s in zip(patients, splits)]


def _check_patients(patients: Sequence[str], splits: Sequence[str], source: str) -> None:
    owner: dict[str, str] = {}
    for p, s in zip(patients, splits):
        if owner.setdefault(p, s) != s:
            raise SmartError(f"{source}: patient {p} is in both the {owner[p]} and the {s} split")


def _index_images(folders: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in folders:
        with os.scandir(f) as it:
            for e in it:
                if e.is_file():
                    out.setdefault(e.name, Path(e.path))
    return out


def _missing(names: Sequence[str], where: str, folder: str, have) -> None:
    lack = [n for n in names if n not in have]
    if lack:
        raise SmartError(f"{where}: {len(lack)} image(s) missing from {folder} (e.g. {lack[0]})")


def read_chestxray14(root: str | os.PathLike, labels: Sequence[str] | None = None, val_fraction: float = 0.1,
                     seed: int = 0) -> MultiLabelRecords:
    """ChestX-ray14 from its folder (``Data_Entry_2017.csv``, the two official lists, the PNG folders)."""
    root = Path(root)
    names = _choose(labels, CXR14_LABELS, CXR14_LABELS, "ChestX-ray14")
    entry = root / "Data_Entry_2017.csv"
    rows = _read_table(entry, ("Image Index", "Finding Labels", "Patient ID"))
    by_image: dict[str, dict[str, str]] = {}
    for i, r in enumerate(rows, start=2):
        found = [x.strip() for x in r["Finding Labels"].split("|") if x.strip()]
        bad = [x for x in found if x not in CXR14_LABELS and x != "No Finding"]
        if bad or not found:
            raise SmartError(f"{entry} line {i}: finding {bad[0] if bad else ''!r} is not a ChestX-ray14 label")
        by_image[r["Image Index"].strip()] = {"labels": found, "patient": r["Patient ID"].strip()}
    lists = {}
    for split, fname in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        p = root / fname
        if not p.is_file():
            raise SmartError(f"{p}: not found (the official split lists sit beside Data_Entry_2017.csv)")
        lists[split] = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        unknown = [n for n in lists[split] if n not in by_image]
        if unknown:
            raise SmartError(f"{p}: {len(unknown)} image(s) not in Data_Entry_2017.csv (e.g. {unknown[0]})")
    both = set(lists["train"]) & set(lists["test"])
    if both:
        raise SmartError(f"{root}: image {sorted(both)[0]} is in both train_val_list.txt and test_list.txt")
    folders = [root / "images"] if (root / "images").is_dir() else sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    if not folders:
        raise SmartError(f"{root}: no image folder (expected images/ or images_001/images, ...)")
    have = _index_images(folders)
    order = lists["train"] + lists["test"]
    for split in ("train", "test"):
        _missing(lists[split], str(root / ("train_val_list.txt" if split == "train" else "test_list.txt")),
                 ", ".join(str(f.relative_to(root)) for f in folders[:2]), have)
    y = np.array([[float(n in by_image[im]["labels"]) for n in names] for im in order]).reshape(len(order), len(names))
    patients = [by_image[im]["patient"] for im in order]
    splits = ["train"] * len(lists["train"]) + ["test"] * len(lists["test"])
    _check_patients(patients, splits, str(root))
    return MultiLabelRecords(images=[have[im] for im in order], labels=y, label_names=names, patients=patients,
                             splits=_carve_val(splits, patients, val_fraction, seed), masks=None, source=str(root), dims=2)


def _chexpert_path(root: Path, rel: str) -> Path:
    """CheXpert's paths start with the set's folder name (``CheXpert-v1.0-small/train/...``): that first part is
    replaced by ``root`` (whatever the folder is called here); other paths are relative to ``root``."""
    rel = rel.strip().replace("\\", "/")
    first, _, rest = rel.partition("/")
    if rest and (first == root.name or first.lower().startswith("chexpert")):
        return root / rest
    return root / rel


def read_chexpert(root: str | os.PathLike, labels: Sequence[str] | None = None, policy: str = "U-Ones",
                  val_fraction: float = 0.1, seed: int = 0, frontal_only: bool = True) -> MultiLabelRecords:
    """CheXpert from its folder (``train.csv``, ``valid.csv`` and the images they name); ``valid.csv`` is the test split."""
    root = Path(root)
    _check_policy(policy)
    names = _choose(labels, CHEXPERT_LABELS, CHEXPERT_COMPETITION, "CheXpert")
    images, ys, patients, splits = [], [], [], []
    for split, fname in (("train", "train.csv"), ("test", "valid.csv")):
        p = root / fname
        rows = _read_table(p, ("Path", *names))
        for i, r in enumerate(rows, start=2):
            if frontal_only and r.get("Frontal/Lateral", "Frontal").strip() not in ("Frontal", ""):
                continue
            m = re.search(r"(patient\d+)", r["Path"])
            if m is None:
                raise SmartError(f"{p} line {i}: path {r['Path']!r} names no patient (expected .../patientNNNNN/...)")
            images.append(_chexpert_path(root, r["Path"]))
            ys.append([parse_label_value(r[n], policy, f"{p} line {i}, column {n!r}") for n in names])
            patients.append(m.group(1))
            splits.append(split)
    if not images:
        raise SmartError(f"{root}: train.csv and valid.csv list no {'frontal ' if frontal_only else ''}images")
    lack = [im for im in images if not im.is_file()]
    if lack:
        raise SmartError(f"{root}: {len(lack)} image(s) named in train.csv / valid.csv are missing (e.g. {lack[0]})")
    _check_patients(patients, splits, str(root))
    return MultiLabelRecords(images=images, labels=np.array(ys, dtype=float), label_names=names, patients=patients,
                             splits=_carve_val(splits, patients, val_fraction, seed), masks=None, source=str(root), dims=2,
                             policy=policy)


def read_multilabel_manifest(path: str | os.PathLike, labels: Sequence[str], dims: int = 3, policy: str = "U-Ones",
                             fractions: Sequence[float] = (0.5, 0.15, 0.35), seed: int = 0) -> MultiLabelRecords:
    """A manifest CSV with an image column, ``patient_id``, one column per label and optional ``split`` / masks.

    ``dims`` 2 reads ``drr`` / ``drr_mask`` where the manifest has them (the built-in findings set), else
    ``image`` with ``findings_mask`` (or ``mask``). Paths are relative to the CSV's folder. Records without any ``split`` are split by
    patient with ``fractions``; a manifest that declares splits must declare one per record.
    """
    from ..downstream.data import split_indices

    path = Path(path)
    if dims not in (2, 3):
        raise SmartError(f"dims={dims!r}: expected 2 or 3")
    names = tuple(labels)
    rows = _read_table(path, ("patient_id", *names))
    if not rows:
        raise SmartError(f"{path}: no records")
    img_col, mask_col = ("drr", "drr_mask") if dims == 2 and "drr" in rows[0] else \
        ("image", "findings_mask" if "findings_mask" in rows[0] else "mask")
    if img_col not in rows[0]:
        raise SmartError(f"{path}: no column {img_col!r}")
    base = path.parent
    images = [base / r[img_col] for r in rows]
    lack = [im for im in images if not im.is_file()]
    if lack:
        raise SmartError(f"{path}: {len(lack)} image(s) named in column {img_col!r} are missing (e.g. {lack[0]})")
    masks = None
    if mask_col in rows[0] and all(r[mask_col].strip() for r in rows):
        masks = [base / r[mask_col] for r in rows]
        lack = [m for m in masks if not m.is_file()]
        if lack:
            raise SmartError(f"{path}: {len(lack)} mask(s) named in column {mask_col!r} are missing (e.g. {lack[0]})")
    y = np.array([[parse_label_value(r[n], policy, f"{path} line {i}, column {n!r}") for n in names]
                  for i, r in enumerate(rows, start=2)], dtype=float)
    recs = [{"patient_id": r["patient_id"], "split": r.get("split", "")} for r in rows]
    idx = split_indices(recs, str(path), fractions=fractions, seed=seed, required=("train", "test"))
    splits = [""] * len(rows)
    for s, ii in idx.items():
        for i in ii:
            splits[i] = s
    return MultiLabelRecords(images=images, labels=y, label_names=names, patients=[r["patient_id"] for r in rows],
                             splits=splits, masks=masks, source=str(path), dims=dims, policy=policy)


def read_multilabel(spec: str | os.PathLike, dims: int, labels: Sequence[str] | None, policy: str = "U-Ones",
                    fractions: Sequence[float] = (0.5, 0.15, 0.35), seed: int = 0) -> MultiLabelRecords:
    """Dispatch by layout: a folder with ``Data_Entry_2017.csv`` (ChestX-ray14), a folder with ``train.csv`` and
    ``valid.csv`` (CheXpert), or a manifest ``.csv`` (``labels`` required)."""
    p = Path(spec)
    if p.is_dir() and (p / "Data_Entry_2017.csv").is_file():
        recs = read_chestxray14(p, labels, val_fraction=fractions[1] / max(fractions[0] + fractions[1], 1e-9), seed=seed)
    elif p.is_dir() and (p / "train.csv").is_file() and (p / "valid.csv").is_file():
        recs = read_chexpert(p, labels, policy, val_fraction=fractions[1] / max(fractions[0] + fractions[1], 1e-9), seed=seed)
    elif p.is_file() and p.suffix.lower() == ".csv":
        if labels is None:
            raise SmartError(f"{p}: name the label columns to read (labels=...)")
        return read_multilabel_manifest(p, labels, dims, policy, fractions, seed)
    else:
        raise SmartError(f"{p}: not a ChestX-ray14 folder (Data_Entry_2017.csv), a CheXpert folder (train.csv + "
                         "valid.csv) or a manifest .csv")
    if dims != 2:
        raise SmartError(f"{p}: chest radiographs are 2-D; use dims=2")
    return recs


def load_radiographs(paths: Sequence[str | os.PathLike], size: int, packed: bool = False) -> "torch.Tensor":
    """Images (PNG / JPEG, any bit depth, grey or colour) → (N, 1, size, size) float32 in [0, 1].

    Colour images are averaged over RGB (alpha dropped); each image is resized to ``size``² (area averaging when
    shrinking, bilinear when enlarging; non-square radiographs are stretched, as the CheXpert baselines do).
    ``packed``: bit-packed masks, kept as integers and resized by nearest neighbour.
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                a = np.asarray(im)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
            raise SmartError(f"{p}: not a readable image ({type(exc).__name__})") from None
        scale = 255.0 if a.dtype == np.uint8 else 1.0 if a.dtype == bool or a.dtype.kind == "f" else 65535.0
        if a.ndim == 3:
            a = a[..., :3].mean(axis=-1) if not packed else a[..., 0]
        if a.ndim != 2:
            raise SmartError(f"{p}: image of shape {a.shape}, expected a 2-D radiograph")
        t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))[None, None]
        if packed:
            t = F.interpolate(t, size=(size, size), mode="nearest")
        else:
            mode = "area" if min(a.shape) >= size else "bilinear"
            t = F.interpolate(t / scale, size=(size, size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        out.append(t[0])
    return torch.stack(out) if out else torch.zeros(0, 1, size, size)
