"""One SMART training step (arXiv 2310.01209), from views to loss — no optimizer, no bookkeeping.

noisy teacher on every view → its [CLS] attention → the student's mask → student on the masked
views → the four losses. :func:`smart_step` is what the pretraining loop runs each iteration and what
:func:`smartlib.inspection.inspect_run` replays, so the two cannot drift apart.

Randomness is keyed: sample ``k`` of the batch carries a key tuple ``keys[k]`` (the loop uses
``(seed, step, global index)``); its teacher dropout on view ``v`` draws from
``keyed_generator(*keys[k], v, 1)`` and its mask from ``keyed_generator(*keys[k], v, 2)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch.profiler import record_function

from .config import PretrainConfig
from .masking import make_mask, patch_dropout, upsample_mask
from .models.smart import UNIT, SMARTNet
from .pretrain_data import keyed_generator
from .teacher import noisy_view

__all__ = ["StepResult", "smart_step"]


@dataclasses.dataclass
class StepResult:
    """What one step computed; batch tensors are view-major: row ``v·b + k`` is view v of sample k.

    ``loss``/``terms`` are None when no criterion was given. ``teacher_logits[v]`` (``cls``, ``patch``,
    ``pool``) are the noisy teacher's logits of view v (for the center update); ``attention`` is the
    teacher attention that chose the mask (None without semantic attention); ``attention_clean`` the
    teacher's attention on the un-noised views, when that pass ran.
    """

    loss: torch.Tensor | None
    terms: dict[str, float] | None
    teacher_logits: list[dict[str, torch.Tensor]]
    teacher_drop: torch.Tensor  #: (V·b, N) bool, units hidden from the teacher
    mask: torch.Tensor  #: (V·b, N) bool, units masked for the student (True = masked)
    voxel_mask: torch.Tensor  #: (V·b, S, S, S) bool, ``mask`` per voxel
    attention: torch.Tensor | None  #: (V·b, N)
    attention_clean: torch.Tensor | None  #: (V·b, N)
    recon: torch.Tensor  #: (V·b, 1, S, S, S) the student's reconstruction


def smart_step(cfg: PretrainConfig, teacher: SMARTNet, student: Callable[..., Any], views: torch.Tensor,
               keys: Sequence[tuple[int, ...]], criterion: torch.nn.Module | None = None, teacher_temp: float | None = None,
               amp: bool = False, clean_pass: bool = False, given_scores: torch.Tensor | None = None) -> StepResult:
    """Run one SMART step on ``views`` (V, b, 1, S, S, S) of ``b`` samples keyed by ``keys`` (length b).

    Args:
        cfg: the run's config (teacher noise, masking, crop size).
        teacher: the EMA teacher. student: the student, or its DistributedDataParallel wrapper (one
            forward call on all masked views).
        criterion: :class:`smartlib.losses.SMARTLoss`; None skips the losses (inspection).
        teacher_temp: the teacher temperature of this step (needed with a criterion).
        amp: bf16 autocast on the views' device.
        clean_pass: also run the teacher on the clean views (always done when ``cfg.clean_attention``,
            which then picks the mask from that pass).
        given_scores: (V·b, N) view-major unit scores for ``cfg.mask_mode == "given"`` (MSMAE hook: the
            supervised attention of :class:`smartlib.supervised_masking.SupervisedAttention`); else unused.
    """
    device = views.device
    V, b = views.shape[:2]
    grid = cfg.img_size // UNIT
    N = grid**3
    x = views.flatten(0, 1)  # (V·b, 1, S, S, S), view-major

    # ---- noisy teacher on all views at once: targets, and the attention that picks the mask
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp), record_function("smart/teacher"):
        with record_function("smart/noise"):
            drop = torch.cat([patch_dropout(1, N, cfg.teacher_drop, keyed_generator(*key, v, 1))
                              for v in range(V) for key in keys])
            x_t, t_mask = noisy_view(x, drop.to(device), cfg.teacher_noise, grid)
        t_feat = teacher.encode(x_t, t_mask)
        t_logits = teacher.project(t_feat)
        attn_clean = teacher.encode(x)["attn"] if cfg.clean_attention or clean_pass else None
        attn = attn_clean if cfg.clean_attention else t_feat["attn"]
        if cfg.mask_mode == "given":  # MSMAE hook: the mask comes from supervised scores, not the teacher
            attn = given_scores
    with torch.no_grad(), record_function("smart/mask"):
        # one device → host copy of the scores for the whole batch (the keyed draws are made on the host, so a
        # run is the same on any device and process count), one host → device copy of the masks
        scores = None if attn is None else attn.detach().float().cpu()
        mask = torch.cat([
            make_mask(cfg.mask_mode, 1, N, cfg.mask_ratio, None if scores is None else scores[v * b + k:v * b + k + 1],
                      cfg.hint_ratio, cfg.hint_top, keyed_generator(*key, v, 2))
            for v in range(V) for k, key in enumerate(keys)]).to(device, non_blocking=True)

    # ---- student on all masked views in one forward, losses
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        with record_function("smart/student"):
            _, s_logits, recon = student(x, mask)
        voxel_mask = upsample_mask(mask, grid, UNIT)  # on the device
        split = lambda t, v: t[v * b:(v + 1) * b]  # noqa: E731
        t_outs = [{k: split(t, v) for k, t in t_logits.items()} for v in range(V)]
        loss = terms = None
        if criterion is not None:
            with record_function("smart/loss"):
                s_outs = [{**{k: split(t, v) for k, t in s_logits.items()}, "recon": split(recon, v).float(), "input": views[v],
                           "unit_mask": split(mask, v), "voxel_mask": split(voxel_mask, v)} for v in range(V)]
                loss, terms = criterion(s_outs, t_outs, teacher_temp)
    return StepResult(loss=loss, terms=terms, teacher_logits=t_outs, teacher_drop=drop, mask=mask, voxel_mask=voxel_mask,
                      attention=attn, attention_clean=attn_clean, recon=recon)
