"""Pretraining pools and the arms of the wild- vs self-pretraining study (MIDL 2024, PMLR 250:708–721; arXiv 2405.08657).

A **pool** is what an encoder is pretrained on:

* ``wild`` — a large, diverse, uncurated pool: the built-in ``pretrain`` phantom set (whole trunks and
  zoomed views of every body region, random body sizes and fields of view, every reconstruction kernel,
  2.5 / 5 mm slices, with and without contrast, no tumours), or any folder / manifest of CTs (``wild_data``);
* ``self`` — exactly the segmentation task's training images (a manifest of those records,
  :func:`self_manifest`);
* ``wild+self`` — the wild run's student and teacher, pretrained further on the self pool (the
  pretraining config's ``init_from``).

An **arm** (:data:`ARMS`) is an encoder (``swin`` → MONAI ``SwinUNETR``; ``vit`` → MONAI ``UNETR``) × a pool
× a pretext task (:data:`PRETEXTS`, loss-weight overrides of the SMIT-style variant: random masking, clean
teacher, no semantic attention), or a scratch encoder. :func:`pretrain_arm` pretrains an arm once per
``runs_dir`` (cached like :func:`smartlib.variants.pretrained`) and returns its exported encoder.

Recipes, so that pools differ and little else does: every arm of a pool trains for (about) the number of
steps of the wild recipe (``epochs`` chosen for the pool's size). The self pool is cropped at the
segmentation patch edge (its volumes are task-sized), and a ViT at that edge on every pool: UNETR can load
its learned position embeddings only for the token grid they were learned on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import SmartError

__all__ = ["Arm", "ARMS", "PRETEXTS", "POOLS", "VIT_ARCH", "arm", "arm_overrides", "self_manifest", "pool_records",
           "pool_table", "pretrain_arm", "run_name"]

POOLS = ("wild", "self", "wild+self")

#: pretext task → loss-weight overrides of the ``smit`` variant (AMIP: masked image prediction, L1 on masked
#: voxels; AMPD: masked patch-token distillation; AITD / GITD: cross-view distillation of the mean stage-3
#: token and of the average-pooled stage-4 token — the two *global* terms)
PRETEXTS: dict[str, dict[str, float]] = {
    "smit": {},  # masked image prediction with its distillation terms (SMIT, arXiv 2205.10342)
    "global": {"w_amip": 0.0, "w_ampd": 0.0},  # contrastive-style: global tokens only, no voxel or patch target
    "amip": {"w_ampd": 0.0, "w_aitd": 0.0, "w_gitd": 0.0},
    "ampd": {"w_amip": 0.0, "w_aitd": 0.0, "w_gitd": 0.0},
    "aitd": {"w_amip": 0.0, "w_ampd": 0.0, "w_gitd": 0.0},
    "gitd": {"w_amip": 0.0, "w_ampd": 0.0, "w_aitd": 0.0},
}

#: the ViT of the ViT arms per preset (12 layers: MONAI UNETR's fixed depth; patch 16: SMART's mask unit)
VIT_ARCH: dict[str, dict[str, int]] = {
    "smoke": {"vit_layers": 12, "vit_hidden": 48, "vit_heads": 4},
    "cpu": {"vit_layers": 12, "vit_hidden": 96, "vit_heads": 4},
    "paper": {"vit_layers": 12, "vit_hidden": 768, "vit_heads": 12},  # ViT-B, UNETR's default
}
VIT_ARCH["long"] = VIT_ARCH["cpu"]  # the recorded run keeps the cpu networks


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: ``encoder`` (``swin`` / ``vit``), ``pool`` (None: scratch) and ``pretext`` (a :data:`PRETEXTS` key)."""

    name: str
    encoder: str
    pool: str | None
    pretext: str | None
    description: str


