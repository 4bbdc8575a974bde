"""SMART pretraining end to end at the smoke preset (crops shrunk to 32³ where the test is about
bookkeeping, not learning): learning, exact resume after SIGKILL, DDP = one process, NaN stop,
export into MONAI's SwinUNETR (the structured file, and the plain state dicts of ``--format swinunetr``,
loaded with MONAI and torch alone, as the README shows), CLI config errors, and the variants' reuse of a finished run.

One module-scoped run (8 steps through ``variants.pretrained``) is shared by several tests; the rest
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

from smartlib import variants
from smartlib.cli import main as cli_main
from smartlib.errors import SmartError
from smartlib.io import load_torch, save_torch
from smartlib.models.smart import SMARTNet, load_encoder
from smartlib.pretrain import CHECKPOINT, TIMING_FIELDS, load_run_config, pretrain

#: 8 steps (4 volumes, batch 2, 4 epochs), checkpoints every 2 steps (smoke), 32³ crops
BASE = {"img_size": 32, "epochs": 4}
CLI_SET = ["--set", "img_size=32", "--set", "epochs=4"]
TIMING = TIMING_FIELDS
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
    """The `smart` variant pretrained through smartlib.variants: 8 complete steps, uninterrupted, in this process."""
    enc = variants.pretrained("smart", "smoke", runs / "zoo", overrides=BASE, log=lambda s: None)
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
    sets = {"img_size": 32, "epochs": 4, "max_steps": 3, "drop_path": 0.0, "amp": False}  # fp32: bf16 rounding differs per batch split
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

    single = pretrain(variants.variant_config("smart", "smoke", sets), runs / "ddp1", progress=False, log=lambda s: None)
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
        pretrain(variants.variant_config("smart", "smoke", BASE), run, progress=False, log=lambda s: None)
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
    for a, b in zip(ours, theirs):  # float rounding only: the fast window attention sums in another order
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
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


def _swinunetr(cfg: dict, seed: int):
    """A freshly built MONAI SwinUNETR for a run's config.json (a plain dict): MONAI and torch only."""
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(seed)
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=cfg["embed_dim"], depths=cfg["depths"],
                     num_heads=cfg["num_heads"], window_size=cfg["window_size"])


def _teacher_encoder(run: Path) -> dict:
    """The run's final teacher encoder, in SwinUNETR.swinViT's keys (no mask token)."""
    teacher = load_torch(run / CHECKPOINT)["teacher"]
    return {k[len("encoder."):]: v for k, v in teacher.items() if k.startswith("encoder.") and k != "encoder.mask_token"}


def test_export_swinunetr_loads_strictly_into_a_fresh_swinvit(base_run, tmp_path, capsys):
    out = tmp_path / "encoder_swinunetr.pt"
    assert cli_main(["export", str(base_run), "--out", str(out), "--format", "swinunetr"]) == 0
    assert "format swinunetr" in capsys.readouterr().out
    # the load side uses torch and MONAI only
    cfg = json.loads((base_run / "config.json").read_text())
    model = _swinunetr(cfg, seed=123)
    fresh = {k: v.clone() for k, v in model.swinViT.state_dict().items()}
    sd = torch.load(out, weights_only=True)
    assert set(sd) == set(fresh) and all(isinstance(v, torch.Tensor) for v in sd.values())
    model.swinViT.load_state_dict(sd, strict=True)
    loaded, teacher = model.swinViT.state_dict(), _teacher_encoder(base_run)
    _assert_states_equal(loaded, teacher)  # the run's teacher, key for key and bit for bit
    weights = [k for k, v in fresh.items() if v.is_floating_point() and v.ndim >= 2]
    assert weights and all(not torch.equal(loaded[k], fresh[k]) for k in weights)  # and not the fresh initialisation
    _assert_states_equal(sd, load_torch(base_run / "encoder.pt")["encoder"])  # = the encoder of the structured export
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    net = SMARTNet(**load_run_config(base_run).model_kwargs())
    net.load_state_dict(load_torch(base_run / CHECKPOINT)["teacher"], strict=True)
    with torch.no_grad():
        for a, b in zip(net.eval().encoder(x), model.swinViT.eval()(x, normalize=True)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_export_swinunetr_with_prefix_matches_swinunetr_state_dict(base_run, tmp_path):
    out = tmp_path / "encoder_swinunetr_prefixed.pt"
    assert cli_main(["export", str(base_run), "--out", str(out), "--format", "swinunetr", "--prefix", "swinViT."]) == 0
    cfg = json.loads((base_run / "config.json").read_text())
    model = _swinunetr(cfg, seed=7)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    sd = torch.load(out, weights_only=True)
    assert sd and all(k.startswith("swinViT.") for k in sd)
    for k, v in sd.items():
        assert k in fresh and fresh[k].shape == v.shape, k
    res = model.load_state_dict(sd, strict=False)
    assert res.unexpected_keys == []
    assert not [k for k in res.missing_keys if k.startswith("swinViT.")]  # every encoder key was given
    assert set(sd) == {k for k in fresh if k.startswith("swinViT.")}
    after = model.state_dict()
    _assert_states_equal({k[len("swinViT."):]: after[k] for k in sd}, _teacher_encoder(base_run))
    weights = [k for k in sd if fresh[k].is_floating_point() and fresh[k].ndim >= 2]
    assert weights and all(not torch.equal(after[k], fresh[k]) for k in weights)
    for k in res.missing_keys:  # the decoder keeps its own initialisation
        assert torch.equal(after[k], fresh[k]), k


def _load_snippets() -> list[tuple[str, str]]:
    """The python code blocks of README.md and book/reproduce.md that load exported weights into MONAI."""
    import re

    found = []
    for doc in ("README.md", "book/reproduce.md"):
        blocks = re.findall(r"```python\n(.*?)```", (REPO / doc).read_text(), flags=re.S)
        found += [(doc, b) for b in blocks if "swinViT.load_state_dict(torch.load(" in b]
    return found


def test_documented_monai_load_snippet_runs(tmp_path, monkeypatch):
    """The README's and the book's two-line load, run as written on an export of a paper-sized run."""
    from smartlib.config import pretrain_config
    from smartlib.io import write_json

    snippets = _load_snippets()
    assert {doc for doc, _ in snippets} == {"README.md", "book/reproduce.md"}
    run = tmp_path / "run"  # the paper's encoder (as the snippet's numbers), small heads: cheap to write
    cfg = pretrain_config("paper", {"prototypes": 16, "head_hidden": 16, "head_bottleneck": 8})
    torch.manual_seed(0)
    net = SMARTNet(**cfg.model_kwargs())
    write_json(run / "config.json", cfg.to_dict())
    save_torch({"step": 0, "teacher": net.state_dict(), "student": net.state_dict()}, run / CHECKPOINT)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["export", str(run), "--out", "encoder_swinunetr.pt", "--format", "swinunetr"]) == 0
    for doc, code in snippets:
        ns: dict = {}
        exec(compile(code, doc, "exec"), ns)  # noqa: S102 - our own documentation
        _assert_states_equal(ns["model"].swinViT.state_dict(), net.encoder.encoder_state_dict())


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


