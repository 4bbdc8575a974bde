"""Label tokens (LT-ViT, arXiv 2311.07263): one learned token per label, attending jointly with multi-scale image tokens.

**LT-ViT** (:class:`LabelTokenViT`) joins K randomly initialised label tokens to a MONAI ``ViT`` (2D or 3D, one code
path via ``spatial_dims``). The first ``L − label_blocks`` blocks see image tokens only; their outputs after the
blocks listed in ``depths`` are kept (the multi-scale part: a shallow depth keeps local detail, the deepest is the
stream that continues). The last ``label_blocks`` blocks of the *same* ViT then run on one joint sequence::

    [ label tokens (K) ; stream tokens (N) ; tokens of each earlier depth + a learned depth embedding (N each) ]

so every label token attends to every image token of every chosen depth, and the image tokens attend to the
labels and to each other (joint self-attention, MONAI ``TransformerBlock``). After the ViT's final norm, label
token k gives label k's logit through its own weight vector (:class:`PerLabelLinear`). The loss is
``BCEWithLogits`` with per-label positive weights (the training study sets them).

**Per-label maps** (:meth:`LabelTokenViT.label_maps`): label→image attention of the label blocks (MONAI's
``save_attn``), averaged over heads, summed over the label blocks, summed over the depths that share a patch
position, reshaped to the patch grid — the pattern of per-class token attention maps (MCTformer, arXiv
2203.02891). No gradients are needed: this is the explanation LT-ViT offers instead of Grad-CAM.

**The [CLS] baseline** (:class:`ClsViT`): the same ViT with one [CLS] token from the input on and a linear
K-label head — the pure-ViT baseline LT-ViT is compared with. For MONAI's ``GradCAM`` / ``GradCAMpp``, which hook a
named layer whose output is (B, C, *spatial), the patch tokens that *enter the last block* pass through
:class:`TokensToGrid` (a reshape to the patch grid and back, no parameters): the last block's [CLS] output depends
on exactly these tokens, so their gradient is the Grad-CAM weight (the usual ViT Grad-CAM target, the input of the
last block's attention). Target layer name: ``"to_grid"``.

**Swin-stage label tokens** (:class:`LabelTokenSwin`) — *this project's extension, not the paper's*: a SMART Swin
encoder's stage-2/3/4 token maps (strides 8, 16, 32) are the multi-scale input; each stage is projected to a common
width with its own position embedding, and ``depth`` new transformer blocks run on ``[K label tokens; all stage
tokens]``. Its maps live on the finest stage's grid (a coarser token's attention is spread evenly over the finer
cells it covers). With ``mode="cls"`` the same module holds one [CLS] token and a linear K-label head: the
baseline of the extension, with ``to_grid`` on the finest stage's projected tokens for Grad-CAM. The encoder is
frozen by default (``freeze_encoder``): the study then computes the stage features once per init.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import TransformerBlock

from ..errors import SmartError

__all__ = ["PerLabelLinear", "TokensToGrid", "LabelTokenViT", "ClsViT", "LabelTokenSwin", "joint_attention", "HEADS"]

#: the two heads compared everywhere: label tokens and the one-[CLS]-token baseline
HEADS: tuple[str, ...] = ("label-tokens", "cls")


class PerLabelLinear(nn.Module):
    """Logit k = ⟨w_k, t_k⟩ + b_k: one weight vector per label token. (B, K, C) → (B, K)."""

    def __init__(self, n_labels: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_labels, dim))
        self.bias = nn.Parameter(torch.zeros(n_labels))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens * self.weight).sum(-1) + self.bias


class TokensToGrid(nn.Module):
    """Patch tokens (B, N, C) ↔ a grid (B, C, *grid): ``forward`` reshapes to the grid (what Grad-CAM hooks),
    :meth:`back` flattens again. No parameters."""

    def __init__(self, grid: Sequence[int]) -> None:
        super().__init__()
        self.grid = tuple(int(g) for g in grid)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, *self.grid)

    @staticmethod
    def back(grid: torch.Tensor) -> torch.Tensor:
        return grid.flatten(2).transpose(1, 2)


def _check_labels(n_labels: int) -> int:
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise SmartError(f"n_labels={n_labels!r}: must be a positive integer")
    return n_labels


def _save_attn(blocks: Sequence[nn.Module], on: bool) -> None:
    for blk in blocks:
        blk.attn.save_attn = on


def joint_attention(blocks: Sequence[nn.Module], n_query: int) -> torch.Tensor:
    """Query→image attention saved by MONAI blocks run with ``save_attn``: each block's (B, H, T, T) matrix, rows of
    the first ``n_query`` tokens, columns of the others, averaged over heads, summed over blocks → (B, n_query, T − n_query)."""
    mats = [blk.attn.att_mat for blk in blocks]
    return torch.stack([m[:, :, :n_query, n_query:].mean(dim=1) for m in mats]).sum(dim=0)


def _grid(vit: nn.Module) -> tuple[int, ...]:
    pe = vit.patch_embedding
    n = pe.n_patches
    d = pe.spatial_dims if hasattr(pe, "spatial_dims") else len(pe.patch_embeddings.kernel_size)
    g = round(n ** (1.0 / d))
    if g ** d != n:
        raise SmartError(f"a ViT with {n} patches: label maps need a square / cubic patch grid")
    return (g,) * d


class LabelTokenViT(nn.Module):
    """LT-ViT: label tokens in the last ``label_blocks`` blocks of a MONAI ``ViT``, with tokens from several depths.

    Args:
        vit: a MONAI ``ViT`` built with ``classification=False`` (its weights are the init: scratch or pretrained).
        n_labels: K. label_blocks: how many final blocks the label tokens take part in (≥ 1).
        depths: the depths (number of blocks done, 0 = the patch embedding) whose image tokens enter the label
            blocks; the largest must be ``L − label_blocks`` (the stream that continues), e.g. (1, 2) for L = 4.

    Shapes: ``forward`` (B, C, *spatial) → logits (B, K); ``label_maps`` → (B, K, *grid).
    """

    def __init__(self, vit: nn.Module, n_labels: int, label_blocks: int = 2, depths: Sequence[int] | None = None) -> None:
        super().__init__()
        n_labels = _check_labels(n_labels)
        n_blocks = len(vit.blocks)
        if isinstance(label_blocks, bool) or not isinstance(label_blocks, int) or not 1 <= label_blocks <= n_blocks:
            raise SmartError(f"label_blocks={label_blocks!r}: must be an integer in [1, {n_blocks}] (the ViT has {n_blocks} blocks)")
        start = n_blocks - label_blocks
        depths = tuple(sorted({int(d) for d in (depths if depths is not None else (max(start - 1, 0), start))}))
        if depths[-1] != start or depths[0] < 0:
            raise SmartError(f"depths={list(depths)}: must lie in [0, {start}] and include {start} (the blocks before the "
                             f"{label_blocks} label blocks)")
        if hasattr(vit, "cls_token") or hasattr(vit, "classification_head"):
            raise SmartError("LabelTokenViT: build the ViT with classification=False (the label tokens replace [CLS])")
        self.vit, self.n_labels, self.start, self.depths = vit, n_labels, start, depths
        self.grid = _grid(vit)
        hidden = vit.norm.normalized_shape[0]
        self.label_tokens = nn.Parameter(torch.empty(1, n_labels, hidden))
        self.depth_embed = nn.Parameter(torch.zeros(len(depths) - 1, 1, hidden))
        nn.init.trunc_normal_(self.label_tokens, std=0.02)
        nn.init.trunc_normal_(self.depth_embed, std=0.02)
        self.head = PerLabelLinear(n_labels, hidden)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters that are not the ViT's (label tokens, depth embeddings, per-label head)."""
        return [self.label_tokens, self.depth_embed, *self.head.parameters()]

    def tokens_by_depth(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Image tokens (B, N, C) after each chosen depth."""
        t = self.vit.patch_embedding(x)
        out = {0: t} if 0 in self.depths else {}
        for i in range(self.start):
            t = self.vit.blocks[i](t)
            if i + 1 in self.depths:
                out[i + 1] = t
        return out

    def forward_tokens(self, tokens: dict[int, torch.Tensor]) -> torch.Tensor:
        """Logits (B, K) from :meth:`tokens_by_depth`'s output (perturb one depth to see that the labels use it)."""
        stream = tokens[self.start]
        extra = [tokens[d] + self.depth_embed[i] for i, d in enumerate(self.depths[:-1])]
        seq = torch.cat([self.label_tokens.expand(len(stream), -1, -1), stream, *extra], dim=1)
        for blk in self.vit.blocks[self.start:]:
            seq = blk(seq)
        return self.head(self.vit.norm(seq[:, :self.n_labels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(self.tokens_by_depth(x))

    @torch.no_grad()
    def label_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-label attention maps (B, K, *grid), each summing to the label blocks' count (attention mass)."""
        blocks = list(self.vit.blocks[self.start:])
        _save_attn(blocks, True)
        try:
            self.forward(x)
            a = joint_attention(blocks, self.n_labels)  # (B, K, N · n_depths)
        finally:
            _save_attn(blocks, False)
        b, k, _ = a.shape
        return a.reshape(b, k, len(self.depths), -1).sum(dim=2).reshape(b, k, *self.grid)


class ClsViT(nn.Module):
    """The [CLS] baseline: a MONAI ``ViT`` (``classification=False``) with one [CLS] token and a linear K-label head.

    ``forward`` (B, C, *spatial) → logits (B, K). The patch tokens entering the last block pass through ``to_grid``
    (:class:`TokensToGrid`, the Grad-CAM target layer).
    """

    def __init__(self, vit: nn.Module, n_labels: int) -> None:
        super().__init__()
        n_labels = _check_labels(n_labels)
        if hasattr(vit, "cls_token") or hasattr(vit, "classification_head"):
            raise SmartError("ClsViT: build the ViT with classification=False (the baseline adds its own [CLS] token)")
        self.vit, self.n_labels = vit, n_labels
        hidden = vit.norm.normalized_shape[0]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.to_grid = TokensToGrid(_grid(vit))
        self.head = nn.Linear(hidden, n_labels)

    def new_parameters(self) -> list[nn.Parameter]:
        return [self.cls_token, *self.head.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.vit.patch_embedding(x)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1)
        for blk in self.vit.blocks[:-1]:
            t = blk(t)
        t = torch.cat([t[:, :1], TokensToGrid.back(self.to_grid(t[:, 1:]))], dim=1)
        t = self.vit.norm(self.vit.blocks[-1](t))
        return self.head(t[:, 0])


class LabelTokenSwin(nn.Module):
    """Label tokens (or one [CLS]) on a Swin encoder's stage tokens: this project's extension of LT-ViT.

    Args:
        encoder: a :class:`~smartlib.models.swin.MaskedSwinEncoder` (``SMARTNet.encoder``).
        n_labels: K. img_size: the cubic input edge. stages: hidden-state indices of the encoder (2, 3, 4 =
            strides 8, 16, 32). dim, depth, heads: width, blocks and heads of the new transformer blocks.
        mode: ``"label"`` (K label tokens, per-label linear) or ``"cls"`` (one [CLS], linear K-label head).
        freeze_encoder: keep the encoder's weights fixed (the study caches its stage features).

    Shapes: ``forward`` (B, 1, S, S, S) → logits (B, K); ``stage_features`` → one (B, C_s, *grid_s) per stage;
    ``label_maps`` (B, 1, S, S, S) → (B, K, g, g, g) on the finest stage's grid.
    """

    def __init__(self, encoder: nn.Module, n_labels: int, img_size: int, stages: Sequence[int] = (2, 3, 4), dim: int = 48,
                 depth: int = 2, heads: int = 4, mode: str = "label", freeze_encoder: bool = True) -> None:
        super().__init__()
        n_labels = _check_labels(n_labels)
        if mode not in ("label", "cls"):
            raise SmartError(f"mode={mode!r}: expected 'label' or 'cls'")
        stages = tuple(sorted({int(s) for s in stages}))
        if not stages or stages[0] < 0 or stages[-1] > 4:
            raise SmartError(f"stages={list(stages)}: expected Swin hidden states among 0..4")
        if dim % heads:
            raise SmartError(f"dim={dim} is not divisible by heads={heads}")
        self.encoder, self.n_labels, self.stages, self.mode = encoder, n_labels, stages, mode
        self.freeze_encoder = bool(freeze_encoder)
        for p in encoder.parameters():
            p.requires_grad_(not self.freeze_encoder)
        self.grids = [img_size // 2 ** (s + 1) for s in stages]
        if min(self.grids) < 1:
            raise SmartError(f"img_size={img_size}: stage {stages[-1]} has no tokens (need img_size ≥ {2 ** (stages[-1] + 1)})")
        widths = [encoder.embed_dim * 2 ** s for s in stages]
        self.proj = nn.ModuleList(nn.Linear(w, dim) for w in widths)
        self.pos = nn.ParameterList(nn.Parameter(torch.zeros(1, g ** 3, dim)) for g in self.grids)
        for p in self.pos:
            nn.init.trunc_normal_(p, std=0.02)
        n_query = n_labels if mode == "label" else 1
        self.queries = nn.Parameter(torch.empty(1, n_query, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, 4 * dim, heads, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = PerLabelLinear(n_labels, dim) if mode == "label" else nn.Linear(dim, n_labels)
        self.to_grid = TokensToGrid((self.grids[0],) * 3)

    def new_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chosen stages' maps (B, C_s, g_s, g_s, g_s) (no gradients when the encoder is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            hidden = self.encoder(x)
        return [hidden[s] for s in self.stages]

    def forward_stages(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (B, K) from :meth:`stage_features`' output (or cached copies of it)."""
        toks = [proj(f.flatten(2).transpose(1, 2)) + pos for f, proj, pos in zip(feats, self.proj, self.pos)]
        toks[0] = TokensToGrid.back(self.to_grid(toks[0]))
        seq = torch.cat([self.queries.expand(len(toks[0]), -1, -1), *toks], dim=1)
        for blk in self.blocks:
            seq = blk(seq)
        q = self.norm(seq[:, :self.queries.shape[1]])
        return self.head(q) if self.mode == "label" else self.head(q[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(self.stage_features(x))

    @torch.no_grad()
    def label_maps(self, x: torch.Tensor | None = None, feats: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-query attention maps (B, Q, g, g, g) on the finest stage grid (Q = K labels, or 1 for [CLS])."""
        _save_attn(self.blocks, True)
        try:
            self.forward_stages(feats if feats is not None else self.stage_features(x))
            a = joint_attention(self.blocks, self.queries.shape[1])
        finally:
            _save_attn(self.blocks, False)
        b, q, _ = a.shape
        g0, out, i = self.grids[0], 0.0, 0
        for g in self.grids:
            part = a[:, :, i:i + g ** 3].reshape(b * q, 1, g, g, g)
            f = g0 // g
            part = part.repeat_interleave(f, 2).repeat_interleave(f, 3).repeat_interleave(f, 4) / f ** 3
            out = out + part.reshape(b, q, g0, g0, g0)
            i += g ** 3
        return out
