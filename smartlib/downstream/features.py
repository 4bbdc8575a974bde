"""Encoders for the downstream studies and their frozen features.

An *init* is ``"scratch"`` (random weights of the preset's architecture, seeded), the name of a
pretraining variant in :data:`smartlib.variants.VARIANTS` (pretrained on demand by
:func:`smartlib.variants.pretrained`), or the path of an exported encoder — a SMART export
(``smart export``, :func:`smartlib.models.smart.load_encoder`) or a plain ViT export of an MAE / MSMAE
run (:func:`smartlib.models.vit.load_vit_features`, the same ``encode`` interface) — loaded with strict
key matching.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import SmartError

__all__ = ["resolve_init", "load_init", "init_arch", "extract_features", "stack"]


def resolve_init(init: str | os.PathLike, preset: str, runs_dir: str | os.PathLike, log=print) -> str:
    """``"scratch"`` stays; a variant name becomes its exported encoder path (pretraining it if needed);
    anything else must be an existing file."""
    from ..variants import VARIANTS, pretrained

    s = str(init)
    if s == "scratch":
        return s
    if s in VARIANTS:
        return str(pretrained(s, preset, runs_dir, log=log))
    if not Path(s).is_file():
        raise SmartError(f"{s}: encoder checkpoint not found (expected 'scratch', a variant of {', '.join(VARIANTS)}, or an exported encoder .pt)")
    # before any data is prepared: a file of another format, or weights that do not fit their declared
    # architecture (strict keys and shapes), fail here; a check only, so the global generator is kept
    with torch.random.fork_rng(devices=[]):
        _load_export(s)
    return s


def _load_export(path: str, **overrides):
    """A SMART export → ``SMARTNet(heads=False)`` (with ``overrides``); a ViT export (MAE / MSMAE) → ``ViTFeatures``
    (its own fixed input size); anything else a SmartError."""
    from ..io import load_torch
    from ..models.smart import EXPORT_FORMAT, load_encoder
    from ..models.vit import VIT_FORMAT, load_vit_features

    blob = load_torch(path)
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt == VIT_FORMAT:
        return load_vit_features(path)
    if fmt != EXPORT_FORMAT:
        raise SmartError(f"{path}: not an encoder export (format {fmt!r}; expected {EXPORT_FORMAT!r} from `smart export RUN` "
                         f"or {VIT_FORMAT!r} from an MAE / MSMAE run)")
    return load_encoder(path, **overrides)


def init_arch(init: str, preset: str) -> dict:
    """Architecture arguments of ``init``: the preset's for scratch, the export's own otherwise."""
    from ..config import pretrain_config
    from ..io import load_torch
    from ..models.smart import EXPORT_FORMAT

    if init == "scratch":
        return pretrain_config(preset).model_kwargs()
    from ..models.vit import VIT_FORMAT, read_vit_export

    blob = load_torch(init)
    if isinstance(blob, dict) and blob.get("format") == VIT_FORMAT:  # a plain ViT (MAE / MSMAE): its own arguments
        return {"arch": "monai_vit", **read_vit_export(init)["model"]}
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT or not isinstance(blob.get("model"), dict):
        raise SmartError(f"{init}: not a SMART encoder export (expected format {EXPORT_FORMAT!r}; use `smart export RUN`)")
    return dict(blob["model"])


def load_init(init: str, preset: str, img_size: int, seed: int = 0):
    """A :class:`~smartlib.models.smart.SMARTNet` (``heads=False``, drop path 0) for inputs of ``img_size``³.

    ``init`` is ``"scratch"`` (preset architecture, weights drawn from the ``"scratch"`` stream of ``seed``,
    :func:`smartlib.seed.stream_seed`, so they never equal a pretraining run's initial weights) or an
    export path (strict loading; a file of another format or whose weights do not fit its declared
    architecture is a SmartError). A Swin whose stage windows would shrink at ``img_size``³
    (:func:`smartlib.models.swin.check_windows`) is refused: its learned relative-position biases
    would be applied at the wrong offsets.
    """
    from ..models.smart import SMARTNet, load_encoder
    from ..seed import seed_everything, stream_seed

    from ..models.swin import check_windows

    arch = init_arch(init, preset)
    if arch.get("arch", "swin") == "swin":  # one grid: no stage may see a smaller window than in pretraining
        check_windows(int(arch["window_size"]), img_size, what=f"{init}: crops")
    if init == "scratch":
        seed_everything(stream_seed(seed, "scratch"))
        kw = {**arch, "img_size": img_size, "drop_path": 0.0}
        return SMARTNet(heads=False, **kw)
    if arch["arch"] == "monai_vit":  # a ViT export has its fixed input size (its position embeddings)
        if arch["img_size"] != img_size:
            raise SmartError(f"{init}: a ViT for {arch['img_size']}-voxel inputs cannot encode {img_size}-voxel crops")
        return _load_export(init)
    overrides = {"img_size": img_size, "drop_path": 0.0}
    if arch.get("arch", "swin") != "swin":
        overrides.pop("img_size")
    return load_encoder(init, **overrides)


def stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[(1, S, S, S)] * N`` → ``(N, 1, S, S, S)``; a clear error if the sizes differ."""
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) != 1:
        raise SmartError(f"images have different shapes {sorted(shapes)[:3]}: set a crop size (roi)")
    return torch.stack(list(images))


@torch.no_grad()
def extract_features(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 8,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Frozen features of ``images`` (N, 1, S, S, S) in batches (eval mode, no gradients).

    Returns: ``cls`` (N, C3) the [CLS] token after semantic attention (the token mean when the model
    has none) and ``pooled`` (N, Cg) the average-pooled deepest map, both float32 NumPy arrays.
    """
    from tqdm.auto import tqdm

    net.eval()
    cls, pooled = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="features", unit="batch", disable=not progress, dynamic_ncols=True):
        out = net.encode(images[i:i + batch_size])
        cls.append(out["cls"].float().cpu())
        pooled.append(out["pooled"].float().cpu())
    return {"cls": torch.cat(cls).numpy(), "pooled": torch.cat(pooled).numpy()}