# --------------------------------------------------------------------------------------------- variants
def test_variants_reuse_a_complete_run(runs, base_run, snapshot):
    snap = snapshot(base_run)
    said = []
    t0 = time.perf_counter()
    enc = variants.pretrained("smart", "smoke", runs / "zoo", overrides=BASE, log=said.append)
    assert time.perf_counter() - t0 < 5
    assert enc == base_run / "encoder.pt" and not said
    snap.assert_unchanged()
    with pytest.raises(SmartError, match="another configuration"):
        variants.pretrained("smart", "smoke", runs / "zoo", overrides={**BASE, "lr": 1e-3}, log=said.append)
    with pytest.raises(SmartError, match="variant"):
        variants.pretrained("nosuch", "smoke", runs / "zoo")
    snap.assert_unchanged()


# --------------------------------------------------------------------------------------------- inspection
def test_inspect_run_shapes_and_consistency(base_run):
    from smartlib.inspection import inspect_run, load_metrics, run_summary

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


def test_inspect_run_mask_is_the_training_steps_mask(base_run):
    """inspect_run(seed=s)'s view k is what the loop's step s does for sample k, view 0: recomputed here by hand."""
    from smartlib.inspection import inspect_run
    from smartlib.masking import make_mask, patch_dropout, upsample_mask
    from smartlib.pretrain_data import PretrainData, keyed_generator, pretrain_records
    from smartlib.teacher import noisy_view

    cfg = load_run_config(base_run)
    teacher = SMARTNet(**cfg.model_kwargs())
    teacher.load_state_dict(load_torch(base_run / CHECKPOINT)["teacher"], strict=True)
    teacher.set_drop_path(0.0)
    teacher.eval()
    data = PretrainData(cfg, pretrain_records(cfg, base_run))
    seed, n, grid = 3, 2, cfg.img_size // 16
    res = inspect_run(base_run, n=n, seed=seed)
    for k in range(n):
        x = data.views((seed + k) % len(data), seed)[:1]
        drop = patch_dropout(1, grid**3, cfg.teacher_drop, keyed_generator(cfg.seed, seed, k, 0, 1))
        assert drop.any()  # the teacher really is noisy, so the attention below is the noisy teacher's
        x_t, t_mask = noisy_view(x, drop, cfg.teacher_noise, grid)
        with torch.no_grad():
            attn = teacher.encode(x_t, t_mask)["attn"]
            clean = teacher.encode(x)["attn"]
        mask = make_mask(cfg.mask_mode, 1, grid**3, cfg.mask_ratio, attn, cfg.hint_ratio, cfg.hint_top,
                         keyed_generator(cfg.seed, seed, k, 0, 2))
        assert np.array_equal(res["view"][k], x[0, 0].numpy())
        assert np.array_equal(res["teacher_drop"][k], upsample_mask(drop, grid, 16)[0].numpy())
        assert np.array_equal(res["unit_attention"][k], attn[0].numpy())
        assert np.array_equal(res["unit_mask"][k], mask[0].numpy())
        assert np.array_equal(res["mask"][k], upsample_mask(mask, grid, 16)[0].numpy())
        assert np.array_equal(res["attention_clean"][k][::16, ::16, ::16].reshape(-1), clean[0].numpy())


