"""MSMAE's masking rule: the 45/30/25 split, attention-weighted order, crop alignment, SMART's given scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import raises_smart
from smartlib.supervised_masking import (MASKED, THROWN, VISIBLE, SupervisedAttention, attention_order, check_grid, crop_at,
                                         given_scorer, head_normalised, random_shift_flip, random_split, resolve_given,
                                         split_counts, state_indices, supervised_split, unit_scores)


@pytest.mark.parametrize("n,expected", [(64, (28, 20, 16)), (512, (230, 154, 128)), (196, (88, 59, 49)), (10, (4, 3, 3))])
def test_split_counts_are_45_30_25(n, expected):
    # ⌊0.45 n⌋ masked, ⌊0.75 n⌋ − ⌊0.45 n⌋ thrown, the rest visible (by hand)
    assert split_counts(n, 0.45, 0.30) == expected
    assert sum(expected) == n


def test_split_states_partition_the_patches_with_the_counts():
    scores = torch.rand(5, 64, generator=torch.Generator().manual_seed(0))
    st = supervised_split(scores, generator=torch.Generator().manual_seed(1))
    assert st.dtype == torch.int8 and st.shape == (5, 64)
    assert set(torch.unique(st).tolist()) == {VISIBLE, MASKED, THROWN}
    for code, k in ((MASKED, 28), (THROWN, 20), (VISIBLE, 16)):
        assert ((st == code).sum(dim=1) == k).all()
    vis, msk = state_indices(st)
    assert vis.shape == (5, 16) and msk.shape == (5, 28)
    for b in range(5):  # disjoint, and each index list names exactly its state
        assert not set(vis[b].tolist()) & set(msk[b].tolist())
        assert (st[b, vis[b]] == VISIBLE).all() and (st[b, msk[b]] == MASKED).all()


def test_planted_high_attention_patch_is_masked_far_more_often_than_chance():
    n, draws = 64, 400
    scores = torch.ones(draws, n)
    scores[:, 7] = 200.0  # one patch the classifier looks at
    scores[:, 9] = 0.0  # one it ignores
    st = supervised_split(scores, generator=torch.Generator().manual_seed(0))
    assert (st[:, 7] == MASKED).float().mean() > 0.95  # nominal share of masked patches: 28 / 64 = 0.44
    assert (st[:, 9] == VISIBLE).float().mean() > 0.95  # drawn last: among the visible quarter
    others = (st[:, 10:] == MASKED).float().mean()
    assert 0.35 < float(others) < 0.5  # the rest stay near the nominal share


def test_order_is_random_and_attention_weighted():
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).expand(4000, 4)
    first = attention_order(s, torch.Generator().manual_seed(0))[:, 0]
    freq = torch.bincount(first, minlength=4).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03)  # P(first) ∝ score
    row = torch.linspace(1, 2, 32)[None]
    a = attention_order(row, torch.Generator().manual_seed(1))
    assert torch.equal(a, attention_order(row, torch.Generator().manual_seed(1)))  # keyed: reproducible
    assert not torch.equal(a, attention_order(row, torch.Generator().manual_seed(2)))  # but a random draw, not a sort
    assert sorted(a[0].tolist()) == list(range(32))  # a permutation


def test_random_split_is_mae_masking():
    st = random_split(3, 64, 0.75, torch.Generator().manual_seed(0))
    assert ((st == MASKED).sum(1) == 48).all() and ((st == VISIBLE).sum(1) == 16).all() and not (st == THROWN).any()


def test_head_normalised_by_hand():
    att = torch.zeros(1, 2, 4, 4)
    att[0, 0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # [CLS] row of head 0: patches 0.2, 0.3, 0.4
    att[0, 1, 0] = torch.tensor([0.4, 0.3, 0.2, 0.1])  # head 1: 0.3, 0.2, 0.1
    # min–max per head: (0, .5, 1) and (1, .5, 0); head mean (.5, .5, .5)
    assert torch.allclose(head_normalised(att), torch.tensor([[0.5, 0.5, 0.5]]))
    att[0, 1, 0] = torch.tensor([0.0, 0.1, 0.1, 0.7])  # head 1: (0, 0, 1) → mean (0, .25, 1)
    assert torch.allclose(head_normalised(att), torch.tensor([[0.0, 0.25, 1.0]]))
    att[0, 0, 1] = 9.0  # a row other than [CLS] changes nothing
    assert torch.allclose(head_normalised(att), torch.tensor([[0.0, 0.25, 1.0]]))


@pytest.mark.parametrize("mask,throw", [(0.8, 0.3), (0.0, 0.3), (0.5, -0.1), (1.2, 0.0)])
def test_bad_split_is_one_line(mask, throw):
    raises_smart(split_counts, 64, mask, throw, words=["mask split"])
    raises_smart(supervised_split, torch.rand(2, 64), mask, throw, words=["mask split"])


def test_grid_mismatch_is_refused():
    raises_smart(check_grid, torch.rand(2, 4, 4, 3), (4, 4, 4), words=["(4, 4, 3)", "patch grid"])
    check_grid(torch.rand(2, 4, 4, 4), (4, 4, 4))
    raises_smart(crop_at, torch.rand(1, 1, 32, 32, 32), torch.rand(1, 3, 3, 3), 8, (0, 0, 0), 16, words=["aligned"])


def _planted(patch: int = 4, grid: int = 8, at=(5, 2, 6)):
    """An image with a bright cube filling patch ``at`` and an attention map peaked on the same patch."""
    x = torch.zeros(1, 1, grid * patch, grid * patch, grid * patch)
    i, j, k = at
    x[0, 0, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch, k * patch:(k + 1) * patch] = 1.0
    m = torch.full((1, grid, grid, grid), 0.1)
    m[0, i, j, k] = 1.0
    return x, m


def _bright_patch(x: torch.Tensor, patch: int) -> tuple[int, ...]:
    p = torch.nn.functional.avg_pool3d(x, patch)[0, 0]
    return tuple(int(v) for v in np.unravel_index(int(p.argmax()), p.shape))


def test_attention_peak_moves_with_the_crop():
    x, m = _planted()
    for off in [(0, 0, 0), (2, 1, 3), (3, 0, 1), (1, 2, 2)]:
        xc, mc = crop_at(x, m, 4, off, 16)
        want = (5 - off[0], 2 - off[1], 6 - off[2])
        if all(0 <= w < 4 for w in want):
            peak = tuple(int(v) for v in np.unravel_index(int(mc[0].argmax()), mc[0].shape))
            assert peak == want == _bright_patch(xc, 4)
        else:  # cropped away from both
            assert float(mc.max()) < 1.0 and float(xc.max()) == 0.0


def test_random_shift_and_flip_keep_map_and_image_aligned():
    x, m = _planted(patch=8, grid=4, at=(1, 2, 3))
    moved = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        xs, ms = random_shift_flip(x, m, 8, 8, g)
        assert xs.shape == x.shape and ms.shape == m.shape
        if float(xs.max()) == 1.0:  # the cube is still in the crop: its patch carries the peak
            peak = tuple(int(v) for v in np.unravel_index(int(ms[0].argmax()), ms[0].shape))
            assert peak == _bright_patch(xs, 8)
            moved.add(peak)
        else:
            assert float(ms.max()) < 1.0
    assert len(moved) > 4  # the shifts and flips did move it around (a corner crop would not follow it)
    raises_smart(random_shift_flip, x, m, 8, 4, g, words=["multiple of the patch"])


def test_unit_scores_by_hand():
    a = torch.zeros(1, 4, 4, 4)
    a[0, :2, :2, :2] = 1.0  # unit (0, 0, 0): mean 1
    a[0, 3, 3, 3] = 8.0  # unit (1, 1, 1): mean 1
    a[0, 2, 0, 0] = 4.0  # unit (1, 0, 0): mean 0.5
    u = unit_scores(a, 2)
    assert u.shape == (1, 8)
    assert torch.allclose(u[0], torch.tensor([1.0, 0, 0, 0, 0.5, 0, 0, 1.0]))
    raises_smart(unit_scores, torch.zeros(1, 3, 3, 3), 2, words=["mask units"])


# ------------------------------------------------------------------------------ SMART's given mode
@pytest.fixture(scope="module")
def vit_export(tmp_path_factory):
    from smartlib.models.mae import SplitMaskedAutoEncoder

    torch.manual_seed(0)
    m = SplitMaskedAutoEncoder(img_size=32, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2,
                               decoder_hidden_size=12, decoder_mlp_dim=24, decoder_num_layers=1, decoder_num_heads=2, n_classes=2)
    return m.export(tmp_path_factory.mktemp("vit") / "encoder.pt", {"method": "msmae"})


def test_supervised_attention_tiles_crops_in_patch_coordinates(vit_export):
    from smartlib.models.vit import load_vit_features

    scorer = SupervisedAttention(vit_export)
    net = load_vit_features(vit_export)
    tiles = torch.rand(8, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    crop = torch.zeros(1, 1, 64, 64, 64)
    for t in range(8):  # tile t at (a, b, c) = its binary digits
        a, b, c = (t >> 2) & 1, (t >> 1) & 1, t & 1
        crop[0, :, 32 * a:32 * a + 32, 32 * b:32 * b + 32, 32 * c:32 * c + 32] = tiles[t]
    got = scorer(crop).view(4, 4, 4)
    # independent reference: each tile's own attention, pooled into its 2³ units
    per_tile = net.cls_attention(tiles).view(8, 4, 4, 4)
    for t in range(8):
        a, b, c = (t >> 2) & 1, (t >> 1) & 1, t & 1
        ref = torch.nn.functional.avg_pool3d(per_tile[t][None, None], 2)[0, 0]
        assert torch.allclose(got[2 * a:2 * a + 2, 2 * b:2 * b + 2, 2 * c:2 * c + 2], ref, atol=1e-6)
    raises_smart(scorer, torch.zeros(1, 1, 48, 48, 48), words=["multiple of 32"])


def test_given_mode_needs_a_supervised_vit(tmp_path, vit_export):
    from smartlib.models.smart import SMARTNet, export_encoder
    from smartlib.models.vit import export_vit, read_vit_export

    swin = export_encoder(SMARTNet(heads=False, img_size=32, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                   window_size=2, sa_heads=4), tmp_path / "swin.pt")
    raises_smart(SupervisedAttention, swin, words=["swin.pt", "not a ViT export"])
    blob = read_vit_export(vit_export)
    no_cls = export_vit(tmp_path / "nocls.pt", blob["model"], blob["encoder"], None)
    raises_smart(SupervisedAttention, no_cls, words=["[CLS]"])


def test_given_scorer_resolves_and_checks(tmp_path):
    from smartlib.config import PretrainConfig

    assert given_scorer(PretrainConfig(), tmp_path) is None
    cfg = PretrainConfig(mask_mode="given", given_attention="msmae")
    run = tmp_path / "runs" / "pretrain" / "smart_supervised"
    assert resolve_given("msmae", run) == tmp_path / "runs" / "pretrain" / "msmae" / "encoder.pt"
    raises_smart(given_scorer, cfg, run, words=["msmae", "not found"])
    raises_smart(PretrainConfig, mask_mode="given", words=["mask_mode", "given_attention"])
    raises_smart(PretrainConfig, given_attention="x.pt", words=["mask_mode"])


def test_smart_step_masks_the_top_given_units():
    from smartlib.config import pretrain_config
    from smartlib.models.smart import SMARTNet
    from smartlib.step import smart_step

    cfg = pretrain_config("smoke", {"mask_mode": "given", "given_attention": "unused.pt"})
    torch.manual_seed(0)
    net = SMARTNet(**cfg.model_kwargs())
    views = torch.rand(2, 1, 1, 64, 64, 64)
    scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(5))
    out = smart_step(cfg, net, net, views, [(0, 0, 0)], given_scores=scores)
    k = int(np.ceil(cfg.mask_ratio * 64 - 1e-9))
    for r in range(2):  # the top ⌈0.7 N⌉ supervised scores, whatever the teacher attends to
        assert set(torch.nonzero(out.mask[r]).flatten().tolist()) == set(scores[r].topk(k).indices.tolist())
    raises_smart(smart_step, cfg, net, net, views, [(0, 0, 0)], words=["given", "scores"])


def test_pretraining_with_a_foreign_supervised_checkpoint_fails_before_anything_is_written(tmp_path):
    from smartlib.config import pretrain_config
    from smartlib.models.smart import SMARTNet, export_encoder
    from smartlib.pretrain import pretrain

    swin = export_encoder(SMARTNet(heads=False, img_size=32, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                                   window_size=2, sa_heads=4), tmp_path / "swin.pt")
    cfg = pretrain_config("smoke", {"mask_mode": "given", "given_attention": str(swin), "device": "cpu"})
    raises_smart(pretrain, cfg, tmp_path / "run", progress=False, log=lambda s: None, words=["swin.pt", "not a ViT export"])
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()
