"""Feature reuse: block × block CKA between a pretrained and a fine-tuned SwinUNETR / UNETR encoder."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import raises_smart

from smartlib.downstream.feature_reuse import block_outputs, cka_patches, encoder_blocks, reuse_matrices, reuse_table
from smartlib.downstream.segment import build_segmenter

VIT = {"arch": "vit", "img_size": 32, "vit_layers": 12, "vit_hidden": 48, "vit_heads": 4}


def _hsic1_longhand(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5) written out with explicit sums over index tuples."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    ones = sum(kt[i, j] for i in range(n) for j in range(n)) * sum(lt[i, j] for i in range(n) for j in range(n))
    cross = sum(kt[i, j] * lt[j, q] for i in range(n) for j in range(n) for q in range(n))
    return (trace + ones / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def _cka_longhand(x: np.ndarray, y: np.ndarray) -> float:
    k, l = x @ x.T, y @ y.T
    return _hsic1_longhand(k, l) / np.sqrt(_hsic1_longhand(k, k) * _hsic1_longhand(l, l))


def _patches(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 32, 32, 32, generator=g)
    x[:, :, 8:20, 8:20, 8:20] += torch.rand(n, 1, 1, 1, 1, generator=g)  # some structure that differs per patch
    return x


def test_vit_block_outputs_match_a_manual_forward_and_cka_matches_longhand():
    pre = build_segmenter("scratch", "smoke", 32, seed=0, arch=VIT)
    ft = build_segmenter("scratch", "smoke", 32, seed=1, arch=VIT)  # another network of the same architecture
    x = _patches()
    # independent of the hooks: walk MONAI's ViT by hand
    with torch.no_grad():
        h, manual = ft.vit.patch_embedding(x), []
        for blk in ft.vit.blocks:
            h = blk(h)
            manual.append(h.flatten(1))
    hooked = block_outputs(ft, x)
    assert len(hooked) == 12 and all(torch.allclose(a, b) for a, b in zip(hooked, manual))
    m = reuse_matrices(pre, ft, x, batch_size=6)
    fa = [f.double().numpy() for f in block_outputs(pre, x)]
    fb = [f.double().numpy() for f in hooked]
    for i, j in ((0, 0), (3, 7), (11, 11)):
        assert m["cross"][i, j] == pytest.approx(_cka_longhand(fa[i], fb[j]), rel=1e-6, abs=1e-9)
    assert m["self_pretrained"][2, 5] == pytest.approx(_cka_longhand(fa[2], fa[5]), rel=1e-6, abs=1e-9)
    assert m["layers"] == [f"block{i}" for i in range(12)] and m["n"] == 6


def test_swin_identical_networks_reuse_everything_and_a_changed_stage_is_seen():
    pre = build_segmenter("scratch", "smoke", 32, seed=0)
    same = copy.deepcopy(pre)
    x = _patches(8)
    m = reuse_matrices(pre, same, x, batch_size=8)
    names = m["layers"]
    assert names == ["stage1.block0", "stage2.block0", "stage3.block0", "stage4.block0"]  # smoke depths (1, 1, 1, 1)
    assert np.allclose(np.diag(m["cross"]), 1.0) and np.allclose(m["cross"], m["self_pretrained"])
    # planted change: re-draw stage 4 only → stages 1–3 are reused exactly, stage 4 is not
    changed = copy.deepcopy(pre)
    torch.manual_seed(123)
    for p in changed.swinViT.layers4[0].blocks.parameters():
        torch.nn.init.normal_(p, std=0.5)
    d = np.diag(reuse_matrices(pre, changed, x, batch_size=8)["cross"])
    assert np.allclose(d[:3], 1.0) and d[3] < 0.99


def test_reuse_table_and_bad_inputs():
    pre = build_segmenter("scratch", "smoke", 32, seed=0)
    m = reuse_matrices(pre, copy.deepcopy(pre), _patches(5), batch_size=8)
    t = reuse_table({"a": m})
    assert set(t["kind"]) == {"cross", "self_pretrained", "self_finetuned"} and len(t) == 3 * 16
    vit = build_segmenter("scratch", "smoke", 32, seed=0, arch=VIT)
    raises_smart(reuse_matrices, pre, vit, _patches(5), words=["different blocks"])
    raises_smart(reuse_matrices, pre, pre, _patches(3), words=["at least 4"])
    raises_smart(reuse_matrices, pre, pre, _patches(8), batch_size=3, words=["at least 4"])
    raises_smart(encoder_blocks, torch.nn.Conv3d(1, 1, 1), words=["SwinUNETR or UNETR"])
    raises_smart(cka_patches, [], [], 32, words=["no volumes"])


def test_cka_patches_are_crops_centred_on_tumour_or_background():
    img = torch.zeros(1, 48, 48, 48)
    msk = torch.zeros(1, 48, 48, 48)
    msk[:, 40:44, 40:44, 40:44] = 1  # a corner tumour: a background-centred crop rarely holds it
    img[msk.bool()] = 1.0
    p = cka_patches([img] * 6, [msk] * 6, 32, seed=0)
    holds = (p.flatten(1).sum(1) == 64).tolist()  # the whole tumour (64 voxels) is in the crop, or not at all
    assert p.shape == (12, 1, 32, 32, 32) and any(holds) and set(p.unique().tolist()) <= {0.0, 1.0}
