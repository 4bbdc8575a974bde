"""Projection heads for distillation and the linear reconstruction head for masked image modelling."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead", "ReconstructionHead"]


class DINOHead(nn.Module):
    """DINO/iBOT projection head: MLP → bottleneck → L2-normalise → weight-normalised linear to K prototypes.

    Written out (about 30 lines) rather than imported because the reference implementations
    (DINO, iBOT, lightly) differ in defaults; this one follows the DINO paper exactly and uses
    torch's parametrised ``weight_norm`` with the magnitude frozen at 1 (``norm_last_layer``).

    Args:
        in_dim: input width. hidden: MLP width (2048). bottleneck: 256. prototypes: K (8192).
        nlayers: MLP depth (3).
    Shapes: (..., in_dim) → (..., prototypes).
    """

    def __init__(self, in_dim: int, prototypes: int = 8192, hidden: int = 2048, bottleneck: int = 256, nlayers: int = 3) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers={nlayers}: need at least one layer")
        dims = [in_dim] + [hidden] * (nlayers - 1) + [bottleneck]
        layers: list[nn.Module] = []
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        g.data.fill_(1.0)
        g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class ReconstructionHead(nn.Module):
    """One linear layer from each deep token to the voxels it covers (pixel-shuffle style).

    Args:
        in_dim: token width (16·embed at Swin stage 4).
        unit: voxels per token edge (32 for Swin stage 4, the patch size for a ViT).
        out_chans: image channels.
    Shapes: (B, in_dim, d, h, w) → (B, out_chans, d·unit, h·unit, w·unit).
    """

    def __init__(self, in_dim: int, unit: int, out_chans: int = 1) -> None:
        super().__init__()
        self.unit, self.out_chans = unit, out_chans
        self.proj = nn.Linear(in_dim, out_chans * unit**3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(rearrange(x, "b c d h w -> b d h w c"))
        u = self.unit
        return rearrange(y, "b d h w (c p q r) -> b c (d p) (h q) (w r)", c=self.out_chans, p=u, q=u, r=u)
