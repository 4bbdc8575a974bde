"""Findings phantoms, digitally reconstructed radiographs, and the ChestX-ray14 / CheXpert / manifest readers.

DRR line integrals are checked against sums written out by hand on tiny volumes; the readers run on tiny
copies of the published layouts written here, with every bad input of the issue.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import raises_smart
from PIL import Image

from smartlib.data import cxr
from smartlib.data.drr import MU_WATER, drr, hu_to_mu, line_integral, project_mask, to_radiograph_view, to_uint8
from smartlib.data.findings import (CXR14_COUNTS, FINDINGS, MIN_VOXELS, make_findings_case, pack_masks, prevalences,
                                    unpack_masks)


# ----------------------------------------------------------------------------------------------------- DRR
def test_line_integral_by_hand():
    hu = np.array([[[-1000.0, 0.0], [1000.0, -500.0], [0.0, 0.0]],
                   [[0.0, -2000.0], [0.0, 0.0], [500.0, 0.0]]])  # (X=2, Y=3, Z=2)
    sp = (1.0, 2.5, 4.0)
    mu = MU_WATER
    # Σ over Y of μ·Δy, μ = μw (1 + HU/1000) clipped at 0: written out cell by cell
    want = np.array([[(0 + 2 * mu + mu) * 2.5, (mu + 0.5 * mu + mu) * 2.5],
                     [(mu + mu + 1.5 * mu) * 2.5, (0 + mu + mu) * 2.5]])
    assert np.allclose(line_integral(hu, sp), want)
    assert np.allclose(hu_to_mu(np.array([-1000.0, -3000.0, 0.0, 1000.0])), [0, 0, mu, 2 * mu])
    raises_smart(line_integral, hu, (1.0, 0.0, 1.0), words=["spacing"])
    raises_smart(line_integral, hu[0], sp, words=["3-D"])
    raises_smart(hu_to_mu, hu, mu_water=-1, words=["mu_water"])


def test_radiograph_view_orientation():
    """Row 0 is the most superior Z, column 0 the patient's right (the highest X of a RAS+ array)."""
    vol = np.full((4, 3, 5), -1000.0)
    vol[3, 1, 4] = 1000.0  # patient's right (X max), top (Z max)
    vol[0, 0, 0] = 0.0     # patient's left, bottom
    img = drr(vol, (1.0, 1.0, 1.0))
    assert img.shape == (5, 4)
    assert img[0, 0] == pytest.approx(2 * MU_WATER) and img[4, 3] == pytest.approx(MU_WATER)
    assert np.count_nonzero(img) == 2
    stack = to_radiograph_view(np.arange(2 * 4 * 5).reshape(2, 4, 5))
    assert stack.shape == (2, 5, 4) and stack[1, 0, 0] == 20 + 3 * 5 + 4


def test_mask_projection():
    m = np.zeros((3, 4, 2), bool)
    m[1, 3, 0] = True  # any voxel along Y marks its pixel
    m[2, 0, 1] = True
    p = project_mask(m)
    assert p.shape == (3, 2) and p[1, 0] and p[2, 1] and p.sum() == 2
    assert to_radiograph_view(p)[0, 0] and to_radiograph_view(p)[1, 1]  # (X 2, Z 1) → row 0, col 0


def test_uint8_display_is_fixed_scale():
    assert to_uint8(np.array([0.0, 1.0, 2.0, 4.0]), 2.0).tolist() == [0, 128, 255, 255]
    raises_smart(to_uint8, np.zeros(2), 0.0, words=["full_scale"])


def test_masks_pack_and_unpack():
    m = np.zeros((6, 2, 3), bool)
    m[0, 0, 0] = m[5, 0, 0] = m[2, 1, 2] = True
    p = pack_masks(m)
    assert p[0, 0] == 1 + 32 and p[1, 2] == 4 and p.dtype == np.uint8
    assert np.array_equal(unpack_masks(p), m)
    raises_smart(unpack_masks, np.array([64]), 6, words=["0..63"])
    raises_smart(pack_masks, np.zeros((9, 2), bool), words=["K ≤ 8"])


