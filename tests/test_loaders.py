"""Real-format loading (readers, manifest, sources, checks): NIfTI, NRRD, DICOM series, manifests,
MedMNIST, Decathlon — and every bad input."""
from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from smartlib.data import checks, sources
from smartlib.data.checks import check_path, check_record
from smartlib.data.manifest import read_manifest, read_manifest_rows
from smartlib.data.readers import find_volumes, load_volume
from smartlib.data.sources import classify_path, decathlon_records, load_medmnist, medmnist_records, resolve_data

from helpers import raises_smart




# --------------------------------------------------------------------------- good inputs
def test_nifti_roundtrip(tmp_path, write_nifti, ct_volume):
    p = write_nifti(tmp_path / "ct.nii.gz", ct_volume, spacing=(0.7, 0.8, 2.5))
    arr, spacing, meta = load_volume(p)
    assert arr.dtype == np.float32 and arr.shape == ct_volume.shape
    np.testing.assert_allclose(arr, ct_volume)
    np.testing.assert_allclose(spacing, (0.7, 0.8, 2.5), rtol=1e-6)
    assert meta["affine"].shape == (4, 4) and meta["format"] == "NIfTI"


def test_nifti_scaled_int16_gives_hu(tmp_path):
    import nibabel as nib

    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "s.nii"))
    arr, _, _ = load_volume(tmp_path / "s.nii")
    np.testing.assert_allclose(arr, raw * 2.0 - 1024.0)


def test_4d_single_channel_is_squeezed(tmp_path, write_nifti, ct_volume):
    arr, _, _ = load_volume(write_nifti(tmp_path / "c1.nii.gz", ct_volume[..., None]))
    assert arr.shape == ct_volume.shape


def test_nrrd_roundtrip(tmp_path, write_nrrd, ct_volume):
    p = write_nrrd(tmp_path / "ct.nrrd", ct_volume, spacing=(0.5, 0.6, 2.0))
    arr, spacing, meta = load_volume(p)
    np.testing.assert_allclose(arr, ct_volume)
    np.testing.assert_allclose(spacing, (0.5, 0.6, 2.0))
    assert meta["format"] == "NRRD"


def test_nrrd_without_space_fields(tmp_path, write_nrrd, ct_volume):
    arr, spacing, _ = load_volume(write_nrrd(tmp_path / "plain.nrrd", ct_volume, spacing=(1.5, 1.5, 3.0), space=False))
    np.testing.assert_allclose(arr, ct_volume)
    np.testing.assert_allclose(spacing, (1.5, 1.5, 3.0))


def _expected_ct5n(folder):
    """Slices as pydicom sees them, in ascending ImagePositionPatient z, converted to HU."""
    dss = [pydicom.dcmread(f) for f in sorted(Path(folder).iterdir()) if pydicom.misc.is_dicom(f)]
    dss.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = [ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in dss]
    return dss, hu


def test_dicom_series_hu_and_slice_order(ct5n_dir):
    arr, spacing, meta = load_volume(ct5n_dir)
    dss, hu = _expected_ct5n(ct5n_dir)
    assert arr.shape == (16, 16, 5) and arr.dtype == np.float32
    for k, slice_hu in enumerate(hu):
        # MONAI's (X, Y) is pydicom's (column, row): the transpose of pixel_array
        np.testing.assert_array_equal(arr[:, :, k], slice_hu.T.astype(np.float32))
    assert arr.min() < -800  # rescale intercept -1024 applied
    np.testing.assert_allclose(spacing, (0.488281, 0.488281, 2.5), rtol=1e-5)
    z = [float(ds.ImagePositionPatient[2]) for ds in dss]
    assert z == sorted(z)
    # the affine walks up the slice stack in z (RAS keeps z)
    assert meta["affine"][2, 2] == pytest.approx(2.5) and meta["affine"][2, 3] == pytest.approx(min(z))


