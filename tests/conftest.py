"""Shared, generic test fixtures: small image files of every supported format, written into tmp_path."""
from __future__ import annotations

import csv
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*nvImageCodec.*")


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every file and folder under ``root`` with its size and mtime (to prove nothing was written)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


@pytest.fixture
def snapshot():
    """``snap = snapshot(folder)`` ... ``snap.assert_unchanged()``: no file created, removed or modified."""

    class _Snap:
        def __init__(self, root):
            self.root = Path(root)
            self.before = _tree(self.root)

        def assert_unchanged(self):
            after = _tree(self.root)
            assert after == self.before, f"files changed under {self.root}: {set(after) ^ set(self.before)}"

    return _Snap


@pytest.fixture
def write_nifti():
    """``write_nifti(path, array, spacing=(1,1,1), affine=None) -> Path`` (nibabel, float32 unless given)."""
    import nibabel as nib

    def _write(path, array, spacing=(1.0, 1.0, 1.0), affine=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = np.asarray(array)
        if affine is None:
            affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64)), str(path))
        return path

    return _write


@pytest.fixture
def write_nrrd():
    """``write_nrrd(path, array, spacing=(1,1,1), space=True) -> Path`` (pynrrd; skips if not installed)."""
    nrrd = pytest.importorskip("nrrd")

    def _write(path, array, spacing=(1.0, 1.0, 1.0), space=True):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {}
        if space:
            header = {"space": "left-posterior-superior", "space directions": np.diag(spacing).astype(float),
                      "space origin": np.zeros(3)}
        else:
            header = {"spacings": list(spacing)}
        nrrd.write(str(path), np.asarray(array), header)
        return path

    return _write


@pytest.fixture
def ct_volume():
    """A small synthetic CT in HU (24x20x16): air -1000 around a water body 0 with a dense sphere 400."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(np.arange(24), np.arange(20), np.arange(16), indexing="ij")
    vol = np.full((24, 20, 16), -1000.0, np.float32)
    body = ((x - 12) / 10.0) ** 2 + ((y - 10) / 8.0) ** 2 <= 1
    vol[body] = 0.0
    vol[(x - 14) ** 2 + (y - 9) ** 2 + (z - 8) ** 2 <= 9] = 400.0
    vol += rng.normal(0, 10, vol.shape).astype(np.float32)
    return vol


@pytest.fixture(scope="session")
def ct5n_dir() -> Path:
    """pydicom's bundled real 5-slice CT series (read-only; copy before modifying)."""
    import pydicom.data

    d = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
    if not d.is_dir():
        pytest.skip("pydicom test data dicomdirtests/98892001/CT5N not available")
    return d


@pytest.fixture
def ct5n_copy(tmp_path, ct5n_dir) -> Path:
    """A writable copy of the CT5N series in tmp_path/ct5n."""
    dst = tmp_path / "ct5n"
    shutil.copytree(ct5n_dir, dst)
    return dst


@pytest.fixture
def write_medmnist():
    """``write_medmnist(path, side=28, n=(4,2,3), n_classes=2, drop=(), **overrides) -> Path``.

    Writes the MedMNIST v2 keys (``{split}_images`` N×D×H×W uint8, ``{split}_labels`` N×1); ``drop`` removes
    keys and ``overrides`` replaces arrays (to build broken files).
    """

    def _write(path, side=28, n=(4, 2, 3), n_classes=2, drop=(), **overrides):
        rng = np.random.default_rng(1)
        arrays = {}
        for split, k in zip(("train", "val", "test"), n):
            arrays[f"{split}_images"] = rng.integers(0, 256, (k, side, side, side), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(k) % n_classes).reshape(k, 1).astype(np.uint8)
        for key in drop:
            arrays.pop(key)
        arrays.update(overrides)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path

    return _write


@pytest.fixture
def decathlon_root(tmp_path, write_nifti, ct_volume) -> Path:
    """A tiny Task06_Lung-style folder: imagesTr/, labelsTr/, imagesTs/, dataset.json (2 train, 1 test)."""
    root = tmp_path / "Task06_Lung"
    training = []
    for i in (1, 2):
        write_nifti(root / "imagesTr" / f"lung_{i:03d}.nii.gz", ct_volume)
        write_nifti(root / "labelsTr" / f"lung_{i:03d}.nii.gz", (ct_volume > 200).astype(np.uint8))
        training.append({"image": f"./imagesTr/lung_{i:03d}.nii.gz", "label": f"./labelsTr/lung_{i:03d}.nii.gz"})
    write_nifti(root / "imagesTs" / "lung_003.nii.gz", ct_volume)
    meta = {"name": "Lung", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "cancer"},
            "numTraining": 2, "numTest": 1, "training": training, "test": ["./imagesTs/lung_003.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def write_manifest():
    """``write_manifest(path, rows, fieldnames=None) -> Path``: a CSV manifest from a list of dicts."""

    def _write(path, rows, fieldnames=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fieldnames is None:
            fieldnames = []
            for r in rows:
                fieldnames += [k for k in r if k not in fieldnames]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fieldnames)
            w.writeheader()
            for r in rows:
                w.writerow(r)
        return path

    return _write


@pytest.fixture
def labelled_set(tmp_path, write_nifti, write_manifest, ct_volume) -> Path:
    """A phantom-like task set: images/, masks/ and manifest.csv (relative paths), 4 cases, 2 patients per split."""
    root = tmp_path / "set"
    rows = []
    for i in range(4):
        vol = ct_volume + 5 * i
        write_nifti(root / "images" / f"case{i}.nii.gz", vol)
        write_nifti(root / "masks" / f"case{i}.nii.gz", (vol > 200).astype(np.uint8))
        rows.append({"image": f"images/case{i}.nii.gz", "label": i % 2, "mask": f"masks/case{i}.nii.gz",
                     "patient_id": f"P{i}", "split": "train" if i < 2 else "test", "diameter_mm": 5 + i})
    write_manifest(root / "manifest.csv", rows)
    return root / "manifest.csv"
