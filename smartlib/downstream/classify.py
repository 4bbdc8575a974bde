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
from ..tasks import prep_for, task_names
from ..tasks import task as task_spec
from .data import label_fraction_indices, load_arrays, split_indices, task_records
from .features import extract_features, load_init, stack
from .metrics import metrics_with_ci
from .study import Cell, check_fractions, comparisons, is_builtin, resolve_inits, run_cells, seed_case_cis, write_outputs

__all__ = ["ClassData", "load_classification", "linear_probe", "FineTuneClassifier", "finetune",
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
    split = split_indices(records, source, seed=data_seed)
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


def finetune(net: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_test: torch.Tensor, n_classes: int,
             epochs: int = 5, batch_size: int = 8, lr: float = 3e-4, head_lr: float = 1e-3,
             weight_decay: float = 0.05, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Fine-tune ``net`` with a new head; return test class probabilities (m, n_classes).

    Args: x_train (n, 1, S, S, S), y_train (n,), x_test (m, 1, S, S, S). AdamW with ``lr`` on the encoder and
    ``head_lr`` on the head, cosine decay over ``epochs`` × ⌈n / batch_size⌉ steps. ``progress``: a tqdm bar of the steps.
    """
    from tqdm.auto import tqdm

    from ..seed import seed_everything

    if epochs < 1:
        raise SmartError(f"epochs={epochs}: must be >= 1")
    seed_everything(seed)
    model = FineTuneClassifier(net, n_classes)
    opt = torch.optim.AdamW([{"params": model.net.parameters(), "lr": lr},
                             {"params": model.head.parameters(), "lr": head_lr}], weight_decay=weight_decay)
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(total=steps, desc="fine-tuning", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=g)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(model(_flip(x_train[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        probs = [torch.softmax(model(x_test[i:i + batch_size]), dim=1) for i in range(0, len(x_test), batch_size)]
    return torch.cat(probs).numpy()


def classification_study(task: str, inits: Mapping[str, str] | Sequence[str] | str, *, preset: str = "cpu",
                         runs_dir: str | os.PathLike = "runs", out: str | os.PathLike | None = None,
                         data: str | os.PathLike | None = None, fractions: Sequence[float] = (1.0,),
                         seeds: Sequence[int] = (0,), modes: Sequence[str] = ("probe",),
                         finetune_fractions: Sequence[float] | None = None, finetune_seeds: Sequence[int] | None = None,
                         epochs: int = 5, n_boot: int = 1000,
                         roi: int | None = None, spacing: float | None | str = "default", n: int | None = None,
                         data_seed: int = 0, batch_size: int = 8, lr: float = 3e-4, feature: str = "both",
                         dataset: ClassData | None = None, log: Callable[[str], None] = print,
                         progress: bool = False) -> "pd.DataFrame":
    """Run every (init × mode × fraction × seed) classification and return one row per run.

    Args:
        task: ``nodules``, ``response`` (binary) or ``organs``.
        inits: names → init specs (``"scratch"``, a variant name, or an export path); a list uses the specs as names.
        modes: any of ``probe``, ``finetune``; ``finetune_fractions`` / ``finetune_seeds`` restrict fine-tuning
            to those fractions / seeds (default: all of ``fractions`` / ``seeds``).
        dataset: a :class:`ClassData` already loaded (the notebooks load once, study many times).

    Row columns: ``task, init, mode, fraction, seed, n_train, n_test`` and each metric with ``_lo``/``_hi``,
    ``seconds``. Nothing is written when ``out`` is None; otherwise the files listed in the module docstring
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
    feats: dict[tuple[str, int], np.ndarray] = {}  # frozen features, once per pretrained init / scratch seed
    preds: list[dict] = []

    def run_one(c: Cell) -> dict:
        t0 = time.time()
        keep = label_fraction_indices(tr, ds.labels.tolist(), ds.patients, c.fraction, seed=c.seed)
        if len(set(ds.labels[keep].tolist())) < 2:
            raise SmartError(f"{ds.source}: label fraction {c.fraction} leaves a single class in the training split")
        if c.mode == "probe":
            key = (c.init, c.seed if c.path == "scratch" else 0)  # every scratch seed is its own random encoder
            if key not in feats:
                feats[key] = _features(extract_features(load_init(c.path, preset, ds.prep["roi"], seed=key[1]), ds.images,
                                                        batch_size, progress=progress), feature)
            scores = linear_probe(feats[key][keep], ds.labels[keep], feats[key][te], ds.n_classes, seed=c.seed)
        else:
            net = load_init(c.path, preset, ds.prep["roi"], seed=c.seed)
            scores = finetune(net, ds.images[keep], ds.labels[keep], x_test, ds.n_classes, epochs=epochs,
                              batch_size=batch_size, lr=lr, seed=c.seed, progress=progress)
        m = metrics_with_ci(y_test, scores if ds.n_classes > 2 else scores[:, 1], n_boot=n_boot, seed=c.seed)
        row = {"task": task, "init": c.init, "mode": c.mode, "fraction": c.fraction, "seed": c.seed, "n_train": len(keep),
               "n_test": len(te), **m, "seconds": round(time.time() - t0, 2)}
        log(f"{task} {c.init} {c.mode} fraction={c.fraction} seed={c.seed}: AUC {m['auc']:.3f} "
            f"[{m['auc_lo']:.3f}, {m['auc_hi']:.3f}] acc {m['accuracy']:.3f} ({row['seconds']:.1f} s)"
            + (f" — {m['auc_note']}" if "auc_note" in m else ""))
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
                                "summary.csv": summary.to_dict("records"), "comparisons.csv": comps.to_dict("records")},
                      json={"summary.json": {"task": task, "source": ds.source, "phantom": ds.phantom, "preset": preset,
                                             "n_train": int(len(tr)), "n_test": int(len(te)), "prep": ds.prep,
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
