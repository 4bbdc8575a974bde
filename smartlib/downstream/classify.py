"""Nodule malignancy and treatment response: linear probe and full fine-tuning, limited labels.

* **Linear probe**: frozen encoder features (``[CLS]`` ‖ average-pooled deepest map) →
  ``StandardScaler`` + ``LogisticRegression`` (scikit-learn, C = 1, lbfgs).
* **Fine-tuning**: the whole encoder (semantic attention included) + LayerNorm + linear head on the
  same concatenated features, AdamW, cross-entropy, random flips along each axis.
* **Limited labels**: :func:`~smartlib.downstream.data.label_fraction_indices` keeps a stratified
  fraction of the training *patients*; test cases are always the whole test split.
* **Metrics**: AUC, accuracy, balanced accuracy on the test split, each with a percentile bootstrap
  95 % CI (:func:`~smartlib.downstream.metrics.metrics_with_ci`).

:func:`classification_study` runs every (init × mode × fraction × seed) combination on data loaded
once and writes ``results.csv`` (one row per run), ``summary.csv`` / ``summary.json`` (mean ± SD
over seeds) and ``predictions.csv`` (test scores per run) into ``out``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import SmartError
from ..tasks import prep_for, split_fractions, task_names
from ..tasks import task as task_spec
from .data import label_fraction_indices, load_arrays, split_indices, task_records
from .features import extract_features, load_init, stack
from .metrics import metrics_with_ci
from .selection import PROBE_CS, fold_splits, select_probe_C
from .study import Cell, check_fractions, comparisons, is_builtin, resolve_inits, run_cells, seed_case_cis, write_outputs

__all__ = ["ClassData", "load_classification", "linear_probe", "FineTuneClassifier", "FineTuned", "finetune", "warmup_cosine",
           "classification_study", "summarise", "METRICS"]

METRICS = ("auc", "accuracy", "balanced_accuracy")


@dataclasses.dataclass
class ClassData:
    """A classification set loaded once: ``images`` (N, 1, S, S, S) in [0, 1], ``labels`` (N,),
    ``patients`` (N,), ``split`` name → indices, ``n_classes``, ``source`` (for messages) and ``phantom``."""

    task: str
    source: str
    images: torch.Tensor
    labels: np.ndarray
    patients: list[str]
    split: dict[str, np.ndarray]
    n_classes: int
    phantom: bool
    prep: dict[str, Any]


def load_classification(task: str, data: str | os.PathLike | None = None, preset: str = "cpu",
                        runs_dir: str | os.PathLike = "runs", n: int | None = None, data_seed: int = 0,
                        roi: int | None = None, spacing: float | None | str = "default",
                        hu_window: tuple[float, float] = (-500.0, 500.0)) -> ClassData:
    """Load and preprocess a classification task (``nodules``, ``response`` or ``organs``).

    Raises:
        SmartError: unknown task, labels outside the task's classes, a training split with fewer than
        two classes, an empty train or test split, a patient in two splits.
    """
    spec = task_spec(task)
    if spec.kind != "classification":
        raise SmartError(f"task {task!r}: not a classification task (expected one of "
                         f"{', '.join(task_names('classification'))})")
    records, source = task_records(task, data, preset, runs_dir, n=n, seed=data_seed)
    split = split_indices(records, source, fractions=split_fractions(task, preset), seed=data_seed)
    labels = np.array([int(r["label"]) for r in records])
    train_classes = sorted(set(labels[split["train"]].tolist()))
    if len(train_classes) < 2:
        raise SmartError(f"{source}: the training split holds only class {train_classes}; classification needs two or more classes")
    n_classes = int(labels.max()) + 1
    if spec.classes is not None and n_classes != len(spec.classes):
        raise SmartError(f"{source}: labels {sorted(set(labels.tolist()))} do not match the classes {list(spec.classes)} of {task}")
    prep = prep_for(task, preset, roi, spacing)
    images, _ = load_arrays(records, prep["roi"], prep["spacing"], hu_window)
    return ClassData(task=task, source=source, images=stack(images), labels=labels,
                     patients=[str(r["patient_id"]) for r in records], split=split, n_classes=n_classes,
                     phantom=is_builtin(data), prep=prep)


def _features(f: dict[str, np.ndarray], feature: str) -> np.ndarray:
    if feature == "both":
        return np.concatenate([f["cls"], f["pooled"]], axis=1)
    if feature in f:
        return f[feature]
    raise SmartError(f"feature={feature!r}: expected cls, pooled or both")


def linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, seed: int = 0,
                 C: float = 1.0) -> np.ndarray:
    """Logistic regression on frozen features.

    Args: x_train (n, F), y_train (n,), x_test (m, F). Returns class probabilities (m, n_classes);
    a class absent from ``y_train`` gets probability 0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, random_state=seed))
    clf.fit(x_train, y_train)
    proba = clf.predict_proba(x_test)
    out = np.zeros((len(x_test), n_classes))
    out[:, clf.classes_] = proba
    return out


