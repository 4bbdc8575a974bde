"""Segmentation fine-tuning keeps the checkpoint with the best validation Dice and never looks at the test labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import raises_smart

from smartlib.downstream.segment import SegProtocol, evaluate_segmentation, select_step, train_segmentation


def _volumes(n: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(1, 32, 32, 32) volumes with one bright box (the 'tumour') on noise, and its mask."""
    g = torch.Generator().manual_seed(seed)
    imgs, msks = [], []
    for _ in range(n):
        m = torch.zeros(1, 32, 32, 32)
        a, b, c = (int(v) for v in torch.randint(4, 18, (3,), generator=g))
        m[:, a:a + 10, b:b + 10, c:c + 10] = 1
        imgs.append(0.3 * torch.rand(1, 32, 32, 32, generator=g) + 0.5 * m)
        msks.append(m)
    return imgs, msks


def _threshold_net() -> torch.nn.Module:
    """A 3×3×3 convolution that starts as a rough brightness threshold (tumour logit 10·(x − 0.6)), so that its
    predictions are never empty and training moves them."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    with torch.no_grad():
        net.weight.mul_(0.1)
        net.weight[1, 0, 1, 1, 1] += 10.0
        net.bias.copy_(torch.tensor([0.0, -6.0]))
    return net


def _run(val_masks=None, test_masks=None, eval_every=2, steps=8):
    tr, trm = _volumes(4, 0)
    va, vam = _volumes(3, 1)
    te, tem = _volumes(3, 2)
    model = _threshold_net()
    return train_segmentation(model, tr, trm, 32, steps=steps, lr=0.05, seed=0, val=(va, val_masks or vam),
                              test=(te, test_masks or tem), eval_every=eval_every, spacing=2.0, overlap=0.0)


def test_select_step_best_validation_ties_earlier_and_ignores_test():
    h = [{"step": 10, "val_dice": 0.5, "test_dice": 0.9}, {"step": 20, "val_dice": 0.7, "test_dice": 0.1},
         {"step": 30, "val_dice": 0.7, "test_dice": 0.99}]
    assert select_step(h) == 20  # the tie at 0.7 goes to the earlier step; the test Dice plays no part
    assert select_step([{**r, "test_dice": 1 - r["test_dice"]} for r in h]) == 20
    assert select_step([{"step": s, "val_dice": float("nan")} for s in (10, 20, 30)]) == 30  # no validation: last
    raises_smart(select_step, [], words=["no evaluation points"])


def test_perturbed_test_labels_change_nothing_but_the_test_curve():
    base = _run()
    _, tem = _volumes(3, 2)
    flipped = _run(test_masks=[1 - m for m in tem])
    assert [h["step"] for h in base.history] == [2, 4, 6, 8]
    assert [h["test_dice"] for h in base.history] != [h["test_dice"] for h in flipped.history]  # the perturbation took effect
    assert [h["val_dice"] for h in base.history] == [h["val_dice"] for h in flipped.history]
    assert base.step == flipped.step
    for (k, a), b in zip(base.model.state_dict().items(), flipped.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_choice_follows_the_validation_curve():
    base = _run()
    _, vam = _volumes(3, 1)
    control = _run(val_masks=[1 - m for m in vam])  # positive control: the validation labels drive the choice
    for r in (base, control):
        vals = [h["val_dice"] for h in r.history]
        assert r.step == r.history[int(np.argmax(vals))]["step"]  # np.argmax: the first maximum (ties → earlier)
        assert [h["selected"] for h in r.history].count(True) == 1
    assert [h["val_dice"] for h in base.history] != [h["val_dice"] for h in control.history]
    # the returned model is the chosen checkpoint: its validation Dice is the logged one at that step
    va, vam = _volumes(3, 1)
    dice = np.mean([r["dice"] for r in evaluate_segmentation(base.model, va, vam, 32, 2.0, overlap=0.0, hd95=False)])
    assert dice == pytest.approx(next(h["val_dice"] for h in base.history if h["selected"]), abs=1e-6)


def test_without_validation_the_last_step_is_kept_and_curves_have_losses():
    tr, trm = _volumes(2, 0)
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1)
    r = train_segmentation(model, tr, trm, 32, steps=3, lr=0.05, seed=0, eval_every=2)
    assert [h["step"] for h in r.history] == [2, 3] and r.step == 3
    assert all(np.isnan(h["val_dice"]) and np.isfinite(h["train_loss"]) for h in r.history)
    assert r.history[0]["epoch"] == pytest.approx(1.0)  # 2 steps over 2 training volumes


def test_bad_arguments():
    tr, trm = _volumes(1, 0)
    m = torch.nn.Conv3d(1, 2, 1)
    raises_smart(train_segmentation, m, tr, trm, 32, steps=0, words=["steps=0"])
    raises_smart(train_segmentation, m, tr, trm, 32, steps=2, eval_every=-1, words=["eval_every"])
    raises_smart(train_segmentation, m, [], [], 32, steps=2, words=["no training volumes"])
    raises_smart(SegProtocol, steps=0, words=["steps"])
    raises_smart(SegProtocol, n_val=-1, words=["n_val"])
    raises_smart(SegProtocol, curve_cases=1.5, words=["curve_cases"])
    raises_smart(SegProtocol, overlap=1.0, words=["overlap"])
    assert SegProtocol(steps=5, eval_every=2).to_dict()["eval_every"] == 2


def test_segmentation_study_writes_curves_and_models(tmp_path, labelled_set):
    from smartlib.downstream.segment import load_segmenter, segmentation_study
    from smartlib.plots.downstream import segmentation_curves

    runs, cases = segmentation_study(["scratch"], preset="smoke", runs_dir=tmp_path / "runs", out=tmp_path / "out",
                                     data=labelled_set, steps=2, eval_every=1, curve_cases=1, n_boot=20, save_models=True)
    curves = pd.read_csv(tmp_path / "out" / "curves.csv")
    assert curves["step"].tolist() == [1, 2] and curves["n_curve_cases"].tolist() == [1, 1]
    assert curves["n_val"].tolist() == [0, 0] and runs["selected_step"].iloc[0] == 2  # no validation split: the last step
    model, head = load_segmenter(tmp_path / "out" / "models" / "scratch.pt")
    assert head["init"] == "scratch" and head["step"] == 2 and head["roi"] == 32
    blob = torch.load(tmp_path / "out" / "models" / "scratch.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, blob["state_dict"][k]), k
    fig = segmentation_curves(tmp_path / "out" / "curves.csv")
    assert len(fig.axes) == 3 and fig.axes[1].get_title() == "validation Dice"
    empty = segmentation_curves(tmp_path / "missing.csv")
    assert not empty.axes[0].axison


def test_load_segmenter_refuses_other_files(tmp_path):
    from smartlib.downstream.segment import load_segmenter

    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    raises_smart(load_segmenter, tmp_path / "x.pt", words=["not a saved segmentation model"])
