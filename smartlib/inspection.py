"""Look inside a pretraining run: metrics, what the teacher attends to, what the student masks and rebuilds.

- :func:`load_metrics` reads ``metrics.jsonl`` into a DataFrame.
- :func:`run_summary` condenses a run (final losses, step time, samples/s, peak memory, wall time).
- :func:`inspect_run` replays one SMART step on ``n`` deterministic views of the run's data with the
  checkpointed teacher and student: the noisy teacher's [CLS] attention, the mask it chooses, the
  student's reconstruction of the masked units — as voxel arrays ready for plotting.
- :func:`lesion_volumes` and :func:`attention_focus` score how much of an encoder's [CLS] attention
  falls inside a lesion (the "attention focus" of the ablation chapter).

Nothing here trains or writes: every function only reads a run folder or an exported encoder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import SmartError
from .variants import TWO_BY_TWO

__all__ = ["load_metrics", "final_losses", "run_summary", "inspect_run", "unit_to_voxels", "lesion_volumes",
           "attention_focus", "ablation_table", "two_by_two", "LOSS_TERMS"]

LOSS_TERMS = ("loss", "amip", "ampd", "aitd", "gitd")


# ------------------------------------------------------------------------------------------ metrics
def load_metrics(run_dir: str | Path):
    """``run_dir/metrics.jsonl`` as a :class:`pandas.DataFrame`, one row per logged step, sorted by step.

    A line cut short (a run killed mid-write) is skipped; a missing or empty file is a SmartError.
    """
    import pandas as pd

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise SmartError(f"{path}: no metrics (is {run_dir} a pretraining run folder?)")
    rows = []
    for ln in path.read_text().splitlines():
        try:
            rows.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    if not rows:
        raise SmartError(f"{path}: no logged steps yet")
    return pd.DataFrame(rows).sort_values("step").drop_duplicates("step", keep="last").reset_index(drop=True)


def final_losses(df, last: int = 5, terms: Sequence[str] = LOSS_TERMS) -> dict[str, float]:
    """Mean of each loss term over the last ``last`` logged steps (a less noisy "final" value)."""
    if last < 1:
        raise SmartError(f"last={last}: must be ≥ 1")
    tail = df.tail(last)
    return {t: float(tail[t].mean()) for t in terms if t in tail}


def run_summary(run_dir: str | Path, last: int = 5) -> dict[str, Any]:
    """Final losses, step time, throughput, peak memory and wall time of a run.

    ``step_time_s`` is the median over logged steps after the first (which pays for warm-up);
    ``compute_s`` sums every logged step's time (it spans resumes, unlike the summary's wall time).
    """
    from .io import read_json

    run = Path(run_dir)
    df = load_metrics(run)
    s = read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    timed = df["step_time"].iloc[1:] if len(df) > 1 else df["step_time"]
    return {
        "run": run.name,
        "steps_done": int(df["step"].max()) + 1,
        "steps_total": s.get("steps_total"),
        "complete": s.get("complete"),
        **{f"final_{k}": v for k, v in final_losses(df, last).items()},
        "step_time_s": float(timed.median()),
        "samples_per_s": float(df["samples_per_s"].iloc[1:].median() if len(df) > 1 else df["samples_per_s"].median()),
        "compute_s": float(df["step_time"].sum()),
        "wall_s_last_process": s.get("wall_s_this_process"),
        "peak_mem_mib": s.get("peak_mem_mib"),
        "params_m": s.get("params_m"),
        "device": s.get("device"),
    }


# ------------------------------------------------------------------------------------------ replay
def unit_to_voxels(unit: np.ndarray | torch.Tensor, grid: int, factor: int) -> np.ndarray:
    """(n, grid³) per-unit values → (n, grid·factor, grid·factor, grid·factor) by nearest-neighbour repetition.

    The unit index is ``(d·grid + h)·grid + w``, the order of the encoder's flattened stage-3 tokens,
    so voxel ``[d, h, w]`` of the result lies in unit ``(d // factor, h // factor, w // factor)``.
    """
    u = torch.as_tensor(np.asarray(unit, dtype=np.float32))
    if u.ndim != 2 or u.shape[1] != grid**3:
        raise SmartError(f"unit map of shape {tuple(u.shape)} does not fit a {grid}³ grid")
    v = u.view(-1, grid, grid, grid)
    return v.repeat_interleave(factor, 1).repeat_interleave(factor, 2).repeat_interleave(factor, 3).numpy()


def _load_net(cfg, state: dict, what: str, path: Path):
    from .models.smart import SMARTNet

    net = SMARTNet(**cfg.model_kwargs())
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SmartError(f"{path}: the {what} does not match the run's config ({str(exc).strip().splitlines()[0]})") from None
    net.set_drop_path(0.0)
    return net.eval()


@torch.no_grad()
def inspect_run(run_dir: str | Path, n: int = 2, seed: int = 0) -> dict[str, Any]:
    """Replay the masking step of a run's last checkpoint on ``n`` views of its data.

    For view k (volume ``(seed + k) mod V``, first crop of "epoch" ``seed``) this runs
    :func:`smartlib.step.smart_step` as a training step would at step ``seed`` for sample ``k``,
    view 0: the teacher sees the view with ``teacher_drop`` of its units dropped, its [CLS]
    attention chooses the student's mask (by the run's ``mask_mode``), and the student
    reconstructs the masked view. Everything is deterministic in ``(run, n, seed)``.

    Returns a dict of NumPy arrays (S = crop edge) — ``view``, ``attention`` (the teacher's attention
    used for masking, per voxel; NaN when the run has no semantic attention), ``attention_clean``
    (the teacher's attention on the un-noised view), ``mask`` (bool, True = masked),
    ``teacher_drop`` (bool, units hidden from the teacher), ``recon`` (the student's output),
    ``masked_input`` (the view with masked voxels set to 0) — each (n, S, S, S); ``unit_attention``
    and ``unit_mask`` (n, N) on the unit grid; ``amip`` (n,) the L1 error over masked voxels; plus
    ``step``, ``mask_mode``, ``grid`` and ``unit``.
    """
    from .io import load_torch
    from .masking import upsample_mask
    from .models.smart import UNIT
    from .pretrain import CHECKPOINT, load_run_config
    from .pretrain_data import PretrainData, pretrain_records
    from .step import smart_step
    from .supervised_masking import given_scorer

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SmartError(f"n={n!r}: must be a positive integer")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    run = Path(run_dir)
    cfg = load_run_config(run)
    ck = load_torch(run / CHECKPOINT)
    teacher = _load_net(cfg, ck["teacher"], "teacher", run / CHECKPOINT)
    student = _load_net(cfg, ck["student"], "student", run / CHECKPOINT)
    given = given_scorer(cfg, run)  # mask_mode "given": the supervised scores that chose the mask
    data = PretrainData(cfg, pretrain_records(cfg, run))
    grid = cfg.img_size // UNIT
    N = grid**3
    out: dict[str, list] = {k: [] for k in ("view", "attention", "attention_clean", "mask", "teacher_drop", "recon",
                                            "masked_input", "unit_attention", "unit_mask", "amip")}
    for k in range(n):
        x = data.views((seed + k) % len(data), seed)[:1]  # (1, 1, S, S, S)
        replay = smart_step(cfg, teacher, student, x[None], [(cfg.seed, seed, k)], clean_pass=True,
                            given_scores=None if given is None else given(x))
        attn, attn_clean, mask, recon = replay.attention, replay.attention_clean, replay.mask, replay.recon
        vox = replay.voxel_mask[0]  # (S, S, S)
        xv = x[0, 0]
        out["view"].append(xv.numpy())
        for key, a in (("attention", attn), ("attention_clean", attn_clean)):
            out[key].append(np.full(xv.shape, np.nan, np.float32) if a is None else unit_to_voxels(a.float(), grid, UNIT)[0])
        out["unit_attention"].append(np.full(N, np.nan, np.float32) if attn is None else attn[0].float().numpy())
        out["mask"].append(vox.numpy())
        out["teacher_drop"].append(upsample_mask(replay.teacher_drop, grid, UNIT)[0].numpy())
        out["recon"].append(recon[0, 0].float().numpy())
        out["masked_input"].append(torch.where(vox, torch.zeros_like(xv), xv).numpy())
        out["unit_mask"].append(mask[0].numpy())
        out["amip"].append(float((recon[0, 0] - xv).abs()[vox].mean()) if vox.any() else math.nan)
    res: dict[str, Any] = {k: np.stack(v) if k != "amip" else np.asarray(v) for k, v in out.items()}
    res.update(step=int(ck["step"]), mask_mode=cfg.mask_mode, grid=grid, unit=UNIT)
    return res


# ------------------------------------------------------------------------------------------ attention focus
def lesion_volumes(n: int, size: int, seed: int = 0, spacing: float = 2.0,
                   hu_window: tuple[float, float] = (-500.0, 500.0)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` phantom crops with a lung tumour: images (n, S, S, S) windowed to [0, 1] and lesion masks (bool).

    Each is :func:`smartlib.data.phantom.make_phantom` with ``tumour=True``, a field of view centred on
    a lung point (body scale 0.7, as the segmentation task set), at ``spacing`` mm. Seeds whose tumour
    could not be placed are skipped, so every mask is non-empty.
    """
    from .data.phantom import make_phantom

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SmartError(f"n={n!r}: must be a positive integer")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise SmartError(f"size={size!r}: must be an integer ≥ 32")
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if not hi > lo:
        raise SmartError(f"hu_window={hu_window!r}: need low < high")
    images, masks = [], []
    s = seed
    while len(images) < n:
        if s - seed > 10 * n:
            raise SmartError(f"could not place {n} tumours in {size}³ phantoms (seeds {seed}..{s})")
        ph = make_phantom((size,) * 3, spacing, seed=s, tumour=True, body_scale=0.7, center_mm="lung")
        s += 1
        if ph.lesion.any():
            images.append(np.clip((ph.image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32))
            masks.append(ph.lesion > 0)
    return np.stack(images), np.stack(masks)


@torch.no_grad()
def attention_focus(encoder_path: str | Path, images: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Share of an encoder's [CLS] attention mass that falls inside each lesion.

    The head-averaged [CLS]→unit attention of the last class-attention block (the map SMART masks
    by) is spread evenly over each unit's voxels; the score is attention-in-lesion / all attention.
    ``baseline`` is the lesion's share of the volume — what uniform attention would score — so
    ``share / baseline`` > 1 means attention concentrates on the lesion.

    Args:
        encoder_path: an exported encoder (``encoder.pt`` of a run or ``smart export``).
        images: (n, S, S, S) in [0, 1] (S a multiple of 32). masks: (n, S, S, S) lesion masks.
    Returns:
        ``share``, ``baseline``, ``ratio`` (n,) arrays. An encoder without semantic attention has no
        [CLS] attention: every entry is NaN.
    """
    from .models.smart import UNIT, load_encoder

    images = np.asarray(images, dtype=np.float32)
    masks = np.asarray(masks).astype(bool)
    if images.ndim != 4 or masks.shape != images.shape or len(set(images.shape[1:])) != 1 or images.shape[1] % 32:
        raise SmartError(f"images {images.shape} and masks {masks.shape}: need equal (n, S, S, S) with S a multiple of 32")
    S = images.shape[1]
    net = load_encoder(encoder_path, img_size=S).eval()
    n = images.shape[0]
    baseline = masks.reshape(n, -1).mean(axis=1)
    if net.sa is None:
        nan = np.full(n, np.nan)
        return {"share": nan, "baseline": baseline, "ratio": nan.copy()}
    grid = S // UNIT
    share = np.empty(n)
    for i in range(n):
        attn = net.encode(torch.from_numpy(images[i])[None, None])["attn"][0].double().numpy()  # (N,)
        frac = masks[i].reshape(grid, UNIT, grid, UNIT, grid, UNIT).mean(axis=(1, 3, 5)).reshape(-1)  # lesion fraction per unit
        share[i] = float((attn * frac).sum() / attn.sum())
    return {"share": share, "baseline": baseline, "ratio": share / np.maximum(baseline, 1e-12)}


# ------------------------------------------------------------------------------------------ ablations
def ablation_table(encoders: dict[str, str | Path], images: np.ndarray, masks: np.ndarray, last: int = 5):
    """One row per pretrained variant: its switches, final losses and attention focus on lesions.

    Args:
        encoders: variant name → exported encoder path (:func:`smartlib.variants.pretrained`'s return; the run is its folder).
        images, masks: lesion volumes for :func:`attention_focus` (e.g. from :func:`lesion_volumes`).
        last: final losses are averaged over this many last logged steps.
    Returns:
        A DataFrame with ``variant``, ``semantic_attention``, ``noisy_teacher``, ``mask_mode``,
        ``final_<term>`` for each loss term, ``steps``, ``attention_share`` (mean over volumes),
        ``attention_share_sd``, ``lesion_fraction`` (uniform-attention baseline) and ``focus_ratio``.
    """
    import pandas as pd

    from .pretrain import load_run_config

    rows = []
    for name, enc in encoders.items():
        run = Path(enc).parent
        cfg = load_run_config(run)
        df = load_metrics(run)
        f = attention_focus(enc, images, masks)
        rows.append({"variant": name, "semantic_attention": cfg.semantic_attention, "noisy_teacher": cfg.teacher_drop > 0,
                     "mask_mode": cfg.mask_mode, "steps": int(df["step"].max()) + 1,
                     **{f"final_{k}": v for k, v in final_losses(df, last).items()},
                     "attention_share": float(np.mean(f["share"])), "attention_share_sd": float(np.std(f["share"])),
                     "lesion_fraction": float(np.mean(f["baseline"])), "focus_ratio": float(np.mean(f["ratio"]))})
    return pd.DataFrame(rows)


def two_by_two(table, value: str, variants: Sequence[str] = TWO_BY_TWO):
    """The semantic-attention × noisy-teacher grid of ``value`` from :func:`ablation_table`'s rows for ``variants``.

    The default ``variants`` are the grid's four of :data:`smartlib.variants.VARIANTS`.
    """
    sub = table[table["variant"].isin(list(variants))]
    if sub.empty:
        raise SmartError(f"two_by_two: none of {', '.join(variants)} in the table")
    grid = sub.pivot_table(index="semantic_attention", columns="noisy_teacher", values=value, aggfunc="first", dropna=False)
    grid.index = [f"semantic attention {'on' if v else 'off'}" for v in grid.index]
    grid.columns = [f"teacher {'noisy' if v else 'clean'}" for v in grid.columns]
    return grid
