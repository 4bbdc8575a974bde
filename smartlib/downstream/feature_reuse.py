"""Feature reuse: layer × layer CKA between a pretrained encoder and the same encoder after fine-tuning.

Following the wild- vs self-pretraining study (MIDL 2024, PMLR 250:708–721) and Neyshabur et al. (2020,
"What is being transferred in transfer learning?"): the more a fine-tuned block's representation still
resembles the pretrained one, the more of the pretraining was reused. For every transformer block of the
encoder — each Swin block of MONAI ``SwinUNETR.swinViT`` (``layers1…4[0].blocks[j]``), each ViT block of
``UNETR.vit.blocks`` — a forward hook takes the block's output on the same image patches in both
networks, and :class:`~smartlib.downstream.similarity.MinibatchCKA` (linear CKA with the **unbiased**
HSIC estimator, averaged over minibatches, Nguyen, Raghu & Kornblith 2021) gives

* ``cross``: block i of the pretrained network × block j of the fine-tuned one;
* ``self_pretrained`` / ``self_finetuned``: each network against itself (self-similarity).

The biased estimator is not used: flattened 3D block outputs have far more features than samples, where
it saturates near 1 for unrelated representations.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import SmartError

__all__ = ["encoder_blocks", "block_outputs", "cka_patches", "reuse_matrices", "reuse_table"]


def encoder_blocks(model: torch.nn.Module) -> tuple[torch.nn.Module, list[tuple[str, torch.nn.Module]]]:
    """The encoder of a ``SwinUNETR`` / ``UNETR`` and its transformer blocks as ``(name, module)`` in forward order
    (``stage1.block0`` … for Swin, ``block0`` … ``block11`` for a ViT)."""
    if hasattr(model, "swinViT"):
        enc = model.swinViT
        blocks = [(f"stage{k}.block{j}", b) for k in range(1, 5) for j, b in enumerate(getattr(enc, f"layers{k}")[0].blocks)]
        return enc, blocks
    if hasattr(model, "vit"):
        return model.vit, [(f"block{i}", b) for i, b in enumerate(model.vit.blocks)]
    raise SmartError(f"{type(model).__name__}: expected a MONAI SwinUNETR or UNETR (with .swinViT or .vit)")


@torch.no_grad()
def block_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every block's output on ``x`` (B, 1, S, S, S), flattened per sample: a list of (B, F_i) float tensors."""
    enc, blocks = encoder_blocks(model)
    feats: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: feats.append(out.detach().flatten(1).float())) for _, m in blocks]
    try:
        model.eval()
        enc(x)
    finally:
        for h in hooks:
            h.remove()
    return feats


def cka_patches(images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], roi: int, seed: int = 0) -> torch.Tensor:
    """Two ``roi``³ patches per volume, each centred on tumour or background with equal probability
    (:func:`~smartlib.downstream.segment.patch_sampler`, seeded), stacked to (2·n, 1, roi, roi, roi): the images
    both networks are compared on."""
    from .segment import patch_sampler

    if not images:
        raise SmartError("feature reuse: no volumes to draw patches from")
    sampler = patch_sampler(roi, seed)
    out = [torch.as_tensor(p["image"]).float() for img, msk in zip(images, masks) for p in sampler({"image": img, "mask": msk})]
    return torch.stack(out)


def reuse_matrices(pretrained: torch.nn.Module, finetuned: torch.nn.Module, patches: torch.Tensor,
                   batch_size: int = 8) -> dict[str, np.ndarray | list[str]]:
    """Minibatch CKA matrices between the blocks of ``pretrained`` and ``finetuned`` (same architecture).

    ``patches``: (N, 1, S, S, S), split into minibatches of ``batch_size`` (a last batch of fewer than 4,
    where the unbiased estimator is undefined, is dropped). Returns ``{"layers": block names, "cross": (L, L),
    "self_pretrained": (L, L), "self_finetuned": (L, L), "n": patches used}``.
    """
    from .similarity import MinibatchCKA

    names_a = [n for n, _ in encoder_blocks(pretrained)[1]]
    names_b = [n for n, _ in encoder_blocks(finetuned)[1]]
    if names_a != names_b:
        raise SmartError(f"feature reuse: the two networks have different blocks ({len(names_a)} vs {len(names_b)})")
    if batch_size < 4:
        raise SmartError(f"batch_size={batch_size}: the unbiased CKA needs at least 4 samples per batch")
    starts = [i for i in range(0, len(patches), batch_size) if len(patches) - i >= 4]
    if not starts:
        raise SmartError(f"feature reuse: {len(patches)} patches, need at least 4")
    cross, self_a, self_b = MinibatchCKA(), MinibatchCKA(), MinibatchCKA()
    used = 0
    for i in starts:
        x = patches[i:i + batch_size]
        fa, fb = block_outputs(pretrained, x), block_outputs(finetuned, x)
        cross.update(fa, fb)
        self_a.update(fa, fa)
        self_b.update(fb, fb)
        used += len(x)
    return {"layers": names_a, "cross": cross.compute(), "self_pretrained": self_a.compute(),
            "self_finetuned": self_b.compute(), "n": used}


def reuse_table(matrices: dict[str, dict]) -> "pd.DataFrame":
    """Long table of :func:`reuse_matrices` results per arm: ``init, kind, layer_a, layer_b, cka, n`` (kind:
    ``cross``, ``self_pretrained``, ``self_finetuned``); the ``cross`` diagonal is the per-block reuse."""
    import pandas as pd

    rows = []
    for arm, m in matrices.items():
        for kind in ("cross", "self_pretrained", "self_finetuned"):
            mat = np.asarray(m[kind])
            for i, a in enumerate(m["layers"]):
                for j, b in enumerate(m["layers"]):
                    rows.append({"init": arm, "kind": kind, "layer_a": a, "layer_b": b, "cka": float(mat[i, j]), "n": m["n"]})
    return pd.DataFrame(rows)
