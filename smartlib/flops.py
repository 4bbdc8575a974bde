"""FLOPs of training and inference steps: ``torch.utils.flop_counter`` on the non-fused attention path.

``FlopCounterMode`` counts matrix products and convolutions, 2 FLOPs per multiply-add (fvcore counts
multiply-adds, half as many). It does not see every kernel: on the CPU, fused
``scaled_dot_product_attention`` goes uncounted, so :func:`count_flops` switches every MONAI
``SABlock`` to its explicit ``einsum`` path (:func:`unfused_attention`) while counting. Element-wise
work (softmax, norms, GELU, adds) is not counted by torch either; in a ViT it is well under 1 % of the
products.

:func:`vit_forward_flops` is the same count done by hand — the arithmetic behind MSMAE's claim
(arXiv 2305.05871) that encoding a quarter of the tokens saves about three quarters of the compute —
and :func:`token_drop_flops` sets both side by side for a ViT at any input size. Models can be built on
the ``meta`` device, so ViT-B/16 at 128³ is counted in seconds without memory or compute.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .errors import SmartError

__all__ = ["unfused_attention", "count_flops", "vit_forward_flops", "token_drop_flops"]


@contextlib.contextmanager
def unfused_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every MONAI ``SABlock`` of ``model`` computes attention with explicit products."""
    from monai.networks.blocks.selfattention import SABlock

    blocks = [m for m in model.modules() if isinstance(m, SABlock)]
    saved = [b.use_flash_attention for b in blocks]
    try:
        for b in blocks:
            b.use_flash_attention = False
        yield model
    finally:
        for b, s in zip(blocks, saved):
            b.use_flash_attention = s


def count_flops(model: nn.Module, step: Callable[[], torch.Tensor], backward: bool = False) -> int:
    """FLOPs of ``step()`` (a forward of ``model`` returning a tensor), and of its backward when ``backward``.

    The backward is run from ``step().float().sum()`` — every gradient autograd computes is counted
    (no input gradient for the input image, which does not require one).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with unfused_attention(model), FlopCounterMode(display=False) as counter:
        if backward:
            step().float().sum().backward()
        else:
            with torch.no_grad():
                step()
    return int(counter.get_total_flops())


def vit_forward_flops(n_tokens: int, hidden: int, mlp_dim: int, layers: int, n_patches: int = 0, patch_voxels: int = 0,
                      in_channels: int = 1, n_classes: int = 0) -> int:
    """Matrix-product FLOPs of a ViT forward, by hand (2 per multiply-add).

    Per block on T tokens of width h with MLP width m: q, k, v and output projections 2·T·4h², the
    attention scores and their weighted sum 2·2·T²·h, the MLP 2·2·T·h·m. Plus the patch embedding
    (2·n_patches·patch_voxels·in_channels·h; all patches are embedded even when tokens are dropped after)
    and a linear head on 2h features (the [CLS] ‖ mean-token head of the fine-tuning studies) when
    ``n_classes`` > 0.
    """
    if min(n_tokens, hidden, mlp_dim, layers) < 1:
        raise SmartError(f"vit_forward_flops: sizes must be ≥ 1 (tokens {n_tokens}, hidden {hidden}, mlp {mlp_dim}, layers {layers})")
    block = 2 * n_tokens * 4 * hidden**2 + 4 * n_tokens**2 * hidden + 4 * n_tokens * hidden * mlp_dim
    return layers * block + 2 * n_patches * patch_voxels * in_channels * hidden + 2 * 2 * hidden * n_classes


def token_drop_flops(img_size: int, patch: int, hidden: int = 768, mlp_dim: int = 3072, layers: int = 12, heads: int = 12,
                     keep: float = 0.25, n_classes: int = 2, spatial_dims: int = 3, count: bool = True) -> list[dict[str, Any]]:
    """FLOPs per sample of a fine-tuning step with all tokens vs a token-dropping one (``keep`` of the patches).

    ViT-B/16 by default (the MSMAE backbone). Rows ``mode`` = "all tokens" / "token dropping" with
    ``tokens`` (patches entering the encoder + 1 [CLS]); ``fwd_gflops`` the forward of a training step,
    ``train_gflops`` forward + backward, ``infer_gflops`` an evaluation forward (token dropping
    evaluates with all tokens) — each by hand (:func:`vit_forward_flops`; backward = 2 × the forward
    products, except the patch embedding, whose input needs no gradient: 1 ×) and, with ``count``,
    counted on a ``meta``-device :class:`~smartlib.models.vit.ViTFeatures` + linear head by
    :func:`count_flops` (``*_counted``). The token-dropping row has ``fwd_saving`` / ``train_saving``:
    1 − its FLOPs / the all-token row's.
    """
    from .models.vit import ViTFeatures
    from .supervised_masking import split_counts

    if img_size % patch or not 0 < keep <= 1:
        raise SmartError(f"token_drop_flops: img_size={img_size} must be a multiple of patch={patch}, keep={keep} in (0, 1]")
    n = (img_size // patch) ** spatial_dims
    n_keep = split_counts(n, 1.0 - keep, 0.0)[2] if keep < 1 else n
    pv, embed = patch**spatial_dims, 2 * n * patch**spatial_dims * hidden
    net = head = x = None
    if count:  # one meta-device model (no memory, no compute) serves both rows
        from monai.networks.nets import ViT

        with torch.device("meta"):
            vit = ViT(1, img_size, patch, hidden_size=hidden, mlp_dim=mlp_dim, num_layers=layers, num_heads=heads,
                      proj_type="conv", pos_embed_type="sincos", spatial_dims=spatial_dims, qkv_bias=True)
            net = ViTFeatures(vit, (img_size // patch,) * spatial_dims, torch.zeros(1, 1, hidden))
            head = nn.Linear(2 * hidden, n_classes)
            x = torch.zeros(1, 1, *(img_size,) * spatial_dims)

    def step(keep_idx: torch.Tensor | None) -> torch.Tensor:
        o = net.encode(x, keep_idx)
        return head(torch.cat([o["cls"], o["pooled"]], dim=1))

    rows = []
    for mode, k in (("all tokens", n), ("token dropping", n_keep)):
        fwd = vit_forward_flops(k + 1, hidden, mlp_dim, layers, n, pv, 1, n_classes)
        row = {"img_size": img_size, "spatial_dims": spatial_dims, "patch": patch, "mode": mode, "tokens": k + 1, "fwd_gflops": fwd / 1e9,
               "train_gflops": (3 * fwd - embed) / 1e9, "infer_gflops": vit_forward_flops(n + 1, hidden, mlp_dim, layers, n, pv, 1, n_classes) / 1e9}
        if count:
            idx = torch.arange(k, device="meta")[None] if k < n else None
            row["fwd_gflops_counted"] = count_flops(net, lambda: step(idx)) / 1e9
            row["train_gflops_counted"] = count_flops(net, lambda: step(idx), backward=True) / 1e9
            row["infer_gflops_counted"] = count_flops(net, lambda: step(None)) / 1e9
        rows.append(row)
    for key in [k for k in rows[0] if k.startswith(("fwd_gflops", "train_gflops"))]:
        rows[1][key.replace("gflops", "saving")] = 1.0 - rows[1][key] / rows[0][key]
    return rows
