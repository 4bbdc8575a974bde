"""The noisy momentum teacher: an EMA copy of the student that sees patch-dropped input.

- Initialised as an exact copy of the student (and restored, never re-initialised, on resume).
- Momentum follows a cosine from 0.996 to 1 over all iterations, indexed by global iteration.
- Input noise: a fraction of mask units (default 0.3, i.e. "keep 0.7") is dropped either by
  zeroing their voxels or by replacing their patch embeddings with the mask token.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .masking import upsample_mask
from .models.smart import UNIT, SMARTNet
from .schedules import cosine

__all__ = ["make_teacher", "ema_update", "momentum_at", "noisy_view"]


def make_teacher(student: SMARTNet) -> SMARTNet:
    """A frozen exact copy of ``student`` with stochastic depth off."""
    teacher = copy.deepcopy(student)
    teacher.set_drop_path(0.0)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m·θ_t + (1 − m)·θ_s for every parameter (buffers are not averaged)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum {momentum} outside [0, 1]")
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameter lists")
    torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)  # one fused pass: t + (1 − m)(s − t)


def momentum_at(step: int, total: int, base: float = 0.996, final: float = 1.0) -> float:
    """Cosine EMA momentum at global iteration ``step`` of ``total``."""
    return cosine(step, total, base, final)


def noisy_view(x: torch.Tensor, dropped: torch.Tensor, mode: str, grid: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply patch dropout to the teacher's input.

    Args:
        x: (B, C, S, S, S) view. dropped: (B, N) bool units to drop. mode: ``zero`` or ``token``.
        grid: unit-grid edge (S / 16).
    Returns:
        (input, unit_mask): zeroed input and None, or the clean input and ``dropped`` for the mask token.
    """
    if mode == "token":
        return x, dropped
    if mode == "zero":
        keep = ~upsample_mask(dropped.to(x.device), grid, UNIT)
        return x * keep[:, None].to(x.dtype), None
    raise ValueError(f"teacher noise mode {mode!r}: expected 'zero' or 'token'")
