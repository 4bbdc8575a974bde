"""The label-token study: LT-ViT against the [CLS] baseline, per init, on AUROC and on localisation of the findings.

For every init × head (``"label-tokens"``, ``"cls"``) × seed a multi-label classifier is trained
(:func:`smartlib.downstream.multilabel.fit_multilabel`) and scored on the same test cases:

* **AUROC** per label and its mean (:func:`~smartlib.downstream.multilabel.auroc_table`,
  :func:`~smartlib.downstream.multilabel.mean_auroc`); label tokens vs [CLS] for each init and label, and each init
  vs scratch for each head and label, paired on the test cases with Holm-adjusted p-values.
* **Localisation** of every positive test finding that has a mask: the label token's attention map
  (:meth:`~smartlib.models.label_tokens.LabelTokenViT.label_maps`), MONAI's ``GradCAM`` / ``GradCAMpp`` of the
  [CLS] model for that label, and the centre-prior / uniform maps, all scored by
  :func:`smartlib.downstream.attention.score_maps` (mass inside the mask — also as a lift over the mask's share
  of the image, the uniform map's mass — and the pointing game), compared case by case with Grad-CAM and with
  the centre prior (:func:`smartlib.downstream.stats.compare_arms`, Holm across the comparisons).

Backbones: ``"vit"`` (a MONAI ``ViT`` of :data:`VIT_ARCH`, 2D radiographs or 3D volumes; inits ``"scratch"``,
``"mae"`` — a masked autoencoder pretrained on this set's training images by :mod:`smartlib.mae` — or a ViT export
path) and ``"swin"`` (3D; the SMART Swin encoder with label tokens on its stages, this project's extension; inits
``"scratch"``, a pretraining variant such as ``"smart"`` / ``"smit"``, or an exported encoder, frozen by default).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..errors import SmartError
from ..models.label_tokens import HEADS
from .multilabel import MultiLabelData

__all__ = ["VIT_ARCH", "LT_LAYOUT", "MAE_EPOCHS", "SWIN_HEAD", "METHODS", "BACKBONES", "resolve_vit_init", "build_model", "cam_maps",
           "label_token_study", "auroc_wide", "localisation_wide"]

#: the ViT of each preset (LT-ViT used a ViT-B/16 at 224²; smoke / cpu are sized for a 2-core CPU). Scratch and MAE
#: inits share it, with the MAE's fixed sin-cos position embeddings (so widths divide by 2 · spatial_dims = 4 and 6)
VIT_ARCH: dict[str, dict[str, int]] = {
    "smoke": {"patch_size": 8, "hidden_size": 24, "mlp_dim": 48, "num_layers": 2, "num_heads": 2},
    "cpu": {"patch_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_layers": 3, "num_heads": 4},
    "paper": {"patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12},
}
#: where the label tokens enter (``label_blocks`` final blocks) and the depths whose tokens they see, per preset
LT_LAYOUT: dict[str, dict[str, Any]] = {
    "smoke": {"label_blocks": 1, "depths": (0, 1)},
    "cpu": {"label_blocks": 2, "depths": (0, 1)},
    "paper": {"label_blocks": 2, "depths": (6, 8, 10)},
}
#: epochs of the "mae" init's pretraining on the training images (smartlib.mae's own preset sizes the rest; cpu: 100 steps)
MAE_EPOCHS: dict[str, int] = {"smoke": 2, "cpu": 10, "long": 30, "paper": 300}
VIT_ARCH["long"], LT_LAYOUT["long"] = VIT_ARCH["cpu"], LT_LAYOUT["cpu"]  # the recorded run keeps the cpu networks
#: the new blocks of the Swin-stage variant
SWIN_HEAD: dict[str, int] = {"dim": 48, "depth": 2, "heads": 4}
#: the explanation maps scored, then the two maps that never look at the image
METHODS: tuple[str, ...] = ("label tokens", "Grad-CAM", "Grad-CAM++", "centre prior", "uniform")
BACKBONES: tuple[str, ...] = ("vit", "swin")


def _vit(arch: Mapping[str, int], dims: int, img_size: int) -> nn.Module:
    from monai.networks.nets import ViT

    if img_size % arch["patch_size"]:
        raise SmartError(f"image size {img_size} is not a multiple of the ViT patch {arch['patch_size']}")
    return ViT(in_channels=1, img_size=img_size, patch_size=arch["patch_size"], hidden_size=arch["hidden_size"],
               mlp_dim=arch["mlp_dim"], num_layers=arch["num_layers"], num_heads=arch["num_heads"], proj_type="conv",
               pos_embed_type="sincos", classification=False, spatial_dims=dims, qkv_bias=True)


def resolve_vit_init(init: str, ds: MultiLabelData, preset: str, runs_dir: str | os.PathLike,
                     log: Callable[[str], None] = print) -> str:
    """``"scratch"`` stays; ``"mae"`` becomes a masked autoencoder pretrained on ``ds``'s training images (once, under
    ``runs_dir/pretrain/``); anything else must be a ViT export that :func:`smartlib.models.vit.load_vit` reads."""
    if init == "scratch":
        return init
    if init == "mae":
        from ..mae import mae_config, pretrain_mae

        import hashlib
        import json

        size = ds.prep["size2d"] if ds.dims == 2 else ds.prep["roi"]
        cfg = mae_config(preset, "mae", spatial_dims=ds.dims, img_size=size, epochs=MAE_EPOCHS[preset], **VIT_ARCH[preset])
        key = hashlib.sha256(json.dumps([cfg.to_dict(), ds.source], sort_keys=True).encode()).hexdigest()[:10]
        out = Path(runs_dir) / "pretrain" / f"mae-findings{ds.dims}d-{key}"  # one folder per config and data
        log(f"mae: a masked autoencoder on the {len(ds.split['train'])} training images → {out}")
        return str(pretrain_mae(ds.images[ds.split["train"]], cfg, out, log=log))
    if not Path(init).is_file():
        raise SmartError(f"{init}: ViT init not found (expected 'scratch', 'mae' or a ViT export .pt)")
    from ..models.vit import load_vit

    with torch.random.fork_rng(devices=[]):
        load_vit(init)  # strict: a file that does not fit fails here, before any training
    return init


def build_model(backbone: str, head: str, init: str, n_labels: int, preset: str, dims: int, img_size: int, seed: int = 0,
                freeze_encoder: bool = True) -> nn.Module:
    """A fresh model: ``backbone`` (vit / swin) from ``init`` (resolved: ``"scratch"`` or a path) with ``head``.

    Scratch backbones draw from the ``"scratch"`` stream of ``seed`` (:func:`smartlib.seed.stream_seed`); the new
    head parameters from ``seed`` itself.
    """
    from ..models.label_tokens import ClsViT, LabelTokenSwin, LabelTokenViT
    from ..seed import seed_everything, stream_seed

    if head not in HEADS:
        raise SmartError(f"head={head!r}: expected one of {', '.join(HEADS)}")
    if backbone == "vit":
        if init == "scratch":
            seed_everything(stream_seed(seed, "scratch"))
            vit = _vit(VIT_ARCH[preset], dims, img_size)
        else:
            from ..models.vit import load_vit

            vit = load_vit(init)
            if vit.patch_embedding.n_patches != (img_size // vit.patch_embedding.patch_embeddings.kernel_size[0]) ** dims:
                raise SmartError(f"{init}: a ViT for other images than {dims}-D {img_size}-pixel ones")
        seed_everything(seed)
        if head == "cls":
            return ClsViT(vit, n_labels)
        lay = LT_LAYOUT[preset]
        blocks = min(lay["label_blocks"], len(vit.blocks))
        start = len(vit.blocks) - blocks
        return LabelTokenViT(vit, n_labels, blocks, [d for d in lay["depths"] if d <= start] + [start])
    if backbone == "swin":
        from .features import load_init

        if dims != 3:
            raise SmartError("backbone 'swin' is the 3-D SMART encoder: use dims=3")
        net = load_init(init, preset, img_size, seed=seed)
        if net.a.arch != "swin":
            raise SmartError(f"{init}: a {net.a.arch} encoder; the stage variant needs a Swin")
        seed_everything(seed)
        return LabelTokenSwin(net.encoder, n_labels, img_size, mode="label" if head == "label-tokens" else "cls",
                              freeze_encoder=freeze_encoder, **SWIN_HEAD)
    raise SmartError(f"backbone={backbone!r}: expected one of {', '.join(BACKBONES)}")


class _Flat(nn.Module):
    """Cached Swin stage features packed into one (B, F) tensor, so MONAI's CAM (which calls ``model(x)``) can run on
    them without running the frozen encoder again."""

    def __init__(self, model: nn.Module, shapes: Sequence[tuple[int, ...]]) -> None:
        super().__init__()
        self.model, self.shapes = model, [tuple(s) for s in shapes]

    @staticmethod
    def pack(feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([f.flatten(1) for f in feats], dim=1)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        parts, i = [], 0
        for s in self.shapes:
            k = int(np.prod(s))
            parts.append(flat[:, i:i + k].reshape(len(flat), *s))
            i += k
        return self.model.forward_stages(parts)


def cam_maps(model: nn.Module, x: torch.Tensor, label: int, method: str = "Grad-CAM", batch_size: int = 16) -> torch.Tensor:
    """MONAI ``GradCAM`` / ``GradCAMpp`` of ``label`` on a [CLS] model's ``to_grid`` layer: x (B, ...) → (B, *grid),
    the raw map before upsampling (the same grid as the label-token maps).

    Grad-CAM++ runs one image at a time: MONAI's ``GradCAMpp`` multiplies the (B,) class scores into the (B, C, *grid)
    gradients without aligning the batch axis, which is only right for a batch of one.
    """
    from monai.visualize import GradCAM, GradCAMpp

    cls = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMpp}.get(method)
    if cls is None:
        raise SmartError(f"method={method!r}: expected Grad-CAM or Grad-CAM++")
    if cls is GradCAMpp:
        batch_size = 1
    target = "model.to_grid" if isinstance(model, _Flat) else "to_grid"
    cam = cls(nn_module=model, target_layers=target)
    out = [cam.compute_map(x[i:i + batch_size], class_idx=label)[:, 0].detach() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _long_rows(ds: MultiLabelData, te: np.ndarray, probs: np.ndarray, base: dict) -> list[dict]:
    return [{**base, "label": name, "case": int(c), "patient_id": ds.patients[i], "y": ds.labels[i, k], "score": float(probs[c, k])}
            for k, name in enumerate(ds.label_names) for c, i in enumerate(te)]


def _score(maps: torch.Tensor, masks: torch.Tensor, base: dict, cases: Sequence[int], label: str) -> list[dict]:
    from .attention import chance_hit_rate, score_maps

    unit = masks.shape[-1] // maps.shape[-1]
    r = score_maps(maps.float(), masks.float(), unit)
    share = (masks > 0).float().flatten(1).mean(1)
    chance = chance_hit_rate(masks.float(), maps.shape[-1], unit)
    return [{**base, "label": label, "case": f"{c}:{label}", "mass": float(r["mass"][j]), "mass_lift": float(r["mass"][j] / share[j]),
             "hit": float(r["hit"][j]), "chance_hit": float(chance[j]), "mask_share": float(share[j])} for j, c in enumerate(cases)]


def label_token_study(inits: Mapping[str, str] | Sequence[str] | str, *, dims: int = 2, backbone: str | None = None,
                      heads: Sequence[str] = HEADS, preset: str = "cpu", runs_dir: str | os.PathLike = "runs",
                      out: str | os.PathLike | None = None, data: str | os.PathLike | None = None, seeds: Sequence[int] = (0,),
                      epochs: int = 10, batch_size: int = 32, lr: float = 3e-4, head_lr: float = 1e-3, n_boot: int = 1000,
                      labels: Sequence[str] | None = None, policy: str = "U-Ones", n: int | None = None, data_seed: int = 0,
                      roi: int | None = None, spacing: float | None | str = "default",
                      cams: Sequence[str] = ("Grad-CAM", "Grad-CAM++"), freeze_encoder: bool = True,
                      dataset: MultiLabelData | None = None, n_gallery: int = 4, pixel_control: bool = True,
                      log: Callable[[str], None] = print,
                      progress: bool = False) -> dict[str, Any]:
    """Train and score every init × head × seed; returns tables (DataFrames) and a gallery, and writes them to ``out``.

    ``pixel_control`` adds the rows ``init="pixels", head="linear probe"`` to the AUROC tables: a logistic regression
    on the raw pixels (:func:`~smartlib.downstream.multilabel.pixel_probe`), which shows whether the findings can be
    learned from these images at all — the reference that says whether a network near chance is the scale's fault.

    Returns a dict with ``runs``, ``auroc`` (per label), ``mean_auroc``, ``head_comparisons`` (label tokens vs
    [CLS]), ``init_comparisons`` (each init vs scratch, SMART vs SMIT), ``localisation`` (per method × init × label and
    ``label="all"``), ``localisation_cases``, ``localisation_comparisons``, ``curves``, ``gallery`` (images, masks and
    maps of a few test findings for :func:`smartlib.plots.label_tokens.map_gallery`) and ``info``. With ``out``:
    ``runs.csv``, ``predictions.csv``, ``auroc.csv``, ``mean_auroc.csv``, ``head_comparisons.csv``,
    ``init_comparisons.csv``, ``localisation.csv``, ``localisation_cases.csv``, ``localisation_comparisons.csv``,
    ``curves.csv``, ``summary.json`` — all written atomically after every run has finished.
    """
    import pandas as pd

    from .attention import baseline_maps
    from .features import resolve_init
    from .multilabel import (auroc_table, fit_multilabel, load_multilabel, mean_auroc, paired_label_comparisons, pixel_probe,
                             predict)
    from .study import as_inits, comparisons, write_outputs

    backbone = backbone or ("vit" if dims == 2 else "swin")
    bad = [h for h in heads if h not in HEADS]
    if bad or not heads:
        raise SmartError(f"heads {list(heads)}: expected some of {', '.join(HEADS)}")
    if backbone not in BACKBONES or (backbone == "swin" and dims != 3):
        raise SmartError(f"backbone={backbone!r} with dims={dims}: expected vit (2-D or 3-D) or swin (3-D)")
    bad = [c for c in cams if c not in METHODS[1:3]]
    if bad:
        raise SmartError(f"cams {list(cams)}: expected some of Grad-CAM, Grad-CAM++")
    if preset not in VIT_ARCH:
        raise SmartError(f"preset {preset!r}: expected one of {', '.join(VIT_ARCH)}")
    specs = as_inits(inits)
    if backbone == "swin":  # resolve every init before any data is read: a bad checkpoint fails first
        paths = {k: resolve_init(v, preset, runs_dir, log=log) for k, v in specs.items()}
    ds = dataset or load_multilabel(data, dims, preset, runs_dir, n=n, data_seed=data_seed, labels=labels, policy=policy,
                                    roi=roi, spacing=spacing)
    if ds.dims != dims:
        raise SmartError(f"dataset holds {ds.dims}-D images, the study was asked for dims={dims}")
    if backbone == "vit":
        paths = {k: resolve_vit_init(v, ds, preset, runs_dir, log=log) for k, v in specs.items()}
    size = ds.prep["size2d"] if dims == 2 else ds.prep["roi"]
    tr, va, te = ds.split["train"], ds.split["val"], ds.split["test"]
    K = len(ds.label_names)
    long, runs, curves, loc = [], [], [], []
    feats: dict[tuple[str, int], list[torch.Tensor]] = {}
    gallery: dict[str, Any] = {}
    grid_edge: int | None = None
    x_test = ds.images[te]
    m_test = ds.masks[te] if ds.masks is not None else None
    pos = {k: [c for c in range(len(te)) if ds.labels[te[c], k] == 1 and m_test is not None and bool(m_test[c, k].any())]
           for k in range(K)}

    for name, path in paths.items():
        for head in heads:
            for seed in seeds:
                t0 = time.time()
                model = build_model(backbone, head, path, K, preset, dims, size, seed, freeze_encoder)
                cached = backbone == "swin" and freeze_encoder
                if cached:
                    key = (name, seed if path == "scratch" else 0)  # every scratch seed is its own random encoder
                    if key not in feats:
                        with torch.no_grad():
                            model.eval()
                            feats[key] = [torch.cat(p) for p in zip(*(model.stage_features(ds.images[i:i + 16])
                                                                       for i in range(0, len(ds.images), 16)))]
                    inputs, forward = feats[key], model.forward_stages
                else:
                    inputs, forward = ds.images, model
                take = (lambda idx: [f[idx] for f in inputs]) if cached else (lambda idx: inputs[idx])
                fit = fit_multilabel(model, forward, take(tr), ds.labels[tr], take(va) if len(va) else None,
                                     ds.labels[va] if len(va) else None, epochs=epochs, batch_size=batch_size, lr=lr,
                                     head_lr=head_lr, seed=seed, progress=progress)
                probs = predict(model, forward, take(te), batch_size)
                base = {"init": name, "head": head, "seed": int(seed)}
                long += _long_rows(ds, te, probs, base)
                curves += [{**base, **h} for h in fit.history]
                sel = fit.history[fit.epoch - 1]
                runs.append({**base, "epoch": fit.epoch, "val_score": sel.get("val_score", float("nan")),
                             "val_metric": sel.get("val_metric", ""), "n_train": len(tr), "n_val": len(va), "n_test": len(te),
                             "seconds": round(time.time() - t0, 2)})
                if m_test is not None:
                    if head == "label-tokens":
                        lm = model.label_maps(feats=take(te)) if cached else model.label_maps(x_test)
                        per = {"label tokens": {k: lm[pos[k], k] for k in range(K) if pos[k]}}
                    else:
                        net, xin = (_Flat(model, [f.shape[1:] for f in inputs]), _Flat.pack(take(te))) if cached else (model, x_test)
                        per = {m: {k: cam_maps(net, xin[pos[k]], k, m) for k in range(K) if pos[k]} for m in cams}
                    for method, maps in per.items():
                        for k, mp in maps.items():
                            grid_edge = mp.shape[-1]
                            loc += _score(mp, m_test[pos[k], k], {"init": name, "method": method, "seed": int(seed)}, pos[k],
                                          ds.label_names[k])
                            if seed == seeds[0] and name == next(iter(paths)):
                                gallery.setdefault(method, {})[k] = mp
                log(f"{name} {head} seed={seed}: epoch {fit.epoch}, val {sel.get('val_metric', '')} "
                    f"{sel.get('val_score', float('nan')):.3f} ({runs[-1]['seconds']:.1f} s)")

    if pixel_control:  # is the signal in the images at all? a linear model on the pixels, beside the networks
        long += _long_rows(ds, te, pixel_probe(ds, seed=data_seed), {"init": "pixels", "head": "linear probe", "seed": 0})
    long_df = pd.DataFrame(long)
    auroc = auroc_table(long_df, ("init", "head"), n_boot=n_boot, seed=data_seed)
    means = mean_auroc(long_df, ("init", "head"), n_boot=n_boot, seed=data_seed)
    head_comp = paired_label_comparisons(long_df, "head", "cls", ["init"], n_boot=n_boot, seed=data_seed)
    known = long_df.dropna(subset=["y"])
    counts = known.groupby(["head", "label", "init", "seed"])["y"]
    known = known[(counts.transform("sum") >= 2) & (counts.transform("count") - counts.transform("sum") >= 2)]
    init_comp = comparisons(known, ["head", "label"], "auc", n_boot=n_boot) if len(paths) > 1 else pd.DataFrame()
    if grid_edge is not None:  # the maps that never look at the image, on the same grid and cases
        for name in paths:
            for k in range(K):
                for method, mp in (baseline_maps(len(pos[k]), grid_edge, dims).items() if pos[k] else ()):
                    loc += _score(mp, m_test[pos[k], k], {"init": name, "method": method, "seed": 0}, pos[k], ds.label_names[k])
    loc_cases = pd.DataFrame(loc)
    loc_table, loc_comp = _localisation_tables(loc_cases, cams, n_boot, data_seed)
    info = {"source": ds.source, "phantom": ds.phantom, "preset": preset, "dims": dims, "backbone": backbone,
            "labels": list(ds.label_names), "policy": ds.policy, "inits": specs, "heads": list(heads), "seeds": list(seeds),
            "epochs": epochs, "n_boot": n_boot, "n_train": len(tr), "n_val": len(va), "n_test": len(te), "prep": ds.prep,
            "freeze_encoder": bool(freeze_encoder) if backbone == "swin" else None,
            "train_positives": {name: int(np.nansum(ds.labels[tr, k] == 1)) for k, name in enumerate(ds.label_names)},
            "test_positives": {name: int(np.nansum(ds.labels[te, k] == 1)) for k, name in enumerate(ds.label_names)},
            "architecture": VIT_ARCH[preset] if backbone == "vit" else SWIN_HEAD,
            "layout": LT_LAYOUT[preset] if backbone == "vit" else {"stages": [2, 3, 4]}}
    res = {"runs": pd.DataFrame(runs), "auroc": auroc, "mean_auroc": means, "head_comparisons": head_comp,
           "init_comparisons": init_comp, "localisation": loc_table, "localisation_cases": loc_cases,
           "localisation_comparisons": loc_comp, "curves": pd.DataFrame(curves), "info": info,
           "gallery": _gallery(ds, te, pos, gallery, n_gallery)}
    write_outputs(out, csv={"runs.csv": runs, "predictions.csv": long, "auroc.csv": auroc.to_dict("records"),
                            "mean_auroc.csv": means.to_dict("records"), "head_comparisons.csv": head_comp.to_dict("records"),
                            "init_comparisons.csv": init_comp.to_dict("records"), "localisation.csv": loc_table.to_dict("records"),
                            "localisation_cases.csv": loc_cases.to_dict("records"),
                            "localisation_comparisons.csv": loc_comp.to_dict("records"), "curves.csv": curves},
                  json={"summary.json": {**info, "auroc": auroc.to_dict("records"), "mean_auroc": means.to_dict("records"),
                                         "head_comparisons": head_comp.to_dict("records"),
                                         "init_comparisons": init_comp.to_dict("records"),
                                         "localisation": loc_table.to_dict("records"),
                                         "localisation_comparisons": loc_comp.to_dict("records"), "runs": runs}})
    return res


def _localisation_tables(cases: "pd.DataFrame", cams: Sequence[str], n_boot: int, seed: int) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Summary per init × method × label (and ``label="all"``), and the per-case comparisons: every method vs the
    centre prior, label tokens vs Grad-CAM, on ``hit`` and ``mass_lift``, Holm across all rows."""
    import pandas as pd

    from .stats import compare_arms, holm

    if cases.empty:
        return pd.DataFrame(), pd.DataFrame()
    rows = []
    for (init, method), g in cases.groupby(["init", "method"], sort=False):
        for label, gl in [*g.groupby("label", sort=False), ("all", g)]:
            rows.append({"init": init, "method": method, "label": label, "n_seeds": int(gl["seed"].nunique()),
                         "n_cases": int(gl["case"].nunique()), "mass": float(gl["mass"].mean()),
                         "mass_lift": float(gl["mass_lift"].mean()), "hit_rate": float(gl["hit"].mean()),
                         "chance_hit": float(gl["chance_hit"].mean()), "mask_share": float(gl["mask_share"].mean())})
    parts = []
    for init, g in cases.groupby("init", sort=False):
        present = set(g["method"])
        for metric in ("hit", "mass_lift"):
            arms = [m for m in ("label tokens", *cams) if m in present]
            if "centre prior" in present and arms:
                parts.append(compare_arms(g, "method", "centre prior", metric, arms=arms, n_boot=n_boot, seed=seed).assign(init=init))
            if "Grad-CAM" in present and "label tokens" in present:
                parts.append(compare_arms(g, "method", "Grad-CAM", metric, arms=["label tokens"], n_boot=n_boot,
                                          seed=seed).assign(init=init))
    comp = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(comp):
        comp["p_holm"] = holm(comp["p"].to_numpy(dtype=float))
        comp = comp[["init", *[c for c in comp.columns if c != "init"]]]
    return pd.DataFrame(rows), comp


