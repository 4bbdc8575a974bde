"""The task registry: one :class:`TaskSpec` per task, read by everything that needs to know a task.

A task is what a chapter trains or evaluates on: its kind (pretraining, classification,
segmentation, multi-label), its classes, the phantom generator and its defaults, the size of the built-in set
at each preset, how that set is split, how its images are preprocessed, and the chapter that uses
it. The command line (``smart data make --task``, ``smart finetune --task``), the record loader's
task aliases (:func:`smartlib.data.resolve_data`), the data chapter and the results page all read
:data:`TASKS`; adding a task is one entry here plus its generator.

Built-in sets live under **one path scheme**, ``<runs_dir>/data/<task>-n<n>-seed<seed>``
(:func:`builtin_dir`), so the data chapter shows exactly the sets the later chapters use.

The order of :data:`TASKS` is part of the generator's random streams (a case's phantom seed is
derived from the task's position): append new tasks, never reorder.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from .config import PRESETS
from .errors import SmartError

__all__ = ["TaskSpec", "TASKS", "KINDS", "task", "task_names", "builtin_dir", "builtin_manifest",
           "builtin_params", "split_fractions", "prep_for", "record_kind"]

#: the kinds of task; ``needs`` says what :func:`smartlib.data.resolve_data` requires of a record
KINDS: dict[str, str | None] = {"pretraining": None, "classification": "label", "segmentation": "mask",
                                "multilabel": "labels"}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything the library knows about one task.

    Attributes:
        name: the task's name on the command line and in file names.
        kind: one of :data:`KINDS`.
        description: one line for tables and ``--help``.
        chapter: the notebook stem that reports this task (None: used by several, e.g. pretraining).
        classes: the label values of a classification task (None: any integers, or no labels).
        class_names: label value → name, where the classes have names.
        defaults: the generator's parameters and their defaults (``smartlib.data.tasks.make_task``).
        sizes: preset → cases in the built-in set (empty for pretraining: the pretraining config's
            ``n_volumes`` decides).
        builtin: preset → generator overrides of the built-in set (split fractions, smaller volumes).
        prep: preset → ``{"roi", "spacing"}``: crop / pad edge (training patch for segmentation) and
            the spacing in mm images are resampled to (None keeps the native grid).
    """

    name: str
    kind: str
    description: str
    chapter: str | None = None
    classes: tuple[int, ...] | None = None
    class_names: Mapping[int, str] | None = None
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    builtin: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    prep: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def needs(self) -> str | None:
        """What every record of this task must carry: ``"label"``, ``"mask"`` or None."""
        return KINDS[self.kind]


_SPLIT_TEST = {"splits": [0.6, 0.0, 0.4]}
#: train / val / test by patient: a validation split for model selection, and ≥ 200 test cases at cpu
_SPLIT_VAL = {"splits": [0.3, 0.2, 0.5]}
_SMALL_SEG = {"splits": [0.5, 0.17, 0.33], "shape": [48, 48, 48], "spacing": [2.0, 2.0, 2.0], "radius_mm": [12.0, 24.0]}
_NATIVE32 = {"roi": 32, "spacing": None}
#: one grid: downstream crops at the pretraining spacing (2 mm at every preset) and never so small that a Swin
#: stage's window shrinks (crop edge ≥ 16 × window: 32³ for the window-2 encoders of smoke / cpu, 64³ for paper)
_CPU2MM = {"roi": 32, "spacing": 2.0}
_PAPER2MM = {"roi": 64, "spacing": 2.0}
#: multi-label findings: enough training cases for the rarer labels, ~110 test cases at cpu
_SPLIT_ML = {"splits": [0.5, 0.15, 0.35]}
_FINDINGS_CPU = {"roi": 32, "spacing": 4.0, "size2d": 64}

