"""The supervised-masking study (MSMAE, arXiv 2305.05871): masks on lesions, token dropping, its cost.

* :func:`lesion_masking` — how often a lesion patch is masked, thrown or left visible under MSMAE's
  split of an encoder's supervised attention and under MAE's random 75 % mask, per test case
  (patches touching the lesion mask), with CIs over cases.
* :func:`finetune_tokens` — fine-tuning a ViT export with MSMAE's token dropping: in training only the
  25 % *visible* patches of the attention split reach the encoder (the maps are the model's own
  [CLS] attention, recomputed on the whole training images every ``refresh_fraction`` of the epochs —
  20 of 100 in the public code — starting at epoch 0); evaluation uses every token. With
  ``drop=False`` the same loop fine-tunes on all tokens, so the two differ in nothing else. Epochs are
  chosen on the validation split (:func:`smartlib.downstream.selection.val_score`); each training step
  and each evaluation pass is timed.
* :func:`token_drop_study` — the cells (init × all tokens / token dropping × seed) through the study
  skeleton: per-run AUCs, seeds × cases CIs, paired comparisons (Holm), step times, and FLOPs per
  sample counted on the model itself (:func:`smartlib.flops.count_flops`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import SmartError

__all__ = ["PAIRS", "DROP_PAIRS", "load_lesions", "lesion_patches", "lesion_masking", "mask_panels", "pretrain_arms", "paired_table",
           "reductions", "write_summary", "pretraining_table", "time_side_by_side", "DropTuned", "finetune_tokens", "token_drop_study",
           "step_flops"]

#: the comparisons of the chapter's classification table: supervised vs self-attention vs random masking
PAIRS: tuple[tuple[str, str], ...] = (("msmae", "mae"), ("smart_supervised", "smart"), ("smart_supervised", "random_mask"),
                                      ("smart", "random_mask"), ("*", "scratch"))
#: token dropping against all-token fine-tuning of the same encoder
DROP_PAIRS: tuple[tuple[str, str], ...] = (("msmae, token dropping", "msmae, all tokens"),)


def lesion_patches(masks: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, S, S, S) lesion masks → (B, N) bool: the patches of edge ``patch`` that hold any lesion voxel."""
    return nn.functional.max_pool3d((masks > 0).float()[:, None], patch)[:, 0].flatten(1) > 0


def load_lesions(ds, indices: Sequence[int], data=None, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                 data_seed: int = 0) -> torch.Tensor:
    """The lesion masks (n, S, S, S) of cases ``indices`` of a loaded ``ClassData`` ``ds``, preprocessed as its
    images (same crop and spacing); a record whose image differs from ``ds``'s is a SmartError (wrong data)."""
    from .data import load_arrays, task_records

    records, source = task_records(ds.task, data, preset, runs_dir, seed=data_seed)
    if len(records) != len(ds.labels):
        raise SmartError(f"{source}: {len(records)} records, but the loaded set has {len(ds.labels)} cases")
    imgs, masks = load_arrays([records[i] for i in indices], ds.prep["roi"], ds.prep["spacing"], with_mask=True)
    for i, im in zip(indices, imgs):
        if not torch.allclose(im, ds.images[i], atol=1e-5):
            raise SmartError(f"{records[i]['image']}: differs from the loaded case {i}; pass the data the set was loaded from")
    return torch.stack(masks)[:, 0]


