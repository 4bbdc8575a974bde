"""Plain ViT encoders (MONAI ``ViT``): SMART's masked ViT, and one export format for MAE / MSMAE encoders.

* :class:`MaskedViTEncoder` — a 3D ViT with the same masked interface as the Swin encoder. The mask
  token replaces patch embeddings *before* the position embeddings are added, as in BEiT/SimMIM, so a
  masked token still knows where it is. With a ViT of patch 16 the token grid is the SMART mask-unit grid.
* :func:`export_vit` / :func:`load_vit` — the ``smart-vit/1`` file: ViT arguments, a state dict that
  ``monai.networks.nets.ViT(classification=False)`` loads with strict keys, and the [CLS] token
  (2D and 3D). :class:`ViTFeatures` gives such a ViT the ``encode`` interface of the downstream studies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from monai.networks.nets import ViT
from monai.utils import ensure_tuple_rep

from ..errors import SmartError

__all__ = ["MaskedViTEncoder", "VIT_FORMAT", "VIT_ARGS", "export_vit", "read_vit_export", "load_vit", "vit_tokens",
           "ViTFeatures", "load_vit_features", "vit_grid"]


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


# ------------------------------------------------------------------------------------------------------------
# Plain MONAI ViT exports: one file format, written by :func:`export_vit` and read by :func:`load_vit`.
# The MAE / MSMAE pretraining loop (:mod:`smartlib.mae`) writes them; the downstream studies read them
# through :class:`ViTFeatures`, which gives a ViT the ``encode`` interface of :class:`~smartlib.models.smart.SMARTNet`.

VIT_FORMAT = "smart-vit/1"
#: the ``monai.networks.nets.ViT`` arguments an export records (``classification`` is always False)
VIT_ARGS = ("in_channels", "img_size", "patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads", "proj_type",
            "pos_embed_type", "spatial_dims", "qkv_bias")


def export_vit(path: str | os.PathLike, model: Mapping[str, Any], encoder: Mapping[str, torch.Tensor],
               cls_token: torch.Tensor | None = None, meta: Mapping[str, Any] | None = None) -> Path:
    """Write a ViT encoder atomically as ``{"format": "smart-vit/1", "model", "encoder", "cls_token", "meta"}``.

    Args:
        model: ``monai.networks.nets.ViT`` keyword arguments (exactly :data:`VIT_ARGS`).
        encoder: a state dict that ``ViT(**model, classification=False)`` loads with strict keys.
        cls_token: (1, 1, hidden) the pretrained [CLS] token (MAE / MSMAE have one; MONAI's ViT without
            classification has none, so it travels beside the weights), or None.
        meta: plain JSON-like facts about the run (method, classes, …).
    """
    from ..io import save_torch

    if set(model) != set(VIT_ARGS):
        raise SmartError(f"export_vit: model arguments {sorted(model)} must be exactly {list(VIT_ARGS)}")
    blob = {"format": VIT_FORMAT, "model": dict(model), "encoder": {k: v.detach().cpu().clone() for k, v in encoder.items()},
            "cls_token": None if cls_token is None else cls_token.detach().cpu().clone(), "meta": dict(meta or {})}
    return save_torch(blob, path)


def read_vit_export(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a ViT export; a file of another format is a SmartError naming it."""
    from ..io import load_torch

    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != VIT_FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise SmartError(f"{path}: not a ViT export (format {got!r}, expected {VIT_FORMAT!r}: written by pretrain_mae / export_vit)")
    if not isinstance(blob.get("model"), dict) or not isinstance(blob.get("encoder"), dict) or set(blob["model"]) != set(VIT_ARGS):
        raise SmartError(f"{path}: incomplete ViT export (needs 'model' with {', '.join(VIT_ARGS)} and an 'encoder' state dict)")
    return blob


def _strict_load(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    from ..io import describe_key_mismatch

    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        keys = describe_key_mismatch(module.state_dict(), state)
        shapes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:2]
        raise SmartError(f"{path}: weights do not match the ViT architecture ({keys or '; '.join(shapes) or str(exc).strip().splitlines()[-1]})") from None


