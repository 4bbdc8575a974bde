"""One seed for Python, NumPy, torch and MONAI's randomised transforms."""
from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "stream_seed", "rng_state", "set_rng_state"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, NumPy, torch (CPU and CUDA) and MONAI's global determinism.

    Args:
        seed: non-negative integer.
        deterministic: also ask torch for deterministic algorithms where it has them.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        from .errors import SmartError

        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    from monai.utils import set_determinism

    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    set_determinism(seed=seed % 2**32, use_deterministic_algorithms=None)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def stream_seed(seed: int, stream: str) -> int:
    """The seed of one named random stream of a run whose seed is ``seed`` (56 bits of sha256 of both).

    Streams keep independent things independent under one user-facing seed: a ``"scratch"``
    encoder drawn for seed 0 must not be the pretraining student's initial weights, which are drawn
    right after ``seed_everything(0)``.
    """
    import hashlib

    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        from .errors import SmartError

        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()[:7], "little")


def rng_state() -> dict:
    """Every global RNG state, as tensors and plain Python objects (checkpoint-safe with weights_only)."""
    state = {
        "python": _py_state_to_list(random.getstate()),
        "numpy": _np_state_to_dict(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(_py_state_from_list(state["python"]))
    np.random.set_state(_np_state_from_dict(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _py_state_to_list(s: tuple) -> list:
    return [s[0], list(s[1]), s[2]]


def _py_state_from_list(s: list) -> tuple:
    return (int(s[0]), tuple(int(v) for v in s[1]), s[2])


def _np_state_to_dict(s: tuple) -> dict:
    return {"name": s[0], "keys": torch.from_numpy(np.asarray(s[1], dtype=np.int64)), "pos": int(s[2]),
            "has_gauss": int(s[3]), "cached": float(s[4])}


def _np_state_from_dict(d: dict) -> tuple:
    keys = d["keys"].numpy().astype(np.uint32) if isinstance(d["keys"], torch.Tensor) else np.asarray(d["keys"], np.uint32)
    return (d["name"], keys, int(d["pos"]), int(d["has_gauss"]), float(d["cached"]))
