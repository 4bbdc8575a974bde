"""Localisation scores, pointing game, entropy and the recomputed Swin window attention."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import raises_smart

from smartlib.downstream.attention import (
    AttentionDistances,
    attention_distance_entropy,
    attention_mass_in_mask,
    baseline_maps,
    centre_prior,
    chance_hit_rate,
    cls_attention,
    histogram_entropy,
    pointing_game,
    score_maps,
    uniform_map,
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


# ------------------------------------------------------------------------------ baselines
G, U = 4, 8  # a 4³ unit grid of 8³-voxel units: 32³ masks keep these tests light


def _cubes(n: int, centred: bool, edge: int = 3, seed: int = 0) -> torch.Tensor:
    """n masks (n, 32, 32, 32), each one cube of ``edge`` voxels: at the crop centre, or uniformly anywhere inside."""
    rng = np.random.default_rng(seed)
    m = torch.zeros(n, G * U, G * U, G * U)
    for i in range(n):
        lo = [G * U // 2 - edge // 2] * 3 if centred else rng.integers(0, G * U - edge + 1, 3)
        m[i, lo[0]:lo[0] + edge, lo[1]:lo[1] + edge, lo[2]:lo[2] + edge] = 1
    return m


def test_centre_prior_is_a_centred_gaussian_and_uniform_is_flat():
    w = centre_prior(4)
    assert w.shape == (4, 4, 4) and w.sum().item() == pytest.approx(1.0)
    central = w[1:3, 1:3, 1:3]
    assert torch.allclose(central, central.flatten()[0].expand_as(central))  # the 2³ central units tie
    assert central.sum().item() == pytest.approx(0.3907, abs=1e-3)
    assert w[1, 1, 1] / w[0, 1, 1] == pytest.approx(math.exp(1.0))  # σ = one unit: (1.5² − 0.5²) / 2 = 1
    assert w.argmin().item() == 0 and torch.equal(w, w.flip(0)) and torch.equal(w, w.permute(2, 0, 1))
    assert torch.allclose(uniform_map(4), torch.full((4, 4, 4), 1 / 64))
    b = baseline_maps(3, 4)
    assert set(b) == {"centre prior", "uniform"} and b["centre prior"].shape == (3, 4, 4, 4)
    raises_smart(centre_prior, 0, words=["g=0"])
    raises_smart(centre_prior, 4, sigma_units=-1.0, words=["sigma_units"])


def test_tied_pointing_game_is_the_expected_hit():
    mask = torch.zeros(1, 32, 32, 32)
    mask[0, 8, 8, 8] = 1  # the centre of unit (0, 0, 0) (16³ units, g = 2)
    flat = torch.full((1, 2, 2, 2), 0.125)
    assert pointing_game(flat, mask, 16, tolerance=0).item()  # "first": unit (0, 0, 0), a hit
    assert pointing_game(flat, mask, 16, tolerance=0, ties="mean").item() == pytest.approx(1 / 8)
    two = torch.zeros(1, 2, 2, 2)
    two[0, 0, 0, 0] = two[0, 1, 1, 1] = 0.5
    assert pointing_game(two, mask, 16, tolerance=0, ties="mean").item() == pytest.approx(0.5)
    raises_smart(pointing_game, flat, mask, 16, ties="random", words=["ties='random'"])


def test_uniform_map_scores_lesion_share_and_chance():
    m = _cubes(40, centred=False, edge=5)
    r = score_maps(uniform_map(G).expand(40, G, G, G), m, unit=U)
    assert torch.allclose(r["mass"], m.mean(dim=(1, 2, 3)), rtol=1e-5)
    assert torch.allclose(r["hit"], chance_hit_rate(m, G, U), atol=1e-6)


def test_a_map_peaked_on_the_lesion_beats_both_baselines():
    m = _cubes(60, centred=False, edge=3, seed=1)
    planted = F.avg_pool3d(m[:, None], U)[:, 0] + 1e-4  # (60, 4, 4, 4): lesion occupancy of each unit
    r = score_maps(planted, m, unit=U)
    base = {k: score_maps(v, m, unit=U) for k, v in baseline_maps(60, G).items()}
    assert r["hit"].mean().item() == pytest.approx(1.0)
    for name, b in base.items():
        assert r["mass"].mean() > 3 * b["mass"].mean(), name
        assert r["hit"].mean() > b["hit"].mean() + 0.5, name


def test_centre_prior_wins_on_centred_lesions_and_falls_to_chance_off_centre():
    """The confound: on centred lesions the centre prior hits every time; at random offsets it is at chance."""
    centred, offset = _cubes(200, centred=True), _cubes(200, centred=False, seed=2)
    prior = centre_prior(G).expand(200, G, G, G)
    on_c, on_o = score_maps(prior, centred, unit=U), score_maps(prior, offset, unit=U)
    chance_c, chance_o = chance_hit_rate(centred, G, U).mean().item(), chance_hit_rate(offset, G, U).mean().item()
    assert on_c["hit"].mean().item() == pytest.approx(1.0) and chance_c < 0.2
    assert on_c["mass"].mean() > 2 * centred.mean(dim=(1, 2, 3)).mean()  # far above the uniform map's mass
    assert abs(on_o["hit"].mean().item() - chance_o) < 0.05
    assert on_o["mass"].mean().item() == pytest.approx(offset.mean().item(), rel=0.25)


def test_attention_study_scores_baselines_beside_each_init_on_the_pretraining_grid(tmp_path, monkeypatch):
    from smartlib.config import pretrain_config
    from smartlib.downstream.attention import attention_study

    monkeypatch.setenv("SMART_CT_CACHE", str(tmp_path / "cache"))
    res = attention_study(["scratch"], preset="smoke", runs_dir=tmp_path / "runs", out=tmp_path / "out", n=4,
                          n_cases=4, n_boot=200, log=lambda *_: None)
    cfg = pretrain_config("smoke")
    assert res["grid"]["img_size"] == cfg.img_size and res["grid"]["spacing"] == cfg.spacing
    assert res["images"].shape == (4, cfg.img_size, cfg.img_size, cfg.img_size)
    loc = res["localisation"].set_index("init")
    assert list(loc.index) == ["scratch", "centre prior", "uniform"] and (loc["n"] == 4).all()
    assert list(loc["baseline"]) == [False, True, True]
    assert loc.loc["uniform", "mass_mean"] == pytest.approx(loc.loc["uniform", "lesion_share"], rel=1e-4)
    assert loc.loc["uniform", "mass_lift"] == pytest.approx(1.0, rel=1e-4)
    assert loc.loc["uniform", "hit_rate"] == pytest.approx(loc.loc["uniform", "chance_hit"], abs=1e-6)
    comp = res["comparisons"]
    assert sorted(comp["metric"]) == ["hit", "mass_lift"] and set(comp["arm"]) == {"scratch"}
    assert (comp["reference"] == "centre prior").all() and (comp["n_cases"] == 4).all()
    assert len(res["cases"]) == 3 * 4
    for f in ("localisation.csv", "comparisons.csv", "cases.csv", "entropy.csv", "attention.json"):
        assert (tmp_path / "out" / f).is_file(), f
    raises_smart(attention_study, {"uniform": "scratch"}, preset="smoke", runs_dir=tmp_path / "runs",
                 words=["'uniform'", "baseline"])
