"""Tumour segmentation with MONAI ``SwinUNETR`` whose encoder starts from an exported checkpoint.

* :func:`build_swinunetr` builds ``SwinUNETR(in_channels=1, out_channels=2, feature_size=embed_dim,
  depths, num_heads, window_size)`` from the export's own architecture and loads its ``encoder``
  weights into ``swinViT`` with ``strict=True``: any missing, unexpected or mis-shaped key is a
  :class:`SmartError`, never a silent partial load. ``"scratch"`` keeps MONAI's random weights.
* Training: random ``roi`` patches (MONAI ``RandCropByPosNegLabeld``, 1:1 tumour / background
  centres, two per volume per step, random flips), ``DiceCELoss(to_onehot_y, softmax)``, AdamW.
* Evaluation: ``sliding_window_inference`` over the whole resampled volume, arg-max, then MONAI
  ``DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)`` (mm, with the voxel spacing) on the
  tumour channel. HD95 is NaN when the prediction is empty.
* Results per case (Dice, HD95, tumour volume, acquisition columns) and per run (mean Dice with a
  percentile bootstrap 95 % CI over cases from ``scipy.stats.bootstrap``).

Patch size: SwinUNETR's bottleneck is ``roi / 32`` voxels wide; a 32³ patch leaves one voxel, where
instance norm is undefined in training, so for ``roi < 64`` the decoder uses a one-group GroupNorm
(``("group", {"num_groups": 1})``, batch independent) instead of MONAI's default instance norm.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import SmartError
from ..tasks import prep_for, split_fractions
from .data import label_fraction_indices, load_arrays, split_indices, task_records
from .features import init_arch
from .study import check_fractions, comparisons, grid, is_builtin, resolve_inits, run_cells, seed_case_cis, write_outputs

__all__ = ["SegData", "build_swinunetr", "load_segmentation", "train_segmentation", "evaluate_segmentation",
           "segmentation_study", "summarise_segmentation", "subset_table", "ACQ_COLUMNS"]

ACQ_COLUMNS = ("kernel", "slice_mm", "contrast", "noise_hu")


def _norm_name(roi: int) -> Any:
    return "instance" if roi >= 64 else ("group", {"num_groups": 1})


def build_swinunetr(init: str, preset: str, roi: int, out_channels: int = 2, seed: int = 0):
    """MONAI ``SwinUNETR`` with its ``swinViT`` encoder from ``init`` (``"scratch"`` or an export path).

    Raises:
        SmartError: not an export, a ViT export, or encoder weights that do not load with ``strict=True``.
    """
    from monai.networks.nets import SwinUNETR

    from ..io import describe_key_mismatch, load_torch
    from ..seed import seed_everything, stream_seed

    arch = init_arch(init, preset)
    if arch.get("arch", "swin") != "swin":
        raise SmartError(f"{init}: a {arch.get('arch')} encoder cannot initialise SwinUNETR (needs a Swin export)")
    ws = arch["window_size"]
    from ..models.swin import check_windows

    check_windows(int(ws[0] if isinstance(ws, (list, tuple)) else ws), roi, what=f"{init}: patches")
    # scratch weights from their own stream (never the pretraining student's initial weights)
    seed_everything(stream_seed(seed, "scratch") if init == "scratch" else seed)
    model = SwinUNETR(in_channels=1, out_channels=out_channels, feature_size=int(arch["embed_dim"]),
                      depths=tuple(arch["depths"]), num_heads=tuple(arch["num_heads"]),
                      window_size=ws if isinstance(ws, (list, tuple)) else int(ws), norm_name=_norm_name(roi))
    if init != "scratch":
        blob = load_torch(init)
        keys = describe_key_mismatch(model.swinViT.state_dict(), blob["encoder"])
        if keys:
            raise SmartError(f"{init}: encoder weights do not fit SwinUNETR.swinViT ({keys})")
        try:
            model.swinViT.load_state_dict(blob["encoder"], strict=True)
        except RuntimeError as exc:  # same keys, other shapes: name the first mismatched tensors
            shapes = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln][:3]
            raise SmartError(f"{init}: encoder weights do not fit SwinUNETR.swinViT ({'; '.join(shapes) or str(exc).splitlines()[0]})") from None
    return model


@dataclasses.dataclass
class SegData:
    """Resampled volumes ``images`` / ``masks`` (lists of (1, X, Y, Z)), ``records``, ``split``, ``spacing`` (mm)."""

    source: str
    records: list[dict]
    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    split: dict[str, np.ndarray]
    spacing: float
    roi: int
    phantom: bool


def load_segmentation(data: str | os.PathLike | None = None, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                      n: int | None = None, data_seed: int = 0, roi: int | None = None,
                      spacing: float | None | str = "default", hu_window: tuple[float, float] = (-500.0, 500.0)) -> SegData:
    """Load the segmentation set (records with masks), resampled to ``spacing`` mm and padded to at least ``roi``."""
    records, source = task_records("segmentation", data, preset, runs_dir, n=n, seed=data_seed)
    if not records:
        raise SmartError(f"{source}: no records with a mask")
    prep = prep_for("segmentation", preset, roi, spacing)
    if prep["spacing"] is None:
        raise SmartError("spacing=None: segmentation needs a target spacing in mm (HD95 and volumes are in mm)")
    split = split_indices(records, source, fractions=split_fractions("segmentation", preset), seed=data_seed)
    images, masks = load_arrays(records, None, float(prep["spacing"]), hu_window, with_mask=True)
    return SegData(source=source, records=records, images=images, masks=masks, split=split,
                   spacing=float(prep["spacing"]), roi=int(prep["roi"]), phantom=is_builtin(data))


def _patch_sampler(roi: int, seed: int):
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

    tf = Compose([
        SpatialPadd(keys=("image", "mask"), spatial_size=(roi,) * 3),
        RandCropByPosNegLabeld(keys=("image", "mask"), label_key="mask", spatial_size=(roi,) * 3, pos=1, neg=1,
                               num_samples=2, allow_smaller=False),
        *[RandFlipd(keys=("image", "mask"), prob=0.5, spatial_axis=a) for a in range(3)],
    ])
    tf.set_random_state(seed=seed)
    return tf


def train_segmentation(model: torch.nn.Module, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], roi: int,
                       steps: int = 30, lr: float = 1e-3, weight_decay: float = 1e-5, seed: int = 0,
                       progress: bool = False) -> torch.nn.Module:
    """Train ``model`` for ``steps`` steps; each step takes the next volume of a seeded shuffle and two
    ``roi``³ patches of it (batch 2). Images / masks: (1, X, Y, Z) each. Returns the model (eval mode).
    ``progress`` shows a tqdm bar of the steps."""
    from tqdm.auto import tqdm
    from monai.losses import DiceCELoss

    from ..seed import seed_everything

    if steps < 1:
        raise SmartError(f"steps={steps}: must be >= 1")
    if not images:
        raise SmartError("segmentation: no training volumes")
    seed_everything(seed)
    sampler = _patch_sampler(roi, seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = np.random.default_rng(seed)
    order: list[int] = []
    model.train()
    for _ in tqdm(range(steps), desc="segmentation training", unit="step", disable=not progress, dynamic_ncols=True):
        if not order:
            order = g.permutation(len(images)).tolist()
        i = order.pop()
        patches = sampler({"image": images[i], "mask": masks[i]})
        x = torch.stack([torch.as_tensor(p["image"]) for p in patches]).float()
        y = torch.stack([torch.as_tensor(p["mask"]) for p in patches]).float()
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def evaluate_segmentation(model: torch.nn.Module, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], roi: int,
                          spacing: float, overlap: float = 0.25, sw_batch_size: int = 8,
                          progress: bool = False) -> list[dict[str, float]]:
    """Dice and HD95 (mm) of the tumour class per volume with sliding-window inference.

    Returns: one dict per case with ``dice``, ``hd95_mm``, ``tumour_volume_ml`` (reference mask) and
    ``predicted_volume_ml``.
    """
    import warnings

    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot
    from monai.transforms import SpatialPad

    model.eval()
    dice_m = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    hd_m = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    pad = SpatialPad(spatial_size=(roi,) * 3)
    voxel_ml = spacing ** 3 / 1000.0
    from tqdm.auto import tqdm

    rows = []
    for img, msk in tqdm(list(zip(images, masks)), desc="segmentation evaluation", unit="case", disable=not progress,
                         dynamic_ncols=True):
        x = torch.as_tensor(pad(img))[None].float()
        y = torch.as_tensor(pad(msk))[None].long()
        logits = sliding_window_inference(x.float(), (roi,) * 3, sw_batch_size, model, overlap=overlap)
        pred = logits.argmax(dim=1, keepdim=True)
        p1, y1 = one_hot(pred, 2), one_hot(y, 2)
        dice = float(dice_m(p1, y1)[0, 0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd = float(hd_m(p1, y1, spacing=spacing)[0, 0]) if pred.any() and y.any() else float("nan")
        rows.append({"dice": dice, "hd95_mm": hd if np.isfinite(hd) else float("nan"),
                     "tumour_volume_ml": float(y.sum()) * voxel_ml, "predicted_volume_ml": float(pred.sum()) * voxel_ml})
    return rows


def _mean_ci(values: np.ndarray, seed: int, n_boot: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of the mean (``scipy.stats.bootstrap``)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2 or np.ptp(v) == 0:
        m = float(v.mean()) if len(v) else float("nan")
        return m, m
    res = bootstrap((v,), np.mean, n_resamples=n_boot, method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def segmentation_study(inits: Mapping[str, str] | Sequence[str], *, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                       out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                       fractions: Sequence[float] = (1.0,), seeds: Sequence[int] = (0,), steps: int = 30, lr: float = 1e-3,
                       overlap: float = 0.25, n_boot: int = 1000, roi: int | None = None,
                       spacing: float | None | str = "default", n: int | None = None, data_seed: int = 0,
                       dataset: SegData | None = None, log: Callable[[str], None] = print, progress: bool = False) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Train and evaluate a SwinUNETR per (init × label fraction × seed).

    Returns ``(runs, cases)``: one row per run (``init, fraction, seed, n_train, n_test, dice_mean, dice_lo,
    dice_hi, hd95_median_mm, n_empty, seconds``) and one per test case and run (Dice, HD95, volumes,
    acquisition columns). With ``out``: ``runs.csv``, ``cases.csv``, ``subsets.csv`` and ``summary.json``,
    written after every run has finished.
    """
    import pandas as pd

    fractions = check_fractions(fractions)
    inits_r = resolve_inits(inits, preset, runs_dir, log=log)  # fail early
    ds = dataset or load_segmentation(data, preset, runs_dir, n=n, data_seed=data_seed, roi=roi, spacing=spacing)
    tr, te = ds.split["train"], ds.split["test"]
    patients = [str(r["patient_id"]) for r in ds.records]
    cases: list[dict] = []

    def run_one(c) -> dict:
        t0 = time.time()
        keep = label_fraction_indices(tr, [None] * len(ds.records), patients, c.fraction, seed=c.seed)
        model = build_swinunetr(c.path, preset, ds.roi, seed=c.seed)
        train_segmentation(model, [ds.images[i] for i in keep], [ds.masks[i] for i in keep], ds.roi,
                           steps=steps, lr=lr, seed=c.seed, progress=progress)
        res = evaluate_segmentation(model, [ds.images[i] for i in te], [ds.masks[i] for i in te], ds.roi,
                                    ds.spacing, overlap=overlap, progress=progress)
        for k, (i, r) in enumerate(zip(te, res)):
            rec = ds.records[i]
            cases.append({"init": c.init, "fraction": c.fraction, "seed": c.seed, "case": k, "patient_id": patients[i], **r,
                          **{k: rec.get(k) for k in ACQ_COLUMNS if rec.get(k) not in (None, "")}})
        dice = np.array([r["dice"] for r in res])
        lo, hi = _mean_ci(dice, c.seed, n_boot)
        hd = np.array([r["hd95_mm"] for r in res])
        row = {"init": c.init, "fraction": c.fraction, "seed": c.seed, "n_train": len(keep), "n_test": len(te),
               "dice_mean": float(dice.mean()), "dice_lo": lo, "dice_hi": hi,
               "hd95_median_mm": float(np.nanmedian(hd)) if np.isfinite(hd).any() else float("nan"),
               "n_empty": int(sum(r["predicted_volume_ml"] == 0 for r in res)),
               "seconds": round(time.time() - t0, 2)}
        log(f"segmentation {c.init} fraction={c.fraction} seed={c.seed}: Dice {row['dice_mean']:.3f} [{lo:.3f}, {hi:.3f}], "
            f"HD95 {row['hd95_median_mm']:.1f} mm ({row['seconds']:.1f} s)")
        return row

    runs_df = pd.DataFrame(run_cells(grid(inits_r, fractions, seeds), run_one))
    cases_df = pd.DataFrame(cases)
    if out is not None:
        cis = seed_case_cis(cases_df, ["init", "fraction"], "dice", n_boot=n_boot)
        summary = summarise_segmentation(runs_df).drop(columns=["dice_lo", "dice_hi"]).merge(
            cis.drop(columns=["dice", "n_seeds"]), on=["init", "fraction"], how="left")
        comps = comparisons(cases_df, ["fraction"], "dice", n_boot=n_boot)
        write_outputs(out, csv={"cases.csv": cases_df.to_dict("records"), "subsets.csv": subset_table(cases_df).to_dict("records"),
                                "runs.csv": runs_df.to_dict("records"), "comparisons.csv": comps.to_dict("records")},
                      json={"summary.json": {"task": "segmentation", "source": ds.source, "phantom": ds.phantom,
                                             "preset": preset, "spacing_mm": ds.spacing, "roi": ds.roi, "steps": steps,
                                             "n_train": int(len(tr)), "n_test": int(len(te)), "inits": inits_r.specs,
                                             "summary": summary.to_dict("records"), "runs": runs_df.to_dict("records"),
                                             "comparisons": comps.to_dict("records")}})
    return runs_df, cases_df