def _gallery(ds: MultiLabelData, te: np.ndarray, pos: dict[int, list[int]], maps: dict, n: int) -> dict[str, Any]:
    """Up to ``n`` test findings (one per label first): image, mask and each method's map (first init, first seed)."""
    picks: list[tuple[int, int]] = []
    for k in range(len(ds.label_names)):
        if pos[k] and len(picks) < n and all(m in maps and k in maps[m] for m in maps):
            picks.append((k, 0))
    if not picks or ds.masks is None:
        return {}
    return {"labels": [ds.label_names[k] for k, _ in picks],
            "images": np.stack([ds.images[te[pos[k][j]], 0].numpy() for k, j in picks]),
            "masks": np.stack([ds.masks[te[pos[k][j]], k].numpy() for k, j in picks]),
            "maps": {m: np.stack([maps[m][k][j].numpy() for k, j in picks]) for m in maps}}


def auroc_wide(auroc: "pd.DataFrame") -> "pd.DataFrame":
    """The closing table: one row per label, one column per init × head, each ``AUROC [lo, hi]`` (or the reason it
    is undefined), from :func:`~smartlib.downstream.multilabel.auroc_table` output."""
    import pandas as pd

    def cell(r) -> str:
        return r["note"] if not np.isfinite(r["auc"]) else f"{r['auc']:.3f} [{r['auc_lo']:.2f}, {r['auc_hi']:.2f}]"

    t = auroc.assign(value=auroc.apply(cell, axis=1), column=auroc["init"] + " / " + auroc["head"])
    out = t.pivot(index="label", columns="column", values="value").reindex(list(dict.fromkeys(auroc["label"])))
    return out[list(dict.fromkeys(t["column"]))] if len(out) else pd.DataFrame()


def localisation_wide(loc: "pd.DataFrame", label: str = "all") -> "pd.DataFrame":
    """One row per method, one column pair per init: pointing-game hit rate and mass lift (× uniform) on ``label``'s
    findings (``"all"``: every positive test finding), with ``n`` = seeds × findings."""
    import pandas as pd

    if loc.empty:
        return pd.DataFrame()
    sub = loc[loc["label"] == label]
    rows = []
    for method, g in sub.groupby("method", sort=False):
        row = {"method": method}
        for _, r in g.iterrows():
            row[f"{r['init']}: hit"] = round(r["hit_rate"], 3)
            row[f"{r['init']}: mass × uniform"] = round(r["mass_lift"], 2)
            row[f"{r['init']}: n"] = f"{int(r['n_seeds'])} × {int(r['n_cases'])}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
