"""Per-iteration schedules (learning rate, weight decay, EMA momentum, teacher temperature).

Every schedule is a pure function of the global iteration, so a resumed run continues exactly
and nothing resets at epoch boundaries (a bug of the public code). Hand-written: these are the
DINO/iBOT schedules (a few lines each), which no installed library provides in this form.
"""
from __future__ import annotations

import math

__all__ = ["cosine", "warmup_cosine", "linear_warmup_then_constant"]


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at step 0 to ``end`` at step ``total`` (clamped after)."""
    if total <= 0:
        return end
    t = min(max(step, 0), total) / total
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float, start: float = 0.0) -> float:
    """Linear warm-up from ``start`` to ``peak`` over ``warmup`` steps, then cosine to ``final`` at ``total``."""
    if step < warmup:
        return start + (peak - start) * step / warmup
    return cosine(step - warmup, total - warmup, peak, final)


def linear_warmup_then_constant(step: int, warmup: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` to ``end`` over ``warmup`` steps, then ``end`` (teacher temperature)."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup
