"""How fast SMART pretrains on this machine: every speed figure in one run.

Prints, for the preset's configuration (``--preset``, default ``cpu``):

1. the machine: CPU / GPU, threads, native bf16, library versions, and the **matmul peak** measured
   in this process (a large fp32 matmul, and bf16 where autocast is used);
2. **step times, interleaved in rotated order** (every round runs each configuration in turn, starting
   one later each round; wall *and* CPU time) of
   - ``smart``: one step of the real training loop (:func:`smartlib.pretrain.train_step`, data loading
     included) with the preset's speed switches,
   - ``smart_stock``: the same step with every speed switch off (MONAI's attention, fp32, multi-tensor
     AdamW, no prefetch) — the "before",
   - ``smit``: the SMIT reference variant of the same size, with the switches,
   - ``stock_fwd_bwd``: MONAI's ``SwinTransformer`` forward + backward on the same crops (2 views × batch),
   - ``floor``: the teacher–student floor, stock student forward + backward plus one stock teacher forward;
3. the **phase shares** of the ``smart`` step (``torch.profiler`` over the ``smart/*`` regions of
   :func:`smartlib.step.smart_step` and the loop: teacher, noise, mask, student, loss, backward,
   optimizer, EMA; data wait from the loop's own clock) and the share of masking + teacher noise;
4. **cost per voxel** of a SMART step at 32³ / 64³ / 96³ / 128³ crops (one sample, two views), relative to 64³;
5. **FLOPs** of one step counted by ``torch.utils.flop_counter`` with MONAI's (non-fused) attention —
   the counter does not see fused ``scaled_dot_product_attention`` on CPU, so the fused path would be
   under-counted — and the achieved FLOP/s and **MFU** against the measured peak;
6. with ``--device cuda``: peak GPU memory, the largest global batch that fits (doubling), bf16 vs fp32
   loss tracking.

Numbers go to stdout and, with ``--json PATH``, to a JSON file. Run it on a quiet machine: two busy
processes on two cores slow each other down by far more than 2×.

    python benchmarks/bench_speed.py                        # cpu preset, torch's default threads
    python benchmarks/bench_speed.py --threads 1 --rounds 12
    python benchmarks/bench_speed.py --preset paper --device cuda --set batch_size=8
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smartlib.config import apply_overrides, parse_set  # noqa: E402
from smartlib.errors import SmartError  # noqa: E402
from smartlib.variants import variant_config  # noqa: E402

#: the speed switches and their "off" values (the stock configuration)
SWITCHES_OFF = {"fast_attention": False, "amp": False, "fused_optimizer": False, "prefetch": False}
PHASES = ("smart/teacher", "smart/noise", "smart/mask", "smart/student", "smart/loss", "smart/backward",
          "smart/optimizer", "smart/ema")
SIZES = (32, 64, 96, 128)


# ------------------------------------------------------------------------------------------ timing helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall s, process CPU s) of one call."""
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """Best GFLOP/s of an n×n @ n×n matmul in this process (2n³ FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        best = min(best, _clock(lambda: a @ b, device)[0])
    return 2 * n**3 / best / 1e9


# ------------------------------------------------------------------------------------------ configurations
class LoopStep:
    """Steps of the real training loop (``setup_run`` + ``batches`` + ``train_step``), one per call."""

    def __init__(self, cfg, work: Path) -> None:
        from smartlib.pretrain import setup_run
        from smartlib.pretrain_data import batches

        self.cfg = cfg
        self.r = setup_run(cfg, work, 0, 1, False, lambda s: None)
        self.it = batches(self.r.data, cfg, 0, self.r.total, self.r.steps_per_epoch, 0, 1)
        self.data_times: list[float] = []

    def __call__(self) -> None:
        from smartlib.pretrain import train_step

        t = time.perf_counter()
        step, epoch, gidx, views = next(self.it)
        self.data_times.append(time.perf_counter() - t)
        train_step(self.r, step, epoch, gidx, views)


def _stock_swin(cfg, device: torch.device) -> torch.nn.Module:
    from monai.networks.nets.swin_unetr import SwinTransformer

    return SwinTransformer(in_chans=1, embed_dim=cfg.embed_dim, window_size=(cfg.window_size,) * 3, patch_size=(2, 2, 2),
                           depths=cfg.depths, num_heads=cfg.num_heads, mlp_ratio=4.0, qkv_bias=True,
                           drop_path_rate=cfg.drop_path, norm_layer=torch.nn.LayerNorm, spatial_dims=3,
                           downsample="merging", use_v2=False).to(device)


class StockStep:
    """MONAI ``SwinTransformer`` forward + backward on (2·batch) crops; ``teacher=True`` adds one no-grad
    forward of a second copy (the teacher–student floor)."""

    def __init__(self, cfg, device: torch.device, teacher: bool) -> None:
        torch.manual_seed(0)
        self.net = _stock_swin(cfg, device)
        self.teacher = copy.deepcopy(self.net).eval() if teacher else None
        s = cfg.img_size
        self.x = torch.rand(2 * cfg.batch_size, 1, s, s, s, device=device)

    def __call__(self) -> None:
        if self.teacher is not None:
            with torch.no_grad():
                self.teacher(self.x)
        out = self.net(self.x)
        sum(o.float().mean() for o in out).backward()
        self.net.zero_grad(set_to_none=True)


class KernelStep:
    """One SMART step outside the loop on random crops (student, teacher, loss, backward, AdamW): for
    sizes and FLOP counts, where the loop's data would have to be regenerated per crop size."""

    def __init__(self, cfg, device: torch.device, batch: int) -> None:
        from smartlib.losses import SMARTLoss
        from smartlib.models.smart import SMARTNet
        from smartlib.pretrain import bf16_native, param_groups
        from smartlib.teacher import make_teacher

        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.student = SMARTNet(**cfg.model_kwargs()).to(device)
        self.teacher = make_teacher(self.student)
        self.loss = SMARTLoss(cfg.prototypes, (cfg.w_amip, cfg.w_ampd, cfg.w_aitd, cfg.w_gitd), cfg.student_temp,
                              cfg.center_momentum).to(device)
        self.opt = torch.optim.AdamW(param_groups(self.student), lr=1e-4, fused=cfg.fused_optimizer or None)
        self.amp = cfg.amp and bf16_native(device)
        s = cfg.img_size
        self.views = torch.rand(2, batch, 1, s, s, s, device=device)
        self.n = 0

    def __call__(self) -> float:
        """One step; returns its loss."""
        from smartlib.step import smart_step

        self.n += 1
        out = smart_step(self.cfg, self.teacher, self.student, self.views, [(0, self.n, k) for k in range(self.views.shape[1])],
                         criterion=self.loss, teacher_temp=0.04, amp=self.amp)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        return float(out.loss)