def load_vit(path: str | os.PathLike, **overrides: Any) -> ViT:
    """``monai.networks.nets.ViT`` (``classification=False``) rebuilt from a ViT export with strict key matching.

    ``overrides`` change ViT arguments that leave the weights' shapes alone (``dropout_rate``,
    ``save_attn``, …); one that changes a shape (``img_size``, ``hidden_size``) fails the strict load,
    naming the file. Works for 2D (``spatial_dims=2``) and 3D exports alike.
    """
    blob = read_vit_export(path)
    kwargs = {**blob["model"], **overrides, "classification": False}
    try:
        vit = ViT(**kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise SmartError(f"{path}: cannot build the ViT ({exc})") from None
    _strict_load(vit, blob["encoder"], path)
    return vit


def vit_tokens(embedded: torch.Tensor, blocks: Sequence[nn.Module], norm: nn.Module, cls_token: torch.Tensor | None = None,
               keep: torch.Tensor | None = None, attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ViT trunk on patch embeddings (position embeddings already added), optionally on a subset of tokens.

    Args:
        embedded: (B, N, C) patch + position embeddings.
        blocks: MONAI ``TransformerBlock`` s. norm: the final LayerNorm.
        cls_token: (1, 1, C) prepended when given. keep: (B, n) indices of the tokens that enter (all when None).
        attention: also return the last block's attention probabilities (B, H, T, T), T = tokens entering
            (+1 with a [CLS]); read from MONAI's ``save_attn`` on the non-fused path.
    Returns:
        (B, T, C) normalised tokens ([CLS] first when given) and the attention or None.
    """
    x = embedded if keep is None else torch.gather(embedded, 1, keep[..., None].expand(-1, -1, embedded.shape[-1]))
    if cls_token is not None:
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
    last = blocks[-1].attn
    saved = last.save_attn, last.use_flash_attention
    if attention:  # MONAI keeps the probabilities only on its explicit (non-fused) path
        last.save_attn, last.use_flash_attention = True, False
    try:
        for blk in blocks:
            x = blk(x)
    finally:
        last.save_attn, last.use_flash_attention = saved
    return norm(x), (last.att_mat if attention else None)


class ViTFeatures(nn.Module):
    """A MONAI ViT and its pretrained [CLS] token with the ``encode`` interface of the downstream studies.

    ``encode(x)`` returns ``cls`` (B, C) — the [CLS] token's output, or the token mean when the export
    has none — and ``pooled`` (B, C) the mean of the patch tokens, like ``SMARTNet.encode``;
    ``token_dim`` / ``pool_dim`` give their widths. ``encode(x, keep)`` runs only the patch tokens
    ``keep`` (B, n) (token-dropping fine-tuning, arXiv 2305.05871).
    """

    def __init__(self, vit: ViT, grid: Sequence[int], cls_token: torch.Tensor | None = None) -> None:
        super().__init__()
        self.vit = vit
        self.grid = tuple(int(g) for g in grid)  #: the patch grid, e.g. (4, 4, 4)
        self.cls_token = None if cls_token is None else nn.Parameter(cls_token.detach().clone())
        self.token_dim = self.pool_dim = int(vit.norm.normalized_shape[0])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, *spatial) → (B, N, C) patch + position embeddings."""
        return self.vit.patch_embedding(x)

    def encode(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Features of ``x`` (B, C_in, *spatial); ``keep`` (B, n) token indices or None (all)."""
        t, _ = vit_tokens(self.embed(x), self.vit.blocks, self.vit.norm, self.cls_token, keep)
        tokens = t[:, 1:] if self.cls_token is not None else t
        pooled = tokens.mean(dim=1)
        return {"cls": t[:, 0] if self.cls_token is not None else pooled, "pooled": pooled, "tokens": tokens}

    @torch.no_grad()
    def cls_attention(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """The supervised-attention map of ``x`` (B, C_in, *spatial): (B, N), per-head min–max, head mean
        (:func:`smartlib.supervised_masking.head_normalised`); needs a [CLS] token."""
        from ..supervised_masking import head_normalised

        if self.cls_token is None:
            raise SmartError("this ViT export has no [CLS] token: it has no [CLS]→patch attention")
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(x), batch_size):
            _, att = vit_tokens(self.embed(x[i:i + batch_size]), self.vit.blocks, self.vit.norm, self.cls_token, attention=True)
            out.append(head_normalised(att))
        self.train(was)
        return torch.cat(out)


def load_vit_features(path: str | os.PathLike, **overrides: Any) -> ViTFeatures:
    """:class:`ViTFeatures` of a ViT export (strict load, :func:`load_vit`), with its [CLS] token when it has one."""
    blob = read_vit_export(path)
    vit = load_vit(path, **overrides)
    cls = blob.get("cls_token")
    if cls is not None and tuple(cls.shape) != (1, 1, int(blob["model"]["hidden_size"])):
        raise SmartError(f"{path}: cls_token of shape {tuple(cls.shape)} does not fit hidden size {blob['model']['hidden_size']}")
    return ViTFeatures(vit, vit_grid(blob["model"]), cls)


def vit_grid(model: Mapping[str, Any]) -> tuple[int, ...]:
    """The patch grid of ViT arguments ``model``: ``img_size // patch_size`` per spatial axis."""
    d = int(model["spatial_dims"])
    return tuple(int(i) // int(p) for i, p in zip(ensure_tuple_rep(model["img_size"], d), ensure_tuple_rep(model["patch_size"], d)))
