"""Procedural phantoms: determinism, anatomy, HU ranges, lesions, acquisition effects, errors."""
from __future__ import annotations

import numpy as np
import pytest

from smartlib.data.phantom import (
    ORGAN_CLASSES,
    TISSUE_CLASSES,
    Acquisition,
    NoduleSpec,
    TumourSpec,
    insert_lesion,
    make_phantom,
    make_subject,
)
from smartlib.errors import SmartError

CLEAN = Acquisition(noise_hu=0.0, kernel="medium", slice_mm=None, contrast=False)
LUNGS = (ORGAN_CLASSES.index("lung_right") + 1, ORGAN_CLASSES.index("lung_left") + 1)


def _tissue(ph, name):
    return ph.tissue == TISSUE_CLASSES.index(name)


def _sphere(r: int) -> np.ndarray:
    g = np.indices((2 * r + 1,) * 3) - r
    return (g ** 2).sum(0) <= r * r


@pytest.fixture(scope="module")
def big():
    return make_phantom((128, 128, 128), (2.0, 2.0, 2.0), seed=1, acquisition=CLEAN)


def test_types_and_shapes():
    ph = make_phantom((40, 48, 56), (2.0, 2.5, 3.0), seed=3)
    assert ph.image.shape == ph.organs.shape == ph.lesion.shape == ph.tissue.shape == (40, 48, 56)
    assert ph.image.dtype == np.float32 and ph.organs.dtype == np.uint8 and ph.lesion.dtype == np.uint8
    assert ph.spacing == (2.0, 2.5, 3.0)
    assert np.allclose(np.diag(ph.affine), [2.0, 2.5, 3.0, 1.0])
    assert isinstance(ph.acquisition, Acquisition)
    assert ph.organs.max() <= len(ORGAN_CLASSES)


def test_deterministic_per_seed():
    a = make_phantom((48, 48, 48), seed=7, tumour=True)
    b = make_phantom((48, 48, 48), seed=7, tumour=True)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.organs, b.organs) and np.array_equal(a.lesion, b.lesion)
    assert a.acquisition == b.acquisition


def test_different_seeds_differ():
    a = make_phantom((48, 48, 48), seed=1, acquisition=CLEAN)
    b = make_phantom((48, 48, 48), seed=2, acquisition=CLEAN)
    assert not np.array_equal(a.organs, b.organs)
    assert np.abs(a.image - b.image).mean() > 20.0
    assert a.meta["body_size_mm"] != b.meta["body_size_mm"]


def test_acquisition_does_not_change_anatomy():
    a = make_phantom((48, 48, 48), seed=4, acquisition=CLEAN)
    b = make_phantom((48, 48, 48), seed=4, acquisition=Acquisition(25.0, "sharp", 5.0, False))
    assert np.array_equal(a.organs, b.organs)
    assert not np.array_equal(a.image, b.image)


def test_hu_ranges_plausible(big):
    ph = big
    assert ph.image[_tissue(ph, "lung")].mean() < -600
    assert ph.image[_tissue(ph, "bone")].mean() > 200
    assert -150 < ph.image[_tissue(ph, "fat")].mean() < -50
    assert 20 < ph.image[_tissue(ph, "muscle")].mean() < 80
    assert ph.image[_tissue(ph, "air")].mean() < -900
    liver = ph.organs == ORGAN_CLASSES.index("liver") + 1
    assert 40 < ph.image[liver].mean() < 90
    femur = ph.organs == ORGAN_CLASSES.index("femur_right") + 1
    assert ph.image[femur].mean() > 200


@pytest.mark.parametrize("seed", [1, 2])
def test_all_organs_present_128(seed, big):
    ph = big if seed == 1 else make_phantom((128, 128, 128), seed=seed)
    counts = np.bincount(ph.organs.ravel(), minlength=len(ORGAN_CLASSES) + 1)
    missing = [ORGAN_CLASSES[i] for i in range(len(ORGAN_CLASSES)) if counts[i + 1] == 0]
    assert not missing
    assert counts[1:].min() > 50  # every organ a real region, not a stray voxel


def test_anatomical_layout(big):
    """RAS+: liver on the patient's right (+X) of the spleen, lungs above the bladder, femurs lowest."""
    ph = big

    def centroid(name):
        return np.argwhere(ph.organs == ORGAN_CLASSES.index(name) + 1).mean(0)

    assert centroid("liver")[0] > centroid("spleen")[0]
    assert centroid("lung_right")[0] > centroid("lung_left")[0]
    assert centroid("kidney_right")[0] > centroid("kidney_left")[0]
    assert centroid("femur_right")[0] > centroid("femur_left")[0]
    assert centroid("lung_right")[2] > centroid("heart")[2] > centroid("liver")[2] > centroid("bladder")[2]
    assert centroid("bladder")[2] > centroid("femur_left")[2] - 10
    assert centroid("heart")[1] > centroid("kidney_left")[1]  # heart anterior of kidneys


def test_lesions_inside_lung():
    nod = NoduleSpec(mask=_sphere(3), hu=40.0)
    ph = make_phantom((64, 64, 64), seed=5, nodules=[nod, nod], tumour=TumourSpec(radius_mm=8.0, irregularity=0.6))
    les = ph.lesion.astype(bool)
    assert les.sum() > 100
    assert np.isin(ph.organs[les], LUNGS).all()
    kinds = [m["kind"] for m in ph.meta["lesions"]]
    assert kinds == ["nodule", "nodule", "tumour"]
    assert all(m["voxels"] > 0 for m in ph.meta["lesions"])
    clean = make_phantom((64, 64, 64), seed=5, acquisition=ph.acquisition)
    assert ph.image[les].mean() > clean.image[les].mean() + 300  # solid lesion in air-filled lung


