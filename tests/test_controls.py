"""Positive controls for the behaviour the pretraining loop and the downstream heads must have.

Each test names one behaviour and fails when it is missing; the expected values come from
closed-form formulas written here or from a perturbation (a second run, a planted signal), never
from the code under test:

1. schedules logged in ``metrics.jsonl`` across an epoch boundary = cosine / linear warm-up of the
   GLOBAL step (a per-epoch reset, the public code's bug, is shown to log something else);
2. the heads' last layers are frozen during epoch 0 and train from epoch 1;
3. AdamW groups: no decay on 1-D parameters (biases, norms, layer scales) and tokens;
4. gradient clipping bounds the first update;
5. the noisy teacher's [CLS] attention picks the student's mask (top units minus hints);
6. linear probe / fine-tuning find a planted signal, and a near-constant predictor fails the same bar.

The pretraining runs are tiny (2 phantom volumes, batch 1, 32³ crops; 6 steps in all) and share one
data folder.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import smartlib.pretrain as pretrain_mod
from smartlib.config import pretrain_config
from smartlib.io import load_torch
from smartlib.models.smart import SMARTNet
from smartlib.pretrain import CHECKPOINT, param_groups, pretrain
from helpers import mw_auc

#: 2 volumes, batch 1 → 2 steps per epoch; 32³ crops; CPU; every step checkpointed and logged
TINY = {"n_volumes": 2, "batch_size": 1, "img_size": 32, "device": "cpu", "ckpt_every": 1, "log_every": 1}
SPE = 2  #: steps per epoch of TINY


def _quiet(_msg: str) -> None:
    pass


@contextlib.contextmanager
def _recording():
    """Record the student's initial state (when the teacher is copied from it) and every checkpoint file's contents."""
    rec: dict = {"init": None, "ckpt": {}}
    orig_teacher, orig_ckpt = pretrain_mod.make_teacher, pretrain_mod._checkpoint

    def make_teacher(student):
        rec["init"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        return orig_teacher(student)

    def checkpoint(r, step):
        orig_ckpt(r, step)
        rec["ckpt"][step] = load_torch(r.path / CHECKPOINT)  # what the file holds after `step` steps

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrain_mod, "make_teacher", make_teacher)
        mp.setattr(pretrain_mod, "_checkpoint", checkpoint)
        yield rec


def _run(root: Path, name: str, **overrides) -> tuple[Path, dict]:
    cfg = pretrain_config("smoke", {**TINY, **overrides})
    with _recording() as rec:
        run = pretrain(cfg, root / name, progress=False, log=_quiet)
    return run, rec


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("controls")  # runs share root/data (the phantoms are made once)


#: main run: 2 epochs × 2 steps; lr warm-up over 2 steps, teacher-temperature warm-up over 3 steps
MAIN = {"epochs": 2, "warmup": 0.5, "teacher_temp_warmup": 0.75, "freeze_last_layer": 1, "clip_grad": 0.3}


@pytest.fixture(scope="module")
def main_run(root):
    return _run(root, "main", **MAIN)


@pytest.fixture(scope="module")
def one_step_runs(root):
    """One step (lr at its peak: no warm-up; no weight decay; no freeze), without and with a tiny clip."""
    common = {"epochs": 2, "max_steps": 1, "warmup": 0.0, "weight_decay": 0.0, "weight_decay_final": 0.0,
              "freeze_last_layer": 0}
    return {clip: _run(root, f"clip{clip:g}", clip_grad=clip, **common) for clip in (0.0, 1e-9)}


def _last_layer_names() -> list[str]:
    """State-dict names of ``SMARTNet.last_layers()`` (identified by identity on a fresh smoke model)."""
    net = SMARTNet(**pretrain_config("smoke", TINY).model_kwargs())
    ids = {id(p) for p in net.last_layers()}
    names = [n for n, p in net.named_parameters() if id(p) in ids and p.requires_grad]  # not the magnitudes g (fixed at 1)
    assert len(names) == 3 and all(".last_layer." in n for n in names)  # the three DINO heads' direction matrices
    return names


# ------------------------------------------------------------------------------------------ 1. schedules
def _closed_form(step: int, total: int, cfg) -> dict[str, float]:
    """The DINO/iBOT schedules written out: linear warm-up then half-cosine (lr), half-cosines (wd, momentum),
    linear ramp then constant (teacher temperature) — all of ``step`` out of ``total``."""
    w, tw = round(cfg.warmup * total), round(cfg.teacher_temp_warmup * total)
    half_cos = lambda t, a, b: b + (a - b) * (1 + math.cos(math.pi * t)) / 2  # noqa: E731  t ∈ [0, 1]: a → b
    lr = cfg.lr * step / w if step < w else half_cos((step - w) / (total - w), cfg.lr, cfg.min_lr)
    temp = cfg.teacher_temp + (cfg.teacher_temp_final - cfg.teacher_temp) * step / tw if step < tw else cfg.teacher_temp_final
    return {"lr": lr, "weight_decay": half_cos(step / total, cfg.weight_decay, cfg.weight_decay_final),
            "momentum": half_cos(step / total, cfg.momentum, cfg.momentum_final), "teacher_temp": temp}


def test_logged_schedules_follow_the_global_step_across_the_epoch_boundary(main_run):
    run, rec = main_run
    cfg = pretrain_config("smoke", {**TINY, **MAIN})
    total = SPE * cfg.epochs
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(total))
    assert [r["epoch"] for r in rows] == [s // SPE for s in range(total)]  # the run spans 2 epochs
    keys = ("lr", "weight_decay", "momentum", "teacher_temp")
    for r in rows:
        want = _closed_form(r["step"], total, cfg)
        for k in keys:
            assert r[k] == pytest.approx(want[k], rel=1e-9, abs=1e-15), (r["step"], k)
    # hand-checked anchors: lr 0 → peak/2 → peak (warm-up ends at step 2, the first step of epoch 1) → cosine
    assert [r["lr"] for r in rows[:3]] == pytest.approx([0.0, cfg.lr / 2, cfg.lr])
    assert rows[2]["teacher_temp"] == pytest.approx((cfg.teacher_temp + 2 * cfg.teacher_temp_final) / 3)

    # a schedule that restarts every epoch (indexed by the step within the epoch) logs something else at the boundary
    for s in range(SPE, total, SPE):
        reset = _closed_form(s % SPE, total, cfg)
        for k in keys:
            assert rows[s][k] != pytest.approx(reset[k], rel=1e-6), (s, k)

    # and what was logged is what the optimizer used: the last step's lr / weight decay sit in the checkpoint
    groups = rec["ckpt"][total]["optimizer"]["param_groups"]
    last = _closed_form(total - 1, total, cfg)
    assert all(g["lr"] == pytest.approx(last["lr"]) for g in groups)
    assert [g["weight_decay"] for g in groups] == pytest.approx([last["weight_decay"], 0.0])


# ------------------------------------------------------------------------------------------ 2. last-layer freeze
def _changed(a: dict, b: dict, names) -> list[str]:
    return [n for n in names if not torch.equal(a[n], b[n])]


def test_last_layers_frozen_in_epoch_zero_and_trained_in_epoch_one(main_run, one_step_runs):
    _, rec = main_run
    init, ck = rec["init"], rec["ckpt"]
    last = _last_layer_names()
    states = [init] + [ck[s]["student"] for s in range(1, 2 * SPE + 1)]  # states[s]: after s steps
    mlp = [n for n in init if n.startswith("head_") and ".mlp." in n and n.endswith(".weight")]
    assert mlp
    # step 1 (epoch 0) runs at lr = peak/2 and moves the rest of the heads: the update was real ...
    assert _changed(states[1], states[2], mlp) == mlp
    # ... but not the last layers, through the whole of epoch 0 (steps 0 and 1)
    assert _changed(init, states[1], last) == [] and _changed(states[1], states[2], last) == []
    # epoch 1: they train
    assert _changed(states[2], states[3], last) == last
    assert _changed(states[3], states[4], last) == last
    # control: without the freeze (freeze_last_layer=0), one step of epoch 0 does change them
    _, free = one_step_runs[0.0]
    assert _changed(free["init"], free["ckpt"][1]["student"], last) == last


# ------------------------------------------------------------------------------------------ 3. weight-decay groups
def _expect_no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.endswith(".bias") or "token" in name


def test_weight_decay_groups_on_the_real_smartnet():
    torch.manual_seed(0)
    net = SMARTNet(**pretrain_config("smoke", TINY).model_kwargs())
    groups = param_groups(net)
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert groups[0]["apply_wd"] and not groups[1]["apply_wd"] and groups[1].get("weight_decay") == 0.0
    named = dict(net.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert {n for n, p in named.items() if id(p) in decay | no_decay} == trainable and not decay & no_decay
    for n, p in named.items():
        if not p.requires_grad:
            continue
        if _expect_no_decay(n, p):
            assert id(p) in no_decay, n
        elif n.endswith(".weight") or n.endswith(".original1"):  # matrices / kernels (incl. weight-normed heads)
            assert id(p) in decay, n
    kinds = {"bias": [], "norm": [], "token": [], "layerscale": []}
    for n in named:
        for k, hit in (("bias", n.endswith(".bias")), ("norm", "norm" in n and n.endswith(".weight")),
                       ("token", "token" in n), ("layerscale", ".gamma" in n)):
            if hit:
                kinds[k].append(n)
    assert all(kinds.values()), kinds  # the model really has each kind, and each is in the no-decay group
    assert all(id(named[n]) in no_decay for ns in kinds.values() for n in ns)
    assert named["encoder.mask_token"].ndim == 5 and named["sa.cls_token"].ndim == 3  # tokens are not 1-D: a name rule

    # behaviour: zero gradients, decoupled decay 0.5, lr 0.1 → decayed params shrink by exactly 5 %, the rest stay
    opt = torch.optim.AdamW(groups, lr=0.1)
    for g in opt.param_groups:
        if g["apply_wd"]:
            g["weight_decay"] = 0.5
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for n, p in named.items():
        if id(p) in no_decay:
            assert torch.equal(p, before[n]), n
        elif id(p) in decay:
            torch.testing.assert_close(p.detach(), before[n] * 0.95, rtol=1e-6, atol=1e-12)


def test_the_loop_optimizes_with_those_groups(main_run):
    _, rec = main_run
    net = SMARTNet(**pretrain_config("smoke", TINY).model_kwargs())
    groups = param_groups(net)
    saved = rec["ckpt"][2 * SPE]["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in saved] == [len(g["params"]) for g in groups]
    assert [g["apply_wd"] for g in saved] == [True, False]


# ------------------------------------------------------------------------------------------ 4. clipping
def test_gradient_clipping_bounds_the_first_update(one_step_runs):
    """Adam's first step is lr·g/(|g| + eps) per element, nearly scale-free: a clip only shows once the clipped
    gradient is far below eps (1e-8). With ‖g‖ ≤ 1e-9 the whole update is at most lr·1e-9/1e-8 = lr/10 in norm,
    while an unclipped step moves each parameter with a gradient by ≈ lr."""
    cfg = pretrain_config("smoke", TINY)
    delta = {}
    for clip, (_, rec) in one_step_runs.items():
        after = rec["ckpt"][1]["student"]
        delta[clip] = math.sqrt(sum(float((after[n].double() - v.double()).pow(2).sum()) for n, v in rec["init"].items()))
    assert torch.equal(one_step_runs[0.0][1]["init"]["encoder.mask_token"], one_step_runs[1e-9][1]["init"]["encoder.mask_token"])
    assert delta[0.0] > 100 * cfg.lr  # thousands of elements each moved by ≈ lr
    assert delta[1e-9] <= cfg.lr * 1e-9 / 1e-8 * 1.01
    assert delta[1e-9] < 1e-3 * delta[0.0]


# ------------------------------------------------------------------------------------------ 5. attention → mask
S96 = 96  #: 6³ = 216 mask units: 152 masked, 15 hints drawn from the top 22


class _Recorder:
    """A stand-in student that records the mask it is given (the step's student half is tested elsewhere)."""

    def __init__(self):
        self.mask = None

    def __call__(self, x, mask):
        self.mask = mask.clone()
        return None, {}, torch.zeros_like(x)


class _PlantedTeacher:
    """A stand-in teacher whose [CLS] attention is planted: ``noisy`` for the pass that gets the noise's
    unit mask (``teacher_noise="token"``), ``clean`` for the pass on the clean views. A real 96³ forward costs
    seconds on a CPU and its output is replaced anyway; ``encode``/``project`` are all the step calls."""

    def __init__(self, noisy: torch.Tensor, clean: torch.Tensor):
        self.noisy, self.clean, self.unit_masks = noisy, clean, []

    def encode(self, x, unit_mask=None):
        self.unit_masks.append(unit_mask)
        return {"attn": (self.noisy if unit_mask is not None else self.clean).clone()}

    def project(self, out):
        return {}


def _planted_step(noisy: torch.Tensor, clean: torch.Tensor, **overrides):
    from smartlib.step import smart_step

    cfg = pretrain_config("smoke", {"img_size": S96, "device": "cpu", **overrides})
    assert cfg.teacher_noise == "token" and cfg.teacher_drop > 0
    teacher, student = _PlantedTeacher(noisy, clean), _Recorder()
    views = torch.rand(1, 2, 1, S96, S96, S96, generator=torch.Generator().manual_seed(3))  # V = 1 view, b = 2 samples
    out = smart_step(cfg, teacher, student, views, [(cfg.seed, 11, 0), (cfg.seed, 11, 1)], clean_pass=True)
    noisy_masks = [m for m in teacher.unit_masks if m is not None]
    assert len(teacher.unit_masks) == 2 and len(noisy_masks) == 1  # one noisy (token-masked) pass, one clean pass
    assert torch.equal(noisy_masks[0].cpu(), out.teacher_drop)
    assert torch.equal(student.mask, out.mask)
    return out, student.mask


def _top(scores: torch.Tensor, k: int) -> set[int]:
    return set(torch.argsort(scores, descending=True)[:k].tolist())


def test_student_mask_is_the_noisy_teachers_top_attention_minus_hints():
    n = (S96 // 16) ** 3
    k, h, top_hint = math.ceil(0.7 * n), math.floor(0.1 * 0.7 * n), math.ceil(0.1 * n)
    assert (n, k, h, top_hint) == (216, 152, 15, 22)
    g = torch.Generator().manual_seed(5)
    noisy = torch.stack([torch.randperm(n, generator=g).float() for _ in range(2)])  # distinct scores: the order is known
    clean = -noisy  # the clean pass attends the other way
    out, mask = _planted_step(noisy, clean)
    assert torch.equal(out.attention, noisy)
    for row in range(2):
        masked = set(mask[row].nonzero().flatten().tolist())
        top_k = _top(noisy[row], k)
        hints = top_k - masked
        assert masked <= top_k  # nothing outside the top 152 is masked
        assert len(hints) == h and hints <= _top(noisy[row], top_hint)  # 15 hints, from the top 22
        assert not masked <= _top(clean[row], k)  # it does not follow the clean pass
    revealed = [_top(noisy[r], k) - set(mask[r].nonzero().flatten().tolist()) for r in range(2)]
    assert any(rv != _top(noisy[r], h) for r, rv in enumerate(revealed))  # hints are drawn, not just the top 15

    # with clean_attention the clean pass picks the mask instead
    out_c, mask_c = _planted_step(noisy, clean, clean_attention=True)
    for row in range(2):
        masked = set(mask_c[row].nonzero().flatten().tolist())
        assert masked <= _top(clean[row], k) and len(_top(clean[row], k) - masked) == h


def test_random_masking_does_not_follow_the_attention():
    n = 216
    g = torch.Generator().manual_seed(5)
    noisy = torch.stack([torch.randperm(n, generator=g).float() for _ in range(2)])
    out, mask = _planted_step(noisy, -noisy, mask_mode="random")
    for row in range(2):
        masked = set(mask[row].nonzero().flatten().tolist())
        assert len(masked) == 152
        overlap = len(masked & _top(noisy[row], 152))
        assert overlap < 135, overlap  # chance level is 152·152/216 ≈ 107; attention masking gives 137 (all but hints)


# ------------------------------------------------------------------------------------------ 6. downstream controls
_auc = mw_auc


def test_auc_reference_and_a_near_constant_predictor_fails_the_bar():
    from smartlib.downstream.metrics import classification_metrics

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    s = rng.random(40) + 0.3 * y
    assert classification_metrics(y, s)["auc"] == pytest.approx(_auc(y, s))
    prior = np.full(40, y.mean()) + 1e-6 * rng.standard_normal(40)
    assert _auc(y, prior) < 0.9
    assert _auc(y, y.astype(float)) == 1.0


def test_linear_probe_finds_a_planted_mean_shift():
    from smartlib.downstream.classify import linear_probe

    rng = np.random.default_rng(0)

    def make(n, shift):
        y = np.arange(n) % 2
        x = rng.standard_normal((n, 20))
        x[:, :5] += shift * y[:, None]
        return x, y

    xtr, ytr = make(60, 1.5)
    xte, yte = make(60, 1.5)
    p = linear_probe(xtr, ytr, xte, 2)
    assert p.shape == (60, 2) and np.allclose(p.sum(1), 1)
    assert _auc(yte, p[:, 1]) >= 0.9
    # negative controls: no planted signal, or labels shuffled for training → below the bar
    xtr0, _ = make(60, 0.0)
    xte0, _ = make(60, 0.0)
    assert _auc(yte, linear_probe(xtr0, ytr, xte0, 2)[:, 1]) < 0.9
    assert _auc(yte, linear_probe(xtr, rng.permutation(ytr), xte, 2)[:, 1]) < 0.9


def _blobs(n: int, g: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """32³ noise in [0, 0.3]; odd cases carry a bright ball (radius 6, value 1) at a random place."""
    y = np.arange(n) % 2
    x = torch.rand(n, 1, 32, 32, 32, generator=g) * 0.3
    zz, yy, xx = torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij")
    for i in np.flatnonzero(y):
        c = torch.randint(10, 22, (3,), generator=g).float()
        x[i, 0][(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 36] = 1.0
    return x, y


def test_finetune_finds_a_planted_bright_blob():
    from smartlib.downstream.classify import finetune
    from smartlib.downstream.features import load_init

    g = torch.Generator().manual_seed(0)
    xtr, ytr = _blobs(24, g)
    xva, yva = _blobs(16, g)
    xte, yte = _blobs(16, g)
    r = finetune(load_init("scratch", "smoke", 32), xtr, ytr, xte, 2, epochs=6, batch_size=8, lr=1e-3, head_lr=1e-2,
                 seed=0, x_val=xva, y_val=yva, y_test=yte)
    p = r.probs
    assert p.shape == (16, 2) and len(r.history) == 6
    auc = _auc(yte, p[:, 1])
    assert auc >= 0.9, auc
    prior = np.full(16, ytr.mean()) + 1e-6 * np.random.default_rng(0).standard_normal(16)
    assert _auc(yte, prior) < 0.9
    # the kept epoch is the validation-best one (ties: lower val loss), and its test scores are that epoch's
    best = max(r.history, key=lambda h: (h["val_score"], -h["val_loss"]))
    assert r.epoch == best["epoch"] and best["selected"] and sum(h["selected"] for h in r.history) == 1
    assert _auc(yte, p[:, 1]) == pytest.approx(r.history[r.epoch - 1]["test_auc"])
    # warm-up: the first epoch's learning rate is below the peak, and the last is decayed towards 0
    assert r.history[0]["lr"] < 1e-3 and r.history[-1]["lr"] < 0.1 * 1e-3


def test_finetune_selection_never_reads_the_test_labels():
    from smartlib.downstream.classify import finetune
    from smartlib.downstream.features import load_init

    g = torch.Generator().manual_seed(1)
    xtr, ytr = _blobs(16, g)
    xva, yva = _blobs(8, g)
    xte, yte = _blobs(8, g)
    kw = dict(epochs=3, batch_size=8, lr=1e-3, head_lr=1e-2, seed=0, x_val=xva, y_val=yva)
    a = finetune(load_init("scratch", "smoke", 32), xtr, ytr, xte, 2, y_test=yte, **kw)
    b = finetune(load_init("scratch", "smoke", 32), xtr, ytr, xte, 2, y_test=1 - yte, **kw)
    assert a.epoch == b.epoch and np.array_equal(a.probs, b.probs)
    # while the validation labels do decide: flipped validation labels choose by the opposite ranking
    c = finetune(load_init("scratch", "smoke", 32), xtr, ytr, xte, 2, y_test=yte, **{**kw, "y_val": 1 - yva})
    assert [h["val_score"] for h in c.history] == pytest.approx([1 - h["val_score"] for h in a.history])