def _arms() -> dict[str, Arm]:
    out = [Arm("scratch", "swin", None, None, "Swin from random weights")]
    out += [Arm(p, "swin", p, "smit", f"Swin, SMIT-style pretraining on the {p} pool") for p in POOLS]
    out += [Arm(f"wild-{t}", "swin", "wild", t, f"Swin on the wild pool, pretext {t} only" if t != "global"
                else "Swin on the wild pool, global (contrastive-style) distillation only") for t in PRETEXTS if t != "smit"]
    out += [Arm("vit-scratch", "vit", None, None, "ViT (UNETR) from random weights")]
    out += [Arm(f"vit-{p}", "vit", p, "smit", f"ViT, SMIT-style pretraining on the {p} pool") for p in POOLS]
    return {a.name: a for a in out}


#: every arm of the study, by name
ARMS: dict[str, Arm] = _arms()


def arm(name: str) -> Arm:
    """The :class:`Arm` called ``name``; an unknown name is a SmartError listing the known ones."""
    if name not in ARMS:
        raise SmartError(f"arm {name!r}: expected one of {', '.join(ARMS)}")
    return ARMS[name]


def run_name(a: Arm) -> str:
    """Folder of the arm's pretraining run under ``runs_dir/pretrain`` (``vit-wildself-smit``, …)."""
    return f"{a.encoder}-{a.pool.replace('+', '')}-{a.pretext}"


def self_manifest(records: Sequence[Mapping[str, Any]], runs_dir: str | os.PathLike) -> Path:
    """A manifest of exactly ``records`` (the segmentation training images) for pretraining on the self pool.

    Written once under ``runs_dir/pools/self-<digest>/manifest.csv``, the digest naming the images, so the
    same records always give the same path (and a cached run its configuration). Image paths are absolute;
    the acquisition columns are kept.

    Raises:
        SmartError: no records (an empty pool).
    """
    from .io import write_csv

    if not records:
        raise SmartError("self pool: no training images to pretrain on (the segmentation training split is empty)")
    rows = [{"image": str(Path(r["image"]).resolve()), "patient_id": str(r.get("patient_id", "")),
             **{k: r.get(k) for k in ("kernel", "slice_mm", "contrast", "noise_hu") if r.get(k) not in (None, "")}}
            for r in records]
    digest = hashlib.sha1("\n".join(sorted(r["image"] for r in rows)).encode()).hexdigest()[:12]
    path = (Path(runs_dir) / "pools" / f"self-{digest}" / "manifest.csv").resolve()  # one path from any working folder
    if not path.is_file():
        write_csv(path, rows)
    return path


def _n_records(data: str, cfg) -> int:
    """Volumes of a pool: the config's ``n_volumes`` for the built-in phantoms, else the records found."""
    if data == "phantom":
        return int(cfg.n_volumes)
    from .data.sources import resolve_data

    return len(resolve_data(data, "pretrain"))


