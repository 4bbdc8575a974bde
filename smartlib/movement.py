"""Did pretraining move the encoder? Distance from its initial weights and feature similarity to scratch.

A pretrained encoder that still holds most of its initial weights, or whose features are as similar
to a random encoder's as two random encoders are to each other, has not learned much; a comparison
of it with "scratch" then measures nothing. For every encoder :func:`movement_table` reports

* ``rel_distance_from_init`` — ‖θ − θ₀‖ / ‖θ₀‖ over the encoder's float tensors, θ₀ the pretraining
  student's initial weights (:func:`initial_encoder`, reconstructed exactly from the run's config),
  and ``identical_share``, the share of tensors still bit-identical to θ₀;
* ``cka_vs_scratch`` — unbiased linear CKA (:func:`smartlib.downstream.similarity.linear_cka`) between
  its frozen average-pooled deepest features and those of the ``scratch`` encoder of seed 0 on the same
  images, and ``cka_vs_init`` — the same against its own initial weights. (The ``[CLS]`` token is left
  out: after the class-attention blocks' LayerScale of 1e-4 it barely varies across images early in
  training, and a near-constant block would make the Gram matrices degenerate.)

* ``feature_spread`` — how much its features vary across the images: the mean over feature dimensions of
  the standard deviation across images, divided by the same for the seed-0 scratch encoder. Near 0 the
  encoder maps every image to (almost) the same features — a *collapsed* representation, the failure mode
  of DINO-style distillation on short schedules; its CKA is then undefined and reported as NaN.

The ``scratch`` row compares the seed-0 scratch encoder with an independent scratch encoder (seed 1):
the similarity two unrelated random networks have on these images, the floor to read the others against.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .errors import SmartError

__all__ = ["initial_encoder", "movement_table"]


def initial_encoder(run_dir: str | os.PathLike):
    """The pretraining student of ``run_dir`` as it was before its first step (a :class:`SMARTNet`).

    The loop seeds everything with ``cfg.seed`` and builds the student before any other draw from
    torch's generator, so the initial weights are rebuilt exactly (a test checks this against the
    student the loop builds).
    """
    from .config import config_from_json
    from .models.smart import SMARTNet
    from .seed import seed_everything

    cfg = config_from_json(Path(run_dir) / "config.json")
    seed_everything(cfg.seed)
    return SMARTNet(**cfg.model_kwargs())


def _features(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    from .downstream.features import extract_features

    return extract_features(net, images)["pooled"]


def _spread(f: np.ndarray) -> float:
    return float(np.asarray(f, dtype=np.float64).std(axis=0).mean())


def _cka(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased linear CKA, NaN where it is undefined (features constant across the images)."""
    from .downstream.similarity import linear_cka

    try:
        return linear_cka(a, b)
    except SmartError:
        return float("nan")


def movement_table(encoders: Mapping[str, str | os.PathLike], images: torch.Tensor, preset: str) -> "pd.DataFrame":
    """One row per encoder (plus ``scratch``): distance from its initial weights and CKA to scratch.

    Args:
        encoders: name → exported encoder (``encoder.pt`` inside its pretraining run folder).
        images: (N, 1, S, S, S) crops in [0, 1], N ≥ 4 (S a multiple of 32).
        preset: the preset whose architecture the scratch encoders use.
    Returns:
        A DataFrame with ``init, rel_distance_from_init, identical_share, cka_vs_scratch, cka_vs_init,
        feature_spread, n_images``.
    """
    import pandas as pd

    from .downstream.features import load_init
    from .downstream.similarity import relative_distance
    from .models.smart import load_encoder

    if images.ndim != 5 or len(images) < 4:
        raise SmartError(f"images of shape {tuple(images.shape)}: need (N, 1, S, S, S) with N ≥ 4")
    size = int(images.shape[-1])
    f_scratch = _features(load_init("scratch", preset, size, seed=0), images)
    base = _spread(f_scratch)
    rows = [{"init": "scratch", "rel_distance_from_init": 0.0, "identical_share": 1.0,
             "cka_vs_scratch": _cka(f_scratch, _features(load_init("scratch", preset, size, seed=1), images)),
             "cka_vs_init": 1.0, "feature_spread": 1.0, "n_images": len(images)}]
    for name, path in encoders.items():
        run = Path(path).parent
        if not (run / "config.json").is_file():
            raise SmartError(f"{path}: not inside a pretraining run folder (no config.json beside it)")
        enc = load_encoder(path, img_size=size, drop_path=0.0)
        enc_sd = enc.state_dict()
        # the encoder's tensors at step 0 (heads and grid-dependent index buffers are not part of the export)
        init_sd = {k: v for k, v in initial_encoder(run).state_dict().items()
                   if k in enc_sd and v.shape == enc_sd[k].shape and v.is_floating_point()}
        d = relative_distance({k: enc_sd[k] for k in init_sd}, init_sd)
        init_net = copy.deepcopy(enc)
        init_net.load_state_dict({**enc_sd, **init_sd}, strict=True)
        f = _features(enc, images)
        rows.append({"init": name, "rel_distance_from_init": d["relative_distance"], "identical_share": d["identical_share"],
                     "cka_vs_scratch": _cka(f, f_scratch), "cka_vs_init": _cka(f, _features(init_net, images)),
                     "feature_spread": _spread(f) / base, "n_images": len(images)})
    return pd.DataFrame(rows)
