"""SMART pretraining loop (arXiv 2310.01209): read top to bottom in one sitting.

:func:`pretrain` = check the run folder → :func:`_setup` (seed, data, student, teacher, loss, optimizer,
resume) → :func:`_train`: for each global step, schedules → :func:`smartlib.step.smart_step` (noisy
teacher, attention-guided mask, student, losses) → backward, clip, freeze last layers, optimizer step
→ EMA teacher → DINO centers → log → atomic checkpoint; then export the teacher's encoder.

Exact resume: all randomness is either keyed by (seed, step, sample) — data crops, masks, teacher
noise (:mod:`smartlib.pretrain_data`) — or held in the global RNGs, whose states the checkpoint
stores; schedules are functions of the global step. Runs under ``torchrun`` with
DistributedDataParallel (each process takes its slice of the global batch; the keyed randomness
makes the result independent of the process count).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .config import PretrainConfig, config_from_json
from .errors import SmartError
from .io import atomic_path, check_out_dir, load_torch, save_torch, write_json
from .losses import SMARTLoss
from .models.smart import SMARTNet, export_encoder
from .pretrain_data import PretrainData, batches, pretrain_records
from .schedules import cosine, linear_warmup_then_constant, warmup_cosine
from .seed import rng_state, seed_everything, set_rng_state
from .step import StepResult, smart_step
from .teacher import ema_update, make_teacher, momentum_at

__all__ = ["pretrain", "param_groups", "CHECKPOINT", "load_run_config"]

CHECKPOINT = "checkpoint.pt"


def param_groups(model: torch.nn.Module) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only — none on biases, norms, or tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "token" in name else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


def load_run_config(run_dir: str | Path) -> PretrainConfig:
    """The :class:`PretrainConfig` a run folder was started with (its ``config.json``)."""
    return config_from_json(Path(run_dir) / "config.json")


# ------------------------------------------------------------------------------------------ entry point
def pretrain(cfg: PretrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] = print, skip_bad: bool = False) -> Path:
    """Pretrain SMART into ``out`` (config.json, metrics.jsonl, checkpoint.pt, encoder.pt, summary.json).

    Everything that can be checked is checked before any data is made or any model built: the
    config (with its ``device`` on this machine), the run folder, and every input volume (header and
    readability, :func:`smartlib.data.checks.preflight`; a bad one stops the run before its first step
    unless ``skip_bad``, which excludes it with a listed warning). ``out`` is created, and its
    ``config.json`` written, only once the data and the model are ready, so a run that fails
    before that leaves ``out`` as it was.
    """
    run = Path(out)
    cfg.validate()  # machine checks too (device)
    rank, world = _init_distributed(cfg)
    _check_run_folder(run, cfg, resume)
    if world > 1:
        dist.barrier()  # every process has checked the folder before rank 0 writes config.json into it
    r = _setup(cfg, run, rank, world, resume, log, skip_bad)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        write_json(run / "config.json", cfg.to_dict())
    t_run = time.perf_counter()
    _train(r, progress)
    if rank == 0:
        _finish(r, time.perf_counter() - t_run)
    if world > 1:
        dist.barrier()
    return run


# ------------------------------------------------------------------------------------------ run folder
def _init_distributed(cfg: PretrainConfig) -> tuple[int, int]:
    """Join the process group under ``torchrun``; (rank, world size), (0, 1) without one."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if cfg.batch_size % world:
        raise SmartError(f"batch_size={cfg.batch_size}: not divisible by the {world} processes")
    return rank, world


def _check_run_folder(run: Path, cfg: PretrainConfig, resume: bool) -> None:
    """Refuse an ``out`` that cannot be a folder, to overwrite a run, and to resume one with another config.

    A run exists once it has a checkpoint: a folder holding only the ``config.json`` and
    ``metrics.jsonl`` of a run that failed before its first checkpoint is started afresh (both are
    replaced). ``max_steps`` may differ on resume.
    """
    check_out_dir(run, "--out")
    if (run / CHECKPOINT).exists() and not resume:
        raise SmartError(f"{run}: a run already exists here (pass --resume to continue it, or choose another --out)")
    if resume and (run / CHECKPOINT).exists():
        saved = config_from_json(run / "config.json").to_dict()
        diff = [k for k, v in cfg.to_dict().items() if saved[k] != v and k != "max_steps"]
        if diff:
            raise SmartError(f"{run}: --resume with a different config ({', '.join(diff)}); resume with the run's own settings")