#: every task, in generator order (append only)
TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec(
        "pretrain", "pretraining", "unlabelled trunks and zoomed views, random acquisitions",
        defaults={"shape": [96, 96, 96], "spacing": [2.0, 2.0, 2.0], "zoom_fraction": 0.3},
    ),
    TaskSpec(
        "nodules", "classification", "LIDC-IDRI nodule shapes in phantom lung, benign / malignant",
        chapter="03_nodule_malignancy", classes=(0, 1), class_names={0: "benign", 1: "malignant"},
        # labels by the papers' rule (malignancy 1–3 benign, 4–5 malignant); rule "medmnist" (≤2 vs ≥4, 3 left
        # out) is the switch. Limitation: ground-glass nodules (about −650…−550 HU) fall below the [−500, 500]
        # HU window of the pretraining recipe and are seen as background.
        defaults={"size": 64, "spacing": [1.0, 1.0, 1.0], "rule": "paper", "max_fill": 0.75},
        sizes={"smoke": 24, "cpu": 400, "long": 800, "paper": 1000},
        builtin={p: _SPLIT_VAL for p in PRESETS},
        prep={"smoke": _CPU2MM, "cpu": _CPU2MM, "long": _CPU2MM, "paper": _PAPER2MM},
    ),
    TaskSpec(
        "response", "classification",
        "lung tumours; response drawn from a known logistic model of volume, irregularity and heterogeneity",
        chapter="04_treatment_response", classes=(0, 1), class_names={0: "no response", 1: "response"},
        defaults={"shape": [64, 64, 64], "spacing": [1.5, 1.5, 1.5], "radius_mm": [8.0, 22.0],
                  "beta": [1.0, 1.5, 1.0], "beta0": 0.0},
        sizes={"smoke": 24, "cpu": 400, "long": 800, "paper": 200},
        builtin={p: _SPLIT_VAL for p in PRESETS},
        prep={"smoke": _CPU2MM, "cpu": _CPU2MM, "long": _CPU2MM, "paper": _PAPER2MM},
    ),
    TaskSpec(
        "segmentation", "segmentation",
        "thorax views with one tumour and its mask; every kernel × slice × contrast subset populated",
        chapter="05_segmentation",
        defaults={"shape": [96, 96, 96], "spacing": [2.0, 2.0, 2.0], "body_scale": 0.7, "radius_mm": [6.0, 20.0]},
        sizes={"smoke": 8, "cpu": 72, "long": 120, "paper": 120},
        # smoke / cpu: 48³ at 2 mm with 12–24 mm tumours, so that a 160-step CPU fine-tune learns them;
        # cpu: 36 train / 12 val / 24 test volumes
        builtin={"smoke": _SMALL_SEG, "cpu": _SMALL_SEG, "long": _SMALL_SEG, "paper": {"splits": [0.5, 0.17, 0.33]}},
        prep={"smoke": _CPU2MM, "cpu": _CPU2MM, "long": _CPU2MM, "paper": _PAPER2MM},
    ),
    TaskSpec(
        "organs", "classification", "OrganMNIST3D-like crops centred on one of the 11 organs, classes balanced",
        chapter="07_organ_clustering",  # classes: any integers (a real OrganMNIST3D file has 0..10)
        defaults={"size": 32, "per_subject": 3, "fill": 0.8},
        sizes={"smoke": 33, "cpu": 110, "long": 220, "paper": 550},
        builtin={p: _SPLIT_TEST for p in PRESETS},
        # organ crops keep their own grid (the OrganMNIST3D way: resized crops, no physical spacing); paper: the
        # 64³ MedMNIST+ files, since a window-4 encoder's stage-4 window would shrink at 32³
        prep={"smoke": _NATIVE32, "cpu": _NATIVE32, "long": _NATIVE32, "paper": {"roi": 64, "spacing": None}},
    ),
    TaskSpec(
        "localisation", "segmentation",
        "LIDC-IDRI nodule shapes at random offsets in the crop, on the pretraining grid (attention localisation)",
        chapter="08_attention",
        # edge = the pretraining img_size at its 2 mm spacing (no resampling); offset_mm = half the edge, so a
        # nodule can sit anywhere in the crop and a centre-biased map gains nothing (tests/test_registry.py)
        defaults={"size": 64, "spacing": [2.0, 2.0, 2.0], "rule": "paper", "max_fill": 0.4, "min_mm": 6.0,
                  "offset_mm": 64.0},
        sizes={"smoke": 8, "cpu": 24, "long": 48, "paper": 200},
        builtin={"smoke": _SPLIT_TEST, "cpu": _SPLIT_TEST, "long": _SPLIT_TEST, "paper": {**_SPLIT_TEST, "size": 128, "offset_mm": 128.0}},
        prep={"smoke": {"roi": 64, "spacing": 2.0}, "cpu": {"roi": 64, "spacing": 2.0}, "long": {"roi": 64, "spacing": 2.0},
              "paper": {"roi": 128, "spacing": 2.0}},
    ),
    TaskSpec(
        "findings", "multilabel",
        "whole thoraxes with six co-occurring findings (ChestX-ray14 labels and frequencies), each with its mask; "
        "CT and AP radiograph",
        chapter="09_label_tokens",
        defaults={"shape": [64, 56, 64], "spacing": [2.0, 2.0, 2.0], "prevalence_scale": 2.5},
        sizes={"smoke": 32, "cpu": 320, "long": 640, "paper": 2000},
        builtin={"smoke": _SPLIT_ML, "cpu": _SPLIT_ML, "long": _SPLIT_ML, "paper": {**_SPLIT_ML, "shape": [128, 112, 128]}},
        # 3D: the whole thorax (128 mm field) must fit one crop; at cpu a 32³ crop holds it only at 4 mm (a 64³
        # crop at the pretraining 2 mm costs 8× the Swin features). size2d: the radiograph edge in pixels.
        prep={"smoke": _FINDINGS_CPU, "cpu": _FINDINGS_CPU, "long": _FINDINGS_CPU, "paper": {"roi": 64, "spacing": 2.0, "size2d": 224}},
    ),
)}


