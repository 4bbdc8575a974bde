"""Bad real data that used to pass silently: corrupt / missing / tilted DICOM slices, masks off their
image's grid, a Decathlon folder without dataset.json, pretraining manifests without labels, and the
cheap pretraining preflight. Each is checked at the library and, where a command reaches it, at the CLI
(exit code, the one line, nothing written)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from smartlib.cli import main
from smartlib.data import checks, readers
from smartlib.data.checks import WARNING_PREFIX, check_path, check_record, preflight
from smartlib.data.manifest import read_manifest
from smartlib.data.readers import VolumeWarning, dicom_series_issues, load_volume, probe_volume
from smartlib.data.sources import classify_path, folder_records, medmnist_records, resolve_data
from smartlib.data.transforms import eval_transforms

from helpers import raises_smart




def _cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, [ln for ln in out.out.splitlines() if ln.strip()], [ln for ln in out.err.splitlines() if ln.strip()]


def _slices(folder: Path) -> list[Path]:
    """CT5N's files in ascending slice position (the third is a middle slice)."""
    files = [f for f in folder.iterdir() if f.is_file()]
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def _no_volume_warning(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args)
    assert not [w for w in caught if issubclass(w.category, VolumeWarning)]
    return out


def _tilt(folder: Path, degrees: float = 15.0, tag: bool = True) -> Path:
    """Shift each slice along Y in proportion to its Z (a gantry-tilted stack); set GantryDetectorTilt."""
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + z * np.tan(np.radians(degrees)), z]
        if tag:
            ds.GantryDetectorTilt = degrees
        ds.save_as(f)
    return folder


# --------------------------------------------------------------------------- 1. DICOM series
def test_good_series_loads_without_warning(ct5n_dir):
    arr, spacing, _ = _no_volume_warning(load_volume, ct5n_dir)
    assert arr.shape == (16, 16, 5)
    np.testing.assert_allclose(spacing, (0.488281, 0.488281, 2.5), rtol=1e-5)
    assert dicom_series_issues(ct5n_dir) == ([], [])
    assert check_path(ct5n_dir)[1] == []


@pytest.mark.parametrize("cut", ["header", "pixels"])
def test_corrupt_slice_is_named_not_dropped(ct5n_copy, tmp_path, capsys, snapshot, cut):
    bad = _slices(ct5n_copy)[2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if cut == "header" else data[:-100])
    snap = snapshot(tmp_path)
    # used to load as 16x16x4 with a silent 3.33 mm slice spacing
    raises_smart(load_volume, ct5n_copy, words=(str(ct5n_copy), f"slice {bad.name}"))
    summary, problems = check_path(ct5n_copy)
    assert any(f"slice {bad.name}" in p for p in problems), problems
    assert any("uneven slice spacing" in p and "1.262 and 6.263" in p for p in problems), problems
    assert "0 loaded OK" in summary
    rc, out, err = _cli(capsys, "data", "check", str(ct5n_copy))
    assert rc == 1 and not err and "Traceback" not in " ".join(out)
    assert any(bad.name in ln for ln in out[:-1]) and out[-1].endswith(f"{len(problems)} problem(s)")
    snap.assert_unchanged()


def test_missing_slice_names_the_gap(ct5n_copy, tmp_path, capsys, snapshot):
    _slices(ct5n_copy)[2].unlink()
    snap = snapshot(tmp_path)
    msg = raises_smart(load_volume, ct5n_copy, words=("ct5n", "uneven slice spacing", "5 mm", "1.262 and 6.263", "2.5 mm"))
    assert "missing" in msg
    rc, out, _ = _cli(capsys, "data", "check", str(ct5n_copy))
    assert rc == 1 and len(out) == 2 and "uneven slice spacing" in out[0] and "1 problem(s)" in out[1]
    snap.assert_unchanged()


def test_slices_of_another_orientation_are_refused(ct5n_copy):
    f = _slices(ct5n_copy)[0]
    ds = pydicom.dcmread(f)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal localizer among axial slices
    ds.save_as(f)
    raises_smart(load_volume, ct5n_copy, words=("ct5n", "ImageOrientationPatient", f.name))


