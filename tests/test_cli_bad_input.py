"""Bad input and rough edges at the command line: one ``error:`` line, exit status 2, ``--out`` left as it was.

Each test feeds one bad input to ``smart`` and checks the exit code, that stderr holds exactly one line
naming the value or file, and that nothing was written.
"""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from smartlib.cli import main
from smartlib.errors import SmartError


def _cli(argv, capsys):
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error")]
    return rc, err


FT = ["finetune", "--task", "nodules", "--init", "scratch", "--preset", "smoke"]
CL = ["evaluate", "clusters", "--init", "scratch", "--preset", "smoke"]


@pytest.mark.parametrize("cmd", [FT, CL], ids=["finetune", "clusters"])
def test_out_is_an_existing_file(tmp_path, capsys, snapshot, cmd):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    snap = snapshot(tmp_path)
    rc, err = _cli([*cmd, "--out", str(f)], capsys)
    assert rc == 2 and len(err) == 1 and "results.txt" in err[0] and "not a folder" in err[0]
    snap.assert_unchanged()


@pytest.mark.parametrize("cmd", [FT, CL], ids=["finetune", "clusters"])
def test_out_below_a_file_or_unwritable(tmp_path, capsys, snapshot, cmd):
    f = tmp_path / "file"
    f.write_text("x")
    snap = snapshot(tmp_path)
    rc, err = _cli([*cmd, "--out", str(f / "sub" / "out")], capsys)
    assert rc == 2 and len(err) == 1 and "is a file" in err[0]
    rc, err = _cli([*cmd, "--out", "/proc/self/smart-out"], capsys)  # a folder no process can write in
    assert rc == 2 and len(err) == 1 and "cannot write" in err[0]
    snap.assert_unchanged()


@pytest.mark.parametrize("arg,value,words", [("--spacing", "abc", "not a number"), ("--spacing", "-2", "positive"),
                                             ("--seed", "-4", "must be ≥ 0"), ("--seed", "x", "not an integer"),
                                             ("--n", "0", "must be ≥ 1"), ("--roi", "16", "must be ≥ 32"),
                                             ("--label-fraction", "2", "label fraction")])
def test_bad_values_are_one_line(tmp_path, capsys, arg, value, words):
    out = tmp_path / "out"
    rc, err = _cli([*FT, "--out", str(out), arg, value], capsys)
    assert rc == 2 and len(err) == 1 and arg in err[0] and words in err[0], err
    assert not out.exists()


