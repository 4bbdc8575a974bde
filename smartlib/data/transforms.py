"""MONAI preprocessing for SMART: records in, tensors out.

Both pipelines take a *record* (see :mod:`smartlib.data.loaders`) whose ``"image"`` (and optional
``"mask"``) is a path or an in-memory ``(X, Y, Z)`` array and return dicts with channel-first float32
tensors:

* :func:`pretrain_transforms` — load, channel first, orient to RAS, resample to ``spacing`` mm,
  window HU to [0, 1] (clipped), crop to the body (optional), pad to at least ``roi``, draw
  ``num_views`` random ``roi`` crops of the same volume, random flips. Output: a *list* of
  ``num_views`` dicts, each with ``"image"`` of shape ``(1, *roi)``.
* :func:`eval_transforms` — the same deterministic steps, then a centre crop / pad to ``roi``.

Records with ``intensity="unit"`` (MedMNIST) skip the HU window (a uint8 array is scaled by 1/255);
in-memory arrays are resampled only if the record gives their ``spacing`` (or ``affine``).

Batching the two-view output: use ``DataLoader(ds, batch_size=B, collate_fn=two_view_collate)``;
it returns ``{"image": Tensor(V, B, 1, *roi), <other keys>: list of B}`` — ``batch["image"][v]``
is view ``v`` of every volume in the batch.

Determinism: ``set_transform_seed(compose, seed)`` fixes the crops and flips of a pipeline;
with ``num_workers > 0`` use ``monai.data.DataLoader`` (its ``worker_init_fn`` reseeds each worker's
copy of the transforms from torch's seed, so ``seed_everything`` makes runs repeatable).
"""
from __future__ import annotations

import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import CacheDataset, Dataset, MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandFlipd,
    RandSpatialCropSamplesd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from ..errors import SmartError
from .loaders import load_volume

__all__ = [
    "HU_WINDOW",
    "LoadRecordd",
    "pretrain_transforms",
    "eval_transforms",
    "set_transform_seed",
    "two_view_collate",
    "record_collate",
    "make_dataset",
    "as_roi",
    "SmartCompose",
    "unwrap_smart_error",
]

#: default HU window (MIDL 2024 "Self-supervised pretraining in the wild"), mapped to [0, 1]
HU_WINDOW: tuple[float, float] = (-500.0, 500.0)


def unwrap_smart_error(exc: BaseException) -> SmartError | None:
    """The :class:`SmartError` behind ``exc`` (MONAI wraps transform errors in ``RuntimeError``), or None."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, SmartError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class SmartCompose(Compose):
    """MONAI ``Compose`` that re-raises a :class:`SmartError` from a step as itself, not as MONAI's
    ``RuntimeError("applying transform ...")`` wrapper, so the CLI prints one clean line."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError as exc:
            err = unwrap_smart_error(exc)
            if err is None:
                raise
        raise err


def as_roi(roi: int | Sequence[int] | None) -> tuple[int, int, int] | None:
    """``64`` -> ``(64, 64, 64)``; a 3-sequence of positive ints is kept; None stays None."""
    if roi is None:
        return None
    t = (roi,) * 3 if isinstance(roi, (int, np.integer)) else tuple(roi)
    if len(t) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in t):
        raise SmartError(f"roi={roi!r}: must be a positive integer or three positive integers")
    return tuple(int(v) for v in t)  # type: ignore[return-value]


def _as_spacing(spacing: float | Sequence[float] | None) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    t = (spacing,) * 3 if isinstance(spacing, (int, float, np.number)) else tuple(spacing)
    if len(t) != 3 or not all(np.isfinite(float(v)) and float(v) > 0 for v in t):
        raise SmartError(f"spacing={spacing!r}: must be a positive number of mm or three of them (or None)")
    return tuple(float(v) for v in t)  # type: ignore[return-value]


def _as_window(hu_window: Sequence[float] | None) -> tuple[float, float] | None:
    if hu_window is None:
        return None
    t = tuple(float(v) for v in hu_window)
    if len(t) != 2 or not np.all(np.isfinite(t)) or t[0] >= t[1]:
        raise SmartError(f"hu_window={hu_window!r}: must be two finite HU values (low, high) with low < high")
    return t  # type: ignore[return-value]


