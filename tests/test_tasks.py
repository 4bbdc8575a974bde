"""Task sets on disk: manifests, files, splits, caching, atomic regeneration, determinism, errors."""
from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from smartlib.data import tasks
from smartlib.data.phantom import ORGAN_CLASSES
from smartlib.data.tasks import TASKS, make_task, read_manifest, task_params
from smartlib.errors import SmartError

BASE = ["image", "label", "mask", "patient_id", "split", "noise_hu", "kernel", "slice_mm", "contrast"]
SMALL = {
    "pretrain": {"shape": [32, 32, 32]},
    "nodules": {"size": 32},
    "response": {"shape": [32, 32, 32], "spacing": 2.0},
    "segmentation": {"shape": [32, 32, 32], "spacing": 3.0},
    "organs": {"size": 16},
    "localisation": {"size": 32, "offset_mm": 24.0},
    "findings": {"shape": [32, 28, 32]},
}
EXTRAS = {
    "pretrain": ["view"],
    "nodules": ["annotation_id", "nodule_id", "subtlety", "internalStructure", "calcification", "sphericity",
                "margin", "lobulation", "spiculation", "texture", "malignancy", "volume_mm3"],
    "response": ["p_true", "logit", "volume_ml", "irregularity", "heterogeneity"],
    "segmentation": ["tumour_volume_ml", "irregularity", "heterogeneity"],
    "organs": ["organ", "spacing_mm"],
    "localisation": ["annotation_id", "nodule_id", "malignancy", "volume_mm3", "center_x", "center_y", "center_z"],
    "findings": ["findings_mask", "drr", "drr_mask", "effusion", "nodule", "mass", "pneumothorax", "consolidation", "cardiomegaly"],
}
N = {"pretrain": 4, "nodules": 6, "response": 5, "segmentation": 5, "organs": 11, "localisation": 4, "findings": 4}


@pytest.fixture(scope="module", autouse=True)
def _lidc_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.getbasetemp() / "lidc_cache_shared"  # shared with test_lidc.py
    d.mkdir(exist_ok=True)
    mp.setenv("SMART_CT_CACHE", str(d))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {t: make_task(t, N[t], 0, root / t, **SMALL[t]) for t in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_manifest_columns_and_files(task, generated):
    man = generated[task]
    assert man.name == "manifest.csv"
    rows = read_manifest(man)
    assert len(rows) == N[task]
    cols = list(rows[0])
    assert cols[: len(BASE)] == BASE
    for c in EXTRAS[task]:
        assert c in cols, c
    for r in rows:
        img = man.parent / r["image"]
        assert img.is_file() and r["image"].endswith(".nii.gz") and not r["image"].startswith("/")
        nii = nib.load(img)
        assert np.allclose(np.diag(nii.affine)[:3], nib.affines.voxel_sizes(nii.affine))
        if task == "pretrain":
            assert nii.shape == (32, 32, 32) and np.allclose(nii.header.get_zooms(), 2.0)
        if task == "segmentation":
            assert r["label"] == "" and r["mask"]
        if r["mask"]:
            m = np.asarray(nib.load(man.parent / r["mask"]).dataobj)
            assert m.shape == nii.shape and set(np.unique(m)) <= {0, 1}
        assert r["split"] in ("train", "val", "test")
        assert r["kernel"] in ("smooth", "medium", "sharp") and r["contrast"] in ("0", "1")
    params = json.loads((man.parent / "params.json").read_text())
    assert params == task_params(task, N[task], 0, **SMALL[task])


@pytest.mark.parametrize("task", TASKS)
def test_split_by_patient(task, generated):
    rows = read_manifest(generated[task])
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["patient_id"], r["split"]) == r["split"]


def test_assign_splits_fractions():
    pats = [f"p{i}" for i in range(50)]
    s = tasks.assign_splits(pats, [0.6, 0.2, 0.2], np.random.default_rng(0))
    counts = {k: list(s.values()).count(k) for k in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 10, "test": 10}
    s3 = tasks.assign_splits(["a", "b", "c"], [0.6, 0.2, 0.2], np.random.default_rng(0))
    assert sorted(s3.values()) == ["test", "train", "val"]
    s1 = tasks.assign_splits(["a", "b"], [1.0, 0.0, 0.0], np.random.default_rng(0))
    assert set(s1.values()) == {"train"}


