"""Label tokens (LT-ViT, arXiv 2311.07263): the models, their maps, Grad-CAM of the [CLS] baseline, and a planted control.

The planted control trains a small LT-ViT on synthetic radiographs where each label is one planted pattern: each
label token must learn its finding (AUROC ≥ 0.9, a near-constant predictor fails the same bar), and the label's
attention map must follow the finding when it moves.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import mw_auc, raises_smart
from monai.networks.nets import ViT

from smartlib.models.label_tokens import ClsViT, LabelTokenSwin, LabelTokenViT, PerLabelLinear, TokensToGrid


def _vit(dims: int = 2, size: int = 32, layers: int = 3, hidden: int = 24, **kw) -> ViT:
    return ViT(1, size, 8, hidden_size=hidden, mlp_dim=2 * hidden, num_layers=layers, num_heads=2, spatial_dims=dims,
               classification=False, qkv_bias=True, pos_embed_type="sincos", **kw)


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes_and_map_mass(dims):
    torch.manual_seed(0)
    m = LabelTokenViT(_vit(dims), 5, label_blocks=2, depths=(0, 1))
    x = torch.rand(3, 1, *(32,) * dims)
    assert m(x).shape == (3, 5)
    maps = m.label_maps(x)
    assert maps.shape == (3, 5, *(4,) * dims)
    # each block gives a label token a softmax row over [labels; image tokens of both depths]: the image part sums to
    # at most 1 per block, summed over 2 blocks, and is positive
    total = maps.flatten(2).sum(-1)
    assert (maps > 0).all() and (total < 2.0).all() and (total > 1.0).all()
    assert not any(b.attn.save_attn for b in m.vit.blocks)  # switched off again


def test_label_tokens_see_every_chosen_depth():
    """Multi-scale wiring: perturbing the tokens of each chosen depth — also the early one that does not continue as
    the stream — changes the logits; a model without the early depth does not even compute it."""
    torch.manual_seed(0)
    m = LabelTokenViT(_vit(layers=3), 3, label_blocks=1, depths=(0, 1, 2)).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        toks = m.tokens_by_depth(x)
        assert sorted(toks) == [0, 1, 2]
        ref = m.forward_tokens(toks)
        assert torch.allclose(ref, m(x))
        for d in (0, 1, 2):
            pert = {k: (v + 0.5 * torch.randn_like(v) if k == d else v) for k, v in toks.items()}
            assert (m.forward_tokens(pert) - ref).abs().max() > 1e-4, f"depth {d} does not reach the label tokens"
    only = LabelTokenViT(_vit(layers=3), 3, label_blocks=1, depths=(2,))
    assert sorted(only.tokens_by_depth(x)) == [2] and only.depth_embed.shape[0] == 0


def test_bad_arguments():
    raises_smart(LabelTokenViT, _vit(layers=3), 3, label_blocks=0, words=["label_blocks"])
    raises_smart(LabelTokenViT, _vit(layers=3), 3, label_blocks=4, words=["label_blocks", "3 blocks"])
    raises_smart(LabelTokenViT, _vit(layers=3), 3, label_blocks=1, depths=(0, 1), words=["depths", "include 2"])
    raises_smart(LabelTokenViT, _vit(layers=3), 0, words=["n_labels"])
    with_cls = ViT(1, 32, 8, hidden_size=24, mlp_dim=48, num_layers=2, num_heads=2, spatial_dims=2, classification=True)
    raises_smart(LabelTokenViT, with_cls, 3, label_blocks=1, words=["classification=False"])
    raises_smart(ClsViT, with_cls, 3, words=["classification=False"])
    enc = _swin()
    raises_smart(LabelTokenSwin, enc, 3, 32, mode="x", words=["mode"])
    raises_smart(LabelTokenSwin, enc, 3, 32, dim=50, heads=4, words=["divisible"])
    raises_smart(LabelTokenSwin, enc, 3, 32, stages=(5,), words=["stages"])


def test_per_label_linear_and_grid_reshape_by_hand():
    lin = PerLabelLinear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))
        lin.bias.copy_(torch.tensor([0.5, 0.0]))
    t = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    assert torch.allclose(lin(t), torch.tensor([[1 + 6 + 0.5, -5.0]]))
    g = TokensToGrid((2, 3))
    tok = torch.arange(2 * 6 * 4, dtype=torch.float32).reshape(2, 6, 4)
    grid = g(tok)
    assert grid.shape == (2, 4, 2, 3) and grid[1, 2, 1, 0] == tok[1, 3, 2]  # token 3 = row 1, column 0
    assert torch.equal(TokensToGrid.back(grid), tok)


def test_cls_baseline_gradcam_hooks_the_last_block_input():
    """MONAI's GradCAM / GradCAMpp run on the [CLS] model's ``to_grid`` layer; its output is what the last block reads."""
    from monai.visualize import GradCAM, GradCAMpp

    torch.manual_seed(0)
    m = ClsViT(_vit(), 4)
    x = torch.rand(3, 1, 32, 32)
    assert m(x).shape == (3, 4)
    cam = GradCAM(nn_module=m, target_layers="to_grid").compute_map(x, class_idx=1)
    assert cam.shape == (3, 1, 4, 4) and cam.sum() > 0
    assert GradCAMpp(nn_module=m, target_layers="to_grid").compute_map(x[:1], class_idx=1).shape == (1, 1, 4, 4)
    # the [CLS] logit depends on the to_grid output: a hook that zeroes it changes the logits
    h = m.to_grid.register_forward_hook(lambda mod, inp, out: out * 0)
    with torch.no_grad():
        changed = m(x)
    h.remove()
    with torch.no_grad():
        assert (changed - m(x)).abs().max() > 1e-4


def _swin():
    from smartlib.config import pretrain_config
    from smartlib.models.smart import SMARTNet

    torch.manual_seed(0)
    return SMARTNet(heads=False, **{**pretrain_config("smoke").model_kwargs(), "img_size": 32, "drop_path": 0.0}).encoder


def test_swin_stage_variant_frozen_encoder_and_map_mass():
    enc = _swin()
    m = LabelTokenSwin(enc, 4, 32, stages=(2, 3, 4), dim=24, depth=2, heads=4)
    x = torch.rand(2, 1, 32, 32, 32)
    logits = m(x)
    logits.sum().backward()
    assert logits.shape == (2, 4)
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())  # frozen
    assert m.proj[0].weight.grad is not None
    feats = m.stage_features(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(4, 4, 4), (2, 2, 2), (1, 1, 1)]
    maps = m.label_maps(feats=feats)
    assert maps.shape == (2, 4, 4, 4, 4)
    # the coarse stages' attention is spread over the fine cells: the map's total is the attention on all stage tokens
    from smartlib.models.label_tokens import joint_attention

    total = joint_attention(list(m.blocks), 4).sum(-1)  # the attention matrices saved by that same call
    assert torch.allclose(maps.flatten(2).sum(-1), total, atol=1e-5)
    cls = LabelTokenSwin(enc, 4, 32, dim=24, heads=4, mode="cls", freeze_encoder=False)
    assert cls(x).shape == (2, 4) and cls.queries.shape[1] == 1
    assert all(p.requires_grad for p in enc.parameters())


# --------------------------------------------------------------------------------------------- planted control
def _planted(n: int, rng: np.random.Generator, size: int = 32) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Label 0: a bright 6² square, label 1: a dark one, each present with p = 0.5, inside distinct patches."""
    x = 0.5 + 0.05 * rng.standard_normal((n, 1, size, size))
    y = (rng.random((n, 2)) < 0.5).astype(float)
    cells = np.stack([rng.choice(16, 2, replace=False) for _ in range(n)])  # (n, 2) patch index per label
    for i in range(n):
        for k, val in ((0, 1.0), (1, 0.0)):
            r, c = divmod(int(cells[i, k]), 4)
            if y[i, k]:
                x[i, 0, 8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7] = val
    return torch.tensor(x, dtype=torch.float32), y, cells


