"""Multi-label training and statistics, 2-D localisation scoring, the label-token study end to end, and its CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import mw_auc, raises_smart

from smartlib.downstream import attention
from smartlib.downstream.multilabel import (auroc_table, label_aucs, masked_bce, mean_auroc, paired_label_comparisons,
                                            pos_weights, val_score)


# ------------------------------------------------------------------------------------------------ loss and scores
def test_pos_weights_and_masked_bce_by_hand():
    y = np.array([[1, 0, np.nan], [0, 0, 1], [0, 1, 1], [0, np.nan, 0]])
    assert pos_weights(y).tolist() == [3.0, 2.0, 0.5]  # n_neg / n_pos of the known labels
    assert pos_weights(np.zeros((3, 1))).tolist() == [1.0]  # no positive: nothing to balance
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.0, 1.0, -3.0]])
    yt = torch.tensor([[1.0, 0.0, float("nan")], [0.0, 1.0, 1.0]])
    pw = torch.tensor([3.0, 1.0, 0.5])

    def term(z, t, w):  # −[w·t·log σ(z) + (1 − t)·log(1 − σ(z))]
        s = 1 / (1 + math.exp(-z))
        return -(w * t * math.log(s) + (1 - t) * math.log(1 - s))

    want = (term(2, 1, 3) + term(-1, 0, 1) + term(0, 0, 3) + term(1, 1, 1) + term(-3, 1, 0.5)) / 5
    assert float(masked_bce(logits, yt, pw)) == pytest.approx(want, rel=1e-6)


def test_label_aucs_and_val_score():
    rng = np.random.default_rng(0)
    y = np.stack([rng.integers(0, 2, 40), np.zeros(40)], axis=1).astype(float)
    y[:3, 0] = np.nan
    s = rng.random((40, 2))
    a = label_aucs(y, s)
    known = ~np.isnan(y[:, 0])
    assert a[0] == pytest.approx(mw_auc(y[known, 0], s[known, 0])) and np.isnan(a[1])
    assert val_score(y, s) == (pytest.approx(a[0]), "mean_auroc")
    score, name = val_score(np.zeros((4, 2)), np.full((4, 2), 0.25))
    assert name == "neg_bce" and score == pytest.approx(math.log(0.75))


def _long(seed=0, n=30, seeds=(0, 1), shift=1.0):
    """Two heads × two labels; 'gone' has no positive test case."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    rows = []
    for head, sig in (("label-tokens", shift), ("cls", 0.0)):
        for s in seeds:
            noise = rng.standard_normal(n)
            for c in range(n):
                rows.append({"init": "scratch", "head": head, "seed": s, "label": "seen", "case": c, "y": y[c],
                             "score": float(sig * y[c] + noise[c])})
                rows.append({"init": "scratch", "head": head, "seed": s, "label": "gone", "case": c, "y": 0.0,
                             "score": float(noise[c])})
    return pd.DataFrame(rows)


def test_undefined_auroc_is_reported_not_a_crash():
    long = _long()
    t = auroc_table(long, n_boot=200)
    gone = t[t["label"] == "gone"]
    assert gone["auc"].isna().all() and (gone["note"] == "undefined: no positive test case").all()
    seen = t[(t["label"] == "seen") & (t["head"] == "label-tokens")].iloc[0]
    sub = long[(long["label"] == "seen") & (long["head"] == "label-tokens")]
    per_seed = [mw_auc(g["y"].to_numpy(), g["score"].to_numpy()) for _, g in sub.groupby("seed")]
    assert seen["auc"] == pytest.approx(np.mean(per_seed)) and seen["auc_lo"] <= seen["auc"] <= seen["auc_hi"]
    assert seen["n_seeds"] == 2 and seen["n_cases"] == 30 and seen["note"] == ""


def test_mean_auroc_averages_the_defined_labels():
    long = _long()
    m = mean_auroc(long, n_boot=200)
    row = m[m["head"] == "label-tokens"].iloc[0]
    sub = long[(long["label"] == "seen") & (long["head"] == "label-tokens")]
    want = np.mean([mw_auc(g["y"].to_numpy(), g["score"].to_numpy()) for _, g in sub.groupby("seed")])
    assert row["mean_auroc"] == pytest.approx(want) and row["n_labels"] == 1  # 'gone' cannot be averaged
    assert row["lo"] <= row["mean_auroc"] <= row["hi"] and row["n_cases"] == 30


