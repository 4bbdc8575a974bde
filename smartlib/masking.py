"""Which mask units the student sees: attention-guided masking and its comparison modes.

A mask unit is one stage-3 token (16³ voxels); masks live on the unit grid as (B, N) booleans,
True = masked. Modes:

- ``attention`` (SMART, arXiv 2310.01209; AttMask-hint, ECCV 2022, arXiv 2203.12719): mask the top
  ⌈r·N⌉ units by teacher attention, then reveal ⌊s·r·N⌋ "hint" units drawn uniformly from the top
  ⌈0.1·N⌉ (effective ratio ≈ r(1−s)).
- ``random`` (SMIT, MICCAI 2022, arXiv 2205.10342): ⌈r·N⌉ units uniformly at random.
- ``low_attention`` (MST): the ⌈r·N⌉ units the teacher attends to least.
- ``block``: one random axis-aligned box of units holding at least ⌈r·N⌉ units, trimmed to exactly ⌈r·N⌉.
- ``given``: the top ⌈r·N⌉ of an externally supplied score map (MSMAE's supervised attention,
  arXiv 2305.05871).

Randomness comes from an explicit ``torch.Generator`` so that a run can draw the whole global
batch's randomness on every process (identical masks with and without DDP) and resume exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import SmartError

__all__ = ["MASK_MODES", "num_masked", "num_hints", "make_mask", "upsample_mask", "patch_dropout"]

MASK_MODES = ("attention", "random", "low_attention", "block", "given")


def num_masked(n: int, ratio: float) -> int:
    """⌈ratio·n⌉, the number of units masked before hints are revealed."""
    return min(n, math.ceil(ratio * n - 1e-9))


def num_hints(n: int, ratio: float, hint_ratio: float) -> int:
    """⌊hint_ratio·ratio·n⌋, the number of high-attention units revealed again."""
    return math.floor(hint_ratio * ratio * n + 1e-9)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, scores.topk(k, dim=1).indices, True)
    return mask


def make_mask(
    mode: str,
    batch: int,
    n: int,
    ratio: float = 0.7,
    scores: torch.Tensor | None = None,
    hint_ratio: float = 0.1,
    hint_top: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the masked units.

    Args:
        mode: one of :data:`MASK_MODES`.
        batch: B. n: N units (a cube number for ``block``).
        ratio: r, fraction masked before hints (0 < r < 1).
        scores: (B, N) teacher attention (``attention``/``low_attention``) or external scores (``given``).
        hint_ratio: s, hints as a fraction of the masked units (``attention`` only).
        hint_top: hints are drawn from this top fraction of units.
        generator: the source of randomness.
    Returns:
        (B, N) bool, True = masked.
    """
    if mode not in MASK_MODES:
        raise SmartError(f"mask mode {mode!r}: expected one of {', '.join(MASK_MODES)}")
    if not 0.0 < ratio < 1.0:
        raise SmartError(f"mask ratio {ratio}: must lie in (0, 1)")
    if not 0.0 <= hint_ratio < 1.0 or not 0.0 < hint_top <= 1.0:
        raise SmartError(f"hint_ratio={hint_ratio}, hint_top={hint_top}: need 0 ≤ hint_ratio < 1 and 0 < hint_top ≤ 1")
    k = num_masked(n, ratio)
    if mode in ("attention", "low_attention", "given"):
        if scores is None or tuple(scores.shape) != (batch, n):
            got = None if scores is None else tuple(scores.shape)
            raise SmartError(f"mask mode {mode!r} needs scores of shape {(batch, n)}, got {got}")
        scores = scores.detach().float().cpu()
    if mode == "random":
        return _top(torch.rand(batch, n, generator=generator), k)
    if mode == "low_attention":
        return _top(-scores, k)
    if mode == "given":
        return _top(scores, k)
    if mode == "block":
        return _block(batch, n, k, generator)
    # attention: top-k, then reveal hints drawn uniformly from the top `hint_top` fraction
    mask = _top(scores, k)
    h = num_hints(n, ratio, hint_ratio)
    if h > 0:
        top = scores.topk(max(h, math.ceil(hint_top * n - 1e-9)), dim=1).indices  # (B, T)
        pick = torch.rand(top.shape, generator=generator).argsort(dim=1)[:, :h]
        mask.scatter_(1, top.gather(1, pick), False)
    return mask


def _block(batch: int, n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    g = round(n ** (1 / 3))
    if g**3 != n:
        raise SmartError(f"block masking needs a cubic unit grid, got N={n}")
    out = torch.zeros(batch, n, dtype=torch.bool)
    idx = torch.arange(n).view(g, g, g)
    for b in range(batch):
        # smallest cube-ish box with ≥ k units, at a random corner; trim random extras to exactly k
        e = 1
        while e**3 < k:
            e += 1
        sizes = [min(e, g)] * 3
        while sizes[0] * sizes[1] * sizes[2] < k:
            sizes[sizes.index(min(sizes))] += 1
        corner = [int(torch.randint(0, g - s + 1, (1,), generator=generator)) for s in sizes]
        box = idx[corner[0]:corner[0] + sizes[0], corner[1]:corner[1] + sizes[1], corner[2]:corner[2] + sizes[2]].reshape(-1)
        keep = box[torch.randperm(box.numel(), generator=generator)[:k]]
        out[b, keep] = True
    return out


def upsample_mask(mask: torch.Tensor, grid: int, factor: int) -> torch.Tensor:
    """(B, N) unit mask on a ``grid``³ lattice → (B, grid·factor, grid·factor, grid·factor)."""
    if mask.ndim != 2 or mask.shape[1] != grid**3:
        raise SmartError(f"mask shape {tuple(mask.shape)} does not fit a {grid}³ grid")
    m = mask.view(-1, 1, grid, grid, grid).float()
    return F.interpolate(m, scale_factor=factor, mode="nearest")[:, 0] > 0.5


def patch_dropout(batch: int, n: int, drop: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The noisy teacher's input noise: drop ⌈drop·N⌉ units uniformly at random → (B, N) bool, True = dropped."""
    if not 0.0 <= drop < 1.0:
        raise SmartError(f"teacher patch-drop fraction {drop}: must lie in [0, 1)")
    return _top(torch.rand(batch, n, generator=generator), num_masked(n, drop) if drop > 0 else 0)