def test_smart_step_draws_each_samples_randomness_from_its_key():
    """Two samples × two views: teacher dropout and mask of (sample k, view v) come from key k's generators."""
    from smartlib.losses import SMARTLoss
    from smartlib.masking import make_mask, patch_dropout
    from smartlib.pretrain_data import keyed_generator
    from smartlib.step import smart_step
    from smartlib.teacher import make_teacher

    cfg = variants.variant_config("smart", "smoke")  # 64³ crops: 64 units, 4 hints drawn at random
    torch.manual_seed(0)
    student = SMARTNet(**cfg.model_kwargs())
    teacher = make_teacher(student)
    criterion = SMARTLoss(cfg.prototypes, (cfg.w_amip, cfg.w_ampd, cfg.w_aitd, cfg.w_gitd), cfg.student_temp)
    views = torch.rand(2, 2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    keys = [(cfg.seed, 5, 3), (cfg.seed, 5, 0)]
    out = smart_step(cfg, teacher, student, views, keys, criterion=criterion, teacher_temp=cfg.teacher_temp)
    assert torch.isfinite(out.loss) and set(out.terms) == {"amip", "ampd", "aitd", "gitd"}
    assert len(out.teacher_logits) == 2 and out.teacher_logits[0]["cls"].shape == (2, cfg.prototypes)
    assert out.attention_clean is None and out.recon.shape == (4, 1, 64, 64, 64)
    for v in range(2):
        for k, key in enumerate(keys):
            row = v * 2 + k
            assert torch.equal(out.teacher_drop[row:row + 1], patch_dropout(1, 64, cfg.teacher_drop, keyed_generator(*key, v, 1)))
            assert torch.equal(out.mask[row:row + 1], make_mask(cfg.mask_mode, 1, 64, cfg.mask_ratio, out.attention[row:row + 1],
                                                                cfg.hint_ratio, cfg.hint_top, keyed_generator(*key, v, 2)))
    assert not torch.equal(out.mask[0], out.mask[1])  # different samples, different draws


def test_variant_table_and_its_two_by_two_grid():
    from smartlib.inspection import two_by_two

    assert variants.TWO_BY_TWO == ("smart", "sa_clean", "noise_no_sa", "smit")
    for name, v in variants.VARIANTS.items():
        assert v.name == name and v.description
        if v.grid_cell is not None:  # the cell is what the variant's config switches
            cfg = variants.variant_config(name, "smoke")
            assert v.grid_cell == (cfg.semantic_attention, cfg.teacher_drop > 0), name
    import pandas as pd

    rows = [{"variant": name, "semantic_attention": c[0], "noisy_teacher": c[1], "x": float(i)}
            for i, (name, c) in enumerate((n, variants.VARIANTS[n].grid_cell) for n in variants.TWO_BY_TWO)]
    table = pd.DataFrame(rows + [{"variant": "random_mask", "semantic_attention": True, "noisy_teacher": True, "x": 9.0}])
    grid = two_by_two(table, "x")
    assert grid.loc["semantic attention on", "teacher noisy"] == 0.0 and grid.loc["semantic attention off", "teacher clean"] == 3.0


def test_attention_focus_is_the_attention_mass_inside_the_lesion(base_run):
    from smartlib.inspection import attention_focus

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

    from smartlib.inspection import inspect_run, load_metrics
    import smartlib.plots
    from smartlib.plots import save_figure
    from smartlib.plots.pretraining import inspection_panels, loss_curves, variant_bars

    assert smartlib.plots.__all__ == ["save_figure"]

    df = load_metrics(base_run)
    fig = loss_curves({"a": df, "b": df}, log=True, smooth=3)
    assert len(fig.axes) == 5 and all(ax.get_yscale() == "log" for ax in fig.axes)
    fig2 = inspection_panels(inspect_run(base_run, n=1))
    assert len(fig2.axes) == 5
    assert save_figure(fig2, base_run.parent / "panels.png").stat().st_size > 0
    import pandas as pd

    fig3 = variant_bars(pd.DataFrame({"variant": ["x", "y"], "v": [1.0, float("nan")]}), "v", reference=1.0)
    assert len(fig3.axes[0].patches) == 1  # the NaN row is an empty "n/a" slot
    with pytest.raises(SmartError):
        loss_curves(df, terms=("nosuch",))
    plt.close("all")
