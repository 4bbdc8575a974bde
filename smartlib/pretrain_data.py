"""The pretraining loop's data: volumes → two random views, batched per global step, keyed randomness.

- :func:`keyed_seed` / :func:`keyed_generator`: every random draw of a step (crops, teacher noise,
  masks) comes from a generator seeded by integers such as ``(seed, step, sample, view, purpose)``,
  so a run resumes exactly and gives the same result with any number of processes.
- :class:`PretrainData`: records → two views of a volume, deterministic per ``(seed, epoch, index)``.
- :func:`batches`: the views of steps ``start..stop-1`` for one process's slice of each global batch.
- :func:`pretrain_records`: the volumes a config pretrains on (built-in phantoms or a path).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .config import PretrainConfig
from .errors import SmartError

__all__ = ["keyed_seed", "keyed_generator", "PretrainData", "batches", "prefetch", "data_root", "pretrain_records"]


def keyed_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash of ints is not salted, but be explicit)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def keyed_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`keyed_seed` of ``parts``."""
    return torch.Generator().manual_seed(keyed_seed(*parts))


class PretrainData:
    """Records → two random views per volume, deterministic per (seed, epoch, index).

    The deterministic head of the MONAI pipeline (load, orient, resample, window, pad) is cached
    in memory when ``cache="memory"``; the random tail (two crops, flips) is re-seeded per item.
    """

    def __init__(self, cfg: PretrainConfig, records: list[dict]) -> None:
        from monai.transforms import Randomizable

        from .data.transforms import pretrain_transforms

        if not records:
            raise SmartError(f"data={cfg.data!r}: no volumes to pretrain on")
        full = pretrain_transforms(roi=cfg.img_size, spacing=cfg.spacing or None, hu_window=(cfg.hu_min, cfg.hu_max), num_views=2)
        ts = list(full.transforms)
        first_random = next((i for i, t in enumerate(ts) if isinstance(t, Randomizable)), len(ts))
        self.head, self.tail = type(full)(ts[:first_random]), type(full)(ts[first_random:])
        self.records, self.seed = records, cfg.seed
        self.cache: dict[int, Any] = {}
        self.keep = cfg.cache == "memory"

    def __len__(self) -> int:
        return len(self.records)

    def _head(self, i: int) -> Any:
        if i in self.cache:
            return self.cache[i]
        try:
            item = self.head(dict(self.records[i]))
        except SmartError:
            raise
        except Exception as exc:  # MONAI wraps reader errors; name the file
            raise SmartError(f"{self.records[i].get('image')}: cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        if self.keep:
            self.cache[i] = item
        return item

    def views(self, i: int, epoch: int) -> torch.Tensor:
        """Two views of volume ``i`` for ``epoch``: (2, 1, S, S, S) float32 in [0, 1]."""
        self.tail.set_random_state(seed=keyed_seed(self.seed, epoch, i) % (2**32))
        out = self.tail(dict(self._head(i)))
        return torch.stack([torch.as_tensor(np.asarray(v["image"])) for v in out]).float()

    def epoch_order(self, epoch: int) -> list[int]:
        return torch.randperm(len(self), generator=keyed_generator(self.seed, epoch, 7)).tolist()


class _Items(torch.utils.data.Dataset):
    """(epoch, volume index) pairs → two views; lets a DataLoader's workers prepare batches."""

    def __init__(self, data: PretrainData, items: list[tuple[int, int]]) -> None:
        self.data, self.items = data, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> torch.Tensor:
        epoch, i = self.items[k]
        return self.data.views(i, epoch)


def batches(data: PretrainData, cfg: PretrainConfig, start: int, stop: int, spe: int, rank: int,
            world: int) -> Iterator[tuple[int, int, list[int], torch.Tensor]]:
    """Yield (step, epoch, global batch indices, views (2, b, 1, S, S, S)) for steps start..stop-1.

    The global batch of step s is ``order(epoch)[it·B:(it+1)·B]`` (``spe`` steps per epoch);
    process ``rank`` of ``world`` takes its slice of ``b = B / world`` volumes.
    """
    B, b = cfg.batch_size, cfg.batch_size // world
    step = start
    while step < stop:
        epoch, it0 = divmod(step, spe)
        order = data.epoch_order(epoch)
        n = min(spe - it0, stop - step)
        glob = [order[(it0 + s) * B:(it0 + s + 1) * B] for s in range(n)]
        items = [(epoch, g[rank * b + j]) for g in glob for j in range(b)]
        loader = torch.utils.data.DataLoader(_Items(data, items), batch_size=b, shuffle=False, num_workers=cfg.num_workers,
                                             collate_fn=lambda xs: torch.stack(xs, dim=1), pin_memory=torch.cuda.is_available())
        for s, views in enumerate(prefetch(loader) if cfg.num_workers == 0 and cfg.prefetch else loader):
            yield step, epoch, glob[s], views
            step += 1


def prefetch(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Items of ``iterable`` prepared ``depth`` ahead by a background thread, in order.

    With ``num_workers=0`` the views of the next step are cropped while the current step computes
    (the transforms spend their time in NumPy / torch, which release the GIL); worker processes would
    compete with the training threads for the same cores. An exception in the thread is re-raised here.
    Hand-written because ``torch.utils.data.DataLoader`` prefetches only with worker processes.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((done, exc))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()


def data_root(run_dir: str | Path) -> Path:
    """The runs folder whose ``data/`` holds the built-in sets a pretraining run uses.

    A book run lives in ``<runs_dir>/pretrain/<variant>`` and shares ``<runs_dir>/data`` with every
    chapter; any other run folder uses its parent (``smart pretrain --out X/run`` → ``X/data``).
    """
    run_dir = Path(run_dir)
    return run_dir.parent.parent if run_dir.parent.name == "pretrain" else run_dir.parent


def pretrain_records(cfg: PretrainConfig, run_dir: Path) -> list[dict]:
    """The records ``cfg`` pretrains on: the built-in phantom set (under :func:`data_root`) or ``cfg.data``."""
    from .data.sources import resolve_data

    if cfg.data == "phantom":
        from .tasks import builtin_manifest

        manifest = builtin_manifest("pretrain", None, data_root(run_dir), n=cfg.n_volumes, seed=cfg.data_seed,
                                    shape=cfg.phantom_shape)
        return resolve_data(str(manifest), "pretrain")
    return resolve_data(cfg.data, "pretrain")
