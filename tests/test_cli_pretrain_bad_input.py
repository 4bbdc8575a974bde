"""Bad input to ``smart pretrain`` and ``smart export``: one ``error:`` line, exit status 2, ``--out`` left as it was.

Each test feeds one bad input through :func:`smartlib.cli.main` and checks the exit code, that stderr holds
exactly one line naming the value or file, and (with the ``snapshot`` fixture) that nothing was written —
in particular no phantom data set was generated and no model was built. The last tests check that a
pretraining that failed before its first checkpoint does not block the retry in the same ``--out``.
"""
from __future__ import annotations

import json

import pytest
import torch

from smartlib.cli import main

SMOKE = ["pretrain", "--preset", "smoke", "--no-progress"]
#: one step of 32³ crops on the 4 built-in smoke phantoms
QUICK = ["--set", "img_size=32", "--set", "max_steps=1"]


def _cli(argv, capsys):
    """(exit status, stderr lines): every line, so a second line or a traceback is caught."""
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


# --------------------------------------------------------------------------------------------- 1. config values
def _cuda_value() -> tuple[str, str]:
    if torch.cuda.is_available():
        return "cuda:99", f"this machine has {torch.cuda.device_count()} CUDA device"
    return "cuda", "device='cuda': no CUDA device on this machine"


@pytest.mark.parametrize("item,words", [("max_steps=-5", ("max_steps=-5", "≥ 0")), ("num_workers=-1", ("num_workers=-1", "≥ 0")),
                                        ("log_every=0", ("log_every=0", "≥ 1")),
                                        ("device=tpu", ("device='tpu'", "auto, cpu, cuda or cuda:N")),
                                        ("device=cuda:one", ("device='cuda:one'",)), ("cuda", None)])
def test_pretrain_bad_config_value(tmp_path, capsys, snapshot, item, words):
    if item == "cuda":
        value, why = _cuda_value()
        item, words = f"device={value}", (why,)
    out = tmp_path / "run"
    snap = snapshot(tmp_path)
    rc, err = _cli([*SMOKE, "--out", out, "--set", item], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], (w, err[0])
    snap.assert_unchanged()  # no run folder, and no phantom set generated beside it
    assert not out.exists()


# --------------------------------------------------------------------------------------------- 2. --out of pretrain
def test_pretrain_out_is_a_file_below_a_file_or_unwritable(tmp_path, capsys, snapshot):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    snap = snapshot(tmp_path)
    rc, err = _cli([*SMOKE, "--out", f], capsys)
    assert rc == 2 and len(err) == 1 and "notes.txt" in err[0] and "not a folder" in err[0], err
    rc, err = _cli([*SMOKE, "--out", f / "run"], capsys)
    assert rc == 2 and len(err) == 1 and str(f / "run") in err[0] and "is a file" in err[0], err
    rc, err = _cli([*SMOKE, "--out", "/proc/self/smart-run"], capsys)  # a folder no process can write in
    assert rc == 2 and len(err) == 1 and "/proc/self/smart-run" in err[0] and "cannot write" in err[0], err
    rc, err = _cli([*SMOKE, "--out", f, "--resume"], capsys)
    assert rc == 2 and len(err) == 1 and "not a folder" in err[0], err
    snap.assert_unchanged()
    assert f.read_text() == "keep me"


