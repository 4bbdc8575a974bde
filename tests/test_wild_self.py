"""The wild- vs self-pretraining study: bad input first, reuse of the segmentation chapter's runs, outputs, CLI, headline rows."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import raises_smart

from smartlib.cli import main
from smartlib.downstream.wild_self import reusable_runs, study_pairs, wild_vs_self_study
from smartlib.models.smart import SMARTNet, export_encoder

FAST = {"seeds": [0], "steps": 1, "eval_every": 1, "curve_cases": 1, "n_boot": 20}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Built-in smoke segmentation set and a segmentation-chapter run of scratch under the FAST protocol."""
    from smartlib.downstream.segment import segmentation_study

    root = tmp_path_factory.mktemp("runs")
    segmentation_study(["scratch"], preset="smoke", runs_dir=root, out=root / "05_segmentation", seeds=[0], steps=1,
                       eval_every=1, curve_cases=1, n_boot=20, save_models=True, log=lambda s: None)
    return root


def _vit_export(path):
    torch.manual_seed(0)
    net = SMARTNet(heads=False, arch="vit", img_size=32, vit_layers=12, vit_hidden=48, vit_heads=4, embed_dim=12,
                   semantic_attention=False)
    export_encoder(net, path)
    return str(path)


def test_pairs():
    assert study_pairs(["scratch", "wild", "self", "wild+self"]) == [
        ("wild", "scratch"), ("self", "scratch"), ("wild+self", "scratch"), ("wild", "self"), ("wild+self", "wild")]
    assert ("vit-wild", "vit-scratch") in study_pairs(["vit-scratch", "vit-wild"])
    assert ("wild-global", "wild") in study_pairs(["wild", "wild-global"])


