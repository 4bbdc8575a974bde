"""Segmentation networks from exported encoders: strict loading into SwinUNETR / UNETR, and the wrong kind refused."""
from __future__ import annotations

import torch
from helpers import raises_smart

from smartlib.downstream.segment import build_segmenter, build_swinunetr, build_unetr, load_segmenter, segmenter_arch
from smartlib.models.smart import SMARTNet, export_encoder

VIT = {"arch": "vit", "img_size": 32, "vit_layers": 12, "vit_hidden": 48, "vit_heads": 4}


def _vit_export(path, **over):
    torch.manual_seed(7)  # not the seed the scratch models draw from: a no-op load must fail the comparisons
    net = SMARTNet(heads=False, **{**VIT, "embed_dim": 12, "semantic_attention": False, **over})
    export_encoder(net, path)
    return net


def _swin_export(path):
    torch.manual_seed(7)
    net = SMARTNet(heads=False, img_size=64, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=2,
                   semantic_attention=False)
    export_encoder(net, path)
    return net


def test_vit_export_loads_strictly_into_unetr(tmp_path):
    net = _vit_export(tmp_path / "vit.pt")
    model = build_unetr(str(tmp_path / "vit.pt"), "smoke", 32)
    want = net.encoder.encoder_state_dict()
    got = model.vit.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    scratch = build_segmenter("scratch", "smoke", 32, arch=VIT).vit.state_dict()
    assert not torch.equal(scratch["blocks.0.attn.qkv.weight"], want["blocks.0.attn.qkv.weight"])
    assert type(build_segmenter(str(tmp_path / "vit.pt"), "smoke", 32)).__name__ == "UNETR"


def test_plain_monai_vit_export_loads_into_unetr(tmp_path):
    from monai.networks.nets import ViT

    from smartlib.models.vit import export_vit

    args = {"in_channels": 1, "img_size": 32, "patch_size": 16, "hidden_size": 48, "mlp_dim": 96, "num_layers": 12,
            "num_heads": 4, "proj_type": "conv", "pos_embed_type": "learnable", "spatial_dims": 3, "qkv_bias": False}
    torch.manual_seed(3)
    vit = ViT(**args, classification=False)
    export_vit(tmp_path / "mae.pt", args, vit.state_dict())
    model = build_unetr(str(tmp_path / "mae.pt"), "smoke", 32)
    assert all(torch.equal(model.vit.state_dict()[k], v) for k, v in vit.state_dict().items())
    two_d = {**args, "spatial_dims": 2, "img_size": 32}
    export_vit(tmp_path / "mae2d.pt", two_d, ViT(**two_d, classification=False).state_dict())
    raises_smart(build_unetr, str(tmp_path / "mae2d.pt"), "smoke", 32, words=["3D ViT with patch 16"])


def test_wrong_kind_is_one_clear_error(tmp_path):
    _vit_export(tmp_path / "vit.pt")
    _swin_export(tmp_path / "swin.pt")
    raises_smart(build_swinunetr, str(tmp_path / "vit.pt"), "smoke", 32, words=["vit", "SwinUNETR"])
    raises_smart(build_unetr, str(tmp_path / "swin.pt"), "smoke", 32, words=["swin", "a vit arm"])
    raises_smart(segmenter_arch, str(tmp_path / "vit.pt"), "smoke", {"arch": "swin"}, words=["vit encoder given to a swin arm"])
    raises_smart(build_segmenter, str(tmp_path / "swin.pt"), "smoke", 32, arch={"arch": "vit"}, words=["swin encoder given"])
    raises_smart(build_segmenter, "scratch", "smoke", 32, arch={"embed_dim": 24}, words=["preset's architecture"])


def test_unetr_needs_twelve_layers_and_the_pretraining_crop(tmp_path):
    _vit_export(tmp_path / "vit6.pt", vit_layers=6)
    raises_smart(build_unetr, str(tmp_path / "vit6.pt"), "smoke", 32, words=["12 layers", "vit_layers=6"])
    _vit_export(tmp_path / "vit64.pt", img_size=64)
    raises_smart(build_unetr, str(tmp_path / "vit64.pt"), "smoke", 32, words=["64³", "roi=32"])


def test_unetr_refuses_weights_that_do_not_fit(tmp_path):
    _vit_export(tmp_path / "vit.pt")
    blob = torch.load(tmp_path / "vit.pt", weights_only=True)
    blob["encoder"]["blocks.0.extra"] = torch.zeros(1)
    torch.save(blob, tmp_path / "bad.pt")
    raises_smart(build_unetr, str(tmp_path / "bad.pt"), "smoke", 32, words=["UNETR.vit", "blocks.0.extra"])


def test_saved_unetr_round_trip_and_tampering(tmp_path):
    from smartlib.downstream.segmenters import SEG_FORMAT

    model = build_segmenter("scratch", "smoke", 32, seed=3, arch=VIT)
    blob = {"format": SEG_FORMAT, "init": "vit-scratch", "arch": segmenter_arch("scratch", "smoke", VIT), "roi": 32,
            "out_channels": 2, "state_dict": model.state_dict()}
    torch.save(blob, tmp_path / "m.pt")
    again, head = load_segmenter(tmp_path / "m.pt")
    assert type(again).__name__ == "UNETR" and head["init"] == "vit-scratch"
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    blob["state_dict"].pop("out.conv.conv.weight")
    torch.save(blob, tmp_path / "bad.pt")
    raises_smart(load_segmenter, tmp_path / "bad.pt", words=["weights do not fit"])


def test_cli_finetune_segmentation_with_a_vit_export_builds_unetr(tmp_path, labelled_set):
    from smartlib.cli import main

    _vit_export(tmp_path / "vit.pt")
    out = tmp_path / "seg"
    assert main(["finetune", "--task", "segmentation", "--init", str(tmp_path / "vit.pt"), "--preset", "smoke", "--out",
                 str(out), "--data", str(labelled_set), "--steps", "1", "--n-boot", "20"]) == 0
    model, head = load_segmenter(out / "models" / "init.pt")  # the CLI names its one init "init"
    assert type(model).__name__ == "UNETR" and head["arch"]["arch"] == "vit"
