"""Representation similarity (linear CKA) and parameter drift between two encoders.

* :func:`linear_cka` — linear centred kernel alignment of two feature sets of the same ``n`` samples,
  with the **unbiased** HSIC estimator (Song et al. 2012, as used for minibatch CKA by Nguyen, Raghu &
  Kornblith 2021, "Do wide and deep networks learn the same things?") by default and the biased one
  (centred Gram matrices, Kornblith et al. 2019) on request;
* :class:`MinibatchCKA` — the Nguyen et al. minibatch estimator for a layer × layer CKA matrix: the
  unbiased HSIC of every pair is averaged over minibatches, then normalised;
* :func:`relative_distance` — ``‖θ_a − θ_b‖ / ‖θ_b‖`` between two state dicts of one architecture,
  overall and per module prefix, plus the share of bit-identical tensors (how far pretraining moved an
  encoder from its initialisation).

Why hand-written: the maintained CKA packages (``ckatorch``, ``torch-cka``) are not dependencies of
smartlib, and MONAI's only CKA (``monai.metrics.embedding_collapse._domain_shift``, MONAI 1.6) uses the
*biased* HSIC ``tr(HKH·HLH)/(n−1)²`` (although its docstring calls it unbiased). The biased estimator
saturates when features outnumber samples — for independent random features with ``p ≫ n`` each
centred Gram matrix is ≈ ``p·H``, so the biased CKA of unrelated representations approaches 1. Flattened
3D feature maps always have ``p ≫ n``, hence the unbiased estimator is the default here.

Definitions (``K = x xᵀ``, ``L = y yᵀ``, ``K̃``/``L̃`` the same with zeroed diagonals, ``H = I − 11ᵀ/n``)::

    HSIC_1(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))     (n ≥ 4)
    HSIC_0(K, L) = tr(HKH·HLH) / (n−1)²                                                     (n ≥ 2)
    CKA(K, L)    = HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L))

All arithmetic is in float64 NumPy; inputs may be torch tensors or NumPy arrays.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SmartError

__all__ = ["linear_cka", "hsic", "MinibatchCKA", "relative_distance", "module_prefix"]

ArrayLike = Any  # torch.Tensor | np.ndarray | nested sequence of numbers


# ---------------------------------------------------------------------------------------------------------
# features -> Gram matrices
# ---------------------------------------------------------------------------------------------------------


def _features(x: ArrayLike, name: str) -> np.ndarray:
    """Features as a float64 ``(n, p)`` array, every sample flattened (``(n, ...) -> (n, prod(...))``)."""
    if isinstance(x, torch.Tensor):
        a = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SmartError(f"{name}: cannot be read as a numeric array ({exc})") from exc
    if a.ndim == 0:
        raise SmartError(f"{name}: is a scalar; expected features of shape (n, p) (n samples)")
    a = a.reshape(a.shape[0], -1)
    if a.shape[1] == 0:
        raise SmartError(f"{name}: has shape {a.shape}, i.e. no features per sample")
    if not np.all(np.isfinite(a)):
        raise SmartError(f"{name}: contains NaN or infinite values")
    return a


def _gram(a: np.ndarray) -> np.ndarray:
    """Linear Gram matrix ``a aᵀ``: ``(n, p) -> (n, n)``."""
    return a @ a.T


def _zero_diag(k: np.ndarray) -> np.ndarray:
    """``K̃``: a copy of ``k`` ``(n, n)`` with its diagonal set to zero."""
    kt = k.copy()
    np.fill_diagonal(kt, 0.0)
    return kt


def _centre(k: np.ndarray) -> np.ndarray:
    """``H K H`` for ``k`` ``(n, n)``: subtract row and column means, add back the grand mean."""
    return k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()


def _unbiased_operator(kt: np.ndarray) -> np.ndarray:
    """``U(K̃)`` ``(n, n)`` with ``HSIC_1(K, L) = ⟨U(K̃), L̃⟩_F`` for every symmetric ``L̃`` with zero diagonal.

    From ``1ᵀK̃L̃1 = ⟨(K̃1)1ᵀ, L̃⟩`` and ``1ᵀK̃1·1ᵀL̃1 = ⟨(1ᵀK̃1)·11ᵀ, L̃⟩``; this turns the HSIC of many
    pairs into one matrix product (used by :class:`MinibatchCKA`).
    """
    n = kt.shape[0]
    row = kt.sum(axis=1)  # K̃1, (n,)
    u = kt + row.sum() / ((n - 1) * (n - 2)) - (2.0 / (n - 2)) * row[:, None]
    return u / (n * (n - 3))


def _hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased ``HSIC_1`` of two ``(n, n)`` Gram matrices (Song et al. 2012), ``n ≥ 4``."""
    n = k.shape[0]
    kt, lt = _zero_diag(k), _zero_diag(l)
    k1, l1 = kt.sum(axis=1), lt.sum(axis=1)  # K̃1, L̃1
    value = (
        float(np.sum(kt * lt))  # tr(K̃L̃), both symmetric
        + float(k1.sum()) * float(l1.sum()) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * float(k1 @ l1)  # 1ᵀK̃L̃1
    )
    return value / (n * (n - 3))