def task(name: str) -> TaskSpec:
    """The spec of task ``name``; an unknown name is a SmartError listing the known ones."""
    if name not in TASKS:
        raise SmartError(f"task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[name]


def task_names(kind: str | None = None, builtin: bool = False) -> list[str]:
    """Task names, optionally only those of one ``kind`` and/or those with a sized built-in set."""
    return [t.name for t in TASKS.values() if (kind is None or t.kind == kind) and (not builtin or t.sizes)]


def record_kind(name: str) -> str:
    """The record requirement (``pretrain``, ``classify``, ``segment``) of a task name or a kind name."""
    kind = TASKS[name].kind if name in TASKS else name
    return {"pretraining": "pretrain", "classification": "classify", "segmentation": "segment",
            "multilabel": "multilabel"}[kind]


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise SmartError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")


def builtin_dir(name: str, n: int, seed: int, runs_dir: str | os.PathLike) -> Path:
    """The folder of a built-in set: ``<runs_dir>/data/<task>-n<n>-seed<seed>`` (the one path scheme)."""
    task(name)
    return Path(runs_dir) / "data" / f"{name}-n{int(n)}-seed{int(seed)}"


def builtin_params(name: str, preset: str) -> dict[str, Any]:
    """Generator overrides of ``name``'s built-in set at ``preset`` (splits, volume size)."""
    _check_preset(preset)
    return dict(task(name).builtin.get(preset, {}))


def builtin_manifest(name: str, preset: str | None, runs_dir: str | os.PathLike, n: int | None = None,
                     seed: int = 0, **params: Any) -> Path:
    """Manifest of ``name``'s built-in phantom set at ``preset`` (generated once under :func:`builtin_dir`, then cached).

    ``n`` defaults to the preset's size and ``params`` override the generator's parameters; ``preset``
    may be None when both are given. The pretraining set's size, volume edge and seed come from the
    preset's pretraining config (``n_volumes``, ``phantom_shape``, ``data_seed``) unless given. A
    folder that holds a set with other parameters is regenerated (atomically).
    """
    from .data.tasks import make_task

    spec = task(name)
    if preset is not None:
        _check_preset(preset)
    if name == "pretrain" and n is None and preset is not None:
        from .config import pretrain_config

        cfg = pretrain_config(preset)
        n, seed, params = cfg.n_volumes, cfg.data_seed, {"shape": cfg.phantom_shape, **params}
    if n is None:
        if preset not in spec.sizes:
            raise SmartError(f"task {name!r} has no built-in size at preset {preset!r}; pass n")
        n = spec.sizes[preset]
    p = {**(builtin_params(name, preset) if preset is not None else {}), **params}
    return make_task(name, n=int(n), seed=seed, out=builtin_dir(name, n, seed, runs_dir), **p)


def split_fractions(name: str, preset: str) -> list[float]:
    """Train / val / test fractions (by patient) of ``name`` at ``preset``: the built-in set's, also used
    for data that come without a declared split."""
    return list(builtin_params(name, preset).get("splits", task(name).defaults.get("splits", [0.6, 0.2, 0.2])))


def prep_for(name: str, preset: str, roi: int | None = None, spacing: float | None | str = "default") -> dict[str, Any]:
    """``{"roi", "spacing"}`` for task ``name`` at ``preset`` with optional overrides (spacing None = native grid)."""
    spec = task(name)
    base = dict(spec.prep.get(preset, spec.prep.get("cpu", {})))
    if roi is not None:
        if roi % 32 or roi < 32:
            raise SmartError(f"roi={roi}: must be a positive multiple of 32 (the Swin halves the grid five times)")
        base["roi"] = int(roi)
    if spacing != "default":
        base["spacing"] = spacing
    return base