def test_dicom_sorted_by_position_not_instance_number(ct5n_copy, tmp_path):
    # shuffle the InstanceNumbers so they disagree with the positions; add junk beside the slices
    files = sorted(ct5n_copy.iterdir())
    for f, num in zip(files, [3, 1, 5, 2, 4]):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = num
        ds.save_as(f)
    (ct5n_copy / "README.txt").write_text("not dicom")
    arr, _, _ = load_volume(ct5n_copy)
    _, hu = _expected_ct5n(ct5n_copy)
    for k, slice_hu in enumerate(hu):
        np.testing.assert_array_equal(arr[:, :, k], slice_hu.T.astype(np.float32))


def test_find_volumes_recursive(tmp_path, write_nifti, write_nrrd, ct_volume, ct5n_dir):
    write_nifti(tmp_path / "a" / "x.nii.gz", ct_volume)
    write_nifti(tmp_path / "b" / "c" / "y.nii", ct_volume)
    write_nrrd(tmp_path / "z.nrrd", ct_volume)
    shutil.copytree(ct5n_dir, tmp_path / "dcm" / "series1")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._x.nii.gz").write_text("macOS junk")
    found = find_volumes(tmp_path)
    rel = sorted(str(p.relative_to(tmp_path)) for p in found)
    assert rel == ["a/x.nii.gz", "b/c/y.nii", "dcm/series1", "z.nrrd"]


# --------------------------------------------------------------------------- bad volumes
def test_missing_path(tmp_path, snapshot):
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "nope.nii.gz", words=("nope.nii.gz", "not found"))
    raises_smart(find_volumes, tmp_path / "nowhere", words=("nowhere", "not found"))
    snap.assert_unchanged()


def test_empty_folder(tmp_path, snapshot):
    (tmp_path / "empty").mkdir()
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "empty", words=("empty", "empty folder"))
    raises_smart(find_volumes, tmp_path / "empty", words=("empty", "no images"))
    snap.assert_unchanged()


def test_folder_without_dicom(tmp_path, snapshot):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "docs", words=("docs", "no DICOM"))
    snap.assert_unchanged()


def test_text_file_named_nifti(tmp_path, snapshot):
    (tmp_path / "fake.nii.gz").write_text("this is not an image\n")
    (tmp_path / "fake.nii").write_text("this is not an image either\n")
    (tmp_path / "fake.nrrd").write_text("not nrrd\n")
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "fake.nii.gz", words=("fake.nii.gz", "not a readable"))
    raises_smart(load_volume, tmp_path / "fake.nii", words=("fake.nii", "not a readable"))
    raises_smart(load_volume, tmp_path / "fake.nrrd", words=("fake.nrrd", "not a readable"))
    snap.assert_unchanged()


def test_truncated_nifti(tmp_path, write_nifti, ct_volume, snapshot):
    good = write_nifti(tmp_path / "good.nii.gz", ct_volume)
    data = good.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    raw = gzip.decompress(data)
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) // 2])
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "cut.nii.gz", words=("cut.nii.gz", "truncated"))
    raises_smart(load_volume, tmp_path / "cut.nii", words=("cut.nii", "truncated"))
    snap.assert_unchanged()


def test_empty_and_unsupported_files(tmp_path, snapshot):
    (tmp_path / "zero.nii.gz").write_bytes(b"")
    (tmp_path / "scan.png").write_bytes(b"\x89PNG....")
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "zero.nii.gz", words=("zero.nii.gz", "empty file"))
    raises_smart(load_volume, tmp_path / "scan.png", words=("scan.png", "unsupported"))
    snap.assert_unchanged()


