"""Attention analyses: [CLS] attention maps, lesion localisation, and attention-distance entropy.

**[CLS] attention** (:func:`cls_attention`): the head-averaged [CLS]→token attention of the last
semantic-attention block, one weight per 16³-voxel mask unit ((B, g, g, g), g = S / 16). A model
without semantic attention (SMIT-style, ``noise_no_sa``) has no [CLS] query; for it the map is a
parameter-free proxy: ``softmax_k(⟨t̄, t_k⟩ / √C)`` with ``t̄`` the mean token (the [CLS] such a model
uses) and ``t_k`` the unit tokens — documented as such wherever it is shown.

**Localisation** against a lesion mask (S, S, S) — or, for a radiograph, (S, S) with a (g, g) map: every scorer
below works in 2-D as in 3-D (bilinear instead of trilinear, squares instead of cubes):

* :func:`attention_mass_in_mask` — the unit map is upsampled to voxels (trilinear, ``align_corners=False``),
  clipped at 0 and normalised to sum 1; the score is the mass on lesion voxels.
* :func:`pointing_game` — hit when the centre voxel of the arg-max *unit* lies inside the lesion
  dilated by ``tolerance`` voxels (a cube, Chebyshev distance; max-pooling the mask). The default
  tolerance of half a unit (8 voxels) is the one-unit tolerance of a map whose resolution is one unit:
  it is a hit exactly when the arg-max unit's 16³ box touches the lesion. With ``ties="mean"`` (what
  :func:`score_maps` uses) a map with several arg-max units scores the expected hit of a uniformly random
  pick among them, so a flat map scores exactly :func:`chance_hit_rate`.

**Baselines** (:func:`baseline_maps`), unit maps scored by the same :func:`score_maps` as the encoders':

* **centre prior** — an isotropic Gaussian over the unit grid, peaked at the crop centre, σ = one unit
  (16 voxels): ``w_k ∝ exp(−‖u_k − c‖² / 2)`` with ``u_k`` the unit index and ``c = (g − 1) / 2`` per axis.
  It is what a map that ignores the image and looks at the middle scores; on an even grid the 2³ central
  units tie, so its pointing score is the share of them touching the lesion. On centred lesions it wins
  the pointing game; on lesions at random offsets it falls to about chance.
* **uniform** — every unit ``1 / g³``: its mass in the lesion is the lesion's share of the crop and its
  pointing score the chance hit rate.

The attention study runs on the ``localisation`` task (:data:`smartlib.tasks.TASKS`): nodules at random
offsets in crops of the pretraining size at the pretraining spacing, so no resampling happens between
pretraining and scoring.

**Attention distance** (:class:`AttentionDistances`): forward hooks on every MONAI ``WindowAttention``
of the Swin encoder recompute the attention probabilities from the hook's input exactly as MONAI's
forward does (``softmax(q·kᵀ·scale + relative-position bias [+ shift mask])``; MONAI does not return
them). For each query q of each window, the attention distance is ``d(q) = Σ_k attn(q, k)·‖p(q) − p(k)‖``
with p the token position in voxels (token pitch 2, 4, 8, 16 voxels in stages 1–4, window geometry
from MONAI's ``get_window_size``). Key positions wrapped around by the cyclic shift are masked by
MONAI (−100 before the softmax), so they carry no weight. Per stage and head, all ``d(q)`` of all
blocks, windows and images are pooled; the **entropy** is the Shannon entropy (nats) of their histogram
with ``bins`` equal bins on [0, the largest distance inside a window of that stage], and the **mean
distance** is reported beside it.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SmartError
from ..models.smart import UNIT

__all__ = ["cls_attention", "upsample_attention", "attention_mass_in_mask", "pointing_game", "localisation", "chance_hit_rate",
           "centre_prior", "uniform_map", "baseline_maps", "score_maps", "BASELINES", "attention_study",
           "window_attention_probs", "window_distances", "AttentionDistances", "attention_distance_entropy", "histogram_entropy"]

#: the reference maps scored beside every encoder (rows of the localisation table)
BASELINES: tuple[str, ...] = ("centre prior", "uniform")


@torch.no_grad()
def cls_attention(net: torch.nn.Module, images: torch.Tensor, batch_size: int = 4) -> tuple[torch.Tensor, bool]:
    """[CLS] attention per mask unit: images (B, 1, S, S, S) → ((B, g, g, g), is_proxy).

    ``is_proxy`` is True when the model has no semantic attention and the mean-token proxy was used.
    """
    net.eval()
    g = net.grid
    maps, proxy = [], False
    for i in range(0, len(images), batch_size):
        out = net.encode(images[i:i + batch_size])
        a = out["attn"]
        if a is None:
            proxy = True
            t = out["tokens"]
            a = torch.softmax((t * t.mean(dim=1, keepdim=True)).sum(-1) / math.sqrt(t.shape[-1]), dim=1)
        maps.append(a.float().reshape(-1, g, g, g))
    return torch.cat(maps), proxy


def upsample_attention(attn: torch.Tensor, size: int | tuple[int, ...]) -> torch.Tensor:
    """Unit map (B, g, g, g) → voxel map (B, S, S, S): trilinear, clipped at 0, each map summing to 1.

    A 2-D map (B, g, g) becomes (B, S, S) the same way (bilinear); an int ``size`` is repeated per spatial axis.
    """
    d = attn.ndim - 1
    size = (size,) * d if isinstance(size, int) else tuple(size)
    mode = {2: "bilinear", 3: "trilinear"}.get(d)
    if mode is None or len(size) != d:
        raise SmartError(f"attn {tuple(attn.shape)} to size {size}: expected (B, g, g) or (B, g, g, g) and as many sizes")
    v = F.interpolate(attn[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0].clamp_min(0)
    dims = tuple(range(1, d + 1))
    return v / v.sum(dim=dims, keepdim=True).clamp_min(1e-12)


def attention_mass_in_mask(attn_vox: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of attention on lesion voxels: attn_vox (B, S, S, S) normalised or not, mask (B, S, S, S) → (B,)
    (or (B, S, S) maps and masks of 2-D images)."""
    a = attn_vox.float()
    dims = tuple(range(1, a.ndim))
    return (a * (mask > 0)).sum(dim=dims) / a.sum(dim=dims).clamp_min(1e-12)