# ------------------------------------------------------------------------------------------ setup
@dataclasses.dataclass
class _Run:
    """Everything the loop needs, built by :func:`_setup`."""

    cfg: PretrainConfig
    path: Path
    rank: int
    world: int
    device: torch.device
    amp: bool
    data: PretrainData
    student: SMARTNet
    teacher: SMARTNet
    model: torch.nn.Module  #: the student, wrapped in DDP when world > 1
    criterion: SMARTLoss
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int
    total: int  #: steps of the whole schedule
    warmup: int  #: learning-rate warm-up steps
    temp_warmup: int  #: teacher-temperature warm-up steps
    start: int  #: first step to run (after a resume)
    stop: int  #: one past the last step to run (``max_steps``)


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def _checked(records: list[dict], cfg: PretrainConfig, skip_bad: bool, log: Callable[[str], None]) -> list[dict]:
    """Every record checked before the first step: warnings are logged, a bad record stops the run or,
    with ``skip_bad``, is excluded with a listed warning."""
    from .data.checks import WARNING_PREFIX, preflight

    usable, problems = preflight(records, cfg.img_size, cfg.spacing or None)
    bad = [p for p in problems if not p.startswith(WARNING_PREFIX)]
    for p in problems:
        if p.startswith(WARNING_PREFIX):
            log(p)
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SmartError(f"{bad[0]}{more}; fix or remove the volume, or pass --skip-bad to exclude bad volumes")
    for p in bad:
        log(f"warning: skipped: {p}")
    if not usable:
        raise SmartError(f"data={cfg.data!r}: no usable volumes to pretrain on ({len(records)} checked)")
    return usable