# ----------------------------------------------------------------------------------------------------- findings
def test_prevalences_keep_chestxray14_ratios():
    p = prevalences(2.5)
    assert list(p) == list(FINDINGS)
    assert p["effusion"] / p["cardiomegaly"] == pytest.approx(CXR14_COUNTS["effusion"] / CXR14_COUNTS["cardiomegaly"])
    assert p["effusion"] == pytest.approx(2.5 * 13317 / 112120)
    raises_smart(prevalences, 0.0, words=["prevalence_scale"])
    raises_smart(prevalences, 10.0, words=["above 1"])


@pytest.fixture(scope="module")
def all_findings():
    return make_findings_case(3, labels=[1] * 6), make_findings_case(3, labels=[0] * 6)


def test_every_drawn_finding_has_its_mask(all_findings):
    sick, healthy = all_findings
    assert sick.labels.tolist() == [1] * 6 and healthy.labels.tolist() == [0] * 6
    assert all(sick.masks[k].sum() >= MIN_VOXELS for k in range(6)) and not healthy.masks.any()
    i = {f: k for k, f in enumerate(FINDINGS)}
    # the anatomy is the seed's: outside the findings (and the enlarged heart) the two volumes match before noise
    assert sick.meta["heart_factor"] > 1.25 and healthy.meta["heart_factor"] == 1.0
    # findings are what was painted: air in the pneumothorax, fluid-like HU in the effusion, tissue in consolidation
    assert np.median(sick.image[sick.masks[i["pneumothorax"]]]) < -900
    assert -60 < np.median(sick.image[sick.masks[i["effusion"]]]) < 80
    assert np.median(sick.image[sick.masks[i["consolidation"]]]) > -200
    # the enlarged heart is much larger than the same subject's normal heart (radii × 1.30–1.45)
    from smartlib.data.phantom.anatomy import ORGAN_LABEL

    heart = ORGAN_LABEL["heart"]
    assert np.array_equal(sick.masks[i["cardiomegaly"]], sick.organs == heart)
    assert (sick.organs == heart).sum() > 1.8 * (healthy.organs == heart).sum()
    # a mass is larger than a nodule; the lung findings' masks never overlap (a later one takes the voxels)
    assert sick.masks[i["mass"]].sum() > sick.masks[i["nodule"]].sum()
    lung_findings = sick.masks[[i[f] for f in ("effusion", "nodule", "mass", "pneumothorax", "consolidation")]]
    assert lung_findings.sum(axis=0).max() == 1


def test_findings_are_deterministic_and_drawn_from_the_seed():
    a, b = make_findings_case(11), make_findings_case(11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    raises_smart(make_findings_case, 0, labels=[1, 0], words=["6 values"])


# ----------------------------------------------------------------------------------------------------- readers
def _png(path: Path, value: int = 100, size: int = 8, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size, size), value, np.uint8)
    Image.fromarray(a).convert(mode).save(path)


def _cxr14(root: Path, rows, train, test, images=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "Data_Entry_2017.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age"])
        for name, labels, pid in rows:
            w.writerow([name, labels, 0, pid, 50])
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    for name in (images if images is not None else [r[0] for r in rows]):
        _png(root / "images_001" / "images" / name)
    return root


ROWS = [("a_000.png", "Effusion|Mass", "1"), ("a_001.png", "No Finding", "1"), ("b_000.png", "Cardiomegaly", "2"),
        ("c_000.png", "Effusion", "3"), ("d_000.png", "No Finding", "4"), ("e_000.png", "Mass", "5")]


def test_chestxray14_reads_the_official_layout(tmp_path):
    root = _cxr14(tmp_path / "cxr14", ROWS, ["a_000.png", "a_001.png", "b_000.png", "c_000.png"], ["d_000.png", "e_000.png"])
    r = cxr.read_chestxray14(root, labels=["Effusion", "Mass", "Cardiomegaly"], val_fraction=0.34, seed=0)
    assert r.label_names == ("Effusion", "Mass", "Cardiomegaly") and r.dims == 2
    assert r.labels.tolist()[:3] == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert r.splits[4:] == ["test", "test"] and set(r.splits[:4]) == {"train", "val"}
    assert r.splits[0] == r.splits[1]  # one patient, one split
    assert all(p.is_file() for p in r.images)
    x = cxr.load_radiographs(r.images, 4)
    assert x.shape == (6, 1, 4, 4) and torch.allclose(x, torch.full_like(x, 100 / 255))


