"""The pretraining variants the book compares, each pretrained once per preset and reused.

``pretrained(variant, preset, runs_dir)`` returns the exported encoder of
``runs_dir/pretrain/<variant>``, pretraining (or resuming) it first if needed, so
every chapter can ask for the checkpoints it needs and the book trains each once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .config import load_preset
from .errors import SmartError

__all__ = ["VARIANTS", "DESCRIPTIONS", "variant_config", "pretrained", "run_dir"]

#: config overrides per variant, on top of the preset
VARIANTS: dict[str, dict[str, Any]] = {
    "smart": {},
    "smit": {"semantic_attention": False, "mask_mode": "random", "teacher_drop": 0.0},
    "sa_clean": {"teacher_drop": 0.0},
    "noise_no_sa": {"semantic_attention": False, "mask_mode": "random"},
    "random_mask": {"mask_mode": "random"},
    "low_attention": {"mask_mode": "low_attention"},
    "mim_only": {"w_ampd": 0.0, "w_aitd": 0.0, "w_gitd": 0.0},
}
DESCRIPTIONS = {
    "smart": "SMART: semantic attention + noisy teacher + attention-guided masking",
    "smit": "SMIT-style: no semantic attention, clean teacher, random masking",
    "sa_clean": "semantic attention + attention masking, clean teacher",
    "noise_no_sa": "noisy teacher without semantic attention (random masking)",
    "random_mask": "SMART with random instead of attention-guided masking",
    "low_attention": "SMART masking the least-attended units (MST-style)",
    "mim_only": "SMART with AMIP alone (no distillation terms)",
}


def variant_config(variant: str, preset: str, overrides: dict[str, Any] | None = None):
    """The :class:`PretrainConfig` of ``variant`` at ``preset``."""
    if variant not in VARIANTS:
        raise SmartError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return load_preset(preset, {**VARIANTS[variant], **(overrides or {})})


def run_dir(variant: str, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / "pretrain" / variant


def pretrained(variant: str, preset: str, runs_dir: str | Path, overrides: dict[str, Any] | None = None,
               progress: bool = False, log: Callable[[str], None] = print) -> Path:
    """Path of ``variant``'s exported encoder, pretraining or resuming it first when needed."""
    from .pretrain import pretrain
    from .io import read_json

    cfg = variant_config(variant, preset, overrides)
    run = run_dir(variant, runs_dir)
    enc = run / "encoder.pt"
    if enc.exists() and (run / "summary.json").exists():
        if read_json(run / "config.json") != cfg.to_dict():
            raise SmartError(f"{run}: holds a run with another configuration; remove it or use another runs_dir")
        if read_json(run / "summary.json").get("complete"):
            return enc
    log(f"pretraining {variant} ({DESCRIPTIONS[variant]}) at preset {preset} → {run}")
    pretrain(cfg, run, resume=run.exists() and (run / "config.json").exists(), progress=progress, log=log)
    return enc
