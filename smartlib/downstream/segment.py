"""Tumour segmentation: fine-tune MONAI ``SwinUNETR`` / ``UNETR`` from an exported encoder, select on validation.

* Models: :mod:`smartlib.downstream.segmenters` (strict encoder loading; re-exported here).
* Training (:func:`train_segmentation`): random ``roi`` patches (MONAI ``RandCropByPosNegLabeld``, tumour or
  background centres with equal probability, two per volume per step, random flips), ``DiceCELoss(to_onehot_y,
  softmax)``, AdamW with cosine decay. **Model selection on the validation split**: every ``eval_every``
  steps the validation volumes are segmented (forward only, Dice) and the checkpoint with the best mean
  validation Dice is kept (ties: the earlier step). The test Dice of a few test volumes is logged at the
  same points for the curves — never used to choose. A handful of validation volumes every ~40 steps
  keeps this cheap: a forward pass over a volume costs about one training step.
* Evaluation: ``sliding_window_inference`` over the whole resampled volume, arg-max, then MONAI
  ``DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)`` (mm, with the voxel spacing) on the
  tumour channel. HD95 is NaN when the prediction is empty.
* Results per case (Dice, HD95, tumour volume, acquisition columns), per run (mean Dice with a
  percentile bootstrap 95 % CI over cases from ``scipy.stats.bootstrap``) and per evaluation point
  (``curves.csv``: train loss, validation Dice, test Dice).
"""
from __future__ import annotations

import copy
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
from .segmenters import SEG_FORMAT, build_segmenter, build_swinunetr, build_unetr, load_segmenter, segmenter_arch
from .study import Cell, check_fractions, comparisons, grid, is_builtin, resolve_inits, run_cells, seed_case_cis, write_outputs

__all__ = ["SegData", "SegProtocol", "SegRun", "SegTrained", "build_swinunetr", "build_unetr", "build_segmenter", "segmenter_arch",
           "load_segmenter", "load_segmentation", "patch_sampler", "train_segmentation", "evaluate_segmentation", "select_step",
           "finetune_segmentation", "segmentation_study", "summarise_segmentation", "subset_table", "ACQ_COLUMNS",
           "SEG_FORMAT"]

ACQ_COLUMNS = ("kernel", "slice_mm", "contrast", "noise_hu")


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


def patch_sampler(roi: int, seed: int):
    """MONAI transform: a volume dict (``image``, ``mask``: (1, X, Y, Z)) → two ``roi``³ patches, each centred on
    tumour or background with probability ½ (``RandCropByPosNegLabeld``, pos = neg = 1), randomly flipped; seeded."""
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, SpatialPadd

    tf = Compose([
        SpatialPadd(keys=("image", "mask"), spatial_size=(roi,) * 3),
        RandCropByPosNegLabeld(keys=("image", "mask"), label_key="mask", spatial_size=(roi,) * 3, pos=1, neg=1,
                               num_samples=2, allow_smaller=False),
        *[RandFlipd(keys=("image", "mask"), prob=0.5, spatial_axis=a) for a in range(3)],
    ])
    tf.set_random_state(seed=seed)
    return tf