def interleave(configs: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device) -> dict[str, dict]:
    """Wall and CPU seconds per call of every configuration: ``warmup`` calls each, then ``rounds``
    rounds in which every configuration runs once, the order rotated by one each round."""
    names = list(configs)
    for n in names:
        for _ in range(warmup):
            configs[n]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            w, c = _clock(configs[n], device)
            wall[n].append(w)
            cpu[n].append(c)
    return {n: {"wall_s": statistics.median(wall[n]), "cpu_s": statistics.median(cpu[n]), "wall_min_s": min(wall[n]),
                "n": len(wall[n])} for n in names}


def phase_shares(step: LoopStep, n: int) -> dict[str, float]:
    """Share of the step's wall time in each ``smart/*`` region (profiler CPU time of the region), plus
    the data wait measured by the loop's clock."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    step.data_times.clear()
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
    total = time.perf_counter() - t
    got = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages() if e.key in PHASES}
    shares = {k.split("/")[1]: got.get(k, 0.0) / total for k in PHASES}
    shares["teacher"] -= shares["noise"]  # the noise region sits inside the teacher region
    shares["data_wait"] = sum(step.data_times) / total
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def count_flops(cfg, device: torch.device) -> int:
    """FLOPs of one SMART step (forward, backward) with MONAI's non-fused attention, fp32."""
    from torch.utils.flop_counter import FlopCounterMode

    step = KernelStep(apply_overrides(cfg, {"fast_attention": False, "amp": False}, "benchmark"), device, cfg.batch_size)
    with FlopCounterMode(display=False) as fc:
        step()
    return int(fc.get_total_flops())