class FineTuneClassifier(nn.Module):
    """Encoder + head: ``[CLS] ‖ pooled`` (B, C3 + Cg) → LayerNorm → Linear → logits (B, K)."""

    def __init__(self, net: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.net = net
        dim = net.token_dim + net.pool_dim
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.encode(x)
        return self.head(torch.cat([out["cls"], out["pooled"]], dim=1))


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random flip of each spatial axis with p = 0.5 per batch (two lines; MONAI's RandFlip works per sample on
    channel-first arrays and would need a loop)."""
    dims = [d for d in (2, 3, 4) if torch.rand((), generator=g) < 0.5]
    return torch.flip(x, dims) if dims else x


@dataclasses.dataclass
class FineTuned:
    """What :func:`finetune` returns: ``probs`` (m, K) test probabilities at the selected ``epoch``
    (1-based), and ``history``: one row per epoch — ``epoch, lr, train_loss`` (mean over the epoch's
    minibatches), ``val_loss, val_score, val_metric`` (when a validation set is given), ``test_auc``
    (when ``y_test`` is given: logged for the curves, never used to choose), ``selected``."""

    probs: np.ndarray
    epoch: int
    history: list[dict]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    out = [torch.softmax(model(x[i:i + batch_size]).float(), dim=1) for i in range(0, len(x), batch_size)]
    model.train()
    return torch.cat(out).numpy()


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up from 1/warmup to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + float(np.cos(np.pi * min(t, 1.0))))


def finetune(net: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, n_classes: int,
             epochs: int = 5, batch_size: int = 8, lr: float = 3e-4, head_lr: float = 1e-3,
             weight_decay: float = 0.05, seed: int = 0, progress: bool = False, warmup: float = 0.1,
             x_val: torch.Tensor | None = None, y_val: np.ndarray | None = None,
             y_test: np.ndarray | None = None) -> FineTuned:
    """Fine-tune ``net`` with a new head; the epoch is chosen on the validation set.

    Args: x_train (n, 1, S, S, S), y_train (n,), x_test (m, 1, S, S, S); x_val / y_val (v, ...) the
    held-out patients that choose the epoch (the best :func:`smartlib.downstream.selection.val_score`,
    ties to the lower validation loss; none: the last epoch); y_test (m,) only to log the test AUC per epoch for the curves. AdamW with ``lr`` on
    the encoder and ``head_lr`` on the head; linear warm-up over the first ``warmup`` fraction of the
    ``epochs`` × ⌈n / batch_size⌉ steps, then cosine decay. ``progress``: a tqdm bar of the steps.
    """
    from tqdm.auto import tqdm

    from ..seed import seed_everything
    from .metrics import classification_metrics
    from .selection import val_score

    if epochs < 1:
        raise SmartError(f"epochs={epochs}: must be >= 1")
    if not 0 <= warmup < 1:
        raise SmartError(f"warmup={warmup}: must lie in [0, 1)")
    if (x_val is None) != (y_val is None):
        raise SmartError("finetune: give both x_val and y_val, or neither")
    seed_everything(seed)
    model = FineTuneClassifier(net, n_classes)
    opt = torch.optim.AdamW([{"params": model.net.parameters(), "lr": lr},
                             {"params": model.head.parameters(), "lr": head_lr}], weight_decay=weight_decay, fused=True)
    per_epoch = int(np.ceil(len(x_train) / batch_size))
    steps = epochs * per_epoch
    n_warm = int(round(warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, steps, n_warm))
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=steps, desc="fine-tuning", unit="step", disable=not progress, dynamic_ncols=True)
    history: list[dict] = []
    best: tuple[tuple[float, float], int, np.ndarray] | None = None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x_train), generator=g)
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(_flip(x_train[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        row: dict = {"epoch": epoch, "lr": float(opt.param_groups[0]["lr"]), "train_loss": float(np.mean(losses))}
        probs = _predict(model, x_test, batch_size)
        if x_val is not None:
            pv = _predict(model, x_val, batch_size)
            yv = np.asarray(y_val).astype(int)
            row["val_loss"] = float(-np.log(np.clip(pv[np.arange(len(yv)), yv], 1e-7, 1.0)).mean())
            row["val_score"], row["val_metric"] = val_score(yv, pv)
        if y_test is not None:
            yt = np.asarray(y_test)
            row["test_auc"] = classification_metrics(yt, probs if n_classes > 2 else probs[:, 1])["auc"]
        # the best validation score, ties broken by the lower validation loss, then the earlier epoch;
        # no validation set: the last epoch
        score = (row["val_score"], -row["val_loss"]) if "val_score" in row else (float(epoch), 0.0)
        if best is None or score > best[0]:
            best = (score, epoch, probs)
        history.append(row)
    bar.close()
    model.eval()
    for row in history:
        row["selected"] = row["epoch"] == best[1]
    return FineTuned(probs=best[2], epoch=best[1], history=history)


def classification_study(task: str, inits: Mapping[str, str] | Sequence[str] | str, *, preset: str = "cpu",
                         runs_dir: str | os.PathLike = "runs", out: str | os.PathLike | None = None,
                         data: str | os.PathLike | None = None, fractions: Sequence[float] = (1.0,),
                         seeds: Sequence[int] = (0,), modes: Sequence[str] = ("probe",),
                         finetune_fractions: Sequence[float] | None = None, finetune_seeds: Sequence[int] | None = None,
                         epochs: int = 5, n_boot: int = 1000,
                         roi: int | None = None, spacing: float | None | str = "default", n: int | None = None,
                         data_seed: int = 0, batch_size: int = 8, lr: float = 3e-4, feature: str = "both",
                         warmup: float = 0.1, folds: int = 0, Cs: Sequence[float] = PROBE_CS,
                         dataset: ClassData | None = None, log: Callable[[str], None] = print,
                         progress: bool = False) -> "pd.DataFrame":
    """Run every (init × mode × fraction × seed) classification and return one row per run.

    Args:
        task: ``nodules``, ``response`` (binary) or ``organs``.
        inits: names → init specs (``"scratch"``, a variant name, or an export path); a list uses the specs as names.
        modes: any of ``probe``, ``finetune``; ``finetune_fractions`` / ``finetune_seeds`` restrict fine-tuning
            to those fractions / seeds (default: all of ``fractions`` / ``seeds``).
        dataset: a :class:`ClassData` already loaded (the notebooks load once, study many times).
        folds: 0 selects the probe's C (from ``Cs``) and the fine-tuning epoch on the validation split;
            k ≥ 2 uses k-fold CV on train + val and averages the k models' test predictions
            (:mod:`smartlib.downstream.selection`). No validation split and ``folds`` 0: C = 1, last epoch.
        warmup: fine-tuning warm-up, a fraction of the steps.

    Row columns: ``task, init, mode, fraction, seed, n_train, n_val, n_test``, each metric with ``_lo``/``_hi``,
    ``selected`` (the chosen C or epoch, one per fold joined by ``;``), ``val_score``, ``val_metric``,
    ``seconds``. ``curves.csv`` holds the fine-tuning history (train loss, val score, test AUC per epoch). Nothing is written when ``out`` is None; otherwise the files listed in the module docstring
    (all atomically, after every run has finished: a failure leaves no partial results).
    """
    import pandas as pd

    modes = list(modes)
    bad = [m for m in modes if m not in ("probe", "finetune")]
    if bad or not modes:
        raise SmartError(f"mode {bad or modes!r}: expected probe and/or finetune")
    fractions = check_fractions(fractions)
    ft_fractions = fractions if finetune_fractions is None else check_fractions(finetune_fractions)
    inits_r = resolve_inits(inits, preset, runs_dir, log=log)  # fail early
    ds = dataset or load_classification(task, data, preset, runs_dir, n=n, data_seed=data_seed, roi=roi, spacing=spacing)
    tr, te = ds.split["train"], ds.split["test"]
    x_test, y_test = ds.images[te], ds.labels[te]
    cells = [Cell(name, path, f, s, mode) for name, path in inits_r.paths.items() for mode in modes for f in fractions
             if mode == "probe" or f in ft_fractions
             for s in (seeds if mode == "probe" or finetune_seeds is None else finetune_seeds)]
    splits = fold_splits(tr, ds.split["val"], ds.labels.tolist(), ds.patients, folds=folds, seed=data_seed)
    feats: dict[tuple[str, int], np.ndarray] = {}  # frozen features, once per pretrained init / scratch seed
    preds: list[dict] = []
    curves: list[dict] = []

    def run_one(c: Cell) -> dict:
        t0 = time.time()
        probs, chosen, vals, n_train, metric = [], [], [], [], ""
        for k, (f_tr, f_va) in enumerate(splits):
            keep = label_fraction_indices(f_tr, ds.labels.tolist(), ds.patients, c.fraction, seed=c.seed)
            if len(set(ds.labels[keep].tolist())) < 2:
                raise SmartError(f"{ds.source}: label fraction {c.fraction} leaves a single class in the training split")
            n_train.append(len(keep))
            if c.mode == "probe":
                key = (c.init, c.seed if c.path == "scratch" else 0)  # every scratch seed is its own random encoder
                if key not in feats:
                    feats[key] = _features(extract_features(load_init(c.path, preset, ds.prep["roi"], seed=key[1]), ds.images,
                                                            batch_size, progress=progress), feature)
                f = feats[key]
                C, table = (select_probe_C(f[keep], ds.labels[keep], f[f_va], ds.labels[f_va], ds.n_classes, Cs, seed=c.seed)
                            if len(f_va) else (1.0, []))
                best = next((r for r in table if r["C"] == C), {})
                probs.append(linear_probe(f[keep], ds.labels[keep], f[te], ds.n_classes, seed=c.seed, C=C))
                chosen.append(C)
                vals.append(best.get("score", float("nan")))
                metric = best.get("metric", "")
            else:
                net = load_init(c.path, preset, ds.prep["roi"], seed=c.seed)
                ft = finetune(net, ds.images[keep], ds.labels[keep], x_test, ds.n_classes, epochs=epochs, batch_size=batch_size,
                              lr=lr, seed=c.seed, progress=progress, warmup=warmup,
                              x_val=ds.images[f_va] if len(f_va) else None, y_val=ds.labels[f_va] if len(f_va) else None,
                              y_test=y_test)
                probs.append(ft.probs)
                chosen.append(ft.epoch)
                sel = ft.history[ft.epoch - 1]
                vals.append(sel.get("val_score", float("nan")))
                metric = sel.get("val_metric", "")
                curves.extend({"init": c.init, "mode": c.mode, "fraction": c.fraction, "seed": c.seed, "fold": k, **h}
                              for h in ft.history)
        scores = np.mean(probs, axis=0)  # one split: its predictions; k folds: the k models averaged
        m = metrics_with_ci(y_test, scores if ds.n_classes > 2 else scores[:, 1], n_boot=n_boot, seed=c.seed)
        row = {"task": task, "init": c.init, "mode": c.mode, "fraction": c.fraction, "seed": c.seed,
               "n_train": int(np.mean(n_train)), "n_val": int(np.mean([len(v) for _, v in splits])), "n_test": len(te), **m,
               "selected": ";".join(f"{v:g}" for v in chosen), "val_score": float(np.nanmean(vals)) if len(f_va) else float("nan"),
               "val_metric": metric, "seconds": round(time.time() - t0, 2)}
        what = "C" if c.mode == "probe" else "epoch"
        log(f"{task} {c.init} {c.mode} fraction={c.fraction} seed={c.seed}: AUC {m['auc']:.3f} "
            f"[{m['auc_lo']:.3f}, {m['auc_hi']:.3f}] acc {m['accuracy']:.3f}, {what} {row['selected']} "
            f"({row['seconds']:.1f} s)" + (f" — {m['auc_note']}" if "auc_note" in m else ""))
        for k, i in enumerate(te):
            preds.append({"init": c.init, "mode": c.mode, "fraction": c.fraction, "seed": c.seed, "case": k,
                          "patient_id": ds.patients[i], "label": int(ds.labels[i]),
                          **{f"p{j}": float(scores[k, j]) for j in range(ds.n_classes)}})
        return row

    results = pd.DataFrame(run_cells(cells, run_one))
    if out is not None:
        summary, comps = summarise(results), pd.DataFrame()
        if ds.n_classes == 2 and len(set(y_test.tolist())) == 2:  # seeds × cases CIs of the AUC, paired comparisons
            long = pd.DataFrame(preds).rename(columns={"label": "y", "p1": "score"})
            cis = seed_case_cis(long, ["init", "mode", "fraction"], "auc", n_boot=n_boot)
            summary = summary.drop(columns=["auc_lo", "auc_hi"]).merge(
                cis.drop(columns=["auc", "n_seeds"]), on=["init", "mode", "fraction"], how="left")
            comps = comparisons(long, ["mode", "fraction"], "auc", n_boot=n_boot)
        write_outputs(out, csv={"predictions.csv": preds, "results.csv": results.to_dict("records"),
                                "summary.csv": summary.to_dict("records"), "comparisons.csv": comps.to_dict("records"),
                                "curves.csv": curves},
                      json={"summary.json": {"task": task, "source": ds.source, "phantom": ds.phantom, "preset": preset,
                                             "n_train": int(len(tr)), "n_val": int(len(ds.split["val"])), "n_test": int(len(te)),
                                             "prep": ds.prep, "folds": folds, "warmup": warmup, "probe_Cs": [float(c) for c in Cs],
                                             "inits": inits_r.specs, "n_boot": n_boot, "epochs": epochs,
                                             "summary": summary.to_dict("records"), "runs": results.to_dict("records"),
                                             "comparisons": comps.to_dict("records")}})
    return results


def summarise(results: "pd.DataFrame") -> "pd.DataFrame":
    """Mean and SD over seeds of each metric per task × init × mode × fraction, with ``<metric>_lo`` /
    ``_hi`` the mean of the per-seed case-bootstrap limits. For a binary task the study replaces the AUC's
    limits by a CI over seeds and cases together (:func:`smartlib.downstream.study.seed_case_cis`)."""
    import pandas as pd

    if results.empty:
        return pd.DataFrame()
    keys = ["task", "init", "mode", "fraction"]
    rows = []
    for k, g in results.groupby(keys, sort=False):
        row = dict(zip(keys, k))
        row["n_seeds"] = len(g)
        row["n_train"] = int(g["n_train"].mean())
        for m in METRICS:
            row[f"{m}_mean"] = float(g[m].mean())
            row[f"{m}_sd"] = float(g[m].std(ddof=0))
            row[f"{m}_lo"] = float(g[f"{m}_lo"].mean())
            row[f"{m}_hi"] = float(g[f"{m}_hi"].mean())
        rows.append(row)
    return pd.DataFrame(rows)