@torch.no_grad()
def evaluate_segmentation(model: torch.nn.Module, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], roi: int,
                          spacing: float, overlap: float = 0.25, sw_batch_size: int = 8,
                          progress: bool = False, hd95: bool = True, amp: bool = True) -> list[dict[str, float]]:
    """Dice and HD95 (mm) of the tumour class per volume with sliding-window inference.

    Images / masks: (1, X, Y, Z) each. Returns one dict per case with ``dice``, ``tumour_volume_ml``
    (reference mask), ``predicted_volume_ml`` and, with ``hd95``, ``hd95_mm`` (NaN for an empty
    prediction or reference). ``hd95=False`` is the cheap forward-only form the training curves use.
    ``amp``: the forward pass in bf16 autocast where it runs natively (0.68× the fp32 time of a 48³ volume
    on a 2-core CPU with AMX); the arg-max and the metrics in float32.
    """
    from ..pretrain import bf16_native

    import warnings

    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot
    from monai.transforms import SpatialPad
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    amp = amp and bf16_native(device)
    dice_m = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    hd_m = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    pad = SpatialPad(spatial_size=(roi,) * 3)
    voxel_ml = spacing ** 3 / 1000.0
    rows = []
    for img, msk in tqdm(list(zip(images, masks)), desc="segmentation evaluation", unit="case", disable=not progress,
                         dynamic_ncols=True):
        x = torch.as_tensor(pad(img))[None].float()
        y = torch.as_tensor(pad(msk))[None].long().to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = sliding_window_inference(x.to(device), (roi,) * 3, sw_batch_size, model, overlap=overlap).float()
        pred = logits.argmax(dim=1, keepdim=True)
        p1, y1 = one_hot(pred, 2), one_hot(y, 2)
        row = {"dice": float(dice_m(p1, y1)[0, 0])}
        if hd95:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hd = float(hd_m(p1, y1, spacing=spacing)[0, 0]) if pred.any() and y.any() else float("nan")
            row["hd95_mm"] = hd if np.isfinite(hd) else float("nan")
        rows.append({**row, "tumour_volume_ml": float(y.sum()) * voxel_ml, "predicted_volume_ml": float(pred.sum()) * voxel_ml})
    return rows


def select_step(history: Sequence[Mapping[str, Any]]) -> int:
    """The step kept: the best ``val_dice`` of the evaluation points, ties to the earlier step; without
    validation values (no validation split) the last step. Never reads ``test_dice``."""
    if not history:
        raise SmartError("select_step: no evaluation points")
    scored = [(float(h["val_dice"]), -int(h["step"])) for h in history if np.isfinite(h.get("val_dice", np.nan))]
    return -max(scored)[1] if scored else int(history[-1]["step"])


@dataclasses.dataclass
class SegTrained:
    """What :func:`train_segmentation` returns: the ``model`` with the weights of the selected ``step`` (eval
    mode) and ``history``: one row per evaluation point — ``step, epoch`` (steps / training volumes),
    ``lr, train_loss`` (mean since the previous point), ``val_dice`` (mean over the validation volumes),
    ``test_dice`` (mean over the logged test volumes, for the curves), ``selected``."""

    model: torch.nn.Module
    step: int
    history: list[dict]


def _mean_dice(model: torch.nn.Module, pair: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None, roi: int,
               spacing: float, overlap: float) -> float:
    if pair is None or not len(pair[0]):
        return float("nan")
    rows = evaluate_segmentation(model, pair[0], pair[1], roi, spacing, overlap=overlap, hd95=False)
    return float(np.mean([r["dice"] for r in rows]))


