"""MONAI preprocessing: shapes, HU window, determinism, orientation/resampling, records of every kind, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smartlib.data.manifest import read_manifest
from smartlib.data.sources import medmnist_records
from smartlib.data.transforms import HU_WINDOW, eval_transforms, pretrain_transforms, set_transform_seed
from smartlib.errors import SmartError


def rec(image, **kw):
    return {"image": image, "label": kw.pop("label", None), "mask": kw.pop("mask", None),
            "patient_id": kw.pop("patient_id", "p"), "split": None, **kw}


def test_default_window():
    assert HU_WINDOW == (-500.0, 500.0)


def test_pretrain_output_shapes_and_range(tmp_path, write_nifti, ct_volume):
    p = write_nifti(tmp_path / "ct.nii.gz", ct_volume)
    t = set_transform_seed(pretrain_transforms(roi=16, spacing=2.0, num_views=3), 0)
    out = t(rec(p, label=1))
    assert isinstance(out, list) and len(out) == 3
    for view in out:
        img = view["image"]
        assert type(img) is torch.Tensor and img.dtype == torch.float32 and img.shape == (1, 16, 16, 16)
        assert img.min() >= 0.0 and img.max() <= 1.0
        assert view["label"] == 1
    # 24x20x16 at 1 mm -> about 12x10x8 at 2 mm, padded to 16: the views must contain padding zeros
    assert (out[0]["image"] == 0).any()


def test_pretrain_anisotropic_roi_and_no_flip(tmp_path, write_nifti, ct_volume):
    p = write_nifti(tmp_path / "ct.nii.gz", ct_volume)
    out = pretrain_transforms(roi=(8, 6, 4), spacing=None, flip=False)(rec(p))
    assert [v["image"].shape for v in out] == [(1, 8, 6, 4)] * 2


def test_window_maps_hu_to_unit(tmp_path, write_nifti):
    v = np.zeros((5, 4, 3), np.float32)
    v[:, 0, 0], v[:, 1, 0], v[:, 2, 0], v[:, 3, 0] = -1000, -500, 0, 500
    v[:, 0, 1] = 1000
    v[:, 1, 1] = 250
    p = write_nifti(tmp_path / "w.nii.gz", v)
    out = eval_transforms(roi=None, spacing=None)(rec(p))["image"][0].numpy()
    assert out.shape == v.shape  # identity affine: RAS already, no resampling, no crop
    np.testing.assert_allclose(out[:, 0, 0], 0.0)   # -1000 clipped
    np.testing.assert_allclose(out[:, 1, 0], 0.0)   # -500 -> 0
    np.testing.assert_allclose(out[:, 2, 0], 0.5)   # 0 -> 0.5
    np.testing.assert_allclose(out[:, 3, 0], 1.0)   # 500 -> 1
    np.testing.assert_allclose(out[:, 0, 1], 1.0)   # 1000 clipped
    np.testing.assert_allclose(out[:, 1, 1], 0.75, atol=1e-6)
    # a configurable window
    out2 = eval_transforms(roi=None, spacing=None, hu_window=(-1000, 1000))(rec(p))["image"][0].numpy()
    np.testing.assert_allclose(out2[:, 0, 0], 0.0)
    np.testing.assert_allclose(out2[:, 2, 0], 0.5)


def test_same_seed_same_crops(tmp_path, write_nifti):
    rng = np.random.default_rng(3)
    p = write_nifti(tmp_path / "r.nii.gz", rng.uniform(-500, 500, (30, 30, 30)).astype(np.float32))
    r = rec(p)

    def views(seed):
        t = set_transform_seed(pretrain_transforms(roi=12, spacing=None, num_views=2), seed)
        return [torch.stack([v["image"] for v in t(r)]) for _ in range(3)]

    a, b, c = views(7), views(7), views(8)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not torch.equal(a[0][0], a[0][1])  # two views of one volume differ


def test_resample_1mm_to_2mm(tmp_path, write_nifti):
    p = write_nifti(tmp_path / "iso.nii.gz", np.zeros((21, 21, 21), np.float32), spacing=(1, 1, 1))
    assert eval_transforms(roi=None, spacing=2.0)(rec(p))["image"].shape == (1, 11, 11, 11)
    q = write_nifti(tmp_path / "aniso.nii.gz", np.zeros((21, 21, 6), np.float32), spacing=(1, 1, 4))
    assert eval_transforms(roi=None, spacing=2.0)(rec(q))["image"].shape == (1, 11, 11, 11)
    assert eval_transforms(roi=None, spacing=None)(rec(q))["image"].shape == (1, 21, 21, 6)


def test_orientation_to_ras(tmp_path, write_nifti):
    v = np.full((6, 5, 4), -1000.0, np.float32)
    v[0, 0, 0] = 500.0  # a marker in the first voxel
    # an LPS-stored volume: x and y run towards left/posterior, so RAS reorientation flips them
    p = write_nifti(tmp_path / "lps.nii.gz", v, affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    out = eval_transforms(roi=None, spacing=None)(rec(p))["image"][0].numpy()
    assert out.shape == (6, 5, 4)
    assert out[5, 4, 0] == pytest.approx(1.0) and out[0, 0, 0] == pytest.approx(0.0)


def test_eval_with_mask_nearest_and_centre_crop(tmp_path, write_nifti, ct_volume):
    img = write_nifti(tmp_path / "i.nii.gz", ct_volume)
    msk = write_nifti(tmp_path / "m.nii.gz", (ct_volume > 200).astype(np.uint8))
    out = eval_transforms(roi=(10, 10, 10), spacing=1.5, keys=("image", "mask"))(rec(img, mask=msk, label=0))
    assert out["image"].shape == out["mask"].shape == (1, 10, 10, 10)
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0} and out["mask"].sum() > 0
    # padding when roi is larger than the image
    big = eval_transforms(roi=40, spacing=None)(rec(img))["image"]
    assert big.shape == (1, 40, 40, 40) and big[0, 0, 0, 0] == 0


def test_eval_mask_mismatch_is_smart_error(tmp_path, write_nifti, ct_volume, snapshot):
    img = write_nifti(tmp_path / "img.nii.gz", ct_volume)
    msk = write_nifti(tmp_path / "msk.nii.gz", np.zeros((8, 8, 8), np.uint8))
    snap = snapshot(tmp_path)
    with pytest.raises(SmartError) as ei:  # not MONAI's RuntimeError wrapper
        eval_transforms(roi=16, keys=("image", "mask"))(rec(img, mask=msk))
    assert "img.nii.gz" in str(ei.value) and "msk.nii.gz" in str(ei.value) and "mismatch" in str(ei.value)
    snap.assert_unchanged()


def test_bad_volume_in_either_pipeline_is_smart_error(tmp_path):
    (tmp_path / "broken.nii.gz").write_text("nope")
    r = rec(tmp_path / "broken.nii.gz")
    with pytest.raises(SmartError, match="broken.nii.gz"):  # not MONAI's RuntimeError wrapper
        pretrain_transforms(roi=8)(r)
    with pytest.raises(SmartError, match="broken.nii.gz"):
        eval_transforms(roi=8)(r)
    with pytest.raises(SmartError, match="broken.nii.gz"):  # a seeded pipeline unwraps too
        set_transform_seed(pretrain_transforms(roi=8), 0)(r)


def test_medmnist_records_skip_window_and_resampling(tmp_path, write_medmnist):
    recs = medmnist_records(write_medmnist(tmp_path / "n.npz", n=(2, 1, 1)))
    out = eval_transforms(roi=None, spacing=2.0)(recs[0])["image"]
    assert out.shape == (1, 28, 28, 28)
    np.testing.assert_allclose(out[0].numpy(), recs[0]["image"], rtol=1e-6)  # unchanged: no HU window
    raw = medmnist_records(tmp_path / "n.npz", dtype=np.uint8)
    out8 = eval_transforms(roi=None, spacing=2.0)(raw[0])["image"]
    np.testing.assert_allclose(out8.numpy(), out.numpy(), rtol=1e-6)  # uint8 scaled by 1/255
    views = pretrain_transforms(roi=16, spacing=2.0)(recs[1])
    assert [v["image"].shape for v in views] == [(1, 16, 16, 16)] * 2


def test_in_memory_hu_array_with_spacing(ct_volume):
    out = eval_transforms(roi=None, spacing=2.0)(rec(ct_volume, spacing=(1.0, 1.0, 1.0)))["image"]
    assert out.shape[1:] == (12, 10, 8)
    out = eval_transforms(roi=None, spacing=2.0)(rec(ct_volume))["image"]  # spacing unknown: not resampled
    assert out.shape[1:] == ct_volume.shape and 0 <= out.min() and out.max() <= 1
    with pytest.raises(SmartError, match="3-D"):
        eval_transforms(roi=None)(rec(ct_volume[:, :, 0], patient_id="flat"))


def test_dicom_through_pipeline(ct5n_dir):
    out = eval_transforms(roi=None, spacing=None)(rec(ct5n_dir))["image"]
    assert out.shape == (1, 16, 16, 5) and 0 <= out.min() and out.max() <= 1


def test_manifest_records_two_views_and_eval_with_mask(labelled_set):
    recs = read_manifest(labelled_set)
    t = set_transform_seed(pretrain_transforms(roi=8, spacing=2.0, num_views=2), 0)
    items = [t(r) for r in recs[:3]]
    assert all(len(views) == 2 for views in items)
    # every view keeps the record's other keys; stacked per view: (V, B, 1, *roi)
    assert [[v["label"] for v in views] for views in items] == [[0, 0], [1, 1], [0, 0]]
    assert [views[0]["patient_id"] for views in items] == ["P0", "P1", "P2"]
    stacked = torch.stack([torch.stack([views[v]["image"] for views in items]) for v in range(2)])
    assert stacked.shape == (2, 3, 1, 8, 8, 8) and stacked.dtype == torch.float32
    ev = eval_transforms(roi=8, spacing=2.0, keys=("image", "mask"))
    outs = [ev(r) for r in recs[:2]]
    assert all(o["image"].shape == o["mask"].shape == (1, 8, 8, 8) for o in outs)
    assert [o["label"] for o in outs] == [0, 1] and all(type(o["label"]) is int for o in outs)


def test_unlabeled_records_keep_label_none(tmp_path, write_nifti, ct_volume):
    p = write_nifti(tmp_path / "u.nii.gz", ct_volume)
    assert all(v["label"] is None for v in pretrain_transforms(roi=8)(rec(p)))
    assert eval_transforms(roi=8)(rec(p))["label"] is None


def test_crop_foreground_keeps_body(tmp_path, write_nifti):
    v = np.full((40, 40, 40), -1000.0, np.float32)
    v[30:36, 30:36, 30:36] = 100.0  # small body in a corner
    p = write_nifti(tmp_path / "c.nii.gz", v)
    t = set_transform_seed(pretrain_transforms(roi=6, spacing=None, crop_foreground=True, flip=False), 0)
    for _ in range(3):
        for view in t(rec(p)):
            assert torch.all(view["image"] > 0.5)


@pytest.mark.parametrize("kwargs,word", [
    ({"roi": 0}, "roi"), ({"roi": (8, 8)}, "roi"), ({"spacing": -1.0}, "spacing"),
    ({"hu_window": (500, -500)}, "hu_window"), ({"num_views": 0}, "num_views"),
])
def test_bad_parameters(kwargs, word):
    with pytest.raises(SmartError, match=word):
        pretrain_transforms(**kwargs)


def test_bad_eval_keys_and_seed():
    with pytest.raises(SmartError, match="keys"):
        eval_transforms(keys=("mask",))
    with pytest.raises(SmartError, match="seed"):
        set_transform_seed(pretrain_transforms(), -1)