def test_nodule_at_given_center():
    spec = make_phantom((64, 64, 64), 1.0, seed=2, body_scale=1.0, center_mm="lung", acquisition=CLEAN,
                        nodules=[NoduleSpec(mask=_sphere(4), hu=30.0, center=(32, 32, 32))])
    assert spec.lesion[32, 32, 32] == 1
    assert abs(float(spec.image[32, 32, 32]) - 30.0) < 25
    assert spec.lesion.sum() > 0.6 * _sphere(4).sum()


def test_insert_lesion_clips_at_border():
    img = np.zeros((10, 10, 10), np.float32)
    les = np.zeros((10, 10, 10), np.uint8)
    m = insert_lesion(img, les, _sphere(2), 100.0, (0, 5, 5))
    assert m.sum() == les.sum() > 0
    assert np.all(img[m] == 100.0) and m[:3].any() and not m[3:].any()


def test_thick_slices_reduce_z_high_frequency():
    def zenergy(slice_mm):
        ph = make_phantom((64, 64, 64), 1.0, seed=8, body_scale=1.0, center_mm=(60.0, 0.0, 150.0),
                          acquisition=Acquisition(0.0, "medium", slice_mm, False))
        return float(np.mean(np.diff(ph.image, axis=2) ** 2))

    e_native, e25, e5 = zenergy(None), zenergy(2.5), zenergy(5.0)
    assert e5 < 0.8 * e25 < 0.8 * e_native


def test_sharp_kernel_noisier_than_smooth():
    def noise_std(kernel):
        noisy = make_phantom((48, 48, 48), seed=9, acquisition=Acquisition(20.0, kernel, 2.5, False))
        clean = make_phantom((48, 48, 48), seed=9, acquisition=Acquisition(0.0, kernel, 2.5, False))
        return float((noisy.image - clean.image).std())

    smooth, medium, sharp = noise_std("smooth"), noise_std("medium"), noise_std("sharp")
    assert smooth < medium < sharp
    assert sharp > 1.5 * smooth


def test_sharp_kernel_has_stronger_edges():
    def grad(kernel):
        ph = make_phantom((48, 48, 48), seed=9, acquisition=Acquisition(0.0, kernel, None, False))
        return float(np.abs(np.diff(ph.image, axis=0)).mean())

    assert grad("smooth") < grad("medium") < grad("sharp")


def test_contrast_enhances_blood_and_organs():
    a = make_phantom((64, 64, 64), seed=3, acquisition=Acquisition(0.0, "medium", None, False))
    b = make_phantom((64, 64, 64), seed=3, acquisition=Acquisition(0.0, "medium", None, True))
    for name, gain in (("heart", 40), ("kidney_left", 60), ("liver", 25), ("spleen", 30)):
        m = a.organs == ORGAN_CLASSES.index(name) + 1
        assert b.image[m].mean() > a.image[m].mean() + gain, name
    blood = a.tissue == TISSUE_CLASSES.index("blood")
    assert b.image[blood].mean() > a.image[blood].mean() + 80
    bladder = a.organs == ORGAN_CLASSES.index("bladder") + 1
    assert abs(b.image[bladder].mean() - a.image[bladder].mean()) < 10


def test_acquisition_random_and_dict():
    r1 = Acquisition.random(np.random.default_rng(0))
    r2 = Acquisition.random(np.random.default_rng(0))
    assert r1 == r2
    d = r1.to_dict()
    assert set(d) == {"noise_hu", "kernel", "slice_mm", "contrast"}
    assert d["kernel"] in ("smooth", "medium", "sharp") and d["slice_mm"] in (2.5, 5.0)
    draws = [Acquisition.random(np.random.default_rng(s)) for s in range(40)]
    assert {a.kernel for a in draws} == {"smooth", "medium", "sharp"}
    assert {a.contrast for a in draws} == {True, False}


def test_organ_box_centres_organ():
    subj = make_subject(5, body_scale=1.0)
    for name in ("kidney_left", "heart", "femur_right", "bladder"):
        c, ext = subj.organ_box_mm(name)
        sp = float(ext.max()) / 25.6
        ph = make_phantom((32, 32, 32), sp, seed=5, body_scale=1.0, center_mm=c.tolist(), acquisition=CLEAN)
        k = ORGAN_CLASSES.index(name) + 1
        assert (ph.organs == k).mean() > 0.03, name
        assert ph.organs[14:18, 14:18, 14:18].ravel().tolist().count(k) > 0, name


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"shape": (64, 64)}, "shape"),
        ({"shape": (64, 64, 0)}, "shape"),
        ({"spacing": (2.0, 0.0, 2.0)}, "spacing"),
        ({"spacing": (2.0, -1.0, 2.0)}, "spacing"),
        ({"seed": -1}, "seed=-1"),
        ({"center_mm": "heart"}, "center_mm"),
        ({"body_scale": -1.0}, "body_scale"),
        ({"tumour": "big"}, "tumour"),
    ],
)
def test_bad_arguments_raise(kwargs, text):
    args = {"shape": (16, 16, 16), **kwargs}
    with pytest.raises(SmartError, match=text):
        make_phantom(**args)


@pytest.mark.parametrize(
    "kwargs, text",
    [({"kernel": "ultra"}, "kernel='ultra'"), ({"noise_hu": -1.0}, "noise_hu"), ({"slice_mm": 0.0}, "slice_mm")],
)
def test_bad_acquisition_raises(kwargs, text):
    with pytest.raises(SmartError, match=text):
        Acquisition(**kwargs)


def test_bad_tumour_spec_raises():
    with pytest.raises(SmartError, match="irregularity"):
        TumourSpec(irregularity=1.5)
    with pytest.raises(SmartError, match="radius_mm"):
        TumourSpec(radius_mm=0.0)