def test_nodules_labels_and_lidc_patients(generated):
    rows = read_manifest(generated["nodules"])
    labels = [int(r["label"]) for r in rows]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    for r in rows:
        assert r["patient_id"].startswith("LIDC-IDRI-")
        m = int(r["malignancy"])
        assert int(r["label"]) == (1 if m >= 4 else 0)  # the papers' rule (default): 1–3 benign, 4–5 malignant
        mask = np.asarray(nib.load(generated["nodules"].parent / r["mask"]).dataobj)
        assert mask.sum() > 0 and mask[16, 16, 16] == 1  # nodule-centred crop
    assert len({r["nodule_id"] for r in rows}) == len(rows)


def test_nodules_medmnist_rule_is_a_switch(tmp_path):
    m = make_task("nodules", n=8, seed=0, out=tmp_path / "n", size=32, rule="medmnist")
    rows = read_manifest(m)
    assert rows and all(int(r["malignancy"]) != 3 for r in rows)
    assert all(int(r["label"]) == (1 if int(r["malignancy"]) >= 4 else 0) for r in rows)
    paper = read_manifest(make_task("nodules", n=40, seed=0, out=tmp_path / "p", size=32))
    assert any(int(r["malignancy"]) == 3 and int(r["label"]) == 0 for r in paper)  # rating 3 is benign by default


def test_response_probability_and_ceiling(generated):
    rows = read_manifest(generated["response"])
    for r in rows:
        p, logit = tasks.response_probability(float(r["volume_ml"]), float(r["irregularity"]),
                                              float(r["heterogeneity"]), (8.0, 22.0))
        assert abs(p - float(r["p_true"])) < 1e-4 and abs(logit - float(r["logit"])) < 1e-4
        assert int(r["label"]) in (0, 1)
    ceiling = json.loads((generated["response"].parent / "ceiling.json").read_text())
    assert 0.5 <= ceiling["auc_expected"] <= 1.0 and ceiling["n"] == len(rows)
    # the signal is monotone: more volume, irregularity or heterogeneity → higher probability
    lo = tasks.response_probability(2.0, 0.1, 0.1)[0]
    hi = tasks.response_probability(30.0, 0.9, 0.9)[0]
    assert lo < 0.1 < 0.9 < hi


