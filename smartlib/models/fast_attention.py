"""Faster window attention for MONAI's 3D Swin, swapped in at construction time (same weights, same math).

MONAI's ``WindowAttention`` computes ``softmax(q·kᵀ·scale + relative-position bias [+ shift mask])·v``
for every window. With the small windows of CPU-sized encoders (2³ = 8 tokens) two of its operators
are far slower than the arithmetic they do, both measured on a 2-core x86 CPU with torch 2.13
(``benchmarks/bench_speed.py`` prints the effect on a whole SMART step):

* ``torch.softmax`` over a last dimension of 8 costs ~20 ns per element (its last-dimension kernel
  pays a fixed cost per row), about 5× the same softmax written as ``exp(s − max) / Σ`` — so
  :class:`RowSoftmax` is that composition, with the closed-form backward
  ``∂s = p ⊙ (∂p − Σ ∂p ⊙ p)`` (one fused pass instead of autograd through four operators);
* without gradients (the EMA teacher, feature extraction, sliding-window inference) and windows of
  :data:`SHORT_ROWS` tokens or more (the paper's 4³ = 64), the whole attention is one
  ``torch.nn.functional.scaled_dot_product_attention`` call with the bias and mask folded into
  ``attn_mask`` (MONAI's own ``use_flash_attention`` path, which it takes only without gradients: the
  bias table is learned, and the fused kernels return no gradient for a mask) — 0.68× of MONAI's
  no-grad attention time at 4³ windows; for 2³ windows the fused call gains nothing over the row softmax.

Nothing else changes: :class:`FastWindowAttention` is a subclass whose parameters, buffers and
state-dict keys are MONAI's, and :func:`accelerate` only swaps the class of every MONAI
``WindowAttention`` inside a module (a ``SwinTransformer``, a ``SwinUNETR``, SMART's encoder), so
checkpoints load and export exactly as before and ``accelerate(model, False)`` swaps back.
``tests/test_fast_attention.py`` checks outputs and gradients (input, weights, bias table) against
MONAI's forward, with and without the shifted-window mask.

Why hand-written: neither MONAI nor torch has a fast softmax for short rows, and torch's fused
attention kernels return no gradient for an additive mask, which Swin's learned bias needs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import WindowAttention

__all__ = ["RowSoftmax", "row_softmax", "ChunkedWindowAttention", "FastWindowAttention", "accelerate", "SHORT_ROWS"]

#: rows shorter than this use :class:`RowSoftmax`; longer ones ``torch.softmax`` (whose kernel is fast there)
SHORT_ROWS = 32


class RowSoftmax(torch.autograd.Function):
    """Softmax over the last dimension, ``exp(s − max) / Σ exp(s − max)``, computed in float32.

    Shapes: (..., n) → (..., n) float32. Backward: ``∂s = p ⊙ (∂p − Σ_j ∂p_j p_j)``.
    """

    @staticmethod
    def forward(ctx, s: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        s = s.float()
        p = (s - s.amax(dim=-1, keepdim=True)).exp_()
        p.div_(p.sum(dim=-1, keepdim=True))
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        grad = grad.float()
        return p * (grad - (grad * p).sum(dim=-1, keepdim=True))


def row_softmax(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension: :class:`RowSoftmax` for rows shorter than :data:`SHORT_ROWS`,
    else ``torch.softmax`` (both in float32)."""
    if s.shape[-1] < SHORT_ROWS:
        return RowSoftmax.apply(s)
    return torch.softmax(s.float(), dim=-1)


