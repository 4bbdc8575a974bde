"""Mask selection: exact counts, which units, determinism, block shape, upsampling, patch dropout, bad arguments."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from smartlib.errors import SmartError
from smartlib.masking import MASK_MODES, make_mask, num_hints, num_masked, patch_dropout, upsample_mask


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _scores(b, n, seed=0):
    # distinct scores (a random permutation) so "top k" is unambiguous
    g = _gen(seed)
    return torch.stack([torch.randperm(n, generator=g).float() / n for _ in range(b)])


def _exact_ceil(n, r):
    return math.ceil(Fraction(r) * n)


def _exact_floor(n, r, s):
    return math.floor(Fraction(s) * Fraction(r) * n)


@pytest.mark.parametrize("n,r", [(64, "0.7"), (512, "0.7"), (10, "0.7"), (100, "0.3"), (8, "0.5"), (27, "0.1")])
def test_num_masked_is_exact_ceiling(n, r):
    assert num_masked(n, float(r)) == _exact_ceil(n, r)


@pytest.mark.parametrize("n,r,s", [(64, "0.7", "0.1"), (512, "0.7", "0.1"), (100, "0.7", "0.1"), (50, "0.7", "0.1"),
                                   (1000, "0.6", "0.5")])
def test_num_hints_is_exact_floor(n, r, s):
    assert num_hints(n, float(r), float(s)) == _exact_floor(n, r, s)


@pytest.mark.parametrize("n,expected", [(64, 41), (512, 324)])
def test_attention_mode_exact_count(n, expected):
    assert _exact_ceil(n, "0.7") - _exact_floor(n, "0.7", "0.1") == expected
    m = make_mask("attention", 3, n, 0.7, scores=_scores(3, n), hint_ratio=0.1, generator=_gen(0))
    assert m.dtype == torch.bool and m.shape == (3, n)
    assert m.sum(dim=1).tolist() == [expected] * 3


@pytest.mark.parametrize("n", [64, 512])
def test_attention_mode_masks_highest_and_hints_from_top_decile(n):
    b = 4
    scores = _scores(b, n, seed=1)
    m = make_mask("attention", b, n, 0.7, scores=scores, hint_ratio=0.1, hint_top=0.1, generator=_gen(2)).numpy()
    k = _exact_ceil(n, "0.7")
    h = _exact_floor(n, "0.7", "0.1")
    t = _exact_ceil(n, "0.1")
    s = scores.numpy()
    for i in range(b):
        order = np.argsort(-s[i])
        top_k, top_t = set(order[:k].tolist()), set(order[:t].tolist())
        masked = set(np.flatnonzero(m[i]).tolist())
        hints = top_k - masked
        assert masked <= top_k  # nothing outside the top k is masked
        assert len(hints) == h and hints <= top_t
        unmasked_non_hint = [j for j in range(n) if j not in masked and j not in hints]
        assert min(s[i][list(masked)]) >= max(s[i][unmasked_non_hint])


def test_attention_hints_random_but_reproducible():
    n, b = 64, 2
    scores = _scores(b, n, seed=3)
    a = make_mask("attention", b, n, scores=scores, generator=_gen(7))
    a2 = make_mask("attention", b, n, scores=scores, generator=_gen(7))
    assert torch.equal(a, a2)
    masks = {tuple(make_mask("attention", 1, n, scores=scores[:1], generator=_gen(sd))[0].tolist()) for sd in range(20)}
    assert len(masks) > 1
    # over many seeds the hints cover every one of the top ⌈0.1·N⌉ = 7 units (uniform draw from all of them)
    top7 = set(np.argsort(-scores[0].numpy())[:7].tolist())
    revealed = set()
    for sd in range(60):
        m = make_mask("attention", 1, n, scores=scores[:1], generator=_gen(sd))[0]
        revealed |= {j for j in top7 if not m[j]}
    assert revealed == top7


def test_attention_no_hints_when_hint_ratio_zero():
    n = 64
    scores = _scores(2, n, seed=4)
    m = make_mask("attention", 2, n, 0.7, scores=scores, hint_ratio=0.0)
    g = make_mask("given", 2, n, 0.7, scores=scores)
    assert torch.equal(m, g)


def test_low_attention_picks_lowest():
    n, b = 64, 3
    scores = _scores(b, n, seed=5)
    m = make_mask("low_attention", b, n, 0.7, scores=scores).numpy()
    k = _exact_ceil(n, "0.7")
    for i in range(b):
        expected = np.zeros(n, bool)
        expected[np.argsort(scores[i].numpy())[:k]] = True
        assert np.array_equal(m[i], expected)


def test_given_picks_top_of_given_scores():
    n, b = 27, 2
    scores = torch.randn(b, n, generator=_gen(6), dtype=torch.float64)
    m = make_mask("given", b, n, 0.5, scores=scores).numpy()
    k = _exact_ceil(n, "0.5")
    for i in range(b):
        expected = np.zeros(n, bool)
        expected[np.argsort(-scores[i].numpy())[:k]] = True
        assert np.array_equal(m[i], expected)


def test_random_mode_count_and_seeding():
    n, b = 64, 5
    a = make_mask("random", b, n, 0.7, generator=_gen(0))
    assert a.sum(dim=1).tolist() == [45] * b
    assert torch.equal(a, make_mask("random", b, n, 0.7, generator=_gen(0)))
    assert not torch.equal(a, make_mask("random", b, n, 0.7, generator=_gen(1)))
    assert not torch.equal(a[0], a[1])  # samples of one batch differ
    # scores are ignored by random mode
    assert torch.equal(a, make_mask("random", b, n, 0.7, scores=_scores(b, n), generator=_gen(0)))


@pytest.mark.parametrize("n,r", [(512, 0.1), (512, 0.3), (64, 0.2), (64, 0.7)])
def test_block_mode_exact_count_inside_one_box(n, r):
    g = round(n ** (1 / 3))
    k = num_masked(n, r)
    e = min(g, math.ceil(k ** (1 / 3) - 1e-9))
    # smallest box that can hold k units: each side is at most e+1 (e when e³ ≥ k)
    side = e if e**3 >= k else e + 1
    m = make_mask("block", 6, n, r, generator=_gen(0))
    assert m.sum(dim=1).tolist() == [k] * 6
    corners = set()
    for i in range(6):
        coords = np.argwhere(m[i].numpy().reshape(g, g, g))
        extent = coords.max(0) - coords.min(0) + 1
        assert (extent <= side).all(), (extent, side)
        corners.add(tuple(coords.min(0)))
    assert torch.equal(m, make_mask("block", 6, n, r, generator=_gen(0)))
    if side < g:  # the box moves between samples
        assert len(corners) > 1


def test_block_mode_needs_cubic_grid():
    with pytest.raises(SmartError, match="cubic"):
        make_mask("block", 1, 50, 0.5)


def test_upsample_mask_against_loop():
    grid, f = 3, 2
    mask = torch.rand(2, grid**3, generator=_gen(9)) < 0.5
    up = upsample_mask(mask, grid, f)
    assert up.dtype == torch.bool and up.shape == (2, 6, 6, 6)
    ref = np.zeros((2, 6, 6, 6), bool)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                for k in range(6):
                    ref[b, i, j, k] = bool(mask[b, (i // f) * grid * grid + (j // f) * grid + k // f])
    assert np.array_equal(up.numpy(), ref)


@pytest.mark.parametrize("shape", [(2, 26), (2, 3, 9), (27,)])
def test_upsample_mask_bad_shape(shape):
    with pytest.raises(SmartError):
        upsample_mask(torch.zeros(shape, dtype=torch.bool), 3, 2)


@pytest.mark.parametrize("drop,n", [(0.3, 64), (0.3, 512), (0.5, 8), (0.0, 64)])
def test_patch_dropout_count(drop, n):
    d = patch_dropout(3, n, drop, generator=_gen(0))
    assert d.dtype == torch.bool and d.shape == (3, n)
    assert d.sum(dim=1).tolist() == [_exact_ceil(n, str(drop))] * 3
    if drop > 0:
        assert torch.equal(d, patch_dropout(3, n, drop, generator=_gen(0)))
        assert not torch.equal(d, patch_dropout(3, n, drop, generator=_gen(1)))


@pytest.mark.parametrize("drop", [-0.1, 1.0, 1.5])
def test_patch_dropout_bad_fraction(drop):
    with pytest.raises(SmartError):
        patch_dropout(1, 8, drop)


def test_modes_listed():
    assert set(MASK_MODES) == {"attention", "random", "low_attention", "block", "given"}


@pytest.mark.parametrize("kwargs", [
    dict(mode="nope"),
    dict(ratio=0.0), dict(ratio=1.0), dict(ratio=1.5), dict(ratio=-0.2),
    dict(hint_ratio=1.0), dict(hint_ratio=-0.1), dict(hint_top=0.0), dict(hint_top=1.5),
    dict(scores=None), dict(scores=torch.rand(2, 63)), dict(scores=torch.rand(3, 64)), dict(scores=torch.rand(2, 4, 4, 4)),
])
def test_make_mask_bad_arguments(kwargs):
    args = dict(mode="attention", batch=2, n=64, ratio=0.7, scores=torch.rand(2, 64))
    args.update(kwargs)
    with pytest.raises(SmartError):
        make_mask(**args)


@pytest.mark.parametrize("mode", ["low_attention", "given"])
def test_score_modes_need_scores(mode):
    with pytest.raises(SmartError, match="scores"):
        make_mask(mode, 2, 64, 0.7)