def _name(v: Any) -> str:
    return str(v) if isinstance(v, (str, os.PathLike)) else "<array>"


class LoadRecordd(MapTransform):
    """Load a record's volumes (paths via :func:`~smartlib.data.loaders.load_volume`, arrays as given)
    into ``(X, Y, Z)`` float32 :class:`~monai.data.MetaTensor` s with a RAS affine.

    * ``None``-valued keys (an absent mask) are dropped from the output dict.
    * An in-memory array gets ``record["affine"]`` if present, else ``diag(record["spacing"])``, else
      the identity with ``meta["smart_resample"] = False`` (so resampling is skipped for it).
    * A uint8 array in a record with ``intensity="unit"`` is scaled by 1/255.
    * The image and mask must have the same shape (a SmartError names both otherwise).
    """

    def __init__(self, keys: KeysCollection = ("image",), allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        first_key, first_src = None, None
        for key in self.keys:
            if key not in d or d[key] is None:
                if key == "image" and not self.allow_missing_keys:
                    raise SmartError(f"record {d.get('patient_id')!r}: no image")
                d.pop(key, None)
                continue
            src = d[key]
            d[key] = self._load(src, d, key)
            if first_key is None:
                first_key, first_src = key, src
            elif tuple(d[key].shape) != tuple(d[first_key].shape):
                raise SmartError(
                    f"{_name(first_src)} and {_name(src)}: {first_key}/{key} shape mismatch "
                    f"{tuple(d[first_key].shape)} vs {tuple(d[key].shape)}"
                    + ("" if isinstance(src, (str, os.PathLike)) else f" (record {d.get('patient_id')!r})")
                )
        return d

    @staticmethod
    def _load(src: Any, d: dict, key: Hashable) -> MetaTensor:
        if isinstance(src, (str, os.PathLike)):
            arr, _, meta = load_volume(src)
            mt = MetaTensor(torch.from_numpy(arr), affine=torch.as_tensor(meta["affine"], dtype=torch.float64))
            mt.meta["filename_or_obj"] = str(src)
            mt.meta["smart_resample"] = True
            mt.meta["original_channel_dim"] = float("nan")
            return mt
        if isinstance(src, MetaTensor):
            arr = src.as_tensor().cpu().numpy()
        else:
            arr = src.cpu().numpy() if isinstance(src, torch.Tensor) else np.asarray(src)
        where = f"record {d.get('patient_id')!r} {key}"
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3:
            raise SmartError(f"{where}: array has shape {tuple(arr.shape)}, expected a 3-D (X, Y, Z) volume")
        unit_uint8 = arr.dtype == np.uint8 and d.get("intensity") == "unit" and key == "image"
        arr = arr.astype(np.float32) / np.float32(255.0) if unit_uint8 else np.asarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise SmartError(f"{where}: {int((~np.isfinite(arr)).sum())} NaN/infinite voxels; values must be finite")
        resample = True
        if d.get("affine") is not None:
            affine = torch.as_tensor(np.asarray(d["affine"], dtype=np.float64))
        elif d.get("spacing") is not None:
            sp = np.broadcast_to(np.asarray(d["spacing"], dtype=np.float64), (3,))
            affine = torch.as_tensor(np.diag([*sp, 1.0]))
        else:
            affine, resample = torch.eye(4, dtype=torch.float64), False
        if isinstance(src, MetaTensor) and d.get("affine") is None and d.get("spacing") is None:
            affine, resample = src.affine.to(torch.float64), True
        mt = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=affine)
        mt.meta["filename_or_obj"] = where
        mt.meta["smart_resample"] = resample
        mt.meta["original_channel_dim"] = float("nan")
        return mt


