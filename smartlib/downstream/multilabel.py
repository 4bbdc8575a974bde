"""Multi-label classification: data, training with per-label positive weights, per-label AUROC with seed × case CIs.

* **Data** (:func:`load_multilabel`): the built-in ``findings`` set (:data:`smartlib.tasks.TASKS`) as radiographs
  (``dims=2``) or CT volumes (``dims=3``), or real data through :func:`smartlib.data.cxr.read_multilabel`
  (ChestX-ray14, CheXpert, a multi-label manifest). Labels are an (N, K) matrix of 1 / 0 / NaN (NaN: an
  uncertain label under the ``ignore`` policy — left out of the loss and of that label's AUROC).
* **Loss**: ``BCEWithLogits`` with a positive weight per label, ``n_negative / n_positive`` of the training
  split (:func:`pos_weights`), so a rare finding weighs as much as a common one.
* **Model selection** (:func:`fit_multilabel`): the epoch with the best mean validation AUROC over the labels
  the validation split can score (both classes present), ties to the lower validation loss; nothing sees the
  test split. AdamW with a linear warm-up and cosine decay (:func:`smartlib.downstream.classify.warmup_cosine`).
* **Per-label AUROC** (:func:`auroc_table`): one label at a time through
  :func:`smartlib.downstream.study.seed_case_cis` (a two-level bootstrap over seeds and test cases). A label
  with no positive (or no negative) test case has no AUROC: it is reported as undefined, with the reason.
* **Mean AUROC** (:func:`mean_auroc`): the mean over the labels with an AUROC, its CI from the same two-level
  resampling (:func:`smartlib.downstream.stats.seed_case_bootstrap` with the macro mean as the statistic).
* **Paired comparisons** (:func:`paired_label_comparisons`): label tokens vs [CLS] for each init and label on the
  same test cases (:func:`smartlib.downstream.stats.compare_arms`), Holm-adjusted across all of them.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import SmartError

__all__ = ["MultiLabelData", "load_multilabel", "pos_weights", "masked_bce", "label_aucs", "val_score", "Fitted",
           "fit_multilabel", "predict", "pixel_probe", "auroc_table", "mean_auroc", "paired_label_comparisons"]

Inputs = torch.Tensor | Sequence[torch.Tensor]


@dataclasses.dataclass
class MultiLabelData:
    """A multi-label set loaded once: ``images`` (N, 1, *S) in [0, 1], ``labels`` (N, K) 1 / 0 / NaN, ``masks``
    (N, K, *S) bool or None, ``split`` name → indices, ``label_names``, ``patients``, ``dims``, ``source``,
    ``phantom``, ``prep`` (sizes used) and ``policy`` (uncertainty policy)."""

    source: str
    dims: int
    images: torch.Tensor
    labels: np.ndarray
    label_names: tuple[str, ...]
    patients: list[str]
    split: dict[str, np.ndarray]
    masks: torch.Tensor | None
    phantom: bool
    prep: dict[str, Any]
    policy: str | None


def _unpack(packed: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """(N, 1, *S) bit-packed masks → (N, K, *S) bool, channel k = bit ``bits[k]``."""
    p = packed.round().long()
    return torch.cat([((p >> b) & 1).bool() for b in bits], dim=1)


def load_multilabel(data: str | os.PathLike | None = None, dims: int = 2, preset: str = "cpu",
                    runs_dir: str | os.PathLike = "runs", n: int | None = None, data_seed: int = 0,
                    labels: Sequence[str] | None = None, policy: str = "U-Ones", size: int | None = None,
                    roi: int | None = None, spacing: float | None | str = "default",
                    hu_window: tuple[float, float] = (-500.0, 500.0)) -> MultiLabelData:
    """Load the findings set or a real multi-label set, preprocessed for ``dims`` (2: ``size``² radiographs; 3:
    ``roi``³ crops at ``spacing`` mm, HU windowed to [0, 1]). Defaults come from the task registry's ``prep``.

    Raises:
        SmartError: bad files or labels (see :mod:`smartlib.data.cxr`), an empty train or test split, no label
        with a training positive.
    """
    from ..data.cxr import load_radiographs, read_multilabel, read_multilabel_manifest
    from ..data.findings import FINDINGS
    from ..tasks import builtin_manifest, prep_for, split_fractions
    from .study import is_builtin

    if dims not in (2, 3) or isinstance(dims, bool):
        raise SmartError(f"dims={dims!r}: expected 2 (radiographs) or 3 (CT volumes)")
    prep = prep_for("findings", preset, roi, spacing)
    prep["size2d"] = int(size or prep.get("size2d", 64))
    fractions = split_fractions("findings", preset)
    phantom = is_builtin(data)
    if phantom:
        names = tuple(labels) if labels is not None else FINDINGS
        bad = [x for x in names if x not in FINDINGS]
        if bad:
            raise SmartError(f"labels {list(names)}: the findings set has {', '.join(FINDINGS)} ({bad[0]!r} is not one)")
        manifest = builtin_manifest("findings", preset, runs_dir, n=n, seed=data_seed)
        recs = read_multilabel_manifest(manifest, names, dims, policy, fractions, data_seed)
        bits = [FINDINGS.index(x) for x in names]
    else:
        recs = read_multilabel(data, dims, labels, policy, fractions, data_seed)
        bits = list(range(len(recs.label_names)))
        if n is not None and n < len(recs.images):
            keep = np.sort(np.random.default_rng(data_seed).permutation(len(recs.images))[:n])
            recs = dataclasses.replace(recs, images=[recs.images[i] for i in keep], labels=recs.labels[keep],
                                       patients=[recs.patients[i] for i in keep], splits=[recs.splits[i] for i in keep],
                                       masks=None if recs.masks is None else [recs.masks[i] for i in keep])
    split = {s: np.array([i for i, v in enumerate(recs.splits) if v == s], dtype=int) for s in ("train", "val", "test")}
    for s in ("train", "test"):
        if len(split[s]) == 0:
            raise SmartError(f"{recs.source}: the {s} split is empty ({len(recs.images)} records)")
    ytr = recs.labels[split["train"]]
    if not (np.nan_to_num(ytr) == 1).any():
        raise SmartError(f"{recs.source}: no label has a positive case in the training split")
    masks = None
    if dims == 2:
        images = load_radiographs(recs.images, prep["size2d"])
        if recs.masks is not None:
            masks = _unpack(load_radiographs(recs.masks, prep["size2d"], packed=True), bits)
    else:
        from ..data.transforms import eval_transforms

        keys = ("image", "mask") if recs.masks is not None else ("image",)
        tf = eval_transforms(roi=prep["roi"], spacing=prep["spacing"], hu_window=hu_window, keys=keys)
        ims, ms = [], []
        for i, p in enumerate(recs.images):
            d = tf({"image": str(p), **({"mask": str(recs.masks[i])} if recs.masks is not None else {})})
            ims.append(torch.as_tensor(d["image"]).float())
            if recs.masks is not None:
                ms.append(torch.as_tensor(d["mask"]).float())
        images = torch.stack(ims)
        masks = _unpack(torch.stack(ms), bits) if ms else None
    return MultiLabelData(source=recs.source, dims=dims, images=images, labels=recs.labels, label_names=recs.label_names,
                          patients=recs.patients, split=split, masks=masks, phantom=phantom, prep=prep, policy=recs.policy)


# ------------------------------------------------------------------------------------------------ loss and scores
def pos_weights(y: np.ndarray) -> np.ndarray:
    """Per-label positive weight ``n_negative / n_positive`` over the known (non-NaN) labels of y (N, K) → (K,);
    1 for a label without positives or negatives (nothing to balance)."""
    y = np.asarray(y, dtype=float)
    pos = (y == 1).sum(axis=0).astype(float)
    neg = (y == 0).sum(axis=0).astype(float)
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)


def masked_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``BCEWithLogits`` over the known labels: logits (B, K), y (B, K) with NaN = unknown, pos_weight (K,)."""
    known = ~torch.isnan(y)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), pos_weight=pos_weight,
                                                          reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1)


