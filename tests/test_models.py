"""Networks: masked Swin/ViT encoders vs MONAI, class attention vs a hand-written reference, heads, SMARTNet."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR, ViT
from monai.networks.nets.swin_unetr import SwinTransformer

from smartlib.errors import SmartError
from smartlib.models import (
    ClassAttention,
    ClassAttentionBlock,
    DINOHead,
    MaskedSwinEncoder,
    MaskedViTEncoder,
    ReconstructionHead,
    SemanticAttention,
    SMARTNet,
    export_encoder,
    load_encoder,
)

E, DEPTHS, HEADS = 12, (1, 1, 1, 1), (1, 2, 4, 8)
SMALL = dict(img_size=32, embed_dim=E, depths=DEPTHS, num_heads=HEADS, sa_heads=4, drop_path=0.0,
             prototypes=16, head_hidden=32, head_bottleneck=8)


def _swin(**kw):
    torch.manual_seed(0)
    return MaskedSwinEncoder(1, E, DEPTHS, HEADS, 4, **kw).eval()


def _monai_swin():
    return SwinTransformer(in_chans=1, embed_dim=E, window_size=(4, 4, 4), patch_size=(2, 2, 2), depths=DEPTHS,
                           num_heads=HEADS, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0,
                           drop_path_rate=0.0, norm_layer=torch.nn.LayerNorm, patch_norm=False, spatial_dims=3,
                           downsample="merging", use_v2=False).eval()


# ------------------------------------------------------------------ MaskedSwinEncoder
@pytest.mark.parametrize("mask_kind", [None, "false"])
@pytest.mark.parametrize("fast", [False, True])
def test_swin_equals_monai_without_mask(mask_kind, fast):
    enc = _swin(fast_attention=fast)
    ref = _monai_swin()
    ref.load_state_dict(enc.encoder_state_dict(), strict=True)
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    mask = None if mask_kind is None else torch.zeros(2, 16, 16, 16, dtype=torch.bool)
    with torch.no_grad():
        ours, theirs = enc(x, mask), ref(x)
        ours_raw, theirs_raw = enc(x, mask, normalize=False), ref(x, normalize=False)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours + ours_raw, theirs + theirs_raw):
        # MONAI's attention: bit for bit; the fast attention (smartlib.models.fast_attention): float rounding
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4) if fast else torch.equal(a, b)


def test_swin_state_dict_loads_into_swinunetr_strict():
    enc = _swin()
    sd = enc.encoder_state_dict()
    assert "mask_token" not in sd
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=E, depths=DEPTHS, num_heads=HEADS, window_size=4)
    net.swinViT.load_state_dict(sd, strict=True)
    for k, v in net.swinViT.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # the copy is detached: changing it does not touch the encoder
    next(iter(sd.values())).add_(1.0)
    assert not torch.equal(next(iter(sd.values())), next(iter(enc.encoder_state_dict().values())))


def test_swin_output_shapes_and_dims():
    enc = _swin()
    assert enc.dims == [12, 24, 48, 96, 192]
    with torch.no_grad():
        out = enc(torch.rand(2, 1, 32, 32, 32))
    expected = [(2, E * 2**i, 32 // 2 ** (i + 1), 32 // 2 ** (i + 1), 32 // 2 ** (i + 1)) for i in range(5)]
    assert [tuple(o.shape) for o in out] == expected


def test_swin_masked_patches_become_mask_token():
    enc = _swin()
    with torch.no_grad():
        enc.mask_token.copy_(torch.arange(E, dtype=torch.float32).view(1, E, 1, 1, 1) + 10.0)
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = torch.rand(2, 16, 16, 16, generator=torch.Generator().manual_seed(4)) < 0.4
    seen = {}
    enc.layers1[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("x0", args[0].detach().clone()))
    with torch.no_grad():
        out = enc(x, mask, normalize=False)
        clean = enc.patch_embed(x)
    x0 = seen["x0"]
    assert torch.equal(out[0], x0)
    token = enc.mask_token.detach().view(E)
    for b in range(2):
        m = mask[b]
        got = x0[b].permute(1, 2, 3, 0)  # (D, H, W, E)
        assert torch.equal(got[m], token.expand(int(m.sum()), E))
        assert torch.equal(got[~m], clean[b].permute(1, 2, 3, 0)[~m])
    # and the mask changes the deeper stages
    with torch.no_grad():
        assert not torch.allclose(enc(x, mask)[4], enc(x)[4])


def test_swin_mask_token_gets_gradient():
    enc = _swin()
    mask = torch.zeros(1, 16, 16, 16, dtype=torch.bool)
    mask[0, :4] = True
    enc(torch.rand(1, 1, 32, 32, 32), mask)[4].sum().backward()
    assert enc.mask_token.grad is not None and enc.mask_token.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 8, 8, 8), (1, 16, 16, 16), (2, 16, 16), (2, 1, 16, 16, 16)])
def test_swin_wrong_mask_shape_raises(shape):
    enc = _swin()
    with pytest.raises(ValueError, match="mask shape"):
        enc(torch.rand(2, 1, 32, 32, 32), torch.zeros(shape, dtype=torch.bool))


# ------------------------------------------------------------------ semantic attention
def _ref_class_attention(ca: ClassAttention, u: torch.Tensor):
    """Loop over batch and heads: query from u[:, 0] only, keys/values from all of u."""
    b, n, c = u.shape
    h = ca.num_heads
    d = c // h
    cls_out = torch.zeros(b, 1, c, dtype=torch.float64)
    attn_out = torch.zeros(b, h, n, dtype=torch.float64)
    W = {k: (getattr(ca, k).weight.double(), getattr(ca, k).bias.double()) for k in ("q", "k", "v", "proj")}
    for i in range(b):
        U = u[i].double()
        q = U[0] @ W["q"][0].T + W["q"][1]  # (c,)
        k = U @ W["k"][0].T + W["k"][1]  # (n, c)
        v = U @ W["v"][0].T + W["v"][1]
        heads = []
        for j in range(h):
            sl = slice(j * d, (j + 1) * d)
            logits = np.array([float((q[sl] @ k[t, sl]).detach()) for t in range(n)]) / math.sqrt(d)
            w = np.exp(logits - logits.max())
            w /= w.sum()
            attn_out[i, j] = torch.from_numpy(w)
            heads.append(sum(w[t] * v[t, sl] for t in range(n)))
        cls_out[i, 0] = torch.cat(heads) @ W["proj"][0].T + W["proj"][1]
    return cls_out, attn_out


def test_class_attention_matches_reference():
    torch.manual_seed(0)
    ca = ClassAttention(8, 2)
    u = torch.randn(2, 6, 8)
    with torch.no_grad():
        cls, attn = ca(u)
    ref_cls, ref_attn = _ref_class_attention(ca, u)
    assert cls.shape == (2, 1, 8) and attn.shape == (2, 2, 6)
    torch.testing.assert_close(cls.double(), ref_cls, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attn.double(), ref_attn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2))


def test_class_attention_cls_ignores_token_order_but_not_content():
    # query from CLS only: permuting the image tokens permutes the attention and leaves CLS unchanged
    torch.manual_seed(1)
    ca = ClassAttention(8, 4)
    u = torch.randn(1, 7, 8)
    perm = torch.tensor([0, 3, 1, 6, 2, 5, 4])
    with torch.no_grad():
        c1, a1 = ca(u)
        c2, a2 = ca(u[:, perm])
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(a2, a1[:, :, perm])


def test_class_attention_dim_not_divisible_raises():
    with pytest.raises(ValueError, match="divisible"):
        ClassAttention(10, 4)
    with pytest.raises(ValueError):
        SemanticAttention(10, 4)


def test_semantic_attention_depth_below_one_raises():
    with pytest.raises(ValueError, match="depth"):
        SemanticAttention(8, 2, depth=0)


def test_layerscale_initialisation():
    sa = SemanticAttention(16, 4)
    assert len(sa.blocks) == 2
    for blk in sa.blocks:
        assert torch.equal(blk.gamma1.data, torch.full((16,), 1e-4))
        assert torch.equal(blk.gamma2.data, torch.full((16,), 1e-4))
    blk = ClassAttentionBlock(16, 4, layerscale=0.5)
    assert torch.equal(blk.gamma1.data, torch.full((16,), 0.5))


def _ref_semantic_attention(sa: SemanticAttention, tokens: torch.Tensor):
    """Direct re-computation of the CaiT blocks; returns final normed CLS and last block's head-mean attention."""
    b, n, c = tokens.shape
    cls = sa.cls_token.detach().double().expand(b, 1, c)
    tok = tokens.double()
    attn = None
    for blk in sa.blocks:
        u = torch.cat([cls, tok], dim=1)
        un = F.layer_norm(u, (c,), blk.norm1.weight.double(), blk.norm1.bias.double(), blk.norm1.eps)
        out, attn = _ref_class_attention(blk.attn, un)
        cls = cls + blk.gamma1.double() * out
        z = F.layer_norm(cls, (c,), blk.norm2.weight.double(), blk.norm2.bias.double(), blk.norm2.eps)
        z = F.gelu(z @ blk.mlp.linear1.weight.double().T + blk.mlp.linear1.bias.double())
        z = z @ blk.mlp.linear2.weight.double().T + blk.mlp.linear2.bias.double()
        cls = cls + blk.gamma2.double() * z
    final = F.layer_norm(cls[:, 0], (c,), sa.norm.weight.double(), sa.norm.bias.double(), sa.norm.eps)
    return final, attn.mean(dim=1)[:, 1:]


