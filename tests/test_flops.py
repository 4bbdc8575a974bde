"""FLOP counting on the non-fused attention path, against a hand calculation for one transformer block."""
from __future__ import annotations

import pytest
import torch
from monai.networks.blocks import TransformerBlock
from torch.utils.flop_counter import FlopCounterMode

from helpers import raises_smart
from smartlib.flops import count_flops, token_drop_flops, unfused_attention, vit_forward_flops


def _hand(T: int, h: int, m: int) -> int:
    """One pre-norm ViT block on T tokens, by hand: q, k, v (3·T·h·h multiply-adds), scores Q·Kᵀ (T·T·h), weights·V
    (T·T·h), output projection (T·h·h), MLP up and down (2·T·h·m); 2 FLOPs per multiply-add."""
    return 2 * (3 * T * h * h + T * T * h + T * T * h + T * h * h + 2 * T * h * m)


@pytest.mark.parametrize("T,h,m,heads", [(17, 48, 192, 4), (65, 96, 384, 4), (5, 24, 24, 2)])
def test_one_block_counted_equals_hand_calculation(T, h, m, heads):
    blk = TransformerBlock(h, m, heads, qkv_bias=True, use_flash_attention=True)
    x = torch.rand(3, T, h)
    assert count_flops(blk, lambda: blk(x)) == 3 * _hand(T, h, m)
    assert vit_forward_flops(T, h, m, 1) == _hand(T, h, m)
    assert blk.attn.use_flash_attention  # restored after counting


def test_fused_attention_is_missed_by_the_counter_on_cpu():
    """Why counting switches to the explicit path: the fused kernel's products go uncounted here."""
    blk = TransformerBlock(48, 192, 4, qkv_bias=True, use_flash_attention=True)
    x = torch.rand(2, 17, 48)
    with FlopCounterMode(display=False) as c:
        blk(x)
    fused = c.get_total_flops()
    with unfused_attention(blk), FlopCounterMode(display=False) as c:
        blk(x)
    assert c.get_total_flops() == 2 * _hand(17, 48, 192)
    assert fused < c.get_total_flops()


def test_backward_doubles_the_products():
    blk = TransformerBlock(24, 48, 2, qkv_bias=True)
    x = torch.rand(2, 9, 24, requires_grad=True)
    assert count_flops(blk, lambda: blk(x), backward=True) == 3 * count_flops(blk, lambda: blk(x))


@pytest.mark.parametrize("size,fwd,train", [(96, 0.729, 0.738), (128, 0.743, 0.751)])
def test_vit_b16_token_dropping_saves_three_quarters(size, fwd, train):
    rows = token_drop_flops(size, 16)
    full, drop = rows
    assert (full["tokens"], drop["tokens"]) == ((size // 16) ** 3 + 1, (size // 16) ** 3 // 4 + 1)
    for key in ("fwd_gflops", "train_gflops", "infer_gflops"):  # counted on a meta-device model = by hand
        assert full[key + "_counted"] == pytest.approx(full[key], rel=1e-9)
        assert drop[key + "_counted"] == pytest.approx(drop[key], rel=1e-9)
    assert drop["fwd_saving"] == pytest.approx(fwd, abs=1e-3) and drop["train_saving"] == pytest.approx(train, abs=1e-3)
    assert drop["infer_gflops"] == full["infer_gflops"]  # evaluation uses every token


def test_bad_sizes():
    raises_smart(token_drop_flops, 100, 16, count=False, words=["multiple of patch"])
    raises_smart(vit_forward_flops, 0, 8, 8, 1, words=["sizes"])