def _setup(cfg: PretrainConfig, run: Path, rank: int, world: int, resume: bool, log: Callable[[str], None],
           skip_bad: bool = False) -> _Run:
    """Seed, data, student, teacher, loss, optimizer — restored from the checkpoint when resuming."""
    seed_everything(cfg.seed)
    device = _device(cfg)
    amp = cfg.amp and device.type == "cuda"
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 generates (or checks) the phantom cache first; the others then read it
    records = _checked(pretrain_records(cfg, run), cfg, skip_bad, log)
    if world > 1 and rank == 0:
        dist.barrier()
    data = PretrainData(cfg, records)
    steps_per_epoch = len(data) // cfg.batch_size
    if steps_per_epoch == 0:
        raise SmartError(f"batch_size={cfg.batch_size} is larger than the {len(data)} volumes available")
    total = steps_per_epoch * cfg.epochs

    student = SMARTNet(**cfg.model_kwargs()).to(device)
    teacher = make_teacher(student)  # exact copy; on resume it is overwritten by the saved teacher
    criterion = SMARTLoss(cfg.prototypes, (cfg.w_amip, cfg.w_ampd, cfg.w_aitd, cfg.w_gitd), cfg.student_temp, cfg.center_momentum).to(device)
    optimizer = torch.optim.AdamW(param_groups(student), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
    ckpt_path = run / CHECKPOINT
    if resume and ckpt_path.exists():
        ck = load_torch(ckpt_path)
        student.load_state_dict(ck["student"], strict=True)
        teacher.load_state_dict(ck["teacher"], strict=True)
        criterion.load_state_dict(ck["loss"], strict=True)
        optimizer.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        start = int(ck["step"])
        log(f"resumed {run} at step {start}/{total}")
    elif resume:
        log(f"{ckpt_path} not found: starting {run} from scratch")
    model = DDP(student, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else student
    return _Run(cfg=cfg, path=run, rank=rank, world=world, device=device, amp=amp, data=data, student=student, teacher=teacher,
                model=model, criterion=criterion, optimizer=optimizer, steps_per_epoch=steps_per_epoch, total=total,
                warmup=int(round(cfg.warmup * total)), temp_warmup=int(round(cfg.teacher_temp_warmup * total)),
                start=start, stop=total if cfg.max_steps <= 0 else min(total, cfg.max_steps))


# ------------------------------------------------------------------------------------------ loop
def _schedules(r: _Run, step: int) -> dict[str, float]:
    """Learning rate, weight decay, EMA momentum and teacher temperature at global ``step``."""
    cfg = r.cfg
    return {"lr": warmup_cosine(step, r.total, r.warmup, cfg.lr, cfg.min_lr),
            "weight_decay": cosine(step, r.total, cfg.weight_decay, cfg.weight_decay_final),
            "momentum": momentum_at(step, r.total, cfg.momentum, cfg.momentum_final),
            "teacher_temp": linear_warmup_then_constant(step, r.temp_warmup, cfg.teacher_temp, cfg.teacher_temp_final)}


def _global_values(r: _Run, out: StepResult) -> tuple[float, dict[str, float], float]:
    """(loss, terms, mask ratio) of the global batch: the same on every process."""
    loss_value, terms, mask_ratio = float(out.loss.detach()), out.terms, float(out.mask.float().mean())
    if r.world > 1:
        red = torch.tensor([loss_value, *terms.values(), mask_ratio], dtype=torch.float64, device=r.device)
        dist.all_reduce(red)
        red = (red / r.world).tolist()
        loss_value, terms, mask_ratio = red[0], dict(zip(terms, red[1:-1])), red[-1]
    return loss_value, terms, mask_ratio


def _update(r: _Run, out: StepResult, epoch: int, momentum: float, last_params: set[int]) -> None:
    """Backward, clip, freeze the heads' last layers in the first epochs, step; then EMA teacher and centers."""
    r.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if r.cfg.clip_grad > 0 and r.cfg.clip_mode == "per_param":
        for p in r.student.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, r.cfg.clip_grad)
    elif r.cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(r.student.parameters(), r.cfg.clip_grad)
    if epoch < r.cfg.freeze_last_layer:
        for p in r.student.parameters():
            if id(p) in last_params:
                p.grad = None
    r.optimizer.step()
    ema_update(r.teacher, r.student, momentum)
    r.criterion.update_centers(out.teacher_logits)


def _train(r: _Run, progress: bool) -> None:
    """Steps ``r.start .. r.stop - 1``: one :func:`smart_step` and one update each, logged and checkpointed."""
    cfg, rank = r.cfg, r.rank
    local_b = cfg.batch_size // r.world
    mine = list(range(rank * local_b, (rank + 1) * local_b))  # this process's positions in the global batch
    ckpt_path, metrics_path = r.path / CHECKPOINT, r.path / "metrics.jsonl"
    if rank == 0:
        _truncate_metrics(metrics_path, r.start)
    last_params = {id(p) for p in r.student.last_layers()}
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=r.stop, initial=r.start, desc=r.path.name, unit="step", dynamic_ncols=True)
    metrics_fh = open(metrics_path, "a") if rank == 0 else None
    try:
        for step, epoch, gidx, views in batches(r.data, cfg, r.start, r.stop, r.steps_per_epoch, rank, r.world):
            t0 = time.perf_counter()
            views = views.to(r.device, non_blocking=True)  # (2, b, 1, S, S, S)
            sched = _schedules(r, step)
            for g in r.optimizer.param_groups:
                g["lr"] = sched["lr"]
                if g["apply_wd"]:
                    g["weight_decay"] = sched["weight_decay"]

            out = smart_step(cfg, r.teacher, r.model, views, [(cfg.seed, step, gidx[j]) for j in mine],
                             criterion=r.criterion, teacher_temp=sched["teacher_temp"], amp=r.amp)
            loss_value, terms, mask_ratio = _global_values(r, out)
            if not math.isfinite(loss_value):
                kept = f"last good checkpoint {ckpt_path} kept" if ckpt_path.exists() else "no checkpoint written yet"
                raise SmartError(f"{r.path}: step {step}: loss is {loss_value} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                                 f"stopped, {kept}")
            _update(r, out, epoch, sched["momentum"], last_params)

            dt = time.perf_counter() - t0
            if rank == 0:
                rec = {"step": step, "epoch": epoch, "loss": loss_value, **terms, **sched, "mask_ratio": mask_ratio,
                       "step_time": dt, "samples_per_s": cfg.batch_size / dt}
                if (step % cfg.log_every == 0) or step == r.stop - 1:
                    metrics_fh.write(json.dumps(rec) + "\n")
                    metrics_fh.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == r.stop:
                _checkpoint(r, step + 1)
    finally:
        if bar is not None:
            bar.close()
        if metrics_fh is not None:
            metrics_fh.close()


# ------------------------------------------------------------------------------------------ files
def _checkpoint(r: _Run, step: int) -> None:
    if r.rank != 0:
        return
    save_torch({"step": step, "student": r.student.state_dict(), "teacher": r.teacher.state_dict(),
                "loss": r.criterion.state_dict(), "optimizer": r.optimizer.state_dict(), "rng": rng_state()}, r.path / CHECKPOINT)


def _finish(r: _Run, wall_s: float) -> None:
    """Export the teacher's encoder and write the run summary (rank 0)."""
    export_encoder(r.teacher, r.path / "encoder.pt")
    dev = r.device
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(r.path / "summary.json", {"steps_done": r.stop, "steps_total": r.total, "complete": r.stop == r.total,
                                         "wall_s_this_process": wall_s, "peak_mem_mib": peak,
                                         "device": str(dev), "world_size": r.world,
                                         "params_m": sum(p.numel() for p in r.student.parameters()) / 1e6})


def _truncate_metrics(path: Path, start: int) -> None:
    """Drop metric lines from steps at or after ``start`` (they are recomputed on resume)."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:  # a line cut short by a kill mid-write
            continue
        if rec["step"] < start:
            keep.append(ln)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))