def largest_batch(cfg, device: torch.device, limit: int) -> tuple[int, dict[int, float]]:
    """Double the batch from 1 until CUDA runs out of memory; (largest that fit, peak MiB per batch)."""
    fit, peaks, b = 0, {}, 1
    while b <= limit:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            KernelStep(cfg, device, b)()
        except torch.cuda.OutOfMemoryError:
            break
        peaks[b] = torch.cuda.max_memory_allocated(device) / 2**20
        fit, b = b, b * 2
    torch.cuda.empty_cache()
    return fit, peaks


def amp_tracking(cfg, device: torch.device, steps: int) -> dict[str, float]:
    """Largest relative difference of the loss over ``steps`` kernel steps, bf16 autocast vs fp32, same seed."""
    losses = {}
    for amp in (True, False):
        k = KernelStep(apply_overrides(cfg, {"amp": amp}, "benchmark"), device, cfg.batch_size)
        losses[amp] = [k() for _ in range(steps)]
    rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[True], losses[False])]
    return {"steps": steps, "max_rel_loss_diff": max(rel), "final_bf16": losses[True][-1], "final_fp32": losses[False][-1]}


# ------------------------------------------------------------------------------------------ main
def _machine(device: torch.device, threads: int) -> dict:
    import monai

    from smartlib.pretrain import bf16_native

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if device.type == "cpu":
        with contextlib.suppress(OSError):
            name = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    return {"device": name, "cores": os.cpu_count(), "threads": threads, "bf16_native": bf16_native(device),
            "torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def run(a: argparse.Namespace) -> dict:
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SmartError("--device cuda: no CUDA device visible")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.rounds < 1 or a.warmup < 1:
        raise SmartError("need --rounds ≥ 1 and --warmup ≥ 1")
    device = torch.device(a.device)
    over = {**parse_set(a.set), "device": a.device, "max_steps": 0}
    cfg = variant_config("smart", a.preset, over)
    cfg = apply_overrides(cfg, {"epochs": max(cfg.epochs, 1000)}, "benchmark")  # the loop never runs out of steps
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_speed_"))
    report: dict = {"preset": a.preset, "machine": _machine(device, torch.get_num_threads()),
                    "config": {k: getattr(cfg, k) for k in ("img_size", "embed_dim", "depths", "num_heads", "window_size",
                                                            "batch_size", "prototypes", *SWITCHES_OFF)}}
    m = report["machine"]
    print(f"{m['device']} ({m['cores']} cores, {m['threads']} threads, native bf16: {m['bf16_native']}); torch {m['torch']}, "
          f"MONAI {m['monai']}, Python {m['python']}; {m['date']}")
    print(f"preset {a.preset}: {cfg.img_size}³ crops, embed {cfg.embed_dim}, depths {tuple(cfg.depths)}, window {cfg.window_size}, "
          f"batch {cfg.batch_size} × 2 views; switches {({k: getattr(cfg, k) for k in SWITCHES_OFF})}")

    n = 4096 if device.type == "cuda" else 1024
    peak32 = matmul_peak(device, torch.float32, n)
    peak16 = matmul_peak(device, torch.bfloat16, n) if m["bf16_native"] else None
    report["peak_gflops"] = {"fp32": peak32, "bf16": peak16}
    print(f"\nmatmul peak ({n}²): fp32 {peak32:.1f} GFLOP/s" + (f", bf16 {peak16:.1f} GFLOP/s" if peak16 else ""))

    # ---- 2. interleaved step times
    configs = {
        "smart": LoopStep(cfg, work / "smart"),
        "smart_stock": LoopStep(apply_overrides(cfg, SWITCHES_OFF, "benchmark"), work / "smart_stock"),
        "smit": LoopStep(apply_overrides(variant_config("smit", a.preset, over), {"epochs": cfg.epochs}, "benchmark"), work / "smit"),
        "stock_fwd_bwd": StockStep(cfg, device, teacher=False),
        "floor": StockStep(cfg, device, teacher=True),
    }
    t0 = time.perf_counter()
    timing = interleave(configs, a.rounds, a.warmup, device)
    ref = timing["stock_fwd_bwd"]["wall_s"]
    report["timing"] = timing
    print(f"\nstep time, median of {a.rounds} interleaved rounds (rotated order, {a.warmup} warm-up calls each):")
    print(f"  {'configuration':15s} {'wall s':>8s} {'CPU s':>8s} {'min s':>8s} {'× stock':>8s}")
    for name, t in timing.items():
        print(f"  {name:15s} {t['wall_s']:8.3f} {t['cpu_s']:8.3f} {t['wall_min_s']:8.3f} {t['wall_s'] / ref:8.2f}")
    speedup = timing["smart_stock"]["wall_s"] / timing["smart"]["wall_s"]
    print(f"  smart_stock / smart = {speedup:.2f}× (the speed switches); samples/s: smart "
          f"{cfg.batch_size / timing['smart']['wall_s']:.2f}, stock {cfg.batch_size / timing['smart_stock']['wall_s']:.2f}")

    # ---- 3. phase shares
    shares = phase_shares(configs["smart"], max(3, a.rounds // 2))
    report["phase_shares"] = shares
    print("\nphase shares of the smart step (profiler): " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    print(f"  masking + teacher noise: {shares['mask'] + shares['noise']:.2%} of the step")
    for c in configs.values():  # free the memory of the interleaved configurations
        del c
    configs.clear()

    # ---- 4. cost per voxel
    per_voxel = {}
    for s in a.sizes:
        c = apply_overrides(cfg, {"img_size": s}, "benchmark")
        k = KernelStep(c, device, 1)
        t = interleave({s: k}, max(2, a.rounds // 3), 1, device)[s]["wall_s"]
        per_voxel[s] = t / (2 * s**3)
        del k
    base = per_voxel.get(64) or next(iter(per_voxel.values()))
    report["per_voxel_s"] = per_voxel
    print("\ncost per voxel of a SMART step (1 sample × 2 views), relative to 64³: "
          + ", ".join(f"{s}³ {v / base:.2f}× ({v * 1e9:.1f} ns)" for s, v in per_voxel.items()))

    # ---- 5. FLOPs and MFU
    flops = count_flops(cfg, device)
    achieved = flops / timing["smart"]["wall_s"] / 1e9
    peak = peak16 if (cfg.amp and peak16) else peak32
    report["flops_per_step"], report["achieved_gflops"], report["mfu"] = flops, achieved, achieved / peak
    print(f"\nFLOPs per smart step (MONAI's non-fused attention; the counter misses fused SDPA on CPU): {flops / 1e9:.2f} GFLOP; "
          f"achieved {achieved:.1f} GFLOP/s = {achieved / peak:.1%} MFU against the {'bf16' if peak is peak16 else 'fp32'} peak")

    # ---- 6. GPU only
    if device.type == "cuda":
        report["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        fit, peaks = largest_batch(cfg, device, a.max_batch)
        report["largest_batch"], report["peak_gpu_mib_by_batch"] = fit, peaks
        report["amp_tracking"] = amp_tracking(cfg, device, a.amp_steps)
        print(f"\npeak GPU memory {report['peak_gpu_mib']:.0f} MiB; largest batch {fit} ({peaks})")
        print(f"bf16 vs fp32: {report['amp_tracking']}")
    report["wall_s"] = time.perf_counter() - t0
    print(f"\nbenchmark wall time {report['wall_s']:.0f} s")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds (each configuration once per round)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up calls per configuration")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="crop edges for the cost per voxel")
    p.add_argument("--max-batch", type=int, default=64, help="GPU: stop the batch search here")
    p.add_argument("--amp-steps", type=int, default=10, help="GPU: steps of bf16 vs fp32 loss tracking")
    p.add_argument("--work", default=None, help="folder for the benchmark's runs (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    try:
        report = run(a)
    except SmartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.json:
        from smartlib.io import write_json

        write_json(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