def test_pickle_payload_is_one_short_line(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    p = tmp_path / "evil.pt"
    torch.save({"encoder": Payload()}, p)
    out = tmp_path / "out"
    rc, err = _cli([*FT, "--init", str(p), "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1 and "evil.pt" in err[0] and "not a plain-tensor checkpoint" in err[0]
    assert len(err[0]) < 200 and "weights_only" not in err[0]
    assert not (tmp_path / "pwned").exists() and not out.exists()


def test_weight_mismatch_names_the_keys(tmp_path):
    from smartlib.config import pretrain_config
    from smartlib.downstream.segment import build_swinunetr
    from smartlib.io import load_torch, save_torch
    from smartlib.models.smart import SMARTNet, export_encoder

    enc = export_encoder(SMARTNet(heads=False, **pretrain_config("smoke").model_kwargs()), tmp_path / "e.pt")
    blob = load_torch(enc)
    for k in [k for k in blob["encoder"] if k.startswith("layers4")]:
        blob["encoder"].pop(k)
    blob["encoder"]["head.extra"] = torch.zeros(1)
    save_torch(blob, tmp_path / "bad.pt")
    with pytest.raises(SmartError) as e:
        build_swinunetr(str(tmp_path / "bad.pt"), "smoke", 32)
    msg = str(e.value)
    assert "missing layers4.0." in msg and "in all)" in msg and "unexpected head.extra" in msg


def test_undefined_auc_is_null_with_a_reason(tmp_path, capsys, write_medmnist):
    npz = write_medmnist(tmp_path / "nodulemnist3d.npz", side=28, n=(8, 2, 4), n_classes=2,
                         test_labels=np.zeros((4, 1), np.uint8))
    out = tmp_path / "out"
    assert main([*FT, "--out", str(out), "--data", str(npz), "--n-boot", "20"]) == 0
    text = (out / "summary.json").read_text()

    def no_nan(c):
        raise AssertionError(f"bare {c} in summary.json")

    run = json.loads(text, parse_constant=no_nan)["runs"][0]
    assert run["auc"] is None and run["auc_note"] == "AUC undefined: only class 0 in the test split"
    assert "AUC undefined" in capsys.readouterr().out


def test_atomic_files_respect_the_umask(tmp_path):
    from smartlib.io import write_json

    old = os.umask(0o022)
    try:
        p = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_interrupt_prints_how_to_resume(tmp_path, capsys, monkeypatch):
    import smartlib.pretrain

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(smartlib.pretrain, "pretrain", interrupted)
    rc = main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1 and f"smart pretrain --preset smoke --out {tmp_path / 'run'} --resume" in err[0]


def test_finetune_shows_progress(tmp_path, capsys, labelled_set):
    out = tmp_path / "ft"
    assert main([*FT[:2], "response", *FT[3:], "--out", str(out), "--data", str(labelled_set), "--mode", "finetune",
                 "--epochs", "1", "--n-boot", "10"]) == 0
    assert "fine-tuning" in capsys.readouterr().err


@pytest.mark.parametrize("splits,words", [(["train", "trian", "test", "test"], "split 'trian' is not one of"),
                                          (["train", "train", "train", "train"], "the test split is empty"),
                                          (["train", "", "test", "test"], "have no split")])
def test_declared_splits_are_used_or_refused(tmp_path, capsys, snapshot, write_nifti, write_manifest, ct_volume,
                                             splits, words):
    rows = []
    for i, sp in enumerate(splits):
        write_nifti(tmp_path / f"im{i}.nii.gz", ct_volume)
        rows.append({"image": f"im{i}.nii.gz", "label": i % 2, "patient_id": f"P{i}", "split": sp})
    m = write_manifest(tmp_path / "m.csv", rows)
    snap = snapshot(tmp_path)
    rc, err = _cli([*FT[:2], "response", *FT[3:], "--out", str(tmp_path / "out"), "--data", str(m)], capsys)
    assert rc == 2 and len(err) == 1 and "m.csv" in err[0] and words in err[0], err
    snap.assert_unchanged()


def _pretrain_folder(tmp_path, write_nifti, n_good=4, truncate=True, tiny=False):
    folder = tmp_path / "cts"
    rng = np.random.default_rng(0)
    for i in range(n_good):
        write_nifti(folder / f"ct{i}.nii.gz", rng.normal(0, 100, (40, 40, 40)).astype(np.float32), spacing=(2.0, 2.0, 2.0))
    if truncate:
        good = (folder / "ct0.nii.gz").read_bytes()
        (folder / "broken.nii.gz").write_bytes(good[: len(good) // 2])
    if tiny:
        write_nifti(folder / "tiny.nii.gz", rng.normal(0, 100, (16, 16, 5)).astype(np.float32), spacing=(2.0, 2.0, 2.0))
    return folder


def test_pretraining_checks_every_volume_before_the_first_step(tmp_path, capsys, snapshot, write_nifti):
    folder = _pretrain_folder(tmp_path, write_nifti)
    out = tmp_path / "run"
    snap = snapshot(tmp_path)
    rc, err = _cli(["pretrain", "--preset", "smoke", "--data", str(folder), "--out", str(out), "--no-progress"], capsys)
    assert rc == 2 and len(err) == 1 and "broken.nii.gz" in err[0] and "--skip-bad" in err[0], err
    snap.assert_unchanged()


def test_skip_bad_excludes_with_a_listed_warning(tmp_path, capsys, write_nifti):
    folder = _pretrain_folder(tmp_path, write_nifti, tiny=True)
    out = tmp_path / "run"
    rc = main(["pretrain", "--preset", "smoke", "--data", str(folder), "--out", str(out), "--no-progress", "--skip-bad",
               "--set", "max_steps=1"])
    text = capsys.readouterr()
    assert rc == 0 and (out / "encoder.pt").is_file()
    lines = (text.out + text.err).splitlines()
    assert any("skipped" in ln and "broken.nii.gz" in ln for ln in lines)
    assert any(ln.startswith("warning") and "tiny.nii.gz" in ln for ln in lines)  # far smaller than the crop: kept, warned


def test_export_mismatch_names_the_keys_at_the_cli(tmp_path, capsys, snapshot):
    from smartlib.config import pretrain_config
    from smartlib.io import load_torch, save_torch
    from smartlib.models.smart import SMARTNet, export_encoder

    enc = export_encoder(SMARTNet(heads=False, **pretrain_config("smoke").model_kwargs()), tmp_path / "e.pt")
    blob = load_torch(enc)
    blob["encoder"].pop("layers2.0.blocks.0.attn.qkv.weight")
    blob["encoder"]["layers2.0.blocks.0.attn.qkv.extra"] = torch.zeros(2)
    save_torch(blob, tmp_path / "bad.pt")
    snap = snapshot(tmp_path)
    rc, err = _cli([*FT, "--init", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and len(err) == 1 and "bad.pt" in err[0]
    assert "missing layers2.0.blocks.0.attn.qkv.weight" in err[0] and "unexpected layers2.0.blocks.0.attn.qkv.extra" in err[0]
    snap.assert_unchanged()


def test_written_files_respect_the_umask_at_the_cli(tmp_path, write_medmnist):
    npz = write_medmnist(tmp_path / "nodulemnist3d.npz", side=28, n=(8, 2, 4), n_classes=2)
    old = os.umask(0o022)
    try:
        assert main([*FT, "--out", str(tmp_path / "out"), "--data", str(npz), "--n-boot", "20"]) == 0
    finally:
        os.umask(old)
    for f in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
