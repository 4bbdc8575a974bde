"""Segmentation networks whose encoder starts from an exported checkpoint, loaded with strict key matching.

* :func:`build_swinunetr` builds ``SwinUNETR(in_channels=1, out_channels=2, feature_size=embed_dim,
  depths, num_heads, window_size)`` from the export's own architecture and loads its ``encoder``
  weights into ``swinViT`` with ``strict=True``: any missing, unexpected or mis-shaped key is a
  :class:`SmartError`, never a silent partial load. ``"scratch"`` keeps MONAI's random weights, drawn
  from their own seed stream.
* :func:`build_unetr` does the same for a ViT and MONAI ``UNETR`` (arXiv 2103.10504), whose ViT is fixed at
  12 layers and patch 16: the export must have 12 layers, and since a ViT's position embeddings are learned
  per token position, the patch edge must equal the ViT's pretraining crop. Both a SMART ViT export and a
  plain MONAI ViT export (MAE / MSMAE runs) load into ``UNETR.vit``.
* :func:`build_segmenter` picks the one that fits the encoder; a ViT export given to a Swin arm (or the
  reverse) is one clear error. :func:`load_segmenter` rebuilds a saved fine-tuned model.

Decoder norm: SwinUNETR's bottleneck is ``roi / 32`` voxels wide; a 32³ patch leaves one voxel, where
instance norm is undefined in training, so for ``roi < 64`` the decoder uses a one-group GroupNorm
(``("group", {"num_groups": 1})``, batch independent) instead of MONAI's default instance norm (UNETR alike).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import SmartError
from .features import init_arch

__all__ = ["SEG_FORMAT", "segmenter_arch", "build_swinunetr", "build_unetr", "build_segmenter", "load_segmenter"]

#: format tag of a saved fine-tuned segmentation model (:func:`load_segmenter`)
SEG_FORMAT = "smart-segmentation/1"


def _norm_name(roi: int) -> Any:
    return "instance" if roi >= 64 else ("group", {"num_groups": 1})


def segmenter_arch(init: str, preset: str, arch: Mapping[str, Any] | None = None) -> dict:
    """Architecture of the encoder behind ``init``: the export's own, or for ``"scratch"`` the preset's
    updated with ``arch`` (e.g. ``{"arch": "vit", "vit_layers": 12, ...}`` for a ViT trained from scratch).

    With an export, a given ``arch`` only states which kind is expected: ``{"arch": "swin"}`` and a ViT
    export (or the reverse) is a SmartError naming the file.
    """
    if init == "scratch":
        return {**init_arch("scratch", preset), **dict(arch or {})}
    a = init_arch(init, preset)
    if a.get("arch") == "monai_vit":  # a plain ViT export (MAE / MSMAE): UNETR's ViT arguments
        a = _from_monai_vit(a, preset, init)
    want, got = (arch or {}).get("arch"), a.get("arch", "swin")
    if want is not None and want != got:
        raise SmartError(f"{init}: a {got} encoder given to a {want} arm (needs a {want} export)")
    return a


def _from_monai_vit(v: Mapping[str, Any], preset: str, init: str) -> dict:
    """A plain ViT export's arguments as the ``vit`` architecture :func:`build_unetr` reads, or a SmartError
    when UNETR cannot hold that ViT (2D, a patch other than 16, another position embedding)."""
    from ..config import pretrain_config

    edge = {int(x) for x in np.atleast_1d(v["img_size"])}
    patch = {int(x) for x in np.atleast_1d(v["patch_size"])}
    if int(v["spatial_dims"]) != 3 or patch != {16} or len(edge) != 1 or v.get("pos_embed_type", "learnable") != "learnable":
        raise SmartError(f"{init}: UNETR needs a 3D ViT with patch 16 on a cube and learnable position embeddings "
                         f"(this one: {v['spatial_dims']}D, patch {v['patch_size']}, input {v['img_size']})")
    return {"arch": "vit", "img_size": edge.pop(), "vit_layers": int(v["num_layers"]), "vit_hidden": int(v["hidden_size"]),
            "vit_heads": int(v["num_heads"]), "mlp_dim": int(v["mlp_dim"]), "proj_type": str(v["proj_type"]),
            "qkv_bias": bool(v["qkv_bias"]), "embed_dim": int(pretrain_config(preset).embed_dim), "export": "monai_vit"}


def _load_encoder_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], init: str, what: str) -> None:
    """Strict load of encoder ``state`` into ``module``; a mismatch names the first keys or shapes."""
    from ..io import describe_key_mismatch

    keys = describe_key_mismatch(module.state_dict(), state)
    if keys:
        raise SmartError(f"{init}: encoder weights do not fit {what} ({keys})")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # same keys, other shapes: name the first mismatched tensors
        shapes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
        raise SmartError(f"{init}: encoder weights do not fit {what} ({'; '.join(shapes) or str(exc).splitlines()[0]})") from None


def _swinunetr(arch: Mapping[str, Any], roi: int, out_channels: int):
    """MONAI ``SwinUNETR`` for a Swin architecture dict (``embed_dim``, ``depths``, ``num_heads``, ``window_size``)."""
    from monai.networks.nets import SwinUNETR

    from ..models.fast_attention import accelerate

    ws = arch["window_size"]
    net = SwinUNETR(in_channels=1, out_channels=out_channels, feature_size=int(arch["embed_dim"]),
                    depths=tuple(arch["depths"]), num_heads=tuple(arch["num_heads"]),
                    window_size=ws if isinstance(ws, (list, tuple)) else int(ws), norm_name=_norm_name(roi))
    return accelerate(net, bool(arch.get("fast_attention", True)))  # same weights and keys, faster window attention


def _unetr(arch: Mapping[str, Any], roi: int, out_channels: int):
    """MONAI ``UNETR`` for a ViT architecture dict (``vit_hidden``, ``vit_heads``; decoder width ``embed_dim``);
    MLP width, patch embedding and ``qkv_bias`` as in :class:`~smartlib.models.vit.MaskedViTEncoder` unless given."""
    from monai.networks.nets import UNETR

    hidden = int(arch["vit_hidden"])
    return UNETR(in_channels=1, out_channels=out_channels, img_size=int(roi), feature_size=int(arch["embed_dim"]),
                 hidden_size=hidden, mlp_dim=int(arch.get("mlp_dim", 4 * hidden)), num_heads=int(arch["vit_heads"]),
                 proj_type=str(arch.get("proj_type", "conv")), norm_name=_norm_name(roi), qkv_bias=bool(arch.get("qkv_bias", True)))


def build_swinunetr(init: str, preset: str, roi: int, out_channels: int = 2, seed: int = 0):
    """MONAI ``SwinUNETR`` with its ``swinViT`` encoder from ``init`` (``"scratch"`` or an export path).

    Raises:
        SmartError: not an export, a ViT export, or encoder weights that do not load with ``strict=True``.
    """
    from ..io import load_torch
    from ..models.swin import check_windows
    from ..seed import seed_everything, stream_seed

    arch = init_arch(init, preset)
    if arch.get("arch", "swin") != "swin":
        raise SmartError(f"{init}: a {arch.get('arch')} encoder cannot initialise SwinUNETR (needs a Swin export)")
    ws = arch["window_size"]
    check_windows(int(ws[0] if isinstance(ws, (list, tuple)) else ws), roi, what=f"{init}: patches")
    # scratch weights from their own stream (never the pretraining student's initial weights)
    seed_everything(stream_seed(seed, "scratch") if init == "scratch" else seed)
    model = _swinunetr(arch, roi, out_channels)
    if init != "scratch":
        _load_encoder_weights(model.swinViT, load_torch(init)["encoder"], init, "SwinUNETR.swinViT")
    return model


def build_unetr(init: str, preset: str, roi: int, out_channels: int = 2, seed: int = 0,
                arch: Mapping[str, Any] | None = None):
    """MONAI ``UNETR`` (12-layer ViT, patch 16) with its ``vit`` from ``init`` (``"scratch"`` or a ViT export path).

    ``arch`` sets the ViT of a scratch model (``vit_hidden``, ``vit_heads``; ``vit_layers`` must be 12); the
    decoder width ``feature_size`` is the architecture's ``embed_dim`` (the Swin width of the preset, so the
    two decoders match). The ViT's ``img_size`` must equal ``roi``: its learned position embeddings
    exist for that token grid only.

    Raises:
        SmartError: a Swin export, a ViT of other than 12 layers or another crop edge, or weights that
        do not load into ``UNETR.vit`` with ``strict=True``.
    """
    from ..io import load_torch
    from ..seed import seed_everything, stream_seed

    a = segmenter_arch(init, preset, {"arch": "vit", **dict(arch or {})} if init == "scratch" else {"arch": "vit"})
    if init != "scratch" and a.get("arch", "swin") != "vit":
        raise SmartError(f"{init}: a {a.get('arch', 'swin')} encoder cannot initialise UNETR (needs a ViT export)")
    if int(a["vit_layers"]) != 12:
        raise SmartError(f"{init}: UNETR's ViT has 12 layers but this encoder has vit_layers={a['vit_layers']} "
                         "(pretrain the ViT with vit_layers=12)")
    if int(a["img_size"]) != int(roi):
        raise SmartError(f"{init}: the ViT learned position embeddings for {a['img_size']}³ crops; UNETR needs patches "
                         f"of the same edge, not roi={roi}")
    seed_everything(stream_seed(seed, "scratch") if init == "scratch" else seed)
    model = _unetr(a, roi, out_channels)
    if init != "scratch":  # both export formats keep the MONAI ViT weights under "encoder"
        _load_encoder_weights(model.vit, load_torch(init)["encoder"], init, "UNETR.vit")
    return model


def build_segmenter(init: str, preset: str, roi: int, out_channels: int = 2, seed: int = 0,
                    arch: Mapping[str, Any] | None = None):
    """``SwinUNETR`` for a Swin encoder, ``UNETR`` for a ViT one (:func:`segmenter_arch` decides; ``arch``
    sets a scratch model's architecture or states the kind an export must have)."""
    a = segmenter_arch(init, preset, arch)
    if a.get("arch", "swin") == "vit":
        return build_unetr(init, preset, roi, out_channels, seed, a if init == "scratch" else None)
    if init == "scratch" and any(k != "arch" for k in (arch or {})):
        raise SmartError(f"arch={dict(arch or {})!r}: a scratch Swin uses the preset's architecture")
    return build_swinunetr(init, preset, roi, out_channels, seed)


def load_segmenter(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """A fine-tuned model saved by :func:`segmentation_study` (``save_models``), rebuilt and loaded strictly.

    Returns ``(model in eval mode, the file's header: init, arch, roi, fraction, seed, step)``.
    """
    from ..io import load_torch

    blob = load_torch(path)
    if not isinstance(blob, dict) or blob.get("format") != SEG_FORMAT or not isinstance(blob.get("state_dict"), dict):
        raise SmartError(f"{path}: not a saved segmentation model (expected format {SEG_FORMAT!r})")
    arch, roi = blob.get("arch") or {}, int(blob.get("roi", 0))
    build = _unetr if arch.get("arch") == "vit" else _swinunetr
    try:
        model = build(arch, roi, int(blob.get("out_channels", 2)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SmartError(f"{path}: cannot rebuild its model ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:
        raise SmartError(f"{path}: weights do not fit its {arch.get('arch', 'swin')} model "
                         f"({str(exc).strip().splitlines()[0]})") from None
    return model.eval(), {k: v for k, v in blob.items() if k not in ("state_dict", "format")}