class ChunkedWindowAttention(torch.autograd.Function):
    """``softmax(q·kᵀ·scale + bias [+ mask])·v`` over windows, a chunk of windows at a time, recomputing
    the attention in the backward pass instead of storing it (the FlashAttention recipe, Dao et al. 2022,
    arXiv 2205.14135, at the granularity of whole windows).

    For windows of 4³ = 64 tokens the attention matrices outweigh the activations; stored whole for the
    backward pass they leave the CPU's caches at large crops, which made a step at 128³ cost more per voxel
    than at 64³. Here each chunk's scores live only while that chunk is computed; the backward pass
    recomputes them from ``q, k, v`` and the row log-sum-exp, and accumulates the gradient of the learned
    bias (torch's fused attention kernels give none for an additive mask on the CPU).

    Shapes: ``q, k, v`` (W, h, n, d) for W = B·nW windows; ``bias`` (h, n, n); ``mask`` (nW, n, n) or None,
    window ``i`` using ``mask[i % nW]``. Returns (W, h, n, d) in ``v``'s dtype (arithmetic in float32).
    """

    @staticmethod
    def _scores(q, k, bias, mask, scale, sl):
        s = torch.matmul(q[sl], k[sl].transpose(-2, -1)).mul_(scale).add_(bias)
        if mask is not None:
            idx = torch.arange(sl.start, sl.stop, device=q.device) % mask.shape[0]
            s.add_(mask[idx].unsqueeze(1))
        return s

    #: scores held at once (≈ 1 MiB of float32: a chunk fits a core's L2 cache)
    CHUNK_SCORES = 1 << 18

    @staticmethod
    def _chunks(w: int, h: int, n: int):
        step = max(1, ChunkedWindowAttention.CHUNK_SCORES // (h * n * n))
        return [slice(i, min(w, i + step)) for i in range(0, w, step)]

    @staticmethod
    def forward(ctx, q, k, v, bias, mask, scale):  # type: ignore[override]
        dtype = v.dtype
        ct = torch.promote_types(dtype, torch.float32)  # float32 arithmetic (float64 stays float64)
        q, k, v, bias = q.to(ct), k.to(ct), v.to(ct), bias.to(ct)
        mask = None if mask is None else mask.to(ct)
        w, h, n, _ = q.shape
        out = torch.empty_like(v)
        lse = torch.empty(w, h, n, 1, device=q.device, dtype=ct)
        for sl in ChunkedWindowAttention._chunks(w, h, n):
            s = ChunkedWindowAttention._scores(q, k, bias, mask, scale, sl)
            m = s.amax(dim=-1, keepdim=True)
            p = s.sub_(m).exp_()
            total = p.sum(dim=-1, keepdim=True)
            out[sl] = torch.matmul(p.div_(total), v[sl])
            lse[sl] = m + total.log()
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.mask, ctx.scale, ctx.dtypes = mask, scale, dtype
        return out.to(dtype)

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, bias, out, lse = ctx.saved_tensors
        mask, scale = ctx.mask, ctx.scale
        dout = dout.to(q.dtype)
        w, h, n, _ = q.shape
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbias = torch.zeros_like(bias)
        delta = (dout * out).sum(dim=-1, keepdim=True)  # (W, h, n, 1): Σ_j ∂p_ij p_ij
        for sl in ChunkedWindowAttention._chunks(w, h, n):
            p = ChunkedWindowAttention._scores(q, k, bias, mask, scale, sl).sub_(lse[sl]).exp_()
            dv[sl] = torch.matmul(p.transpose(-2, -1), dout[sl])
            ds = p.mul_(torch.matmul(dout[sl], v[sl].transpose(-2, -1)).sub_(delta[sl]))
            dbias += ds.sum(dim=0)
            dq[sl] = torch.matmul(ds, k[sl]).mul_(scale)
            dk[sl] = torch.matmul(ds.transpose(-2, -1), q[sl]).mul_(scale)
        dt = ctx.dtypes
        return dq.to(dt), dk.to(dt), dv.to(dt), dbias.to(dt), None, None


class FastWindowAttention(WindowAttention):
    """MONAI ``WindowAttention`` with the faster softmax and, without gradients, one fused attention call.

    Inputs as MONAI's: ``x`` (B·nW, n, C) window tokens, ``mask`` (nW, n, n) additive shift mask or
    None. Returns (B·nW, n, C).
    """

    def _bias(self, n: int) -> torch.Tensor:
        """The learned relative-position bias of an n-token window: (heads, n, n)."""
        idx = self.relative_position_index[:n, :n].reshape(-1)
        return self.relative_position_bias_table[idx].reshape(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # (B·nW, h, n, d) each
        bias = self._bias(n)
        if not torch.is_grad_enabled() and n >= SHORT_ROWS:
            if mask is not None:
                nw = mask.shape[0]
                bias = (bias.view(1, 1, h, n, n) + mask.view(1, nw, 1, n, n)).expand(b // nw, nw, h, n, n).reshape(b, h, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale)
        elif n >= SHORT_ROWS and x.device.type == "cpu" and not (self.training and self.attn_drop.p > 0):
            out = ChunkedWindowAttention.apply(q, k, v, bias, mask, self.scale)
        else:
            s = (q * self.scale) @ k.transpose(-2, -1) + bias
            if mask is not None:
                nw = mask.shape[0]
                s = (s.view(b // nw, nw, h, n, n) + mask.view(1, nw, 1, n, n)).view(b, h, n, n)
            out = self.attn_drop(row_softmax(s)).to(v.dtype) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


def accelerate(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Swap every MONAI ``WindowAttention`` inside ``module`` to :class:`FastWindowAttention` (or back
    with ``enabled=False``), in place; parameters, buffers and state-dict keys are untouched.

    Returns ``module``. Works on any module tree holding MONAI Swin blocks (``SwinTransformer``,
    ``SwinUNETR``, :class:`smartlib.models.swin.MaskedSwinEncoder`).
    """
    for m in module.modules():
        if isinstance(m, WindowAttention):
            m.__class__ = FastWindowAttention if enabled else WindowAttention
    return module