def _hsic0(k: np.ndarray, l: np.ndarray) -> float:
    """Biased ``HSIC_0 = tr(HKH·HLH)/(n−1)²`` of two ``(n, n)`` Gram matrices (Gretton et al. 2005)."""
    n = k.shape[0]
    return float(np.sum(_centre(k) * _centre(l))) / (n - 1) ** 2


def _check_n(n: int, unbiased: bool, what: str) -> None:
    need = 4 if unbiased else 2
    if n < need:
        kind = "the unbiased HSIC estimator divides by n(n-3)" if unbiased else "CKA needs at least 2 samples"
        raise SmartError(f"{what}: n = {n} samples, need n >= {need} ({kind})")


def _paired(x: ArrayLike, y: ArrayLike, unbiased: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = _features(x, "x"), _features(y, "y")
    if a.shape[0] != b.shape[0]:
        raise SmartError(
            f"x has n = {a.shape[0]} samples but y has n = {b.shape[0]}; CKA compares two representations "
            "of the same samples (mismatched n)"
        )
    _check_n(a.shape[0], unbiased, "linear CKA")
    return a, b


def hsic(x: ArrayLike, y: ArrayLike, unbiased: bool = True) -> float:
    """Linear-kernel HSIC of features ``x`` ``(n, p)`` and ``y`` ``(n, q)`` (``(n, ...)`` is flattened).

    ``unbiased=True``: ``HSIC_1`` (needs ``n ≥ 4``); ``unbiased=False``: ``HSIC_0 = tr(HKH·HLH)/(n−1)²``.
    """
    a, b = _paired(x, y, unbiased)
    k, l = _gram(a), _gram(b)
    return _hsic1(k, l) if unbiased else _hsic0(k, l)


def linear_cka(x: ArrayLike, y: ArrayLike, unbiased: bool = True) -> float:
    """Linear CKA of features ``x`` ``(n, p)`` and ``y`` ``(n, q)`` of the same ``n`` samples.

    Args:
        x: ``(n, p)`` or ``(n, ...)`` (flattened per sample), torch tensor or array.
        y: ``(n, q)`` or ``(n, ...)``; same ``n`` as ``x``.
        unbiased: ``True`` (default) for the unbiased ``HSIC_1`` (Song et al. 2012; Nguyen et al. 2021),
            which stays ≈ 0 for unrelated features even when ``p, q ≫ n`` — needs ``n ≥ 4``.
            ``False`` for the biased, centred-Gram version of Kornblith et al. (2019) — ``n ≥ 2``.

    Returns:
        CKA as a float: 1 for representations equal up to an orthogonal transform and isotropic scaling.
        The biased value lies in [0, 1]; the unbiased one can be slightly negative (or, rarely, above 1).

    Raises:
        SmartError: too few samples, mismatched ``n``, non-finite values, or a representation whose
            self-HSIC is not positive (e.g. features constant across samples), for which CKA is undefined.
    """
    a, b = _paired(x, y, unbiased)
    k, l = _gram(a), _gram(b)
    f = _hsic1 if unbiased else _hsic0
    kk, ll = f(k, k), f(l, l)
    for name, v, g in (("x", kk, k), ("y", ll, l)):
        if not v > 1e-12 * max(float(np.sum(g * g)), np.finfo(float).tiny) / a.shape[0] ** 2:
            raise SmartError(
                f"{name}: HSIC({name}, {name}) = {v:.3g} is not positive (features constant across samples?); "
                "CKA is undefined"
            )
    return f(k, l) / math.sqrt(kk * ll)


# ---------------------------------------------------------------------------------------------------------
# minibatch CKA (Nguyen, Raghu & Kornblith 2021)
# ---------------------------------------------------------------------------------------------------------


class MinibatchCKA:
    """Layer × layer linear CKA from minibatches (Nguyen, Raghu & Kornblith 2021, minibatch CKA).

    For every pair ``(i, j)`` of a layer ``i`` of network A and a layer ``j`` of network B, the unbiased
    ``HSIC_1`` of the batch Gram matrices is averaged over the ``k`` minibatches, and::

        CKA_ij = mean_b HSIC_1(K_i^b, L_j^b) / sqrt(mean_b HSIC_1(K_i^b, K_i^b) · mean_b HSIC_1(L_j^b, L_j^b))

    Because ``HSIC_1`` is unbiased, the average over batches is an unbiased estimate of the population
    HSIC, so the matrix does not depend on the batch size the way the biased estimator does.

    Example::

        m = MinibatchCKA()
        for batch in loader:
            m.update([f(batch) for f in layers_a], [g(batch) for g in layers_b])
        mat = m.compute()    # (len(layers_a), len(layers_b))
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._xy: np.ndarray | None = None  # (nx, ny) sum over batches of HSIC_1(K_i, L_j)
        self._xx: np.ndarray | None = None  # (nx,) sum of HSIC_1(K_i, K_i)
        self._yy: np.ndarray | None = None  # (ny,) sum of HSIC_1(L_j, L_j)
        self._dims_x: list[int] = []
        self._dims_y: list[int] = []
        self.n_batches = 0

    @staticmethod
    def _layers(feats: Sequence[ArrayLike], side: str) -> list[np.ndarray]:
        if isinstance(feats, (torch.Tensor, np.ndarray)) or not isinstance(feats, Sequence) or len(feats) == 0:
            raise SmartError(f"{side}: expected a non-empty list of per-layer features, each (b, p_i)")
        return [_features(f, f"{side}[{i}]") for i, f in enumerate(feats)]

    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike]) -> None:
        """Add one minibatch.

        Args:
            xs: list of per-layer features of network A on this batch, each ``(b, p_i)`` (or ``(b, ...)``).
            ys: list of per-layer features of network B on the same batch, each ``(b, q_j)``.
                Every entry has the same batch size ``b ≥ 4``; the number of layers and each layer's
                feature size must be the same in every update.
        """
        ax, ay = self._layers(xs, "xs"), self._layers(ys, "ys")
        sizes = {f"xs[{i}]": a.shape[0] for i, a in enumerate(ax)} | {f"ys[{j}]": a.shape[0] for j, a in enumerate(ay)}
        if len(set(sizes.values())) != 1:
            raise SmartError(f"batch sizes differ between layers (mismatched n): {sizes}")
        b = ax[0].shape[0]
        _check_n(b, True, "minibatch CKA")
        dims_x, dims_y = [a.shape[1] for a in ax], [a.shape[1] for a in ay]
        if self.n_batches:
            for side, new, old in (("xs", dims_x, self._dims_x), ("ys", dims_y, self._dims_y)):
                if new != old:
                    raise SmartError(
                        f"{side}: layers / feature sizes {new} differ from the earlier batches' {old}"
                    )
        # rows: U(K̃_i) flattened, (nx, b²); columns: L̃_j flattened, (ny, b²)
        kt = [_zero_diag(_gram(a)) for a in ax]
        lt = [_zero_diag(_gram(a)) for a in ay]
        u_x = np.stack([_unbiased_operator(k).ravel() for k in kt])
        u_y = np.stack([_unbiased_operator(l).ravel() for l in lt])
        k_flat, l_flat = np.stack([k.ravel() for k in kt]), np.stack([l.ravel() for l in lt])
        xy = u_x @ l_flat.T  # (nx, ny)
        xx = np.einsum("ij,ij->i", u_x, k_flat)  # (nx,)
        yy = np.einsum("ij,ij->i", u_y, l_flat)  # (ny,)
        if self.n_batches == 0:
            self._xy, self._xx, self._yy = xy, xx, yy
            self._dims_x, self._dims_y = dims_x, dims_y
        else:
            assert self._xy is not None and self._xx is not None and self._yy is not None
            self._xy += xy
            self._xx += xx
            self._yy += yy
        self.n_batches += 1

    def compute(self) -> np.ndarray:
        """CKA matrix ``(len(xs), len(ys))`` from the batches so far (float64).

        Raises:
            SmartError: no batch yet, or a layer whose mean self-HSIC is not positive (CKA undefined).
        """
        if self.n_batches == 0 or self._xy is None or self._xx is None or self._yy is None:
            raise SmartError("MinibatchCKA.compute: no batches accumulated (call update first)")
        k = self.n_batches
        xy, xx, yy = self._xy / k, self._xx / k, self._yy / k
        for side, v in (("xs", xx), ("ys", yy)):
            bad = [i for i, s in enumerate(v) if not s > 0]
            if bad:
                raise SmartError(
                    f"{side}: layers {bad} have non-positive mean HSIC with themselves "
                    "(features constant across samples?); CKA is undefined"
                )
        return xy / np.sqrt(np.outer(xx, yy))


# ---------------------------------------------------------------------------------------------------------
# parameter drift
# ---------------------------------------------------------------------------------------------------------


def module_prefix(key: str) -> str:
    """Group name of a state-dict key: the first two dotted components of its module path.

    The final component (the parameter / buffer name) is dropped first, so ``"encoder.layers1.0.w"`` ->
    ``"encoder.layers1"``, ``"head.weight"`` -> ``"head"`` and a top-level ``"cls_token"`` stays itself.
    """
    parts = key.split(".")
    return ".".join((parts[:-1] or parts)[:2])


def _is_float(t: Any) -> bool:
    if isinstance(t, torch.Tensor):
        return t.is_floating_point()
    return isinstance(t, np.ndarray) and np.issubdtype(t.dtype, np.floating)


def _tensor(t: Any) -> tuple[np.ndarray, bytes, str]:
    """(float64 values, raw bytes, dtype name) of a float tensor / array."""
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return t.to(torch.float64).numpy(), raw, str(t.dtype)
    a = np.ascontiguousarray(t)
    return a.astype(np.float64), a.tobytes(), str(a.dtype)


def _ratio(diff_sq: float, ref_sq: float) -> float:
    if ref_sq == 0.0:
        return 0.0 if diff_sq == 0.0 else math.inf
    return math.sqrt(diff_sq / ref_sq)


def relative_distance(
    state_a: Mapping[str, Any], state_b: Mapping[str, Any], keys: Iterable[str] | None = None
) -> dict[str, Any]:
    """How far ``state_a`` has moved from ``state_b`` (e.g. pretrained encoder vs. its initialisation).

    Only floating-point tensors count (integer buffers such as ``num_batches_tracked`` are skipped); all
    float tensors are treated as one long parameter vector ``θ``.

    Args:
        state_a: state dict (``key -> tensor/array``), e.g. after pretraining.
        state_b: state dict of the same architecture, the reference (e.g. the initialisation).
        keys: restrict to these keys (each must be in both dicts); ``None`` = every key, and then both
            dicts must have exactly the same keys.

    Returns:
        ``{"relative_distance": ‖θ_a − θ_b‖/‖θ_b‖, "identical_share": share of float tensors that are
        bit-identical (same dtype and bytes), "n_tensors": int, "n_identical": int,
        "per_module": {prefix: {the same four keys}}}`` with ``prefix`` = the first two dotted components
        of a key (:func:`module_prefix`). A group with ``‖θ_b‖ = 0`` gets ``inf`` (or 0 when also
        ``θ_a = θ_b``).

    Raises:
        SmartError: mismatched keys, a key float in one dict but not the other, mismatched shapes,
            non-finite values, or no float tensor at all.
    """
    if not isinstance(state_a, Mapping) or not isinstance(state_b, Mapping):
        raise SmartError("relative_distance: state_a and state_b must be state dicts (key -> tensor)")
    if keys is None:
        only_a, only_b = sorted(set(state_a) - set(state_b)), sorted(set(state_b) - set(state_a))
        if only_a or only_b:
            raise SmartError(
                f"state dicts have mismatched keys: only in state_a {only_a[:5]}"
                f"{' ...' if len(only_a) > 5 else ''}, only in state_b {only_b[:5]}{' ...' if len(only_b) > 5 else ''}"
            )
        names = list(state_a)
    else:
        names = list(dict.fromkeys([keys] if isinstance(keys, str) else keys))
        missing = [k for k in names if k not in state_a or k not in state_b]
        if missing:
            raise SmartError(f"keys not in both state dicts (mismatched keys): {missing[:5]}")

    groups: dict[str, list[float]] = {}  # prefix -> [diff², ref², n_tensors, n_identical]
    for key in names:
        ta, tb = state_a[key], state_b[key]
        fa, fb = _is_float(ta), _is_float(tb)
        if fa != fb:
            raise SmartError(f"{key}: floating point in {'state_a' if fa else 'state_b'} only")
        if not fa:
            continue
        a, raw_a, dt_a = _tensor(ta)
        b, raw_b, dt_b = _tensor(tb)
        if a.shape != b.shape:
            raise SmartError(f"{key}: shape {tuple(a.shape)} in state_a but {tuple(b.shape)} in state_b")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise SmartError(f"{key}: contains NaN or infinite values")
        g = groups.setdefault(module_prefix(key), [0.0, 0.0, 0, 0])
        g[0] += float(np.sum((a - b) ** 2))
        g[1] += float(np.sum(b * b))
        g[2] += 1
        g[3] += int(dt_a == dt_b and raw_a == raw_b)
    if not groups:
        raise SmartError("relative_distance: no floating-point tensors to compare")

    def summary(d2: float, r2: float, n: float, same: float) -> dict[str, Any]:
        return {
            "relative_distance": _ratio(d2, r2),
            "identical_share": same / n,
            "n_tensors": int(n),
            "n_identical": int(same),
        }

    total = [sum(g[i] for g in groups.values()) for i in range(4)]
    out = summary(*total)
    out["per_module"] = {p: summary(*g) for p, g in groups.items()}
    return out
