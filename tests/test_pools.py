"""Pretraining pools and arms of the wild- vs self-pretraining study, and the init_from hook of pretraining."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import raises_smart

from smartlib import pools
from smartlib.config import pretrain_config
from smartlib.pretrain import CHECKPOINT, pretrain

SMIT = {"semantic_attention": False, "mask_mode": "random", "teacher_drop": 0.0, "img_size": 32}


def test_arm_table():
    assert {"scratch", "wild", "self", "wild+self", "vit-scratch", "vit-wild", "vit-self", "vit-wild+self",
            "wild-global", "wild-amip", "wild-ampd", "wild-aitd", "wild-gitd"} == set(pools.ARMS)
    assert pools.arm("wild+self").pool == "wild+self" and pools.arm("vit-self").encoder == "vit"
    assert pools.run_name(pools.arm("vit-wild+self")) == "vit-wildself-smit"
    raises_smart(pools.arm, "tame", words=["arm 'tame'", "wild"])


@pytest.mark.parametrize("pretext, on", [("global", {"w_aitd", "w_gitd"}), ("amip", {"w_amip"}), ("ampd", {"w_ampd"}),
                                         ("aitd", {"w_aitd"}), ("gitd", {"w_gitd"}), ("smit", {"w_amip", "w_ampd", "w_aitd", "w_gitd"})])
def test_pretext_weights(pretext, on):
    from smartlib.variants import variant_config

    cfg = variant_config("smit", "smoke", pools.PRETEXTS[pretext])
    weights = {k: getattr(cfg, k) for k in ("w_amip", "w_ampd", "w_aitd", "w_gitd")}
    assert {k for k, v in weights.items() if v > 0} == on
    assert not cfg.semantic_attention and cfg.mask_mode == "random" and cfg.teacher_drop == 0.0


def test_arm_overrides_by_hand(tmp_path):
    rows = [{"image": str(tmp_path / f"v{i}.nii.gz"), "patient_id": f"P{i}"} for i in range(6)]
    manifest = tmp_path / "self.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "patient_id"])
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        Path(r["image"]).touch()
    wild = pools.arm_overrides("wild", "smoke", 32)
    assert wild == {"data": "phantom"}
    # smoke wild recipe: 4 phantoms, batch 2, 2 epochs = 4 steps; self pool of 6 = 3 steps per epoch → 1 epoch
    own = pools.arm_overrides("self", "smoke", 32, self_data=manifest)
    assert own == {"data": str(manifest), "img_size": 32, "epochs": 1}
    vit = pools.arm_overrides("vit-wild+self", "smoke", 32, self_data=manifest, init_from=tmp_path / "wild")
    assert vit["arch"] == "vit" and vit["vit_layers"] == 12 and vit["img_size"] == 32 and vit["init_from"] == str(tmp_path / "wild")
    raises_smart(pools.arm_overrides, "scratch", "smoke", 32, words=["not pretrained"])
    raises_smart(pools.arm_overrides, "self", "smoke", 32, words=["self pool"])
    raises_smart(pools.arm_overrides, "wild+self", "smoke", 32, self_data=manifest, words=["init_from"])
    one = tmp_path / "one.csv"
    one.write_text(f"image,patient_id\n{rows[0]['image']},P0\n")
    raises_smart(pools.arm_overrides, "self", "smoke", 32, self_data=one, words=["fewer than one batch"])


def test_self_manifest_holds_exactly_the_training_records(tmp_path):
    recs = [{"image": tmp_path / f"i{k}.nii.gz", "patient_id": f"P{k}", "kernel": "sharp", "mask": "m.nii.gz"} for k in range(3)]
    path = pools.self_manifest(recs, tmp_path / "runs")
    rows = list(csv.DictReader(open(path)))
    assert [r["image"] for r in rows] == [str((tmp_path / f"i{k}.nii.gz").resolve()) for k in range(3)]
    assert [r["kernel"] for r in rows] == ["sharp"] * 3 and "mask" not in rows[0]
    assert pools.self_manifest(list(reversed(recs)), tmp_path / "runs") == path  # the same images, the same file
    assert pools.self_manifest(recs[:2], tmp_path / "runs") != path
    raises_smart(pools.self_manifest, [], tmp_path / "runs", words=["self pool", "empty"])


def test_pool_table_counts():
    t = pools.pool_table({"wild": [{"kernel": "sharp", "view": "zoom"}, {"kernel": "smooth", "view": "trunk"}],
                          "self": [{"kernel": "sharp"}, {}]})
    n = t.set_index(["pool", "factor", "value"])["n"]
    assert n[("wild", "volumes", "all")] == 2 and n[("self", "kernel", "unknown")] == 1 and n[("wild", "view", "zoom")] == 1
    assert ("self", "view", "unknown") not in n.index
    raises_smart(pools.pool_table, {"wild": []}, words=["no volumes"])
    raises_smart(pools.pool_records, "tame", "smoke", "runs", words=["pool 'tame'"])


def _teacher(run: Path) -> dict:
    return torch.load(run / CHECKPOINT, weights_only=True)["teacher"]


def _dist(a: dict, b: dict) -> float:
    return float(sum(((a[k].float() - b[k].float()) ** 2).sum() for k in a if a[k].is_floating_point()) ** 0.5)


def test_init_from_starts_from_the_other_run(tmp_path):
    quiet = lambda s: None  # noqa: E731
    a = pretrain(pretrain_config("smoke", {**SMIT, "seed": 1, "max_steps": 1}), tmp_path / "runs" / "a", progress=False, log=quiet)
    b = pretrain(pretrain_config("smoke", {**SMIT, "max_steps": 1, "init_from": str(a)}), tmp_path / "runs" / "b",
                 progress=False, log=quiet)
    c = pretrain(pretrain_config("smoke", {**SMIT, "max_steps": 1}), tmp_path / "runs" / "c", progress=False, log=quiet)
    ta = _teacher(a)
    # b's EMA teacher after one step is a's teacher moved by (1 − 0.996); c (no init_from) started from its own seed
    assert _dist(_teacher(b), ta) < 0.05 * _dist(_teacher(c), ta)


def test_init_from_bad_values_fail_before_anything_is_written(tmp_path):
    runs = tmp_path / "runs"
    raises_smart(pretrain, pretrain_config("smoke", {**SMIT, "init_from": str(tmp_path / "nowhere")}), runs / "x",
                 progress=False, words=["init_from", "not found"])
    assert not (runs / "x").exists()
    vit = pretrain(pretrain_config("smoke", {**SMIT, "arch": "vit", "vit_layers": 2, "vit_hidden": 48, "vit_heads": 4,
                                             "max_steps": 1}), runs / "vit", progress=False, log=lambda s: None)
    raises_smart(pretrain, pretrain_config("smoke", {**SMIT, "init_from": str(vit)}), runs / "y", progress=False,
                 log=lambda s: None, words=["init_from", "student", "does not fit"])
    assert not (runs / "y").exists()
