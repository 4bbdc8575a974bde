"""SMART pretraining loop (arXiv 2310.01209): read top to bottom in one sitting.

:func:`pretrain` = check the run folder → :func:`setup_run` (seed, data, student, teacher, loss, optimizer,
resume) → :func:`_train`: for each global step, :func:`train_step` = schedules → :func:`smartlib.step.smart_step` (noisy
teacher, attention-guided mask, student, losses) → backward, clip, freeze last layers, optimizer step
→ EMA teacher → DINO centers; then log → atomic checkpoint; at the end, export the teacher's encoder.

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
from torch.profiler import record_function

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

__all__ = ["pretrain", "param_groups", "CHECKPOINT", "load_run_config", "bf16_native", "TIMING_FIELDS", "Run", "setup_run", "train_step"]

CHECKPOINT = "checkpoint.pt"
#: the fields of a metrics.jsonl record that measure time (they differ between runs of the same steps)
TIMING_FIELDS = ("step_time", "data_time", "cpu_time", "samples_per_s")


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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _init_distributed(cfg)
    _check_run_folder(run, cfg, resume)
    if world > 1:
        dist.barrier()  # every process has checked the folder before rank 0 writes config.json into it
    r = setup_run(cfg, run, rank, world, resume, log, skip_bad)
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
class Run:
    """Everything the loop needs, built by :func:`setup_run`."""

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
    given: Callable | None = None  #: MSMAE hook: the supervised unit scorer of mask_mode "given" (else None)


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device``: CUDA, or a CPU with AVX512-BF16 / AMX (where
    oneDNN computes bf16 matrix products in hardware); elsewhere ``amp`` is ignored (bf16 would be emulated)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


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


def setup_run(cfg: PretrainConfig, run: Path, rank: int, world: int, resume: bool, log: Callable[[str], None],
           skip_bad: bool = False) -> Run:
    """Seed, data, student, teacher, loss, optimizer — restored from the checkpoint when resuming."""
    from .supervised_masking import given_scorer

    seed_everything(cfg.seed)
    given = given_scorer(cfg, run)  # MSMAE hook: mask_mode "given" loads its supervised checkpoint before any data
    device = _device(cfg)
    amp = cfg.amp and bf16_native(device)
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
    optimizer = torch.optim.AdamW(param_groups(student), lr=cfg.lr, betas=(0.9, 0.999), fused=cfg.fused_optimizer or None)
    if cfg.compile:
        student.encoder.compile()
        teacher.encoder.compile()
    if cfg.init_from:  # continued pretraining: another run's student and teacher (a resume below overrides them)
        _load_init_from(Path(cfg.init_from), student, teacher)
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
    return Run(cfg=cfg, path=run, rank=rank, world=world, device=device, amp=amp, data=data, student=student, teacher=teacher,
                model=model, criterion=criterion, optimizer=optimizer, steps_per_epoch=steps_per_epoch, total=total,
                warmup=int(round(cfg.warmup * total)), temp_warmup=int(round(cfg.teacher_temp_warmup * total)),
                start=start, stop=total if cfg.max_steps <= 0 else min(total, cfg.max_steps), given=given)


def _load_init_from(path: Path, student: SMARTNet, teacher: SMARTNet) -> None:
    """Load ``student`` and ``teacher`` from a run folder's (or a) checkpoint with strict key matching."""
    from .io import describe_key_mismatch

    ck = load_torch(path / CHECKPOINT if path.is_dir() else path)
    for name, net in (("student", student), ("teacher", teacher)):
        state = ck.get(name) if isinstance(ck, dict) else None
        if not isinstance(state, dict):
            raise SmartError(f"init_from={path}: holds no {name} weights (give a pretraining run folder or its {CHECKPOINT})")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = describe_key_mismatch(net.state_dict(), state) or str(exc).strip().splitlines()[-1]
            raise SmartError(f"init_from={path}: its {name} does not fit this run's architecture ({detail})") from None


# ------------------------------------------------------------------------------------------ loop
def _schedules(r: Run, step: int) -> dict[str, float]:
    """Learning rate, weight decay, EMA momentum and teacher temperature at global ``step``."""
    cfg = r.cfg
    return {"lr": warmup_cosine(step, r.total, r.warmup, cfg.lr, cfg.min_lr),
            "weight_decay": cosine(step, r.total, cfg.weight_decay, cfg.weight_decay_final),
            "momentum": momentum_at(step, r.total, cfg.momentum, cfg.momentum_final),
            "teacher_temp": linear_warmup_then_constant(step, r.temp_warmup, cfg.teacher_temp, cfg.teacher_temp_final)}


def _global_values(r: Run, out: StepResult) -> tuple[float, dict[str, float], float]:
    """(loss, terms, mask ratio) of the global batch: the same on every process."""
    loss_value, terms, mask_ratio = float(out.loss.detach()), out.terms, float(out.mask.float().mean())
    if r.world > 1:
        red = torch.tensor([loss_value, *terms.values(), mask_ratio], dtype=torch.float64, device=r.device)
        dist.all_reduce(red)
        red = (red / r.world).tolist()
        loss_value, terms, mask_ratio = red[0], dict(zip(terms, red[1:-1])), red[-1]
    return loss_value, terms, mask_ratio


