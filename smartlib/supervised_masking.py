"""Supervised-attention masking (MSMAE, arXiv 2305.05871): which patches are masked, thrown away or kept.

Random masking lets a masked autoencoder overlook small lesions: a uniform 75 % mask leaves a
lesion patch visible one time in four. MSMAE takes the masks from the attention of a supervised
model instead, so the lesion is what is most often hidden and reconstructed. The rule, as in the
public code (``Talented-Q/MSMAE``):

1. **Attention** (:func:`head_normalised`): the last transformer block's [CLS]→patch attention,
   min–max normalised per head, then averaged over heads — one score per patch.
2. **Order** (:func:`attention_order`): the patches drawn without replacement with probability
   proportional to their score — an attention-weighted random permutation.
3. **Split** (:func:`supervised_split`): the first ⌊0.45·N⌋ patches of that order are *masked*
   (reconstructed), the next ⌊0.75·N⌋ − ⌊0.45·N⌋ are *thrown away* (neither encoded nor
   reconstructed), the remaining 25 % stay *visible* (the encoder's whole input).
4. **Crop alignment** (:func:`crop_at`, :func:`random_shift_flip`): a map lives on the patch grid of
   the image it was computed on. A training crop moves the image by whole patches and the map by as
   many grid cells (a flip flips both), so every score stays on its own patch. The public code keeps
   only a corner of the map whatever the crop — a misalignment not reproduced here.

States are (B, N) int8 tensors: :data:`VISIBLE`, :data:`MASKED`, :data:`THROWN`. Plain MAE's uniform
masking (:func:`random_split`, ratio 0.75) has the same form without thrown patches.
:class:`SupervisedAttention` maps the same attention onto SMART's 16³-voxel mask units (``given`` mode).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .errors import SmartError

__all__ = ["VISIBLE", "MASKED", "THROWN", "SPLIT", "split_counts", "head_normalised", "attention_order", "supervised_split",
           "random_split", "state_indices", "check_grid", "crop_at", "random_shift_flip", "unit_scores",
           "SupervisedAttention", "resolve_given", "given_scorer"]

VISIBLE, MASKED, THROWN = 0, 1, 2
#: MSMAE's (mask, throw) fractions; 1 − 0.45 − 0.30 = 25 % of the patches stay visible
SPLIT: tuple[float, float] = (0.45, 0.30)


def split_counts(n: int, mask_ratio: float, throw_ratio: float = 0.0) -> tuple[int, int, int]:
    """(masked, thrown, visible) patch counts of ``n`` patches: ⌊m·n⌋, ⌊(m+t)·n⌋ − ⌊m·n⌋ and the rest.

    A split must have 0 < m, 0 ≤ t and m + t ≤ 1 (else a SmartError naming it).
    """
    if not (0.0 < mask_ratio <= 1.0 and 0.0 <= throw_ratio < 1.0) or mask_ratio + throw_ratio > 1.0 + 1e-9:
        raise SmartError(f"mask split {mask_ratio} masked + {throw_ratio} thrown: need 0 < masked, 0 ≤ thrown and a sum ≤ 1")
    k_mask = math.floor(mask_ratio * n + 1e-9)
    k_gone = min(n, math.floor((mask_ratio + throw_ratio) * n + 1e-9))
    return k_mask, k_gone - k_mask, n - k_gone


def head_normalised(att: torch.Tensor) -> torch.Tensor:
    """[CLS]→patch attention, min–max normalised per head and averaged over heads.

    Args: att (B, H, T, T) attention probabilities with the [CLS] token first (T = 1 + N).
    Returns: (B, N) scores in [0, 1].
    """
    if att.ndim != 4 or att.shape[-1] != att.shape[-2] or att.shape[-1] < 2:
        raise SmartError(f"attention of shape {tuple(att.shape)}: expected (B, heads, 1 + N, 1 + N) with a [CLS] token first")
    a = att[:, :, 0, 1:].float()
    lo, hi = a.amin(dim=-1, keepdim=True), a.amax(dim=-1, keepdim=True)
    return ((a - lo) / (hi - lo).clamp_min(1e-12)).mean(dim=1)


def attention_order(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """An attention-weighted random permutation of the patches: (B, N) scores ≥ 0 → (B, N) indices.

    Patches are drawn without replacement with probability ∝ score (``torch.multinomial``); a small
    floor (1e-6 of each row's maximum) keeps zero-score patches drawable, last.
    """
    s = scores.detach().float().cpu().clamp_min(0)
    floor = 1e-6 * s.amax(dim=1, keepdim=True).clamp_min(1e-12)
    return torch.multinomial(s + floor, s.shape[1], replacement=False, generator=generator)


def supervised_split(scores: torch.Tensor, mask_ratio: float = SPLIT[0], throw_ratio: float = SPLIT[1],
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """MSMAE's split: (B, N) patch scores → (B, N) int8 states (masked first, thrown next, visible last in the order)."""
    b, n = scores.shape
    k_mask, k_throw, _ = split_counts(n, mask_ratio, throw_ratio)
    order = attention_order(scores, generator)
    state = torch.full((b, n), VISIBLE, dtype=torch.int8)
    state.scatter_(1, order[:, :k_mask], MASKED)
    state.scatter_(1, order[:, k_mask:k_mask + k_throw], THROWN)
    return state


def random_split(batch: int, n: int, mask_ratio: float = 0.75, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain MAE masking (arXiv 2111.06377): ⌊ratio·N⌋ patches uniformly at random, nothing thrown → (B, N) int8."""
    k_mask, _, _ = split_counts(n, mask_ratio, 0.0)
    order = torch.rand(batch, n, generator=generator).argsort(dim=1)
    state = torch.full((batch, n), VISIBLE, dtype=torch.int8)
    state.scatter_(1, order[:, :k_mask], MASKED)
    return state


def state_indices(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible, masked) patch indices of (B, N) states, each (B, n) in ascending order; every row must
    hold the same counts (true of every split made here)."""
    out = []
    for code in (VISIBLE, MASKED):
        hit = state == code
        counts = hit.sum(dim=1)
        if len(counts) and not bool((counts == counts[0]).all()):
            raise SmartError(f"mask states: rows hold different numbers of patches in state {code} ({counts.tolist()[:4]})")
        k = int(counts[0]) if len(counts) else 0
        out.append(hit.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :k].sort(dim=1).values)
    return out[0], out[1]


def check_grid(attn: torch.Tensor, grid: Sequence[int], what: str = "attention map") -> None:
    """SmartError unless ``attn`` is (B, *grid): one score per patch of the model's patch grid."""
    if tuple(attn.shape[1:]) != tuple(grid):
        raise SmartError(f"{what} of grid {tuple(attn.shape[1:])} does not match the patch grid {tuple(grid)}")


def crop_at(images: torch.Tensor, attn: torch.Tensor, patch: int, offset: Sequence[int], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop image and map together, aligned in patch coordinates.

    Args: images (B, C, *S) voxels; attn (B, *G) with G = S / patch; offset: the crop's corner in
    *patches* per axis; size: crop edge in voxels (a multiple of ``patch``).
    Returns: (B, C, size, …) images and (B, size / patch, …) maps: patch (i, j, k) of the crop is
    patch (i, j, k) + offset of the source, and so is its score.
    """
    d = images.ndim - 2
    if size % patch or any(s != g * patch for s, g in zip(images.shape[2:], attn.shape[1:])) or attn.ndim != d + 1:
        raise SmartError(f"crop: images {tuple(images.shape[2:])} and attention grid {tuple(attn.shape[1:])} "
                         f"are not aligned in patches of {patch} (or crop {size} not a multiple of it)")
    g = size // patch
    vox = tuple(slice(o * patch, o * patch + size) for o in offset)
    cell = tuple(slice(o, o + g) for o in offset)
    return images[(slice(None), slice(None), *vox)], attn[(slice(None), *cell)]


def random_shift_flip(images: torch.Tensor, attn: torch.Tensor, patch: int, shift: int, generator: torch.Generator,
                      flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A random translation by whole patches and random flips, applied to images and maps alike.

    Each sample is padded by ``shift`` voxels per side (zeros; maps by ``shift / patch`` zero cells),
    cropped back to its size at a random patch offset (:func:`crop_at`), then flipped along each
    spatial axis with p = 0.5. images (B, C, *S), attn (B, *G) → the same shapes.
    """
    if shift % patch or shift < 0:
        raise SmartError(f"shift={shift}: must be a non-negative multiple of the patch size {patch}")
    d, size, c = images.ndim - 2, images.shape[2], shift // patch
    xs, ms = [], []
    for b in range(images.shape[0]):
        x = F.pad(images[b:b + 1], (shift, shift) * d) if shift else images[b:b + 1]
        m = F.pad(attn[b:b + 1], (c, c) * d) if c else attn[b:b + 1]
        off = [int(torch.randint(0, 2 * c + 1, (1,), generator=generator)) for _ in range(d)]
        x, m = crop_at(x, m, patch, off, size)
        if flip:
            axes = [a for a in range(d) if bool(torch.rand((), generator=generator) < 0.5)]
            if axes:
                x, m = torch.flip(x, [a + 2 for a in axes]), torch.flip(m, [a + 1 for a in axes])
        xs.append(x)
        ms.append(m)
    return torch.cat(xs), torch.cat(ms)


def unit_scores(attn: torch.Tensor, factor: int) -> torch.Tensor:
    """Patch-grid scores (B, g, g, g) → mask-unit scores (B, (g / factor)³): the mean over each unit's
    ``factor``³ patches (a unit of SMART is 16³ voxels, so ``factor = 16 / patch``)."""
    if attn.ndim != 4 or any(s % factor for s in attn.shape[1:]):
        raise SmartError(f"attention grid {tuple(attn.shape[1:])}: not divisible into mask units of {factor}³ patches")
    return F.avg_pool3d(attn[:, None].float(), factor)[:, 0].flatten(1)


class SupervisedAttention:
    """The supervised attention of a ViT export (MSMAE) on SMART crops, as scores of SMART's mask units.

    A crop of S³ voxels is cut into tiles of the ViT's input size (S must be a multiple of it); each
    tile's [CLS]→patch attention (:func:`head_normalised`) is put back at the tile's place on the crop's
    patch grid (aligned in patch coordinates), and the patch scores are averaged per 16³-voxel unit
    (:func:`unit_scores`). ``scorer(x)`` : (B, 1, S, S, S) → (B, (S/16)³).

    Refused (SmartError naming the file): an export that is not a 3D ViT with a [CLS] token, whose
    patch does not divide the unit, or whose input edge is not a multiple of the unit.
    """

    def __init__(self, path: str | os.PathLike, unit: int = 16) -> None:
        from .models.vit import load_vit_features, read_vit_export

        blob = read_vit_export(path)
        m = blob["model"]
        patch, size = m["patch_size"], m["img_size"]
        if int(m["spatial_dims"]) != 3 or blob.get("cls_token") is None or not isinstance(patch, int) or not isinstance(size, int):
            raise SmartError(f"{path}: supervised attention needs a cubic 3D ViT export with a [CLS] token "
                             f"(got spatial_dims={m['spatial_dims']}, img_size={size}, patch_size={patch}, "
                             f"[CLS] {'present' if blob.get('cls_token') is not None else 'absent'})")
        if unit % patch or size % unit:
            raise SmartError(f"{path}: patch {patch} and input edge {size} do not tile SMART's {unit}³-voxel mask units")
        self.net, self.path, self.tile, self.patch, self.unit = load_vit_features(path).eval(), Path(path), size, patch, unit

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[0], x.shape[-1]
        if x.ndim != 5 or s % self.tile or len(set(x.shape[2:])) != 1:
            raise SmartError(f"crop {tuple(x.shape[2:])}: supervised attention of {self.path} tiles cubic crops "
                             f"whose edge is a multiple of {self.tile}")
        t, g = s // self.tile, self.tile // self.patch
        tiles = x.float().cpu().unfold(2, self.tile, self.tile).unfold(3, self.tile, self.tile).unfold(4, self.tile, self.tile)
        tiles = tiles.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(b * t**3, x.shape[1], self.tile, self.tile, self.tile)
        a = self.net.cls_attention(tiles).view(b, t, t, t, g, g, g)
        grid = a.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t * g, t * g, t * g)  # tile-major → the crop's patch grid
        return unit_scores(grid, self.unit // self.patch).to(x.device)


def resolve_given(spec: str, run_dir: str | os.PathLike) -> Path:
    """The supervised checkpoint named by ``PretrainConfig.given_attention``: ``"msmae"`` is the MSMAE run
    of the runs folder that holds ``run_dir`` (``<runs>/pretrain/msmae/encoder.pt``); anything else a path."""
    from .pretrain_data import data_root

    return data_root(run_dir) / "pretrain" / "msmae" / "encoder.pt" if spec == "msmae" else Path(spec)


def given_scorer(cfg, run_dir: str | os.PathLike) -> SupervisedAttention | None:
    """The unit scorer of a SMART run whose ``mask_mode`` is ``"given"`` (None for every other mode), loaded
    before any data is prepared so that a missing or foreign checkpoint fails first."""
    if cfg.mask_mode != "given":
        return None
    path = resolve_given(cfg.given_attention, run_dir)
    if not path.is_file():
        hint = " (pretrain it with smartlib.mae.pretrained_mae('msmae', …) first)" if cfg.given_attention == "msmae" else ""
        raise SmartError(f"given_attention={cfg.given_attention!r}: {path} not found{hint}")
    return SupervisedAttention(path)
