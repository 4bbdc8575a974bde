"""The fast window attention is MONAI's attention: same outputs and gradients, same weights and keys."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import SwinTransformer, WindowAttention

from smartlib.models.fast_attention import FastWindowAttention, RowSoftmax, accelerate, row_softmax


def _swin(window: int, embed: int = 12, heads=(1, 2, 4, 8), depths=(2, 2, 2, 2)) -> SwinTransformer:
    torch.manual_seed(0)
    m = SwinTransformer(in_chans=1, embed_dim=embed, window_size=(window,) * 3, patch_size=(2, 2, 2), depths=depths,
                        num_heads=heads, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0, norm_layer=nn.LayerNorm,
                        spatial_dims=3, downsample="merging", use_v2=False)
    for p in m.parameters():  # MONAI starts the bias tables near 0: give them values so a wrong bias shows
        if p.ndim == 2 and p.shape[1] in heads and p.shape[0] > p.shape[1]:
            nn.init.normal_(p, std=0.5)
    return m


def test_row_softmax_matches_torch_softmax_values_and_gradients():
    torch.manual_seed(1)
    s = (torch.randn(64, 3, 8, 8) * 4).requires_grad_(True)
    g = torch.randn(64, 3, 8, 8)
    (RowSoftmax.apply(s) * g).sum().backward()
    ours = s.grad.clone()
    s.grad = None
    ref = torch.softmax(s, dim=-1)
    (ref * g).sum().backward()
    assert torch.allclose(RowSoftmax.apply(s), ref, atol=1e-6)
    assert torch.allclose(ours, s.grad, atol=1e-6)
    # long rows take torch's own kernel, the same values
    long = torch.randn(5, 64)
    assert torch.allclose(row_softmax(long), torch.softmax(long, -1), atol=1e-7)
    # large logits do not overflow (the row maximum is subtracted)
    assert torch.isfinite(RowSoftmax.apply(torch.full((2, 8), 1e4))).all()


@pytest.mark.parametrize("window,embed,heads", [(2, 12, (1, 2, 4, 8)), (4, 24, (2, 2, 4, 8))])
def test_accelerated_swin_matches_monai_outputs_and_gradients(window, embed, heads):
    ref = _swin(window, embed, heads)
    fast = accelerate(copy.deepcopy(ref))
    assert sum(isinstance(m, FastWindowAttention) for m in fast.modules()) == 8  # every block swapped
    x = torch.rand(2, 1, 64, 64, 64)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    oa, ob = ref(xa), fast(xb)
    w = [torch.randn_like(o) for o in oa]
    sum((o * g).sum() for o, g in zip(oa, w)).backward()
    sum((o * g).sum() for o, g in zip(ob, w)).backward()
    for a, b in zip(oa, ob):
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4)
    assert torch.allclose(xa.grad, xb.grad, atol=1e-5, rtol=1e-3)
    pa, pb = dict(ref.named_parameters()), dict(fast.named_parameters())
    assert pa.keys() == pb.keys()
    for k in pa:  # the bias tables, qkv and projection weights get MONAI's gradients
        assert torch.allclose(pa[k].grad, pb[k].grad, atol=1e-4, rtol=1e-3), k
    # without gradients the fused path gives the same features
    with torch.no_grad():
        for a, b in zip(ref(x), fast(x)):
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-4)


def test_shifted_window_mask_is_applied():
    # a perturbation: drop the shift mask in the fast path and the outputs must differ from MONAI's
    ref = _swin(2)
    fast = accelerate(copy.deepcopy(ref))
    x = torch.rand(1, 1, 64, 64, 64)
    forward = FastWindowAttention.forward
    try:
        FastWindowAttention.forward = lambda self, x, mask: forward(self, x, None)
        with torch.no_grad():
            wrong = fast(x)[1]
    finally:
        FastWindowAttention.forward = forward
    with torch.no_grad():
        assert not torch.allclose(wrong, ref(x)[1], atol=1e-3)
        assert torch.allclose(fast(x)[1], ref(x)[1], atol=2e-5)


def test_accelerate_keeps_state_dict_keys_and_swaps_back_in_swinunetr():
    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=2)
    keys = list(net.state_dict())
    accelerate(net)
    assert list(net.state_dict()) == keys
    assert all(type(m) is FastWindowAttention for m in net.modules() if isinstance(m, WindowAttention))
    accelerate(net, enabled=False)
    assert all(type(m) is WindowAttention for m in net.modules() if isinstance(m, WindowAttention))


def test_chunked_window_attention_gradients_match_finite_differences(monkeypatch):
    from smartlib.models.fast_attention import ChunkedWindowAttention

    monkeypatch.setattr(ChunkedWindowAttention, "CHUNK_SCORES", 3 * 2 * 8 * 8)  # 3 windows a chunk: chunks cross masks
    torch.manual_seed(0)
    w, h, n, d, nw = 8, 2, 8, 3, 4
    q, k, v = (torch.randn(w, h, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(h, n, n, dtype=torch.float64, requires_grad=True)
    mask = torch.where(torch.rand(nw, n, n) > 0.7, -100.0, 0.0).double()
    assert torch.autograd.gradcheck(lambda *a: ChunkedWindowAttention.apply(*a, mask, 0.3), (q, k, v, bias))

    def reference(q, k, v, bias):  # MONAI's arithmetic, written out
        s = q @ k.transpose(-2, -1) * 0.3 + bias
        s = (s.view(w // nw, nw, h, n, n) + mask.view(1, nw, 1, n, n)).view(w, h, n, n)
        return s.softmax(-1) @ v

    assert torch.allclose(ChunkedWindowAttention.apply(q, k, v, bias, mask, 0.3), reference(q, k, v, bias), atol=1e-12)
    wrong = mask.roll(1, dims=0)  # a mask applied to the wrong windows must show
    assert not torch.allclose(ChunkedWindowAttention.apply(q, k, v, bias, wrong, 0.3), reference(q, k, v, bias), atol=1e-3)