def _update(r: Run, out: StepResult, epoch: int, momentum: float) -> None:
    """Backward, clip, freeze the heads' last layers in the first epochs, step; then EMA teacher and centers."""
    r.optimizer.zero_grad(set_to_none=True)
    with record_function("smart/backward"):
        out.loss.backward()
    with record_function("smart/optimizer"):
        if r.cfg.clip_grad > 0 and r.cfg.clip_mode == "per_param":
            for p in r.student.parameters():
                if p.grad is not None:
                    torch.nn.utils.clip_grad_norm_(p, r.cfg.clip_grad)
        elif r.cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(r.student.parameters(), r.cfg.clip_grad)
        if epoch < r.cfg.freeze_last_layer:
            for p in r.student.last_layers():
                p.grad = None
        r.optimizer.step()
    with record_function("smart/ema"):
        ema_update(r.teacher, r.student, momentum)
        r.criterion.update_centers(out.teacher_logits)


def train_step(r: Run, step: int, epoch: int, gidx: list[int], views: torch.Tensor) -> dict[str, float]:
    """One global step ``step`` (of ``epoch``) on this process's ``views`` (2, b, 1, S, S, S) of the global
    batch ``gidx``: schedules → :func:`smartlib.step.smart_step` → :func:`_update`. Returns the step's record
    (loss and terms of the global batch, schedules, mask ratio); a non-finite loss is a SmartError."""
    cfg = r.cfg
    local_b = cfg.batch_size // r.world
    mine = range(r.rank * local_b, (r.rank + 1) * local_b)  # this process's positions in the global batch
    views = views.to(r.device, non_blocking=True)
    sched = _schedules(r, step)
    for g in r.optimizer.param_groups:
        g["lr"] = sched["lr"]
        if g["apply_wd"]:
            g["weight_decay"] = sched["weight_decay"]
    out = smart_step(cfg, r.teacher, r.model, views, [(cfg.seed, step, gidx[j]) for j in mine],
                     criterion=r.criterion, teacher_temp=sched["teacher_temp"], amp=r.amp,
                     given_scores=None if r.given is None else r.given(views.flatten(0, 1)))  # MSMAE hook
    loss_value, terms, mask_ratio = _global_values(r, out)
    if not math.isfinite(loss_value):
        ckpt_path = r.path / CHECKPOINT
        kept = f"last good checkpoint {ckpt_path} kept" if ckpt_path.exists() else "no checkpoint written yet"
        raise SmartError(f"{r.path}: step {step}: loss is {loss_value} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                         f"stopped, {kept}")
    _update(r, out, epoch, sched["momentum"])
    return {"step": step, "epoch": epoch, "loss": loss_value, **terms, **sched, "mask_ratio": mask_ratio}


def _train(r: Run, progress: bool) -> None:
    """Steps ``r.start .. r.stop - 1``: one :func:`smart_step` and one update each, logged and checkpointed."""
    cfg, rank = r.cfg, r.rank
    metrics_path = r.path / "metrics.jsonl"
    if rank == 0:
        _truncate_metrics(metrics_path, r.start)
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=r.stop, initial=r.start, desc=r.path.name, unit="step", dynamic_ncols=True)
    metrics_fh = open(metrics_path, "a") if rank == 0 else None
    try:
        t_end = time.perf_counter()
        for step, epoch, gidx, views in batches(r.data, cfg, r.start, r.stop, r.steps_per_epoch, rank, r.world):
            t0, c0 = time.perf_counter(), time.process_time()
            data_time = t0 - t_end  # waiting for this step's views (0 when prefetched in time)
            rec = train_step(r, step, epoch, gidx, views)
            t_end = time.perf_counter()
            dt = t_end - t0
            if rank == 0:
                rec.update(step_time=dt, data_time=data_time, cpu_time=time.process_time() - c0,
                           samples_per_s=cfg.batch_size / dt)
                if (step % cfg.log_every == 0) or step == r.stop - 1:
                    metrics_fh.write(json.dumps(rec) + "\n")
                    metrics_fh.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == r.stop:
                _checkpoint(r, step + 1)
                t_end = time.perf_counter()  # a checkpoint's write is not data time
    finally:
        if bar is not None:
            bar.close()
        if metrics_fh is not None:
            metrics_fh.close()


# ------------------------------------------------------------------------------------------ files
def _checkpoint(r: Run, step: int) -> None:
    if r.rank != 0:
        return
    save_torch({"step": step, "student": r.student.state_dict(), "teacher": r.teacher.state_dict(),
                "loss": r.criterion.state_dict(), "optimizer": r.optimizer.state_dict(), "rng": rng_state()}, r.path / CHECKPOINT)


def _finish(r: Run, wall_s: float) -> None:
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