def test_semantic_attention_matches_reference_and_attention_is_last_block():
    torch.manual_seed(2)
    sa = SemanticAttention(16, 4, depth=2).eval()
    with torch.no_grad():  # make LayerScale large so both blocks matter to the reference comparison
        for blk in sa.blocks:
            blk.gamma1.fill_(0.7)
            blk.gamma2.fill_(0.3)
    tokens = torch.randn(3, 9, 16)
    with torch.no_grad():
        cls, attn = sa(tokens)
    ref_cls, ref_attn = _ref_semantic_attention(sa, tokens)
    assert cls.shape == (3, 16) and attn.shape == (3, 9)
    torch.testing.assert_close(cls.double(), ref_cls, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attn.double(), ref_attn, rtol=1e-4, atol=1e-6)
    # CLS→CLS excluded: sums to strictly less than one, and all entries positive
    assert (attn.sum(-1) < 1).all() and (attn > 0).all()
    # the first block's attention differs from the last one's (so "last" is a real distinction)
    with torch.no_grad():
        u0 = sa.blocks[0].norm1(torch.cat([sa.cls_token.expand(3, -1, -1), tokens], 1))
        first = sa.blocks[0].attn(u0)[1].mean(1)[:, 1:]
    assert not torch.allclose(first, attn)