def test_paired_comparisons_find_a_planted_difference_and_holm_adjust():
    from smartlib.downstream.stats import holm

    long = pd.concat([_long(shift=2.5), _long(seed=1, shift=2.5).assign(init="mae")], ignore_index=True)
    c = paired_label_comparisons(long, "head", "cls", ["init"], n_boot=500)
    assert list(c["label"]) == ["seen", "seen"] and set(c["init"]) == {"scratch", "mae"}  # 'gone' skipped
    assert (c["diff"] > 0).all() and (c["verdict"] == "higher").all()
    assert np.allclose(c["p_holm"], holm(c["p"].to_numpy()))
    null = paired_label_comparisons(_long(shift=0.0), "head", "cls", ["init"], n_boot=500)
    assert null["verdict"].iloc[0] == "no detectable difference"


def test_pixel_probe_learns_a_planted_linear_signal():
    """Positive control of the control: a brightness difference in one corner is learned (AUROC ≥ 0.9); a label that
    is noise is not."""
    from smartlib.downstream.multilabel import MultiLabelData, pixel_probe

    rng = np.random.default_rng(0)
    n = 90
    y = np.stack([rng.integers(0, 2, n), rng.integers(0, 2, n)], axis=1).astype(float)
    x = 0.5 + 0.1 * rng.standard_normal((n, 1, 8, 8))
    x[:, 0, :3, :3] += 0.3 * y[:, :1, None]
    split = {"train": np.arange(50), "val": np.arange(50, 65), "test": np.arange(65, n)}
    ds = MultiLabelData("planted", 2, torch.tensor(x, dtype=torch.float32), y, ("corner", "noise"), [str(i) for i in range(n)],
                        split, None, False, {}, None)
    a = label_aucs(y[split["test"]], pixel_probe(ds))
    assert a[0] >= 0.9 and a[1] < 0.9


# ------------------------------------------------------------------------------------------------ 2-D localisation
def test_two_dimensional_localisation_by_hand():
    mask = torch.zeros(2, 8, 8)
    mask[:, 4:8, 0:4] = 1  # lower-left quadrant: unit (1, 0) of a 2 × 2 grid with 4-pixel units
    hot = torch.zeros(2, 2, 2)
    hot[0, 1, 0] = 1.0
    hot[1, 0, 1] = 1.0
    r = attention.score_maps(hot, mask, unit=4)
    assert r["attn_vox"].shape == (2, 8, 8)
    assert r["hit"].tolist() == [1.0, 0.0]
    assert r["mass"][0] > 0.5 > r["mass"][1]
    uni = attention.baseline_maps(2, 2, spatial_dims=2)["uniform"]
    assert uni.shape == (2, 2, 2)
    ru = attention.score_maps(uni, mask, unit=4)
    assert torch.allclose(ru["mass"], torch.full((2,), 0.25))  # the mask's share of the image
    assert torch.allclose(ru["hit"], attention.chance_hit_rate(mask, 2, 4))
    cp = attention.centre_prior(4, spatial_dims=2)
    assert cp.shape == (4, 4) and float(cp.sum()) == pytest.approx(1.0) and cp[1, 1] == cp.max()
    raises_smart(attention.centre_prior, 4, spatial_dims=4, words=["spatial_dims"])
    raises_smart(attention.pointing_game, hot, mask[:, :6], unit=4, words=["mask shape"])


# ------------------------------------------------------------------------------------------------ study and CLI
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """One small built-in findings set (20 cases) shared by the study and CLI tests."""
    return tmp_path_factory.mktemp("runs")


def test_study_end_to_end_at_smoke(tmp_path, smoke_runs):
    from smartlib.downstream.label_tokens import label_token_study

    res = label_token_study(["scratch"], dims=2, preset="smoke", runs_dir=smoke_runs, out=tmp_path / "out", seeds=[0, 1],
                            epochs=1, n_boot=50, n=20)
    for name in ("runs.csv", "predictions.csv", "auroc.csv", "mean_auroc.csv", "head_comparisons.csv", "localisation.csv",
                 "localisation_cases.csv", "localisation_comparisons.csv", "curves.csv", "summary.json"):
        assert (tmp_path / "out" / name).is_file(), name
    js = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert js["dims"] == 2 and js["labels"] == ["effusion", "nodule", "mass", "pneumothorax", "consolidation", "cardiomegaly"]
    auroc = res["auroc"]
    assert set(auroc["head"]) == {"label-tokens", "cls", "linear probe"} and len(auroc) == 18  # + the pixel control
    undefined = auroc[auroc["auc"].isna()]
    assert (undefined["note"].str.startswith("undefined")).all()
    loc = res["localisation"]
    assert set(loc["method"]) == {"label tokens", "Grad-CAM", "Grad-CAM++", "centre prior", "uniform"}
    uni = loc[(loc["method"] == "uniform") & (loc["label"] == "all")].iloc[0]
    assert uni["mass_lift"] == pytest.approx(1.0) and uni["hit_rate"] == pytest.approx(uni["chance_hit"])
    assert set(res["gallery"]["maps"]) == {"label tokens", "Grad-CAM", "Grad-CAM++"}