def test_expected_auc():
    assert tasks.expected_auc(np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(1.0)
    assert tasks.expected_auc(np.full(10, 0.3)) == pytest.approx(0.5)


def test_organs_balanced(generated):
    rows = read_manifest(generated["organs"])
    labels = sorted(int(r["label"]) for r in rows)
    assert labels == list(range(len(ORGAN_CLASSES)))
    for r in rows:
        assert r["organ"] == ORGAN_CLASSES[int(r["label"])]
        m = np.asarray(nib.load(generated["organs"].parent / r["mask"]).dataobj)
        assert m.mean() > 0.005, r["organ"]


def test_segmentation_covers_acquisition_subsets(tmp_path):
    man = make_task("segmentation", 12, 3, tmp_path / "seg", shape=[16, 16, 16], spacing=6.0)
    combos = {(r["kernel"], r["slice_mm"], r["contrast"]) for r in read_manifest(man)}
    assert len(combos) == 12


def test_cached_second_call_does_not_rewrite(tmp_path):
    out = tmp_path / "pre"
    man = make_task("pretrain", 2, 1, out, shape=[16, 16, 16])
    before = {p.name: p.stat().st_mtime_ns for p in [man, out / "params.json", *sorted((out / "images").iterdir())]}
    man2 = make_task("pretrain", 2, 1, out, shape=(16, 16, 16))
    after = {p.name: p.stat().st_mtime_ns for p in [man2, out / "params.json", *sorted((out / "images").iterdir())]}
    assert man2 == man and after == before


def test_regenerates_when_params_change(tmp_path):
    out = tmp_path / "pre"
    make_task("pretrain", 2, 1, out, shape=[16, 16, 16])
    m0 = (out / "params.json").stat().st_mtime_ns
    man = make_task("pretrain", 3, 1, out, shape=[16, 16, 16])
    assert len(read_manifest(man)) == 3
    assert json.loads((out / "params.json").read_text())["n"] == 3
    assert (out / "params.json").stat().st_mtime_ns != m0
    make_task("pretrain", 3, 1, out, shape=[16, 16, 16], zoom_fraction=1.0)
    assert {r["view"] for r in read_manifest(man)} == {"zoom"}


def test_deterministic_arrays(tmp_path):
    a = make_task("response", 2, 5, tmp_path / "a", shape=[16, 16, 16], spacing=3.0)
    b = make_task("response", 2, 5, tmp_path / "b", shape=[16, 16, 16], spacing=3.0)
    ra, rb = read_manifest(a), read_manifest(b)
    assert ra == rb
    for x, y in zip(ra, rb):
        for col in ("image", "mask"):
            va = np.asarray(nib.load(a.parent / x[col]).dataobj)
            vb = np.asarray(nib.load(b.parent / y[col]).dataobj)
            assert va.tobytes() == vb.tobytes()
    c = make_task("response", 2, 6, tmp_path / "c", shape=[16, 16, 16], spacing=3.0)
    vc = np.asarray(nib.load(c.parent / read_manifest(c)[0]["image"]).dataobj)
    assert vc.tobytes() != np.asarray(nib.load(a.parent / ra[0]["image"]).dataobj).tobytes()


def test_failure_leaves_no_folder(tmp_path, monkeypatch):
    real = tasks._save_nifti
    calls = {"n": 0}

    def flaky(path, array, spacing):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        real(path, array, spacing)

    monkeypatch.setattr(tasks, "_save_nifti", flaky)
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="disk full"):
        make_task("pretrain", 3, 0, out, shape=[16, 16, 16])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either


def test_failure_keeps_previous_set(tmp_path, monkeypatch):
    out = tmp_path / "pre"
    man = make_task("pretrain", 2, 0, out, shape=[16, 16, 16])
    old = man.read_text()

    def boom(path, array, spacing):
        raise RuntimeError("killed")

    monkeypatch.setattr(tasks, "_save_nifti", boom)
    with pytest.raises(RuntimeError):
        make_task("pretrain", 4, 0, out, shape=[16, 16, 16])
    assert man.read_text() == old and json.loads((out / "params.json").read_text())["n"] == 2


