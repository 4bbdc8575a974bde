"""Benchmark SMART pretraining steps on this machine.

CPU (default, ``--preset cpu``): per-step time of three configurations in one process —
SMART, random masking (``mask_mode=random``) and a clean teacher (``teacher_drop=0``) — measured
with the real training loop (:func:`smartlib.pretrain.pretrain`), interleaved: after a warm-up of
``--warmup`` steps each, the configurations take turns running ``--chunk`` steps at a time (each
turn resumes its run from its checkpoint; the first step of every turn is discarded as warm-up too)
until each has ``--steps`` timed steps. Reports median/mean step time, samples/s, peak RSS, and the
projected pretraining wall time of the book at the preset (steps per variant × the variants the book
pretrains).

GPU (``--preset paper --device cuda``): the same timing at the paper configuration plus peak GPU
memory, the largest global batch that fits (doubling from 1 until CUDA runs out of memory), and
bf16-autocast vs fp32 loss tracking over ``--amp-steps`` steps from the same seed.

Data: the preset's phantoms, or ``--data PATH``. For large batches a manifest repeating a few
phantom volumes is written, so the batch search does not have to generate hundreds of volumes.

    python benchmarks/bench_pretrain.py                       # cpu preset, 3 warm-up + 10 timed steps each
    python benchmarks/bench_pretrain.py --preset paper --device cuda --set n_volumes=16 --set phantom_shape=160
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smartlib.config import parse_set  # noqa: E402
from smartlib.errors import SmartError  # noqa: E402
from smartlib.pretrain import pretrain  # noqa: E402
from smartlib.variants import VARIANTS, variant_config  # noqa: E402

#: the configurations compared (overrides on top of the `smart` variant)
CONFIGS = {
    "smart": {},
    "random_mask": {"mask_mode": "random"},
    "no_teacher_noise": {"teacher_drop": 0.0},
}
#: the variants the book pretrains (notebooks 01 and 02; later chapters reuse them)
BOOK_VARIANTS = ["smart", "sa_clean", "noise_no_sa", "smit", "random_mask", "low_attention"]


def _quiet(_: str) -> None:
    pass


def _metrics(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _repeat_manifest(cfg, folder: Path, n: int) -> str:
    """A manifest of ``n`` rows cycling over the preset's phantom volumes (for big-batch tests)."""
    from smartlib.data.tasks import make_task

    base = make_task("pretrain", n=min(cfg.n_volumes, 8), seed=cfg.data_seed, out=folder / "phantoms", shape=cfg.phantom_shape)
    with open(base, newline="") as fh:
        images = [str((base.parent / r["image"]).resolve()) for r in csv.DictReader(fh)]
    path = folder / f"repeat{n}.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label", "patient_id"])
        for i in range(n):
            w.writerow([images[i % len(images)], "", f"r{i}"])
    return str(path)


