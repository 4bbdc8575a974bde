"""`smart data make` and `smart data check` at the command line: one line per problem, non-zero exit,
no traceback, nothing half-written."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np

from smartlib.cli import main


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_make_writes_a_manifest(tmp_path, capsys):
    rc, out, err = _run(capsys, "data", "make", "--task", "organs", "--n", "11", "--seed", "1", "--out", str(tmp_path / "organs"))
    assert rc == 0, err
    manifest = tmp_path / "organs" / "manifest.csv"
    assert manifest.is_file() and str(manifest) in out
    rc, out, err = _run(capsys, "data", "check", str(manifest), "--classes", ",".join(str(i) for i in range(11)))
    assert rc == 0 and "11 record(s)" in out and "0 problem(s)" in out and len(out.strip().splitlines()) == 1


def test_make_bad_n_is_one_line_and_writes_nothing(tmp_path, capsys):
    rc, out, err = _run(capsys, "data", "make", "--task", "pretrain", "--n", "0", "--out", str(tmp_path / "p"))
    assert rc == 2
    assert err.startswith("error:") and err.count("\n") == 1 and "n=0" in err.replace(" ", "")
    assert not (tmp_path / "p").exists()


def _bad_inputs(tmp, write_nifti, write_manifest, write_medmnist, ct_volume, ct5n_dir):
    """Every bad input the foundation issue names → (path to check, words the problem line must contain)."""
    cases = {}
    cases["missing path"] = (tmp / "nowhere.nii.gz", ["nowhere.nii.gz", "not found"])
    (tmp / "empty").mkdir()
    cases["empty folder"] = (tmp / "empty", ["empty"])
    (tmp / "notes.nii.gz").write_text("this is not an image")
    cases["non-image file"] = (tmp / "notes.nii.gz", ["notes.nii.gz"])
    good = write_nifti(tmp / "good.nii.gz", ct_volume)
    data = good.read_bytes()
    (tmp / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    cases["truncated file"] = (tmp / "cut.nii.gz", ["cut.nii.gz"])
    cases["non-3D image"] = (write_nifti(tmp / "flat.nii.gz", np.zeros((8, 8), np.float32)), ["flat.nii.gz", "3"])
    v = ct_volume.astype(np.float32).copy()
    v[1, 2, 3] = np.inf
    cases["infinite voxels"] = (write_nifti(tmp / "inf.nii.gz", v), ["inf.nii.gz", "inf"])
    v = ct_volume.astype(np.float32).copy()
    v[0, 0, 0] = np.nan
    cases["NaN voxels"] = (write_nifti(tmp / "nan.nii.gz", v), ["nan.nii.gz", "NaN"])
    write_nifti(tmp / "tiny_mask.nii.gz", np.zeros((3, 3, 3), np.uint8))
    cases["image/mask mismatch"] = (write_manifest(tmp / "mismatch.csv", [{"image": "good.nii.gz", "label": 0, "mask": "tiny_mask.nii.gz"}]),
                                    ["good.nii.gz", "tiny_mask.nii.gz"])
    cases["label outside classes"] = (write_manifest(tmp / "labels.csv", [{"image": "good.nii.gz", "label": 7}]), ["labels.csv", "7"])
    cases["npz missing keys"] = (write_medmnist(tmp / "broken.npz", drop=("val_labels",)), ["broken.npz", "val_labels"])
    cases["manifest row pointing nowhere"] = (write_manifest(tmp / "ghost.csv", [{"image": "ghost.nii.gz", "label": 0}]), ["ghost.csv", "ghost.nii.gz"])
    moved = np.eye(4)
    moved[:3, 3] = (0.0, 3.0, 0.0)
    write_nifti(tmp / "moved_mask.nii.gz", (ct_volume > 200).astype(np.uint8), affine=moved)
    cases["mask off the image grid"] = (write_manifest(tmp / "offgrid.csv", [{"image": "good.nii.gz", "label": 0, "mask": "moved_mask.nii.gz"}]),
                                        ["good.nii.gz", "moved_mask.nii.gz", "origin"])
    series = tmp / "series"
    shutil.copytree(ct5n_dir, series)
    bad = sorted(series.iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:2000])
    cases["DICOM series with a corrupt slice"] = (series, ["series", bad.name])
    (tmp / "Task09" / "imagesTr").mkdir(parents=True)
    (tmp / "Task09" / "labelsTr").mkdir()
    write_nifti(tmp / "Task09" / "imagesTr" / "a.nii.gz", ct_volume)
    write_nifti(tmp / "Task09" / "labelsTr" / "a.nii.gz", (ct_volume > 200).astype(np.uint8))
    cases["Decathlon folder without dataset.json"] = (tmp / "Task09", ["Task09", "dataset.json"])
    return cases


def test_check_names_file_and_problem_for_every_bad_input(tmp_path, capsys, write_nifti, write_manifest, write_medmnist, ct_volume,
                                                          ct5n_dir, snapshot):
    cases = _bad_inputs(tmp_path, write_nifti, write_manifest, write_medmnist, ct_volume, ct5n_dir)
    snap = snapshot(tmp_path)
    for name, (path, words) in cases.items():
        rc, out, err = _run(capsys, "data", "check", str(path), "--classes", "0,1")
        lines = [ln for ln in (out + err).splitlines() if ln.strip()]
        assert rc != 0, name
        assert "Traceback" not in out + err, name
        problems = lines[:-1] or lines  # the last line is the summary
        assert any(all(w.lower() in ln.lower() for w in words) for ln in problems), f"{name}: {lines}"
    snap.assert_unchanged()  # checking writes nothing


def test_real_process_exit_code_and_no_traceback(tmp_path):
    missing = tmp_path / "absent"
    r = subprocess.run([sys.executable, "-m", "smartlib.cli", "data", "make", "--task", "nodules", "--n", "-3", "--out", str(missing)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")
    assert not missing.exists()
    r = subprocess.run([sys.executable, "-m", "smartlib.cli", "data", "check", str(missing)], capture_output=True, text=True)
    assert r.returncode != 0 and "absent" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