@pytest.mark.parametrize("case,words", [
    ("unknown finding", ["line 3", "Pneumonitis", "not a ChestX-ray14 label"]),
    ("missing image", ["test_list.txt", "missing", "e_000.png"]),
    ("patient in both splits", ["patient 1", "both"]),
    ("image in both lists", ["d_000.png", "both"]),
    ("unknown list entry", ["test_list.txt", "not in Data_Entry_2017.csv", "zz.png"]),
    ("label not in set", ["Pneumonitis", "is not one"]),
    ("missing column", ["Patient ID"]),
])
def test_chestxray14_bad_input(tmp_path, case, words):
    rows, train, test, images, labels = list(ROWS), ["a_000.png", "a_001.png", "b_000.png", "c_000.png"], ["d_000.png", "e_000.png"], None, None
    if case == "unknown finding":
        rows[1] = ("a_001.png", "Pneumonitis", "1")
    elif case == "missing image":
        images = [r[0] for r in ROWS if r[0] != "e_000.png"]
    elif case == "patient in both splits":
        train, test = ["a_000.png", "b_000.png", "c_000.png"], ["a_001.png", "d_000.png", "e_000.png"]
    elif case == "image in both lists":
        train = train + ["d_000.png"]
    elif case == "unknown list entry":
        test = test + ["zz.png"]
    elif case == "label not in set":
        labels = ["Effusion", "Pneumonitis"]
    root = _cxr14(tmp_path / "cxr14", rows, train, test, images)
    if case == "missing column":
        text = (root / "Data_Entry_2017.csv").read_text().replace("Patient ID", "Patient")
        (root / "Data_Entry_2017.csv").write_text(text)
    raises_smart(cxr.read_chestxray14, root, labels, words=words)


