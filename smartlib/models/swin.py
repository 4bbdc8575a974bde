"""3D Swin encoder with a learned mask token: a thin subclass of MONAI's ``SwinTransformer``.

Only ``forward`` is overridden: the masked patch embeddings are replaced by a
learned ``mask_token`` right after patch embedding; everything else is MONAI's
code and MONAI's parameter names, so ``encoder_state_dict()`` loads into
``monai.networks.nets.SwinUNETR(...).swinViT`` with strict key matching.

Shapes for an input of (B, C, D, H, W) with patch 2 (embed E):
stage 0 (patch embedding) (B, E, D/2, H/2, W/2) → 1 (B, 2E, D/4, ...) → 2 (B, 4E, D/8, ...)
→ 3 (B, 8E, D/16, ...) → 4 (B, 16E, D/32, ...).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets.swin_unetr import SwinTransformer

from .fast_attention import accelerate

__all__ = ["MaskedSwinEncoder", "stage_windows", "check_windows"]


def stage_windows(window_size: int, img_size: int, n_stages: int = 4) -> list[int]:
    """The window edge MONAI actually uses in each of the ``n_stages`` Swin stages for ``img_size``³ inputs.

    Stage k (1-based) sees a token grid of ``img_size / 2**k``; MONAI's ``get_window_size`` shrinks the
    window to the grid wherever the grid is not larger than the window. A shrunk window still indexes the
    relative-position bias table learned for the full window with the first ``n`` rows of its index, so
    the learned biases land on the wrong offsets: a stage whose window shrinks at a downstream crop size
    but not at the pretraining size does not see the model it was pretrained as.
    """
    from monai.networks.nets.swin_unetr import get_window_size

    w = (int(window_size),) * 3
    return [int(get_window_size((img_size // 2**k,) * 3, w)[0]) for k in range(1, n_stages + 1)]


def check_windows(window_size: int, img_size: int, what: str = "input") -> None:
    """SmartError when any stage's window would shrink below ``window_size`` at ``img_size``³ (see
    :func:`stage_windows`); a grid equal to the window is fine (one window, nothing shrinks)."""
    from ..errors import SmartError

    used = stage_windows(window_size, img_size)
    bad = [(k + 1, u) for k, u in enumerate(used) if u < window_size]
    if bad:
        k, u = bad[0]
        raise SmartError(f"{what} of {img_size}³: the stage-{k} window of this encoder ({window_size}³) would shrink to "
                         f"{u}³ and apply its relative-position biases at the wrong offsets; use crops of at least "
                         f"{16 * window_size}³ or an encoder pretrained with a smaller window")


class MaskedSwinEncoder(SwinTransformer):
    """MONAI ``SwinTransformer`` (patch 2, merging downsample, no v2 blocks) plus a mask token.

    Args:
        in_chans: input channels.
        embed_dim: patch-embedding width E (a multiple of 12 so the weights fit ``SwinUNETR``).
        depths: blocks per stage, e.g. (2, 2, 8, 2).
        num_heads: attention heads per stage, e.g. (4, 4, 8, 16).
        window_size: cubic window edge (4 in SMART).
        drop_path_rate: stochastic depth (0.1 student, 0 teacher).
        use_checkpoint: gradient checkpointing inside the Swin blocks.
        fast_attention: swap MONAI's window attention for :class:`~smartlib.models.fast_attention.FastWindowAttention`
            (same weights and math, faster softmax and fused no-grad attention); False keeps MONAI's.
    """

    def __init__(
        self,
        in_chans: int = 1,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 8, 2),
        num_heads: Sequence[int] = (4, 4, 8, 16),
        window_size: int = 4,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        fast_attention: bool = True,
    ) -> None:
        # the same arguments SwinUNETR passes, so the state dicts match key for key
        super().__init__(
            in_chans=in_chans,
            embed_dim=embed_dim,
            window_size=(window_size,) * 3,
            patch_size=(2, 2, 2),
            depths=depths,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=drop_path_rate,
            norm_layer=nn.LayerNorm,
            patch_norm=False,
            use_checkpoint=use_checkpoint,
            spatial_dims=3,
            downsample="merging",
            use_v2=False,
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, 1, 1, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        accelerate(self, fast_attention)

    @property
    def dims(self) -> list[int]:
        """Channel widths of the five outputs of :meth:`forward`."""
        return [self.embed_dim * 2**i for i in range(5)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, normalize: bool = True) -> list[torch.Tensor]:
        """Encode ``x`` (B, C, D, H, W); ``mask`` (B, D/2, H/2, W/2) bool marks patches to replace.

        Returns the five hidden states of MONAI's ``SwinTransformer.forward``. With ``mask`` None or
        all False the result is MONAI's forward: bit-identical with ``fast_attention=False``, equal up to
        float rounding with the fast attention.
        """
        x0 = self.patch_embed(x)
        if mask is not None:
            if mask.shape != (x0.shape[0], *x0.shape[2:]):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match patch grid {(x0.shape[0], *x0.shape[2:])}")
            x0 = torch.where(mask[:, None].to(torch.bool), self.mask_token.to(x0.dtype), x0)
        x0 = self.pos_drop(x0)
        x1 = self.layers1[0](x0.contiguous())
        x2 = self.layers2[0](x1.contiguous())
        x3 = self.layers3[0](x2.contiguous())
        x4 = self.layers4[0](x3.contiguous())
        return [self.proj_out(t, normalize) for t in (x0, x1, x2, x3, x4)]

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights with MONAI ``SwinTransformer`` keys only (no mask token): strict-loadable into ``SwinUNETR.swinViT``."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k != "mask_token"}