def test_non_3d_images(tmp_path, write_nifti, ct_volume, snapshot):
    write_nifti(tmp_path / "flat.nii.gz", ct_volume[:, :, 0])
    write_nifti(tmp_path / "multi.nii.gz", np.stack([ct_volume] * 3, axis=-1))
    write_nifti(tmp_path / "slice.nii.gz", ct_volume[:, :, :1])
    snap = snapshot(tmp_path)
    raises_smart(load_volume, tmp_path / "flat.nii.gz", words=("flat.nii.gz", "2-D", "3-D"))
    raises_smart(load_volume, tmp_path / "multi.nii.gz", words=("multi.nii.gz", "4-D", "3-D"))
    raises_smart(load_volume, tmp_path / "slice.nii.gz", words=("slice.nii.gz", "single slice"))
    snap.assert_unchanged()


def test_single_dicom_slice_is_not_3d(tmp_path, ct5n_dir, snapshot):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(ct5n_dir.iterdir())[0], one / "slice.dcm")
    snap = snapshot(tmp_path)
    raises_smart(load_volume, one, words=("one", "3-D"))
    snap.assert_unchanged()


def test_dicom_mixed_series(ct5n_copy, tmp_path, snapshot):
    f = sorted(ct5n_copy.iterdir())[0]
    ds = pydicom.dcmread(f)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(f)
    snap = snapshot(tmp_path)
    raises_smart(load_volume, ct5n_copy, words=("ct5n", "series"))
    snap.assert_unchanged()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(tmp_path, write_nifti, ct_volume, snapshot, bad):
    v = ct_volume.copy()
    v[3, 4, 5] = bad
    write_nifti(tmp_path / "bad.nii.gz", v)
    snap = snapshot(tmp_path)
    msg = raises_smart(load_volume, tmp_path / "bad.nii.gz", words=("bad.nii.gz", "finite"))
    assert ("NaN" in msg) if np.isnan(bad) else ("1 infinite" in msg)
    snap.assert_unchanged()


def test_image_mask_shape_mismatch(tmp_path, write_nifti, ct_volume, snapshot):
    img = write_nifti(tmp_path / "img.nii.gz", ct_volume)
    msk = write_nifti(tmp_path / "msk.nii.gz", np.zeros((10, 10, 10), np.uint8))
    snap = snapshot(tmp_path)
    raises_smart(check_record, {"image": img, "mask": msk, "patient_id": "p"}, words=("img.nii.gz", "msk.nii.gz", "mismatch"))
    snap.assert_unchanged()


# --------------------------------------------------------------------------- manifests
def test_read_manifest(labelled_set):
    recs = read_manifest(labelled_set, classes=[0, 1])
    assert len(recs) == 4
    r = recs[1]
    assert r["image"] == labelled_set.parent / "images" / "case1.nii.gz" and r["image"].exists()
    assert r["mask"] == labelled_set.parent / "masks" / "case1.nii.gz"
    assert r["label"] == 1 and r["patient_id"] == "P1" and r["split"] == "train"
    assert r["diameter_mm"] == "6"  # extras kept
    arr, _, _ = load_volume(r["image"])
    assert arr.ndim == 3


def test_manifest_minimal_columns_and_class_names(tmp_path, write_nifti, write_manifest, ct_volume):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    write_nifti(tmp_path / "b.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "m.csv", [{"image": "a.nii.gz", "label": "benign"},
                                            {"image": str(tmp_path / "b.nii.gz"), "label": ""}])
    recs = read_manifest(m, classes=["benign", "malignant"])
    assert [r["label"] for r in recs] == [0, None]
    assert recs[0]["patient_id"] == "a" and recs[0]["mask"] is None and recs[0]["split"] is None


def test_manifest_row_pointing_nowhere(tmp_path, write_nifti, write_manifest, ct_volume, snapshot):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "bad.csv", [{"image": "a.nii.gz", "label": 0}, {"image": "ghost.nii.gz", "label": 1}])
    snap = snapshot(tmp_path)
    raises_smart(read_manifest, m, words=("bad.csv", "row 2", "ghost.nii.gz", "not found"))
    snap.assert_unchanged()


