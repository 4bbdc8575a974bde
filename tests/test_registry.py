"""The task registry (smartlib.tasks) and the study skeleton (smartlib.downstream.study)."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import pytest

from smartlib.cli import build_parser
from smartlib.config import PRESETS
from smartlib.downstream import study
from smartlib.errors import SmartError
from smartlib.tasks import KINDS, TASKS, builtin_dir, builtin_manifest, prep_for, record_kind, split_fractions, task, task_names

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_spec_is_complete():
    for name, t in TASKS.items():
        assert t.name == name and t.kind in KINDS
        if t.chapter is not None:
            assert (NOTEBOOKS / f"{t.chapter}.ipynb").is_file(), t.chapter
        if t.kind != "pretraining":
            assert set(t.sizes) == set(PRESETS) and all(v >= 1 for v in t.sizes.values()), name
            assert set(t.prep) == set(PRESETS), name
            fr = split_fractions(name, "cpu")
            assert len(fr) == 3 and abs(sum(fr) - 1) < 1e-9 and fr[2] > 0


def test_generator_order_is_the_registry_order():
    from smartlib.data.tasks import TASK_DEFAULTS
    from smartlib.data.tasks import TASKS as GEN_TASKS

    # the phantom seed of a case depends on the task's position: the first five must never move
    assert GEN_TASKS[:5] == ("pretrain", "nodules", "response", "segmentation", "organs")
    assert TASK_DEFAULTS == {n: dict(t.defaults) for n, t in TASKS.items()}


def test_cli_choices_come_from_the_registry():
    p = build_parser()
    for name in TASKS:
        assert p.parse_args(["data", "make", "--task", name, "--n", "1", "--out", "x"]).task == name
    for name in task_names("classification") + task_names("segmentation"):
        assert p.parse_args(["finetune", "--task", name, "--init", "scratch", "--out", "x"]).task == name
    with pytest.raises(SystemExit):
        p.parse_args(["finetune", "--task", "pretrain", "--init", "scratch", "--out", "x"])
    with pytest.raises(SystemExit):
        p.parse_args(["data", "make", "--task", "nodule", "--n", "1", "--out", "x"])


def test_lookup_errors_name_the_value():
    with pytest.raises(SmartError, match="'nodule'.*nodules"):
        task("nodule")
    with pytest.raises(SmartError, match="preset 'gpu'"):
        builtin_manifest("nodules", "gpu", "runs")
    with pytest.raises(SmartError, match="roi=48"):
        prep_for("nodules", "cpu", roi=48)
    assert record_kind("segmentation") == "segment" and record_kind("organs") == "classify"
    assert record_kind("pretrain") == "pretrain"


def test_one_path_scheme_and_preset_parameters(tmp_path):
    m = builtin_manifest("segmentation", "smoke", tmp_path)
    assert m.parent == builtin_dir("segmentation", TASKS["segmentation"].sizes["smoke"], 0, tmp_path)
    assert m.parent == tmp_path / "data" / "segmentation-n8-seed0"
    with open(m, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    img = nib.load(str(m.parent / rows[0]["image"]))
    assert img.shape == (48, 48, 48)  # the smoke / cpu segmentation set is 48³ at 2 mm (registry 'builtin')
    assert {r["split"] for r in rows} == {"train", "val", "test"}  # a validation split at every preset


def test_pretraining_set_follows_the_pretraining_config(tmp_path):
    from smartlib.config import pretrain_config

    cfg = pretrain_config("smoke")
    m = builtin_manifest("pretrain", "smoke", tmp_path)
    assert m.parent.name == f"pretrain-n{cfg.n_volumes}-seed{cfg.data_seed}"
    with open(m, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == cfg.n_volumes
    assert nib.load(str(m.parent / rows[0]["image"])).shape == (cfg.phantom_shape,) * 3


# ------------------------------------------------------------------------------------------ study skeleton
def test_fraction_checks():
    assert study.check_fraction("0.5") == 0.5 and study.check_fraction(1) == 1.0
    for bad in (0, -0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(SmartError, match="label fraction"):
            study.check_fraction(bad)
    with pytest.raises(SmartError, match="at least one"):
        study.check_fractions([])


def test_as_inits_names():
    assert study.as_inits("scratch") == {"scratch": "scratch"}
    assert study.as_inits(["smart", "/x/y/enc.pt"]) == {"smart": "smart", "enc": "/x/y/enc.pt"}
    assert study.as_inits({"a": "scratch"}) == {"a": "scratch"}


def test_grid_order_and_failure_writes_nothing(tmp_path):
    inits = study.Inits({"a": "scratch", "b": "p.pt"}, {"a": "scratch", "b": "p.pt"})
    cells = study.grid(inits, fractions=[0.25, 1.0], seeds=[0, 1], modes=["probe", "finetune"])
    assert len(cells) == 16
    assert [(c.init, c.mode, c.fraction, c.seed) for c in cells[:5]] == [
        ("a", "probe", 0.25, 0), ("a", "probe", 0.25, 1), ("a", "probe", 1.0, 0), ("a", "probe", 1.0, 1),
        ("a", "finetune", 0.25, 0)]
    assert cells[-1].path == "p.pt"

    def run_one(c):
        if c.init == "b":
            raise SmartError("boom")
        return {"init": c.init}

    out = tmp_path / "out"
    with pytest.raises(SmartError, match="boom"):
        rows = study.run_cells(cells, run_one)
        study.write_outputs(out, csv={"runs.csv": rows})
    assert not out.exists()
    study.write_outputs(out, csv={"runs.csv": [{"x": 1}]}, json={"s.json": {"k": [1]}})
    assert (out / "runs.csv").read_text().splitlines() == ["x", "1"] and (out / "s.json").is_file()
    study.write_outputs(None, csv={"never.csv": [{"x": 1}]})


def test_localisation_task_is_on_the_pretraining_grid_with_offsets_anywhere():
    from smartlib.config import pretrain_config
    from smartlib.data.tasks import TASKS as GEN_TASKS
    from smartlib.tasks import builtin_params

    assert GEN_TASKS[5] == "localisation"  # appended after the first five, never reordered
    t = task("localisation")
    assert t.needs == "mask" and record_kind("localisation") == "segment" and t.chapter == "08_attention"
    for preset in PRESETS:
        cfg = pretrain_config(preset)
        p = {**t.defaults, **builtin_params("localisation", preset)}
        edge_mm = p["size"] * p["spacing"][0]
        assert p["size"] == cfg.img_size and p["spacing"] == [cfg.spacing] * 3, preset  # no resampling needed
        assert prep_for("localisation", preset) == {"roi": cfg.img_size, "spacing": cfg.spacing}, preset
        assert p["offset_mm"] == edge_mm / 2, preset  # the nodule centre can reach every unit of the crop
        assert cfg.img_size // 16 >= 4, preset  # at least 4³ mask units to point at
    assert t.sizes["smoke"] < t.sizes["cpu"] < t.sizes["paper"]
