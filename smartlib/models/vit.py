"""Plain 3D ViT encoder (MONAI ``ViT``) with the same masked interface as the Swin encoder.

The mask token replaces patch embeddings *before* the position embeddings are
added, as in BEiT/SimMIM, so a masked token still knows where it is. With a
ViT of patch 16 the token grid is the SMART mask-unit grid itself.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.nets import ViT

__all__ = ["MaskedViTEncoder"]


class MaskedViTEncoder(ViT):
    """MONAI ``ViT`` (no classification token) whose ``forward`` takes a token mask.

    Args:
        img_size: cubic input edge. patch_size: token edge (16). hidden_size, mlp_dim, num_layers,
        num_heads: transformer size.
    """

    def __init__(self, in_chans: int = 1, img_size: int = 128, patch_size: int = 16, hidden_size: int = 384,
                 mlp_dim: int = 1536, num_layers: int = 12, num_heads: int = 6) -> None:
        super().__init__(in_channels=in_chans, img_size=img_size, patch_size=patch_size, hidden_size=hidden_size,
                         mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads, proj_type="conv",
                         classification=False, spatial_dims=3, qkv_bias=True)
        self.grid = img_size // patch_size
        self.hidden_size = hidden_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` (B, C, D, H, W); ``mask`` (B, N) bool over the token grid → tokens (B, N, hidden), per-block states."""
        pe = self.patch_embedding
        t = pe.patch_embeddings(x).flatten(2).transpose(1, 2)  # (B, N, hidden)
        if mask is not None:
            if mask.shape != t.shape[:2]:
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match token grid {tuple(t.shape[:2])}")
            t = torch.where(mask[..., None].to(torch.bool), self.mask_token.to(t.dtype), t)
        t = pe.dropout(t + pe.position_embeddings)
        states = []
        for blk in self.blocks:
            t = blk(t)
            states.append(t)
        return self.norm(t), states

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights with MONAI ``ViT`` keys (no mask token): strict-loadable into ``monai.networks.nets.ViT``."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k != "mask_token"}
