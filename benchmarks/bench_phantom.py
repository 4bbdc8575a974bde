"""Throughput of :func:`smartlib.data.phantom.make_phantom` on one core.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_phantom.py`` (the script also pins BLAS/OpenMP to
one thread itself when the variables are unset). Prints volumes per second at 64³ and 128³ (2 mm,
random acquisition, whole trunk), best of a few repeats over several seeds.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402

from smartlib.data.phantom import make_phantom  # noqa: E402


def bench(size: int, n: int, repeats: int) -> tuple[float, float]:
    """Return (median seconds per volume, volumes per second) over ``n`` seeds, best of ``repeats``."""
    make_phantom((size,) * 3, seed=0)  # warm-up (imports, caches)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(n):
            make_phantom((size,) * 3, spacing=2.0, seed=s)
        best = min(best, (time.perf_counter() - t0) / n)
    return best, 1.0 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5, help="seeds per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    except (AttributeError, OSError):
        pass
    for size in (64, 128):
        sec, vps = bench(size, a.n, a.repeats)
        print(f"make_phantom {size}^3 @ 2 mm: {sec * 1000:7.1f} ms/volume  {vps:6.2f} volumes/s (1 core)")


if __name__ == "__main__":
    main()