def _chexpert(root: Path, train_rows, valid_rows, skip=()) -> Path:
    base = root / "CheXpert-v1.0-small"
    cols = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *cxr.CHEXPERT_LABELS]
    for fname, rows in (("train.csv", train_rows), ("valid.csv", valid_rows)):
        base.mkdir(parents=True, exist_ok=True)
        with open(base / fname, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for path, view, values in rows:
                full = dict.fromkeys(cxr.CHEXPERT_LABELS, "")
                full.update(values)
                w.writerow([path, "Female", 60, view, "AP", *[full[c] for c in cxr.CHEXPERT_LABELS]])
                if path not in skip:
                    _png(root / path, mode="RGB")
    return base


TRAIN = [("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Frontal", {"Cardiomegaly": "1.0", "Edema": "-1.0"}),
         ("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Lateral", {"Cardiomegaly": "1.0"}),
         ("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", "Frontal", {"Pleural Effusion": "0.0"}),
         ("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg", "Frontal", {"Atelectasis": "-1.0", "Edema": "1.0"})]
VALID = [("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Frontal", {"Cardiomegaly": "1.0", "Edema": "0.0"})]


@pytest.mark.parametrize("policy,edema,atelectasis", [("U-Ones", 1.0, 1.0), ("U-Zeros", 0.0, 0.0), ("ignore", None, None)])
def test_chexpert_uncertainty_policies(tmp_path, policy, edema, atelectasis):
    base = _chexpert(tmp_path, TRAIN, VALID)
    r = cxr.read_chexpert(base, policy=policy, val_fraction=0.0)
    assert r.label_names == cxr.CHEXPERT_COMPETITION and len(r.images) == 4  # the lateral view is left out
    lab = {n: r.labels[:, j] for j, n in enumerate(r.label_names)}
    first = r.labels[0]
    assert first[r.label_names.index("Cardiomegaly")] == 1.0 and lab["Pleural Effusion"][1] == 0.0  # blank → 0 too
    got_e, got_a = first[r.label_names.index("Edema")], lab["Atelectasis"][2]
    assert (np.isnan(got_e) and np.isnan(got_a)) if edema is None else (got_e == edema and got_a == atelectasis)
    assert r.splits == ["train", "train", "train", "test"] and r.policy == policy
    assert r.images[0] == base / "train/patient00001/study1/view1_frontal.jpg"


@pytest.mark.parametrize("case,words", [
    ("bad value", ["train.csv line 2", "'Edema'", "'2.0'", "1, 0, -1 or blank"]),
    ("missing label column", ["valid.csv", "'Pleural Effusion'"]),
    ("patient in both files", ["patient00002", "both"]),
    ("missing image", ["missing", "view1_frontal.jpg"]),
    ("bad policy", ["uncertainty policy", "U-Ones"]),
])
def test_chexpert_bad_input(tmp_path, case, words):
    train, valid, skip, policy = [list(t) for t in TRAIN], list(VALID), (), "U-Ones"
    if case == "bad value":
        train[0][2] = {"Edema": "2.0"}
    elif case == "patient in both files":
        valid = valid + [("CheXpert-v1.0-small/valid/patient00002/study2/view1_frontal.jpg", "Frontal", {})]
    elif case == "missing image":
        skip = (TRAIN[3][0],)
    elif case == "bad policy":
        policy = "U-MultiClass"
    base = _chexpert(tmp_path, [tuple(t) for t in train], valid, skip)
    if case == "missing label column":
        text = (base / "valid.csv").read_text().replace("Pleural Effusion", "Effusion")
        (base / "valid.csv").write_text(text)
    raises_smart(cxr.read_chexpert, base, policy=policy, words=words)


def test_manifest_label_columns_must_match(tmp_path):
    _png(tmp_path / "i0.png")
    _png(tmp_path / "i1.png")
    (tmp_path / "m.csv").write_text("image,patient_id,split,effusion,nodule\ni0.png,p0,train,1,0\ni1.png,p1,test,0,\n")
    r = cxr.read_multilabel_manifest(tmp_path / "m.csv", ["effusion", "nodule"], dims=2)
    assert r.labels.tolist() == [[1, 0], [0, 0]] and r.splits == ["train", "test"] and r.masks is None
    raises_smart(cxr.read_multilabel_manifest, tmp_path / "m.csv", ["effusion", "mass"], words=["m.csv", "'mass'"])
    (tmp_path / "m2.csv").write_text("image,patient_id,effusion\ni0.png,p0,1\nnope.png,p1,0\n")
    raises_smart(cxr.read_multilabel_manifest, tmp_path / "m2.csv", ["effusion"], words=["m2.csv", "missing", "nope.png"])
    raises_smart(cxr.read_multilabel, tmp_path, 2, None, words=["not a ChestX-ray14 folder"])


def test_radiograph_loading_bit_depths_and_packed_masks(tmp_path):
    Image.fromarray(np.full((6, 6), 65535 // 2, np.uint16)).save(tmp_path / "a16.png")
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., :3] = 51
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    m = np.zeros((4, 4), np.uint8)
    m[:2, :2] = 5  # bits 0 and 2
    Image.fromarray(m).save(tmp_path / "m.png")
    x = cxr.load_radiographs([tmp_path / "a16.png", tmp_path / "rgba.png"], 3)
    assert x.shape == (2, 1, 3, 3) and torch.allclose(x[0], torch.full((1, 3, 3), 0.5), atol=1e-4)
    assert torch.allclose(x[1], torch.full((1, 3, 3), 0.2))
    mk = cxr.load_radiographs([tmp_path / "m.png"], 8, packed=True)
    assert set(mk.unique().tolist()) == {0.0, 5.0} and mk[0, 0, :4, :4].eq(5).all()
    (tmp_path / "bad.png").write_text("not an image")
    raises_smart(cxr.load_radiographs, [tmp_path / "bad.png"], 4, words=["bad.png", "not a readable image"])


def test_builtin_findings_set(tmp_path):
    """The registered set: CT + radiograph per case, label columns equal to what the masks hold."""
    from smartlib.tasks import builtin_manifest

    m = builtin_manifest("findings", "smoke", tmp_path, n=6)
    with open(m, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all(c in rows[0] for c in ("image", "findings_mask", "drr", "drr_mask", *FINDINGS))
    assert all(r["mask"] == "" for r in rows)  # no single label map: the findings' masks are packed as bits
    for r in rows:
        packed = np.asarray(Image.open(m.parent / r["drr_mask"]))
        assert packed.shape == (64, 64)
        bits = unpack_masks(packed)
        assert [int(r[f]) for f in FINDINGS] == bits.reshape(6, -1).any(axis=1).astype(int).tolist()
        assert np.asarray(Image.open(m.parent / r["drr"])).dtype == np.uint8
