"""Localisation scores, pointing game, entropy and the recomputed Swin window attention."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smartlib.downstream.attention import (
    AttentionDistances,
    attention_distance_entropy,
    attention_mass_in_mask,
    chance_hit_rate,
    cls_attention,
    histogram_entropy,
    pointing_game,
    upsample_attention,
    window_attention_probs,
    window_distances,
)


def test_mass_in_mask_by_hand():
    a = torch.zeros(1, 4, 4, 4)
    a[0, 0, 0, 0], a[0, 1, 1, 1], a[0, 3, 3, 3] = 0.5, 0.3, 0.2
    m = torch.zeros(1, 4, 4, 4)
    m[0, 0, 0, 0] = m[0, 3, 3, 3] = 1
    assert attention_mass_in_mask(a, m).item() == pytest.approx(0.7)
    assert attention_mass_in_mask(2 * a, m).item() == pytest.approx(0.7)  # normalised


def test_upsample_sums_to_one_and_constant_stays_constant():
    v = upsample_attention(torch.full((2, 2, 2, 2), 1 / 8), 32)
    assert v.shape == (2, 32, 32, 32)
    assert torch.allclose(v.sum(dim=(1, 2, 3)), torch.ones(2))
    assert torch.allclose(v, torch.full_like(v, 1 / 32**3))


def test_pointing_game_hit_miss_and_tolerance():
    g, unit = 2, 16
    attn = torch.zeros(1, g, g, g)
    attn[0, 1, 0, 0] = 1.0  # arg-max unit centre voxel = (24, 8, 8)
    mask = torch.zeros(1, 32, 32, 32)
    mask[0, 24, 8, 8] = 1
    assert pointing_game(attn, mask, unit, tolerance=0).item()
    mask.zero_()
    mask[0, 24, 8, 8 + 8] = 1  # 8 voxels away along z (Chebyshev 8)
    assert not pointing_game(attn, mask, unit, tolerance=7).item()
    assert pointing_game(attn, mask, unit, tolerance=8).item()
    assert pointing_game(attn, mask, unit).item()  # default tolerance = unit // 2 = 8
    mask.zero_()
    mask[0, 0:4, 20:32, 20:32] = 1  # far corner
    assert not pointing_game(attn, mask, unit).item()


def test_chance_hit_rate_counts_unit_centres():
    mask = torch.zeros(1, 32, 32, 32)
    mask[0, 8, 8, 8] = 1  # exactly the centre of unit (0,0,0), no other centre within 8 voxels
    assert chance_hit_rate(mask, 2, 16, tolerance=0).item() == pytest.approx(1 / 8)


def test_histogram_entropy_by_hand():
    assert histogram_entropy(np.array([0.5, 1.5, 2.5, 3.5]), bins=4, upper=4.0) == pytest.approx(math.log(4))
    assert histogram_entropy(np.full(10, 1.2), bins=4, upper=4.0) == pytest.approx(0.0)
    assert histogram_entropy(np.array([0.1, 0.2, 3.9, 3.8]), bins=4, upper=4.0) == pytest.approx(math.log(2))


def test_window_distances():
    d = window_distances((2, 2, 2), pitch=4)
    assert d.shape == (8, 8)
    assert d[0, 7].item() == pytest.approx(4 * math.sqrt(3))
    assert d[0, 1].item() == pytest.approx(4.0)


def _small_net(img_size=32, sa=True):
    from smartlib.models.smart import SMARTNet

    torch.manual_seed(0)
    return SMARTNet(heads=False, img_size=img_size, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                    semantic_attention=sa, sa_heads=4, sa_depth=1, drop_path=0.0).eval()


def test_recomputed_window_attention_reproduces_monai_output():
    """Attention probabilities from the hook, applied to v and projected, give MONAI's own output."""
    net = _small_net()
    blk = net.encoder.layers1[0].blocks[0]
    seen = {}

    def hook(mod, args, kwargs, out):
        x, mask = args[0], args[1] if len(args) > 1 else kwargs.get("mask")
        p = window_attention_probs(mod, x, mask)
        b, n, c = x.shape
        v = mod.qkv(x).reshape(b, n, 3, mod.num_heads, c // mod.num_heads).permute(2, 0, 3, 1, 4)[2]
        seen["mine"] = mod.proj((p @ v).transpose(1, 2).reshape(b, n, c))
        seen["monai"] = out
        seen["rowsum"] = p.sum(-1)

    h = blk.attn.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        net.encode(torch.rand(1, 1, 32, 32, 32))
    h.remove()
    assert torch.allclose(seen["mine"], seen["monai"], atol=1e-5)
    assert torch.allclose(seen["rowsum"], torch.ones_like(seen["rowsum"]), atol=1e-5)


def test_attention_distance_entropy_covers_every_stage_and_head():
    net = _small_net()
    df = attention_distance_entropy(net, torch.rand(2, 1, 32, 32, 32), bins=8)
    assert sorted(set(zip(df["stage"], df["head"]))) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0), (4, 1), (4, 2), (4, 3)]
    assert ((df["entropy"] >= 0) & (df["entropy"] <= math.log(8) + 1e-9)).all()
    assert (df["mean_distance"] <= df["max_distance"] + 1e-6).all()
    # stage 1 tokens are 2 voxels apart in a 4^3 window: the largest distance is 2*3*sqrt(3)
    assert df[df["stage"] == 1]["max_distance"].iloc[0] == pytest.approx(6 * math.sqrt(3))
    with AttentionDistances(net.encoder) as rec:
        pass
    assert not rec._handles  # hooks removed on exit


def test_cls_attention_proxy_without_semantic_attention():
    a, proxy = cls_attention(_small_net(img_size=64, sa=False), torch.rand(2, 1, 64, 64, 64))
    assert proxy and a.shape == (2, 4, 4, 4)
    assert torch.allclose(a.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    a, proxy = cls_attention(_small_net(img_size=64), torch.rand(1, 1, 64, 64, 64))
    assert not proxy and a.shape == (1, 4, 4, 4)
