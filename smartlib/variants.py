"""The pretraining variants the book compares — one table — each pretrained once per preset and reused.

:data:`VARIANTS` maps a name to a :class:`Variant`: its config overrides (on top of the preset's
pretraining config), a one-line description, and, for the four variants of the ablation chapter's
semantic-attention × noisy-teacher grid, its cell (:data:`TWO_BY_TWO` lists them in grid order).

``pretrained(variant, preset, runs_dir)`` returns the exported encoder of
``runs_dir/pretrain/<variant>``, pretraining (or resuming) it first if needed, so
every chapter can ask for the checkpoints it needs and the book trains each once.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import pretrain_config
from .errors import SmartError

__all__ = ["Variant", "VARIANTS", "TWO_BY_TWO", "variant_config", "pretrained", "pretrain_variants", "run_dir"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One pretraining variant: ``overrides`` of the pretraining config, and what they mean.

    ``grid_cell`` is ``(semantic attention on, teacher noisy)`` for the variants of the 2×2 ablation
    grid (SMART, arXiv 2310.01209, against SMIT, arXiv 2205.10342), None for the others.
    """

    name: str
    overrides: dict[str, Any]
    description: str
    grid_cell: tuple[bool, bool] | None = None


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("smart", {}, "SMART: semantic attention + noisy teacher + attention-guided masking", (True, True)),
    Variant("smit", {"semantic_attention": False, "mask_mode": "random", "teacher_drop": 0.0},
            "SMIT-style: no semantic attention, clean teacher, random masking", (False, False)),
    Variant("sa_clean", {"teacher_drop": 0.0}, "semantic attention + attention masking, clean teacher", (True, False)),
    Variant("noise_no_sa", {"semantic_attention": False, "mask_mode": "random"},
            "noisy teacher without semantic attention (random masking)", (False, True)),
    Variant("random_mask", {"mask_mode": "random"}, "SMART with random instead of attention-guided masking"),
    Variant("low_attention", {"mask_mode": "low_attention"}, "SMART masking the least-attended units (MST-style)"),
    Variant("mim_only", {"w_ampd": 0.0, "w_aitd": 0.0, "w_gitd": 0.0}, "SMART with AMIP alone (no distillation terms)"),
    Variant("smart_supervised", {"mask_mode": "given", "given_attention": "msmae"},
            "SMART masking the units of highest supervised (MSMAE nodule-classifier) attention"),
)}

#: the 2×2 grid's variants, semantic attention on before off, noisy teacher before clean:
#: ("smart", "sa_clean", "noise_no_sa", "smit")
TWO_BY_TWO: tuple[str, ...] = tuple(v.name for v in sorted((v for v in VARIANTS.values() if v.grid_cell),
                                                            key=lambda v: (not v.grid_cell[0], not v.grid_cell[1])))


def variant_config(variant: str, preset: str, overrides: dict[str, Any] | None = None):
    """The :class:`PretrainConfig` of ``variant`` at ``preset``."""
    if variant not in VARIANTS:
        raise SmartError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return pretrain_config(preset, {**VARIANTS[variant].overrides, **(overrides or {})})