def label_aucs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC per label (scikit-learn) of scores (N, K) for y (N, K) over the known cases; NaN where a label's
    known cases hold a single class."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
    out = np.full(y.shape[1], np.nan)
    for k in range(y.shape[1]):
        known = ~np.isnan(y[:, k])
        if len(set(y[known, k].tolist())) == 2:
            out[k] = roc_auc_score(y[known, k], s[known, k])
    return out


def val_score(y: np.ndarray, scores: np.ndarray) -> tuple[float, str]:
    """Higher-is-better validation score: the mean AUROC over the labels with both classes (``"mean_auroc"``),
    else the negative mean BCE of the probabilities (``"neg_bce"``)."""
    a = label_aucs(y, scores)
    if np.isfinite(a).any():
        return float(np.nanmean(a)), "mean_auroc"
    p = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    yy = np.asarray(y, dtype=float)
    ll = yy * np.log(p) + (1 - yy) * np.log(1 - p)
    return float(np.nanmean(ll)), "neg_bce"


# ------------------------------------------------------------------------------------------------ training
def _take(x: Inputs, idx) -> Inputs:
    return x[idx] if isinstance(x, torch.Tensor) else [t[idx] for t in x]


def _len(x: Inputs) -> int:
    return len(x) if isinstance(x, torch.Tensor) else len(x[0])


