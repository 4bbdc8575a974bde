"""MAE and MSMAE pretraining of a ViT (MONAI ``MaskedAutoEncoderViT``), 2D or 3D, resumable.

* **MAE** (arXiv 2111.06377): 75 % of the patches masked uniformly at random, masked MSE.
* **MSMAE** (arXiv 2305.05871): the same model with a [CLS] classifier trained alongside (masked MSE +
  0.1 × cross-entropy, so it needs labels) whose own [CLS]→patch attention chooses the masks
  (:mod:`smartlib.supervised_masking`): 45 % masked, 30 % thrown away, 25 % visible. The schedule of
  the public code (300 epochs) is kept as fractions of the run: random 0.75 masking for the first
  40/300 of the epochs, then attention masking with the maps recomputed on the whole training images
  every 40/300 of the epochs (:attr:`MAEConfig.random_fraction`, :attr:`MAEConfig.refresh_fraction`).
  The public code applies a softmax before its cross-entropy (a double softmax); here the
  cross-entropy takes the logits.

Augmentation: a random translation by whole patches and random flips (``shift``, ``flip``), applied to
images and attention maps together so that each score stays on its patch.

:func:`pretrain_mae` writes ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` (atomic, every
``ckpt_every`` steps; exact resume: every draw is keyed by (seed, step) or (seed, epoch), the maps and
the RNG states are in the checkpoint), then ``encoder.pt`` (a ``smart-vit/1`` export,
:func:`smartlib.models.vit.load_vit`) and ``summary.json``. A complete run with the same config and
data is reused. :func:`pretrained_mae` runs it on the nodule task's training split for the book.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import SmartError

__all__ = ["MAEConfig", "METHODS", "mae_config", "pretrain_mae", "pretrained_mae", "mae_run_dir"]

METHODS = ("mae", "msmae")

#: per-preset sizes: a small ViT with 64 tokens (32³ crops, patch 8) on a CPU; the paper preset a ViT-B
#: (768 wide, 12 blocks, 12 heads; decoder 528 wide — MSMAE's 512 rounded to a multiple of 6 for 3D sin-cos
#: position embeddings — 8 blocks) on 64³ crops with patch 8 (512 tokens) and the public code's 300 epochs.
_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(img_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=192, decoder_hidden_size=24,
                  decoder_layers=1, decoder_heads=4, decoder_mlp_dim=96, epochs=2, batch_size=8, lr=1e-3, shift=8),
    "cpu": dict(img_size=32, patch_size=8, hidden_size=96, num_layers=4, num_heads=4, mlp_dim=384, decoder_hidden_size=48,
                decoder_layers=2, decoder_heads=4, decoder_mlp_dim=192, epochs=30, batch_size=16, lr=1e-3, shift=8),
    "paper": dict(img_size=64, patch_size=8, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, decoder_hidden_size=528,
                  decoder_layers=8, decoder_heads=16, decoder_mlp_dim=2048, epochs=300, batch_size=64, lr=2.5e-4, shift=8),
}
_PRESETS["long"] = {**_PRESETS["cpu"], "epochs": 60}  # the recorded run: the cpu ViT, twice the epochs
#: what the method changes: MSMAE's split of the attention order
_METHOD: dict[str, dict[str, Any]] = {"mae": {"mask_ratio": 0.75, "throw_ratio": 0.0}, "msmae": {"mask_ratio": 0.45, "throw_ratio": 0.30}}


@dataclasses.dataclass
class MAEConfig:
    """One MAE / MSMAE run: model, masking, schedule, optimisation (defaults: the cpu preset's MAE)."""

    # ---- model (MONAI MaskedAutoEncoderViT; sin-cos position embeddings need widths divisible by 2·spatial_dims)
    spatial_dims: int = 3
    in_channels: int = 1
    img_size: int = 32
    patch_size: int = 8
    hidden_size: int = 96
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 384
    decoder_hidden_size: int = 48
    decoder_layers: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int = 192
    # ---- masking
    method: str = "mae"  #: "mae" (random masking) or "msmae" (supervised attention; needs labels)
    mask_ratio: float = 0.75  #: MAE: masked share; MSMAE: masked share of the attention order (0.45)
    throw_ratio: float = 0.0  #: MSMAE: thrown share after the masked ones (0.30); MAE: 0
    random_ratio: float = 0.75  #: MSMAE's first phase: random masking at this ratio
    random_fraction: float = 40 / 300  #: MSMAE: share of the epochs with random masking (40 of 300)
    refresh_fraction: float = 40 / 300  #: MSMAE: attention maps recomputed every this share of the epochs
    cls_weight: float = 0.1  #: MSMAE: weight of the cross-entropy
    shift: int = 8  #: random translation of up to ± shift voxels (a multiple of the patch)
    flip: bool = True
    # ---- optimisation (AdamW, betas 0.9 / 0.95 as MAE; warm-up then cosine per step)
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup: float = 0.1  #: share of the steps
    weight_decay: float = 0.05
    seed: int = 0
    ckpt_every: int = 50
    max_steps: int = 0  #: stop after this many steps (0: all); the schedules still span all epochs

    def __post_init__(self) -> None:
        from .supervised_masking import split_counts

        sincos = 2 * self.spatial_dims
        checks = [
            ("spatial_dims", self.spatial_dims in (2, 3), "expected 2 or 3"),
            ("img_size", self.img_size >= 1 and self.patch_size >= 1 and self.img_size % self.patch_size == 0,
             f"must be a multiple of patch_size={self.patch_size}"),
            ("hidden_size", self.hidden_size % self.num_heads == 0 and self.hidden_size % sincos == 0,
             f"must be divisible by num_heads={self.num_heads} and by {sincos}"),
            ("decoder_hidden_size", self.decoder_hidden_size % self.decoder_heads == 0 and self.decoder_hidden_size % sincos == 0,
             f"must be divisible by decoder_heads={self.decoder_heads} and by {sincos}"),
            ("num_layers", self.num_layers >= 1 and self.decoder_layers >= 1, "need ≥ 1 encoder and decoder block"),
            ("method", self.method in METHODS, f"expected one of {', '.join(METHODS)}"),
            ("throw_ratio", self.method == "msmae" or self.throw_ratio == 0, "plain MAE throws nothing (use method='msmae')"),
            ("random_fraction", 0 <= self.random_fraction < 1 and 0 < self.refresh_fraction <= 1,
             "need 0 ≤ random_fraction < 1 and 0 < refresh_fraction ≤ 1"),
            ("cls_weight", self.cls_weight >= 0, "must be ≥ 0"),
            ("shift", self.shift >= 0 and self.shift % self.patch_size == 0, f"must be a non-negative multiple of patch_size={self.patch_size}"),
            ("epochs", self.epochs >= 1, "must be ≥ 1"), ("batch_size", self.batch_size >= 1, "must be ≥ 1"),
            ("lr", self.lr > 0 and 0 <= self.min_lr <= self.lr, "need 0 ≤ min_lr ≤ lr and lr > 0"),
            ("warmup", 0 <= self.warmup < 1, "must lie in [0, 1)"), ("weight_decay", self.weight_decay >= 0, "must be ≥ 0"),
            ("seed", self.seed >= 0, "must be ≥ 0"), ("ckpt_every", self.ckpt_every >= 1, "must be ≥ 1"),
            ("max_steps", self.max_steps >= 0, "must be ≥ 0 (0 = all)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise SmartError(f"MAEConfig {name}={getattr(self, name)!r}: {why}")
        split_counts((self.img_size // self.patch_size) ** self.spatial_dims, self.mask_ratio, self.throw_ratio)
        split_counts(1, self.random_ratio, 0.0)

    @property
    def n_patches(self) -> int:
        return (self.img_size // self.patch_size) ** self.spatial_dims

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def mae_config(preset: str, method: str = "mae", **overrides: Any) -> MAEConfig:
    """The :class:`MAEConfig` of ``method`` (``mae`` / ``msmae``) at ``preset``, with ``overrides`` (unknown keys refused)."""
    if preset not in _PRESETS:
        raise SmartError(f"preset {preset!r}: expected one of {', '.join(_PRESETS)}")
    if method not in METHODS:
        raise SmartError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    fields = {f.name for f in dataclasses.fields(MAEConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise SmartError(f"MAEConfig: unknown key(s) {', '.join(bad)}")
    return MAEConfig(**{**_PRESETS[preset], **_METHOD[method], "method": method, **overrides})


# ------------------------------------------------------------------------------------------ inputs
def _check_inputs(images: torch.Tensor, labels: Any, cfg: MAEConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, C, *spatial) in [0, 1] of the config's size; labels (N,) ≥ 2 classes for MSMAE, none for MAE."""
    if not isinstance(images, torch.Tensor):
        raise SmartError(f"images: expected a torch.Tensor (N, C, *spatial), got {type(images).__name__}")
    want = (cfg.in_channels, *(cfg.img_size,) * cfg.spatial_dims)
    if images.ndim != cfg.spatial_dims + 2 or tuple(images.shape[1:]) != want or len(images) == 0:
        raise SmartError(f"images of shape {tuple(images.shape)}: expected (N, {', '.join(map(str, want))}) for this MAEConfig")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all() or float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6:
        raise SmartError(f"images: values must be finite and lie in [0, 1] (got {float(x.min()):.3g} … {float(x.max()):.3g})")
    if cfg.method == "mae":
        if labels is not None:
            raise SmartError("labels given to a plain MAE run: MAE is self-supervised (use method='msmae' for the supervised attention)")
        return x, None
    if labels is None:
        raise SmartError("method='msmae' needs labels (N,): its attention comes from a classifier trained alongside")
    y = torch.as_tensor(np.asarray(labels)).long().flatten()
    if len(y) != len(x) or int(y.min()) < 0 or len(torch.unique(y)) < 2:
        raise SmartError(f"labels: need {len(x)} non-negative class indices of at least two classes "
                         f"(got {len(y)} with classes {torch.unique(y).tolist()[:6]})")
    return x, y


def _fingerprint(x: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    h = hashlib.sha256(x.numpy().tobytes())
    if y is not None:
        h.update(y.numpy().tobytes())
    return {"n": len(x), "shape": list(x.shape[1:]), "sha256": h.hexdigest()}


# ------------------------------------------------------------------------------------------ loop
def _phase(cfg: MAEConfig, epoch: int) -> tuple[bool, bool]:
    """(attention masking in this epoch, maps recomputed at its start) — MSMAE's schedule in epochs."""
    if cfg.method != "msmae":
        return False, False
    first = round(cfg.random_fraction * cfg.epochs)
    every = max(1, round(cfg.refresh_fraction * cfg.epochs))
    on = epoch >= first
    return on, on and (epoch - first) % every == 0


def pretrain_mae(images: torch.Tensor, cfg: MAEConfig, out: str | Path, log: Callable[[str], None] = print,
                 labels: Any = None, progress: bool = False) -> Path:
    """Pretrain an MAE (or MSMAE, with ``labels``) on ``images`` (N, C, *spatial) in [0, 1]; returns ``out/encoder.pt``.

    Everything is checked before any compute (config, images, labels, ``out``); a run in ``out`` with
    the same config and data is reused when complete and resumed from its checkpoint otherwise; one
    with another config or data is refused (SmartError), so nothing is overwritten.
    """
    from .io import atomic_path, check_out_dir, load_torch, read_json, save_torch, write_json
    from .models.mae import SplitMaskedAutoEncoder
    from .pretrain import param_groups
    from .pretrain_data import keyed_generator
    from .schedules import warmup_cosine
    from .seed import rng_state, seed_everything, set_rng_state
    from .supervised_masking import random_shift_flip, random_split, supervised_split

    if not isinstance(cfg, MAEConfig):
        raise SmartError(f"cfg: expected an MAEConfig, got {type(cfg).__name__}")
    x, y = _check_inputs(images, labels, cfg)
    run = check_out_dir(out, "out")
    ident = {"config": {k: v for k, v in cfg.to_dict().items() if k != "max_steps"}, "data": _fingerprint(x, y)}  # max_steps may change on resume
    started = (run / "checkpoint.pt").exists() or (run / "encoder.pt").exists()  # a folder without them is started afresh
    if started:
        saved = read_json(run / "run.json") if (run / "run.json").exists() else {}
        saved.get("config", {}).pop("max_steps", None)  # written by earlier versions; may change on resume anyway
        same = saved == json.loads(json.dumps(ident))
        if not same:
            raise SmartError(f"{run}: holds an MAE run with another configuration or data; remove it or choose another folder")
        if (run / "summary.json").exists() and read_json(run / "summary.json").get("complete") and (run / "encoder.pt").exists():
            return run / "encoder.pt"

    seed_everything(cfg.seed)
    n_classes = int(y.max()) + 1 if y is not None else 0
    model = SplitMaskedAutoEncoder(cfg.in_channels, cfg.img_size, cfg.patch_size, cfg.hidden_size, cfg.mlp_dim, cfg.num_layers,
                                   cfg.num_heads, cfg.decoder_hidden_size, cfg.decoder_mlp_dim, cfg.decoder_layers,
                                   cfg.decoder_heads, cfg.spatial_dims, n_classes)
    opt = torch.optim.AdamW(param_groups(model), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    N, B = len(x), min(cfg.batch_size, len(x))
    spe = math.ceil(N / B)
    total = spe * cfg.epochs
    stop = total if cfg.max_steps <= 0 else min(total, cfg.max_steps)
    grid = (cfg.img_size // cfg.patch_size,) * cfg.spatial_dims
    maps = torch.zeros(N, *grid)  # the attention maps in use (MSMAE), on each image's own patch grid
    start = 0
    if started and (run / "checkpoint.pt").exists():
        ck = load_torch(run / "checkpoint.pt")
        model.load_state_dict(ck["model"], strict=True)
        opt.load_state_dict(ck["optimizer"])
        maps, start = ck["maps"], int(ck["step"])
        set_rng_state(ck["rng"])
        log(f"resumed {run} at step {start}/{total}")
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "run.json", ident)
    write_json(run / "config.json", cfg.to_dict())
    metrics = run / "metrics.jsonl"
    kept = [ln for ln in (metrics.read_text().splitlines() if metrics.exists() else []) if _step_of(ln) < start]
    with atomic_path(metrics) as tmp:  # lines of steps that will be recomputed are dropped
        tmp.write_text("".join(k + "\n" for k in kept))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=start, desc=f"{cfg.method} {run.name}", unit="step", dynamic_ncols=True)
    t_run, warm = time.perf_counter(), int(round(cfg.warmup * total))
    model.train()
    with open(metrics, "a") as fh:
        for step in range(start, stop):
            t0 = time.perf_counter()
            epoch, it = divmod(step, spe)
            attn_on, refresh = _phase(cfg, epoch)
            if refresh and it == 0:
                maps = model.cls_attention(x)
            idx = torch.randperm(N, generator=keyed_generator(cfg.seed, epoch, 7))[it * B:(it + 1) * B]
            g = keyed_generator(cfg.seed, step, 1)
            xb, mb = random_shift_flip(x[idx], maps[idx], cfg.patch_size, cfg.shift, g, cfg.flip)
            if attn_on:
                state = supervised_split(mb.flatten(1), cfg.mask_ratio, cfg.throw_ratio, g)
            else:
                state = random_split(len(idx), cfg.n_patches, cfg.random_ratio if cfg.method == "msmae" else cfg.mask_ratio, g)
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, total, warm, cfg.lr, cfg.min_lr)
            out_ = model(xb, state)
            loss, terms = model.loss(xb, out_, y[idx] if y is not None else None, cfg.cls_weight)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SmartError(f"{run}: step {step}: loss is {value}; stopped (last checkpoint kept)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            fh.write(json.dumps({"step": step, "epoch": epoch, "loss": value, **terms, "lr": opt.param_groups[0]["lr"],
                                 "phase": "attention" if attn_on else "random", "visible": float((state == 0).float().mean()),
                                 "step_time": time.perf_counter() - t0}) + "\n")
            fh.flush()
            if bar is not None:
                bar.update(1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == stop:
                save_torch({"step": step + 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "maps": maps,
                            "rng": rng_state()}, run / "checkpoint.pt")
    if bar is not None:
        bar.close()
    model.export(run / "encoder.pt", {"method": cfg.method, "n_classes": n_classes, "steps": stop})
    write_json(run / "summary.json", {"complete": stop == total, "steps_done": stop, "steps_total": total, "method": cfg.method,
                                      "n_images": N, "n_classes": n_classes, "wall_s_this_process": time.perf_counter() - t_run})
    log(f"{cfg.method}: {stop - start} steps in {time.perf_counter() - t_run:.1f} s → {run / 'encoder.pt'}")
    return run / "encoder.pt"


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):  # a line cut short by a kill mid-write
        return 1 << 62


# ------------------------------------------------------------------------------------------ the book's runs
def mae_run_dir(method: str, runs_dir: str | Path) -> Path:
    """``<runs_dir>/pretrain/<method>``: MAE and MSMAE runs live beside the SMART variants."""
    return Path(runs_dir) / "pretrain" / method


def pretrained_mae(method: str, preset: str, runs_dir: str | Path, data: str | Path | None = None, data_seed: int = 0,
                   dataset: Any = None, log: Callable[[str], None] = print, progress: bool = False, **overrides: Any) -> Path:
    """``method``'s encoder pretrained on the nodule task's *training* split at ``preset`` (made once, then reused).

    Only training patients are seen — their labels too, for MSMAE — so validation and test cases stay
    unseen. ``dataset`` is a loaded :class:`smartlib.downstream.classify.ClassData` (else it is loaded).
    """
    from .downstream.classify import load_classification

    cfg = mae_config(preset, method, **overrides)
    ds = dataset if dataset is not None else load_classification("nodules", data, preset, runs_dir, data_seed=data_seed)
    if ds.images.shape[-1] != cfg.img_size:
        raise SmartError(f"{ds.source}: crops of {ds.images.shape[-1]}³ voxels, but the {preset} {method} config expects "
                         f"{cfg.img_size}³ (img_size)")
    tr = ds.split["train"]
    return pretrain_mae(ds.images[tr], cfg, mae_run_dir(method, runs_dir), log=log,
                        labels=ds.labels[tr] if method == "msmae" else None, progress=progress)