def test_semantic_attention_tokens_unchanged_and_receive_gradient():
    torch.manual_seed(3)
    sa = SemanticAttention(16, 4)
    tokens = torch.randn(2, 5, 16, requires_grad=True)
    before = tokens.detach().clone()
    cls, attn = sa(tokens)
    assert torch.equal(tokens.detach(), before)
    (cls.sum() + attn.sum()).backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0
    # a single block returns only the CLS token
    blk = ClassAttentionBlock(16, 4)
    c, a = blk(torch.randn(2, 1, 16), tokens.detach())
    assert c.shape == (2, 1, 16) and a.shape == (2, 4, 6)


# ------------------------------------------------------------------ heads
def test_dino_head_shape_normalised_bottleneck_and_frozen_magnitude():
    torch.manual_seed(0)
    head = DINOHead(10, prototypes=7, hidden=20, bottleneck=5, nlayers=3)
    x = torch.randn(4, 3, 10)
    seen = {}
    head.last_layer.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0].detach()))
    y = head(x)
    assert y.shape == (4, 3, 7)
    torch.testing.assert_close(seen["z"].norm(dim=-1), torch.ones(4, 3))
    g = head.last_layer.parametrizations.weight.original0
    assert g.requires_grad is False and torch.equal(g.data, torch.ones_like(g))
    # effective weight rows have unit norm even after v changes
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(torch.rand(7, 1) * 5 + 0.1)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(7))
    # reference forward: MLP (Linear-GELU-Linear-GELU-Linear), L2 normalise, then unit-row weight
    lin = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(10, 20), (20, 20), (20, 5)]
    z = x
    for i, m in enumerate(lin):
        z = z @ m.weight.T + m.bias
        if i < 2:
            z = F.gelu(z)
    z = z / z.norm(dim=-1, keepdim=True)
    v = head.last_layer.parametrizations.weight.original1
    ref = z @ (v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), ref, rtol=1e-5, atol=1e-6)


