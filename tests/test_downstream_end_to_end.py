"""Every task from the CLI on small real-format fixtures (MedMNIST .npz, CSV manifests), smoke preset, scratch init."""
from __future__ import annotations

import csv
import json

import numpy as np

from smartlib.cli import main


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_finetune_probe_on_medmnist_npz(tmp_path, write_medmnist):
    npz = write_medmnist(tmp_path / "nodulemnist3d.npz", side=28, n=(8, 2, 6), n_classes=2)
    out = tmp_path / "probe"
    assert main(["finetune", "--task", "nodules", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                 "--data", str(npz), "--n-boot", "50"]) == 0
    js = json.loads((out / "summary.json").read_text())
    assert js["n_train"] == 8 and js["n_test"] == 6 and not js["phantom"]
    run = js["runs"][0]
    assert run["mode"] == "probe" and 0 <= run["auc"] <= 1 and run["auc_lo"] <= run["auc_hi"]
    preds = _rows(out / "predictions.csv")
    assert len(preds) == 6 and {p["patient_id"].split("-")[0] for p in preds} == {"test"}


def test_finetune_mode_on_csv_manifest(tmp_path, labelled_set):
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "response", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                 "--data", str(labelled_set), "--mode", "finetune", "--epochs", "1", "--n-boot", "20"]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 1 and rows[0]["mode"] == "finetune" and rows[0]["n_train"] == "2" and rows[0]["n_test"] == "2"


def test_segmentation_on_csv_manifest(tmp_path, labelled_set):
    out = tmp_path / "seg"
    assert main(["finetune", "--task", "segmentation", "--init", "scratch", "--preset", "smoke", "--out", str(out),
                 "--data", str(labelled_set), "--steps", "1", "--n-boot", "20"]) == 0
    cases = _rows(out / "cases.csv")
    assert len(cases) == 2
    for c in cases:
        assert 0.0 <= float(c["dice"]) <= 1.0 and float(c["tumour_volume_ml"]) > 0
    from smartlib.tasks import prep_for

    assert json.loads((out / "summary.json").read_text())["spacing_mm"] == prep_for("segmentation", "smoke")["spacing"]


def test_clusters_on_organmnist_npz(tmp_path, write_medmnist):
    npz = write_medmnist(tmp_path / "organmnist3d.npz", side=28, n=(6, 3, 6), n_classes=3)
    out = tmp_path / "clusters"
    assert main(["evaluate", "clusters", "--init", "scratch", "--preset", "smoke", "--out", str(out), "--data", str(npz)]) == 0
    js = json.loads((out / "metrics.json").read_text())
    assert {m["feature"] for m in js["metrics"]} == {"cls", "pooled"}
    for m in js["metrics"]:
        assert m["n"] == 15 and m["n_classes"] == 3 and m["intra_mean"] >= 0 and -1 <= m["silhouette"] <= 1
    emb = _rows(out / "embeddings.csv")
    assert len(emb) == 30
    assert np.isfinite([float(r["x"]) for r in emb]).all()
