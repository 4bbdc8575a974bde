"""MONAI's ``MaskedAutoEncoderViT`` with a three-way mask and a [CLS] classifier (MAE / MSMAE).

MONAI's MAE (arXiv 2111.06377) keeps a random share of the patches and reconstructs the rest. MSMAE
(arXiv 2305.05871) splits the patches three ways (:mod:`smartlib.supervised_masking`): *visible*
patches are encoded; *masked* ones are reconstructed from mask tokens; *thrown* ones are dropped
altogether — they reach neither the encoder, nor the decoder (whose input is the [CLS] token, the
visible tokens and one mask token per masked patch, each with its position embedding), nor the
loss. Its [CLS] token feeds a linear classifier trained alongside (masked MSE + 0.1 × cross-entropy),
and the last encoder block's [CLS]→patch attention of that supervised model chooses the next masks.

Plain MAE is the same model with a split that throws nothing (and no classifier). Weights keep
MONAI's names, so :meth:`SplitMaskedAutoEncoder.vit_state_dict` loads strictly into
``monai.networks.nets.ViT`` (:func:`smartlib.models.vit.export_vit`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from einops import rearrange
from monai.networks.nets import MaskedAutoEncoderViT

from ..errors import SmartError
from ..supervised_masking import head_normalised, state_indices
from .vit import export_vit, vit_tokens

__all__ = ["SplitMaskedAutoEncoder", "MAEOutput"]


@dataclasses.dataclass
class MAEOutput:
    """One forward pass: ``pred`` (B, n_mask, C·p^d) predicted voxels of the masked patches ``masked``
    (B, n_mask) indices; ``visible`` (B, n_visible) the encoded patches; ``logits`` (B, K) or None."""

    pred: torch.Tensor
    masked: torch.Tensor
    visible: torch.Tensor
    logits: torch.Tensor | None


class SplitMaskedAutoEncoder(MaskedAutoEncoderViT):
    """``MaskedAutoEncoderViT`` whose masking is a visible / masked / thrown split, plus an optional classifier.

    Args: MONAI's (``qkv_bias=True``, conv patch embedding, fixed sin-cos position embeddings in encoder
    and decoder); ``n_classes`` > 0 adds the [CLS] → linear classifier of MSMAE.
    """

    def __init__(self, in_channels: int = 1, img_size: int = 32, patch_size: int = 8, hidden_size: int = 96,
                 mlp_dim: int = 384, num_layers: int = 4, num_heads: int = 4, decoder_hidden_size: int = 48,
                 decoder_mlp_dim: int = 192, decoder_num_layers: int = 2, decoder_num_heads: int = 4,
                 spatial_dims: int = 3, n_classes: int = 0) -> None:
        try:
            super().__init__(in_channels, img_size, patch_size, hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers,
                             num_heads=num_heads, decoder_hidden_size=decoder_hidden_size, decoder_mlp_dim=decoder_mlp_dim,
                             decoder_num_layers=decoder_num_layers, decoder_num_heads=decoder_num_heads, proj_type="conv",
                             pos_embed_type="sincos", decoder_pos_embed_type="sincos", spatial_dims=spatial_dims, qkv_bias=True)
        except (ValueError, AssertionError) as exc:
            raise SmartError(f"MAE architecture: {exc}") from None
        self.vit_args = {"in_channels": in_channels, "img_size": img_size, "patch_size": patch_size, "hidden_size": hidden_size,
                         "mlp_dim": mlp_dim, "num_layers": num_layers, "num_heads": num_heads, "proj_type": "conv",
                         "pos_embed_type": "sincos", "spatial_dims": spatial_dims, "qkv_bias": True}
        self.grid = tuple(s // p for s, p in zip(self.img_size, self.patch_size))
        self.n_patches = int(torch.tensor(self.grid).prod())
        self.head = nn.Linear(hidden_size, n_classes) if n_classes > 0 else None

    # ------------------------------------------------------------------ pieces
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) → (B, N, p^d·C) voxels per patch, patches in the order of MONAI's conv patch embedding."""
        if self.spatial_dims == 3:
            return rearrange(x, "b c (d p) (h q) (w r) -> b (d h w) (p q r c)", p=self.patch_size[0], q=self.patch_size[1],
                             r=self.patch_size[2])
        return rearrange(x, "b c (h q) (w r) -> b (h w) (q r c)", q=self.patch_size[0], r=self.patch_size[1])

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[2:]) != tuple(self.img_size) or x.ndim != self.spatial_dims + 2:
            raise SmartError(f"MAE input of shape {tuple(x.shape)}: expected (B, C, {', '.join(map(str, self.img_size))})")

    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None, attention: bool = False):
        """Encoder on the patches ``keep`` (B, n) (all when None): (B, 1 + n, C) tokens, [CLS] first, and the
        last block's attention (B, H, T, T) when ``attention``."""
        return vit_tokens(self.patch_embedding(x), self.blocks[:-1], self.blocks[-1], self.cls_token, keep, attention)

    # ------------------------------------------------------------------ forward / loss
    def forward(self, x: torch.Tensor, state: torch.Tensor) -> MAEOutput:  # type: ignore[override]
        """x (B, C, *S); state (B, N) int8 of :data:`~smartlib.supervised_masking.VISIBLE` / ``MASKED`` / ``THROWN``."""
        self._check(x)
        if tuple(state.shape) != (x.shape[0], self.n_patches):
            raise SmartError(f"mask state of shape {tuple(state.shape)}: expected (B, N) = {(x.shape[0], self.n_patches)}")
        visible, masked = state_indices(state.cpu())
        visible, masked = visible.to(x.device), masked.to(x.device)
        enc, _ = self.encode(x, visible)
        logits = self.head(enc[:, 0]) if self.head is not None else None
        # decoder: [CLS], the visible tokens and one mask token per masked patch, each with its position;
        # thrown patches are simply absent
        d = self.decoder_embed(enc)
        pos = self.decoder_pos_embedding.to(d.dtype).expand(x.shape[0], -1, -1)
        take = lambda idx: torch.gather(pos, 1, idx[..., None].expand(-1, -1, pos.shape[-1]))  # noqa: E731
        mask_tok = self.mask_tokens.to(d.dtype).expand(x.shape[0], masked.shape[1], -1)
        seq = torch.cat([d[:, :1], d[:, 1:] + take(visible), mask_tok + take(masked)], dim=1)
        out = self.decoder_pred(self.decoder_blocks(seq))
        return MAEOutput(pred=out[:, 1 + visible.shape[1]:], masked=masked, visible=visible, logits=logits)

    def loss(self, x: torch.Tensor, out: MAEOutput, labels: torch.Tensor | None = None,
             cls_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked MSE over the masked patches' voxels (+ ``cls_weight`` × cross-entropy of the [CLS]
        classifier when ``labels`` (B,) are given) → (loss, {"mse", "ce"})."""
        target = torch.gather(self.patchify(x), 1, out.masked[..., None].expand(-1, -1, out.pred.shape[-1]))
        mse = (out.pred.float() - target.float()).pow(2).mean()
        terms = {"mse": float(mse.detach())}
        if labels is None or out.logits is None:
            return mse, terms
        ce = nn.functional.cross_entropy(out.logits.float(), labels)
        terms["ce"] = float(ce.detach())
        return mse + cls_weight * ce, terms

    @torch.no_grad()
    def cls_attention(self, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Supervised attention of ``x`` (B, C, *S) on all patches: (B, *grid), per-head min–max, head mean."""
        was = self.training
        self.eval()
        maps = [head_normalised(self.encode(x[i:i + batch_size], attention=True)[1]) for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(maps).view(-1, *self.grid)

    # ------------------------------------------------------------------ export
    def vit_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under ``monai.networks.nets.ViT(classification=False)`` keys."""
        last = len(self.blocks) - 1  # MONAI's MAE ends its encoder Sequential with the final LayerNorm
        out = {}
        for k, v in self.state_dict().items():
            if k.startswith("patch_embedding."):
                out[k] = v
            elif k.startswith("blocks."):
                i, rest = k[len("blocks."):].split(".", 1)
                out[f"norm.{rest}" if int(i) == last else k] = v
        return out

    def export(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
        """Write the encoder as a ``smart-vit/1`` file (:func:`smartlib.models.vit.export_vit`) with its [CLS] token."""
        return export_vit(path, self.vit_args, self.vit_state_dict(), self.cls_token, meta)
