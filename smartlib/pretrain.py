"""SMART pretraining loop: read top to bottom in one sitting.

setup (seed, data, student, teacher, optimizer) → resume → for each global step:
schedules → teacher on noised views (targets + attention) → masks → student on masked views →
losses → backward, clip, step → EMA → centers → log → atomic checkpoint.

Exact resume: all randomness is either keyed by (seed, step, sample) — data crops, masks, teacher
noise — or held in the global RNGs, whose states the checkpoint stores; schedules are functions
of the global step. Runs under ``torchrun`` with DistributedDataParallel (each process takes its
slice of the global batch; the keyed randomness makes the result independent of the process count).
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .config import PretrainConfig
from .errors import SmartError
from .io import atomic_path, load_torch, save_torch, write_json
from .losses import SMARTLoss
from .masking import make_mask, patch_dropout, upsample_mask
from .models.smart import UNIT, SMARTNet, export_encoder
from .schedules import linear_warmup_then_constant, warmup_cosine, cosine
from .seed import rng_state, seed_everything, set_rng_state
from .teacher import ema_update, make_teacher, momentum_at, noisy_view

__all__ = ["pretrain", "PretrainData", "param_groups", "CHECKPOINT", "load_run_config"]

CHECKPOINT = "checkpoint.pt"


def _key(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash of ints is not salted, but be explicit)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def _gen(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_key(*parts))


# ------------------------------------------------------------------------------------------ data
class PretrainData:
    """Records → two random views per volume, deterministic per (seed, epoch, index).

    The deterministic head of the MONAI pipeline (load, orient, resample, window, pad) is cached
    in memory when ``cache="memory"``; the random tail (two crops, flips) is re-seeded per item.
    """

    def __init__(self, cfg: PretrainConfig, records: list[dict]) -> None:
        from monai.transforms import Randomizable

        from .data.transforms import pretrain_transforms

        if not records:
            raise SmartError(f"data={cfg.data!r}: no volumes to pretrain on")
        full = pretrain_transforms(roi=cfg.img_size, spacing=cfg.spacing or None, hu_window=(cfg.hu_min, cfg.hu_max), num_views=2)
        ts = list(full.transforms)
        first_random = next((i for i, t in enumerate(ts) if isinstance(t, Randomizable)), len(ts))
        self.head, self.tail = type(full)(ts[:first_random]), type(full)(ts[first_random:])
        self.records, self.seed = records, cfg.seed
        self.cache: dict[int, Any] = {}
        self.keep = cfg.cache == "memory"

    def __len__(self) -> int:
        return len(self.records)

    def _head(self, i: int) -> Any:
        if i in self.cache:
            return self.cache[i]
        try:
            item = self.head(dict(self.records[i]))
        except SmartError:
            raise
        except Exception as exc:  # MONAI wraps reader errors; name the file
            raise SmartError(f"{self.records[i].get('image')}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        if self.keep:
            self.cache[i] = item
        return item

    def views(self, i: int, epoch: int) -> torch.Tensor:
        """Two views of volume ``i`` for ``epoch``: (2, 1, S, S, S) float32 in [0, 1]."""
        self.tail.set_random_state(seed=_key(self.seed, epoch, i) % (2**32))
        out = self.tail(dict(self._head(i)))
        return torch.stack([torch.as_tensor(np.asarray(v["image"])) for v in out]).float()

    def epoch_order(self, epoch: int) -> list[int]:
        return torch.randperm(len(self), generator=_gen(self.seed, epoch, 7)).tolist()


class _Items(torch.utils.data.Dataset):
    """(epoch, volume index) pairs → two views; lets a DataLoader's workers prepare batches."""

    def __init__(self, data: PretrainData, items: list[tuple[int, int]]) -> None:
        self.data, self.items = data, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> torch.Tensor:
        epoch, i = self.items[k]
        return self.data.views(i, epoch)


def _batches(data: PretrainData, cfg: PretrainConfig, start: int, stop: int, spe: int, rank: int, world: int):
    """Yield (step, epoch, global batch indices, views (2, b, 1, S, S, S)) for steps start..stop-1.

    The global batch of step s is ``order(epoch)[it·B:(it+1)·B]``; process ``rank`` takes its slice.
    """
    B, b = cfg.batch_size, cfg.batch_size // world
    step = start
    while step < stop:
        epoch, it0 = divmod(step, spe)
        order = data.epoch_order(epoch)
        n = min(spe - it0, stop - step)
        glob = [order[(it0 + s) * B:(it0 + s + 1) * B] for s in range(n)]
        items = [(epoch, g[rank * b + j]) for g in glob for j in range(b)]
        loader = torch.utils.data.DataLoader(_Items(data, items), batch_size=b, shuffle=False, num_workers=cfg.num_workers,
                                             collate_fn=lambda xs: torch.stack(xs, dim=1), pin_memory=torch.cuda.is_available())
        for s, views in enumerate(loader):
            yield step, epoch, glob[s], views
            step += 1


