"""The four SMART losses against direct NumPy references; weights; centers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smartlib.losses import SMARTLoss, amip_loss, distill_ce


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_ce(s, t, c, tt, ts):
    """−Σ softmax((t−c)/Tt)·log_softmax(s/Ts), row by row."""
    s, t, c = (np.asarray(a, np.float64) for a in (s, t, c))
    p = np.exp(_np_log_softmax((t - c) / tt))
    return -(p * _np_log_softmax(s / ts)).sum(axis=-1)


def _np_amip(pred, target, vmask):
    total, count = 0.0, 0
    B, C = pred.shape[:2]
    for b in range(B):
        for ch in range(C):
            sel = vmask[b]
            total += np.abs(pred[b, ch][sel] - target[b, ch][sel]).sum()
            count += int(sel.sum())
    return total / max(count, 1)


# ------------------------------------------------------------------ amip / distill_ce
def test_amip_equals_masked_mean_l1():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 2, 4, 4, 4, generator=g), torch.randn(2, 2, 4, 4, 4, generator=g)
    vmask = torch.rand(2, 4, 4, 4, generator=g) < 0.3
    got = amip_loss(pred, target, vmask)
    np.testing.assert_allclose(float(got), _np_amip(pred.numpy(), target.numpy(), vmask.numpy()), rtol=1e-5)
    # unmasked voxels do not matter
    pred2 = pred.clone()
    pred2[~vmask[:, None].expand_as(pred)] = 1e6
    torch.testing.assert_close(amip_loss(pred2, target, vmask), got)


def test_amip_empty_mask_is_zero_and_gradient_only_on_masked():
    pred = torch.randn(1, 1, 2, 2, 2, requires_grad=True)
    target = torch.zeros(1, 1, 2, 2, 2)
    assert float(amip_loss(pred, target, torch.zeros(1, 2, 2, 2, dtype=torch.bool)).detach()) == 0.0
    m = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    m[0, 0, 1, 1] = True
    amip_loss(pred, target, m).backward()
    assert (pred.grad[0, 0][~m[0]] == 0).all() and pred.grad[0, 0, 0, 1, 1] != 0


@pytest.mark.parametrize("shapes", [((1, 1, 4, 4, 4), (1, 1, 4, 4, 2), (1, 4, 4, 4)),
                                    ((1, 1, 4, 4, 4), (1, 1, 4, 4, 4), (1, 4, 4, 2)),
                                    ((2, 1, 4, 4, 4), (2, 1, 4, 4, 4), (1, 4, 4, 4)),
                                    ((2, 1, 4, 4, 4), (2, 1, 4, 4, 4), (2, 1, 4, 4, 4))])
def test_amip_bad_shapes(shapes):
    p, t, m = shapes
    with pytest.raises(ValueError):
        amip_loss(torch.zeros(p), torch.zeros(t), torch.zeros(m, dtype=torch.bool))


def test_distill_ce_matches_numpy():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 5, 11, generator=g), torch.randn(3, 5, 11, generator=g)
    c = torch.randn(1, 11, generator=g)
    got = distill_ce(s, t, c, 0.04, 0.1)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got.numpy(), _np_ce(s.numpy(), t.numpy(), c.numpy(), 0.04, 0.1), rtol=1e-5, atol=1e-6)
    got2 = distill_ce(s, t, c, 0.07, 0.2)
    np.testing.assert_allclose(got2.numpy(), _np_ce(s.numpy(), t.numpy(), c.numpy(), 0.07, 0.2), rtol=1e-5, atol=1e-6)


def test_distill_ce_minimum_is_teacher_entropy():
    # when student/Ts = (teacher−c)/Tt the CE equals the teacher entropy, and any other student is worse
    t = torch.randn(4, 9)
    c = torch.zeros(1, 9)
    s_match = t * (0.1 / 0.04)
    p = torch.softmax(t / 0.04, -1)
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
    torch.testing.assert_close(distill_ce(s_match, t, c, 0.04), ent, rtol=1e-4, atol=1e-5)
    assert (distill_ce(torch.randn(4, 9), t, c, 0.04) > ent).all()


# ------------------------------------------------------------------ SMARTLoss
def _views(V, B=2, N=8, K=6, S=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    student, teacher = [], []
    for v in range(V):
        unit = torch.rand(B, N, generator=g) < 0.5
        unit[:, 0] = True  # at least one masked unit per sample
        student.append({
            "cls": torch.randn(B, K, generator=g), "patch": torch.randn(B, N, K, generator=g), "pool": torch.randn(B, K, generator=g),
            "recon": torch.randn(B, 1, S, S, S, generator=g), "input": torch.rand(B, 1, S, S, S, generator=g),
            "unit_mask": unit, "voxel_mask": torch.rand(B, S, S, S, generator=g) < 0.5,
        })
        teacher.append({"cls": torch.randn(B, K, generator=g), "patch": torch.randn(B, N, K, generator=g),
                        "pool": torch.randn(B, K, generator=g)})
    return student, teacher


def _ref_total(student, teacher, centers, tt, ts, w):
    V = len(student)
    n = lambda x: x.detach().numpy()  # noqa: E731
    amip = np.mean([_np_amip(n(s["recon"]), n(s["input"]), n(s["voxel_mask"])) for s in student])
    ampd_v = []
    for v in range(V):
        per_sample = []
        for b in range(student[v]["patch"].shape[0]):
            m = n(student[v]["unit_mask"][b])
            ce = _np_ce(n(student[v]["patch"][b]), n(teacher[v]["patch"][b]), centers["patch"], tt, ts)
            per_sample.append(ce[m].mean() if m.any() else 0.0)
        ampd_v.append(np.mean(per_sample))
    ampd = np.mean(ampd_v)
    aitd, gitd = [], []
    for q in range(V):
        for v in range(V):
            if q == v:
                continue
            aitd.append(_np_ce(n(student[v]["cls"]), n(teacher[q]["cls"]), centers["cls"], tt, ts).mean())
            gitd.append(_np_ce(n(student[v]["pool"]), n(teacher[q]["pool"]), centers["pool"], tt, ts).mean())
    aitd, gitd = np.mean(aitd), np.mean(gitd)
    total = w[0] * amip + w[1] * ampd + w[2] * aitd + w[3] * gitd
    return total, {"amip": amip, "ampd": ampd, "aitd": aitd, "gitd": gitd}


@pytest.mark.parametrize("V", [2, 3])
def test_smart_loss_total_matches_reference(V):
    student, teacher = _views(V, seed=V)
    loss = SMARTLoss(prototypes=6)
    g = torch.Generator().manual_seed(11)
    for name in ("cls", "patch", "pool"):  # non-zero centers so the centering is exercised
        getattr(loss, f"center_{name}").copy_(torch.randn(1, 6, generator=g))
    centers = {k: getattr(loss, f"center_{k}").numpy().copy() for k in ("cls", "patch", "pool")}
    total, terms = loss(student, teacher, teacher_temp=0.05)
    ref, ref_terms = _ref_total(student, teacher, centers, 0.05, 0.1, (1.0, 0.1, 0.1, 0.1))
    np.testing.assert_allclose(float(total), ref, rtol=1e-5)
    for k in ref_terms:
        np.testing.assert_allclose(terms[k], ref_terms[k], rtol=1e-5)


def test_smart_loss_cross_view_pairing():
    # AITD/GITD pair teacher view q with student view v ≠ q: a same-view pairing reference must disagree
    student, teacher = _views(2, seed=5)
    _, terms = SMARTLoss(6)(student, teacher, 0.04)
    z = np.zeros((1, 6))
    same = np.mean([_np_ce(student[v]["cls"].numpy(), teacher[v]["cls"].numpy(), z, 0.04, 0.1).mean() for v in range(2)])
    cross = np.mean([_np_ce(student[1 - q]["cls"].numpy(), teacher[q]["cls"].numpy(), z, 0.04, 0.1).mean() for q in range(2)])
    np.testing.assert_allclose(terms["aitd"], cross, rtol=1e-5)
    assert abs(terms["aitd"] - same) > 1e-3


def test_smart_loss_ampd_uses_only_masked_units():
    student, teacher = _views(2, seed=6)
    loss = SMARTLoss(6)
    _, t1 = loss(student, teacher, 0.04)
    for s in student:  # perturb unmasked units' patch logits: AMPD must not move
        s["patch"] = torch.where(s["unit_mask"][..., None], s["patch"], s["patch"] * 50 + 3)
    _, t2 = loss(student, teacher, 0.04)
    assert t1["ampd"] == pytest.approx(t2["ampd"], rel=1e-6)


def test_smart_loss_weights_configurable():
    student, teacher = _views(2, seed=7)
    w = (0.5, 0.0, 0.3, 0.2)
    loss = SMARTLoss(6, weights=w)
    total, terms = loss(student, teacher, 0.04)
    ref, _ = _ref_total(student, teacher, {k: np.zeros((1, 6)) for k in ("cls", "patch", "pool")}, 0.04, 0.1, w)
    np.testing.assert_allclose(float(total), ref, rtol=1e-5)
    # AMPD weight 0: changing patch logits changes the AMPD term but not the total
    for s in student:
        s["patch"] = s["patch"] * 3 + 1
    total2, terms2 = loss(student, teacher, 0.04)
    assert abs(terms2["ampd"] - terms["ampd"]) > 1e-3
    torch.testing.assert_close(total2, total)


def test_smart_loss_amip_only_weights():
    student, teacher = _views(2, seed=8)
    total, terms = SMARTLoss(6, weights=(1, 0, 0, 0))(student, teacher, 0.04)
    np.testing.assert_allclose(float(total), terms["amip"], rtol=1e-6)


def test_smart_loss_gradients_reach_student_not_needed_from_teacher():
    student, teacher = _views(2, seed=9)
    for s in student:
        for k in ("cls", "patch", "pool", "recon"):
            s[k].requires_grad_(True)
    total, _ = SMARTLoss(6)(student, teacher, 0.04)
    total.backward()
    for s in student:
        for k in ("cls", "patch", "pool", "recon"):
            assert s[k].grad is not None and s[k].grad.abs().sum() > 0, k


def test_update_centers_ema():
    student, teacher = _views(2, B=3, N=5, seed=10)
    loss = SMARTLoss(6, center_momentum=0.9)
    g = torch.Generator().manual_seed(3)
    start = {k: torch.randn(1, 6, generator=g) for k in ("cls", "patch", "pool")}
    for k, v in start.items():
        getattr(loss, f"center_{k}").copy_(v)
    loss.update_centers(teacher)
    for k in ("cls", "pool"):
        mean = np.mean(np.concatenate([t[k].numpy() for t in teacher]), axis=0, keepdims=True)  # over V·B rows
        np.testing.assert_allclose(getattr(loss, f"center_{k}").numpy(), 0.9 * start[k].numpy() + 0.1 * mean, rtol=1e-5, atol=1e-6)
    # patch center: mean over all V·B·N tokens
    allp = np.concatenate([t["patch"].numpy().reshape(-1, 6) for t in teacher])
    assert allp.shape == (2 * 3 * 5, 6)
    np.testing.assert_allclose(loss.center_patch.numpy(), 0.9 * start["patch"].numpy() + 0.1 * allp.mean(0, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_update_centers_other_momentum():
    _, teacher = _views(1, seed=12)
    loss = SMARTLoss(6, center_momentum=0.5)
    loss.update_centers(teacher)
    np.testing.assert_allclose(loss.center_cls.numpy(), 0.5 * teacher[0]["cls"].numpy().mean(0, keepdims=True), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("N", [1, 8])
def test_patch_mask_must_be_flat(N):
    # a (B, D, H, W) unit mask must be rejected, never silently broadcast (lightly's IBOTPatchLoss pitfall)
    g = round(N ** (1 / 3))
    student, teacher = _views(2, N=N, seed=13)
    for s in student:
        s["unit_mask"] = s["unit_mask"].view(2, g, g, g)
    with pytest.raises(ValueError, match="mask"):
        SMARTLoss(6)(student, teacher, 0.04)