def _dilate(mask: torch.Tensor, tol: int) -> torch.Tensor:
    """Binary dilation of mask (B, S, S, S) (or (B, S, S)) by a (2·tol + 1)-edge cube (square), as separable 1-D
    max-pools."""
    m = (mask > 0).float()[:, None]
    d = mask.ndim - 1
    pool = F.max_pool3d if d == 3 else F.max_pool2d
    for ax in range(d):
        k = tuple(2 * tol + 1 if i == ax else 1 for i in range(d))
        if tol > 0:
            m = pool(m, kernel_size=k, stride=1, padding=tuple(v // 2 for v in k))
    return m[:, 0] > 0


def _unit_centres(g: int, unit: int, d: int = 3) -> torch.Tensor:
    """Voxel index of each unit centre of a g^d grid, C order: (g^d, d)."""
    ii = torch.arange(g ** d)
    return torch.stack([(ii // g ** (d - 1 - a)) % g for a in range(d)], dim=1) * unit + unit // 2


def pointing_game(attn: torch.Tensor, mask: torch.Tensor, unit: int = UNIT, tolerance: int | None = None,
                  ties: str = "first") -> torch.Tensor:
    """Pointing-game hits of ``attn`` (B, g, g, g) against ``mask`` (B, S, S, S), S = g·unit.

    The arg-max unit's centre voxel must lie in the mask dilated by ``tolerance`` voxels (default unit // 2).
    ``ties="first"``: the first arg-max unit in C order, (B,) bool. ``ties="mean"``: the mean hit over all
    units within a relative 1e-6 of the maximum (the expected hit of a random pick among tied units), (B,) float.
    """
    if ties not in ("first", "mean"):
        raise SmartError(f"ties={ties!r}: expected 'first' or 'mean'")
    if attn.ndim not in (3, 4) or mask.ndim != attn.ndim or len(attn) != len(mask):
        raise SmartError(f"attn {tuple(attn.shape)} and mask {tuple(mask.shape)}: expected (B, g, g, g) and (B, S, S, S) "
                         "(or (B, g, g) and (B, S, S))")
    b, g, d = attn.shape[0], attn.shape[1], attn.ndim - 1
    if tuple(mask.shape[1:]) != (g * unit,) * d:
        raise SmartError(f"mask shape {tuple(mask.shape)}: expected (B, {', '.join([str(g * unit)] * d)}) for a {g}^{d} unit map")
    tol = unit // 2 if tolerance is None else int(tolerance)
    dil = _dilate(mask, tol)
    c = _unit_centres(g, unit, d)
    flat = attn.reshape(b, -1).float()
    if ties == "first":
        idx = c[flat.argmax(dim=1)]
        return dil[(torch.arange(b), *idx.T)]
    top = flat.max(dim=1, keepdim=True).values
    tied = flat >= top - 1e-6 * top.abs()
    inside = dil[(slice(None), *c.T)]  # (B, g^d): unit centre in the dilated lesion
    return (tied & inside).sum(dim=1).float() / tied.sum(dim=1).float()


def chance_hit_rate(mask: torch.Tensor, g: int, unit: int = UNIT, tolerance: int | None = None) -> torch.Tensor:
    """Expected pointing-game hit of a uniformly random unit: the share of the g³ unit centres inside the
    dilated mask. mask (B, S, S, S) or (B, S, S) → (B,)."""
    tol = unit // 2 if tolerance is None else int(tolerance)
    dil = _dilate(mask, tol)
    c = _unit_centres(g, unit, mask.ndim - 1)
    return dil[(slice(None), *c.T)].float().mean(dim=1)


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise SmartError(f"spatial_dims={spatial_dims!r}: expected 2 or 3")
    return int(spatial_dims)


def _check_grid(g: int) -> int:
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
        raise SmartError(f"g={g!r}: the unit grid edge must be a positive integer")
    return int(g)


def centre_prior(g: int, sigma_units: float = 1.0, spatial_dims: int = 3) -> torch.Tensor:
    """Centre-prior unit map (g, g, g), summing to 1: ``exp(−‖u − (g − 1)/2‖² / (2σ²))`` over unit indices u.

    The default σ of one unit (16 voxels) puts 39 % of a 4³ grid's weight (35 % of an 8³ grid's) on its 2³
    central units. ``spatial_dims=2``: the same Gaussian on a (g, g) grid.
    """
    g, d = _check_grid(g), _check_dims(spatial_dims)
    if not (isinstance(sigma_units, (int, float, np.floating)) and math.isfinite(sigma_units) and sigma_units > 0):
        raise SmartError(f"sigma_units={sigma_units!r}: must be a positive number")
    u = torch.arange(g, dtype=torch.float64) - (g - 1) / 2.0
    d2 = sum(u.reshape([-1 if i == a else 1 for i in range(d)]) ** 2 for a in range(d))
    w = torch.exp(-d2 / (2.0 * float(sigma_units) ** 2))
    return (w / w.sum()).float()


def uniform_map(g: int, spatial_dims: int = 3) -> torch.Tensor:
    """Uniform unit map (g, g, g): every unit ``1 / g³`` (``spatial_dims=2``: (g, g), every unit ``1 / g²``)."""
    g, d = _check_grid(g), _check_dims(spatial_dims)
    return torch.full((g,) * d, 1.0 / g ** d)


def baseline_maps(n: int, g: int, spatial_dims: int = 3) -> dict[str, torch.Tensor]:
    """The :data:`BASELINES` as unit maps for n cases: name → (n, g, g, g) (or (n, g, g))."""
    shape = (n,) + (g,) * _check_dims(spatial_dims)
    return {"centre prior": centre_prior(g, spatial_dims=spatial_dims).expand(*shape).clone(),
            "uniform": uniform_map(g, spatial_dims).expand(*shape).clone()}


def score_maps(attn: torch.Tensor, masks: torch.Tensor, unit: int = UNIT) -> dict[str, torch.Tensor]:
    """Localisation scores of unit maps ``attn`` (B, g, g, g) against lesion masks (B, S, S, S), S = g·unit.

    The one scorer of encoders and baselines alike: ``attn_vox`` (B, S, S, S) from :func:`upsample_attention`,
    ``mass`` (B,) from :func:`attention_mass_in_mask`, ``hit`` (B,) float from :func:`pointing_game` with
    ``ties="mean"``. 2-D maps (B, g, g) against masks (B, S, S) are scored the same way.
    """
    vox = upsample_attention(attn, tuple(masks.shape[1:]))
    return {"attn_vox": vox, "mass": attention_mass_in_mask(vox, masks),
            "hit": pointing_game(attn, masks, unit, ties="mean")}


def localisation(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> dict:
    """[CLS] maps and localisation scores of images (B, 1, S, S, S) with lesion masks (B, 1, S, S, S).

    Returns ``attn`` (B, g, g, g), ``attn_vox`` (B, S, S, S), ``mass`` (B,), ``hit`` (B,) float (see
    :func:`score_maps`), ``proxy`` (bool).
    """
    attn, proxy = cls_attention(net, images)
    return {"attn": attn, **score_maps(attn, masks[:, 0]), "proxy": proxy}


def histogram_entropy(values: np.ndarray, bins: int, upper: float) -> float:
    """Shannon entropy (nats) of the histogram of ``values`` with ``bins`` equal bins on [0, upper]."""
    counts, _ = np.histogram(np.clip(values, 0, upper), bins=bins, range=(0.0, upper))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum()) if counts.sum() else float("nan")


class AttentionDistances(contextlib.AbstractContextManager):
    """Collect per-query attention distances of every head of every Swin block while active.

    Usage: ``with AttentionDistances(net.encoder) as rec: net.encode(x)``; then ``rec.values[(stage, head)]`` is a
    list of 1-D arrays of d(q) in voxels and ``rec.max_distance[stage]`` the largest in-window distance.
    """

    def __init__(self, encoder: torch.nn.Module, patch: int = 2) -> None:
        from monai.networks.nets.swin_unetr import SwinTransformerBlock

        self.values: dict[tuple[int, int], list[np.ndarray]] = {}
        self.max_distance: dict[int, float] = {}
        self._handles = []
        self._blocks = []
        for s in range(1, 5):
            layer = getattr(encoder, f"layers{s}", None)
            if layer is None:
                raise SmartError("attention distances need a MONAI Swin encoder (layers1..layers4)")
            for blk in layer[0].blocks:
                if isinstance(blk, SwinTransformerBlock):
                    self._blocks.append((s, blk, patch * 2 ** (s - 1)))

    def __enter__(self) -> "AttentionDistances":
        from monai.networks.nets.swin_unetr import get_window_size

        for stage, blk, pitch in self._blocks:
            state: dict = {}

            def pre(module, args, state=state):
                x = args[0]
                state["ws"] = get_window_size(tuple(x.shape[1:4]), module.window_size, module.shift_size)[0]

            def hook(module, args, kwargs, output, stage=stage, pitch=pitch, state=state):
                mask = args[1] if len(args) > 1 else kwargs.get("mask")
                self._record(module, args[0], mask, state["ws"], stage, pitch)

            self._handles.append(blk.register_forward_pre_hook(pre))
            self._handles.append(blk.attn.register_forward_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @torch.no_grad()
    def _record(self, attn_mod, x: torch.Tensor, mask: torch.Tensor | None, ws: tuple[int, ...], stage: int, pitch: int) -> None:
        a = window_attention_probs(attn_mod, x, mask)  # (b, h, n, n)
        dist = window_distances(ws, pitch)
        if dist.shape[0] != a.shape[-1]:
            raise SmartError(f"window of {a.shape[-1]} tokens does not match the window size {ws}")
        d = (a * dist).sum(-1)  # (b, h, n)
        for head in range(a.shape[1]):
            self.values.setdefault((stage, head), []).append(d[:, head].reshape(-1).cpu().numpy())
        self.max_distance[stage] = max(self.max_distance.get(stage, 0.0), float(dist.max()))


def window_attention_probs(attn_mod: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The attention probabilities MONAI's ``WindowAttention.forward(x, mask)`` uses: (B·nW, heads, n, n).

    The same lines as MONAI's non-flash path (q·scale·kᵀ + relative-position bias, + shift mask, softmax);
    re-computed because MONAI returns only the attended values.
    """
    b, n, c = x.shape
    h = attn_mod.num_heads
    qkv = attn_mod.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k = qkv[0] * attn_mod.scale, qkv[1]
    a = q @ k.transpose(-2, -1)
    bias = attn_mod.relative_position_bias_table[attn_mod.relative_position_index.clone()[:n, :n].reshape(-1)]
    a = a + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
    if mask is not None:
        nw = mask.shape[0]
        a = (a.view(b // nw, nw, h, n, n) + mask[None, :, None]).view(-1, h, n, n)
    return torch.softmax(a, dim=-1)


def window_distances(ws: tuple[int, ...], pitch: float) -> torch.Tensor:
    """Euclidean distances (n, n) in voxels between the tokens of a window of size ``ws`` (C order), token pitch ``pitch``."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in ws], indexing="ij")).reshape(len(ws), -1).T.float()
    return torch.cdist(coords, coords) * pitch


@torch.no_grad()
def attention_distance_entropy(net: torch.nn.Module, images: torch.Tensor, bins: int = 16, batch_size: int = 4) -> "pd.DataFrame":
    """Entropy and mean of the attention distances per Swin stage and head for images (B, 1, S, S, S).

    Returns a DataFrame with ``stage`` (1–4), ``head``, ``entropy`` (nats), ``mean_distance`` (voxels),
    ``max_distance`` (the histogram's upper edge) and ``n_queries``.
    """
    import pandas as pd

    net.eval()
    rec = AttentionDistances(net.encoder)
    with rec:
        for i in range(0, len(images), batch_size):
            net.encode(images[i:i + batch_size])
    rows = []
    for (stage, head), parts in sorted(rec.values.items()):
        v = np.concatenate(parts)
        upper = rec.max_distance[stage] or 1.0
        rows.append({"stage": stage, "head": head, "entropy": histogram_entropy(v, bins, upper),
                     "mean_distance": float(v.mean()), "max_distance": upper, "n_queries": len(v)})
    return pd.DataFrame(rows)


def _summary_row(init: str, proxy: bool, mass: torch.Tensor, lift: torch.Tensor, hit: torch.Tensor, lesion_share: float,
                 chance: float) -> dict:
    return {"init": init, "baseline": init in BASELINES, "proxy": bool(proxy), "n": len(mass),
            "mass_mean": float(mass.mean()), "mass_sd": float(mass.std(unbiased=False)), "mass_lift": float(lift.mean()),
            "hit_rate": float(hit.float().mean()), "lesion_share": lesion_share, "chance_hit": chance}


def attention_study(inits, *, preset: str = "cpu", runs_dir="runs", out=None, data=None, n_cases: int = 12,
                    img_size: int | None = None, bins: int = 16, n: int | None = None, data_seed: int = 0,
                    n_boot: int = 2000, log=print) -> dict:
    """Localisation and attention-distance entropy of each init on lesion crops with masks, beside the baselines.

    Data: the ``localisation`` set (nodules at random offsets, on the pretraining grid) or a manifest with
    masks (``data``), its first ``n_cases`` cases of any split (no model is fitted here), resampled to the
    pretraining spacing and centre-cropped / padded to ``img_size`` (default: the task's ``prep`` roi, the
    preset's pretraining size) — for the built-in set both are its native grid.

    Every init's [CLS] map and the :data:`BASELINES` are scored by :func:`score_maps`. Since a nodule fills a
    tiny share of the crop, the mass is also given as a **lift**: per case, mass / the lesion's share of the
    crop (the uniform map's mass), so the uniform map scores exactly 1. Each init is compared with the centre
    prior per case on ``hit`` and ``mass_lift`` (paired bootstrap over cases, Holm over the inits within each
    metric: :func:`smartlib.downstream.stats.compare_arms` with ``n_boot`` resamples).

    Returns a dict with ``localisation`` (DataFrame, one row per init then per baseline: init, baseline, proxy,
    n, mass_mean, mass_sd, mass_lift, hit_rate, lesion_share, chance_hit), ``comparisons`` (compare_arms rows,
    metric ``hit`` / ``mass_lift``, reference "centre prior"), ``cases`` (init, case, mass, mass_lift, hit), ``entropy`` (DataFrame:
    init, stage, head, entropy, mean_distance, …), ``images`` and ``masks`` (N, S, S, S), ``maps`` (init →
    (N, S, S, S) voxel attention, encoders only) and ``grid`` (img_size, spacing, units). With ``out``:
    ``localisation.csv``, ``comparisons.csv``, ``cases.csv``, ``entropy.csv``, ``attention.json``.
    """
    import pandas as pd

    from ..config import pretrain_config
    from ..tasks import prep_for
    from .data import load_arrays, task_records
    from .features import load_init, stack
    from .stats import compare_arms
    from .study import as_inits, grid, is_builtin, resolve_inits, run_cells, write_outputs

    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise SmartError(f"n_cases={n_cases!r}: must be a positive integer")
    taken = [name for name in as_inits(inits) if name in BASELINES]
    if taken:
        raise SmartError(f"init name {taken[0]!r} is taken by a baseline ({', '.join(BASELINES)}); rename it")
    inits_r = resolve_inits(inits, preset, runs_dir, log=log)
    cfg = pretrain_config(preset)
    prep = prep_for("localisation", preset, roi=img_size)
    size, spacing = prep["roi"], prep["spacing"]
    if size != cfg.img_size or spacing != cfg.spacing:
        log(f"attention: scored at {size}³ × {spacing} mm, pretraining used {cfg.img_size}³ × {cfg.spacing} mm")
    records, source = task_records("localisation", data, preset, runs_dir, n=n, seed=data_seed)
    chosen = records[:n_cases]
    images, masks = load_arrays(chosen, size, spacing, with_mask=True)
    x, m = stack(images), stack(masks)
    if not (m.sum(dim=(1, 2, 3, 4)) > 0).all():
        raise SmartError(f"{source}: a chosen case has an empty lesion mask after cropping to {size}³")
    g = size // UNIT
    share = (m[:, 0] > 0).float().mean(dim=(1, 2, 3))  # (N,): the uniform map's mass
    lesion_share = float(share.mean())
    chance = float(chance_hit_rate(m[:, 0], g).mean())
    maps: dict[str, np.ndarray] = {}
    cases: list[dict] = []

    def add_cases(init: str, r: dict) -> torch.Tensor:
        lift = r["mass"] / share
        cases.extend({"init": init, "seed": 0, "case": i, "mass": float(r["mass"][i]), "mass_lift": float(lift[i]),
                      "hit": float(r["hit"][i])} for i in range(len(x)))
        return lift

    def run_one(c) -> tuple[dict, "pd.DataFrame"]:
        net = load_init(c.path, preset, size, seed=0)
        r = localisation(net, x, m)
        maps[c.init] = r["attn_vox"].numpy()
        row = _summary_row(c.init, r["proxy"], r["mass"], add_cases(c.init, r), r["hit"], lesion_share, chance)
        ent = attention_distance_entropy(net, x, bins=bins)
        ent.insert(0, "init", c.init)
        log(f"attention {c.init}: mass in lesion {row['mass_lift']:.2f} × uniform, hit rate {row['hit_rate']:.2f}"
            + (" (mean-token proxy)" if r["proxy"] else ""))
        return row, ent

    done = run_cells(grid(inits_r), run_one)
    rows = [d[0] for d in done]
    for name, a in baseline_maps(len(x), g).items():
        r = score_maps(a, m[:, 0])
        rows.append(_summary_row(name, False, r["mass"], add_cases(name, r), r["hit"], lesion_share, chance))
        log(f"attention {name} (baseline): mass in lesion {rows[-1]['mass_lift']:.2f} × uniform, hit rate {rows[-1]['hit_rate']:.2f}")
    loc = pd.DataFrame(rows)
    ent = pd.concat([d[1] for d in done], ignore_index=True)
    case_df = pd.DataFrame(cases)
    enc = list(inits_r.specs)
    comp = pd.concat([compare_arms(case_df, "init", "centre prior", metric, arms=enc, n_boot=n_boot, seed=data_seed)
                      for metric in ("hit", "mass_lift")], ignore_index=True)
    grid_info = {"img_size": size, "spacing": spacing, "units": g, "pretrain_img_size": cfg.img_size,
                 "pretrain_spacing": cfg.spacing}
    write_outputs(out, csv={"localisation.csv": loc.to_dict("records"), "comparisons.csv": comp.to_dict("records"),
                            "cases.csv": case_df.to_dict("records"), "entropy.csv": ent.to_dict("records")},
                  json={"attention.json": {"source": source, "phantom": is_builtin(data), "preset": preset, **grid_info,
                                           "bins": bins, "inits": inits_r.specs, "baselines": list(BASELINES),
                                           "localisation": loc.to_dict("records"), "comparisons": comp.to_dict("records"),
                                           "entropy": ent.to_dict("records")}})
    return {"localisation": loc, "comparisons": comp, "cases": case_df, "entropy": ent, "images": x[:, 0].numpy(),
            "masks": m[:, 0].numpy(), "maps": maps, "grid": grid_info}