def _records(cfg: PretrainConfig, run_dir: Path) -> list[dict]:
    from .data.loaders import resolve_data

    if cfg.data == "phantom":
        from .data.tasks import make_task

        root = run_dir.parent / "_data" / f"pretrain-n{cfg.n_volumes}-s{cfg.phantom_shape}-seed{cfg.data_seed}"
        manifest = make_task("pretrain", n=cfg.n_volumes, seed=cfg.data_seed, out=root, shape=cfg.phantom_shape)
        return resolve_data(str(manifest), "pretrain")
    return resolve_data(cfg.data, "pretrain")


# ------------------------------------------------------------------------------------------ model
def param_groups(model: torch.nn.Module) -> list[dict]:
    """AdamW groups: weight decay on weight matrices only — none on biases, norms, or tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "token" in name else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "weight_decay": 0.0, "apply_wd": False}]


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def load_run_config(run_dir: str | Path) -> PretrainConfig:
    from .config import config_from_json

    return config_from_json(Path(run_dir) / "config.json")


# ------------------------------------------------------------------------------------------ loop
def pretrain(cfg: PretrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] = print) -> Path:
    """Pretrain SMART into ``out`` (config.json, metrics.jsonl, checkpoint.pt, encoder.pt, summary.json)."""
    run = Path(out)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = _dist()
    if cfg.batch_size % world:
        raise SmartError(f"batch_size={cfg.batch_size}: not divisible by the {world} processes")
    ckpt_path = run / CHECKPOINT
    if run.exists() and (run / "config.json").exists() and not resume:
        raise SmartError(f"{run}: a run already exists here (pass --resume to continue it, or choose another --out)")
    if resume and ckpt_path.exists():
        from .config import config_from_json

        saved = config_from_json(run / "config.json")
        if {k: v for k, v in saved.to_dict().items() if k != "max_steps"} != {k: v for k, v in cfg.to_dict().items() if k != "max_steps"}:
            cfg_diff = [k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v and k != "max_steps"]
            raise SmartError(f"{run}: --resume with a different config ({', '.join(cfg_diff)}); resume with the run's own settings")
    if world > 1:
        dist.barrier()  # every process has checked the folder before rank 0 writes config.json into it
    run.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        write_json(run / "config.json", cfg.to_dict())

    seed_everything(cfg.seed)
    device = _device(cfg)
    amp = cfg.amp and device.type == "cuda"
    if world > 1 and rank != 0:
        dist.barrier()  # rank 0 generates (or checks) the phantom cache first; the others then read it
    records = _records(cfg, run)
    if world > 1 and rank == 0:
        dist.barrier()
    data = PretrainData(cfg, records)
    local_b = cfg.batch_size // world
    steps_per_epoch = len(data) // cfg.batch_size
    if steps_per_epoch == 0:
        raise SmartError(f"batch_size={cfg.batch_size} is larger than the {len(data)} volumes available")
    total = steps_per_epoch * cfg.epochs
    warmup = int(round(cfg.warmup * total))
    temp_warmup = int(round(cfg.teacher_temp_warmup * total))

    student = SMARTNet(**cfg.model_kwargs()).to(device)
    teacher = make_teacher(student)  # exact copy; on resume it is overwritten by the saved teacher
    criterion = SMARTLoss(cfg.prototypes, (cfg.w_amip, cfg.w_ampd, cfg.w_aitd, cfg.w_gitd), cfg.student_temp, cfg.center_momentum).to(device)
    optimizer = torch.optim.AdamW(param_groups(student), lr=cfg.lr, betas=(0.9, 0.999))
    start = 0
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
    metrics_path = run / "metrics.jsonl"
    if rank == 0:
        _truncate_metrics(metrics_path, start)
    stop = total if cfg.max_steps <= 0 else min(total, cfg.max_steps)
    grid = cfg.img_size // UNIT
    N = grid**3
    last_params = {id(p) for p in student.last_layers()}

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=start, desc=run.name, unit="step", dynamic_ncols=True)
    t_run = time.perf_counter()
    metrics_fh = open(metrics_path, "a") if rank == 0 else None
    try:
        for step, epoch, gidx, views in _batches(data, cfg, start, stop, steps_per_epoch, rank, world):
            t0 = time.perf_counter()
            mine = list(range(rank * local_b, (rank + 1) * local_b))  # positions in the global batch
            views = views.to(device, non_blocking=True)  # (2, b, 1, S, S, S)

            # ---- schedules (all indexed by the global step)
            lr = warmup_cosine(step, total, warmup, cfg.lr, cfg.min_lr)
            wd = cosine(step, total, cfg.weight_decay, cfg.weight_decay_final)
            m = momentum_at(step, total, cfg.momentum, cfg.momentum_final)
            t_temp = linear_warmup_then_constant(step, temp_warmup, cfg.teacher_temp, cfg.teacher_temp_final)
            for g in optimizer.param_groups:
                g["lr"] = lr
                if g["apply_wd"]:
                    g["weight_decay"] = wd

            # ---- noisy teacher on both views at once: targets, and the attention that picks the mask
            b = len(mine)
            x = views.flatten(0, 1)  # (2b, 1, S, S, S), view-major
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                drop = torch.cat([patch_dropout(1, N, cfg.teacher_drop, _gen(cfg.seed, step, gidx[j], v, 1))
                                  for v in range(2) for j in mine])
                x_t, t_mask = noisy_view(x, drop.to(device), cfg.teacher_noise, grid)
                t_feat = teacher.encode(x_t, t_mask)
                t_logits = teacher.project(t_feat)
                attn = teacher.encode(x)["attn"] if cfg.clean_attention else t_feat["attn"]
                mask = torch.cat([
                    make_mask(cfg.mask_mode, 1, N, cfg.mask_ratio, None if attn is None else attn[v * b + k:v * b + k + 1],
                              cfg.hint_ratio, cfg.hint_top, _gen(cfg.seed, step, gidx[j], v, 2))
                    for v in range(2) for k, j in enumerate(mine)]).to(device)

            # ---- student on both masked views in one forward (one DDP call), losses
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                _, s_logits, recon = model(x, mask)
                voxel_mask = upsample_mask(mask.cpu(), grid, UNIT).to(device)
                split = lambda t, v: t[v * b:(v + 1) * b]  # noqa: E731
                t_outs = [{k: split(t, v) for k, t in t_logits.items()} for v in range(2)]
                s_outs = [{**{k: split(t, v) for k, t in s_logits.items()}, "recon": split(recon, v).float(), "input": views[v],
                           "unit_mask": split(mask, v), "voxel_mask": split(voxel_mask, v)} for v in range(2)]
                loss, terms = criterion(s_outs, t_outs, t_temp)
            loss_value, mask_ratio = float(loss.detach()), float(mask.float().mean())
            if world > 1:  # log (and check) the global batch's values, the same on every process
                red = torch.tensor([loss_value, *terms.values(), mask_ratio], dtype=torch.float64, device=device)
                dist.all_reduce(red)
                red = (red / world).tolist()
                loss_value, terms, mask_ratio = red[0], dict(zip(terms, red[1:-1])), red[-1]
            if not math.isfinite(loss_value):
                kept = f"last good checkpoint {ckpt_path} kept" if ckpt_path.exists() else "no checkpoint written yet"
                raise SmartError(f"{run}: step {step}: loss is {loss_value} ({', '.join(f'{k}={v:.4g}' for k, v in terms.items())}); "
                                 f"stopped, {kept}")

            # ---- update student, teacher, centers
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.clip_grad)
            if epoch < cfg.freeze_last_layer:
                for p in student.parameters():
                    if id(p) in last_params:
                        p.grad = None
            optimizer.step()
            ema_update(teacher, student, m)
            criterion.update_centers(t_outs)

            # ---- log and checkpoint
            dt = time.perf_counter() - t0
            if rank == 0:
                rec = {"step": step, "epoch": epoch, "loss": loss_value, **terms, "lr": lr, "weight_decay": wd, "momentum": m,
                       "teacher_temp": t_temp, "mask_ratio": mask_ratio,
                       "step_time": dt, "samples_per_s": cfg.batch_size / dt}
                if (step % cfg.log_every == 0) or step == stop - 1:
                    metrics_fh.write(json.dumps(rec) + "\n")
                    metrics_fh.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == stop:
                _checkpoint(ckpt_path, step + 1, student, teacher, criterion, optimizer, rank)
    finally:
        if bar is not None:
            bar.close()
        if metrics_fh is not None:
            metrics_fh.close()
    if rank == 0:
        export_encoder(teacher, run / "encoder.pt")
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_json(run / "summary.json", {"steps_done": stop, "steps_total": total, "complete": stop == total,
                                          "wall_s_this_process": time.perf_counter() - t_run, "peak_mem_mib": peak,
                                          "device": str(device), "world_size": world,
                                          "params_m": sum(p.numel() for p in student.parameters()) / 1e6})
    if world > 1:
        dist.barrier()
    return run


def _checkpoint(path: Path, step: int, student, teacher, criterion, optimizer, rank: int) -> None:
    if rank != 0:
        return
    save_torch({"step": step, "student": student.state_dict(), "teacher": teacher.state_dict(),
                "loss": criterion.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state()}, path)


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