def test_dino_head_magnitude_stays_one_after_training_step():
    torch.manual_seed(0)
    head = DINOHead(6, prototypes=5, hidden=8, bottleneck=4, nlayers=2)
    head(torch.randn(3, 6)).pow(2).sum().backward()
    g = head.last_layer.parametrizations.weight.original0
    assert g.grad is None
    v = head.last_layer.parametrizations.weight.original1
    assert v.grad is not None and v.grad.abs().sum() > 0
    with torch.no_grad():  # a plain SGD step on every trainable parameter
        for p in head.parameters():
            if p.requires_grad:
                p -= 1.0 * p.grad
    assert torch.equal(g.data, torch.ones_like(g))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(5))


def test_dino_head_bad_nlayers():
    with pytest.raises(ValueError, match="nlayers"):
        DINOHead(4, nlayers=0)


def test_reconstruction_head_routes_token_features_to_known_voxels():
    u, C = 2, 2
    k = C * u**3  # one input feature per output voxel: an identity weight routes feature o to output o
    head = ReconstructionHead(k, u, out_chans=C)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(k))
        head.proj.bias.zero_()
    B, d, h, w = 2, 2, 3, 2
    x = torch.zeros(B, k, d, h, w)
    for b in range(B):
        for i in range(d):
            for j in range(h):
                for l in range(w):
                    tok = ((b * d + i) * h + j) * w + l
                    x[b, :, i, j, l] = 1000.0 * tok + torch.arange(k)
    with torch.no_grad():
        y = head(x)
    assert y.shape == (B, C, d * u, h * u, w * u)
    for b in range(B):
        for i in range(d):
            for j in range(h):
                for l in range(w):
                    tok = ((b * d + i) * h + j) * w + l
                    for c in range(C):
                        for p in range(u):
                            for q in range(u):
                                for r in range(u):
                                    o = ((c * u + p) * u + q) * u + r
                                    assert y[b, c, i * u + p, j * u + q, l * u + r] == 1000.0 * tok + o


def test_reconstruction_head_general_weight_against_loop():
    torch.manual_seed(0)
    u, C, k = 2, 1, 5
    head = ReconstructionHead(k, u, C)
    x = torch.randn(1, k, 2, 1, 2)
    with torch.no_grad():
        y = head(x).numpy()
    W, bias, xn = head.proj.weight.detach().numpy(), head.proj.bias.detach().numpy(), x.numpy()
    for i in range(2):
        for l in range(2):
            for p in range(u):
                for q in range(u):
                    for r in range(u):
                        o = (p * u + q) * u + r
                        np.testing.assert_allclose(y[0, 0, i * u + p, q, l * u + r], W[o] @ xn[0, :, i, 0, l] + bias[o], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ MaskedViTEncoder
def _vits():
    torch.manual_seed(0)
    enc = MaskedViTEncoder(1, img_size=32, patch_size=16, hidden_size=24, mlp_dim=48, num_layers=2, num_heads=2).eval()
    ref = ViT(in_channels=1, img_size=32, patch_size=16, hidden_size=24, mlp_dim=48, num_layers=2, num_heads=2,
              proj_type="conv", classification=False, spatial_dims=3, qkv_bias=True).eval()
    ref.load_state_dict(enc.encoder_state_dict(), strict=True)
    return enc, ref


def test_vit_equals_monai_without_mask():
    enc, ref = _vits()
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        t, states = enc(x)
        t_ref, states_ref = ref(x)
        t0, _ = enc(x, torch.zeros(2, 8, dtype=torch.bool))
    assert t.shape == (2, 8, 24) and len(states) == len(states_ref) == 2
    assert torch.equal(t, t_ref) and torch.equal(t0, t_ref)
    for a, b in zip(states, states_ref):
        assert torch.equal(a, b)


def test_vit_mask_token_replaced_before_position_embedding():
    enc, _ = _vits()
    x = torch.rand(2, 1, 32, 32, 32)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, [1, 5]] = True
    mask[1, 0] = True
    seen = {}
    enc.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("t", a[0].detach().clone()))
    with torch.no_grad():
        enc(x, mask)
        pos = enc.patch_embedding.position_embeddings[0]
        clean = enc.patch_embedding.patch_embeddings(x).flatten(2).transpose(1, 2)
    t = seen["t"]
    tok = enc.mask_token.detach()[0, 0]
    for b in range(2):
        for n in range(8):
            exp = (tok if mask[b, n] else clean[b, n]) + pos[n]
            torch.testing.assert_close(t[b, n], exp)