def time_interleaved(base: dict, preset: str, work: Path, warmup: int, steps: int, chunk: int) -> dict[str, list[float]]:
    """Timed step durations per configuration, measured in turns with the real training loop."""
    cfgs = {name: variant_config("smart", preset, {**base, **ov}) for name, ov in CONFIGS.items()}
    runs = {name: work / name for name in cfgs}
    done = {name: 0 for name in cfgs}
    timed: dict[str, list[float]] = {name: [] for name in cfgs}
    need = warmup + math.ceil(steps / max(chunk - 1, 1)) * chunk
    for name, cfg in cfgs.items():
        total = (cfg.n_volumes // cfg.batch_size) * cfg.epochs if cfg.data == "phantom" else None
        if total is not None and total < need:
            raise SmartError(f"preset {preset}: {total} steps in all, fewer than the {need} this benchmark needs; "
                             "lower --steps/--warmup or raise epochs with --set")
    for name, cfg in cfgs.items():  # warm-up: builds the data cache, allocator and kernels
        pretrain(_with(cfg, max_steps=warmup), runs[name], progress=False, log=_quiet)
        done[name] = warmup
    while any(len(t) < steps for t in timed.values()):
        for name, cfg in cfgs.items():
            if len(timed[name]) >= steps:
                continue
            stop = done[name] + chunk
            pretrain(_with(cfg, max_steps=stop), runs[name], resume=True, progress=False, log=_quiet)
            rows = [r for r in _metrics(runs[name]) if done[name] <= r["step"] < stop]
            timed[name] += [r["step_time"] for r in rows[1:]][: steps - len(timed[name])]  # drop each turn's first step
            done[name] = stop
    return timed


def _with(cfg, **kw):
    from smartlib.config import apply_overrides

    return apply_overrides(cfg, kw, "benchmark")


def _summary(times: list[float], batch: int) -> dict:
    med = statistics.median(times)
    return {"steps": len(times), "median_s": med, "mean_s": statistics.fmean(times),
            "min_s": min(times), "max_s": max(times), "samples_per_s": batch / med}


def largest_batch(base: dict, preset: str, work: Path, limit: int) -> tuple[int, dict[int, float]]:
    """Double the global batch from 1 until CUDA runs out of memory; returns (largest that fit, peak MiB per batch)."""
    fit, peaks = 0, {}
    b = 1
    while b <= limit:
        cfg = variant_config("smart", preset, {**base, "batch_size": b})
        data = base.get("data") or _repeat_manifest(cfg, work, max(b, 2))
        cfg = _with(cfg, data=data, max_steps=2, epochs=max(cfg.epochs, 2))
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            pretrain(cfg, work / f"batch{b}", progress=False, log=_quiet)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError, or a CUDA/cuBLAS allocation failure
            if "out of memory" not in str(exc).lower() and not isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            print(f"  batch {b}: out of memory")
            break
        except SmartError as exc:  # e.g. fewer volumes than the batch in a user --data
            print(f"  batch {b}: {exc}")
            break
        finally:
            torch.cuda.empty_cache()
        peaks[b] = torch.cuda.max_memory_allocated() / 2**20
        print(f"  batch {b}: fits, peak {peaks[b]:.0f} MiB")
        fit = b
        b *= 2
    return fit, peaks


def amp_tracking(base: dict, preset: str, work: Path, n: int) -> dict:
    """Loss per step with bf16 autocast vs fp32 from the same seed and data."""
    curves = {}
    for name, amp in (("bf16", True), ("fp32", False)):
        cfg = variant_config("smart", preset, {**base, "amp": amp, "max_steps": n})
        pretrain(cfg, work / f"amp_{name}", progress=False, log=_quiet)
        curves[name] = _metrics(work / f"amp_{name}")
    a, b = curves["bf16"], curves["fp32"]
    rel = [abs(x["loss"] - y["loss"]) / max(abs(y["loss"]), 1e-12) for x, y in zip(a, b)]
    return {"steps": len(rel), "max_rel_loss_diff": max(rel), "final_loss_bf16": a[-1]["loss"], "final_loss_fp32": b[-1]["loss"],
            "final_amip_bf16": a[-1]["amip"], "final_amip_fp32": b[-1]["amip"],
            "median_step_s_bf16": statistics.median(r["step_time"] for r in a[1:] or a),
            "median_step_s_fp32": statistics.median(r["step_time"] for r in b[1:] or b)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--data", default=None, help="'phantom' (default) or a manifest / folder of CTs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--chunk", type=int, default=3, help="steps per turn when interleaving (the first of each is discarded)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--max-batch", type=int, default=256, help="GPU: stop the batch search here")
    p.add_argument("--amp-steps", type=int, default=20, help="GPU: steps of bf16 vs fp32 loss tracking")
    p.add_argument("--work", default=None, help="folder for the benchmark runs (default: a temporary folder)")
    a = p.parse_args(argv)
    try:
        return _run(a)
    except SmartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(a) -> int:
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SmartError("--device cuda: no CUDA device visible")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.warmup < 1 or a.steps < 1 or a.chunk < 2:
        raise SmartError("need --warmup ≥ 1, --steps ≥ 1 and --chunk ≥ 2")
    base = {**parse_set(a.set), "device": a.device}
    if a.data:
        base["data"] = a.data
    cfg = variant_config("smart", a.preset, base)  # validates the overrides up front
    tmp = tempfile.TemporaryDirectory(prefix="bench_pretrain_") if a.work is None else None
    work = Path(a.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    timing_base = dict(base)
    if cfg.data == "phantom" and cfg.n_volumes > 64:  # e.g. paper: do not generate 10k phantoms to time a step
        timing_base["data"] = _repeat_manifest(cfg, work / "data", max(64, 2 * cfg.batch_size))
    dev = torch.cuda.get_device_name() if cfg.device != "cpu" and torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads, {os.cpu_count()} cores"
    print(f"preset {a.preset}: img {cfg.img_size}³, embed {cfg.embed_dim}, depths {tuple(cfg.depths)}, global batch {cfg.batch_size}, "
          f"prototypes {cfg.prototypes} on {dev}; torch {torch.__version__}")
    t0 = time.perf_counter()
    timed = time_interleaved(timing_base, a.preset, work / "timing", a.warmup, a.steps, a.chunk)
    results = {name: _summary(t, cfg.batch_size) for name, t in timed.items()}
    print(f"\nstep time ({a.warmup} warm-up steps excluded, interleaved in turns of {a.chunk}, first of each turn excluded):")
    print(f"  {'config':18s} {'median s':>9s} {'mean s':>8s} {'min s':>7s} {'max s':>7s} {'samples/s':>10s}")
    for name, r in results.items():
        print(f"  {name:18s} {r['median_s']:9.3f} {r['mean_s']:8.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} {r['samples_per_s']:10.2f}")
    s = results["smart"]["median_s"]
    for name in ("random_mask", "no_teacher_noise"):
        print(f"  {name} / smart = {results[name]['median_s'] / s:.3f}")
    print(f"peak RSS of this process: {_peak_rss_mib():.0f} MiB")

    # projected book pretraining: every book variant runs the preset's full schedule once
    steps_per_variant = (cfg.n_volumes // cfg.batch_size) * cfg.epochs if cfg.data == "phantom" else None
    if steps_per_variant:
        like = {v: ("random_mask" if VARIANTS[v].overrides.get("mask_mode") == "random" else
                    "no_teacher_noise" if VARIANTS[v].overrides.get("teacher_drop") == 0.0 else "smart") for v in BOOK_VARIANTS}
        proj = sum(steps_per_variant * results[like[v]]["median_s"] for v in BOOK_VARIANTS)
        print(f"projected book pretraining at {a.preset}: {len(BOOK_VARIANTS)} variants × {steps_per_variant} steps "
              f"≈ {proj / 60:.1f} min of steps (+ data preparation and process start-up)")
    else:
        proj = None
    report = {"preset": a.preset, "device": dev, "timing": results, "peak_rss_mib": _peak_rss_mib(),
              "steps_per_variant": steps_per_variant, "book_variants": BOOK_VARIANTS, "projected_book_pretrain_s": proj}

    if cfg.device != "cpu" and torch.cuda.is_available():
        report["peak_gpu_mib_timing"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak GPU memory (timing runs): {report['peak_gpu_mib_timing']:.0f} MiB")
        print("\nlargest global batch (doubling until out of memory):")
        fit, peaks = largest_batch(base, a.preset, work / "batch", a.max_batch)
        report["largest_batch"], report["peak_gpu_mib_by_batch"] = fit, peaks
        print(f"  largest batch that fits: {fit}")
        amp = amp_tracking(base, a.preset, work / "amp", a.amp_steps)
        report["amp"] = amp
        print(f"\nbf16 vs fp32 over {amp['steps']} steps: max relative loss difference {amp['max_rel_loss_diff']:.3g}; "
              f"final loss {amp['final_loss_bf16']:.4f} vs {amp['final_loss_fp32']:.4f}; "
              f"median step {amp['median_step_s_bf16']:.3f} s vs {amp['median_step_s_fp32']:.3f} s")
    print(f"\nbenchmark wall time {time.perf_counter() - t0:.0f} s")
    print(json.dumps(report, default=float))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