@torch.no_grad()
def predict(model: nn.Module, forward: Callable[[Inputs], torch.Tensor], x: Inputs, batch_size: int = 32) -> np.ndarray:
    """Sigmoid probabilities (N, K) of ``forward`` (the model, or e.g. ``model.forward_stages``) in eval mode."""
    was = model.training
    model.eval()
    out = [torch.sigmoid(forward(_take(x, slice(i, i + batch_size))).float()) for i in range(0, _len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy()


@dataclasses.dataclass
class Fitted:
    """What :func:`fit_multilabel` returns: the model at the selected ``epoch`` (1-based) and one history row per
    epoch (``epoch, lr, train_loss, val_score, val_metric, val_loss, selected``)."""

    model: nn.Module
    epoch: int
    history: list[dict]


def fit_multilabel(model: nn.Module, forward: Callable[[Inputs], torch.Tensor], x_train: Inputs, y_train: np.ndarray,
                   x_val: Inputs | None, y_val: np.ndarray | None, *, epochs: int = 10, batch_size: int = 32,
                   lr: float = 3e-4, head_lr: float = 1e-3, weight_decay: float = 0.05, warmup: float = 0.1,
                   seed: int = 0, progress: bool = False) -> Fitted:
    """Train ``model`` with :func:`masked_bce` and per-label positive weights; keep the best validation epoch.

    ``forward(inputs)`` gives logits (B, K) for a batch of ``x_*`` (a tensor, or a list of tensors such as cached
    Swin stage features). ``model.new_parameters()`` (the head: label tokens / [CLS], output layer) train at
    ``head_lr``, every other trainable parameter (the init's backbone) at ``lr``. Without a validation split the
    last epoch is kept.
    """
    from tqdm.auto import tqdm

    from ..seed import seed_everything
    from .classify import warmup_cosine

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise SmartError(f"epochs={epochs!r}: must be a positive integer")
    if not 0 <= warmup < 1:
        raise SmartError(f"warmup={warmup}: must lie in [0, 1)")
    seed_everything(seed)
    new = {id(p) for p in model.new_parameters()}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in new], "lr": lr},
              {"params": [p for p in model.new_parameters() if p.requires_grad], "lr": head_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)
    n = _len(x_train)
    steps = epochs * int(np.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, steps, int(round(warmup * steps))))
    y = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    pw = torch.as_tensor(pos_weights(y_train), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    best: tuple[tuple[float, float], int, dict] | None = None
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    for epoch in range(1, epochs + 1):
        losses = []
        for idx in torch.randperm(n, generator=g).split(batch_size):
            loss = masked_bce(forward(_take(x_train, idx)), y[idx], pw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        row = {"epoch": epoch, "lr": float(opt.param_groups[-1]["lr"]), "train_loss": float(np.mean(losses))}
        if x_val is not None and _len(x_val):
            pv = predict(model, forward, x_val, batch_size)
            yv = torch.as_tensor(np.asarray(y_val, dtype=np.float32))
            row["val_loss"] = float(masked_bce(torch.logit(torch.as_tensor(pv).clamp(1e-6, 1 - 1e-6)), yv, pw))
            row["val_score"], row["val_metric"] = val_score(y_val, pv)
            key = (row["val_score"], -row["val_loss"])
        else:
            key = (float(epoch), 0.0)
        if best is None or key > best[0]:
            best = (key, epoch, copy.deepcopy({k: v for k, v in model.state_dict().items()}))
        history.append(row)
    bar.close()
    model.load_state_dict(best[2])
    model.eval()
    for row in history:
        row["selected"] = row["epoch"] == best[1]
    return Fitted(model=model, epoch=best[1], history=history)


def pixel_probe(ds: MultiLabelData, seed: int = 0) -> np.ndarray:
    """A learnability control: per label, a logistic regression on the raw pixels (voxels) of the training images
    (:func:`smartlib.downstream.classify.linear_probe`: standardised inputs, L2), its ``C`` chosen on the validation
    split (:func:`smartlib.downstream.selection.select_probe_C`). Returns test probabilities (N_test, K); a label
    with a single known class in training scores 0.5 everywhere."""
    from .classify import linear_probe
    from .selection import select_probe_C

    x = ds.images.flatten(1).numpy()
    tr, va, te = ds.split["train"], ds.split["val"], ds.split["test"]
    out = np.full((len(te), len(ds.label_names)), 0.5)
    for k in range(len(ds.label_names)):
        t = tr[~np.isnan(ds.labels[tr, k])]
        v = va[~np.isnan(ds.labels[va, k])]
        yt = ds.labels[t, k].astype(int)
        if len(set(yt.tolist())) < 2:
            continue
        C = select_probe_C(x[t], yt, x[v], ds.labels[v, k].astype(int), 2, seed=seed)[0] if len(v) else 1.0
        out[:, k] = linear_probe(x[t], yt, x[te], 2, seed=seed, C=C)[:, 1]
    return out


# ------------------------------------------------------------------------------------------------ tables
def _defined(g: "pd.DataFrame", each: int = 1) -> bool:
    """Whether the known labels of ``g``'s distinct cases hold at least ``each`` positives and negatives."""
    ys = g.drop_duplicates("case")["y"].dropna()
    return int((ys == 1).sum()) >= each and int((ys == 0).sum()) >= each


def auroc_table(long: "pd.DataFrame", group: Sequence[str] = ("init", "head"), n_boot: int = 1000,
                seed: int = 0) -> "pd.DataFrame":
    """Per-label AUROC of every ``group`` value with a CI over seeds and test cases.

    ``long``: one row per (group…, ``label``, ``seed``, ``case``) with ``y`` (1 / 0 / NaN) and ``score``. Cases
    with an unknown label are dropped for that label. Returns ``group``, ``label``, ``auc, auc_lo, auc_hi, auc_se,
    n_seeds, n_cases, n_pos, note`` — ``auc`` NaN and ``note`` saying why where the test split cannot score it.
    """
    import pandas as pd

    from .study import seed_case_cis

    keys = [*group, "label"]
    rows = []
    for key, g in long.groupby(keys, sort=False):
        g = g.dropna(subset=["y"])
        base = dict(zip(keys, key))
        n_pos, n_cases = int(g.drop_duplicates("case")["y"].sum()), int(g["case"].nunique())
        if not _defined(g):
            rows.append({**base, "auc": float("nan"), "auc_lo": float("nan"), "auc_hi": float("nan"), "auc_se": float("nan"),
                         "n_seeds": int(g["seed"].nunique()), "n_cases": n_cases, "n_pos": n_pos,
                         "note": f"undefined: {'no positive' if n_pos == 0 else 'no negative'} test case"})
            continue
        r = seed_case_cis(g, keys, "auc", n_boot=n_boot, seed=seed).iloc[0].to_dict()
        rows.append({**base, **{k: r[k] for k in ("auc", "auc_lo", "auc_hi", "auc_se", "n_seeds", "n_cases")},
                     "n_pos": n_pos, "note": ""})
    return pd.DataFrame(rows)


def mean_auroc(long: "pd.DataFrame", group: Sequence[str] = ("init", "head"), n_boot: int = 1000,
               seed: int = 0) -> "pd.DataFrame":
    """Mean AUROC over the labels with an AUROC, per ``group`` value, with a seeds × cases bootstrap CI.

    The resampling is :func:`smartlib.downstream.stats.seed_case_bootstrap`'s (seeds, then the same cases for every
    seed); the statistic of a resample is the mean over its seeds of the macro AUROC over the labels whose
    resampled cases hold both classes (:func:`smartlib.downstream.metrics.binary_metrics_batch`). Returns ``group``,
    ``mean_auroc, lo, hi, se, n_seeds, n_cases, n_labels`` (the labels averaged).
    """
    import pandas as pd

    from .metrics import binary_metrics_batch
    from .stats import seed_case_bootstrap

    rows = []
    for key, g in long.groupby(list(group), sort=False):
        labels = [lab for lab, gl in g.groupby("label", sort=False) if _defined(gl)]
        seeds, cases = sorted(g["seed"].unique()), sorted(g["case"].unique())
        S, N = len(seeds), len(cases)
        y = np.stack([g[g["label"] == lab].drop_duplicates("case").set_index("case")["y"].reindex(cases).to_numpy(float)
                      for lab in labels], axis=1) if labels else np.zeros((N, 0))
        sc = np.stack([g[g["label"] == lab].pivot(index="seed", columns="case", values="score").reindex(index=seeds, columns=cases)
                       .to_numpy(float) for lab in labels], axis=2) if labels else np.zeros((S, N, 0))

        def stat(codes: np.ndarray) -> float:
            si, ci = (codes[:, 0] // N).astype(int), (codes[0] % N).astype(int)
            vals = []
            for k in range(len(labels)):
                yk = y[ci, k]
                known = ~np.isnan(yk)
                yk = yk[known]
                if 0 < yk.sum() < len(yk):
                    s = sc[si][:, ci[known], k]
                    vals.append(binary_metrics_batch(np.broadcast_to(yk, s.shape), s)["auc"].mean())
            return float(np.mean(vals)) if vals else float("nan")

        codes = np.arange(S)[:, None] * N + np.arange(N)[None, :]
        r = seed_case_bootstrap(codes.astype(float), n_boot=n_boot, seed=seed, stat=stat)
        rows.append({**dict(zip(group, key if isinstance(key, tuple) else (key,))), "mean_auroc": r["mean"], "lo": r["lo"],
                     "hi": r["hi"], "se": r["se"], "n_seeds": S, "n_cases": N, "n_labels": len(labels)})
    return pd.DataFrame(rows)


def paired_label_comparisons(long: "pd.DataFrame", arm_col: str, reference: str, within: Sequence[str],
                             n_boot: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Every other ``arm_col`` value against ``reference`` on the same test cases, for each ``within`` value × label,
    by :func:`smartlib.downstream.stats.compare_arms` (AUC); ``p_holm`` is Holm-adjusted across *all* the rows.
    Labels with fewer than two positive or negative test cases are skipped (DeLong's variance needs two of each)."""
    import pandas as pd

    from .stats import compare_arms, holm

    parts = []
    for key, g in long.groupby([*within, "label"], sort=False):
        g = g.dropna(subset=["y"])
        if not _defined(g, 2) or reference not in set(g[arm_col]) or g[arm_col].nunique() < 2:
            continue
        t = compare_arms(g, arm_col, reference, "auc", n_boot=n_boot, seed=seed)
        for i, (c, v) in enumerate(zip([*within, "label"], key)):
            t.insert(i, c, v)
        parts.append(t)
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    out["p_holm"] = holm(out["p"].to_numpy(dtype=float))
    return out