def test_gantry_tilt_warns_and_loads_but_check_lists_it(ct5n_copy, tmp_path, capsys, snapshot):
    _tilt(ct5n_copy, 15.0)
    snap = snapshot(tmp_path)
    with pytest.warns(VolumeWarning, match="gantry tilt") as rec:
        arr, _, meta = load_volume(ct5n_copy)
    assert len(rec) == 1 and "15.0 degrees" in str(rec[0].message) and "GantryDetectorTilt 15" in str(rec[0].message)
    assert arr.shape == (16, 16, 5)
    # the affine follows the real slice positions: sheared by tan(15 deg) per mm of z
    assert abs(meta["affine"][1, 2]) == pytest.approx(2.5 * np.tan(np.radians(15)), rel=1e-4)
    summary, problems = check_path(ct5n_copy)
    assert len(problems) == 1 and "gantry tilt" in problems[0] and "1 loaded OK" in summary
    rc, out, err = _cli(capsys, "data", "check", str(ct5n_copy))
    assert rc == 1 and len(out) == 2 and "gantry tilt" in out[0] and not err
    snap.assert_unchanged()


def test_gantry_detector_tilt_tag_alone_is_reported(ct5n_copy):
    for f in ct5n_copy.iterdir():
        ds = pydicom.dcmread(f)
        ds.GantryDetectorTilt = -7.5
        ds.save_as(f)
    problems, warns = dicom_series_issues(ct5n_copy)
    assert problems == [] and len(warns) == 1 and "GantryDetectorTilt -7.5" in warns[0]


# --------------------------------------------------------------------------- 2. image / mask geometry
def _mask_cases(tmp: Path, write_nifti, ct_volume):
    """(image, {name: (mask path, words of the message)}); the image has 1 x 1 x 2 mm voxels at the origin."""
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    img = write_nifti(tmp / "img.nii.gz", ct_volume, affine=aff)
    m = (ct_volume > 200).astype(np.uint8)
    flipped = aff.copy()
    flipped[0, 0], flipped[0, 3] = -1.0, 23.0  # same box, X axis reversed
    spaced = np.diag([1.0, 1.0, 2.5, 1.0])
    moved = aff.copy()
    moved[:3, 3] = (0.0, 0.0, 1.2)  # 0.6 voxels along z
    return img, {
        "flipped": (write_nifti(tmp / "flipped.nii.gz", m[::-1], affine=flipped), ["orientation RAS vs LAS"]),
        "spacing": (write_nifti(tmp / "spacing.nii.gz", m, affine=spaced), ["spacing 1x1x2 vs 1x1x2.5 mm"]),
        "origin": (write_nifti(tmp / "origin.nii.gz", m, affine=moved), ["origin", "0.6 voxels"]),
        "shape": (write_nifti(tmp / "shape.nii.gz", m[:, :, :-1], affine=aff), ["shape mismatch"]),
    }


def test_mask_geometry_mismatch_is_refused(tmp_path, write_nifti, ct_volume, snapshot):
    img, cases = _mask_cases(tmp_path, write_nifti, ct_volume)
    snap = snapshot(tmp_path)
    tf = eval_transforms(roi=None, spacing=None, keys=("image", "mask"))
    for name, (mask, words) in cases.items():
        rec = {"image": img, "mask": mask, "patient_id": name}
        raises_smart(check_record, rec, words=["img.nii.gz", mask.name, *words])
        raises_smart(tf, rec, words=["img.nii.gz", mask.name, *words])  # training / evaluation loading too
    snap.assert_unchanged()


def test_mask_geometry_within_tolerance_passes(tmp_path, write_nifti, ct_volume):
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    img = write_nifti(tmp_path / "img.nii.gz", ct_volume, affine=aff)
    near = aff.copy()
    near[:3, 3] = (0.3, -0.4, 0.9)  # under half a voxel on every axis
    near[2, 2] = 2.0 * (1 + 5e-4)  # spacing within 0.1 %
    mask = write_nifti(tmp_path / "mask.nii.gz", (ct_volume > 200).astype(np.uint8), affine=near)
    assert check_record({"image": img, "mask": mask, "patient_id": "p"})[0] == ct_volume.shape
    d = eval_transforms(roi=None, spacing=None, keys=("image", "mask"))({"image": img, "mask": mask})
    assert tuple(d["mask"].shape) == (1, *ct_volume.shape)


