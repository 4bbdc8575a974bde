"""The noisy momentum teacher: exact copy, EMA formula, cosine momentum, patch-dropout views."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smartlib.models import SMARTNet
from smartlib.teacher import ema_update, make_teacher, momentum_at, noisy_view

SMALL = dict(img_size=32, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), sa_heads=4, drop_path=0.3,
             prototypes=8, head_hidden=16, head_bottleneck=8)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return SMARTNet(heads=False, **SMALL)


def test_make_teacher_exact_frozen_copy(student):
    teacher = make_teacher(student)
    sd_s, sd_t = student.state_dict(), teacher.state_dict()
    assert sd_s.keys() == sd_t.keys()
    for k in sd_s:
        assert torch.equal(sd_s[k], sd_t[k]), k
    for (n1, p1), (n2, p2) in zip(student.named_parameters(), teacher.named_parameters()):
        assert n1 == n2 and p1.data_ptr() != p2.data_ptr()  # a copy, not shared storage
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(m.drop_prob == 0 for m in teacher.modules() if hasattr(m, "drop_prob"))
    # the student is untouched: still trainable with its stochastic depth
    assert any(p.requires_grad for p in student.parameters())
    assert max(m.drop_prob for m in student.modules() if hasattr(m, "drop_prob")) > 0
    # same outputs in eval mode
    student.eval(), teacher.eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(student.encode(x)["cls"], teacher.encode(x)["cls"])
    student.train()


def test_ema_update_formula(student):
    teacher = make_teacher(student)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    before_t = [p.detach().clone() for p in teacher.parameters()]
    before_s = [p.detach().clone() for p in student.parameters()]
    buffers_before = {k: v.clone() for k, v in teacher.named_buffers()}
    m = 0.9
    ema_update(teacher, student, m)
    for pt, t0, s0 in zip(teacher.parameters(), before_t, before_s):
        ref = (m * t0.double() + (1 - m) * s0.double()).float()
        torch.testing.assert_close(pt.detach(), ref, rtol=1e-5, atol=1e-6)
    for ps, s0 in zip(student.parameters(), before_s):  # the student is not modified
        assert torch.equal(ps.detach(), s0)
    for k, v in teacher.named_buffers():
        assert torch.equal(v, buffers_before[k])


def test_ema_update_extremes(student):
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
    snap = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)  # momentum 1: teacher unchanged
    for p, s in zip(teacher.parameters(), snap):
        assert torch.equal(p, s)
    ema_update(teacher, student, 0.0)  # momentum 0: teacher becomes the student
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(pt, ps.detach())


@pytest.mark.parametrize("m", [-0.1, 1.01])
def test_ema_update_bad_momentum(student, m):
    with pytest.raises(ValueError, match="momentum"):
        ema_update(make_teacher(student), student, m)


def test_ema_update_mismatched_models():
    a, b = torch.nn.Linear(3, 3), torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    with pytest.raises(ValueError):
        ema_update(a, b, 0.5)


def test_momentum_cosine():
    total = 1000
    assert momentum_at(0, total) == pytest.approx(0.996)
    assert momentum_at(total // 2, total) == pytest.approx(0.998)
    assert momentum_at(total, total) == pytest.approx(1.0)
    assert momentum_at(2 * total, total) == pytest.approx(1.0)  # clamped
    for step in (100, 250, 777):
        ref = 1.0 - (1.0 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2
        assert momentum_at(step, total) == pytest.approx(ref, abs=1e-12)
    vals = [momentum_at(s, total) for s in range(0, total + 1, 50)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    assert momentum_at(10, 100, base=0.99, final=0.999) == pytest.approx(0.999 - 0.009 * (math.cos(math.pi * 0.1) + 1) / 2)


def test_noisy_view_zero_mode_against_loop():
    grid = 2
    x = torch.rand(2, 1, 32, 32, 32) + 0.5  # strictly positive so zeros are only from dropping
    x0 = x.clone()
    dropped = torch.tensor([[True, False, False, True, False, False, False, True],
                            [False, True, False, False, False, False, True, False]])
    y, mask = noisy_view(x, dropped, "zero", grid)
    assert mask is None and y.shape == x.shape
    ref = x.numpy().copy()
    for b in range(2):
        for u in range(8):
            if dropped[b, u]:
                d, h, w = u // 4, (u // 2) % 2, u % 2
                ref[b, :, d * 16:(d + 1) * 16, h * 16:(h + 1) * 16, w * 16:(w + 1) * 16] = 0
    assert np.array_equal(y.numpy(), ref)
    assert int((y == 0).sum()) == int(dropped.sum()) * 16**3
    assert torch.equal(x, x0)  # input not modified in place


def test_noisy_view_token_mode_returns_mask():
    x = torch.rand(1, 1, 32, 32, 32)
    dropped = torch.zeros(1, 8, dtype=torch.bool)
    dropped[0, 2] = True
    y, mask = noisy_view(x, dropped, "token", 2)
    assert torch.equal(y, x) and torch.equal(mask, dropped)


def test_noisy_view_bad_mode():
    with pytest.raises(ValueError, match="noise mode"):
        noisy_view(torch.rand(1, 1, 32, 32, 32), torch.zeros(1, 8, dtype=torch.bool), "blur", 2)