# --------------------------------------------------------------------------------------------- 2. --out of export
@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run folder as `smart pretrain` leaves it (config.json, checkpoint.pt), with untrained smoke weights."""
    from smartlib.config import pretrain_config
    from smartlib.io import save_torch, write_json
    from smartlib.models.smart import SMARTNet

    run = tmp_path_factory.mktemp("fake") / "run"
    cfg = pretrain_config("smoke", {"img_size": 32})
    torch.manual_seed(0)
    net = SMARTNet(**cfg.model_kwargs())
    write_json(run / "config.json", cfg.to_dict())
    save_torch({"step": 0, "teacher": net.state_dict(), "student": net.state_dict()}, run / "checkpoint.pt")
    return run


@pytest.mark.parametrize("fmt", ["smart", "swinunetr"])
def test_export_out_is_a_folder_below_a_file_or_unwritable(tmp_path, capsys, snapshot, fake_run, fmt):
    folder = tmp_path / "exports"
    folder.mkdir()
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    snap = snapshot(tmp_path)
    run_snap = snapshot(fake_run)
    cmd = ["export", fake_run, "--format", fmt, "--out"]
    rc, err = _cli([*cmd, folder], capsys)
    assert rc == 2 and len(err) == 1 and str(folder) in err[0] and "is a folder" in err[0], err
    rc, err = _cli([*cmd, f / "enc.pt"], capsys)
    assert rc == 2 and len(err) == 1 and str(f / "enc.pt") in err[0] and "is a file" in err[0], err
    rc, err = _cli([*cmd, "/proc/self/enc.pt"], capsys)
    assert rc == 2 and len(err) == 1 and "/proc/self" in err[0] and "cannot write" in err[0], err
    snap.assert_unchanged()
    run_snap.assert_unchanged()
    # an existing file is a file path: it is replaced (atomically), and a new subfolder is created
    rc, _ = _cli([*cmd, f], capsys)
    assert rc == 0 and f.read_bytes() != b"keep me"
    rc, _ = _cli([*cmd, folder / "new" / "enc.pt"], capsys)
    assert rc == 0 and (folder / "new" / "enc.pt").is_file()


def test_export_prefix_needs_the_swinunetr_format_and_a_dot(tmp_path, capsys, snapshot, fake_run):
    snap = snapshot(tmp_path)
    out = tmp_path / "enc.pt"
    rc, err = _cli(["export", fake_run, "--out", out, "--prefix", "swinViT."], capsys)
    assert rc == 2 and len(err) == 1 and "--prefix 'swinViT.'" in err[0] and "--format swinunetr" in err[0], err
    rc, err = _cli(["export", fake_run, "--out", out, "--format", "swinunetr", "--prefix", "swinViT"], capsys)
    assert rc == 2 and len(err) == 1 and "--prefix 'swinViT'" in err[0] and "must end with '.'" in err[0], err
    rc, err = _cli(["export", fake_run, "--out", out, "--format", "monai"], capsys)
    assert rc == 2 and len(err) == 1 and "monai" in err[0], err
    snap.assert_unchanged()


def test_vit_run_cannot_be_exported_as_swinunetr(tmp_path, capsys, snapshot):
    from smartlib.config import pretrain_config
    from smartlib.io import write_json

    run = tmp_path / "vit_run"
    cfg = pretrain_config("smoke", {"arch": "vit", "img_size": 32, "vit_hidden": 48, "vit_layers": 1, "vit_heads": 2,
                                    "sa_heads": 4})
    write_json(run / "config.json", cfg.to_dict())
    snap = snapshot(tmp_path)
    rc, err = _cli(["export", run, "--out", tmp_path / "enc.pt", "--format", "swinunetr"], capsys)
    assert rc == 2 and len(err) == 1 and "vit_run" in err[0] and "vit run cannot be exported as swinunetr" in err[0], err
    snap.assert_unchanged()


def test_export_of_a_folder_that_is_no_run(tmp_path, capsys, snapshot):
    (tmp_path / "empty").mkdir()
    snap = snapshot(tmp_path)
    rc, err = _cli(["export", tmp_path / "empty", "--out", tmp_path / "enc.pt", "--format", "swinunetr"], capsys)
    assert rc == 2 and len(err) == 1 and "config.json" in err[0], err
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- 3. failed runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder shared by the tests below, so the built-in phantom set (runs/data) is generated once."""
    return tmp_path_factory.mktemp("runs")


def test_failed_data_resolution_leaves_out_as_it_was_and_the_retry_runs(runs, capsys, snapshot):
    empty = runs / "no_cts"
    empty.mkdir()
    out = runs / "data_retry"
    snap = snapshot(runs)
    rc, err = _cli([*SMOKE, "--out", out, "--data", empty, *QUICK], capsys)
    assert rc == 2 and len(err) == 1 and str(empty) in err[0], err
    snap.assert_unchanged()
    assert not out.exists()
    rc, err = _cli([*SMOKE, "--out", out, *QUICK], capsys)  # the same --out, now with good data
    assert rc == 0, err
    assert (out / "checkpoint.pt").is_file() and (out / "encoder.pt").is_file()
    assert json.loads((out / "config.json").read_text())["data"] == "phantom"


def test_crash_before_the_first_checkpoint_does_not_block_the_retry(runs, capsys, monkeypatch, snapshot):
    import smartlib.pretrain
    from smartlib.variants import variant_config

    out = runs / "crash_retry"

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    with monkeypatch.context() as m:
        m.setattr(smartlib.pretrain, "smart_step", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            smartlib.pretrain.pretrain(variant_config("smart", "smoke", {"img_size": 32, "max_steps": 1, "lr": 0.1}), out,
                                       progress=False, log=lambda s: None)
    # what a crash leaves: the run's config and (empty) metrics, no checkpoint
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.jsonl"}
    (out / "metrics.jsonl").write_text('{"step": 0, "loss": 99.0}\n{"step": 0, "lo')  # as if killed mid-line
    rc, err = _cli([*SMOKE, "--out", out, *QUICK], capsys)  # another lr: the stale config.json is replaced
    assert rc == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == variant_config("smart", "smoke").lr != 0.1
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0] and rows[0]["loss"] != 99.0
    # now the folder holds a run: a second start without --resume is refused, and changes nothing
    snap = snapshot(out)
    rc, err = _cli([*SMOKE, "--out", out, *QUICK], capsys)
    assert rc == 2 and len(err) == 1 and "a run already exists here" in err[0], err
    snap.assert_unchanged()
