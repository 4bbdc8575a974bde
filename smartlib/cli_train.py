"""``smart pretrain`` and ``smart export``."""
from __future__ import annotations

import argparse


def _pretrain(a: argparse.Namespace) -> int:
    from .config import parse_set
    from .pretrain import pretrain
    from .zoo import variant_config

    overrides = parse_set(a.set or [])
    if a.data is not None:
        overrides["data"] = a.data
    cfg = variant_config(a.variant, a.preset, overrides)
    run = pretrain(cfg, a.out, resume=a.resume, progress=not a.no_progress)
    print(f"wrote {run}/encoder.pt")
    return 0


def _export(a: argparse.Namespace) -> int:
    from pathlib import Path

    from .io import load_torch
    from .models.smart import SMARTNet, export_encoder
    from .pretrain import CHECKPOINT, load_run_config

    run = Path(a.run)
    cfg = load_run_config(run)
    ck = load_torch(run / CHECKPOINT)
    net = SMARTNet(**cfg.model_kwargs())
    try:
        net.load_state_dict(ck[a.which], strict=True)
    except (KeyError, RuntimeError) as exc:
        from .errors import SmartError

        raise SmartError(f"{run / CHECKPOINT}: cannot load the {a.which} ({str(exc).splitlines()[0]})") from None
    print(f"wrote {export_encoder(net, a.out)} ({a.which} at step {ck['step']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .zoo import VARIANTS

    p = sub.add_parser("pretrain", help="SMART self-supervised pretraining")
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--variant", default="smart", choices=list(VARIANTS), help="ablation variant (default: smart)")
    p.add_argument("--data", default=None, help="'phantom' (default) or a manifest .csv / folder of CTs / Decathlon root")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_pretrain)

    e = sub.add_parser("export", help="write a run's encoder (SwinUNETR-loadable, strict keys)")
    e.add_argument("run")
    e.add_argument("--out", required=True)
    e.add_argument("--which", default="teacher", choices=["teacher", "student"])
    e.set_defaults(func=_export)
