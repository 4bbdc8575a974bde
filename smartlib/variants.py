"""The pretraining variants the book compares — one table — each pretrained once per preset and reused.

:data:`VARIANTS` maps a name to a :class:`Variant`: its config overrides (on top of the preset's
pretraining config), a one-line description, and, for the four variants of the ablation chapter's
semantic-attention × noisy-teacher grid, its cell (:data:`TWO_BY_TWO` lists them in grid order).

``pretrained(variant, preset, runs_dir)`` returns the exported encoder of
``runs_dir/pretrain/<variant>``, pretraining (or resuming) it first if needed, so
every chapter can ask for the checkpoints it needs and the book trains each once.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from .config import pretrain_config
from .errors import SmartError

__all__ = ["Variant", "VARIANTS", "TWO_BY_TWO", "variant_config", "pretrained", "run_dir"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One pretraining variant: ``overrides`` of the pretraining config, and what they mean.

    ``grid_cell`` is ``(semantic attention on, teacher noisy)`` for the variants of the 2×2 ablation
    grid (SMART, arXiv 2310.01209, against SMIT, arXiv 2205.10342), None for the others.
    """

    name: str
    overrides: dict[str, Any]
    description: str
    grid_cell: tuple[bool, bool] | None = None


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("smart", {}, "SMART: semantic attention + noisy teacher + attention-guided masking", (True, True)),
    Variant("smit", {"semantic_attention": False, "mask_mode": "random", "teacher_drop": 0.0},
            "SMIT-style: no semantic attention, clean teacher, random masking", (False, False)),
    Variant("sa_clean", {"teacher_drop": 0.0}, "semantic attention + attention masking, clean teacher", (True, False)),
    Variant("noise_no_sa", {"semantic_attention": False, "mask_mode": "random"},
            "noisy teacher without semantic attention (random masking)", (False, True)),
    Variant("random_mask", {"mask_mode": "random"}, "SMART with random instead of attention-guided masking"),
    Variant("low_attention", {"mask_mode": "low_attention"}, "SMART masking the least-attended units (MST-style)"),
    Variant("mim_only", {"w_ampd": 0.0, "w_aitd": 0.0, "w_gitd": 0.0}, "SMART with AMIP alone (no distillation terms)"),
)}

#: the 2×2 grid's variants, semantic attention on before off, noisy teacher before clean:
#: ("smart", "sa_clean", "noise_no_sa", "smit")
TWO_BY_TWO: tuple[str, ...] = tuple(v.name for v in sorted((v for v in VARIANTS.values() if v.grid_cell),
                                                            key=lambda v: (not v.grid_cell[0], not v.grid_cell[1])))


def variant_config(variant: str, preset: str, overrides: dict[str, Any] | None = None):
    """The :class:`PretrainConfig` of ``variant`` at ``preset``."""
    if variant not in VARIANTS:
        raise SmartError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return pretrain_config(preset, {**VARIANTS[variant].overrides, **(overrides or {})})


def run_dir(variant: str, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "pretrain" / variant


def pretrained(variant: str, preset: str, runs_dir: str | Path, overrides: dict[str, Any] | None = None,
               progress: bool = False, log: Callable[[str], None] = print) -> Path:
    """Path of ``variant``'s exported encoder, pretraining or resuming it first when needed."""
    from .io import read_json
    from .pretrain import pretrain

    cfg = variant_config(variant, preset, overrides)
    run = run_dir(variant, runs_dir)
    enc = run / "encoder.pt"
    if enc.exists() and (run / "summary.json").exists():
        if read_json(run / "config.json") != cfg.to_dict():
            raise SmartError(f"{run}: holds a run with another configuration; remove it or use another runs_dir")
        if read_json(run / "summary.json").get("complete"):
            return enc
    log(f"pretraining {variant} ({VARIANTS[variant].description}) at preset {preset} → {run}")
    pretrain(cfg, run, resume=run.exists() and (run / "config.json").exists(), progress=progress, log=log)
    return enc
