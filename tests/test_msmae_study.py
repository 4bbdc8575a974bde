"""The supervised-masking study: token-dropping fine-tuning, lesion masking rates, ViT exports as downstream inits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import raises_smart
from smartlib.downstream import msmae
from smartlib.downstream.classify import ClassData
from smartlib.models.mae import SplitMaskedAutoEncoder
from smartlib.models.vit import load_vit_features, read_vit_export


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit")
    out = {}
    for i, name in enumerate(("mae", "msmae")):
        torch.manual_seed(i)
        m = SplitMaskedAutoEncoder(img_size=32, patch_size=8, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2,
                                   decoder_hidden_size=12, decoder_mlp_dim=24, decoder_num_layers=1, decoder_num_heads=2,
                                   n_classes=2 if name == "msmae" else 0)
        out[name] = str(m.export(root / f"{name}.pt", {"method": name}))
    return out


def _dataset(n: int = 24) -> ClassData:
    g = torch.Generator().manual_seed(0)
    y = np.arange(n) % 2
    x = (torch.rand(n, 1, 32, 32, 32, generator=g) * 0.5 + torch.as_tensor(y)[:, None, None, None, None] * 0.3).clamp(0, 1)
    split = {"train": np.arange(0, 12), "val": np.arange(12, 16), "test": np.arange(16, n)}
    return ClassData(task="nodules", source="synthetic", images=x, labels=y, patients=[f"p{i}" for i in range(n)], split=split,
                     n_classes=2, phantom=False, prep={"roi": 32, "spacing": 2.0})


def _token_counts(net):
    seen = {"train": set(), "eval": set()}
    net.vit.blocks[0].register_forward_hook(
        lambda mod, i, o: seen["train" if mod.training else "eval"].add(i[0].shape[1]))
    return seen


def test_token_dropping_trains_on_a_quarter_and_evaluates_on_all_tokens(exports):
    ds = _dataset()
    net = load_vit_features(exports["msmae"])
    seen = _token_counts(net)
    tr, te = ds.split["train"], ds.split["test"]
    ft = msmae.finetune_tokens(net, ds.images[tr], ds.labels[tr], ds.images[te], 2, drop=True, epochs=2, batch_size=4)
    assert seen["train"] == {1 + 16} and seen["eval"] == {1 + 64}  # [CLS] + 25 % of 64 patches; [CLS] + all
    assert ft.probs.shape == (len(te), 2) and len(ft.step_s) == 6 and ft.refresh_s > 0

    net2 = load_vit_features(exports["msmae"])
    seen2 = _token_counts(net2)
    ft2 = msmae.finetune_tokens(net2, ds.images[tr], ds.labels[tr], ds.images[te], 2, drop=False, epochs=2, batch_size=4)
    assert seen2["train"] == {1 + 64} and ft2.refresh_s == 0
    assert not np.allclose(ft.probs, ft2.probs)  # dropping tokens changes what is learned


def test_attention_maps_refresh_on_schedule(exports, monkeypatch):
    ds = _dataset()
    net = load_vit_features(exports["msmae"])
    calls = []
    orig = net.cls_attention
    monkeypatch.setattr(net, "cls_attention", lambda x, **kw: calls.append(len(calls)) or orig(x, **kw))
    tr = ds.split["train"]
    msmae.finetune_tokens(net, ds.images[tr], ds.labels[tr], ds.images[tr[:2]], 2, epochs=4, batch_size=6, refresh_fraction=0.5)
    assert len(calls) == 2  # epochs 1 and 3: every 2 of 4 epochs, from the start


def test_finetune_tokens_refuses_a_vit_without_cls(exports, tmp_path):
    from smartlib.models.vit import export_vit, read_vit_export

    blob = read_vit_export(exports["mae"])
    path = export_vit(tmp_path / "nocls.pt", blob["model"], blob["encoder"], None)
    ds = _dataset()
    raises_smart(msmae.finetune_tokens, load_vit_features(path), ds.images[:4], ds.labels[:4], ds.images[:2], 2, words=["[CLS]"])
    raises_smart(msmae.finetune_tokens, load_vit_features(exports["msmae"]), ds.images[:4], ds.labels[:4], ds.images[:2], 2,
                 epochs=0, words=["epochs"])


def test_lesion_masking_follows_the_attention():
    b, n = 30, 64
    lesion = torch.zeros(b, n, dtype=torch.bool)
    lesion[:, 3] = lesion[:, 4] = True
    attn = torch.full((b, n), 0.05)
    attn[:, 3:5] = 1.0
    t = msmae.lesion_masking(attn, lesion, draws=10, n_boot=200).set_index(["rule", "state"])
    assert t.loc[("MSMAE (supervised attention)", "masked"), "share"] > 0.9  # nominal 28 / 64
    assert t.loc[("MSMAE (supervised attention)", "visible"), "share"] < 0.05
    assert abs(t.loc[("MAE (random)", "masked"), "share"] - 0.75) < 0.1
    assert t.loc[("MSMAE (supervised attention)", "masked"), "nominal"] == 28 / 64
    flat = msmae.lesion_masking(torch.ones(b, n), lesion, draws=10, n_boot=200).set_index(["rule", "state"])
    assert abs(flat.loc[("MSMAE (supervised attention)", "masked"), "share"] - 28 / 64) < 0.12  # uniform attention: chance
    raises_smart(msmae.lesion_masking, attn, torch.zeros(b, n, dtype=torch.bool), words=["no case"])
    raises_smart(msmae.lesion_masking, attn[:, :27], lesion, words=["(30, 27)", "same grid"])


def test_lesion_patches_by_hand():
    m = torch.zeros(1, 32, 32, 32)
    m[0, 9, 0, 31] = 1  # patch (1, 0, 3) of a 4³ grid of 8³ patches → index 16 + 0 + 3
    assert torch.nonzero(msmae.lesion_patches(m, 8)[0]).flatten().tolist() == [19]


def test_vit_exports_are_downstream_inits(exports, tmp_path):
    from smartlib.downstream.classify import finetune
    from smartlib.downstream.features import extract_features, init_arch, load_init, resolve_init

    assert resolve_init(exports["msmae"], "smoke", tmp_path) == exports["msmae"]
    assert init_arch(exports["msmae"], "smoke")["arch"] == "monai_vit"
    net = load_init(exports["msmae"], "smoke", 32)
    assert net.token_dim == net.pool_dim == 24
    ds = _dataset()
    f = extract_features(net, ds.images[:5])
    assert f["cls"].shape == (5, 24) and f["pooled"].shape == (5, 24)
    ft = finetune(net, ds.images[:8], ds.labels[:8], ds.images[8:12], 2, epochs=1, batch_size=4)
    assert ft.probs.shape == (4, 2)
    raises_smart(load_init, exports["msmae"], "smoke", 64, words=["32-voxel", "64-voxel"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    raises_smart(resolve_init, str(tmp_path / "junk.pt"), "smoke", tmp_path, words=["junk.pt"])


def test_token_drop_study_scores_compares_and_counts(exports, tmp_path):
    ds = _dataset()
    out = tmp_path / "td"
    res = msmae.token_drop_study(exports, ds, out=out, seeds=[0], epochs=1, batch_size=4, n_boot=50, log=lambda s: None)
    assert set(res["runs"]["init"]) == {"msmae, all tokens", "msmae, token dropping"}  # plain MAE is timed and counted only
    cost = res["cost"].set_index("arm")
    assert list(cost.index) == ["mae, all tokens", "msmae, all tokens", "msmae, token dropping"]
    assert np.isnan(cost.loc["mae, all tokens", "finetune_step_ms_median"])
    assert cost.loc["msmae, token dropping", "tokens"] == 17 and cost.loc["mae, all tokens", "tokens"] == 65
    assert cost.loc["msmae, token dropping", "train_gflops"] < 0.65 * cost.loc["mae, all tokens", "train_gflops"]  # patch embedding: all 64
    assert cost.loc["msmae, token dropping", "infer_gflops"] == cost.loc["mae, all tokens", "infer_gflops"]
    comps = pd.read_csv(out / "comparisons.csv")
    assert len(comps) == 1 and set(comps["test"]) == {"delong"} and comps["p_holm"].notna().all()
    assert (comps.iloc[0]["arm"], comps.iloc[0]["reference"]) == ("msmae, token dropping", "msmae, all tokens")
    for name in ("runs.csv", "predictions.csv", "curves.csv", "summary.csv", "cost.csv"):
        assert (out / name).is_file()
    red = msmae.reductions(res["cost"], [])
    assert list(red["what"])[:3] == ["training FLOPs per step (forward + backward)", "training step wall time",
                                     "inference wall time per sample"]
    assert red["reduction"].iloc[0] == pytest.approx(1 - cost.loc["msmae, token dropping", "train_gflops"]
                                                     / cost.loc["mae, all tokens", "train_gflops"])
    raises_smart(msmae.token_drop_study, {"mae": exports["mae"]}, ds, words=["msmae"])
    raises_smart(msmae.reductions, res["cost"].iloc[1:], [], words=["mae, all tokens"])
    (tmp_path / "bad.pt").write_bytes(b"x")
    raises_smart(msmae.token_drop_study, {"msmae": str(tmp_path / "bad.pt")}, ds, out=tmp_path / "none", words=["bad.pt"])
    assert not (tmp_path / "none").exists()


def test_step_flops_by_hand(exports):
    from smartlib.flops import vit_forward_flops

    net = load_vit_features(exports["msmae"])
    x = torch.rand(2, 1, 32, 32, 32)
    all_t = msmae.step_flops(net, x, 2, None)
    fwd = vit_forward_flops(65, 24, 48, 1, 64, 512, 1, 2)
    assert all_t["infer_gflops"] == pytest.approx(fwd / 1e9)
    assert all_t["train_gflops"] == pytest.approx((3 * fwd - 2 * 64 * 512 * 24) / 1e9)  # no gradient for the input image


def test_paired_table_uses_the_chapter_pairs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    rows = []
    for init in ("scratch", "mae", "msmae"):
        for s in (0, 1):
            p = rng.random(40) * 0.5 + (0.4 * y if init == "msmae" else 0)
            rows += [{"init": init, "mode": "finetune", "fraction": 1.0, "seed": s, "case": k, "label": int(y[k]), "p0": 1 - p[k],
                      "p1": p[k]} for k in range(40)]
    pd.DataFrame(rows).to_csv(tmp_path / "predictions.csv", index=False)
    t = msmae.paired_table(tmp_path / "predictions.csv", n_boot=200)
    pairs = set(zip(t["arm"], t["reference"]))
    assert pairs == {("msmae", "mae"), ("mae", "scratch"), ("msmae", "scratch")}  # pairs whose arms are absent are left out
    row = t[(t["arm"] == "msmae") & (t["reference"] == "mae")].iloc[0]
    assert row["verdict"] == "higher" and row["test"] == "paired bootstrap" and row["n_seeds"] == 2


def test_summary_reaches_the_headline_page(exports, tmp_path):
    from smartlib.downstream.results import comparison_table, headline_table
    from smartlib.flops import token_drop_flops

    ds = _dataset()
    td = msmae.token_drop_study(exports, ds, seeds=[0], epochs=1, batch_size=4, n_boot=50, log=lambda s: None)
    cls = {"preset": "smoke", "phantom": True, "source": "synthetic",
           "summary": [{"init": "msmae", "mode": "finetune", "fraction": 1.0, "auc_mean": 0.61, "auc_lo": 0.5, "auc_hi": 0.7,
                        "auc_sd": 0.02, "auc_se": 0.05, "n_seeds": 3, "n_cases": 8},
                       {"init": "msmae", "mode": "probe", "fraction": 1.0, "auc_mean": 0.55, "auc_lo": 0.4, "auc_hi": 0.7,
                        "auc_sd": 0.01, "auc_se": 0.05, "n_seeds": 3, "n_cases": 8}]}
    comps = pd.DataFrame([{"mode": "finetune", "fraction": 1.0, "arm": "msmae", "reference": "mae", "metric": "auc",
                           "test": "paired bootstrap", "n_seeds": 3, "n_cases": 8, "diff": 0.01, "lo": -0.1, "hi": 0.12,
                           "p_holm": 0.8, "verdict": "no detectable difference"}])
    flops = token_drop_flops(96, 16, count=False)  # the hand counts stand in for the counted ones
    red = msmae.reductions(td["cost"], [{**r, "fwd_saving_counted": r.get("fwd_saving")} for r in flops])
    out = tmp_path / "10_supervised_masking"
    msmae.write_summary(out, classification=cls, comparisons=comps, lesions=pd.DataFrame([{"rule": "r", "state": "masked"}]),
                        token_drop=td, flops=flops, reduction=red)
    head = headline_table(tmp_path)
    rows = head[head["task"] == "supervised masking"]
    assert list(rows[rows["metric"].str.startswith("nodule AUC")]["init"]) == ["msmae"]  # fine-tune rows only
    saved = rows[rows["metric"] == "token dropping: training FLOPs saved"].iloc[0]
    assert saved["published"] == "74.08 %" and saved["measured"].startswith(f"{100 * red['reduction'].iloc[0]:.1f} %")
    assert (rows["metric"] == "token dropping: training forward FLOPs saved, ViT-B/16 at 96³, counted").any()
    ct = comparison_table(tmp_path)
    assert list(ct[ct["task"] == "supervised masking"]["arm"]) == ["msmae"]


def test_time_side_by_side_times_every_arm(exports):
    ds = _dataset()
    net = load_vit_features(exports["msmae"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = _token_counts(net)  # the hook travels with the copies that are timed
    t = msmae.time_side_by_side({"all": (net, False), "drop": (net, True)}, ds.images[:8], ds.labels[:8], 2, batch_size=4, repeats=2)
    assert set(t) == {"all", "drop"} and all(v["step_ms"] > 0 and v["infer_ms_per_sample"] > 0 and v["rounds"] == 2 for v in t.values())
    assert seen == {"train": {1 + 64, 1 + 16}, "eval": {1 + 64}}  # the dropping arm trains on 16 patches, evaluates on all
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # timed on copies: the encoder is untouched
    raises_smart(msmae.time_side_by_side, {"all": (net, False)}, ds.images[:4], ds.labels[:4], 2, repeats=0, words=["repeats"])


def test_pretrain_arms_and_their_table(tmp_path):
    from smartlib.mae import pretrained_mae

    ds = _dataset()
    enc = msmae.pretrain_arms("smoke", tmp_path, ds, log=lambda s: None)
    assert set(enc) == {"mae", "msmae"} and all(str(tmp_path / "pretrain") in p for p in enc.values())
    t = msmae.pretraining_table(enc).set_index("run")
    assert t.loc["mae", "steps"] == t.loc["msmae", "steps"] == 2 * 2  # 2 epochs of ⌈12 / 8⌉ steps: the same budget
    assert t.loc["mae", "attention_steps"] == 0.0 and t.loc["msmae", "attention_steps"] > 0
    assert np.isnan(t.loc["mae", "ce_last"]) and t.loc["msmae", "ce_last"] > 0
    meta = read_vit_export(enc["msmae"])["meta"]
    assert meta == {"method": "msmae", "n_classes": 2, "steps": 4}
    raises_smart(pretrained_mae, "msmae", "paper", tmp_path / "p", dataset=ds, log=lambda s: None, words=["32³", "64³"])


def test_mask_panels_show_each_rule(exports):
    x = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    p = msmae.mask_panels(x, exports["msmae"])
    assert list(p) == ["MSMAE attention", "MSMAE split", "MAE random mask", "SMART given"]
    assert all(v.shape == (2, 32, 32, 32) for v in p.values())
    split = p["MSMAE split"][:, ::8, ::8, ::8]  # one voxel per patch
    assert sorted(np.unique(split).tolist()) == [0, 1, 2] and (split == 1).sum(axis=(1, 2, 3)).tolist() == [28, 28]
    assert (p["MAE random mask"][:, ::8, ::8, ::8] == 1).sum(axis=(1, 2, 3)).tolist() == [48, 48]
    assert p["SMART given"].mean(axis=(1, 2, 3)).tolist() == [0.75, 0.75]  # ⌈0.7 · 8⌉ = 6 of the 8 units of 16³


def test_load_lesions_matches_the_loaded_cases(tmp_path, labelled_set):
    from smartlib.downstream.classify import load_classification

    ds = load_classification("nodules", labelled_set, "smoke", tmp_path, roi=32)
    m = msmae.load_lesions(ds, [0, 2], labelled_set, "smoke", tmp_path)
    assert m.shape == (2, 32, 32, 32) and m.sum() > 0
    img = ds.images[[0, 2], 0]
    assert float(img[m > 0].mean()) > float(img[m == 0].mean()) + 0.3  # the masks sit on the dense spheres
    ds.images[2] += 0.01
    raises_smart(msmae.load_lesions, ds, [2], labelled_set, "smoke", tmp_path, words=["differs"])


def test_figures():
    from matplotlib.figure import Figure

    from smartlib.plots.masks import lesion_rate_bars, mask_overlays

    imgs = np.random.default_rng(0).random((2, 16, 16, 16))
    les = np.zeros_like(imgs)
    les[:, 6:9, 6:9, 6:9] = 1
    fig = mask_overlays(imgs, les, {"MSMAE attention": imgs, "MSMAE split": (imgs * 3).astype(int).astype(float)}, n_cases=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    t = pd.DataFrame([{"rule": r, "state": s, "share": 0.3, "lo": 0.2, "hi": 0.4, "nominal": 0.25, "n_cases": 5}
                      for r in ("a", "b") for s in ("masked", "thrown", "visible")])
    assert isinstance(lesion_rate_bars(t), Figure)