def test_study_refuses_bad_arguments_before_training(tmp_path):
    from smartlib.downstream.label_tokens import label_token_study

    kw = dict(preset="smoke", runs_dir=tmp_path, epochs=1)
    raises_smart(label_token_study, ["scratch"], heads=["gap"], words=["heads", "label-tokens"], **kw)
    raises_smart(label_token_study, ["scratch"], dims=2, backbone="swin", words=["swin"], **kw)
    raises_smart(label_token_study, ["scratch"], cams=["LRP"], words=["cams"], **kw)
    raises_smart(label_token_study, [str(tmp_path / "none.pt")], dims=3, words=["none.pt", "not found"], **kw)
    raises_smart(label_token_study, ["scratch"], labels=["effusion", "hernia"], words=["'hernia' is not one"], **kw)
    assert not (tmp_path / "data").exists()  # nothing generated for the checks that come before the data


def test_strict_vit_init_loading(tmp_path):
    """An exported ViT is loaded into the study's model with its weights; a file that does not fit is refused."""
    from smartlib.downstream.label_tokens import VIT_ARCH, build_model
    from smartlib.models.vit import VIT_ARGS, export_vit

    torch.manual_seed(3)
    from monai.networks.nets import ViT

    args = dict(in_channels=1, img_size=64, proj_type="conv", pos_embed_type="sincos", spatial_dims=2, qkv_bias=True,
                **VIT_ARCH["smoke"])
    vit = ViT(**args, classification=False)
    path = export_vit(tmp_path / "vit.pt", {k: args[k] for k in VIT_ARGS}, vit.state_dict())
    m = build_model("vit", "label-tokens", str(path), 6, "smoke", 2, 64, seed=0)
    scratch = build_model("vit", "label-tokens", "scratch", 6, "smoke", 2, 64, seed=0)
    w = "blocks.0.attn.qkv.weight"
    assert torch.equal(m.vit.state_dict()[w], vit.state_dict()[w])  # a no-op load would keep other weights
    assert not torch.equal(scratch.vit.state_dict()[w], vit.state_dict()[w])
    bad = dict(vit.state_dict())
    bad.pop(w)
    export_vit(tmp_path / "bad.pt", {k: args[k] for k in VIT_ARGS}, bad)
    raises_smart(build_model, "vit", "cls", str(tmp_path / "bad.pt"), 6, "smoke", 2, 64, words=["bad.pt", "do not match"])
    raises_smart(build_model, "vit", "cls", str(path), 6, "smoke", 2, 32, words=["vit.pt", "other images"])


def _cli(argv, capsys):
    from smartlib.cli import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, [ln for ln in cap.err.strip().splitlines() if ln.startswith("error")], cap.out


FT = ["finetune", "--task", "findings", "--init", "scratch", "--preset", "smoke"]


def test_cli_findings_writes_results(tmp_path, capsys, smoke_runs):
    out = tmp_path / "out"
    rc, err, stdout = _cli([*FT, "--out", str(out), "--epochs", "1", "--head", "both", "--n-boot", "20", "--n", "20",
                            "--runs-dir", str(smoke_runs)], capsys)
    assert rc == 0 and not err
    assert "mean AUROC" in stdout and (out / "summary.json").is_file() and (out / "auroc.csv").is_file()


