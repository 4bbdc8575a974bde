"""The SMART network, top to bottom: encoder → semantic attention → heads → reconstruction.

One class serves as student and (a deep copy) as teacher. ``encode`` gives the
features every loss and every downstream study uses; ``project`` maps them
through the distillation heads; ``reconstruct`` predicts voxels from the
deepest tokens. Mask units are stage-3 tokens: 16³ voxels each.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from einops import rearrange

from ..config import ArchConfig
from ..errors import SmartError
from .heads import DINOHead, ReconstructionHead
from .semantic_attention import SemanticAttention
from .swin import MaskedSwinEncoder
from .vit import MaskedViTEncoder

__all__ = ["SMARTNet", "ARCH_FIELDS", "UNIT", "export_encoder", "load_encoder", "EXPORT_FORMAT", "EXPORT_FORMATS"]

UNIT = 16  #: mask-unit edge in voxels (one Swin stage-3 token)
EXPORT_FORMAT = "smart-encoder/1"
#: what ``smart export --format`` writes: the structured SMART file, or a plain state dict for MONAI's SwinUNETR
EXPORT_FORMATS = ("smart", "swinunetr")


#: names of SMARTNet's architecture arguments (the config's model fields are a subset of these)
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(ArchConfig))


class SMARTNet(nn.Module):
    """Swin (or ViT) encoder + semantic attention + DINO heads + linear reconstruction head.

    Args: see :class:`smartlib.config.ArchConfig` for every architectural argument (paper defaults); ``heads=False``
    builds the encoder and semantic attention only (the exported, downstream form).
    """

    def __init__(self, heads: bool = True, **kwargs: Any) -> None:
        super().__init__()
        unknown = set(kwargs) - set(ARCH_FIELDS)
        if unknown:
            raise SmartError(f"unknown model argument(s): {', '.join(sorted(unknown))}")
        a = ArchConfig(**kwargs)
        a.depths, a.num_heads = tuple(a.depths), tuple(a.num_heads)
        self.arch_kwargs = dataclasses.asdict(a)
        if a.arch not in ("swin", "vit"):
            raise SmartError(f"arch={a.arch!r}: expected 'swin' or 'vit'")
        if a.img_size % 32:
            raise SmartError(f"img_size={a.img_size}: must be a multiple of 32 (Swin has five halvings)")
        if a.gitd_stage not in (3, 4):
            raise SmartError(f"gitd_stage={a.gitd_stage}: expected 3 or 4")
        self.a = a
        self.grid = a.img_size // UNIT  # mask-unit grid edge
        if a.arch == "swin":
            if a.embed_dim % 12:
                raise SmartError(f"embed_dim={a.embed_dim}: must be a multiple of 12 to load into SwinUNETR")
            self.encoder = MaskedSwinEncoder(a.in_chans, a.embed_dim, a.depths, a.num_heads, a.window_size,
                                             a.drop_path, a.use_checkpoint, a.fast_attention)
            self.token_dim = 8 * a.embed_dim
            self.deep_dim = 16 * a.embed_dim
            self.pool_dim = self.deep_dim if a.gitd_stage == 4 else self.token_dim
            self.deep_unit = 32
        else:
            self.encoder = MaskedViTEncoder(a.in_chans, a.img_size, UNIT, a.vit_hidden, 4 * a.vit_hidden,
                                            a.vit_layers, a.vit_heads)
            self.token_dim = self.deep_dim = self.pool_dim = a.vit_hidden
            self.deep_unit = UNIT
        self.sa = SemanticAttention(self.token_dim, a.sa_heads, a.sa_depth, a.layerscale) if a.semantic_attention else None
        self.has_heads = heads
        if heads:
            hk = dict(prototypes=a.prototypes, hidden=a.head_hidden, bottleneck=a.head_bottleneck, nlayers=a.head_layers)
            self.head_cls = DINOHead(self.token_dim, **hk)
            self.head_patch = DINOHead(self.token_dim, **hk)
            self.head_pool = DINOHead(self.pool_dim, **hk)
            self.recon = ReconstructionHead(self.deep_dim, self.deep_unit, a.in_chans)

    # ---------------------------------------------------------------- encoder
    def encode(self, x: torch.Tensor, unit_mask: torch.Tensor | None = None) -> dict[str, Any]:
        """Features of ``x`` (B, C, S, S, S) with mask units ``unit_mask`` (B, N) replaced by the mask token.

        Returns a dict: ``tokens`` (B, N, C3) unit-grid tokens; ``cls`` (B, C3) the [CLS] token after
        semantic attention (average of ``tokens`` when it is off); ``attn`` (B, N) the head-averaged
        [CLS]→token attention or None; ``pooled`` (B, Cg) the average-pooled global token for GITD;
        ``deep`` (B, Cd, d, h, w) the deepest map; ``stages`` the encoder's hidden states.
        """
        if x.ndim != 5 or tuple(x.shape[2:]) != (self.a.img_size,) * 3:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.a.in_chans}, {self.a.img_size}, {self.a.img_size}, {self.a.img_size})")
        if self.a.arch == "swin":
            patch_mask = None
            if unit_mask is not None:
                if tuple(unit_mask.shape) != (x.shape[0], self.grid**3):
                    raise ValueError(f"unit mask shape {tuple(unit_mask.shape)}: expected (B, N) = {(x.shape[0], self.grid**3)}")
                g, f = self.grid, UNIT // 2
                patch_mask = unit_mask.view(-1, g, g, g).repeat_interleave(f, 1).repeat_interleave(f, 2).repeat_interleave(f, 3)
            stages = self.encoder(x, patch_mask)
            tokens = rearrange(stages[3], "b c d h w -> b (d h w) c")
            deep = stages[4]
            pooled = (deep if self.a.gitd_stage == 4 else stages[3]).mean(dim=(2, 3, 4))
        else:
            tokens, stages = self.encoder(x, unit_mask)
            g = self.grid
            deep = rearrange(tokens, "b (d h w) c -> b c d h w", d=g, h=g, w=g)
            pooled = tokens.mean(dim=1)
        if self.sa is not None:
            cls, attn = self.sa(tokens)
        else:
            cls, attn = tokens.mean(dim=1), None
        return {"tokens": tokens, "cls": cls, "attn": attn, "pooled": pooled, "deep": deep, "stages": stages}

    def forward(self, x: torch.Tensor, unit_mask: torch.Tensor | None = None) -> tuple[dict, dict, torch.Tensor]:
        """Student pass in one call (so DistributedDataParallel sees it): features, logits, reconstruction."""
        out = self.encode(x, unit_mask)
        return out, self.project(out), self.reconstruct(out["deep"])

    # ---------------------------------------------------------------- heads
    def project(self, out: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Distillation logits: ``cls`` (B, K), ``patch`` (B, N, K), ``pool`` (B, K)."""
        if not self.has_heads:
            raise RuntimeError("this SMARTNet was built without heads")
        return {"cls": self.head_cls(out["cls"]), "patch": self.head_patch(out["tokens"]), "pool": self.head_pool(out["pooled"])}

    def reconstruct(self, deep: torch.Tensor) -> torch.Tensor:
        """Voxels predicted from the deepest tokens: (B, Cd, d, h, w) → (B, C, S, S, S)."""
        return self.recon(deep)

    def last_layers(self) -> list[nn.Parameter]:
        """Parameters of the heads' weight-normalised last layers (frozen during the first epoch)."""
        if not self.has_heads:
            return []
        return [p for h in (self.head_cls, self.head_patch, self.head_pool) for p in h.last_layer.parameters()]

    def set_drop_path(self, rate: float) -> None:
        """Set every stochastic-depth rate to ``rate`` (0 for the teacher)."""
        for m in self.modules():
            if hasattr(m, "drop_prob"):
                m.drop_prob = rate
        self.a.drop_path = rate

    # ---------------------------------------------------------------- export
    def encoder_export(self) -> dict[str, Any]:
        """The downstream form: encoder (MONAI keys) + semantic attention + architecture arguments."""
        return {
            "format": EXPORT_FORMAT,
            "model": {**self.arch_kwargs, "drop_path": 0.0},
            "encoder": self.encoder.encoder_state_dict(),
            "mask_token": self.encoder.mask_token.detach().clone(),
            "semantic_attention": None if self.sa is None else {k: v.detach().clone() for k, v in self.sa.state_dict().items()},
        }

    def swinunetr_state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The Swin encoder's weights as a plain state dict for MONAI (no mask token, no semantic attention).

        With ``prefix=""`` the keys are those of ``SwinUNETR(...).swinViT.state_dict()``, so
        ``swinViT.load_state_dict(sd)`` accepts them with strict key matching; with
        ``prefix="swinViT."`` they are the encoder's entries of ``SwinUNETR(...).state_dict()``
        (load strictly over the model's own state: ``model.load_state_dict({**model.state_dict(), **sd})``,
        so an unexpected key still fails). A ViT encoder has no SwinUNETR form.
        """
        if self.a.arch != "swin":
            raise SmartError(f"arch={self.a.arch!r}: only a Swin encoder loads into SwinUNETR (export it with format smart)")
        if prefix and not prefix.endswith("."):
            raise SmartError(f"prefix {prefix!r}: must end with '.', e.g. 'swinViT.'")
        return {prefix + k: v for k, v in self.encoder.encoder_state_dict().items()}


def export_encoder(net: SMARTNet, path: str | Path, format: str = "smart", prefix: str = "") -> Path:
    """Write ``net``'s encoder atomically to ``path`` in one of :data:`EXPORT_FORMATS`.

    ``"smart"`` (default): ``net.encoder_export()``, the structured file :func:`load_encoder` and the
    downstream studies read. ``"swinunetr"``: :meth:`SMARTNet.swinunetr_state_dict` — a plain state
    dict for MONAI, with ``prefix`` before every key (see there).
    """
    from ..io import save_torch

    if format not in EXPORT_FORMATS:
        raise SmartError(f"format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if format == "smart":
        if prefix:
            raise SmartError(f"prefix {prefix!r}: only the swinunetr format takes a key prefix")
        return save_torch(net.encoder_export(), path)
    return save_torch(net.swinunetr_state_dict(prefix), path)


def load_encoder(path: str | Path, **overrides: Any) -> SMARTNet:
    """Rebuild an exported encoder (``heads=False``) with strict key matching.

    ``overrides`` may change arguments that do not alter weights' shapes (``img_size`` for a
    Swin, ``use_checkpoint``, ``drop_path``). A file of another format or architecture is a
    :class:`SmartError` naming the file.
    """
    from ..io import load_torch

    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        raise SmartError(f"{path}: not a SMART encoder export (expected format {EXPORT_FORMAT!r}; use `smart export RUN`)")
    missing = [k for k in ("model", "encoder", "mask_token", "semantic_attention") if k not in blob]
    if missing or not isinstance(blob["model"], dict) or not isinstance(blob["encoder"], dict):
        raise SmartError(f"{path}: incomplete SMART encoder export (missing or malformed: {', '.join(missing) or 'model/encoder'})")
    kwargs = {**blob["model"], **overrides}
    try:
        net = SMARTNet(heads=False, **kwargs)
    except SmartError as exc:
        raise SmartError(f"{path}: cannot rebuild the encoder ({exc})") from None
    try:
        net.encoder.load_state_dict({**blob["encoder"], "mask_token": blob["mask_token"]}, strict=True)
        if (net.sa is None) != (blob["semantic_attention"] is None):
            raise RuntimeError("semantic attention present in only one of file and model")
        if net.sa is not None:
            net.sa.load_state_dict(blob["semantic_attention"], strict=True)
    except RuntimeError as exc:
        from ..io import describe_key_mismatch

        keys = describe_key_mismatch(net.encoder.state_dict(), {**blob["encoder"], "mask_token": blob["mask_token"]})
        if not keys and net.sa is not None and blob["semantic_attention"] is not None:
            keys = describe_key_mismatch(net.sa.state_dict(), blob["semantic_attention"])
        shapes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
        detail = keys or "; ".join(shapes) or str(exc).strip().splitlines()[-1]
        raise SmartError(f"{path}: weights do not match the architecture ({detail})") from None
    return net
