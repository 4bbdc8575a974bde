"""MONAI preprocessing for SMART: records in, tensors out.

Both pipelines take a *record* (see :mod:`smartlib.data.sources`) whose ``"image"`` (and optional
``"mask"``) is a path or an in-memory ``(X, Y, Z)`` array and return dicts with channel-first float32
tensors:

* :func:`pretrain_transforms` — load, channel first, orient to RAS, resample to ``spacing`` mm,
  window HU to [0, 1] (clipped), crop to the body (optional), pad to at least ``roi``, draw
  ``num_views`` random ``roi`` crops of the same volume, random flips. Output: a *list* of
  ``num_views`` dicts, each with ``"image"`` of shape ``(1, *roi)``.
* :func:`eval_transforms` — the same deterministic steps, then a centre crop / pad to ``roi``.

Records with ``intensity="unit"`` (MedMNIST) skip the HU window (a uint8 array is scaled by 1/255);
in-memory arrays are resampled only if the record gives their ``spacing`` (or ``affine``).

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
from monai.data import MetaTensor
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
from .readers import check_mask_geometry, load_volume, source_name
from .validate import as_roi, as_target_spacing, as_window, check_seed

__all__ = [
    "HU_WINDOW",
    "LoadRecordd",
    "pretrain_transforms",
    "eval_transforms",
    "set_transform_seed",
    "as_roi",
    "SmartCompose",
    "unwrap_smart_error",
]

#: default HU window, mapped to [0, 1]: that of "Self-supervised pretraining in the wild" (MIDL 2024,
#: PMLR 250:708-721, arXiv 2405.08657)
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


class LoadRecordd(MapTransform):
    """Load a record's volumes (paths via :func:`~smartlib.data.readers.load_volume`, arrays as given)
    into ``(X, Y, Z)`` float32 :class:`~monai.data.MetaTensor` s with a RAS affine.

    * ``None``-valued keys (an absent mask) are dropped from the output dict.
    * An in-memory array gets ``record["affine"]`` if present, else ``diag(record["spacing"])``, else
      the identity with ``meta["smart_resample"] = False`` (so resampling is skipped for it).
    * A uint8 array in a record with ``intensity="unit"`` is scaled by 1/255.
    * The image and mask must have the same shape (a SmartError names both otherwise) and, when both
      are files, the same geometry (:func:`~smartlib.data.readers.check_mask_geometry`).
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
                    f"{source_name(first_src)} and {source_name(src)}: {first_key}/{key} shape mismatch "
                    f"{tuple(d[first_key].shape)} vs {tuple(d[key].shape)}"
                    + ("" if isinstance(src, (str, os.PathLike)) else f" (record {d.get('patient_id')!r})")
                )
            elif isinstance(first_src, (str, os.PathLike)) and isinstance(src, (str, os.PathLike)):
                # two files: the mask must lie on the image's voxel grid (spacing, orientation, origin)
                check_mask_geometry(first_src, d[first_key].affine.numpy(), tuple(d[first_key].shape),
                                    src, d[key].affine.numpy(), tuple(d[key].shape))
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
    sp = as_target_spacing(spacing)
    win = as_window(hu_window)
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
    steps = _deterministic_steps(keys_t, as_target_spacing(spacing), as_window(hu_window))
    if roi_t is not None:
        steps.append(ResizeWithPadOrCropd(keys=keys_t, spatial_size=roi_t, mode="constant", allow_missing_keys=True))
    steps.append(EnsureTyped(keys=keys_t, data_type="tensor", dtype=torch.float32, track_meta=False,
                             allow_missing_keys=True))
    return SmartCompose(steps)


def set_transform_seed(compose: Compose, seed: int) -> Compose:
    """Seed every random transform in ``compose`` (MONAI ``Randomizable.set_random_state``); returns it.

    The same seed gives the same crops and flips for the same sequence of inputs.
    """
    compose.set_random_state(seed=check_seed(seed) % 2**32)
    return compose