def _seg_manifest(tmp: Path, write_nifti, write_manifest, ct_volume, bad_mask_affine):
    rows = []
    for i in range(4):
        write_nifti(tmp / f"im{i}.nii.gz", ct_volume)
        aff = bad_mask_affine if i == 1 else None
        write_nifti(tmp / f"mk{i}.nii.gz", (ct_volume > 200).astype(np.uint8), affine=aff)
        rows.append({"image": f"im{i}.nii.gz", "mask": f"mk{i}.nii.gz", "patient_id": f"P{i}",
                     "split": "train" if i < 2 else "test"})
    return write_manifest(tmp / "seg.csv", rows)


def test_cli_mask_off_grid(tmp_path, capsys, write_nifti, write_manifest, ct_volume, snapshot):
    moved = np.eye(4)
    moved[:3, 3] = (5.0, 0.0, 0.0)
    m = _seg_manifest(tmp_path, write_nifti, write_manifest, ct_volume, moved)
    snap = snapshot(tmp_path)
    rc, out, err = _cli(capsys, "data", "check", str(m))
    assert rc == 1 and len(out) == 2 and "im1.nii.gz" in out[0] and "mk1.nii.gz" in out[0] and "origin" in out[0]
    snap.assert_unchanged()
    res = tmp_path / "res"
    rc, out, err = _cli(capsys, "finetune", "--task", "segmentation", "--init", "scratch", "--preset", "smoke",
                        "--out", str(res), "--data", str(m), "--steps", "1", "--n-boot", "20")
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:")
    assert "im1.nii.gz" in err[0] and "mk1.nii.gz" in err[0] and "geometry mismatch" in err[0]
    assert not res.exists()


# --------------------------------------------------------------------------- 3. Decathlon without dataset.json
def test_decathlon_folder_without_json_is_refused(decathlon_root, tmp_path, capsys, snapshot):
    (decathlon_root / "dataset.json").unlink()
    snap = snapshot(tmp_path)
    for fn in (classify_path, folder_records):
        raises_smart(fn, decathlon_root, words=("Task06_Lung", "no dataset.json", "labelsTr", "refusing"))
    raises_smart(resolve_data, decathlon_root, "pretrain", words=("Task06_Lung", "dataset.json"))
    summary, problems = check_path(decathlon_root)
    assert "not checked" in summary and len(problems) == 1 and "dataset.json" in problems[0]
    rc, out, err = _cli(capsys, "data", "check", str(decathlon_root))
    assert rc == 1 and len(out) == 2 and "dataset.json" in out[0]
    res = tmp_path / "res"
    rc, out, err = _cli(capsys, "finetune", "--task", "segmentation", "--init", "scratch", "--preset", "smoke",
                        "--out", str(res), "--data", str(decathlon_root))
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and "dataset.json" in err[0]
    assert not res.exists()
    snap.assert_unchanged()
    # its imagesTr/ alone is a plain image folder (unlabeled pretraining)
    assert len(resolve_data(decathlon_root / "imagesTr", "pretrain")) == 2


def test_folder_holding_a_decathlon_task_is_refused(decathlon_root):
    # the parent of Task06_Lung: read as an image folder, labelsTr/ would be counted as CTs
    raises_smart(resolve_data, decathlon_root.parent, "pretrain", words=("Task06_Lung", "Decathlon", "label maps"))