def lesion_masking(attn: torch.Tensor, lesion: torch.Tensor, draws: int = 20, seed: int = 0, n_boot: int = 1000,
                   mask_ratio: float = 0.45, throw_ratio: float = 0.30, random_ratio: float = 0.75) -> "pd.DataFrame":
    """Share of lesion patches masked / thrown / visible, MSMAE split vs MAE random masking.

    Args: attn (B, N) supervised-attention scores; lesion (B, N) bool lesion patches (cases without one
    are left out); ``draws`` splits per case. Returns one row per (``rule``, ``state``) with ``share``
    (mean over cases of the per-case share over the draws), its 95 % CI over cases (``lo``, ``hi``),
    ``nominal`` (the state's share of all patches) and ``n_cases``.
    """
    import pandas as pd

    from ..pretrain_data import keyed_generator
    from ..supervised_masking import MASKED, THROWN, VISIBLE, random_split, split_counts, supervised_split
    from .stats import seed_case_bootstrap

    if attn.ndim != 2 or tuple(attn.shape) != tuple(lesion.shape):
        raise SmartError(f"lesion_masking: attention of shape {tuple(attn.shape)} does not match the lesion patches "
                         f"{tuple(lesion.shape)} (one score per patch of the same grid)")
    keep = lesion.any(dim=1)
    if not bool(keep.any()):
        raise SmartError("lesion_masking: no case has a lesion patch")
    attn, lesion = attn[keep], lesion[keep]
    b, n = attn.shape
    k_mask, k_throw, k_vis = split_counts(n, mask_ratio, throw_ratio)
    k_rand = split_counts(n, random_ratio)[0]
    rules = {"MSMAE (supervised attention)": lambda g: supervised_split(attn, mask_ratio, throw_ratio, g),
             "MAE (random)": lambda g: random_split(b, n, random_ratio, g)}
    nominal = {"MSMAE (supervised attention)": (k_mask / n, k_throw / n, k_vis / n), "MAE (random)": (k_rand / n, 0.0, 1 - k_rand / n)}
    rows = []
    for r, (rule, split) in enumerate(rules.items()):
        states = torch.stack([split(keyed_generator(seed, r, d)) for d in range(draws)])  # (draws, B, N)
        for (name, code), nom in zip((("masked", MASKED), ("thrown", THROWN), ("visible", VISIBLE)), nominal[rule]):
            per_case = (((states == code) & lesion).sum(dim=(0, 2)) / (lesion.sum(dim=1) * draws)).double().numpy()
            ci = seed_case_bootstrap(per_case, n_boot=n_boot, seed=seed)
            rows.append({"rule": rule, "state": name, "share": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "nominal": nom,
                         "n_cases": int(b)})
    return pd.DataFrame(rows)


@dataclasses.dataclass
class DropTuned:
    """What :func:`finetune_tokens` returns: ``probs`` (m, K) test probabilities at the selected ``epoch``,
    ``history`` (one row per epoch), ``step_s`` the training steps' wall times, ``infer_s`` the seconds per
    evaluated sample, ``refresh_s`` the time spent recomputing attention maps."""

    probs: np.ndarray
    epoch: int
    history: list[dict]
    step_s: list[float]
    infer_s: float
    refresh_s: float


