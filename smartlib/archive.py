"""Recorded runs: a preset's results kept in the repository, with provenance a reader can check.

The live book runs at the ``cpu`` preset; effects that need hours of pretraining are shown from runs
recorded once and kept under ``results/<preset>/``. :func:`record` copies what every chapter of
``runs/<preset>/`` wrote — its JSON, CSV and figures, never checkpoints — and every pretraining run's
config, summary and logged metrics, then writes ``provenance.json``: the commit, the resolved config of
every run, the library versions, the machine, the thread count, the wall time of every notebook and the
sha256 of every file. The archive is written to a temporary folder and renamed into place whole.

:func:`verify` checks such an archive against this repository: every file's hash, no file unlisted, the
commit known to this repository's history, every recorded SMART run's config the same as the one this
code would run for that variant and preset, and — the part a hash cannot show — it *replays* the first
steps of every recorded SMART pretraining run from its recorded config and compares the logged losses
with the recorded ones. Replaying on another machine (thread count, CPU, a GPU's kernels) changes the
losses in the last digits only; the tolerance (``rtol``, default 2 %) is the relative difference allowed.
Runs the archive alone cannot replay are checked by hash only, and the check says why: runs of the
MAE/MSMAE trainer (:mod:`smartlib.mae`, trained on images a chapter prepares), SMART runs on a pool folder
(wild / self), runs masked by a supervised model's attention (``mask_mode="given"``) and runs started from
another encoder (``init_from``) — the archive holds no images and no weights. Paths into the runs folder are
archived relative to it (``{runs}/…``), so no machine path enters the archive.

Hand-written because no library of the field records notebook results with hashes and a replay check;
the pieces are the standard library's ``hashlib`` and ``shutil``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import SmartError

__all__ = ["record", "verify", "recorded_table", "read_provenance", "KEEP_SUFFIXES", "MAX_FILE_BYTES", "DEFAULT_RTOL"]

#: the kinds of file a chapter writes that an archive keeps (no checkpoints, no volumes)
KEEP_SUFFIXES = (".json", ".csv", ".png", ".svg", ".txt", ".md")
#: files larger than this are left out (and listed in ``provenance.json`` as such)
MAX_FILE_BYTES = 2 * 1024 * 1024
#: per pretraining run: what is archived (no ``checkpoint.pt`` / ``encoder.pt``)
RUN_FILES = ("config.json", "summary.json", "metrics.jsonl", "run.json")
#: stands for the runs folder in archived configs (a pool's manifest, an ``init_from`` encoder)
RUNS_PLACEHOLDER = "{runs}"
#: relative difference allowed between a replayed and a recorded loss
DEFAULT_RTOL = 0.02
LIBRARIES = ("torch", "monai", "numpy", "scipy", "scikit-learn", "umap-learn", "pandas", "papermill", "nibabel",
             "pydicom")
_REPO = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version()}


def _chapters(src: Path) -> list[Path]:
    return sorted(d for d in src.iterdir() if d.is_dir() and d.name[:2].isdigit() and "_" in d.name)


def record(preset: str, runs_dir: str | os.PathLike = "runs", out: str | os.PathLike = "results",
           repo: str | os.PathLike | None = None, executed: str | os.PathLike | None = None) -> Path:
    """Archive ``runs_dir/<preset>`` into ``out/<preset>`` (replacing an earlier archive of it whole).

    Args:
        preset: the preset whose runs to record (a folder ``runs_dir/<preset>`` written by ``make book``).
        runs_dir: where the book wrote its runs.
        out: the archive root; the archive is ``out/<preset>``.
        repo: the git checkout whose commit is recorded (default: the one this package is in).
        executed: the folder of executed notebooks (default: ``book/executed`` of ``repo``); each chapter's
            stamp there (:func:`smartlib.book.notebook_stamps`) is recorded, and whether it is current.
    Returns:
        ``out/<preset>``.
    Raises:
        SmartError: no runs of ``preset``, or no chapter in them — checked before anything is written.
    """
    import torch

    from .io import atomic_dir, read_json, write_json

    src = Path(runs_dir) / preset
    if not src.is_dir():
        raise SmartError(f"{src}: no runs of preset {preset!r} to record (run `make book PRESET={preset}` first)")
    chapters = _chapters(src)
    if not chapters:
        raise SmartError(f"{src}: holds no chapter results (folders named NN_name) to record")
    repo = Path(repo) if repo is not None else _REPO
    commit = _git(repo, "rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    timings = read_json(src / "book_timings.json") if (src / "book_timings.json").is_file() else {}
    target = Path(out) / preset
    left_out: list[str] = []
    runs: dict[str, Any] = {}
    with atomic_dir(target) as tmp:
        for chapter in chapters:
            for f in sorted(p for p in chapter.rglob("*") if p.is_file()):
                rel = f.relative_to(src)
                if f.suffix not in KEEP_SUFFIXES:
                    continue
                if f.stat().st_size > MAX_FILE_BYTES:
                    left_out.append(f"{rel.as_posix()} ({f.stat().st_size} bytes > {MAX_FILE_BYTES})")
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, tmp / rel)
        here = str(Path(runs_dir).resolve()) + os.sep
        for cfg_file in sorted((src / "pretrain").glob("*/config.json")):
            run = cfg_file.parent
            for name in RUN_FILES:
                if (run / name).is_file():
                    (tmp / "pretrain" / run.name).mkdir(parents=True, exist_ok=True)
                    text = (run / name).read_text()
                    if name.endswith(".json"):  # paths into the runs folder: relative, so no machine path is archived
                        text = text.replace(json.dumps(here)[1:-1], RUNS_PLACEHOLDER + "/")
                    (tmp / "pretrain" / run.name / name).write_text(text)
            runs[run.name] = read_json(tmp / "pretrain" / run.name / "config.json")
        if timings:
            shutil.copy2(src / "book_timings.json", tmp / "book_timings.json")
        sittings = read_json(src / "book_sittings.json") if (src / "book_sittings.json").is_file() else {}
        if sittings:
            shutil.copy2(src / "book_sittings.json", tmp / "book_sittings.json")
        compute = {name: _compute(tmp / "pretrain" / name / "metrics.jsonl") for name in runs}
        chapters_run = _chapter_stamps(preset, [c.name for c in chapters],
                                       Path(executed) if executed is not None else repo / "book" / "executed", repo)
        files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / "provenance.json", {
            "preset": preset,
            "commit": commit,
            "dirty": dirty,
            "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "libraries": _versions(),
            "machine": _machine(),
            "threads": torch.get_num_threads(),
            "notebook_threads": timings.get("threads", {}),
            "wall_s": timings.get("seconds", {}),
            "total_wall_s": timings.get("total_seconds"),
            # one entry per `smart book execute` call: the run's wall time when it was spread over several sittings
            "sittings": [{k: x.get(k) for k in ("started", "wall_s", "completed")} for x in sittings.get("sittings", [])],
            "sittings_wall_s": sittings.get("total_wall_s"),
            "run_compute": compute,
            # stem → the stamp of its executed notebook (sources it ran from) and whether it was current when recorded
            "chapters": chapters_run,
            "runs": runs,
            "left_out": left_out,
            "files": files,
        })
    return target


def _chapter_stamps(preset: str, stems: list[str], executed: Path, repo: Path) -> dict[str, Any]:
    """Stem → ``{"stamp", "current"}`` for each archived chapter: the stamp of its executed notebook (None: not
    executed) and whether it equals the stamp this checkout gives (:func:`smartlib.book.notebook_stamps`)."""
    from .book import _executed_stamp, notebook_stamps

    if not (repo / "notebooks").is_dir() or not (repo / "params" / f"{preset}.yaml").is_file():
        return {}
    now = notebook_stamps(preset, root=repo)
    out = {}
    for stem in stems:
        had = _executed_stamp(executed / f"{stem}.ipynb")
        out[stem] = {"stamp": had, "current": had is not None and had == now.get(stem)}
    return out


def _compute(metrics: Path) -> dict[str, Any]:
    """Steps logged by a pretraining run and the sum of their step times (s): its compute over every resume."""
    steps, seconds = 0, 0.0
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            steps += 1
            seconds += float(row.get("step_time") or 0.0)
    return {"steps_logged": steps, "step_time_s": round(seconds, 1)}


# ------------------------------------------------------------------------------------------------ verify
def _losses(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[int(rec["step"])] = float(rec["loss"])
    return out


def _is_smart_run(config: dict) -> bool:
    return "mask_mode" in config and "prototypes" in config


def _not_replayable(cfg: Any) -> str:
    """Why a recorded SMART run cannot be replayed from the archive alone ("" when it can)."""
    if cfg.data != "phantom" and not Path(cfg.data).exists():
        return f"trained on {cfg.data}, which the archive does not hold"
    if cfg.mask_mode == "given":
        return f"masked by the {cfg.given_attention!r} model's attention, whose weights the archive does not hold"
    if getattr(cfg, "init_from", ""):
        return f"started from {cfg.init_from}, whose weights the archive does not hold"
    return ""


def _first_difference(recorded: dict, now: dict) -> str:
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key, "(absent)") != now.get(key, "(absent)"):
            return f"{key}: recorded {recorded.get(key, '(absent)')!r}, this repository {now.get(key, '(absent)')!r}"
    return ""


def verify(preset: str, results: str | os.PathLike = "results", steps: int = 3, rtol: float = DEFAULT_RTOL,
           repo: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Check the archive ``results/<preset>`` against this repository; one SmartError line at the first mismatch.

    Args:
        preset: the recorded preset.
        results: the archive root.
        steps: how many first steps of each recorded SMART pretraining run to replay (0: none).
        rtol: relative difference allowed between a replayed and the recorded loss.
        repo: the git checkout to check the recorded commit against (default: this package's).
        log: receives one line per check passed.
    Returns:
        The lines logged, one per check.
    Raises:
        SmartError: naming the file, or the run and step, that does not match.
    """
    import torch

    from .config import apply_overrides, config_from_json
    from .pretrain import pretrain
    from .variants import VARIANTS, variant_config

    if steps < 0:
        raise SmartError(f"steps={steps}: must be ≥ 0")
    if not rtol > 0:
        raise SmartError(f"rtol={rtol}: must be > 0")
    root = Path(results) / preset
    prov_path = root / "provenance.json"
    if not prov_path.is_file():
        raise SmartError(f"{prov_path}: no such file; nothing recorded for preset {preset!r} "
                         f"(record one with `smart results record {preset}`)")
    prov = read_provenance(prov_path)
    for key in ("preset", "files", "runs", "commit"):
        if key not in prov:
            raise SmartError(f"{prov_path}: has no {key!r} entry; not a provenance record")
    if prov["preset"] != preset:
        raise SmartError(f"{prov_path}: records preset {prov['preset']!r}, not {preset!r}")
    lines: list[str] = []

    def ok(line: str) -> None:
        lines.append(line)
        log(line)

    files: dict[str, str] = prov["files"]
    for rel, digest in sorted(files.items()):
        f = root / rel
        if not f.is_file():
            raise SmartError(f"{f}: listed in provenance.json but missing")
        if _sha256(f) != digest:
            raise SmartError(f"{f}: sha256 differs from provenance.json (changed after it was recorded)")
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel not in files and rel not in ("provenance.json", "README.md"):
            raise SmartError(f"{f}: not listed in provenance.json (added after it was recorded)")
    ok(f"{len(files)} files match their recorded sha256")

    repo = Path(repo) if repo is not None else _REPO
    commit = prov["commit"]
    if commit is None:
        ok("recorded outside a git checkout: commit not checked")
    elif _git(repo, "rev-parse", "--git-dir") is None:
        ok(f"recorded at {commit[:12]}; {repo} is not a git checkout, commit not checked")
    elif _git(repo, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        raise SmartError(f"{prov_path}: recorded at commit {commit[:12]}, which is not in this repository's history")
    else:
        ok(f"recorded at commit {commit[:12]}{' (with uncommitted changes)' if prov.get('dirty') else ''}, "
           "in this repository's history")

    smart_runs = {name: config_from_json(root / "pretrain" / name / "config.json")
                  for name, recorded in sorted(prov["runs"].items()) if _is_smart_run(recorded)}
    for name, cfg in smart_runs.items():
        if name in VARIANTS:
            now, recorded_cfg = variant_config(name, preset).to_dict(), cfg.to_dict()
            if recorded_cfg != now:
                raise SmartError(f"{root / 'pretrain' / name}: recorded config is not what this repository runs for "
                                 f"{name!r} at {preset!r} ({_first_difference(recorded_cfg, now)})")
    ok("every recorded variant's config is the one this repository runs")

    chapters = prov.get("chapters") or {}
    if chapters:
        from .book import notebook_stamps

        stale = sorted(st for st, c in chapters.items() if not c.get("current"))
        if stale:  # the recorded commit would not be where their results came from
            raise SmartError(f"{prov_path}: chapter {stale[0]} was not current when recorded (its executed notebook "
                             "ran from other sources than the recorded commit's, or was not executed)")
        now = notebook_stamps(preset, root=repo) if (repo / "params" / f"{preset}.yaml").is_file() else {}
        same = [st for st, c in chapters.items() if now.get(st) == c.get("stamp")]
        # information, not a failure: code changes after a recording are normal
        ok(f"all {len(chapters)} chapters were current when recorded; {len(same)} of them would run from the same "
           f"sources in this checkout" + ("" if len(same) == len(chapters) else " (code or parameters changed since)"))

    if steps == 0:
        return lines
    for name in sorted(prov["runs"]):
        run = root / "pretrain" / name
        if name not in smart_runs:
            ok(f"{run}: not a SMART pretraining run (MAE/MSMAE trainer): checked by hash only")
            continue
        metrics = run / "metrics.jsonl"
        if not metrics.is_file():
            raise SmartError(f"{metrics}: missing; the run's losses cannot be compared")
        want = _losses(metrics)
        n = min(steps, len(want))
        if n == 0:
            raise SmartError(f"{metrics}: holds no logged step")
        why = _not_replayable(smart_runs[name])
        if why:
            ok(f"{run}: not replayed from the archive ({why}): checked by hash only")
            continue
        device = "cuda" if smart_runs[name].device.startswith("cuda") and torch.cuda.is_available() else "cpu"
        cfg = apply_overrides(smart_runs[name], {"max_steps": n, "device": device})
        with tempfile.TemporaryDirectory(prefix=f"replay-{name}-") as tmp:
            pretrain(cfg, Path(tmp) / "run", progress=False, log=lambda _s: None)
            got = _losses(Path(tmp) / "run" / "metrics.jsonl")
        worst = 0.0
        for step in range(n):
            a, b = got.get(step), want.get(step)
            if a is None or b is None:
                raise SmartError(f"{run}: step {step}: no logged loss in the {'replay' if a is None else 'record'}")
            diff = abs(a - b) / max(abs(b), 1e-12)
            if not diff <= rtol:
                raise SmartError(f"{run}: step {step}: replayed loss {a:.6g} vs recorded {b:.6g} "
                                 f"(relative difference {diff:.2%} > {rtol:.2%})")
            worst = max(worst, diff)
        ok(f"{run}: first {n} steps replayed, losses within {rtol:.1%} of the recorded ones "
           f"(largest relative difference {worst:.2e})")
    return lines


# ------------------------------------------------------------------------------------------------ render
def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record at ``path`` as a dict; an unreadable or non-object file is a SmartError naming it."""
    from .io import read_json

    try:
        prov = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise SmartError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(prov, dict):
        raise SmartError(f"{path}: holds a JSON {type(prov).__name__}, not a provenance record")
    return prov


def recorded_table(results: str | os.PathLike = "results") -> "pd.DataFrame":
    """One row per recorded archive under ``results``: its preset and provenance, for the book to show.

    Columns: ``preset, commit, recorded, machine, threads, wall_min, runs, files``. Empty (with those
    columns) when nothing has been recorded; an unreadable ``provenance.json`` is a SmartError naming it.
    """
    import pandas as pd

    cols = ["preset", "commit", "recorded", "machine", "threads", "wall_min", "runs", "files"]
    rows = []
    root = Path(results)
    for prov_path in sorted(root.glob("*/provenance.json")) if root.is_dir() else []:
        prov = read_provenance(prov_path)
        machine = prov.get("machine", {})
        total = prov.get("total_wall_s")
        rows.append({
            "preset": prov.get("preset", prov_path.parent.name),
            "commit": (prov.get("commit") or "unknown")[:12] + (" (dirty)" if prov.get("dirty") else ""),
            "recorded": prov.get("recorded", ""),
            "machine": f"{machine.get('gpu') or machine.get('cpu', '?')}, {machine.get('cpu_count', '?')} cores",
            "threads": prov.get("threads"),
            "wall_min": round(total / 60, 1) if isinstance(total, (int, float)) else None,
            "runs": len(prov.get("runs", {})),
            "files": len(prov.get("files", {})),
        })
    return pd.DataFrame(rows, columns=cols)