def train_segmentation(model: torch.nn.Module, images: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], roi: int,
                       steps: int = 30, lr: float = 1e-3, weight_decay: float = 1e-5, seed: int = 0,
                       progress: bool = False, val: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
                       test: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None, eval_every: int = 0,
                       spacing: float = 2.0, overlap: float = 0.0, amp: bool = True) -> SegTrained:
    """Train ``model`` for ``steps`` steps and keep the checkpoint with the best validation Dice.

    Each step takes the next volume of a seeded shuffle and two ``roi``³ patches of it (batch 2); AdamW
    with cosine decay to 0 at ``steps``. Images / masks: (1, X, Y, Z) each. Evaluation points: every
    ``eval_every`` steps and the last (``eval_every`` 0: the last only). At each point ``val`` (images,
    masks) is segmented whole (:func:`evaluate_segmentation`, forward only) and its mean Dice recorded;
    ``test`` likewise, **for the curves only** — :func:`select_step` chooses from the validation Dice
    alone (no ``val``: the last step). ``progress`` shows a tqdm bar of the steps.

    Speed (the same arithmetic up to float rounding): channels-last 3D activations (oneDNN's native layout
    for the decoder's convolutions, which dominate a SwinUNETR step), AdamW's fused kernel, and bf16
    autocast of the forward pass where it runs natively (``amp``: CUDA, CPUs with AVX512-BF16/AMX; the loss
    in float32). Measured on a 2-core CPU at 32³ patches: 0.78× the step time of the plain fp32 step
    (``benchmarks/RESULTS.md``).
    """
    from monai.losses import DiceCELoss
    from tqdm.auto import tqdm

    from ..pretrain import bf16_native
    from ..seed import seed_everything

    if steps < 1:
        raise SmartError(f"steps={steps}: must be >= 1")
    if eval_every < 0:
        raise SmartError(f"eval_every={eval_every}: must be >= 0 (0: evaluate after the last step only)")
    if not images:
        raise SmartError("segmentation: no training volumes")
    seed_everything(seed)
    sampler = patch_sampler(roi, seed)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    device = next(model.parameters()).device
    amp = amp and bf16_native(device)
    model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    g = np.random.default_rng(seed)
    order: list[int] = []
    points = set(range(eval_every, steps + 1, eval_every) if eval_every else []) | {steps}
    history: list[dict] = []
    best_state: dict = {}
    losses: list[float] = []
    model.train()
    for step in tqdm(range(1, steps + 1), desc="segmentation training", unit="step", disable=not progress, dynamic_ncols=True):
        if not order:
            order = g.permutation(len(images)).tolist()
        i = order.pop()
        patches = sampler({"image": images[i], "mask": masks[i]})
        x = torch.stack([torch.as_tensor(p["image"]) for p in patches]).float().to(device, memory_format=torch.channels_last_3d)
        y = torch.stack([torch.as_tensor(p["mask"]) for p in patches]).float().to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_now = float(opt.param_groups[0]["lr"])
        sched.step()
        losses.append(float(loss.detach()))
        if step not in points:
            continue
        row = {"step": step, "epoch": step / len(images), "lr": lr_now, "train_loss": float(np.mean(losses)),
               "val_dice": _mean_dice(model, val, roi, spacing, overlap),
               "test_dice": _mean_dice(model, test, roi, spacing, overlap)}
        history.append(row)
        losses = []
        if select_step(history) == step:  # the best so far (a tie keeps the earlier point)
            best_state = copy.deepcopy(model.state_dict())
        model.train()
    chosen = select_step(history)
    for row in history:
        row["selected"] = row["step"] == chosen
    model.load_state_dict(best_state)
    return SegTrained(model=model.eval(), step=chosen, history=history)


