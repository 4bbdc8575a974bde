"""Configuration: SMARTNet's architecture and pretraining, as dataclasses whose defaults are the paper's.

The defaults are the published configuration of SMART (arXiv 2310.01209). :class:`ArchConfig` holds
every architecture argument of :class:`smartlib.models.SMARTNet` — the one home of those defaults;
:class:`PretrainConfig`'s model fields take theirs from it. Pretraining configs per preset
(``smartlib/pretrain_configs/{smoke,cpu,long,paper}.yaml``, read with ``yaml.safe_load``) override some
fields; ``--set key=value`` overrides any field, parsed to the field's type. An unknown key or a
value of the wrong type is a :class:`SmartError` naming it.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from .errors import SmartError

__all__ = ["ArchConfig", "PretrainConfig", "PRESETS", "pretrain_config", "apply_overrides", "parse_set", "config_from_json"]

#: the scale presets: seconds on a CPU (tests), the book on 2 CPU cores, the recorded run on 2 CPU cores (the cpu
#: networks, pretrained ~20× longer on 3× the volumes, larger sets, more seeds: hours), the paper on GPUs
PRESETS = ("smoke", "cpu", "long", "paper")
_PRETRAIN_CONFIG_DIR = Path(__file__).parent / "pretrain_configs"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")  #: the values ``device`` may take


@dataclasses.dataclass
class ArchConfig:
    """Architecture arguments of :class:`smartlib.models.SMARTNet` (3D Swin + semantic attention + heads)."""

    arch: str = "swin"
    in_chans: int = 1
    img_size: int = 128
    embed_dim: int = 48
    depths: Sequence[int] = (2, 2, 8, 2)
    num_heads: Sequence[int] = (4, 4, 8, 16)
    window_size: int = 4
    drop_path: float = 0.1
    semantic_attention: bool = True  #: CaiT-style class attention (arXiv 2103.17239) over the stage-3 tokens
    sa_depth: int = 2
    sa_heads: int = 8
    layerscale: float = 1e-4
    vit_hidden: int = 384
    vit_layers: int = 12
    vit_heads: int = 6
    prototypes: int = 8192
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    gitd_stage: int = 4  #: 4 = paper; 3 = the authors' code
    use_checkpoint: bool = False
    #: MONAI's window attention with a faster softmax and a fused no-grad path (identical weights and math;
    #: smartlib/models/fast_attention.py); False runs MONAI's own
    fast_attention: bool = True


_A = ArchConfig  # the model fields below take their defaults from here


@dataclasses.dataclass
class PretrainConfig:
    # ---- data
    data: str = "phantom"  #: "phantom" or a path (manifest .csv, folder of CTs, Decathlon root)
    n_volumes: int = 10412  #: phantom volumes to generate (ignored for a path)
    phantom_shape: int = 160  #: edge of generated phantom volumes (voxels at ``spacing``)
    data_seed: int = 0
    spacing: float = 2.0  #: resample to this isotropic spacing (mm); 0 = keep
    hu_min: float = -500.0
    hu_max: float = 500.0
    cache: str = "memory"  #: "memory" caches the deterministic transforms, "none" recomputes
    num_workers: int = 0
    #: with num_workers 0, prepare the next step's views in a background thread while this step computes
    prefetch: bool = True
    # ---- model (the architecture fields of ArchConfig, with its defaults; not in_chans; use_checkpoint is grad_checkpoint)
    arch: str = _A.arch
    img_size: int = _A.img_size
    embed_dim: int = _A.embed_dim
    depths: tuple = tuple(_A.depths)
    num_heads: tuple = tuple(_A.num_heads)
    window_size: int = _A.window_size
    drop_path: float = _A.drop_path
    semantic_attention: bool = _A.semantic_attention
    sa_depth: int = _A.sa_depth
    sa_heads: int = _A.sa_heads
    layerscale: float = _A.layerscale
    vit_hidden: int = _A.vit_hidden
    vit_layers: int = _A.vit_layers
    vit_heads: int = _A.vit_heads
    prototypes: int = _A.prototypes
    head_hidden: int = _A.head_hidden
    head_bottleneck: int = _A.head_bottleneck
    head_layers: int = _A.head_layers
    gitd_stage: int = _A.gitd_stage  #: 4 = paper; 3 = the authors' code
    grad_checkpoint: bool = _A.use_checkpoint
    fast_attention: bool = _A.fast_attention
    # ---- masking
    mask_mode: str = "attention"
    mask_ratio: float = 0.7
    hint_ratio: float = 0.1
    hint_top: float = 0.1
    # ---- MSMAE hook (arXiv 2305.05871): with mask_mode "given", the supervised ViT export whose [CLS] attention
    #: scores the mask units (smartlib.supervised_masking.SupervisedAttention); "msmae" = <runs>/pretrain/msmae/encoder.pt
    given_attention: str = ""
    # ---- noisy teacher
    teacher_drop: float = 0.3  #: fraction of mask units dropped from the teacher's input
    teacher_noise: str = "token"  #: "token" (authors' code) or "zero" (paper text)
    clean_attention: bool = False  #: choose the student's mask from an extra clean teacher pass
    momentum: float = 0.996
    momentum_final: float = 1.0
    # ---- losses
    w_amip: float = 1.0
    w_ampd: float = 0.1
    w_aitd: float = 0.1
    w_gitd: float = 0.1
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    teacher_temp_final: float = 0.07
    teacher_temp_warmup: float = 0.0375  #: fraction of iterations (30 of 800 epochs)
    center_momentum: float = 0.9
    # ---- optimisation
    epochs: int = 800
    batch_size: int = 4  #: global batch (split across processes)
    lr: float = 8e-4
    min_lr: float = 1e-6
    warmup: float = 0.1  #: fraction of iterations
    weight_decay: float = 0.04
    weight_decay_final: float = 0.4
    clip_grad: float = 0.3  #: 0 disables clipping
    #: "global": one norm over all gradients (the paper's "gradient clipping 0.3", the default);
    #: "per_param": each parameter's gradient norm clipped on its own, as the DINO / iBOT code SMART
    #: descends from does (arXiv 2104.14294, 2111.07832) — a switch, since the paper does not say which
    clip_mode: str = "global"
    freeze_last_layer: int = 1  #: epochs
    amp: bool = True  #: bf16 autocast where it runs natively: CUDA, CPUs with AVX512-BF16/AMX (else ignored)
    fused_optimizer: bool = True  #: AdamW's fused kernel (one pass over all parameters; CPU and CUDA)
    threads: int = 0  #: CPU threads for torch (0 = torch's default, one per core)
    #: torch.compile the student's and teacher's encoders (``nn.Module.compile``: state-dict keys unchanged);
    #: pays off on a GPU over a long run; on a CPU the compile takes minutes, hence off by default
    compile: bool = False
    # ---- run
    seed: int = 0
    device: str = "auto"
    ckpt_every: int = 100  #: steps
    log_every: int = 1
    max_steps: int = 0  #: stop after this many steps (0 = run all epochs); schedules still span all epochs
    #: "" or a pretraining run folder (or its checkpoint.pt) whose student and teacher this run starts from,
    #: loaded with strict keys (continued pretraining, e.g. "wild" then "self"; a resume's checkpoint wins)
    init_from: str = ""

    def __post_init__(self) -> None:
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        self.validate(machine=False)

    def validate(self, machine: bool = True) -> None:
        """Raise SmartError naming the first field with an impossible value.

        Every config is checked when it is built (a preset, ``--set``, a run's ``config.json``).
        ``machine=True`` (what :func:`smartlib.pretrain.pretrain` runs before any data or model is
        made) also checks that ``device`` exists on this machine; building a config does not, so a
        run trained on a GPU can still be read, exported and inspected on a CPU-only machine.
        """
        from .masking import MASK_MODES

        checks = [
            ("arch", self.arch in ("swin", "vit"), "expected swin or vit"),
            ("img_size", self.img_size >= 32 and self.img_size % 32 == 0, "must be a positive multiple of 32"),
            ("embed_dim", self.embed_dim > 0 and self.embed_dim % 12 == 0, "must be a positive multiple of 12"),
            ("depths", len(self.depths) == 4 and all(int(d) >= 1 for d in self.depths), "need four stage depths ≥ 1"),
            ("num_heads", len(self.num_heads) == 4, "need four head counts"),
            ("window_size", self.window_size >= 1, "must be ≥ 1"),
            ("mask_mode", self.mask_mode in MASK_MODES, f"expected one of {', '.join(MASK_MODES)}"),
            # MSMAE hook: "given" takes its scores from a supervised checkpoint, and only it does
            ("mask_mode", (self.mask_mode == "given") == bool(self.given_attention),
             "'given' needs given_attention (a supervised ViT export, or 'msmae'), and given_attention needs mask_mode 'given'"),
            ("mask_ratio", 0 < self.mask_ratio < 1, "must lie in (0, 1)"),
            ("teacher_drop", 0 <= self.teacher_drop < 1, "must lie in [0, 1)"),
            ("teacher_noise", self.teacher_noise in ("token", "zero"), "expected token or zero"),
            ("cache", self.cache in ("memory", "none"), "expected memory or none"),
            ("epochs", self.epochs >= 1, "must be ≥ 1"),
            ("batch_size", self.batch_size >= 1, "must be ≥ 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("warmup", 0 <= self.warmup < 1, "must lie in [0, 1)"),
            ("momentum", 0 <= self.momentum <= self.momentum_final <= 1, "need 0 ≤ momentum ≤ momentum_final ≤ 1"),
            ("gitd_stage", self.gitd_stage in (3, 4), "expected 3 or 4"),
            ("ckpt_every", self.ckpt_every >= 1, "must be ≥ 1"),
            ("clip_grad", self.clip_grad >= 0, "must be ≥ 0 (0 disables clipping)"),
            ("clip_mode", self.clip_mode in ("global", "per_param"), "expected global or per_param"),
            ("n_volumes", self.n_volumes >= 1, "must be ≥ 1"),
            ("seed", self.seed >= 0, "must be ≥ 0"),
            ("num_workers", self.num_workers >= 0, "must be ≥ 0"),
            ("threads", self.threads >= 0, "must be ≥ 0 (0 = torch's default)"),
            ("log_every", self.log_every >= 1, "must be ≥ 1"),
            ("max_steps", self.max_steps >= 0, "must be ≥ 0 (0 = run all epochs)"),
            ("device", _DEVICE.fullmatch(self.device) is not None, "expected auto, cpu, cuda or cuda:N"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise SmartError(f"{name}={getattr(self, name)!r}: {why}")
        if self.mask_mode in ("attention", "low_attention") and not self.semantic_attention:
            raise SmartError(f"mask_mode={self.mask_mode!r} needs semantic_attention=true (no [CLS] attention without it)")
        if self.embed_dim * 8 % self.sa_heads:
            raise SmartError(f"sa_heads={self.sa_heads}: must divide the stage-3 width {self.embed_dim * 8}")
        if machine:
            self._check_device()
            start = Path(self.init_from) / "checkpoint.pt" if self.init_from and Path(self.init_from).is_dir() else Path(self.init_from)
            if self.init_from and not start.is_file():
                raise SmartError(f"init_from={self.init_from!r}: {start} not found (give a pretraining run folder or its checkpoint.pt)")

    def _check_device(self) -> None:
        """``device`` names a device of this machine (``auto`` and ``cpu`` always do)."""
        if not self.device.startswith("cuda"):
            return
        import torch

        if not torch.cuda.is_available():
            raise SmartError(f"device={self.device!r}: no CUDA device on this machine")
        n = torch.cuda.device_count()
        index = int(self.device.partition(":")[2] or 0)
        if index >= n:
            raise SmartError(f"device={self.device!r}: this machine has {n} CUDA device{'s' if n != 1 else ''} "
                             f"(cuda:0{f' … cuda:{n - 1}' if n > 1 else ''})")

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments for :class:`smartlib.models.SMARTNet`: every architecture field this config holds."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ArchConfig) if hasattr(self, f.name)} | {
            "use_checkpoint": self.grad_checkpoint}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        return d


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    """Convert ``value`` to the type of the field's default, or raise SmartError."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return tuple(int(v) for v in value)
        if isinstance(default, str):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    raise SmartError(f"{source}: {name}={value!r} is not a valid {type(default).__name__}")


def apply_overrides(cfg: PretrainConfig, overrides: dict[str, Any], source: str = "--set") -> PretrainConfig:
    """A new config with ``overrides`` applied (type-checked; unknown keys rejected)."""
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    d = cfg.to_dict()
    for k, v in overrides.items():
        if k not in fields:
            raise SmartError(f"{source}: unknown config key {k!r}")
        d[k] = _coerce(k, v, getattr(cfg, k), source)
    return PretrainConfig(**d)


def parse_set(items: Iterable[str]) -> dict[str, str]:
    """``["lr=1e-3", "depths=2,2,2,2"]`` → ``{"lr": "1e-3", "depths": "2,2,2,2"}``."""
    out = {}
    for it in items:
        if "=" not in it:
            raise SmartError(f"--set {it!r}: expected key=value")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def pretrain_config(preset: str, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """The pretraining config of ``preset``: the paper defaults, then ``pretrain_configs/<preset>.yaml``, then ``overrides``."""
    if preset not in PRESETS:
        raise SmartError(f"preset {preset!r}: expected one of {', '.join(PRESETS)}")
    path = _PRETRAIN_CONFIG_DIR / f"{preset}.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SmartError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise SmartError(f"{path}: expected a mapping of config keys")
    cfg = apply_overrides(PretrainConfig(), data, str(path))
    return apply_overrides(cfg, overrides or {}) if overrides else cfg


def config_from_json(path: str | Path) -> PretrainConfig:
    """Read a run's ``config.json``."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SmartError(f"{p}: cannot read run config ({exc})") from None
    return apply_overrides(PretrainConfig(), d, str(p))