# --------------------------------------------------------------------------- 4. label / mask columns by task
def test_pretraining_manifest_needs_no_label_column(tmp_path, write_nifti, write_manifest, ct_volume, capsys):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    write_nifti(tmp_path / "b.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "pre.csv", [{"image": "a.nii.gz"}, {"image": "b.nii.gz", "patient_id": "B"}])
    recs = resolve_data(m, "pretrain")
    assert [r["label"] for r in recs] == [None, None] and [r["patient_id"] for r in recs] == ["a", "B"]
    assert [r["label"] for r in read_manifest(m, task="pretrain")] == [None, None]
    raises_smart(read_manifest, m, words=("pre.csv", "missing", "label"))  # the default stays classification
    raises_smart(resolve_data, m, "classify", words=("pre.csv", "missing", "label", "classification"))
    raises_smart(resolve_data, m, "segment", words=("pre.csv", "no mask"))
    rc, out, err = _cli(capsys, "data", "check", str(m))
    assert rc == 0 and len(out) == 1 and "2 loaded OK" in out[0] and "0 problem(s)" in out[0]


# --------------------------------------------------------------------------- 5. preflight
def test_preflight_excludes_a_truncated_file(tmp_path, write_nifti, ct_volume, snapshot, monkeypatch):
    a = write_nifti(tmp_path / "a.nii.gz", ct_volume)
    b = write_nifti(tmp_path / "b.nii", ct_volume)
    data = a.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    recs = [{"image": p, "label": None, "mask": None, "patient_id": p.name}
            for p in (a, tmp_path / "cut.nii.gz", b, tmp_path / "gone.nii.gz")]
    snap = snapshot(tmp_path)
    monkeypatch.setattr(readers, "load_volume", lambda *a, **k: pytest.fail("preflight decoded a NIfTI file"))
    usable, problems = preflight(recs, roi=16, spacing=1.0)
    assert usable == [recs[0], recs[2]] and usable[0] is recs[0]
    assert len(problems) == 2 and not any(p.startswith(WARNING_PREFIX) for p in problems)
    assert "cut.nii.gz" in problems[0] and "truncated" in problems[0]
    assert "gone.nii.gz" in problems[1] and "not found" in problems[1]
    snap.assert_unchanged()


def test_preflight_warns_about_a_small_series_and_keeps_it(ct5n_dir, ct5n_copy):
    rec = {"image": ct5n_dir, "patient_id": "ct5n"}
    usable, problems = preflight([rec], roi=64, spacing=2.0)  # 16x16x5 at 0.49x0.49x2.5 mm -> about 4x4x6 voxels
    assert usable == [rec] and len(problems) == 1
    assert problems[0].startswith(WARNING_PREFIX + str(ct5n_dir)) and "zero padding" in problems[0]
    assert "3.91x3.91x6.25" in problems[0]
    assert preflight([rec], roi=8, spacing=None) == ([rec], [])  # native grid: 16x16x5 >= 4 voxels
    # a corrupt series is excluded; a tilted one kept with a warning
    bad = _slices(ct5n_copy)[2]
    bad.write_bytes(bad.read_bytes()[:1000])
    assert preflight([{"image": ct5n_copy}], roi=8, spacing=None)[0] == []
    problems = preflight([{"image": ct5n_copy}], roi=8, spacing=None)[1]
    assert len(problems) == 1 and bad.name in problems[0] and not problems[0].startswith(WARNING_PREFIX)


def test_preflight_tilted_series_and_in_memory_images(ct5n_copy, tmp_path, write_medmnist):
    _tilt(ct5n_copy, 10.0)
    usable, problems = preflight([{"image": ct5n_copy}], roi=8, spacing=None)
    assert len(usable) == 1 and len(problems) == 1 and problems[0].startswith(WARNING_PREFIX) and "tilt" in problems[0]
    recs = medmnist_records(write_medmnist(tmp_path / "m.npz", side=28))
    usable, problems = preflight(recs, roi=64, spacing=2.0)  # MedMNIST is not resampled: 28 < 32
    assert usable == recs and len(problems) == 1 and f"{len(recs)} in-memory images" in problems[0]
    assert preflight(recs, roi=32, spacing=2.0) == (recs, [])
    flat = {"image": np.zeros((8, 8), np.float32), "patient_id": "flat"}
    assert preflight([flat], roi=8, spacing=None) == ([], ["record 'flat' image: array has shape (8, 8), expected a 3-D (X, Y, Z) volume"])
    raises_smart(preflight, recs, 0, 2.0, words=("roi",))
    raises_smart(preflight, recs, 64, -1.0, words=("spacing",))


def test_preflight_agrees_with_load_volume_on_shape_and_spacing(tmp_path, write_nifti, write_nrrd, ct_volume, ct5n_dir):
    for p in (write_nifti(tmp_path / "a.nii.gz", ct_volume, spacing=(0.7, 0.8, 2.5)),
              write_nrrd(tmp_path / "b.nrrd", ct_volume, spacing=(0.5, 0.6, 2.0)), ct5n_dir):
        shape, spacing, warns = probe_volume(p)
        arr, sp, _ = load_volume(p)
        assert shape == arr.shape and warns == []
        np.testing.assert_allclose(spacing, sp, rtol=1e-5)
    assert checks.preflight is preflight