class _ResampleIfKnown(MapTransform):
    """MONAI ``Spacingd``, skipped for in-memory volumes without a known voxel spacing."""

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float], mode: Sequence[str]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.spacing = Spacingd(keys=keys, pixdim=pixdim, mode=mode, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        img = d.get(self.keys[0])
        if isinstance(img, MetaTensor) and not img.meta.get("smart_resample", True):
            return d
        return self.spacing(d)


class _WindowHU(MapTransform):
    """MONAI ``ScaleIntensityRanged`` (HU window -> [0, 1], clipped), skipped for ``intensity="unit"`` records."""

    def __init__(self, keys: KeysCollection, window: tuple[float, float]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.window = window
        self.scale = ScaleIntensityRanged(
            keys=keys, a_min=window[0], a_max=window[1], b_min=0.0, b_max=1.0, clip=True, allow_missing_keys=True
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if d.get("intensity") == "unit":
            return d
        return self.scale(d)


def _above_zero(x: Any) -> Any:
    """Foreground for ``CropForegroundd`` after windowing: anything above the window's lower bound."""
    return x > 0


def _deterministic_steps(
    keys: tuple[str, ...], spacing: tuple[float, float, float] | None, window: tuple[float, float] | None
) -> list:
    modes = tuple("bilinear" if k == "image" else "nearest" for k in keys)
    steps: list = [
        LoadRecordd(keys=keys),
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel", allow_missing_keys=True),
        Orientationd(keys=keys, axcodes="RAS", allow_missing_keys=True, labels=None),
    ]
    if spacing is not None:
        steps.append(_ResampleIfKnown(keys=keys, pixdim=spacing, mode=modes))
    if window is not None:
        steps.append(_WindowHU(keys=("image",), window=window))
    return steps


def pretrain_transforms(
    roi: int | Sequence[int] = 64,
    spacing: float | Sequence[float] | None = 2.0,
    hu_window: Sequence[float] | None = HU_WINDOW,
    num_views: int = 2,
    flip: bool = True,
    crop_foreground: bool = False,
) -> SmartCompose:
    """Random multi-view crops for self-supervised pretraining.

    Args:
        roi: crop size in voxels (int for a cube).
        spacing: target voxel size in mm (None: keep the native grid).
        hu_window: HU range mapped to [0, 1] with clipping (None: no windowing).
        num_views: crops drawn per volume (``RandSpatialCropSamplesd(num_samples=num_views)``).
        flip: random flips along each axis (p = 0.5 each, independent per view).
        crop_foreground: crop to the bounding box of voxels above the window's low end before
            cropping (keeps crops off the air around the patient).

    Returns:
        A ``Compose`` mapping a record to a list of ``num_views`` dicts, each with
        ``"image"``: float32 tensor ``(1, *roi)`` in [0, 1] (plus the record's other keys).
    """
    roi_t = as_roi(roi)
    sp = _as_spacing(spacing)
    win = _as_window(hu_window)
    if not isinstance(num_views, (int, np.integer)) or isinstance(num_views, bool) or num_views < 1:
        raise SmartError(f"num_views={num_views!r}: must be a positive integer")
    keys = ("image",)
    steps = _deterministic_steps(keys, sp, win)
    if crop_foreground:
        steps.append(CropForegroundd(keys=keys, source_key="image", select_fn=_above_zero, allow_smaller=True))
    steps += [
        SpatialPadd(keys=keys, spatial_size=roi_t, mode="constant"),
        RandSpatialCropSamplesd(keys=keys, roi_size=roi_t, num_samples=int(num_views), random_size=False),
    ]
    if flip:
        steps += [RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in range(3)]
    steps.append(EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return SmartCompose(steps)


def eval_transforms(
    roi: int | Sequence[int] | None = 64,
    spacing: float | Sequence[float] | None = 2.0,
    hu_window: Sequence[float] | None = HU_WINDOW,
    keys: Sequence[str] = ("image",),
) -> SmartCompose:
    """Deterministic preprocessing for fine-tuning / evaluation / feature extraction.

    Load, channel first, orient RAS, resample (image bilinear, mask nearest), window the image to
    [0, 1], centre crop or pad to ``roi`` (None: keep the resampled size). ``keys`` is ``("image",)``
    or ``("image", "mask")``. Output: a dict with ``"image"`` (and ``"mask"``) float32 ``(1, *roi)``.
    """
    keys_t = tuple(keys)
    if not keys_t or keys_t[0] != "image" or not set(keys_t) <= {"image", "mask"}:
        raise SmartError(f"keys={keys!r}: must be ('image',) or ('image', 'mask')")
    roi_t = as_roi(roi)
    steps = _deterministic_steps(keys_t, _as_spacing(spacing), _as_window(hu_window))
    if roi_t is not None:
        steps.append(ResizeWithPadOrCropd(keys=keys_t, spatial_size=roi_t, mode="constant", allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys_t, data_type="tensor", dtype=torch.float32, track_meta=False,
                             allow_missing_keys=True))
    return SmartCompose(steps)


def set_transform_seed(compose: Compose, seed: int) -> Compose:
    """Seed every random transform in ``compose`` (MONAI ``Randomizable.set_random_state``); returns it.

    The same seed gives the same crops and flips for the same sequence of inputs.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise SmartError(f"seed={seed!r}: must be a non-negative integer")
    compose.set_random_state(seed=int(seed) % 2**32)
    return compose


def _collate_values(values: list) -> Any:
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack([v.as_tensor() if isinstance(v, MetaTensor) else v for v in values])
    if all(isinstance(v, np.ndarray) for v in values):
        return torch.stack([torch.as_tensor(v) for v in values])
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return torch.as_tensor([int(v) for v in values], dtype=torch.long)
    return list(values)


def record_collate(batch: Sequence[Mapping]) -> dict:
    """Collate transformed records: tensors stacked, integer labels as a LongTensor, anything else
    (strings, None, paths) as a list. Unlike torch's default it accepts ``label=None``."""
    keys: list = []
    for item in batch:
        keys += [k for k in item if k not in keys]
    return {k: _collate_values([item.get(k) for item in batch]) for k in keys}


def two_view_collate(batch: Sequence[Sequence[Mapping]]) -> dict:
    """Collate :func:`pretrain_transforms` output (B items, each a list of V view dicts).

    Returns ``{"image": Tensor(V, B, 1, *roi), ...}``; other keys come from view 0 of each item,
    collated as in :func:`record_collate` (length-B tensor or list).
    """
    if not batch:
        raise ValueError("empty batch")
    n_views = {len(item) for item in batch}
    if len(n_views) != 1:
        raise ValueError(f"items have different numbers of views {sorted(n_views)}")
    V = n_views.pop()
    images = torch.stack([torch.stack([torch.as_tensor(item[v]["image"]) for item in batch]) for v in range(V)])
    out = record_collate([{k: val for k, val in item[0].items() if k != "image"} for item in batch])
    out["image"] = images
    return out


def make_dataset(records: Sequence[Mapping], transform: Compose, cache: bool | float = False, num_workers: int = 0):
    """``monai.data.Dataset`` over records, or a ``CacheDataset`` (caches the deterministic prefix —
    loading, resampling, windowing — up to the first random transform) when ``cache`` is True or a rate."""
    data = [dict(r) for r in records]
    try:
        if cache:
            rate = 1.0 if cache is True else float(cache)
            return _SmartCacheDataset(data=data, transform=transform, cache_rate=rate, num_workers=num_workers or 0,
                                      progress=False)
        return _SmartDataset(data=data, transform=transform)
    except RuntimeError as exc:
        err = unwrap_smart_error(exc)
        if err is None:
            raise
    raise err


class _UnwrapMixin:
    def __getitem__(self, index: Any) -> Any:
        try:
            return super().__getitem__(index)  # type: ignore[misc]
        except RuntimeError as exc:
            err = unwrap_smart_error(exc)
            if err is None:
                raise
        raise err


class _SmartDataset(_UnwrapMixin, Dataset):
    """``monai.data.Dataset`` that surfaces a SmartError from its transform unwrapped."""


class _SmartCacheDataset(_UnwrapMixin, CacheDataset):
    """``monai.data.CacheDataset`` that surfaces a SmartError from its transform unwrapped."""
