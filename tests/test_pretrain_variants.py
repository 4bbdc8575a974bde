"""Pretraining several variants side by side: the same runs as one after another, and clear failures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import raises_smart
from smartlib import variants
from smartlib.io import load_torch, write_json
from smartlib.pretrain import CHECKPOINT


def test_parallel_runs_equal_in_process_runs(tmp_path):
    par = variants.pretrain_variants(["smart", "smit"], "smoke", tmp_path / "par", jobs=2, log=lambda s: None)
    assert set(par) == {"smart", "smit"} and all(p.is_file() for p in par.values())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parallel runs use one thread each: same thread count, same numbers
    try:
        ref = variants.pretrained("smit", "smoke", tmp_path / "seq", log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    a, b = load_torch(par["smit"].parent / CHECKPOINT), load_torch(ref.parent / CHECKPOINT)
    assert a["step"] == b["step"] > 0
    for k in a["teacher"]:
        assert torch.equal(a["teacher"][k], b["teacher"][k]), k
    # a finished set is reused without running anything (a run would rewrite the checkpoint)
    stamp = (par["smart"].parent / CHECKPOINT).stat().st_mtime_ns
    variants.pretrain_variants(["smart", "smit"], "smoke", tmp_path / "par", jobs=2, log=lambda s: None)
    assert (par["smart"].parent / CHECKPOINT).stat().st_mtime_ns == stamp


def test_a_failed_run_names_its_variant(tmp_path):
    from smartlib.tasks import builtin_manifest

    manifest = builtin_manifest("pretrain", "smoke", tmp_path)  # the smoke pretraining set, then one volume broken
    first = next(p for p in sorted(Path(manifest).parent.rglob("*.nii.gz")))
    first.write_bytes(first.read_bytes()[:200])
    msg = raises_smart(variants.pretrain_variants, ["smart", "smit"], "smoke", tmp_path, jobs=2, log=lambda s: None,
                       words=["pretraining", "failed", "exit 2"])
    assert "smart" in msg or "smit" in msg


def test_bad_arguments(tmp_path):
    raises_smart(variants.pretrain_variants, ["smart", "nope"], "smoke", tmp_path, words=["nope"])
    raises_smart(variants.pretrain_variants, ["smart"], "smoke", tmp_path, jobs=0, words=["jobs"])
    run = variants.run_dir("smit", tmp_path)
    run.mkdir(parents=True)
    for f in ("encoder.pt", "summary.json"):
        (run / f).write_text("{}")
    write_json(run / "config.json", {**variants.variant_config("smit", "smoke").to_dict(), "lr": 0.5})
    raises_smart(variants.pretrain_variants, ["smit"], "smoke", tmp_path, jobs=2, words=["another configuration"])