@dataclasses.dataclass(frozen=True)
class SegProtocol:
    """How every run of a segmentation study is trained and evaluated (two studies agree on it or are not comparable).

    ``steps`` training steps at learning rate ``lr``; an evaluation point every ``eval_every`` steps where
    the first ``n_val`` validation volumes choose the checkpoint (None: all) and the first ``curve_cases``
    test volumes are logged for the curves (None: all; 0: none); ``overlap`` of the sliding windows.
    """

    steps: int = 30
    lr: float = 1e-3
    eval_every: int = 0
    n_val: int | None = None
    curve_cases: int | None = None
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SmartError(f"steps={self.steps}: must be >= 1")
        if self.eval_every < 0:
            raise SmartError(f"eval_every={self.eval_every}: must be >= 0 (0: evaluate after the last step only)")
        for name in ("n_val", "curve_cases"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < 0):
                raise SmartError(f"{name}={v!r}: must be a number of volumes >= 0, or None for all")
        if not (self.lr > 0) or not (0 <= self.overlap < 1):
            raise SmartError(f"lr={self.lr}, overlap={self.overlap}: need lr > 0 and overlap in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SegRun:
    """One fine-tuning run: ``row`` (run summary), ``cases`` (one row per test case at the selected step),
    ``curves`` (one row per evaluation point) and the fine-tuned ``model`` (eval mode)."""

    row: dict
    cases: list[dict]
    curves: list[dict]
    model: torch.nn.Module


def _first(idx: np.ndarray, n: int | None) -> np.ndarray:
    return idx if n is None else idx[:int(n)]


def finetune_segmentation(ds: SegData, cell: Cell, preset: str, protocol: SegProtocol, arch: Mapping[str, Any] | None = None,
                          n_boot: int = 1000, progress: bool = False, log: Callable[[str], None] = print) -> SegRun:
    """Fine-tune ``cell`` (init name and path, label fraction, seed) on ``ds`` with ``protocol``; evaluate the
    selected checkpoint on every test volume. ``arch``: the architecture of a scratch init (a ViT) or the
    kind an export must have (see :func:`build_segmenter`)."""
    t0 = time.time()
    tr, va, te = ds.split["train"], ds.split.get("val", np.array([], int)), ds.split["test"]
    patients = [str(r["patient_id"]) for r in ds.records]
    keep = label_fraction_indices(tr, [None] * len(ds.records), patients, cell.fraction, seed=cell.seed)
    pick = lambda idx: ([ds.images[i] for i in idx], [ds.masks[i] for i in idx])  # noqa: E731
    va_used, te_curve = _first(va, protocol.n_val), _first(te, protocol.curve_cases)
    model = build_segmenter(cell.path, preset, ds.roi, seed=cell.seed, arch=arch)
    fit = train_segmentation(model, *pick(keep), ds.roi, steps=protocol.steps, lr=protocol.lr, seed=cell.seed,
                             progress=progress, val=pick(va_used) if len(va_used) else None,
                             test=pick(te_curve) if len(te_curve) else None, eval_every=protocol.eval_every,
                             spacing=ds.spacing, overlap=protocol.overlap)
    res = evaluate_segmentation(fit.model, *pick(te), ds.roi, ds.spacing, overlap=protocol.overlap, progress=progress)
    key = {"init": cell.init, "fraction": cell.fraction, "seed": cell.seed}
    cases = []
    for k, (i, r) in enumerate(zip(te, res)):
        rec = ds.records[i]
        cases.append({**key, "case": k, "patient_id": patients[i], **r,
                      **{c: rec.get(c) for c in ACQ_COLUMNS if rec.get(c) not in (None, "")}})
    dice = np.array([r["dice"] for r in res])
    lo, hi = _mean_ci(dice, cell.seed, n_boot)
    hd = np.array([r["hd95_mm"] for r in res])
    sel = next(h for h in fit.history if h["selected"])
    row = {**key, "n_train": len(keep), "n_val": len(va_used), "n_test": len(te), "dice_mean": float(dice.mean()),
           "dice_lo": lo, "dice_hi": hi, "hd95_median_mm": float(np.nanmedian(hd)) if np.isfinite(hd).any() else float("nan"),
           "n_empty": int(sum(r["predicted_volume_ml"] == 0 for r in res)), "selected_step": fit.step,
           "val_dice": sel["val_dice"], "seconds": round(time.time() - t0, 2)}
    log(f"segmentation {cell.init} fraction={cell.fraction} seed={cell.seed}: Dice {row['dice_mean']:.3f} [{lo:.3f}, {hi:.3f}], "
        f"HD95 {row['hd95_median_mm']:.1f} mm, step {fit.step} of {protocol.steps} (validation Dice "
        f"{row['val_dice']:.3f}) ({row['seconds']:.1f} s)")
    curves = [{**key, "n_val": len(va_used), "n_curve_cases": len(te_curve), **h} for h in fit.history]
    return SegRun(row=row, cases=cases, curves=curves, model=fit.model)


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


def _model_blob(run: SegRun, arch: Mapping[str, Any], roi: int) -> dict:
    return {"format": SEG_FORMAT, "init": run.row["init"], "fraction": run.row["fraction"], "seed": run.row["seed"],
            "step": run.row["selected_step"], "arch": dict(arch), "roi": int(roi), "out_channels": 2,
            "state_dict": {k: v.detach().clone() for k, v in run.model.state_dict().items()}}


def segmentation_study(inits: Mapping[str, str] | Sequence[str], *, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                       out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                       fractions: Sequence[float] = (1.0,), seeds: Sequence[int] = (0,), steps: int = 30, lr: float = 1e-3,
                       overlap: float = 0.25, n_boot: int = 1000, roi: int | None = None,
                       spacing: float | None | str = "default", n: int | None = None, data_seed: int = 0,
                       eval_every: int = 0, n_val: int | None = None, curve_cases: int | None = None,
                       save_models: bool = False, archs: Mapping[str, Mapping[str, Any]] | None = None,
                       dataset: SegData | None = None, log: Callable[[str], None] = print, progress: bool = False) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Train and evaluate a segmentation model per (init × label fraction × seed), selecting on validation.

    ``archs`` maps an init name to its architecture (a ViT from scratch: ``{"arch": "vit", ...}``; for an
    export, the kind it must have). Returns ``(runs, cases)``: one row per run (``init, fraction, seed,
    n_train, n_val, n_test, dice_mean, dice_lo, dice_hi, hd95_median_mm, n_empty, selected_step, val_dice,
    seconds``) and one per test case and run (Dice, HD95, volumes, acquisition columns). With ``out``:
    ``runs.csv``, ``cases.csv``, ``curves.csv`` (train loss, validation and test Dice per evaluation
    point), ``subsets.csv``, ``comparisons.csv`` and ``summary.json`` (with the protocol), written after
    every run has finished; ``save_models`` also writes ``models/<init>.pt`` — the fine-tuned model of each
    init at the largest fraction and the first seed (:func:`load_segmenter`), for feature-reuse analyses.
    """
    import pandas as pd

    fractions = check_fractions(fractions)
    protocol = SegProtocol(steps=steps, lr=lr, eval_every=eval_every, n_val=n_val, curve_cases=curve_cases, overlap=overlap)
    inits_r = resolve_inits(inits, preset, runs_dir, log=log)  # fail early
    archs = dict(archs or {})
    unknown = sorted(set(archs) - set(inits_r.paths))
    if unknown:
        raise SmartError(f"archs: {unknown} are not inits of this study ({', '.join(inits_r.paths)})")
    arch_of = {name: segmenter_arch(path, preset, archs.get(name)) for name, path in inits_r.paths.items()}  # fail early
    ds = dataset or load_segmentation(data, preset, runs_dir, n=n, data_seed=data_seed, roi=roi, spacing=spacing)
    keep_model = (max(fractions), min(int(s) for s in seeds))
    runs: list[SegRun] = []
    models: dict[str, dict] = {}

    def run_one(c: Cell) -> dict:
        r = finetune_segmentation(ds, c, preset, protocol, archs.get(c.init), n_boot=n_boot, progress=progress, log=log)
        if save_models and (c.fraction, c.seed) == keep_model:
            models[c.init] = _model_blob(r, arch_of[c.init], ds.roi)
        runs.append(r)
        return r.row

    runs_df = pd.DataFrame(run_cells(grid(inits_r, fractions, seeds), run_one))
    cases_df = pd.DataFrame([c for r in runs for c in r.cases])
    curves = [c for r in runs for c in r.curves]
    if out is not None:
        cis = seed_case_cis(cases_df, ["init", "fraction"], "dice", n_boot=n_boot)
        summary = summarise_segmentation(runs_df).drop(columns=["dice_lo", "dice_hi"]).merge(
            cis.drop(columns=["dice", "n_seeds"]), on=["init", "fraction"], how="left")
        comps = comparisons(cases_df, ["fraction"], "dice", n_boot=n_boot)
        write_outputs(out, csv={"cases.csv": cases_df.to_dict("records"), "subsets.csv": subset_table(cases_df).to_dict("records"),
                                "runs.csv": runs_df.to_dict("records"), "curves.csv": curves,
                                "comparisons.csv": comps.to_dict("records")},
                      json={"summary.json": {"task": "segmentation", "source": ds.source, "phantom": ds.phantom,
                                             "preset": preset, "spacing_mm": ds.spacing, "roi": ds.roi, "steps": steps,
                                             "protocol": protocol.to_dict(), "data_seed": data_seed,
                                             "n_train": int(len(ds.split["train"])), "n_val": int(len(ds.split.get("val", []))),
                                             "n_test": int(len(ds.split["test"])), "inits": inits_r.specs,
                                             "test_patients": [str(ds.records[i]["patient_id"]) for i in ds.split["test"]],
                                             "models": {k: {"path": f"models/{k}.pt", "fraction": keep_model[0],
                                                            "seed": keep_model[1]} for k in models},
                                             "summary": summary.to_dict("records"), "runs": runs_df.to_dict("records"),
                                             "comparisons": comps.to_dict("records")}})
        from ..io import save_torch

        for name, blob in models.items():
            save_torch(blob, Path(out) / "models" / f"{name}.pt")
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