def test_manifest_mask_pointing_nowhere(tmp_path, write_nifti, write_manifest, ct_volume):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "m.csv", [{"image": "a.nii.gz", "label": 0, "mask": "nomask.nii.gz"}])
    raises_smart(read_manifest, m, words=("m.csv", "row 1", "nomask.nii.gz", "not found"))


def test_manifest_label_outside_classes(tmp_path, write_nifti, write_manifest, ct_volume, snapshot):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "lab.csv", [{"image": "a.nii.gz", "label": 0}, {"image": "a.nii.gz", "label": 7}])
    m2 = write_manifest(tmp_path / "lab2.csv", [{"image": "a.nii.gz", "label": "cancer"}])
    snap = snapshot(tmp_path)
    raises_smart(read_manifest, m, classes=[0, 1], words=("lab.csv", "row 2", "7", "outside"))
    raises_smart(read_manifest, m, classes=["benign", "malignant"], words=("lab.csv", "outside"))
    raises_smart(read_manifest, m2, classes=["benign", "malignant"], words=("lab2.csv", "cancer", "outside"))
    raises_smart(read_manifest, m2, words=("lab2.csv", "not an integer"))
    snap.assert_unchanged()


def test_manifest_missing_column_and_empty(tmp_path, snapshot):
    (tmp_path / "nolabel.csv").write_text("image,mask\na.nii.gz,\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("image,label\n")
    snap = snapshot(tmp_path)
    raises_smart(read_manifest, tmp_path / "nolabel.csv", words=("nolabel.csv", "missing", "label"))
    raises_smart(read_manifest, tmp_path / "empty.csv", words=("empty.csv", "empty"))
    raises_smart(read_manifest, tmp_path / "header.csv", words=("header.csv", "no rows"))
    raises_smart(read_manifest, tmp_path / "absent.csv", words=("absent.csv", "not found"))
    snap.assert_unchanged()


def test_manifest_rows_as_dictreader_gives_them(tmp_path):
    text = ("image,label,mask,label\n\na.nii.gz,1,m.nii.gz,2\nb.nii.gz\n"
            "c.nii.gz,0,,,extra1,extra2\n , ,\n\"q,uoted\",\"x\"\"y\",\n")
    (tmp_path / "m.csv").write_text(text)
    (tmp_path / "blankfirst.csv").write_text("\nimage,label\na,1\n")
    (tmp_path / "header.csv").write_text("image,label\n")
    (tmp_path / "empty.csv").write_text("")
    for name in ("m.csv", "blankfirst.csv", "header.csv", "empty.csv"):
        with open(tmp_path / name, newline="") as fh:
            expected = list(csv.DictReader(fh))
        assert read_manifest_rows(tmp_path / name) == expected, name
    raises_smart(read_manifest_rows, tmp_path / "absent.csv", words=("absent.csv", "manifest not found"))


def test_task_sets_and_tables_read_rows_with_the_one_reader(labelled_set, tmp_path):
    from smartlib import tables
    from smartlib.data import tasks

    assert tasks.read_manifest is read_manifest_rows
    acq = tables.acquisition_summary(labelled_set, ("split",))
    assert acq.to_dict("records") == [{"setting": "split", "value": "test", "cases": 2},
                                      {"setting": "split", "value": "train", "cases": 2}]
    raises_smart(tables.acquisition_summary, tmp_path / "absent.csv", words=("absent.csv", "manifest not found"))


# --------------------------------------------------------------------------- MedMNIST
@pytest.mark.parametrize("side", [28, 64])
def test_medmnist(tmp_path, write_medmnist, side):
    p = write_medmnist(tmp_path / f"nodulemnist3d_{side}.npz", side=side, n=(3, 1, 2))
    images, labels = load_medmnist(p, "train")
    assert images.shape == (3, side, side, side) and images.dtype == np.uint8
    assert labels.shape == (3,) and labels.tolist() == [0, 1, 0]
    recs = medmnist_records(p)
    assert [r["split"] for r in recs] == ["train"] * 3 + ["val"] + ["test"] * 2
    r = recs[1]
    assert r["image"].dtype == np.float32 and r["image"].shape == (side,) * 3
    assert 0.0 <= r["image"].min() and r["image"].max() <= 1.0
    assert r["intensity"] == "unit" and r["label"] == 1 and r["mask"] is None
    # (X, Y, Z) = (W, H, D): voxel [d, h, w] of the npz is image[w, h, d]
    np.testing.assert_allclose(r["image"][5, 3, 1], images[1, 1, 3, 5] / 255.0, rtol=1e-6)


def test_medmnist_missing_keys(tmp_path, write_medmnist, snapshot):
    p = write_medmnist(tmp_path / "organ.npz", drop=("val_labels",))
    snap = snapshot(tmp_path)
    raises_smart(load_medmnist, p, "val", words=("organ.npz", "val_labels", "missing"))
    raises_smart(medmnist_records, p, words=("organ.npz", "val_labels", "missing"))
    raises_smart(resolve_data, p, "classify", words=("organ.npz", "val_labels"))
    snap.assert_unchanged()


def test_medmnist_wrong_dims_and_counts(tmp_path, write_medmnist, snapshot):
    p2d = write_medmnist(tmp_path / "flat.npz", train_images=np.zeros((4, 28, 28), np.uint8))
    pn = write_medmnist(tmp_path / "count.npz", train_labels=np.zeros((3, 1), np.uint8))
    (tmp_path / "junk.npz").write_text("not a zip")
    snap = snapshot(tmp_path)
    raises_smart(load_medmnist, p2d, "train", words=("flat.npz", "train_images", "N×D×H×W"))
    raises_smart(load_medmnist, pn, "train", words=("count.npz", "train_labels", "3"))
    raises_smart(load_medmnist, tmp_path / "junk.npz", "train", words=("junk.npz", "not a readable"))
    raises_smart(load_medmnist, p2d, "dev", words=("dev", "train"))
    snap.assert_unchanged()


# --------------------------------------------------------------------------- Decathlon
def test_decathlon(decathlon_root):
    recs = decathlon_records(decathlon_root)
    assert [r["split"] for r in recs] == ["train", "train", "test"]
    assert recs[0]["patient_id"] == "lung_001" and recs[0]["mask"].name == "lung_001.nii.gz"
    assert recs[0]["mask"].parent.name == "labelsTr" and recs[2]["mask"] is None
    assert check_record(recs[0])[0] == (24, 20, 16)


def test_decathlon_bad_json(decathlon_root):
    js = decathlon_root / "dataset.json"
    js.write_text("{not json")
    raises_smart(decathlon_records, decathlon_root, words=("dataset.json", "JSON"))
    js.write_text(json.dumps({"name": "x"}))
    raises_smart(decathlon_records, decathlon_root, words=("dataset.json", "training"))
    js.write_text(json.dumps({"training": [{"image": "./imagesTr/lung_009.nii.gz", "label": "./labelsTr/lung_009.nii.gz"}]}))
    raises_smart(decathlon_records, decathlon_root, words=("dataset.json", "lung_009", "not found"))
    js.unlink()
    raises_smart(decathlon_records, decathlon_root, words=("Task06_Lung", "dataset.json"))
    assert sorted(p.name for p in decathlon_root.iterdir()) == ["imagesTr", "imagesTs", "labelsTr"]


# --------------------------------------------------------------------------- resolve_data / check_path
def test_resolve_data_every_kind(tmp_path, labelled_set, decathlon_root, write_medmnist, write_nifti, ct_volume, ct5n_dir):
    assert len(resolve_data(str(labelled_set), "classify")) == 4
    assert len(resolve_data(labelled_set, "segment")) == 4
    assert len(resolve_data(decathlon_root, "segment")) == 3
    assert len(resolve_data(write_medmnist(tmp_path / "m.npz"), "classify")) == 9
    folder = tmp_path / "unlabeled"
    write_nifti(folder / "a.nii.gz", ct_volume)
    write_nifti(folder / "sub" / "b.nii", ct_volume)
    recs = resolve_data(folder, "pretrain")
    assert [r["patient_id"] for r in recs] == ["a", "b"] and all(r["label"] is None for r in recs)
    assert len(resolve_data(ct5n_dir, "pretrain")) == 1
    assert len(resolve_data(folder / "a.nii.gz", "pretrain")) == 1


def test_resolve_data_task_needs(tmp_path, write_nifti, write_manifest, ct_volume, decathlon_root, snapshot):
    folder = tmp_path / "unlabeled"
    write_nifti(folder / "a.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "nomask.csv", [{"image": "unlabeled/a.nii.gz", "label": 1}])
    snap = snapshot(tmp_path)
    raises_smart(resolve_data, folder, "classify", words=("unlabeled", "no label"))
    raises_smart(resolve_data, m, "segment", words=("nomask.csv", "no mask"))
    raises_smart(resolve_data, decathlon_root, "classify", words=("Task06_Lung", "no label"))
    raises_smart(resolve_data, folder, "dance", words=("dance", "pretrain"))
    raises_smart(resolve_data, tmp_path / "ghost", "pretrain", words=("ghost", "not found"))
    snap.assert_unchanged()


def test_resolve_data_and_check_path_share_one_classification(
        tmp_path, labelled_set, decathlon_root, write_medmnist, write_nifti, ct_volume, ct5n_dir, monkeypatch):
    folder = tmp_path / "unlabeled"
    write_nifti(folder / "a.nii.gz", ct_volume)
    write_nifti(folder / "sub" / "b.nii", ct_volume)
    cases = {
        labelled_set: ("manifest", 4),
        write_medmnist(tmp_path / "m.npz"): ("MedMNIST file", 9),
        decathlon_root: ("Decathlon folder", 3),
        ct5n_dir: ("DICOM series", 1),
        folder: ("image folder", 2),
        folder / "a.nii.gz": ("image", 1),
    }
    calls: list[tuple[str, str]] = []
    real = sources.classify_path

    def spy(path, *args, **kwargs):
        kind, records = real(path, *args, **kwargs)
        calls.append((str(path), kind))
        return kind, records

    monkeypatch.setattr(sources, "classify_path", spy)
    monkeypatch.setattr(checks, "classify_path", spy)
    for path, (kind, n) in cases.items():
        assert classify_path(path)[0] == kind
        calls.clear()
        recs = resolve_data(path, "pretrain")
        assert calls == [(str(path), kind)] and len(recs) == n
        calls.clear()
        summary, problems = check_path(path)
        assert calls == [(str(path), kind)], calls
        assert summary.startswith(f"{path}: {kind}, {n} record(s), {n} loaded OK") and problems == []
        # the same records either way (check_path keeps MedMNIST bytes as uint8)
        assert [r["patient_id"] for r in recs] == [r["patient_id"] for r in real(path, npz_dtype=np.uint8)[1]]


def test_unsupported_file_is_refused_by_resolve_and_reported_by_check(tmp_path, snapshot):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG....")
    snap = snapshot(tmp_path)
    assert classify_path(tmp_path / "scan.png")[0] == "image"
    raises_smart(resolve_data, tmp_path / "scan.png", words=("scan.png", "unsupported data"))
    summary, problems = check_path(tmp_path / "scan.png")
    assert "image, 1 record(s), 0 loaded OK" in summary and len(problems) == 1 and "unsupported" in problems[0]
    snap.assert_unchanged()


def test_check_path_good(labelled_set, decathlon_root, ct5n_dir):
    summary, problems = check_path(labelled_set, classes=[0, 1])
    assert problems == []
    assert "4 record(s)" in summary and "4 loaded OK" in summary and "\n" not in summary
    assert check_path(decathlon_root)[1] == []
    assert check_path(ct5n_dir)[1] == []


def test_check_path_reports_every_problem(tmp_path, write_nifti, write_manifest, ct_volume, snapshot):
    write_nifti(tmp_path / "ok.nii.gz", ct_volume)
    v = ct_volume.copy()
    v[0, 0, 0] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", v)
    write_nifti(tmp_path / "small_mask.nii.gz", np.zeros((5, 5, 5), np.uint8))
    m = write_manifest(tmp_path / "m.csv", [
        {"image": "ok.nii.gz", "label": 0, "mask": "", "patient_id": "A", "split": "train"},
        {"image": "nan.nii.gz", "label": 1, "mask": "", "patient_id": "B", "split": "train"},
        {"image": "ok.nii.gz", "label": 1, "mask": "small_mask.nii.gz", "patient_id": "C", "split": "train"},
        {"image": "missing.nii.gz", "label": 0, "mask": "", "patient_id": "D", "split": "train"},
        {"image": "ok.nii.gz", "label": 5, "mask": "", "patient_id": "E", "split": "train"},
        {"image": "ok.nii.gz", "label": 0, "mask": "", "patient_id": "A", "split": "test"},
    ])
    snap = snapshot(tmp_path)
    summary, problems = check_path(m, classes=[0, 1])
    snap.assert_unchanged()
    text = " | ".join(problems)
    assert len(problems) == 5, text
    assert any("nan.nii.gz" in p and "NaN" in p for p in problems)
    assert any("ok.nii.gz" in p and "small_mask.nii.gz" in p and "mismatch" in p for p in problems)
    assert any("row 4" in p and "missing.nii.gz" in p for p in problems)
    assert any("row 5" in p and "outside" in p for p in problems)
    assert any("A" in p and "more than one split" in p for p in problems)
    assert "5 problem(s)" in summary and all("\n" not in p for p in problems)


def test_check_record_compares_mask_geometry_not_only_shape(tmp_path, write_nifti, ct_volume, snapshot):
    img = write_nifti(tmp_path / "img.nii.gz", ct_volume, spacing=(0.7, 0.7, 2.0))
    same = write_nifti(tmp_path / "same.nii.gz", (ct_volume > 200).astype(np.uint8), spacing=(0.7, 0.7, 2.0))
    other = write_nifti(tmp_path / "other.nii.gz", (ct_volume > 200).astype(np.uint8), spacing=(0.7, 0.7, 3.0))
    snap = snapshot(tmp_path)
    shape, spacing = check_record({"image": img, "mask": same, "patient_id": "p"})
    assert shape == (24, 20, 16) and spacing == pytest.approx((0.7, 0.7, 2.0))
    raises_smart(check_record, {"image": img, "mask": other, "patient_id": "p"},
                 words=("img.nii.gz", "other.nii.gz", "geometry mismatch", "spacing 0.7x0.7x2 vs 0.7x0.7x3 mm"))
    snap.assert_unchanged()


def test_manifest_columns_by_task(tmp_path, write_nifti, write_manifest, ct_volume):
    write_nifti(tmp_path / "a.nii.gz", ct_volume)
    m = write_manifest(tmp_path / "img_only.csv", [{"image": "a.nii.gz"}])
    assert read_manifest(m, task=None)[0]["label"] is None
    assert classify_path(m)[0] == "manifest" and check_path(m)[1] == []
    raises_smart(read_manifest, m, task="dance", words=("task", "dance"))


def test_check_path_missing(tmp_path):
    summary, problems = check_path(tmp_path / "ghost")
    assert "not checked" in summary and len(problems) == 1 and "ghost" in problems[0] and "not found" in problems[0]
