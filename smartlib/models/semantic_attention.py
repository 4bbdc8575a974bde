"""Semantic attention: CaiT-style class-attention blocks that give Swin a [CLS] token.

Swin has no [CLS] token, so attention-guided masking has no attention map to
rank tokens by. SMART appends two class-attention blocks (Touvron et al., CaiT,
ICCV 2021) on the stage-3 tokens: the query comes from the [CLS] token alone,
keys and values from [CLS; tokens]; LayerScale starts at 1e-4; only the [CLS]
token is updated and the image tokens pass through unchanged. The map used for
masking is the head-averaged [CLS]→token attention of the last block.

Hand-written because neither MONAI nor timm's public API exposes a 3D-agnostic
class-attention block that returns its attention weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath

__all__ = ["ClassAttention", "ClassAttentionBlock", "SemanticAttention"]


class ClassAttention(nn.Module):
    """Multi-head attention whose only query is the [CLS] token.

    Args:
        dim: token width C.
        num_heads: heads; ``dim`` must be divisible by it.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` (B, 1+N, C) = [CLS; tokens] → new [CLS] (B, 1, C), attention (B, heads, 1+N)."""
        b, n, c = u.shape
        h = self.num_heads
        q = self.q(u[:, :1]).reshape(b, 1, h, c // h).transpose(1, 2)  # (B, h, 1, d)
        k = self.k(u).reshape(b, n, h, c // h).transpose(1, 2)  # (B, h, n, d)
        v = self.v(u).reshape(b, n, h, c // h).transpose(1, 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, h, 1, n)
        cls = (attn @ v).transpose(1, 2).reshape(b, 1, c)
        return self.proj(cls), attn[:, :, 0]


class ClassAttentionBlock(nn.Module):
    """Pre-norm class-attention + MLP on the [CLS] token with LayerScale (CaiT, Eq. 3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layerscale: float = 1e-4, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), 0.0, act="GELU")
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layerscale)))
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layerscale)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, cls: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cls`` (B, 1, C), ``tokens`` (B, N, C) → updated ``cls`` (B, 1, C), attention (B, heads, 1+N)."""
        out, attn = self.attn(self.norm1(torch.cat([cls, tokens], dim=1)))
        cls = cls + self.drop_path(self.gamma1 * out)
        cls = cls + self.drop_path(self.gamma2 * self.mlp(self.norm2(cls)))
        return cls, attn


class SemanticAttention(nn.Module):
    """A learned [CLS] token refined by ``depth`` class-attention blocks over the given tokens.

    Args:
        dim: token width C (8·embed for Swin stage 3).
        num_heads: heads of each class-attention block.
        depth: number of blocks (2 in SMART).
        layerscale: LayerScale initial value (1e-4).
    """

    def __init__(self, dim: int, num_heads: int, depth: int = 2, layerscale: float = 1e-4, drop_path: float = 0.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth={depth}: need at least one class-attention block")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(ClassAttentionBlock(dim, num_heads, layerscale=layerscale, drop_path=drop_path) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` (B, N, C) → [CLS] (B, C) after the final norm, attention (B, N).

        The attention is the last block's [CLS]→token weights averaged over heads, with the
        [CLS]→[CLS] entry dropped (so it sums to slightly less than one).
        """
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        attn = None
        for blk in self.blocks:
            cls, attn = blk(cls, tokens)
        return self.norm(cls[:, 0]), attn.mean(dim=1)[:, 1:]
