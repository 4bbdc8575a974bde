"""``smart pretrain`` and ``smart export``."""
from __future__ import annotations

import argparse
from pathlib import Path


def _pretrain(a: argparse.Namespace) -> int:
    from .config import parse_set
    from .pretrain import pretrain
    from .variants import variant_config

    overrides = parse_set(a.set or [])
    if a.data is not None:
        overrides["data"] = a.data
    cfg = variant_config(a.variant, a.preset, overrides)
    run = pretrain(cfg, a.out, resume=a.resume, progress=not a.no_progress, skip_bad=a.skip_bad)
    print(f"wrote {run}/encoder.pt")
    return 0


def _check_out_file(path: str) -> Path:
    """``--out`` of ``smart export`` is a file to (over)write: not a folder, in a folder this process can write in."""
    from .errors import SmartError
    from .io import check_out_dir

    p = Path(path)
    if p.is_dir():
        raise SmartError(f"--out {p}: is a folder; give the file to write, e.g. {p / 'encoder.pt'}")
    probe = p.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SmartError(f"--out {p}: {probe} is a file, not a folder")
    check_out_dir(p.parent, "--out")
    return p


def _export(a: argparse.Namespace) -> int:
    from .errors import SmartError
    from .io import describe_key_mismatch, load_torch
    from .models.smart import SMARTNet, export_encoder
    from .pretrain import CHECKPOINT, load_run_config

    out = _check_out_file(a.out)
    if a.prefix and a.format != "swinunetr":
        raise SmartError(f"--prefix {a.prefix!r}: only --format swinunetr takes a key prefix")
    if a.prefix and not a.prefix.endswith("."):
        raise SmartError(f"--prefix {a.prefix!r}: must end with '.', e.g. --prefix swinViT.")
    run = Path(a.run)
    cfg = load_run_config(run)
    if a.format == "swinunetr" and cfg.arch != "swin":
        raise SmartError(f"{run}: a {cfg.arch} run cannot be exported as swinunetr (only a Swin encoder loads into "
                         "SwinUNETR); use --format smart")
    ck = load_torch(run / CHECKPOINT)
    net = SMARTNet(**cfg.model_kwargs())
    if not isinstance(ck, dict) or not isinstance(ck.get(a.which), dict):
        raise SmartError(f"{run / CHECKPOINT}: holds no {a.which} weights")
    mismatch = describe_key_mismatch(net.state_dict(), ck[a.which])
    try:
        net.load_state_dict(ck[a.which], strict=True)
    except RuntimeError as exc:
        raise SmartError(f"{run / CHECKPOINT}: cannot load the {a.which} ({mismatch or str(exc).strip().splitlines()[0]})") from None
    written = export_encoder(net, out, format=a.format, prefix=a.prefix)
    print(f"wrote {written} ({a.which} at step {ck.get('step', '?')}, format {a.format})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .config import PRESETS
    from .variants import VARIANTS

    p = sub.add_parser("pretrain", help="SMART self-supervised pretraining")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--variant", default="smart", choices=list(VARIANTS), help="ablation variant (default: smart)")
    p.add_argument("--data", default=None, help="'phantom' (default) or a manifest .csv / folder of CTs / Decathlon root")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--skip-bad", action="store_true",
                   help="exclude volumes that fail the pre-training check (listed as warnings) instead of stopping")
    p.set_defaults(func=_pretrain)

    e = sub.add_parser("export", help="write a run's encoder: the SMART file, or a plain state dict for MONAI's SwinUNETR")
    e.add_argument("run")
    e.add_argument("--out", required=True, help="file to write")
    e.add_argument("--which", default="teacher", choices=["teacher", "student"])
    e.add_argument("--format", default="smart", choices=["smart", "swinunetr"],  # models.smart.EXPORT_FORMATS (not imported: keeps --help fast)
                   help="smart (default): encoder + semantic attention + architecture, for `smart finetune --init`; "
                        "swinunetr: the plain state dict SwinUNETR(...).swinViT.load_state_dict accepts (strict)")
    e.add_argument("--prefix", default="", help="with --format swinunetr: put this before every key; 'swinViT.' gives "
                                                "the encoder's keys of SwinUNETR(...).state_dict()")
    e.set_defaults(func=_export)