def test_vit_bad_mask_shape():
    enc, _ = _vits()
    with pytest.raises(ValueError, match="mask shape"):
        enc(torch.rand(2, 1, 32, 32, 32), torch.zeros(2, 9, dtype=torch.bool))


# ------------------------------------------------------------------ SMARTNet
def test_smartnet_encode_shapes_swin():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **{**SMALL, "img_size": 64}).eval()
    with torch.no_grad():
        out = net.encode(torch.rand(2, 1, 64, 64, 64))
    assert out["tokens"].shape == (2, 64, 96)
    assert out["cls"].shape == (2, 96) and out["attn"].shape == (2, 64)
    assert out["pooled"].shape == (2, 192) and out["deep"].shape == (2, 192, 2, 2, 2)
    assert [tuple(s.shape[1:]) for s in out["stages"]] == [(12, 32, 32, 32), (24, 16, 16, 16), (48, 8, 8, 8),
                                                           (96, 4, 4, 4), (192, 2, 2, 2)]
    # tokens are the stage-3 map flattened in (d, h, w) order
    s3 = out["stages"][3]
    assert torch.equal(out["tokens"][1, 1 * 16 + 2 * 4 + 3], s3[1, :, 1, 2, 3])
    torch.testing.assert_close(out["pooled"], out["deep"].mean(dim=(2, 3, 4)))


def test_smartnet_forward_with_heads_shapes():
    torch.manual_seed(0)
    net = SMARTNet(**SMALL).eval()
    with torch.no_grad():
        out, logits, rec = net(torch.rand(2, 1, 32, 32, 32), torch.zeros(2, 8, dtype=torch.bool))
    assert out["tokens"].shape == (2, 8, 96) and out["deep"].shape == (2, 192, 1, 1, 1)
    assert logits["cls"].shape == (2, 16) and logits["patch"].shape == (2, 8, 16) and logits["pool"].shape == (2, 16)
    assert rec.shape == (2, 1, 32, 32, 32)


def test_smartnet_encode_shapes_vit():
    torch.manual_seed(0)
    net = SMARTNet(arch="vit", img_size=32, vit_hidden=24, vit_layers=1, vit_heads=2, sa_heads=4,
                   prototypes=16, head_hidden=32, head_bottleneck=8).eval()
    with torch.no_grad():
        out = net.encode(torch.rand(2, 1, 32, 32, 32), torch.zeros(2, 8, dtype=torch.bool))
        rec = net.reconstruct(out["deep"])
    assert out["tokens"].shape == (2, 8, 24) and out["cls"].shape == (2, 24) and out["attn"].shape == (2, 8)
    assert out["deep"].shape == (2, 24, 2, 2, 2) and out["pooled"].shape == (2, 24)
    assert rec.shape == (2, 1, 32, 32, 32)