@pytest.fixture(scope="module")
def planted_model():
    from smartlib.downstream.multilabel import fit_multilabel

    rng = np.random.default_rng(0)
    xtr, ytr, _ = _planted(192, rng)
    xva, yva, _ = _planted(48, rng)
    torch.manual_seed(0)
    m = LabelTokenViT(_vit(layers=2, hidden=32), 2, label_blocks=1, depths=(0, 1))
    fit_multilabel(m, m, xtr, ytr, xva, yva, epochs=18, batch_size=32, lr=2e-3, head_lr=2e-3, seed=0)
    return m, rng


def test_each_label_token_learns_its_finding(planted_model):
    from smartlib.downstream.multilabel import label_aucs, predict

    m, rng = planted_model
    xte, yte, _ = _planted(96, np.random.default_rng(7))
    p = predict(m, m, xte)
    aucs = label_aucs(yte, p)
    assert all(a >= 0.9 for a in aucs), aucs
    assert np.allclose(aucs, [mw_auc(yte[:, k], p[:, k]) for k in range(2)])  # independent reference
    near_constant = 0.5 + 1e-3 * np.random.default_rng(1).standard_normal(p.shape)
    assert not any(a >= 0.9 for a in label_aucs(yte, near_constant))  # the bar is not met by chance


def test_label_maps_follow_the_finding(planted_model):
    """Move the bright square from one patch to another: the arg-max of label 0's map moves with it."""
    m, _ = planted_model
    for a, b in (((0, 0), (3, 3)), ((0, 3), (2, 1)), ((3, 0), (1, 2))):
        img = torch.full((2, 1, 32, 32), 0.5)
        for i, (r, c) in enumerate((a, b)):
            img[i, 0, 8 * r + 1:8 * r + 7, 8 * c + 1:8 * c + 7] = 1.0
        maps = m.label_maps(img)[:, 0]
        got = [divmod(int(mp.argmax()), 4) for mp in maps]
        assert got == [a, b], (a, b, got)
