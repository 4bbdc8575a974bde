"""The speed benchmark runs end to end at the smoke preset and reports every figure (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_speed_reports_every_figure(tmp_path):
    out = tmp_path / "speed.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_speed.py"), "--preset", "smoke", "--rounds", "1",
                          "--warmup", "1", "--sizes", "32", "64", "--threads", "1", "--work", str(tmp_path / "w"),
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["timing"]) == {"smart", "smart_stock", "smit", "stock_fwd_bwd", "floor"}
    assert all(t["wall_s"] > 0 and t["cpu_s"] > 0 for t in r["timing"].values())
    assert r["peak_gflops"]["fp32"] > 0 and r["flops_per_step"] > 1e8 and 0 < r["mfu"] < 1
    shares = r["phase_shares"]
    for k in ("teacher", "noise", "mask", "student", "loss", "backward", "optimizer", "ema", "data_wait"):
        assert 0 <= shares[k] <= 1, k
    assert shares["student"] > 0 and shares["backward"] > 0 and shares["teacher"] > 0  # the regions were found
    assert set(map(int, r["per_voxel_s"])) == {32, 64}
    for words in ("matmul peak", "× stock", "phase shares", "masking + teacher noise", "cost per voxel", "MFU"):
        assert words in res.stdout, words