def test_smartnet_unit_mask_upsampled_to_patch_grid():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **SMALL).eval()
    seen = {}
    net.encoder.register_forward_pre_hook(lambda m, a: seen.__setitem__("m", a[1].clone()))
    unit = torch.rand(2, 8, generator=torch.Generator().manual_seed(5)) < 0.5
    unit[0, 3], unit[0, 4] = True, False  # make sure both states occur
    with torch.no_grad():
        net.encode(torch.rand(2, 1, 32, 32, 32), unit)
    pm = seen["m"]
    assert pm.shape == (2, 16, 16, 16)
    ref = np.zeros((2, 16, 16, 16), bool)
    for b in range(2):
        for i in range(16):
            for j in range(16):
                for k in range(16):
                    ref[b, i, j, k] = bool(unit[b, (i // 8) * 4 + (j // 8) * 2 + k // 8])
    assert np.array_equal(pm.numpy(), ref)


def test_smartnet_masked_unit_changes_its_token():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **{**SMALL, "img_size": 64}).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    unit = torch.zeros(1, 64, dtype=torch.bool)
    unit[0, 21] = True
    with torch.no_grad():
        a = net.encode(x)["tokens"]
        b = net.encode(x, unit)["tokens"]
    diff = (a - b).abs().sum(-1)[0]
    assert diff[21] > 0 and diff.argmax() == 21


def test_smartnet_without_sa_cls_is_token_mean():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, semantic_attention=False, **SMALL).eval()
    assert net.sa is None
    with torch.no_grad():
        out = net.encode(torch.rand(2, 1, 32, 32, 32))
    assert out["attn"] is None
    torch.testing.assert_close(out["cls"], out["tokens"].mean(dim=1))


def test_smartnet_gitd_stage3_pools_stage3():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, gitd_stage=3, **SMALL).eval()
    with torch.no_grad():
        out = net.encode(torch.rand(1, 1, 32, 32, 32))
    torch.testing.assert_close(out["pooled"], out["stages"][3].mean(dim=(2, 3, 4)))


def test_export_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **SMALL).eval()
    path = export_encoder(net, tmp_path / "enc.pt")
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = load_encoder(path).eval()
    assert loaded.has_heads is False
    x = torch.rand(2, 1, 32, 32, 32)
    unit = torch.rand(2, 8, generator=torch.Generator().manual_seed(1)) < 0.4
    with torch.no_grad():
        for m in (None, unit):
            a, b = net.encode(x, m), loaded.encode(x, m)
            for key in ("tokens", "cls", "attn", "pooled", "deep"):
                assert torch.equal(a[key], b[key]), key
    # the exported encoder weights load into SwinUNETR strictly
    blob = torch.load(path, weights_only=True)
    SwinUNETR(in_channels=1, out_channels=2, feature_size=E, depths=DEPTHS, num_heads=HEADS,
              window_size=4).swinViT.load_state_dict(blob["encoder"], strict=True)
    with pytest.raises(RuntimeError):
        loaded.project(a)
    # heads are not part of the export
    assert not any(k.startswith("head") for k in blob["semantic_attention"])


def test_load_encoder_architecture_mismatch_names_file(tmp_path):
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **SMALL)
    path = export_encoder(net, tmp_path / "enc.pt")
    blob = torch.load(path, weights_only=True)
    blob["model"]["embed_dim"] = 24
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(SmartError, match="bad.pt"):
        load_encoder(tmp_path / "bad.pt")
    # semantic attention in the file but not in the model
    blob = torch.load(path, weights_only=True)
    blob["model"]["semantic_attention"] = False
    torch.save(blob, tmp_path / "nosa.pt")
    with pytest.raises(SmartError, match="nosa.pt"):
        load_encoder(tmp_path / "nosa.pt")