def test_bad_input_fails_before_any_compute(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    vit = _vit_export(tmp_path / "vit.pt")
    raises_smart(wild_vs_self_study, ["wild"], preset="smoke", runs_dir=runs, out=out, encoders={"wild": vit},
                 words=["vit encoder given to a swin arm"])
    raises_smart(wild_vs_self_study, ["tame"], preset="smoke", runs_dir=runs, out=out, words=["arm 'tame'"])
    raises_smart(wild_vs_self_study, ["scratch"], preset="smoke", runs_dir=runs, out=out, encoders={"scratch": vit},
                 words=["takes no encoder"])
    raises_smart(wild_vs_self_study, ["wild"], preset="smoke", runs_dir=runs, out=out, encoders={"self": vit},
                 words=["not arms of this study"])
    raises_smart(wild_vs_self_study, ["wild"], preset="smoke", runs_dir=runs, out=out, seeds=[], words=["seeds"])
    assert not out.exists() and not (runs / "pretrain").exists()


def test_empty_wild_pool_is_refused(tmp_path, runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_smart(wild_vs_self_study, ["wild"], preset="smoke", runs_dir=runs, out=tmp_path / "out", wild_data=str(empty),
                 **FAST, words=[str(empty)])
    assert not (tmp_path / "out").exists() and not (runs / "pretrain").exists()


def test_cli_vit_checkpoint_for_the_swin_arm_is_one_line(tmp_path, capsys):
    vit = _vit_export(tmp_path / "vit.pt")
    out = tmp_path / "out"
    assert main(["study", "wild-vs-self", "--preset", "smoke", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
                 "--arms", "scratch", "wild", "--encoder", f"wild={vit}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "vit encoder given to a swin arm" in err
    assert not out.exists()
    assert main(["study", "wild-vs-self", "--out", str(out), "--encoder", "wild"]) == 2
    assert "ARM=ENCODER.pt" in capsys.readouterr().err


def test_reusable_runs_only_under_the_same_conditions(runs):
    from smartlib.downstream.segment import SegProtocol
    from smartlib.io import read_json

    js = read_json(runs / "05_segmentation" / "summary.json")
    same = {"preset": "smoke", "source": js["source"], "phantom": True, "data_seed": 0, "roi": js["roi"],
            "spacing": js["spacing_mm"], "protocol": SegProtocol(steps=1, eval_every=1, curve_cases=1).to_dict(),
            "seeds": [0], "test_patients": js["test_patients"]}
    found = reusable_runs(runs / "05_segmentation", **same, log=lambda s: None)
    assert set(found) == {"scratch"} and found["scratch"]["model"] is not None
    cases = pd.read_csv(runs / "05_segmentation" / "cases.csv")
    assert [c["dice"] for c in found["scratch"]["cases"]] == cases["dice"].tolist()
    said = []
    other = {**same, "protocol": SegProtocol(steps=2, eval_every=1, curve_cases=1).to_dict()}
    assert reusable_runs(runs / "05_segmentation", **other, log=said.append) == {} and "protocol" in said[0]
    assert reusable_runs(runs / "05_segmentation", **{**same, "seeds": [0, 1]}, log=said.append) == {}
    assert reusable_runs(runs / "05_segmentation", **{**same, "test_patients": ["x"]}, log=said.append) == {}
    assert reusable_runs(runs / "nowhere", **same) == {}


def test_study_reuses_scratch_trains_self_and_writes_every_table(runs, tmp_path):
    said = []
    out = tmp_path / "out"
    res = wild_vs_self_study(["scratch", "self"], preset="smoke", runs_dir=runs, out=out, **FAST, log=said.append)
    assert any(s.startswith("reusing scratch") for s in said)
    js = json.loads((out / "summary.json").read_text())
    assert js["arms"]["scratch"]["source"].startswith("reused") and js["arms"]["self"]["source"] == "trained here"
    assert js["arms"]["self"]["published_dice"] == "0.63 / 0.71"
    for name in ("cases", "curves", "runs", "strata", "wilcoxon", "comparisons", "efficiency", "pools", "cka"):
        assert (out / f"{name}.csv").is_file(), name
    cases = res["cases"]
    ch05 = pd.read_csv(runs / "05_segmentation" / "cases.csv")
    assert cases[cases["init"] == "scratch"]["dice"].tolist() == ch05["dice"].tolist()  # read, not retrained
    assert {"contrast", "kernel", "slice", "tumour volume"} <= set(cases.columns)
    assert set(res["cka"]["init"]) == {"scratch", "self"} and set(res["runs"]["init"]) == {"self"}
    assert res["comparisons"][["arm", "reference"]].values.tolist() == [["self", "scratch"]]
    # the chapter's figures: one panel per acquisition factor; both efficiency panels; one heat-map row per arm
    from smartlib.plots import robustness as rplots

    assert len(rplots.stratum_boxes(cases, ["scratch", "self"]).axes) == 4
    eff = rplots.efficiency_curves(res["curves"], res["efficiency"])
    assert len(eff.axes) == 2 and len(eff.axes[0].lines) == 2
    assert len([ax for ax in rplots.cka_heatmaps(res["cka"]).axes if ax.images]) == 6
    assert len(rplots.reuse_profile(res["cka"], ["scratch", "self"]).axes[0].lines) == 2
    # the self arm pretrained on exactly the training images, at the patch edge
    run = Path(js["arms"]["self"]["init"]).parent
    assert run.name.startswith("swin-self-smit-")
    cfg = json.loads((run / "config.json").read_text())
    rows = pd.read_csv(cfg["data"])
    assert len(rows) == js["n_train"] and cfg["img_size"] == js["roi"]


def test_headline_rows(tmp_path):
    from smartlib.downstream.results import comparison_table, headline_table

    d = tmp_path / "06_wild_vs_self"
    d.mkdir()
    row = {"init": "wild", "dice": 0.61, "dice_lo": 0.5, "dice_hi": 0.7, "dice_se": 0.04, "n_seeds": 3, "n_cases": 24}
    comp = {"fraction": 1.0, "arm": "wild", "reference": "self", "metric": "dice", "test": "paired bootstrap", "n_seeds": 3,
            "n_cases": 24, "diff": 0.01, "lo": -0.02, "hi": 0.04, "p_holm": 0.6, "verdict": "no detectable difference"}
    (d / "summary.json").write_text(json.dumps({"phantom": True, "overall": [row], "comparisons": [comp]}))
    t = headline_table(tmp_path)
    r = t[t["task"] == "wild vs self"].iloc[0]
    assert r["init"] == "wild" and r["published"] == "0.69 / 0.72" and r["measured"].startswith("0.610 [0.50, 0.70]")
    assert "3 × 24" in r["measured"]
    c = comparison_table(tmp_path)
    assert c[c["task"] == "wild vs self"][["arm", "reference"]].values.tolist() == [["wild", "self"]]