@pytest.mark.parametrize("extra,words", [
    (["--dims", "4"], ["--dims", "invalid choice"]),
    (["--head", "gap"], ["--head", "invalid choice"]),
    (["--policy", "U-Maybe"], ["--policy", "invalid choice"]),
    (["--label-fraction", "0.5"], ["--label-fraction", "all its training labels"]),
    (["--labels", "effusion,hernia"], ["hernia"]),
    (["--dims", "2", "--backbone", "swin"], ["swin"]),
])
def test_cli_findings_bad_input_is_one_line(tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    rc, err, _ = _cli([*FT, "--out", str(out), "--runs-dir", str(tmp_path / "runs"), *extra], capsys)
    assert rc == 2 and len(err) == 1 and all(w in err[0] for w in words), err
    assert not out.exists()


def test_cli_findings_bad_chexpert_label_names_the_file(tmp_path, capsys):
    import csv

    base = tmp_path / "CheXpert-v1.0-small"
    base.mkdir()
    from smartlib.data.cxr import CHEXPERT_LABELS

    for name in ("train.csv", "valid.csv"):
        with open(base / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Path", "Frontal/Lateral", *CHEXPERT_LABELS])
            w.writerow(["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Frontal",
                        *(["x"] if name == "train.csv" else ["1"]), *[""] * (len(CHEXPERT_LABELS) - 1)])
    out = tmp_path / "out"
    rc, err, _ = _cli([*FT, "--out", str(out), "--data", str(base), "--labels", "No Finding"], capsys)
    assert rc == 2 and len(err) == 1 and "train.csv line 2" in err[0] and "'x'" in err[0]
    assert not out.exists()


def test_wide_tables_and_figures():
    from smartlib.downstream.label_tokens import auroc_wide, localisation_wide
    from smartlib.plots import label_tokens as lplots

    auroc = auroc_table(_long(), n_boot=50)
    wide = auroc_wide(auroc)
    assert list(wide.index) == ["seen", "gone"] and list(wide.columns) == ["scratch / label-tokens", "scratch / cls"]
    assert wide.loc["gone", "scratch / cls"] == "undefined: no positive test case"
    assert wide.loc["seen", "scratch / cls"].startswith(f"{auroc.iloc[2]['auc']:.3f} [")
    loc = pd.DataFrame([{"init": "scratch", "method": m, "label": "all", "n_seeds": 2, "n_cases": 5, "mass": 0.1,
                         "mass_lift": lift, "hit_rate": hit, "chance_hit": 0.2, "mask_share": 0.1}
                        for m, lift, hit in (("label tokens", 1.5, 0.6), ("Grad-CAM", 1.1, 0.4))])
    lw = localisation_wide(loc)
    assert lw.loc["label tokens", "scratch: hit"] == 0.6 and lw.loc["Grad-CAM", "scratch: n"] == "2 × 5"
    assert len(lplots.auroc_by_label(auroc).axes) == 1
    assert len(lplots.localisation_by_method(loc).axes) == 2
    curves = pd.DataFrame([{"init": "scratch", "head": h, "seed": 0, "epoch": e, "train_loss": 1.0 / e, "val_score": 0.5}
                           for h in ("label-tokens", "cls") for e in (1, 2)])
    assert len(lplots.training_curves(curves).axes) == 2
    img, mask = np.random.rand(2, 16, 16), np.zeros((2, 16, 16), bool)
    mask[:, 4:8, 4:8] = True
    g = {"labels": ["a", "b"], "images": img, "masks": mask, "maps": {"label tokens": np.random.rand(2, 4, 4)}}
    assert len(lplots.map_gallery(g).axes) == 4
    vol = np.random.rand(1, 8, 8, 8)
    vm = np.zeros((1, 8, 8, 8), bool)
    vm[0, 2:4, 2:4, 2:4] = True
    assert len(lplots.map_gallery({"labels": ["c"], "images": vol, "masks": vm, "maps": {"Grad-CAM": np.random.rand(1, 2, 2, 2)}}).axes) == 2
    assert len(lplots.findings_examples(img, mask[:, None], np.ones((2, 1)), ["a"]).axes) == 2
    import matplotlib.pyplot as plt

    plt.close("all")


def test_small_functions_refuse_bad_arguments(tmp_path):
    from smartlib.data.cxr import parse_label_value
    from smartlib.downstream.label_tokens import build_model, cam_maps
    from smartlib.downstream.multilabel import fit_multilabel, load_multilabel, predict
    from smartlib.models.label_tokens import ClsViT

    assert parse_label_value(" -1.0", "U-Zeros", "x") == 0.0 and parse_label_value("", "ignore", "x") == 0.0
    assert math.isnan(parse_label_value("-1", "ignore", "x"))
    raises_smart(parse_label_value, "0.5", "U-Ones", "f.csv line 3", words=["f.csv line 3", "'0.5'"])
    raises_smart(load_multilabel, None, 4, "smoke", tmp_path, words=["dims=4"])
    m = build_model("vit", "cls", "scratch", 2, "smoke", 2, 32, seed=0)
    assert isinstance(m, ClsViT)
    x = torch.rand(4, 1, 32, 32)
    raises_smart(fit_multilabel, m, m, x, np.zeros((4, 2)), None, None, epochs=0, words=["epochs"])
    raises_smart(cam_maps, m, x, 0, "LRP", words=["Grad-CAM"])
    assert cam_maps(m, x, 1, "Grad-CAM++").shape == (4, 4, 4)
    p = predict(m, m, x, batch_size=3)
    assert p.shape == (4, 2) and ((p > 0) & (p < 1)).all()
    raises_smart(build_model, "vit", "gap", "scratch", 2, "smoke", 2, 32, words=["head"])
    raises_smart(build_model, "cnn", "cls", "scratch", 2, "smoke", 2, 32, words=["backbone"])
    raises_smart(build_model, "swin", "cls", "scratch", 2, "smoke", 2, 32, words=["dims=3"])