def test_load_encoder_rejects_other_files(tmp_path):
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(SmartError, match="other.pt"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(SmartError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")


@pytest.mark.parametrize("kwargs", [dict(img_size=48), dict(img_size=100), dict(embed_dim=18), dict(nope=1),
                                    dict(arch="foo"), dict(gitd_stage=2)])
def test_smartnet_bad_arguments(kwargs):
    args = {**SMALL, **kwargs}
    with pytest.raises(SmartError):
        SMARTNet(heads=False, **args)


def test_smartnet_bad_input_shape():
    net = SMARTNet(heads=False, **SMALL)
    with pytest.raises(ValueError, match="input shape"):
        net.encode(torch.rand(1, 1, 64, 64, 64))
    with pytest.raises(ValueError):
        net.encode(torch.rand(1, 32, 32, 32))


def test_set_drop_path_zeroes_every_droppath():
    torch.manual_seed(0)
    net = SMARTNet(heads=False, **{**SMALL, "drop_path": 0.5})
    probs = [m.drop_prob for m in net.modules() if hasattr(m, "drop_prob")]
    assert len(probs) >= 3 and max(probs) > 0
    net.train()
    x = torch.rand(1, 1, 32, 32, 32)
    net.set_drop_path(0.0)
    assert all(m.drop_prob == 0 for m in net.modules() if hasattr(m, "drop_prob"))
    assert net.a.drop_path == 0.0
    with torch.no_grad():  # no stochastic depth left: two training-mode passes agree
        torch.manual_seed(1)
        a = net.encode(x)["tokens"]
        torch.manual_seed(2)
        b = net.encode(x)["tokens"]
    assert torch.equal(a, b)


def test_last_layers_are_the_heads_last_layers():
    net = SMARTNet(**SMALL)
    ll = net.last_layers()
    expected = {id(p) for h in (net.head_cls, net.head_patch, net.head_pool) for p in h.last_layer.parameters()}
    assert {id(p) for p in ll} == expected and len(ll) == 6
    assert SMARTNet(heads=False, **SMALL).last_layers() == []


@pytest.mark.parametrize("arch", ["swin", "vit"])
@pytest.mark.parametrize("shape", [(1, 16), (4, 4), (2, 7), (2, 2, 2, 2)])
def test_smartnet_bad_unit_mask_shape(arch, shape):
    kw = SMALL if arch == "swin" else dict(arch="vit", img_size=32, vit_hidden=24, vit_layers=1, vit_heads=2, sa_heads=4)
    net = SMARTNet(heads=False, **kw).eval()
    with pytest.raises(ValueError, match="mask"):
        net.encode(torch.rand(2, 1, 32, 32, 32), torch.zeros(shape, dtype=torch.bool))


def test_load_encoder_img_size_override(tmp_path):
    torch.manual_seed(0)
    path = export_encoder(SMARTNet(heads=False, **SMALL), tmp_path / "enc.pt")
    net = load_encoder(path, img_size=64).eval()
    with torch.no_grad():
        out = net.encode(torch.rand(1, 1, 64, 64, 64))
    assert out["tokens"].shape == (1, 64, 96)
    with pytest.raises(SmartError, match="nope"):
        load_encoder(path, nope=1)


def test_load_encoder_vit_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = SMARTNet(heads=False, arch="vit", img_size=32, vit_hidden=24, vit_layers=1, vit_heads=2, sa_heads=4).eval()
    path = export_encoder(net, tmp_path / "vit.pt")
    loaded = load_encoder(path).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.encode(x)["cls"], loaded.encode(x)["cls"])
    # a ViT's position embeddings fix its input size: another img_size cannot load
    with pytest.raises(SmartError, match="vit.pt"):
        load_encoder(path, img_size=64)


@pytest.mark.parametrize("tamper", ["embed18", "arch", "no_encoder", "no_model"])
def test_load_encoder_invalid_export_names_file(tmp_path, tamper):
    path = export_encoder(SMARTNet(heads=False, **SMALL), tmp_path / "enc.pt")
    blob = torch.load(path, weights_only=True)
    if tamper == "embed18":
        blob["model"]["embed_dim"] = 18
    elif tamper == "arch":
        blob["model"]["arch"] = "foo"
    elif tamper == "no_encoder":
        del blob["encoder"]
    else:
        del blob["model"]
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(SmartError, match="tampered.pt"):
        load_encoder(tmp_path / "tampered.pt")