def summarise_segmentation(runs: "pd.DataFrame") -> "pd.DataFrame":
    """Mean over seeds of the run metrics per init × fraction (``dice_sd``: SD of the run means)."""
    import pandas as pd

    rows = []
    for (init, f), g in runs.groupby(["init", "fraction"], sort=False):
        rows.append({"init": init, "fraction": f, "n_seeds": len(g), "n_train": int(g["n_train"].mean()),
                     "dice_mean": float(g["dice_mean"].mean()), "dice_sd": float(g["dice_mean"].std(ddof=0)),
                     "dice_lo": float(g["dice_lo"].mean()), "dice_hi": float(g["dice_hi"].mean()),
                     "hd95_median_mm": float(g["hd95_median_mm"].mean())})
    return pd.DataFrame(rows)


def subset_table(cases: "pd.DataFrame") -> "pd.DataFrame":
    """Mean Dice per init × fraction within each acquisition subset (kernel, slice thickness, contrast)."""
    import pandas as pd

    rows = []
    for col in ("kernel", "slice_mm", "contrast"):
        if col not in cases:
            continue
        c = cases.assign(**{col: cases[col].fillna("native").astype(str).replace({"": "native"})})
        for (init, f, v), g in c.groupby(["init", "fraction", col], sort=False):
            rows.append({"subset": col, "value": v, "init": init, "fraction": f, "n_cases": len(g),
                         "dice_mean": float(g["dice"].mean())})
    return pd.DataFrame(rows)
