"""SMART's four losses: AMIP + λ·AMPD + λ·AITD + λ·GITD.

- AMIP: L1 between the reconstruction and the input, averaged over masked voxels only.
- AMPD: masked patch-token distillation on the unit-grid (stage-3) tokens, same view, masked units only.
- AITD: [CLS] distillation across views (teacher view q, student view v ≠ q).
- GITD: average-pooled global token distillation across views.

The distillation terms are DINO (arXiv 2104.14294) / iBOT (arXiv 2111.07832) cross-entropies,
teacher softmax((t − c)/T_t) against student log-softmax(s/T_s), with EMA centers (momentum 0.9)
all-reduced across processes. Patch terms use a (B, N) mask — never a (B, D, H, W) one (lightly's
``IBOTPatchLoss`` silently mis-reduces that shape).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["amip_loss", "distill_ce", "SMARTLoss"]


def amip_loss(pred: torch.Tensor, target: torch.Tensor, voxel_mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over masked voxels. ``pred``/``target`` (B, C, D, H, W); ``voxel_mask`` (B, D, H, W) bool."""
    if pred.shape != target.shape or voxel_mask.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"shapes pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(voxel_mask.shape)} do not match")
    m = voxel_mask[:, None].to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * m).sum() / m.sum().clamp(min=1.0)


def distill_ce(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float, student_temp: float = 0.1) -> torch.Tensor:
    """Per-row cross-entropy H(softmax((teacher − center)/T_t), log_softmax(student/T_s)): (..., K) → (...)."""
    t = F.softmax((teacher.float() - center) / teacher_temp, dim=-1)
    return -(t * F.log_softmax(student.float() / student_temp, dim=-1)).sum(dim=-1)


class SMARTLoss(nn.Module):
    """The weighted sum of the four terms, with the three distillation centers as buffers.

    Args:
        prototypes: K. weights: (w_amip, w_ampd, w_aitd, w_gitd). student_temp: T_s.
        center_momentum: EMA momentum of the centers.
    """

    def __init__(self, prototypes: int, weights: Sequence[float] = (1.0, 0.1, 0.1, 0.1), student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.w_amip, self.w_ampd, self.w_aitd, self.w_gitd = (float(w) for w in weights)
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        for name in ("cls", "patch", "pool"):
            self.register_buffer(f"center_{name}", torch.zeros(1, prototypes))

    def forward(self, student: Sequence[dict], teacher: Sequence[dict], teacher_temp: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over V views.

        ``student[v]`` holds ``cls`` (B, K), ``patch`` (B, N, K), ``pool`` (B, K) logits, ``recon`` and
        ``input`` (B, C, S, S, S), ``unit_mask`` (B, N) and ``voxel_mask`` (B, S, S, S);
        ``teacher[q]`` holds ``cls``, ``patch``, ``pool`` logits of the teacher's (noised) view q.
        Returns the total and each term's value.
        """
        V = len(student)
        amip = sum(amip_loss(s["recon"], s["input"], s["voxel_mask"]) for s in student) / V
        ampd = 0.0
        for s, t in zip(student, teacher):
            if tuple(s["unit_mask"].shape) != tuple(s["patch"].shape[:2]):
                raise ValueError(f"unit_mask shape {tuple(s['unit_mask'].shape)}: expected (B, N) = {tuple(s['patch'].shape[:2])}")
            m = s["unit_mask"].to(torch.float32)
            ce = distill_ce(s["patch"], t["patch"], self.center_patch, teacher_temp, self.student_temp)  # (B, N)
            ampd = ampd + ((ce * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)).mean()
        ampd = ampd / V
        aitd = gitd = 0.0
        pairs = [(q, v) for q in range(V) for v in range(V) if q != v]
        for q, v in pairs:
            aitd = aitd + distill_ce(student[v]["cls"], teacher[q]["cls"], self.center_cls, teacher_temp, self.student_temp).mean()
            gitd = gitd + distill_ce(student[v]["pool"], teacher[q]["pool"], self.center_pool, teacher_temp, self.student_temp).mean()
        if pairs:
            aitd, gitd = aitd / len(pairs), gitd / len(pairs)
        total = self.w_amip * amip + self.w_ampd * ampd + self.w_aitd * aitd + self.w_gitd * gitd
        terms = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in (("amip", amip), ("ampd", ampd), ("aitd", aitd), ("gitd", gitd))}
        return total, terms

    @torch.no_grad()
    def update_centers(self, teacher: Sequence[dict]) -> None:
        """EMA-update the centers with the teacher's batch means, all-reduced across processes."""
        for name in ("cls", "patch", "pool"):
            x = torch.cat([t[name].float().reshape(-1, t[name].shape[-1]) for t in teacher])
            s = x.sum(dim=0, keepdim=True)
            n = torch.tensor([float(x.shape[0])], device=x.device)
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(s)
                dist.all_reduce(n)
            c = getattr(self, f"center_{name}")
            c.mul_(self.center_momentum).add_(s / n, alpha=1.0 - self.center_momentum)