@pytest.mark.parametrize(
    "args, kwargs, text",
    [
        (("segment", 2, 0), {}, "task='segment'"),
        (("pretrain", 0, 0), {}, "n=0"),
        (("pretrain", 2, -3), {}, "seed=-3"),
        (("pretrain", 2, 0), {"colour": 1}, "colour"),
        (("pretrain", 2, 0), {"shape": [16, 16]}, "shape"),
        (("pretrain", 2, 0), {"spacing": -1}, "spacing"),
        (("nodules", 2, 0), {"rule": "strict"}, "rule='strict'"),
        (("response", 2, 0), {"radius_mm": [20, 5]}, "radius_mm"),
        (("organs", 2, 0), {"per_subject": 0}, "per_subject"),
        (("pretrain", 2, 0), {"splits": [0.5, 0.5, 0.5]}, "splits"),
    ],
)
def test_bad_arguments(tmp_path, args, kwargs, text):
    with pytest.raises(SmartError, match=text):
        make_task(*args, out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_read_manifest_missing(tmp_path):
    with pytest.raises(SmartError, match="manifest"):
        read_manifest(tmp_path / "nope.csv")


def test_nodules_paper_rule_and_too_many(tmp_path):
    man = make_task("nodules", 2, 4, tmp_path / "nod", size=24, rule="paper")
    for r in read_manifest(man):
        assert int(r["label"]) == (1 if int(r["malignancy"]) >= 4 else 0)
    assert sorted(int(r["label"]) for r in read_manifest(man)) == [0, 1]
    with pytest.raises(SmartError, match="n=50000"):
        make_task("nodules", 50000, 0, tmp_path / "big")
    assert not (tmp_path / "big").exists()


# ------------------------------------------------------------------------------ nodules at random offsets
def _centres_and_centroids(man):
    rows = read_manifest(man)
    cen = np.array([[int(r[f"center_{a}"]) for a in "xyz"] for r in rows])
    cog = np.array([np.argwhere(np.asarray(nib.load(man.parent / r["mask"]).dataobj)).mean(axis=0) for r in rows])
    return rows, cen, cog


def test_offset_centre_stays_in_bound_and_keeps_the_nodule_inside():
    rng = np.random.default_rng(0)
    for shape in [(3, 5, 4), (20, 9, 30), (31, 31, 31), (40, 2, 2)]:
        for _ in range(300):
            c = tasks._offset_centre(shape, 32, [2.0, 2.0, 2.0], 20.0, rng)
            for ax in range(3):
                start = c[ax] - shape[ax] // 2
                if shape[ax] <= 32:
                    assert 0 <= start and start + shape[ax] <= 32, (shape, c)  # the whole mask inside
                    assert abs(c[ax] - 16) <= 10, (shape, c)  # |offset| <= 20 mm = 10 voxels
                else:
                    assert c[ax] == 16  # wider than the crop: stays centred
    assert {tasks._offset_centre((3, 3, 3), 32, [2.0] * 3, 0.0, rng) for _ in range(20)} == {(16, 16, 16)}


def test_localisation_offsets_move_the_nodule_and_zero_keeps_it_centred(tmp_path):
    n, size, off = 6, 32, 24.0
    rows, cen, cog = _centres_and_centroids(make_task("localisation", n, 0, tmp_path / "off", size=size, offset_mm=off))
    assert (np.abs(cen - size // 2) <= off / 2.0).all()  # offset bound, in voxels at 2 mm
    assert cen.std(axis=0).min() > 1.0 and cog.std(axis=0).min() > 1.0  # positive control: the nodules move
    assert (np.abs(cog - cen) <= 6).all()  # the mask sits at its recorded centre (nodules ≤ 0.4 × 64 mm)
    for r in rows:
        assert float(r["volume_mm3"]) >= 8.0  # at least one 2 mm voxel: never empty
    rows0, cen0, cog0 = _centres_and_centroids(make_task("localisation", n, 0, tmp_path / "zero", size=size, offset_mm=0.0))
    assert (cen0 == size // 2).all() and (np.abs(cog0 - size // 2) <= 3).all()
    assert [r["nodule_id"] for r in rows0] == [r["nodule_id"] for r in rows]  # only the position differs


def test_nodules_default_is_unchanged_by_the_offset_option(tmp_path):
    """The nodules set is byte-identical to the one generated before random offsets existed (no new
    columns, same arrays): pinned hashes of a 4-case set."""
    man = make_task("nodules", 4, 0, tmp_path / "n", size=32)
    assert "center_x" not in read_manifest(man)[0]
    h = hashlib.sha256()
    for r in read_manifest(man):
        for col in ("image", "mask"):
            h.update(np.asarray(nib.load(man.parent / r[col]).dataobj).tobytes())
    assert hashlib.sha256(man.read_bytes()).hexdigest() == "215b6b9ad3ee2be60e258da31d8dd8c585d85a78aa2a09e1ad29d297d04e515d"
    assert h.hexdigest() == "8a10f24ba60a193b55ad165694cf9d3dc1f162c98cc8318e50115075f488cac4"
    with pytest.raises(SmartError, match="offset_mm"):
        make_task("nodules", 2, 0, tmp_path / "x", offset_mm=10.0)  # the nodules task keeps its centred crops
    with pytest.raises(SmartError, match="offset_mm"):
        make_task("localisation", 2, 0, tmp_path / "y", offset_mm=-1.0)
