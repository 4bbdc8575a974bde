"""The speed switches change how fast a step runs, not what it computes (beyond float rounding).

bf16 autocast tracks fp32; the fused AdamW step equals the multi-tensor one; the EMA's fused lerp is
the formula; prefetching the next views changes no number and forwards a loader's error; threads are
validated. Each switch's effect on time is measured by ``benchmarks/bench_speed.py``, not here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import raises_smart
from smartlib import variants
from smartlib.config import PretrainConfig
from smartlib.pretrain import TIMING_FIELDS, bf16_native, pretrain
from smartlib.pretrain_data import prefetch
from smartlib.teacher import ema_update

SMALL = {"img_size": 32, "epochs": 3, "drop_path": 0.0}  # 6 steps of the smoke preset on 32³ crops


def _losses(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in TIMING_FIELDS} for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path: Path, name: str, **over) -> list[dict]:
    cfg = variants.variant_config("smart", "smoke", {**SMALL, **over})
    pretrain(cfg, tmp_path / name, progress=False, log=lambda s: None)
    return _losses(tmp_path / name)


def test_bf16_losses_track_fp32(tmp_path):
    fp32 = _run(tmp_path, "fp32", amp=False)
    bf16 = _run(tmp_path, "bf16", amp=True)
    assert len(fp32) == len(bf16) == 6
    if bf16_native(torch.device("cpu")):
        # bf16 really ran (the numbers differ) and stays within a few percent of fp32 at every step
        assert any(a["loss"] != b["loss"] for a, b in zip(fp32, bf16))
        for a, b in zip(fp32, bf16):
            for k in ("loss", "amip", "ampd", "aitd", "gitd"):
                assert abs(a[k] - b[k]) <= 0.05 * abs(a[k]) + 1e-3, (a["step"], k, a[k], b[k])
    else:  # no native bf16 on this CPU: amp is ignored, so the runs are the same run
        assert fp32 == bf16


def test_fused_adamw_equals_foreach_adamw():
    torch.manual_seed(0)
    params = [torch.randn(33, 17), torch.randn(17), torch.randn(4, 4, 4)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(5)]
    out = []
    for fused in (False, True):
        ps = [p.clone().requires_grad_(True) for p in params]
        opt = torch.optim.AdamW([{"params": ps[:2], "weight_decay": 0.04}, {"params": ps[2:], "weight_decay": 0.0}],
                                lr=1e-2, fused=fused or None, foreach=None if fused else True)
        for g in grads:
            for p, gi in zip(ps, g):
                p.grad = gi.clone()
            opt.step()
        out.append([p.detach() for p in ps])
    for a, b in zip(*out):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(out[0][0], params[0])  # the steps did move the weights


def test_ema_update_is_the_momentum_average():
    torch.manual_seed(0)
    t, s = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    before = [p.detach().clone() for p in t.parameters()]
    ema_update(t, s, 0.9)
    for b, p, q in zip(before, t.parameters(), s.parameters()):
        assert torch.allclose(p, 0.9 * b + 0.1 * q, atol=1e-7)
    frozen = [p.detach().clone() for p in t.parameters()]
    ema_update(t, s, 1.0)  # momentum 1 (the end of the cosine): the teacher does not move at all
    assert all(torch.equal(a, p) for a, p in zip(frozen, t.parameters()))


def test_prefetch_changes_no_number(tmp_path):
    assert _run(tmp_path, "prefetch", prefetch=True) == _run(tmp_path, "inline", prefetch=False)


def test_prefetch_keeps_order_and_forwards_errors():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise OSError("volume 7 truncated")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(OSError, match="volume 7"):
        next(it)
    early = prefetch(iter(range(1000)), depth=2)  # a consumer that stops early leaves no thread blocked
    assert next(early) == 0
    early.close()


def test_threads_must_not_be_negative():
    raises_smart(PretrainConfig, threads=-1, words=["threads"])
    assert PretrainConfig(threads=1).threads == 1
