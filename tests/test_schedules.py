"""Per-iteration schedules: warm-up, cosine end points and midpoint, clamping, no reset at epoch boundaries."""
from __future__ import annotations

import math

import pytest

from smartlib.schedules import cosine, linear_warmup_then_constant, warmup_cosine


def _ref_warmup_cosine(step, total, warmup, peak, final, start=0.0):
    if step < warmup:
        return start + (peak - start) * step / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    return final + (peak - final) * (1 + math.cos(math.pi * t)) / 2


def test_cosine_endpoints_midpoint_and_clamp():
    assert cosine(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine(100, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(250, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(-5, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(25, 100, 1.0, 0.0) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert cosine(3, 0, 1.0, 0.5) == 0.5  # degenerate length → end value


def test_warmup_is_linear():
    total, warmup, peak = 1000, 100, 8e-4
    for step in (0, 1, 37, 50, 99):
        assert warmup_cosine(step, total, warmup, peak, 1e-6) == pytest.approx(peak * step / warmup, abs=1e-15)
    assert warmup_cosine(50, total, warmup, peak, 1e-6, start=1e-4) == pytest.approx(1e-4 + (peak - 1e-4) / 2)
    # differences are constant during the warm-up
    d = [warmup_cosine(s + 1, total, warmup, peak, 0) - warmup_cosine(s, total, warmup, peak, 0) for s in range(99)]
    assert max(d) - min(d) < 1e-15 and min(d) > 0


def test_warmup_cosine_against_reference_everywhere():
    total, warmup, peak, final = 800, 80, 8e-4, 1e-6
    for step in range(0, 900, 7):
        assert warmup_cosine(step, total, warmup, peak, final) == pytest.approx(_ref_warmup_cosine(step, total, warmup, peak, final), rel=1e-12, abs=1e-15)
    assert warmup_cosine(warmup, total, warmup, peak, final) == pytest.approx(peak)
    assert warmup_cosine((total + warmup) // 2, total, warmup, peak, final) == pytest.approx((peak + final) / 2)
    assert warmup_cosine(total, total, warmup, peak, final) == pytest.approx(final)
    assert warmup_cosine(total + 500, total, warmup, peak, final) == pytest.approx(final)


def test_warmup_zero_is_pure_cosine():
    for step in (0, 10, 50, 100):
        assert warmup_cosine(step, 100, 0, 1.0, 0.0) == pytest.approx(cosine(step, 100, 1.0, 0.0))


def test_no_reset_at_epoch_boundaries():
    # a run of 10 epochs × 30 iterations: the schedule is indexed by the global step and never jumps back
    iters, epochs = 30, 10
    total = iters * epochs
    seq = [warmup_cosine(e * iters + i, total, 30, 1.0, 0.0) for e in range(epochs) for i in range(iters)]
    after = seq[30:]
    assert all(a > b for a, b in zip(after, after[1:]))  # strictly decreasing after warm-up, across boundaries
    for e in range(2, epochs):  # the first iteration of an epoch continues from the last of the previous one
        assert seq[e * iters] < seq[e * iters - 1]
        assert seq[e * iters] != pytest.approx(seq[iters])
    # a pure function: the same step gives the same value regardless of call order
    assert [warmup_cosine(s, total, 30, 1.0, 0.0) for s in reversed(range(total))][::-1] == seq


def test_teacher_temperature_warmup():
    assert linear_warmup_then_constant(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup_then_constant(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup_then_constant(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup_then_constant(1000, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup_then_constant(5, 0, 0.04, 0.07) == 0.07
    for s in range(30):
        assert linear_warmup_then_constant(s, 30, 0.04, 0.07) == pytest.approx(0.04 + 0.03 * s / 30)