def run_dir(variant: str, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "pretrain" / variant


def pretrained(variant: str, preset: str, runs_dir: str | Path, overrides: dict[str, Any] | None = None,
               progress: bool = False, log: Callable[[str], None] = print, name: str | None = None) -> Path:
    """Path of ``variant``'s exported encoder, pretraining or resuming it first when needed.

    ``name`` (default: the variant's) is the run folder under ``runs_dir/pretrain``: a variant with
    ``overrides`` (another pool, crop size, …) needs its own name so that it never meets the plain variant's run.
    """
    cfg = variant_config(variant, preset, overrides)
    run = run_dir(name or variant, runs_dir)
    with _run_lock(run):  # two notebooks side by side asking for one run: the second waits, then reuses it
        return _pretrained(variant, cfg, preset, runs_dir, run, progress, log)


@contextlib.contextmanager
def _run_lock(run: Path) -> Iterator[None]:
    """An exclusive lock on ``run`` across processes (``fcntl.flock`` on a file beside it; none where
    there is no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    run.parent.mkdir(parents=True, exist_ok=True)
    with open(run.parent / f".{run.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pretrained(variant: str, cfg, preset: str, runs_dir: str | Path, run: Path, progress: bool,
                log: Callable[[str], None]) -> Path:
    from .io import read_json
    from .pretrain import pretrain

    enc = run / "encoder.pt"
    if _complete(run, cfg):
        return enc
    if cfg.mask_mode == "given" and cfg.given_attention == "msmae":  # its supervised attention: this runs folder's MSMAE
        from .mae import mae_run_dir, pretrained_mae

        sup = mae_run_dir("msmae", runs_dir)
        if not ((sup / "encoder.pt").is_file() and (sup / "summary.json").is_file() and read_json(sup / "summary.json").get("complete")):
            pretrained_mae("msmae", preset, runs_dir, log=log)
    log(f"pretraining {variant} ({VARIANTS[variant].description}) at preset {preset} → {run}")
    pretrain(cfg, run, resume=run.exists() and (run / "config.json").exists(), progress=progress, log=log)
    return enc


def _complete(run: Path, cfg) -> bool:
    """``run`` holds a finished run of ``cfg`` (a run of another configuration there is a SmartError)."""
    from .config import config_from_json
    from .io import read_json

    if not ((run / "encoder.pt").exists() and (run / "summary.json").exists()):
        return False
    if config_from_json(run / "config.json").to_dict() != cfg.to_dict():
        raise SmartError(f"{run}: holds a run with another configuration; remove it or use another runs_dir")
    return bool(read_json(run / "summary.json").get("complete"))


def pretrain_variants(variants: list[str], preset: str, runs_dir: str | Path, jobs: int = 1,
                      log: Callable[[str], None] = print) -> dict[str, Path]:
    """Every variant's exported encoder, pretraining the missing ones ``jobs`` at a time.

    ``jobs`` 1 runs them one after another in this process (:func:`pretrained`). ``jobs`` > 1 runs each
    in its own ``smart pretrain`` process with one CPU thread, ``jobs`` at a time: on a small CPU two
    single-thread runs side by side finish sooner than the same runs one after another with every core
    (a small 3D Swin keeps two threads only partly busy; ``benchmarks/bench_speed.py --threads 1``
    measures both). The runs are the same as in-process ones (same config; an interrupted run is resumed),
    and a failed run is one SmartError naming the variant and its last output line.
    """
    import os
    import subprocess
    import sys
    import tempfile
    import time

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SmartError(f"variants {unknown}: expected names from {', '.join(VARIANTS)}")
    if not isinstance(jobs, int) or jobs < 1:
        raise SmartError(f"jobs={jobs!r}: must be a positive integer")
    todo = [v for v in dict.fromkeys(variants) if not _complete(run_dir(v, runs_dir), variant_config(v, preset))]
    if jobs == 1 or len(todo) <= 1 or any(variant_config(v, preset).mask_mode == "given" for v in todo):
        return {v: pretrained(v, preset, runs_dir, log=log) for v in variants}
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="smart_pretrain_") as tmp:
        while todo or running:
            while todo and len(running) < jobs and not failed:
                v = todo.pop(0)
                run = run_dir(v, runs_dir)
                cmd = [sys.executable, "-m", "smartlib.cli", "pretrain", "--preset", preset, "--variant", v,
                       "--out", str(run), "--no-progress"] + (["--resume"] if (run / "config.json").exists() else [])
                out = Path(tmp) / f"{v}.log"
                log(f"pretraining {v} ({VARIANTS[v].description}) at preset {preset} → {run} [one of {jobs} parallel runs]")
                with open(out, "w") as fh:
                    running[v] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), out, time.perf_counter())
            time.sleep(0.5)
            for v, (proc, out, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[v]
                if proc.returncode != 0:
                    lines = [ln for ln in out.read_text(errors="replace").splitlines() if ln.strip()]
                    failed.append(f"pretraining {v} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
                else:
                    log(f"{v}: done in {time.perf_counter() - t0:.0f} s")
            if failed and not running:
                raise SmartError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    return {v: run_dir(v, runs_dir) / "encoder.pt" for v in variants}
