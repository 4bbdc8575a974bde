"""SMART pretraining end to end at the smoke preset (crops shrunk to 32³ where the test is about
bookkeeping, not learning): learning, exact resume after SIGKILL, DDP = one process, NaN stop,
export into MONAI's SwinUNETR, CLI config errors, and the zoo's reuse of a finished run.

One module-scoped run (8 steps through ``zoo.pretrained``) is shared by several tests; the rest
start their own few-step runs. Everything uses the built-in phantom data (4 volumes of 64³).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from smartlib import zoo
from smartlib.cli import main as cli_main
from smartlib.errors import SmartError
from smartlib.io import load_torch, save_torch
from smartlib.models.smart import SMARTNet, load_encoder
from smartlib.pretrain import CHECKPOINT, load_run_config, pretrain

#: 8 steps (4 volumes, batch 2, 4 epochs), checkpoints every 2 steps (smoke), 32³ crops
BASE = {"img_size": 32, "epochs": 4}
CLI_SET = ["--set", "img_size=32", "--set", "epochs=4"]
TIMING = ("step_time", "samples_per_s")
REPO = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def base_run(runs) -> Path:
    """The `smart` variant pretrained through the zoo: 8 complete steps, uninterrupted, in this process."""
    enc = zoo.pretrained("smart", "smoke", runs / "zoo", overrides=BASE, log=lambda s: None)
    return enc.parent


# --------------------------------------------------------------------------------------------- learning
def test_reconstruction_loss_decreases_on_phantoms(base_run):
    rows = _metrics(base_run)
    assert [r["step"] for r in rows] == list(range(8))
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("loss", "amip", "ampd", "aitd", "gitd"))
        assert 0.55 < r["mask_ratio"] < 0.8  # attention masking with hints: ≈ r(1 − s)
    amip = np.array([r["amip"] for r in rows])
    first, last = amip[:3].mean(), amip[-3:].mean()
    assert last < 0.85 * first, f"AMIP did not decrease: first {amip[:3]}, last {amip[-3:]}"
    summary = json.loads((base_run / "summary.json").read_text())
    assert summary["complete"] and summary["steps_done"] == summary["steps_total"] == 8


# --------------------------------------------------------------------------------------------- resume
def test_resume_after_sigkill_is_exact(runs, base_run):
    run = runs / "killed"
    cmd = [sys.executable, "-m", "smartlib.cli", "pretrain", "--preset", "smoke", "--no-progress", "--out", str(run), *CLI_SET]
    proc = subprocess.Popen(cmd, env=_env(), cwd=runs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:  # wait until step 4 is logged: the step-4 checkpoint exists and a later line too
            assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
            assert time.monotonic() < deadline, "no progress within 120 s"
            m = run / "metrics.jsonl"
            if m.exists() and any(json.loads(ln)["step"] >= 4 for ln in m.read_text().splitlines() if ln.endswith("}")):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_torch(run / CHECKPOINT)["step"]
    assert 4 <= killed_at < 8
    assert not (run / "summary.json").exists()

    res = subprocess.run(cmd + ["--resume"], env=_env(), cwd=runs, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]

    a, b = load_torch(base_run / CHECKPOINT), load_torch(run / CHECKPOINT)
    assert a["step"] == b["step"] == 8
    _assert_states_equal(a["student"], b["student"])
    _assert_states_equal(a["teacher"], b["teacher"])
    _assert_states_equal(a["loss"], b["loss"])  # the three DINO centers
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _strip_timing(_metrics(base_run)) == _strip_timing(_metrics(run))
    _assert_states_equal(load_torch(base_run / "encoder.pt")["encoder"], load_torch(run / "encoder.pt")["encoder"])


# --------------------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process(runs):
    sets = {"img_size": 32, "epochs": 4, "max_steps": 3, "drop_path": 0.0}
    ddp = runs / "ddp2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "smartlib.cli", "pretrain", "--preset", "smoke", "--no-progress", "--out", str(ddp)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    env = _env() | {"OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, cwd=runs, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2

    single = pretrain(zoo.variant_config("smart", "smoke", sets), runs / "ddp1", progress=False, log=lambda s: None)
    a, b = load_torch(single / CHECKPOINT), load_torch(ddp / CHECKPOINT)
    assert a["step"] == b["step"] == 3
    init = SMARTNet(**load_run_config(single).model_kwargs()).state_dict()
    moved = max(float((a["student"][k].float() - init[k].float()).abs().max()) for k in init if init[k].is_floating_point())
    assert moved > 1e-3  # the students really trained, so agreement below is not trivial
    for k in a["student"]:
        torch.testing.assert_close(b["student"][k], a["student"][k], atol=1e-4, rtol=1e-3, msg=f"student {k}")
        torch.testing.assert_close(b["teacher"][k], a["teacher"][k], atol=1e-5, rtol=1e-4, msg=f"teacher {k}")
    for k in a["loss"]:
        torch.testing.assert_close(b["loss"][k], a["loss"][k], atol=1e-5, rtol=1e-4, msg=f"center {k}")
    ma, mb = _metrics(single), _metrics(ddp)
    assert [r["step"] for r in ma] == [r["step"] for r in mb] == [0, 1, 2]
    for ra, rb in zip(ma, mb):
        for k in ("loss", "amip", "ampd", "aitd", "gitd", "mask_ratio", "lr", "momentum"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["step"], k)


# --------------------------------------------------------------------------------------------- NaN
def test_nan_loss_stops_and_keeps_last_good_checkpoint(runs, monkeypatch):
    from smartlib.losses import SMARTLoss

    original, calls = SMARTLoss.forward, []

    def poisoned(self, *args, **kwargs):
        loss, terms = original(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), terms) if len(calls) > 3 else (loss, terms)  # step index 3 is bad

    monkeypatch.setattr(SMARTLoss, "forward", poisoned)
    run = runs / "nan"
    with pytest.raises(SmartError) as err:
        pretrain(zoo.variant_config("smart", "smoke", BASE), run, progress=False, log=lambda s: None)
    msg = str(err.value)
    assert "\n" not in msg and "step 3" in msg and "nan" in msg and str(run / CHECKPOINT) in msg
    ck = load_torch(run / CHECKPOINT)
    assert ck["step"] == 2  # the step-2 checkpoint, not one from the bad step (it would be step 4)
    net = SMARTNet(**load_run_config(run).model_kwargs())
    net.load_state_dict(ck["teacher"], strict=True)
    assert all(torch.isfinite(v).all() for v in ck["student"].values() if v.is_floating_point())
    assert [r["step"] for r in _metrics(run)] == [0, 1, 2]
    assert not (run / "summary.json").exists() and not (run / "encoder.pt").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------- export
def test_export_loads_strictly_into_swinunetr(base_run, tmp_path, capsys):
    from monai.networks.nets import SwinUNETR

    out = tmp_path / "enc.pt"
    assert cli_main(["export", str(base_run), "--out", str(out)]) == 0
    blob = load_torch(out)
    cfg = load_run_config(base_run)
    swin = SwinUNETR(in_channels=1, out_channels=2, feature_size=cfg.embed_dim, depths=cfg.depths,
                     num_heads=cfg.num_heads, window_size=cfg.window_size).swinViT.eval()
    swin.load_state_dict(blob["encoder"], strict=True)
    teacher = SMARTNet(**cfg.model_kwargs())
    teacher.load_state_dict(load_torch(base_run / CHECKPOINT)["teacher"], strict=True)
    teacher.eval()
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = teacher.encoder(x), swin(x, normalize=True)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # the export is the run's final teacher, as written at the end of the run
    _assert_states_equal(blob["encoder"], load_torch(base_run / "encoder.pt")["encoder"])
    assert load_encoder(out).encode(x)["attn"].shape == (2, 8)

    broken = dict(blob, encoder={k: v for i, (k, v) in enumerate(blob["encoder"].items()) if i != 3})
    save_torch(broken, tmp_path / "missing_key.pt")
    with pytest.raises(SmartError, match="do not match"):
        load_encoder(tmp_path / "missing_key.pt")
    save_torch(dict(blob, model={**blob["model"], "embed_dim": 24}), tmp_path / "other_embed.pt")
    with pytest.raises(SmartError, match="do not match"):
        load_encoder(tmp_path / "other_embed.pt")
    save_torch({k: v for k, v in blob.items() if k != "model"}, tmp_path / "no_model.pt")
    with pytest.raises(SmartError, match="incomplete"):
        load_encoder(tmp_path / "no_model.pt")
    with pytest.raises(SmartError, match="not a SMART encoder"):
        load_encoder(base_run / CHECKPOINT)


# --------------------------------------------------------------------------------------------- config errors
def _one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_cli_unknown_key_exits_2_without_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "smartlib.cli", "pretrain", "--preset", "smoke", "--out", str(tmp_path / "r"),
                          "--set", "learning_rate=1e-3"], env=_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    _one_line_error(res.stderr, "learning_rate", "unknown")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("item, words", [("lr=fast", ("lr", "float")), ("depths=2,x,2,2", ("depths",)),
                                         ("mask_ratio=1.5", ("mask_ratio",)), ("batch_size=2.5", ("batch_size", "int")),
                                         ("noequals", ("key=value",))])
def test_cli_bad_values_exit_2(tmp_path, capsys, item, words):
    rc = cli_main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", item])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, *words)
    assert not (tmp_path / "r").exists()


def test_cli_resume_with_other_config_exits_2_and_changes_nothing(base_run, capsys, snapshot):
    snap = snapshot(base_run)
    rc = cli_main(["pretrain", "--preset", "smoke", "--out", str(base_run), "--resume", *CLI_SET, "--set", "lr=0.01"])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "different config", "lr")
    rc = cli_main(["pretrain", "--preset", "smoke", "--out", str(base_run), *CLI_SET])  # no --resume on an existing run
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "already exists")
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- zoo
def test_zoo_reuses_a_complete_run(runs, base_run, snapshot):
    snap = snapshot(base_run)
    said = []
    t0 = time.perf_counter()
    enc = zoo.pretrained("smart", "smoke", runs / "zoo", overrides=BASE, log=said.append)
    assert time.perf_counter() - t0 < 5
    assert enc == base_run / "encoder.pt" and not said
    snap.assert_unchanged()
    with pytest.raises(SmartError, match="another configuration"):
        zoo.pretrained("smart", "smoke", runs / "zoo", overrides={**BASE, "lr": 1e-3}, log=said.append)
    with pytest.raises(SmartError, match="variant"):
        zoo.pretrained("nosuch", "smoke", runs / "zoo")
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- inspection
def test_inspect_run_shapes_and_consistency(base_run):
    from smartlib.inspect import inspect_run, load_metrics, run_summary

    res = inspect_run(base_run, n=2, seed=1)
    S, n = 32, 2
    for k in ("view", "attention", "mask", "recon", "masked_input", "teacher_drop"):
        assert res[k].shape == (n, S, S, S), k
    assert res["unit_mask"].shape == (n, 8) and res["mask"].dtype == bool
    # the mask is the attention rule: top ⌈0.7·8⌉ = 6 units by attention, minus ⌊0.1·0.7·8⌋ = 0 hints
    order = np.argsort(-res["unit_attention"], axis=1)
    for i in range(n):
        assert set(np.flatnonzero(res["unit_mask"][i])) == set(order[i, :6])
    assert np.array_equal(res["masked_input"][res["mask"]], np.zeros(res["mask"].sum(), np.float32))
    assert np.array_equal(res["masked_input"][~res["mask"]], res["view"][~res["mask"]])
    again = inspect_run(base_run, n=2, seed=1)
    assert all(np.array_equal(res[k], again[k], equal_nan=True) for k in ("view", "attention", "recon"))
    df = load_metrics(base_run)
    assert list(df["step"]) == list(range(8))
    s = run_summary(base_run)
    assert s["complete"] and s["steps_done"] == 8 and s["final_amip"] == pytest.approx(df["amip"].tail(5).mean())
    with pytest.raises(SmartError):
        inspect_run(base_run, n=0)


def test_attention_focus_is_the_attention_mass_inside_the_lesion(base_run):
    from smartlib.inspect import attention_focus

    enc = base_run / "encoder.pt"
    rng = np.random.default_rng(0)
    images = rng.random((2, 32, 32, 32), dtype=np.float32)
    masks = np.zeros((2, 32, 32, 32), bool)
    masks[0, :16, :16, 16:] = True  # exactly unit (0, 0, 1) = index 1
    masks[1, 16:, 16:, 16:] = True  # half of unit (1, 1, 1) = index 7: half of its voxels
    masks[1, 16:, 16:, 16:24] = False
    with torch.no_grad():
        attn = load_encoder(enc, img_size=32).eval().encode(torch.from_numpy(images)[:, None])["attn"].double().numpy()
    f = attention_focus(enc, images, masks)
    assert f["share"][0] == pytest.approx(attn[0, 1] / attn[0].sum(), rel=1e-5)
    assert f["share"][1] == pytest.approx(0.5 * attn[1, 7] / attn[1].sum(), rel=1e-5)
    assert f["baseline"] == pytest.approx([1 / 8, 1 / 16])
    assert f["ratio"] == pytest.approx(f["share"] / f["baseline"])
    with pytest.raises(SmartError):
        attention_focus(enc, images, masks[:, :16])


def test_pretraining_figures(base_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smartlib.inspect import inspect_run, load_metrics
    from smartlib.plots_pretrain import inspection_panels, loss_curves, variant_bars

    df = load_metrics(base_run)
    fig = loss_curves({"a": df, "b": df}, log=True, smooth=3)
    assert len(fig.axes) == 5 and all(ax.get_yscale() == "log" for ax in fig.axes)
    fig2 = inspection_panels(inspect_run(base_run, n=1))
    assert len(fig2.axes) == 5
    import pandas as pd

    fig3 = variant_bars(pd.DataFrame({"variant": ["x", "y"], "v": [1.0, float("nan")]}), "v", reference=1.0)
    assert len(fig3.axes[0].patches) == 1  # the NaN row is an empty "n/a" slot
    with pytest.raises(SmartError):
        loss_curves(df, terms=("nosuch",))
    plt.close("all")
