"""Split logic (no patient in two splits), label fractions, strict checkpoint loading, bad input via the CLI."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from smartlib.cli import main
from smartlib.downstream.data import label_fraction_indices, split_indices
from smartlib.errors import SmartError


def _records(n_patients, per=(1, 3), seed=0, split=None):
    rng = np.random.default_rng(seed)
    recs = []
    for p in range(n_patients):
        for _ in range(rng.integers(per[0], per[1] + 1)):
            recs.append({"patient_id": f"P{p}", "label": int(rng.integers(0, 2)), "split": split})
    return recs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assigned_splits_keep_patients_together(seed):
    recs = _records(30, seed=seed)
    sp = split_indices(recs, "x", fractions=(0.6, 0.2, 0.2), seed=seed)
    owner = {}
    for name, idx in sp.items():
        for i in idx:
            assert owner.setdefault(recs[i]["patient_id"], name) == name
    assert sorted(np.concatenate(list(sp.values())).tolist()) == list(range(len(recs)))
    assert all(len(sp[k]) for k in ("train", "val", "test"))
    again = split_indices(recs, "x", fractions=(0.6, 0.2, 0.2), seed=seed)
    assert all((again[k] == sp[k]).all() for k in sp)


def test_given_split_is_used_and_leaks_are_errors():
    recs = [{"patient_id": "A", "split": "train"}, {"patient_id": "B", "split": "test"}, {"patient_id": "C", "split": "train"}]
    sp = split_indices(recs, "m.csv")
    assert sp["train"].tolist() == [0, 2] and sp["test"].tolist() == [1]
    recs.append({"patient_id": "A", "split": "test"})
    with pytest.raises(SmartError, match="patient A appears in both"):
        split_indices(recs, "m.csv")


def test_empty_split_is_an_error():
    with pytest.raises(SmartError, match="test split is empty"):
        split_indices([{"patient_id": "only", "split": None}] * 3, "m.csv")


def test_label_fraction_keeps_whole_patients_and_both_classes():
    recs = _records(40, seed=5)
    labels = [r["label"] for r in recs]
    pats = [r["patient_id"] for r in recs]
    train = np.arange(len(recs))
    for f in (0.1, 0.25, 0.5):
        keep = label_fraction_indices(train, labels, pats, f, seed=3)
        kept_p = {pats[i] for i in keep}
        assert all(pats[i] not in kept_p for i in set(train) - set(keep))  # whole patients
        assert set(labels[i] for i in keep) == {0, 1}
        assert abs(len(kept_p) - f * 40) <= 2
    assert label_fraction_indices(train, labels, pats, 1.0).tolist() == train.tolist()
    a = label_fraction_indices(train, labels, pats, 0.25, seed=1)
    assert a.tolist() == label_fraction_indices(train, labels, pats, 0.25, seed=1).tolist()
    assert a.tolist() != label_fraction_indices(train, labels, pats, 0.25, seed=2).tolist()


@pytest.mark.parametrize("bad", [0, -0.5, 1.01, float("nan"), "x"])
def test_bad_fraction(bad):
    with pytest.raises(SmartError, match="label fraction"):
        label_fraction_indices(np.arange(4), [0, 1, 0, 1], list("abcd"), bad)


# ------------------------------------------------------------------ strict checkpoint loading
@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from smartlib.config import pretrain_config
    from smartlib.models.smart import SMARTNet, export_encoder

    torch.manual_seed(1234)  # not the seed build_swinunetr draws its own weights with: a no-op load must fail
    net = SMARTNet(heads=False, **pretrain_config("smoke").model_kwargs())
    return export_encoder(net, tmp_path_factory.mktemp("enc") / "encoder.pt")


def test_swinunetr_encoder_loads_strictly(export):
    from smartlib.downstream.segment import build_swinunetr
    from smartlib.io import load_torch

    model = build_swinunetr(str(export), "smoke", 32)
    blob = load_torch(export)
    sd = model.swinViT.state_dict()
    assert set(sd) == set(blob["encoder"])
    assert all(torch.equal(sd[k], blob["encoder"][k]) for k in sd)
    # perturbation: the scratch model differs from the export in every weight matrix, so the equality above
    # holds only because the weights were loaded
    scratch = build_swinunetr("scratch", "smoke", 32).swinViT.state_dict()
    weights = [k for k in sd if k.endswith("weight") and "norm" not in k]  # norms start at 1 in both
    assert weights and not any(torch.equal(scratch[k], blob["encoder"][k]) for k in weights)


def test_swinunetr_no_op_load_is_caught(export, monkeypatch):
    """The strict-load check itself must fail when ``load_state_dict`` silently loads nothing."""
    import torch.nn as nn

    from smartlib.downstream.segment import build_swinunetr
    from smartlib.io import load_torch

    monkeypatch.setattr(nn.Module, "load_state_dict", lambda self, sd, strict=True, assign=False: None)
    sd = build_swinunetr(str(export), "smoke", 32).swinViT.state_dict()
    blob = load_torch(export)
    assert not all(torch.equal(sd[k], blob["encoder"][k]) for k in sd)


@pytest.mark.parametrize("tamper", ["missing", "extra", "shape", "arch"])
def test_swinunetr_mismatch_is_an_error(export, tmp_path, tamper):
    from smartlib.downstream.segment import build_swinunetr
    from smartlib.io import load_torch, save_torch

    blob = load_torch(export)
    key = next(iter(blob["encoder"]))
    if tamper == "missing":
        blob["encoder"].pop(key)
    elif tamper == "extra":
        blob["encoder"]["layers1.0.blocks.9.attn.qkv.weight"] = torch.zeros(3)
    elif tamper == "shape":
        blob["encoder"][key] = torch.zeros(1)
    else:  # weights of embed 12 declared as embed 24: another architecture
        blob["model"]["embed_dim"] = 24
    bad = save_torch(blob, tmp_path / "bad.pt")
    with pytest.raises(SmartError, match="bad.pt"):
        build_swinunetr(str(bad), "smoke", 32)


def test_not_an_export_is_rejected_early(tmp_path):
    from smartlib.downstream.features import resolve_init

    p = tmp_path / "raw.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(SmartError, match="not an encoder export"):
        resolve_init(str(p), "smoke", tmp_path)


# ------------------------------------------------------------------ CLI bad input: one line, exit 2, nothing written
def _cli(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_cli_bad_fraction(tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = _cli(["finetune", "--task", "nodules", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                    "--label-fraction", "1.5"], capsys)
    assert rc == 2 and len(err) == 1 and "label fraction" in err[0]
    assert not out.exists()


def test_cli_bad_checkpoint(tmp_path, capsys):
    p = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, p)
    out = tmp_path / "out"
    rc, err = _cli(["finetune", "--task", "segmentation", "--init", str(p), "--preset", "smoke", "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "other.pt" in err[0]
    assert not out.exists()


def test_cli_labels_outside_classes(tmp_path, capsys, write_nifti, write_manifest, ct_volume):
    rows = []
    for i in range(4):
        write_nifti(tmp_path / f"im{i}.nii.gz", ct_volume)
        rows.append({"image": f"im{i}.nii.gz", "label": [0, 1, 2, 1][i], "patient_id": f"P{i}"})
    m = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    rc, err = _cli(["finetune", "--task", "nodules", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                    "--data", str(m)], capsys)
    assert rc == 2 and len(err) == 1 and "outside the declared classes" in err[0]
    assert not out.exists()


def test_cli_empty_split(tmp_path, capsys, write_nifti, write_manifest, ct_volume):
    rows = []
    for i in range(3):
        write_nifti(tmp_path / f"im{i}.nii.gz", ct_volume)
        rows.append({"image": f"im{i}.nii.gz", "label": i % 2, "patient_id": "same"})
    m = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    rc, err = _cli(["finetune", "--task", "response", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                    "--data", str(m)], capsys)
    assert rc == 2 and len(err) == 1 and "split is empty" in err[0]
    assert not out.exists()
