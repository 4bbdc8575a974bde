"""Organ clustering without fine-tuning: frozen features → 2-D UMAP → cluster metrics.

For each init, the ``[CLS]`` and the average-pooled features of every organ crop are embedded with
``umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, metric="euclidean", random_state=seed)``
(``n_neighbors`` is capped at N − 1 for tiny sets) and scored with
:func:`~smartlib.downstream.metrics.cluster_metrics` on the embedding: intra- and inter-class
distances (the published numbers), silhouette, Davies–Bouldin and k-means NMI / ARI. UMAP's scale
is arbitrary, so only the scale-free metrics compare across inits without caveat.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import SmartError
from .features import extract_features, load_init
from .metrics import cluster_metrics
from .study import grid, resolve_inits, run_cells, write_outputs

__all__ = ["UMAP_PARAMS", "umap_embedding", "cluster_study"]

UMAP_PARAMS = {"n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean"}


def umap_embedding(x: np.ndarray, seed: int = 0, **params) -> np.ndarray:
    """2-D UMAP of features ``x`` (N, F) with :data:`UMAP_PARAMS` (overridable) and ``random_state=seed``: (N, 2)."""
    import warnings

    import umap

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4:
        raise SmartError(f"features shape {x.shape}: UMAP needs (N, F) with N >= 4")
    p = {**UMAP_PARAMS, **params}
    p["n_neighbors"] = int(min(p["n_neighbors"], len(x) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state" and numba notices
        return umap.UMAP(random_state=seed, **p).fit_transform(x)


def cluster_study(inits: Mapping[str, str] | Sequence[str], *, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                  out: str | os.PathLike | None = None, data: str | os.PathLike | None = None, seed: int = 0,
                  features: Sequence[str] = ("cls", "pooled"), n: int | None = None, data_seed: int = 0,
                  roi: int | None = None, spacing: float | None | str = "default", split: str | None = None,
                  batch_size: int = 8, dataset=None, log: Callable[[str], None] = print, progress: bool = False):
    """UMAP + cluster metrics of every init's frozen features of the organ crops.

    Args:
        split: restrict to one split (``"test"``) or use every case (None, the default: no training happens).
        dataset: a :class:`~smartlib.downstream.classify.ClassData` already loaded.

    Returns ``(metrics, embeddings)``: a DataFrame with one row per init × feature and a dict
    ``(init, feature) → (N, 2)`` embedding (the labels are ``dataset.labels``). With ``out``: ``metrics.csv``,
    ``metrics.json`` and ``embeddings.csv`` (init, feature, x, y, label).
    """
    import pandas as pd

    from .classify import load_classification

    inits_r = resolve_inits(inits, preset, runs_dir, log=log)  # fail early
    ds = dataset or load_classification("organs", data, preset, runs_dir, n=n, data_seed=data_seed, roi=roi, spacing=spacing)
    idx = np.arange(len(ds.labels)) if split is None else ds.split[split]
    if len(idx) == 0:
        raise SmartError(f"{ds.source}: the {split} split is empty")
    labels = ds.labels[idx]
    emb: dict[tuple[str, str], np.ndarray] = {}

    def run_one(c) -> list[dict]:
        t0 = time.time()
        feats = extract_features(load_init(c.path, preset, ds.prep["roi"], seed=seed), ds.images[idx], batch_size, progress=progress)
        rows = []
        for feat in features:
            if feat not in feats:
                raise SmartError(f"feature {feat!r}: expected cls or pooled")
            e = umap_embedding(feats[feat], seed=seed)
            emb[(c.init, feat)] = e
            m = cluster_metrics(e, labels, seed=seed)
            rows.append({"init": c.init, "feature": feat, "n": len(idx), "n_classes": int(len(np.unique(labels))), **m,
                         "seconds": round(time.time() - t0, 2)})
            log(f"organs {c.init} {feat}: intra {m['intra_mean']:.2f} inter {m['inter_mean']:.2f} "
                f"silhouette {m['silhouette']:.3f} NMI {m['kmeans_nmi']:.3f}")
        return rows

    metrics = pd.DataFrame([r for rows in run_cells(grid(inits_r, seeds=[seed]), run_one) for r in rows])
    write_outputs(out, csv={"embeddings.csv": [{"init": k[0], "feature": k[1], "x": float(p[0]), "y": float(p[1]),
                                                "label": int(lab)} for k, e in emb.items() for p, lab in zip(e, labels)],
                            "metrics.csv": metrics.to_dict("records")},
                  json={"metrics.json": {"task": "organs", "source": ds.source, "phantom": ds.phantom, "preset": preset,
                                         "umap": UMAP_PARAMS, "seed": seed, "inits": inits_r.specs,
                                         "metrics": metrics.to_dict("records")}})
    return metrics, emb
