"""MAE / MSMAE: the three-way masked autoencoder, the ViT export format, and the resumable pretraining loop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.networks.nets import ViT

from helpers import raises_smart
from smartlib.mae import MAEConfig, mae_config, pretrain_mae
from smartlib.models.mae import SplitMaskedAutoEncoder
from smartlib.models.vit import export_vit, load_vit, load_vit_features, read_vit_export
from smartlib.supervised_masking import MASKED, THROWN, VISIBLE, supervised_split

TINY = dict(img_size=32, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=2, num_heads=2, decoder_hidden_size=12,
            decoder_mlp_dim=24, decoder_num_layers=1, decoder_num_heads=2)
TINY_CFG = dict(img_size=32, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2, decoder_hidden_size=12,
                decoder_mlp_dim=24, decoder_layers=1, decoder_heads=2, batch_size=4, epochs=3, ckpt_every=2, shift=8)


def _model(n_classes: int = 2, seed: int = 0) -> SplitMaskedAutoEncoder:
    torch.manual_seed(seed)
    return SplitMaskedAutoEncoder(**TINY, n_classes=n_classes).eval()


def _patch_slices(n: int, grid: int = 4, p: int = 8):
    i, j, k = np.unravel_index(n, (grid, grid, grid))
    return (slice(None), slice(None), slice(i * p, (i + 1) * p), slice(j * p, (j + 1) * p), slice(k * p, (k + 1) * p))


def test_patchify_follows_monai_patch_order():
    m = _model()
    x = torch.rand(2, 1, 32, 32, 32)
    flat = m.patchify(x)
    assert flat.shape == (2, 64, 512)
    for n in (0, 5, 17, 63):  # row n of the embedding order holds patch (i, j, k) = unravel(n) — by hand
        assert torch.equal(flat[:, n], x[_patch_slices(n)].reshape(2, -1))
    # the conv patch embedding numbers its tokens the same way: a conv with a one-hot kernel reads voxel 0 of each patch
    conv = m.patch_embedding.patch_embeddings
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0, 0, 0] = 1.0
        tok = conv(x).flatten(2).transpose(1, 2)[..., 0]
    assert torch.equal(tok, flat[..., 0])


def _state(b: int = 2, seed: int = 0) -> torch.Tensor:
    return supervised_split(torch.rand(b, 64, generator=torch.Generator().manual_seed(seed)), generator=torch.Generator().manual_seed(seed))


def test_thrown_patches_reach_neither_decoder_nor_loss():
    m = _model()
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1])
    st = _state()
    with torch.no_grad():
        out = m(x, st)
        loss, _ = m.loss(x, out, y)
    thrown = int(torch.nonzero(st[0] == THROWN)[0])
    visible = int(torch.nonzero(st[0] == VISIBLE)[0])
    masked = int(torch.nonzero(st[0] == MASKED)[0])

    def perturbed(n: int):
        z = x.clone()
        sl = list(_patch_slices(n))
        sl[0] = 0
        z[tuple(sl)] += 0.7
        with torch.no_grad():
            o = m(z, st)
            return o, m.loss(z, o, y)[0]

    o, l2 = perturbed(thrown)
    assert torch.equal(o.pred, out.pred) and torch.equal(o.logits, out.logits) and float(l2) == float(loss)
    o, l2 = perturbed(visible)  # control: a visible patch is encoded
    assert not torch.allclose(o.pred, out.pred)
    o, l2 = perturbed(masked)  # a masked patch is hidden from the model but is a target of the loss
    assert torch.equal(o.pred, out.pred) and float(l2) != float(loss)


def test_token_counts_through_encoder_and_decoder():
    m = _model()
    seen = {}
    m.blocks[0].register_forward_hook(lambda mod, i, o: seen.__setitem__("enc", i[0].shape[1]))
    m.decoder_blocks[0].register_forward_hook(lambda mod, i, o: seen.__setitem__("dec", i[0].shape[1]))
    with torch.no_grad():
        out = m(torch.rand(2, 1, 32, 32, 32), _state())
    assert seen == {"enc": 1 + 16, "dec": 1 + 16 + 28}  # [CLS] + visible; [CLS] + visible + masked, no thrown
    assert out.pred.shape == (2, 28, 512) and out.logits.shape == (2, 2)
    raises_smart(m, torch.rand(2, 1, 32, 32, 32), torch.zeros(2, 27, dtype=torch.int8), words=["mask state"])
    raises_smart(m, torch.rand(2, 1, 24, 24, 24), _state(), words=["MAE input"])


def test_export_loads_strictly_into_monai_vit(tmp_path):
    m = _model()
    path = m.export(tmp_path / "e.pt", {"method": "msmae"})
    vit = load_vit(path)
    fresh = ViT(**read_vit_export(path)["model"], classification=False)
    x = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        ref = m.blocks(m.patch_embedding(x))  # MONAI MAE encoder on every patch, no [CLS]
        got, _ = vit.eval()(x)
        other, _ = fresh.eval()(x)
    assert torch.allclose(got, ref, atol=1e-6)
    assert not torch.allclose(other, ref, atol=1e-3)  # a no-op load (fresh weights) would fail the line above
    f = load_vit_features(path)
    with torch.no_grad():
        assert torch.allclose(f.encode(x)["cls"], m.encode(x)[0][:, 0], atol=1e-6)
        assert torch.allclose(f.cls_attention(x).view(-1, 4, 4, 4), m.cls_attention(x), atol=1e-6)


def test_export_2d_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SplitMaskedAutoEncoder(img_size=64, patch_size=16, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2,
                               decoder_hidden_size=12, decoder_mlp_dim=24, decoder_num_layers=1, decoder_num_heads=2, spatial_dims=2).eval()
    path = m.export(tmp_path / "e2.pt")
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_vit(path).eval()(x)[0], m.blocks(m.patch_embedding(x)), atol=1e-6)


def test_load_vit_refuses_bad_files(tmp_path):
    m = _model()
    path = m.export(tmp_path / "e.pt")
    blob = read_vit_export(path)
    enc = dict(blob["encoder"])
    enc.pop("norm.weight")
    broken = export_vit(tmp_path / "broken.pt", blob["model"], enc, blob["cls_token"])
    raises_smart(load_vit, broken, words=["broken.pt", "norm.weight"])
    raises_smart(load_vit, path, img_size=64, words=["e.pt", "do not match"])
    torch.save({"weights": 1}, tmp_path / "other.pt")
    raises_smart(load_vit, tmp_path / "other.pt", words=["other.pt", "not a ViT export"])
    raises_smart(export_vit, tmp_path / "x.pt", {"hidden_size": 4}, {}, words=["model arguments"])


# ------------------------------------------------------------------------------ config and pretraining loop
@pytest.mark.parametrize("kw,word", [({"mask_ratio": 0.8, "throw_ratio": 0.3, "method": "msmae"}, "mask split"),
                                     ({"throw_ratio": 0.3}, "throw_ratio"), ({"img_size": 30}, "img_size"),
                                     ({"hidden_size": 40}, "hidden_size"), ({"method": "simmim"}, "method"),
                                     ({"shift": 4}, "shift"), ({"epochs": 0}, "epochs"), ({"spatial_dims": 4}, "spatial_dims")])
def test_bad_config_is_one_line(kw, word):
    raises_smart(MAEConfig, **kw, words=[word])


def test_presets():
    c = mae_config("cpu", "msmae")
    assert (c.mask_ratio, c.throw_ratio, c.method) == (0.45, 0.30, "msmae")
    assert mae_config("cpu").mask_ratio == 0.75 and mae_config("paper").hidden_size == 768
    raises_smart(mae_config, "gpu", words=["preset"])
    raises_smart(mae_config, "cpu", "mae", lr_typo=1, words=["lr_typo"])


def _data(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 32, 32, 32, generator=g) * 0.3
    y = np.arange(n) % 2
    return x, y


def test_pretrain_mae_bad_inputs_write_nothing(tmp_path):
    x, y = _data()
    cfg = MAEConfig(**TINY_CFG)
    out = tmp_path / "run"
    raises_smart(pretrain_mae, x[:, :, :16], cfg, out, words=["images of shape"])
    raises_smart(pretrain_mae, x + 1.0, cfg, out, words=["[0, 1]"])
    raises_smart(pretrain_mae, x, cfg, out, labels=y, words=["labels", "msmae"])
    msmae = MAEConfig(**TINY_CFG, method="msmae", mask_ratio=0.45, throw_ratio=0.3)
    raises_smart(pretrain_mae, x, msmae, out, words=["needs labels"])
    raises_smart(pretrain_mae, x, msmae, out, labels=np.zeros(8, int), words=["two classes"])
    (tmp_path / "file").write_text("x")
    raises_smart(pretrain_mae, x, cfg, tmp_path / "file", words=["not a folder"])
    assert not out.exists()


def test_pretrain_mae_reuses_resumes_exactly_and_refuses_other_runs(tmp_path):
    x, _ = _data()
    cfg = MAEConfig(**TINY_CFG)
    full = pretrain_mae(x, cfg, tmp_path / "full", log=lambda s: None)
    assert full.is_file() and json.loads((tmp_path / "full" / "summary.json").read_text())["complete"]
    mtime = full.stat().st_mtime_ns
    assert pretrain_mae(x, cfg, tmp_path / "full", log=lambda s: None) == full and full.stat().st_mtime_ns == mtime  # reused
    # interrupted after 3 of 6 steps, then resumed: the same weights as the uninterrupted run
    part = MAEConfig(**{**TINY_CFG, "max_steps": 3})
    pretrain_mae(x, part, tmp_path / "res", log=lambda s: None)
    assert not json.loads((tmp_path / "res" / "summary.json").read_text())["complete"]
    with open(tmp_path / "res" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "epo')  # a line cut short by a kill
    res = pretrain_mae(x, cfg, tmp_path / "res", log=lambda s: None)
    a, b = read_vit_export(full)["encoder"], read_vit_export(res)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "res" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(6))
    raises_smart(pretrain_mae, x, MAEConfig(**{**TINY_CFG, "lr": 5e-4}), tmp_path / "full", words=["another configuration"])
    raises_smart(pretrain_mae, x * 0.5, cfg, tmp_path / "full", words=["another configuration or data"])


def test_msmae_schedule_random_then_attention(tmp_path):
    x, y = _data()
    cfg = MAEConfig(**{**TINY_CFG, "epochs": 5}, method="msmae", mask_ratio=0.45, throw_ratio=0.3, random_fraction=0.4,
                    refresh_fraction=0.4)
    pretrain_mae(x, cfg, tmp_path / "m", labels=y, log=lambda s: None)
    rows = [json.loads(ln) for ln in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    phases = {r["epoch"]: r["phase"] for r in rows}
    assert phases == {0: "random", 1: "random", 2: "attention", 3: "attention", 4: "attention"}  # 2 of 5 epochs random
    assert all(r["visible"] == 0.25 for r in rows) and all("ce" in r for r in rows)
    assert read_vit_export(tmp_path / "m" / "encoder.pt")["meta"]["n_classes"] == 2


def test_positive_control_the_classifier_trained_alongside_learns_a_planted_label(tmp_path):
    """Class 1 images are brighter everywhere, so any 25 % of the patches shows the label: MSMAE's [CLS]
    classifier, trained on the visible patches alongside the reconstruction, must learn it (cross-entropy
    far below ln 2); with shuffled labels (negative control) it cannot."""
    n = 32
    g = torch.Generator().manual_seed(0)
    y = np.arange(n) % 2
    v = torch.rand(n, generator=g) * 0.5 + torch.as_tensor(y) * 0.4
    x = (v[:, None, None, None, None] + 0.02 * torch.rand(n, 1, 32, 32, 32, generator=g)).clamp(0, 1)
    cfg = MAEConfig(**{**TINY_CFG, "epochs": 12, "batch_size": 8, "shift": 0, "ckpt_every": 1000}, method="msmae",
                    mask_ratio=0.45, throw_ratio=0.3)
    ce = {}
    for name, lab in (("planted", y), ("shuffled", np.random.default_rng(0).permutation(y))):
        pretrain_mae(x, cfg, tmp_path / name, labels=lab, log=lambda s: None)
        rows = [json.loads(ln) for ln in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        ce[name] = float(np.mean([r["ce"] for r in rows[-6:]]))
    assert ce["planted"] < 0.3 < 0.6 < ce["shuffled"], ce
