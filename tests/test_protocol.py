"""The experimental protocol: independent inits, and proof that pretraining moved the encoder."""
from __future__ import annotations

import torch

from smartlib.config import pretrain_config
from smartlib.downstream.features import load_init
from smartlib.models.smart import SMARTNet
from smartlib.seed import seed_everything, stream_seed


def test_scratch_is_not_the_pretraining_init():
    cfg = pretrain_config("smoke")
    seed_everything(cfg.seed)
    student = SMARTNet(**cfg.model_kwargs())  # what the pretraining loop draws first
    scratch = load_init("scratch", "smoke", cfg.img_size, seed=cfg.seed)
    s_sd, p_sd = scratch.state_dict(), student.state_dict()
    mats = [k for k in s_sd if k in p_sd and k.endswith(".weight") and s_sd[k].ndim >= 2]  # randomly drawn matrices
    assert mats and not any(torch.equal(s_sd[k], p_sd[k]) for k in mats)
    # and two scratch seeds differ from each other, while the same seed repeats exactly
    other = load_init("scratch", "smoke", cfg.img_size, seed=1).state_dict()
    again = load_init("scratch", "smoke", cfg.img_size, seed=0).state_dict()
    assert not any(torch.equal(s_sd[k], other[k]) for k in mats)
    assert all(torch.equal(s_sd[k], again[k]) for k in s_sd)
    assert stream_seed(0, "scratch") != stream_seed(1, "scratch") != 0


def test_initial_encoder_is_the_loops_first_student(tmp_path, monkeypatch):
    import smartlib.pretrain as loop
    from smartlib.movement import initial_encoder

    seen = {}
    real = loop.make_teacher

    def spy(student):
        seen.update({k: v.clone() for k, v in student.state_dict().items()})
        return real(student)

    monkeypatch.setattr(loop, "make_teacher", spy)
    cfg = pretrain_config("smoke", {"max_steps": 1})
    loop.pretrain(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    init = initial_encoder(tmp_path / "run").state_dict()
    assert set(init) == set(seen) and all(torch.equal(init[k], seen[k]) for k in init)


def test_movement_table_sees_a_moved_encoder(tmp_path):
    """Positive control: a run whose encoder moved shows distance > 0 and CKA < 1 to its init; scratch row = floor."""
    import smartlib.pretrain as loop
    from smartlib.movement import movement_table

    cfg = pretrain_config("smoke", {"max_steps": 2, "warmup": 0.0, "lr": 1e-3, "momentum": 0.0, "momentum_final": 0.0})
    run = loop.pretrain(cfg, tmp_path / "pretrain" / "v", progress=False, log=lambda s: None)
    g = torch.Generator().manual_seed(0)
    S = cfg.img_size
    # images that differ in content, not only in noise: a bright box at a different place in each
    images = 0.2 * torch.rand(6, 1, S, S, S, generator=g)
    for i in range(6):
        lo = (i * S) // 8
        images[i, 0, lo:lo + S // 3, lo:lo + S // 3, :] += 0.5 + 0.1 * i
    t = movement_table({"v": run / "encoder.pt"}, images, "smoke").set_index("init")
    assert t.loc["scratch", "rel_distance_from_init"] == 0.0
    assert t.loc["v", "rel_distance_from_init"] > 1e-3 and t.loc["v", "identical_share"] < 0.5
    assert t.loc["v", "cka_vs_init"] < 0.999
    assert (t["n_images"] == 6).all()