def arm_overrides(name: str, preset: str, roi: int, self_data: str | os.PathLike | None = None,
                  wild_data: str = "phantom", init_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """Overrides of the ``smit`` variant's config that make arm ``name`` (not scratch) at ``preset``.

    ``roi`` is the segmentation patch edge (the crop of the self pool and of every ViT); ``self_data`` the
    self-pool manifest (:func:`self_manifest`), needed for ``self`` and ``wild+self``; ``wild_data`` the wild
    pool (``"phantom"``: the built-in set); ``init_from`` the wild run of a ``wild+self`` arm.
    """
    from .variants import variant_config

    a = arm(name)
    if a.pool is None:
        raise SmartError(f"arm {name!r}: a scratch arm is not pretrained")
    base = variant_config("smit", preset)
    over: dict[str, Any] = dict(PRETEXTS[a.pretext])
    if a.encoder == "vit":
        over.update({"arch": "vit", "img_size": int(roi), **VIT_ARCH[preset]})
    if a.pool == "wild":
        return {**over, "data": str(wild_data)}
    if self_data is None:
        raise SmartError(f"arm {name!r}: needs the self pool's manifest (self_data)")
    n_self = _n_records(str(self_data), base)
    if n_self < base.batch_size:
        raise SmartError(f"self pool {self_data}: {n_self} volume(s), fewer than one batch of {base.batch_size}")
    wild_steps = base.epochs * max(1, _n_records(wild_data, base) // base.batch_size)
    over.update({"data": str(self_data), "img_size": int(roi),
                 "epochs": max(1, round(wild_steps / (n_self // base.batch_size)))})
    if a.pool == "wild+self":
        if init_from is None:
            raise SmartError(f"arm {name!r}: needs the wild run to start from (init_from)")
        over["init_from"] = str(init_from)
    return over


def pool_records(pool: str, preset: str, runs_dir: str | os.PathLike, self_records: Sequence[Mapping[str, Any]] = (),
                 wild_data: str = "phantom") -> list[dict]:
    """The records of a pool: the wild pool (built-in phantoms at ``preset`` or ``wild_data``) or ``self_records``."""
    from .data.sources import resolve_data

    if pool == "wild":
        if wild_data == "phantom":
            from .tasks import builtin_manifest

            return resolve_data(str(builtin_manifest("pretrain", preset, runs_dir)), "pretrain")
        return resolve_data(wild_data, "pretrain")
    if pool in ("self", "wild+self"):
        return [dict(r) for r in self_records]
    raise SmartError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")


def pool_table(pools: Mapping[str, Sequence[Mapping[str, Any]]]) -> "pd.DataFrame":
    """How diverse each pool is: volumes per acquisition stratum (contrast, kernel, slice thickness: the strata
    of :func:`smartlib.downstream.robustness.acquisition_strata`, read from manifest columns or DICOM tags) and view.

    Returns one row per (pool, factor, value) with ``n`` volumes; a volume without the information counts as
    ``unknown``.
    """
    import pandas as pd

    from .downstream.robustness import acquisition_strata

    rows = []
    for pool, recs in pools.items():
        if not recs:
            raise SmartError(f"pool {pool!r}: no volumes")
        rows.append({"pool": pool, "factor": "volumes", "value": "all", "n": len(recs)})
        strata = [{**acquisition_strata(r), "view": r.get("view")} for r in recs]
        for factor in ("view", "contrast", "kernel", "slice"):
            vals = [str(s[factor]) if s[factor] not in (None, "") else "unknown" for s in strata]
            if factor == "view" and set(vals) == {"unknown"}:
                continue
            for v in sorted(set(vals)):
                rows.append({"pool": pool, "factor": factor, "value": v, "n": vals.count(v)})
    return pd.DataFrame(rows)


def pretrain_arm(name: str, preset: str, runs_dir: str | os.PathLike, roi: int, self_data: str | os.PathLike | None = None,
                 wild_data: str = "phantom", progress: bool = False, log: Callable[[str], None] = print) -> str:
    """The exported encoder of arm ``name`` (``"scratch"`` for a scratch arm), pretraining it once if needed.

    The Swin arm ``wild`` on the built-in pool is exactly the ``smit`` variant and shares its run; a
    ``wild+self`` arm pretrains its ``wild`` arm first. Runs live in ``runs_dir/pretrain/<run_name>-<digest>``,
    the digest naming the pool's data (so another data set never meets a cached run of the same arm).
    """
    from .variants import pretrained

    a = arm(name)
    if a.pool is None:
        return "scratch"
    wild_data = wild_data if wild_data == "phantom" else str(Path(wild_data).resolve())
    if (a.encoder, a.pool, a.pretext, wild_data) == ("swin", "wild", "smit", "phantom"):
        return str(pretrained("smit", preset, runs_dir, progress=progress, log=log))
    init_from = None
    if a.pool == "wild+self":
        wild = "wild" if a.encoder == "swin" else "vit-wild"
        init_from = Path(pretrain_arm(wild, preset, runs_dir, roi, self_data, wild_data, progress, log)).parent.resolve()
    over = arm_overrides(name, preset, roi, self_data, wild_data, init_from)
    digest = hashlib.sha1(str(over["data"]).encode()).hexdigest()[:8] if over["data"] != "phantom" else ""
    return str(pretrained("smit", preset, runs_dir, overrides=over, progress=progress, log=log,
                          name=run_name(a) + (f"-{digest}" if digest else "")))