def finetune_tokens(net: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, n_classes: int, *,
                    drop: bool = True, epochs: int = 5, batch_size: int = 8, lr: float = 3e-4, head_lr: float = 1e-3,
                    weight_decay: float = 0.05, warmup: float = 0.1, seed: int = 0, x_val: torch.Tensor | None = None,
                    y_val: np.ndarray | None = None, y_test: np.ndarray | None = None, mask_ratio: float = 0.45,
                    throw_ratio: float = 0.30, refresh_fraction: float = 0.2) -> DropTuned:
    """Fine-tune a :class:`~smartlib.models.vit.ViTFeatures` (with a [CLS] token) on all tokens or with token dropping.

    The head and optimiser are those of :func:`smartlib.downstream.classify.finetune` (LayerNorm + linear
    on [CLS] ‖ mean token; AdamW, ``lr`` / ``head_lr``, linear warm-up then cosine); flips of the images
    and of their maps are drawn from ``(seed, step)`` whether or not tokens are dropped. x_* (n, 1, *S),
    y_* (n,). The epoch is chosen on the validation split (ties: lower loss), as there.
    """
    from ..pretrain_data import keyed_generator
    from ..seed import seed_everything
    from ..supervised_masking import random_shift_flip, state_indices, supervised_split
    from .classify import FineTuneClassifier, warmup_cosine
    from .metrics import classification_metrics
    from .selection import val_score

    if getattr(net, "cls_token", None) is None or not hasattr(net, "cls_attention"):
        raise SmartError("finetune_tokens: needs a ViT export with a [CLS] token (its attention chooses the tokens)")
    if epochs < 1 or not 0 <= warmup < 1 or not 0 < refresh_fraction <= 1:
        raise SmartError(f"finetune_tokens: epochs={epochs} must be ≥ 1, warmup={warmup} in [0, 1), "
                         f"refresh_fraction={refresh_fraction} in (0, 1]")
    if (x_val is None) != (y_val is None):
        raise SmartError("finetune_tokens: give both x_val and y_val, or neither")
    seed_everything(seed)
    model = FineTuneClassifier(net, n_classes)
    opt = torch.optim.AdamW([{"params": model.net.parameters(), "lr": lr}, {"params": model.head.parameters(), "lr": head_lr}],
                            weight_decay=weight_decay)
    per_epoch = int(np.ceil(len(x_train) / batch_size))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, steps, int(round(warmup * steps))))
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    every = max(1, round(refresh_fraction * epochs))
    maps = torch.zeros(len(x_train), *net.grid)
    patch = x_train.shape[-1] // net.grid[-1]
    history, step_s, infer, refresh_s, best = [], [], [0.0, 0], 0.0, None

    def predict(x: torch.Tensor) -> np.ndarray:
        t0 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            p = torch.cat([torch.softmax(model(x[i:i + batch_size]).float(), 1) for i in range(0, len(x), batch_size)])
        model.train()
        infer[0] += time.perf_counter() - t0
        infer[1] += len(x)
        return p.numpy()

    model.train()
    step = 0
    for epoch in range(1, epochs + 1):
        if drop and (epoch - 1) % every == 0:  # MSMAE: the model's own attention, recomputed on whole images
            t0 = time.perf_counter()
            maps = net.cls_attention(x_train).view(len(x_train), *net.grid)
            refresh_s += time.perf_counter() - t0
        order = torch.randperm(len(x_train), generator=keyed_generator(seed, epoch, 7))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            t0 = time.perf_counter()
            xb, mb = random_shift_flip(x_train[idx], maps[idx], patch, 0, keyed_generator(seed, step, 1))
            keep = None
            if drop:
                keep, _ = state_indices(supervised_split(mb.flatten(1), mask_ratio, throw_ratio, keyed_generator(seed, step, 2)))
            o = model.net.encode(xb, keep)
            loss = nn.functional.cross_entropy(model.head(torch.cat([o["cls"], o["pooled"]], dim=1)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_s.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
            step += 1
        row: dict = {"epoch": epoch, "lr": float(opt.param_groups[0]["lr"]), "train_loss": float(np.mean(losses))}
        probs = predict(x_test)
        if x_val is not None:
            pv, yv = predict(x_val), np.asarray(y_val).astype(int)
            row["val_loss"] = float(-np.log(np.clip(pv[np.arange(len(yv)), yv], 1e-7, 1.0)).mean())
            row["val_score"], row["val_metric"] = val_score(yv, pv)
        if y_test is not None:
            row["test_auc"] = classification_metrics(np.asarray(y_test), probs if n_classes > 2 else probs[:, 1])["auc"]
        score = (row["val_score"], -row["val_loss"]) if "val_score" in row else (float(epoch), 0.0)
        if best is None or score > best[0]:
            best = (score, epoch, probs)
        history.append(row)
    for row in history:
        row["selected"] = row["epoch"] == best[1]
    return DropTuned(probs=best[2], epoch=best[1], history=history, step_s=step_s, infer_s=infer[0] / max(infer[1], 1),
                     refresh_s=refresh_s)


def time_side_by_side(arms: Mapping[str, tuple[nn.Module, bool]], x: torch.Tensor, y: np.ndarray, n_classes: int, *,
                      batch_size: int = 8, repeats: int = 15, mask_ratio: float = 0.45, throw_ratio: float = 0.30,
                      seed: int = 0) -> dict[str, dict[str, float]]:
    """Wall time of a fine-tuning step and of an evaluation pass per arm, measured interleaved.

    ``arms``: name → (a :class:`~smartlib.models.vit.ViTFeatures`, token dropping or not). Each round times
    one AdamW training step (for token dropping: the attention split of a fixed map, the visible-token
    forward, backward and update) and one all-token evaluation forward of every arm, in an order rotated
    each round, on the same batch of ``x`` (n, 1, *S); a first untimed round warms up. Interleaving makes
    the arms share whatever else the machine is doing. Returns name → ``step_ms`` (median),
    ``infer_ms_per_sample`` (median), ``rounds``.
    """
    import copy

    from ..pretrain_data import keyed_generator
    from ..supervised_masking import state_indices, supervised_split
    from .classify import FineTuneClassifier

    if repeats < 1:
        raise SmartError(f"time_side_by_side: repeats={repeats} must be ≥ 1")
    xb = x[:batch_size]
    yb = torch.as_tensor(np.asarray(y[:batch_size]), dtype=torch.long)
    built = {}
    for name, (net, drop) in arms.items():
        model = FineTuneClassifier(copy.deepcopy(net), n_classes)
        built[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-5), drop,
                       model.net.cls_attention(xb).view(len(xb), -1) if drop else None)
    times: dict[str, dict[str, list[float]]] = {name: {"step": [], "infer": []} for name in arms}
    names = list(arms)
    for r in range(repeats + 1):
        for name in names[r % len(names):] + names[:r % len(names)]:
            model, opt, drop, maps = built[name]
            model.train()
            t0 = time.perf_counter()
            keep = state_indices(supervised_split(maps, mask_ratio, throw_ratio, keyed_generator(seed, r)))[0] if drop else None
            o = model.net.encode(xb, keep)
            loss = nn.functional.cross_entropy(model.head(torch.cat([o["cls"], o["pooled"]], dim=1)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            model.eval()
            with torch.no_grad():
                model(xb)
            t2 = time.perf_counter()
            if r:  # round 0 warms up
                times[name]["step"].append(t1 - t0)
                times[name]["infer"].append((t2 - t1) / len(xb))
    return {name: {"step_ms": 1e3 * float(np.median(t["step"])), "infer_ms_per_sample": 1e3 * float(np.median(t["infer"])),
                   "rounds": repeats} for name, t in times.items()}


def step_flops(net: nn.Module, x: torch.Tensor, n_classes: int, keep: int | None) -> dict[str, float]:
    """FLOPs per sample of one training step (forward + backward) with ``keep`` patches (None: all), and of
    one evaluation forward with all patches, counted by :func:`smartlib.flops.count_flops` on a copy of ``net``."""
    import copy

    from ..flops import count_flops
    from .classify import FineTuneClassifier

    model = FineTuneClassifier(copy.deepcopy(net), n_classes)
    idx = None if keep is None else torch.arange(keep)[None].expand(len(x), -1)

    def step(k: torch.Tensor | None) -> torch.Tensor:
        o = model.net.encode(x, k)
        return model.head(torch.cat([o["cls"], o["pooled"]], dim=1))

    return {"train_gflops": count_flops(model, lambda: step(idx), backward=True) / 1e9 / len(x),
            "infer_gflops": count_flops(model, lambda: step(None)) / 1e9 / len(x)}


def token_drop_study(inits: Mapping[str, str], dataset, *, out: str | os.PathLike | None = None, seeds: Sequence[int] = (0,),
                     epochs: int = 5, batch_size: int = 8, n_boot: int = 1000, mask_ratio: float = 0.45,
                     throw_ratio: float = 0.30, timing_repeats: int = 15, log: Callable[[str], None] = print) -> dict:
    """Fine-tune the ``msmae`` export of ``inits`` (name → ViT export path) on all tokens and with token dropping,
    for every seed, and score and compare the two; time and count the FLOPs of every init's all-token step and of
    MSMAE's token-dropping step (plain MAE fine-tuning is the reference of the cost table; its AUC comes from the
    classification study). ``dataset``: a loaded ``ClassData``.

    Writes (when ``out`` is given, after all runs): ``runs.csv`` (one row per run: AUC with its case CI,
    selected epoch, median step time, seconds per evaluated sample), ``predictions.csv``, ``curves.csv``,
    ``summary.csv`` (AUC with a seeds × cases CI), ``comparisons.csv`` (:data:`DROP_PAIRS`, paired,
    Holm), ``cost.csv`` (per arm: FLOPs per sample of a training step and of inference, and the step and
    inference times of :func:`time_side_by_side`, ``timing_repeats`` interleaved rounds) — and returns them
    as DataFrames in a dict.
    """
    import pandas as pd

    from ..models.vit import load_vit_features
    from ..supervised_masking import split_counts
    from .metrics import metrics_with_ci
    from .study import Cell, comparisons, run_cells, seed_case_cis, write_outputs

    if "msmae" not in inits:
        raise SmartError(f"token_drop_study: needs an 'msmae' init (got {', '.join(inits)})")
    for name, path in inits.items():
        load_vit_features(path)  # every init is a ViT export with strict weights, before any compute
    ds = dataset
    tr, va, te = ds.split["train"], ds.split["val"], ds.split["test"]
    y_test = ds.labels[te]
    cells = [Cell("msmae", inits["msmae"], 1.0, int(s), mode) for mode in ("all tokens", "token dropping") for s in seeds]
    preds, curves, times = [], [], {}

    def run_one(c: Cell) -> dict:
        t0 = time.time()
        net = load_vit_features(c.path)
        ft = finetune_tokens(net, ds.images[tr], ds.labels[tr], ds.images[te], ds.n_classes, drop=c.mode == "token dropping",
                             epochs=epochs, batch_size=batch_size, seed=c.seed, x_val=ds.images[va] if len(va) else None,
                             y_val=ds.labels[va] if len(va) else None, y_test=y_test, mask_ratio=mask_ratio, throw_ratio=throw_ratio)
        arm = f"{c.init}, {c.mode}"
        times.setdefault(arm, []).append((ft.step_s, ft.infer_s))
        m = metrics_with_ci(y_test, ft.probs[:, 1] if ds.n_classes == 2 else ft.probs, n_boot=n_boot, seed=c.seed)
        preds.extend({"init": arm, "seed": c.seed, "case": k, "y": int(y_test[k]), "score": float(ft.probs[k, 1])} for k in range(len(te)))
        curves.extend({"init": arm, "seed": c.seed, **h} for h in ft.history)
        row = {"init": arm, "encoder": c.init, "mode": c.mode, "seed": c.seed, "auc": m["auc"], "auc_lo": m["auc_lo"],
               "auc_hi": m["auc_hi"], "epoch": ft.epoch, "step_s_median": float(np.median(ft.step_s)),
               "infer_ms_per_sample": 1e3 * ft.infer_s, "refresh_s": ft.refresh_s, "seconds": round(time.time() - t0, 2)}
        log(f"{arm} seed {c.seed}: AUC {m['auc']:.3f}, epoch {ft.epoch}, {row['step_s_median'] * 1e3:.1f} ms/step ({row['seconds']:.1f} s)")
        return row

    runs = pd.DataFrame(run_cells(cells, run_one))
    long = pd.DataFrame(preds)
    summary = seed_case_cis(long, ["init"], "auc", n_boot=n_boot) if len(set(y_test.tolist())) == 2 else pd.DataFrame()
    comps = comparisons(long.assign(task=ds.task), ["task"], "auc", n_boot=n_boot, pairs=DROP_PAIRS)
    grid = load_vit_features(inits["msmae"]).grid
    n = int(np.prod(grid))
    arms = {**{f"{name}, all tokens": (load_vit_features(path), False) for name, path in inits.items()},
            "msmae, token dropping": (load_vit_features(inits["msmae"]), True)}
    timed = time_side_by_side(arms, ds.images[tr], ds.labels[tr], ds.n_classes, batch_size=batch_size, repeats=timing_repeats,
                              mask_ratio=mask_ratio, throw_ratio=throw_ratio)
    x1 = ds.images[tr[:batch_size]]
    cost = []
    for arm, (net, drop) in arms.items():
        keep = split_counts(n, mask_ratio, throw_ratio)[2] if drop else None
        cost.append({"arm": arm, "tokens": (keep or n) + 1, **step_flops(net, x1, ds.n_classes, keep), **timed[arm],
                     "finetune_step_ms_median": 1e3 * float(np.median(np.concatenate([np.asarray(s) for s, _ in times[arm]])))
                     if arm in times else float("nan"),
                     "batch_size": batch_size, "grid": "×".join(map(str, grid))})
    cost = pd.DataFrame(cost)
    out_tables = {"runs": runs, "summary": summary, "comparisons": comps, "cost": cost}
    write_outputs(out, csv={"runs.csv": runs.to_dict("records"), "predictions.csv": preds, "curves.csv": curves,
                            "summary.csv": summary.to_dict("records"), "comparisons.csv": comps.to_dict("records"),
                            "cost.csv": cost.to_dict("records")})
    return out_tables


def mask_panels(images: torch.Tensor, msmae: str | os.PathLike, seed: int = 0, unit: int = 16) -> dict[str, np.ndarray]:
    """Voxel maps of what each rule hides in ``images`` (n, 1, S, S, S), for overlays on the lesions.

    Returns name → (n, S, S, S): ``"MSMAE attention"`` (the export's supervised attention, per patch),
    ``"MSMAE split"`` and ``"MAE random mask"`` (state per patch: 0 visible, 1 masked, 2 thrown; one draw
    each from ``seed``), and ``"SMART given"`` (1 = masked unit: the top 70 % of the 16³-voxel units by the
    same attention, :func:`smartlib.masking.make_mask` mode ``given``).
    """
    from ..masking import make_mask
    from ..models.vit import load_vit_features
    from ..pretrain_data import keyed_generator
    from ..supervised_masking import SupervisedAttention, random_split, supervised_split

    net = load_vit_features(msmae)
    g = net.grid
    s = images.shape[-1]
    p = s // g[0]
    attn = net.cls_attention(images)
    up = lambda t, f: t.view(len(images), *(s // f,) * 3).repeat_interleave(f, 1).repeat_interleave(f, 2).repeat_interleave(f, 3)  # noqa: E731
    split = supervised_split(attn, generator=keyed_generator(seed, 0))
    rand = random_split(len(images), attn.shape[1], 0.75, keyed_generator(seed, 1))
    out = {"MSMAE attention": up(attn, p), "MSMAE split": up(split, p), "MAE random mask": up(rand, p)}
    if s % unit == 0:
        scores = SupervisedAttention(msmae, unit)(images)
        out["SMART given"] = up(make_mask("given", len(images), scores.shape[1], 0.7, scores).to(torch.int8), unit)
    return {k: v.float().numpy() for k, v in out.items()}


def pretrain_arms(preset: str, runs_dir: str | os.PathLike, dataset, log: Callable[[str], None] = print) -> dict[str, str]:
    """The MAE and MSMAE encoders of the chapter (pretrained once on ``dataset``'s training split): name → path."""
    from ..mae import pretrained_mae

    return {m: str(pretrained_mae(m, preset, runs_dir, dataset=dataset, log=log)) for m in ("mae", "msmae")}


def paired_table(predictions_csv: str | os.PathLike, pairs: Sequence[tuple[str, str]] = PAIRS, n_boot: int = 1000) -> "pd.DataFrame":
    """The paired AUC comparisons of ``pairs`` within each (mode, fraction) of a classification study's
    ``predictions.csv`` (:func:`smartlib.downstream.study.comparisons`: same test cases, DeLong for one seed,
    seeds × cases bootstrap otherwise, Holm within the setting)."""
    import pandas as pd

    from .study import comparisons

    long = pd.read_csv(predictions_csv).rename(columns={"label": "y", "p1": "score"})
    return comparisons(long, ["mode", "fraction"], "auc", n_boot=n_boot, pairs=pairs)


def reductions(cost: "pd.DataFrame", flops: Sequence[Mapping]) -> "pd.DataFrame":
    """Token dropping against plain MAE fine-tuning, measured here and counted for ViT-B/16, beside MSMAE's reported
    74.08 % fewer FLOPs and 11.2 % faster fine-tuning inference. ``cost``: :func:`token_drop_study`'s cost
    table; ``flops``: rows of :func:`smartlib.flops.token_drop_flops`."""
    import pandas as pd

    c = cost.set_index("arm")
    if not {"msmae, token dropping", "mae, all tokens"} <= set(c.index):
        raise SmartError(f"reductions: the cost table needs the arms 'msmae, token dropping' and 'mae, all tokens' (has {list(c.index)})")
    drop, plain = c.loc["msmae, token dropping"], c.loc["mae, all tokens"]
    grid = str(drop["grid"])
    rows = [
        {"what": "training FLOPs per step (forward + backward)", "setting": f"this chapter's ViT ({grid} patches), counted",
         "reduction": 1 - drop["train_gflops"] / plain["train_gflops"], "published": "74.08 % fewer FLOPs (ViT-B/16, 2D)"},
        {"what": "training step wall time", "setting": f"this chapter's ViT, batch {int(drop['batch_size'])}, median of "
         f"{int(drop['rounds'])} interleaved steps", "reduction": 1 - drop["step_ms"] / plain["step_ms"], "published": ""},
        {"what": "inference wall time per sample", "setting": "this chapter's ViT, all tokens at evaluation, interleaved",
         "reduction": 1 - drop["infer_ms_per_sample"] / plain["infer_ms_per_sample"], "published": "11.2 % faster"},
    ]
    for r in flops:
        if r["mode"] == "token dropping":
            size = f"{r['img_size']}{'³' if r['spatial_dims'] == 3 else '²'}"
            note = {"96³": "≈ 73 % expected (arithmetic)", "128³": "≈ 74 % expected (arithmetic)",
                    "224²": "74.08 % (MSMAE, ViT-B/16 at 224²)"}.get(size, "")
            for key, what in (("fwd_saving_counted", "training forward FLOPs"), ("train_saving_counted", "training FLOPs (forward + backward)")):
                if key in r:
                    rows.append({"what": what, "setting": f"ViT-B/{r['patch']} at {size}, counted", "reduction": r[key],
                                 "published": note})
    return pd.DataFrame(rows)


def write_summary(out: str | os.PathLike, *, classification: Mapping, comparisons: "pd.DataFrame", lesions: "pd.DataFrame",
                  token_drop: Mapping[str, "pd.DataFrame"], flops: Sequence[Mapping], reduction: "pd.DataFrame") -> None:
    """``out/summary.json``: what the results page reads (classification summary and pairs, lesion masking,
    token-dropping AUCs / comparisons / cost, FLOP rows, the reductions beside the paper's)."""
    from .study import write_outputs

    rec = lambda t: t.to_dict("records")  # noqa: E731
    write_outputs(out, csv={"comparisons.csv": rec(comparisons), "lesion_masking.csv": rec(lesions), "flops.csv": list(flops),
                            "reductions.csv": rec(reduction)},
                  json={"summary.json": {"preset": classification.get("preset"), "phantom": classification.get("phantom"),
                                         "source": classification.get("source"), "classification": classification.get("summary", []),
                                         "comparisons": rec(comparisons), "lesion_masking": rec(lesions),
                                         "token_drop": {k: rec(v) for k, v in token_drop.items()}, "flops": list(flops),
                                         "reductions": rec(reduction)}})


def pretraining_table(encoders: Mapping[str, str | os.PathLike], last: float = 0.1) -> "pd.DataFrame":
    """One row per MAE / MSMAE run (name → its ``encoder.pt``): steps, share of steps with attention masking,
    masked MSE and cross-entropy averaged over the ``last`` share of the steps, wall seconds."""
    import json
    from pathlib import Path

    import pandas as pd

    rows = []
    for name, enc in encoders.items():
        run = Path(enc).parent
        m = pd.DataFrame([json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()])
        tail = m.iloc[-max(1, int(round(last * len(m)))):]
        summ = json.loads((run / "summary.json").read_text())
        rows.append({"run": name, "steps": len(m), "attention_steps": float((m["phase"] == "attention").mean()),
                     "mse_first": float(m["mse"].iloc[:len(tail)].mean()), "mse_last": float(tail["mse"].mean()),
                     "ce_last": float(tail["ce"].mean()) if "ce" in tail else float("nan"),
                     "seconds": round(float(summ.get("wall_s_this_process", float("nan"))), 1)})
    return pd.DataFrame(rows)
