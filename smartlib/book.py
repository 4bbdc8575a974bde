"""Execute the book's notebooks with papermill at a named preset.

A *preset* is a YAML file ``params/<preset>.yaml`` with a ``common`` mapping
(parameters every notebook takes: ``preset``, ``runs_dir``, ``seed``) and one
mapping per notebook stem (``00_data``, ``01_pretraining``...). The parameters
of a notebook are ``common`` updated with its own mapping; papermill injects
them after the notebook's ``parameters``-tagged cell, whose defaults are the
smoke-sized values (so ``pytest --nbval-lax notebooks`` runs at smoke size).

Every notebook runs with ``notebooks/`` as its working directory (notebooks
write to ``../runs/<preset>``). Output goes to a temporary file in the output
folder that is renamed onto ``<stem>.ipynb`` only when the whole notebook has
run, so a failure never leaves a half-executed page in the book: the previous
executed copy (or nothing) stays, and the failed run is kept beside it as
``<stem>.failed.ipynb`` for debugging.

Wall times are written, merged with earlier runs of the same preset, to
``runs/<preset>/book_timings.json``.

With ``jobs > 1`` notebooks run side by side, each in its own process: a notebook starts once the
notebooks it needs have finished. A notebook names them in its metadata, ``{"smart": {"needs": [stems]}}``;
one that names none needs every notebook before it (the sequential order). While other notebooks run,
a notebook's kernel gets one CPU thread (``OMP_NUM_THREADS=1``): on a small CPU two single-thread
chapters side by side finish sooner than one after another with every core, because the small 3-D
networks of the CPU presets keep two threads only partly busy; a notebook that runs alone keeps every core.

**Current notebooks are not run again.** Each executed notebook carries a *stamp* in its metadata
(``smart.stamp``): the sha256 of the source notebook, its resolved parameters, the library's code and
configs (every ``*.py`` / ``*.yaml`` under ``smartlib/``) and the stamps of the notebooks it needs. A notebook
whose executed copy carries the stamp it would get now is complete and current, and is skipped
(``force=True``, ``smart book execute --force``, re-runs it). So a long preset can be run over several
sittings: an interrupted ``make book PRESET=long`` picks up at the first notebook not yet done (and a
pretraining run inside it at its last checkpoint).
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .errors import SmartError
from .io import read_json, write_json

__all__ = [
    "execute_notebooks",
    "find_root",
    "load_params",
    "notebook_parameters",
    "parameters_cell_index",
    "list_notebooks",
    "notebook_needs",
    "notebook_stamps",
]

PathLike = str | os.PathLike


def find_root(start: PathLike | None = None) -> Path:
    """The repository root: the first folder holding ``_config.yml``.

    Searched upward from ``start`` (default: the current directory), then
    beside the installed ``smartlib`` package (an editable install).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_config.yml").is_file():
            return folder
    pkg_root = Path(__file__).resolve().parent.parent
    if (pkg_root / "_config.yml").is_file():
        return pkg_root
    raise SmartError(
        f"{here}: no _config.yml here or in any parent folder; run this from inside the smart-ct repository"
    )


def _resolve(root: Path, p: PathLike) -> Path:
    p = Path(p)
    return p if p.is_absolute() else root / p


def list_notebooks(notebooks_dir: PathLike) -> list[Path]:
    """Every ``*.ipynb`` directly in ``notebooks_dir``, sorted by name."""
    d = Path(notebooks_dir)
    if not d.is_dir():
        raise SmartError(f"{d}: notebook folder not found")
    return sorted(p for p in d.glob("*.ipynb") if not p.name.startswith("."))


def parameters_cell_index(nb: Any, path: PathLike = "notebook") -> int:
    """Index of the single code cell tagged ``parameters``; SmartError if none or several."""
    found = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.get("cell_type") == "code" and "parameters" in (cell.get("metadata", {}).get("tags") or [])
    ]
    if not found:
        raise SmartError(f"{path}: no code cell tagged 'parameters' (papermill needs one to inject the preset)")
    if len(found) > 1:
        raise SmartError(f"{path}: {len(found)} cells tagged 'parameters' (cells {found}); keep exactly one")
    return found[0]


def notebook_parameters(path: PathLike) -> dict[str, str]:
    """Names assigned in a notebook's ``parameters`` cell, mapped to their default's source text.

    Raises SmartError if the notebook has no (or several) ``parameters`` cells or the cell
    is not plain Python.
    """
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        raise SmartError(f"{path}: not a readable notebook ({type(exc).__name__}: {exc})") from None
    cell = nb.cells[parameters_cell_index(nb, path)]
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise SmartError(f"{path}: parameters cell is not plain Python ({exc.msg}, line {exc.lineno})") from None
    names: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for t in targets:
            if isinstance(t, ast.Name):
                value = getattr(node, "value", None)
                names[t.id] = ast.get_source_segment(cell.source, value) if value is not None else ""
    return names


def load_params(params_file: PathLike) -> dict[str, dict[str, Any]]:
    """Read a preset file: a mapping with ``common`` and per-notebook mappings (an empty value means ``{}``)."""
    import yaml

    params_file = Path(params_file)
    try:
        data = yaml.safe_load(params_file.read_text())
    except yaml.YAMLError as exc:
        line = " ".join(str(exc).split())
        raise SmartError(f"{params_file}: not valid YAML ({line})") from None
    if not isinstance(data, dict):
        raise SmartError(f"{params_file}: expected a mapping with 'common' and one key per notebook, got {type(data).__name__}")
    if "common" not in data:
        raise SmartError(f"{params_file}: missing the 'common' mapping")
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise SmartError(f"{params_file}: '{key}' must be a mapping of parameter names to values, got {value!r}")
        for name in value:
            if not isinstance(name, str) or not name.isidentifier():
                raise SmartError(f"{params_file}: '{key}.{name}' is not a valid Python variable name")
        out[str(key)] = dict(value)
    return out


def _failed_cell_number(exc: Any, params_index: int) -> int:
    """1-based position, in the source notebook, of the cell papermill reports as failed.

    Papermill counts cells of the executed notebook, which has one injected-parameters cell
    right after the ``parameters`` cell.
    """
    idx = int(getattr(exc, "cell_index", -1))
    if idx > params_index:
        idx -= 1
    return idx + 1


def execute_notebooks(
    preset: str,
    only: Sequence[str] | None = None,
    notebooks_dir: PathLike = "notebooks",
    params_dir: PathLike = "params",
    out_dir: PathLike = "book/executed",
    log: Callable[[str], Any] = print,
    *,
    runs_dir: PathLike = "runs",
    root: PathLike | None = None,
    jobs: int = 1,
    record_timings: bool = True,
    force: bool = False,
) -> dict[str, float]:
    """Run the book's notebooks with papermill at ``preset``; return wall seconds per notebook stem run.

    Args:
        preset: name of a parameter file ``<params_dir>/<preset>.yaml`` (smoke, cpu, paper).
        only: notebook stems to run (default: every notebook, in sorted order).
        notebooks_dir: folder of source notebooks; also the working directory of each run.
        params_dir: folder of preset files.
        out_dir: where executed notebooks go (``<stem>.ipynb``; ``<stem>.failed.ipynb`` on failure).
        log: called with one line per notebook.
        runs_dir: timings go to ``<runs_dir>/<preset>/book_timings.json``.
        root: repository root that relative paths are taken from (default: :func:`find_root`).
        jobs: notebooks run at once (each in its own process, in the order of their ``needs``; see the module).
        record_timings: write the timings file (off in the processes of a ``jobs > 1`` run: the parent writes it).
        force: run every selected notebook, also those whose executed copy is current (see the module).

    Raises:
        SmartError: unknown preset or stem, malformed preset file, a notebook without a
            ``parameters`` cell or a preset key its parameters cell does not define, or a
            notebook that fails (``notebooks/NAME.ipynb failed at cell N: Error: message``,
            N counting every cell of the source notebook from 1).
    """
    root_p = Path(root).resolve() if root is not None else find_root()
    nb_dir = _resolve(root_p, notebooks_dir)
    par_dir = _resolve(root_p, params_dir)
    out_p = _resolve(root_p, out_dir)

    params_file = par_dir / f"{preset}.yaml"
    if not isinstance(preset, str) or not preset or not params_file.is_file():
        known = sorted(p.stem for p in par_dir.glob("*.yaml")) if par_dir.is_dir() else []
        raise SmartError(f"preset {preset!r}: no {_rel(params_file, root_p)} (known presets: {', '.join(known) or 'none'})")
    params = load_params(params_file)

    notebooks = {p.stem: p for p in list_notebooks(nb_dir)}
    if only:
        unknown = [s for s in only if s not in notebooks]
        if unknown:
            raise SmartError(
                f"unknown notebook {', '.join(map(repr, unknown))} in --only (known: {', '.join(notebooks) or 'none'})"
            )
        stems = [s for s in notebooks if s in set(only)]
    else:
        stems = list(notebooks)
    if not stems:
        raise SmartError(f"{_rel(nb_dir, root_p)}: no notebooks to run")

    import nbformat

    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise SmartError(f"jobs={jobs!r}: must be a positive integer")
    # validate everything before running anything
    plan: list[tuple[str, Path, dict[str, Any], int]] = []
    needs: dict[str, list[str]] = {}
    for stem in stems:
        path = notebooks[stem]
        declared = notebook_parameters(path)
        merged = {**params["common"], **params.get(stem, {})}
        missing = [k for k in merged if k not in declared]
        if missing:
            raise SmartError(
                f"{_rel(params_file, root_p)}: sets {', '.join(missing)} for {_rel(path, root_p)}, "
                f"whose parameters cell does not define {'it' if len(missing) == 1 else 'them'}"
            )
        nb = nbformat.read(path, as_version=4)
        params_index = parameters_cell_index(nb, path)
        plan.append((stem, path, merged, params_index))
        needs[stem] = notebook_needs(nb, stem, list(notebooks), path)

    out_p.mkdir(parents=True, exist_ok=True)
    runs_p = _resolve(root_p, runs_dir)
    stamps = notebook_stamps(preset, notebooks_dir=nb_dir, params_dir=par_dir, root=root_p)
    if not force:
        current = [st for st, *_ in plan if _executed_stamp(out_p / f"{st}.ipynb") == stamps[st]]
        for st in current:
            log(f"{st}: current (executed copy has stamp {stamps[st][:12]}); not run again (--force runs it)")
        plan = [p for p in plan if p[0] not in current]
        if not plan:
            return {}
    finished: dict[str, float] = {}
    started, t0, ok = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter(), False
    try:
        if jobs > 1 and len(plan) > 1:
            _run_parallel([p[0] for p in plan], needs, jobs, preset, root_p, nb_dir, par_dir, out_p, runs_p, log, finished)
        else:
            with _inline_figures():
                _run_plan(plan, preset, root_p, nb_dir, out_p, runs_p, log, record_timings, stamps, finished)
        ok = True
        return dict(finished)
    finally:  # every sitting is logged, also one that failed or was interrupted: the wall time of a run over sittings
        if record_timings:
            _log_sitting(runs_p / preset / "book_sittings.json", {
                "started": started, "wall_s": round(time.perf_counter() - t0, 1), "completed": ok, "jobs": jobs,
                "notebooks_run": dict(finished), "skipped_current": sorted(set(stems) - {p[0] for p in plan})})


def notebook_stamps(preset: str, notebooks_dir: PathLike = "notebooks", params_dir: PathLike = "params",
                    root: PathLike | None = None) -> dict[str, str]:
    """Stem → stamp (sha256 hex) of every notebook at ``preset``: source notebook, resolved parameters, the
    library's ``*.py`` / ``*.yaml`` files and the stamps of the notebooks it needs (so a change upstream makes
    everything downstream stale). Pure function of the sources: the same files give the same stamps."""
    import nbformat

    root_p = Path(root).resolve() if root is not None else find_root()
    nb_dir, par_dir = _resolve(root_p, notebooks_dir), _resolve(root_p, params_dir)
    params = load_params(par_dir / f"{preset}.yaml")
    lib = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for f in sorted(q for q in pkg.rglob("*") if q.suffix in (".py", ".yaml") and "__pycache__" not in q.parts):
        lib.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    paths = {p.stem: p for p in list_notebooks(nb_dir)}
    stamps: dict[str, str] = {}
    for stem in sorted(paths):  # the needs of a stem are always among the stems sorted before it or named in metadata
        nb = nbformat.read(paths[stem], as_version=4)
        deps = notebook_needs(nb, stem, list(paths), paths[stem])
        h = hashlib.sha256(paths[stem].read_bytes())
        h.update(json.dumps({**params["common"], **params.get(stem, {})}, sort_keys=True, default=str).encode())
        h.update(lib.hexdigest().encode())
        for d in sorted(deps):
            h.update(stamps[d].encode() if d in stamps else d.encode())
        stamps[stem] = h.hexdigest()
    return stamps


def _executed_stamp(path: Path) -> str | None:
    """The stamp an executed notebook carries (None: no executed copy, or not stamped)."""
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text()).get("metadata", {})
    except (OSError, ValueError):
        return None
    return (meta.get("smart") or {}).get("stamp")


def notebook_needs(nb: Any, stem: str, stems: Sequence[str], path: PathLike = "notebook") -> list[str]:
    """The notebooks ``stem`` needs before it runs: its metadata's ``smart.needs``, or, when it names none,
    every notebook sorted before it. An unknown stem is a SmartError naming the notebook."""
    meta = (nb.metadata.get("smart") or {}).get("needs")
    if meta is None:
        return [s for s in stems if s < stem]
    if not isinstance(meta, list) or not all(isinstance(m, str) for m in meta):
        raise SmartError(f"{path}: metadata smart.needs must be a list of notebook stems, got {meta!r}")
    unknown = [m for m in meta if m not in stems or m == stem]
    if unknown:
        raise SmartError(f"{path}: metadata smart.needs names {', '.join(unknown)}, not another notebook of this book")
    return list(meta)


def _run_parallel(stems: list[str], needs: dict[str, list[str]], jobs: int, preset: str, root_p: Path, nb_dir: Path,
                  par_dir: Path, out_p: Path, runs_p: Path, log: Callable[[str], Any],
                  timings: dict[str, float] | None = None) -> dict[str, float]:
    """Run ``stems`` in at most ``jobs`` processes at once, each after the notebooks it needs (see the module)."""
    import subprocess
    import sys
    import tempfile

    selected = set(stems)
    pending, running, done = list(stems), {}, set()
    timings = {} if timings is None else timings  # filled as notebooks finish (the caller keeps it on failure)
    failure: str | None = None
    timings_file = runs_p / preset / "book_timings.json"
    threads: dict[str, int] = {}

    def ready(stem: str) -> bool:
        return all(n in done or n not in selected for n in needs[stem])

    # longest chain first: a notebook's weight is its last wall time (this preset's, else the cpu preset's) plus
    # the heaviest weight among the notebooks that need it, so the critical path never waits behind short chapters
    last = _last_timings(runs_p, preset)

    @functools.lru_cache(maxsize=None)
    def weight(stem: str) -> float:
        return last.get(stem, 0.0) + max((weight(t) for t in stems if stem in needs[t]), default=0.0)

    with tempfile.TemporaryDirectory(prefix="smart_book_") as tmp:
        try:
            while pending or running:
                while failure is None and len(running) < jobs:
                    go = sorted((s for s in pending if ready(s)), key=weight, reverse=True)
                    if not go:
                        break
                    stem = go[0]
                    pending.remove(stem)
                    alone = not running and len(go) == 1
                    env = dict(os.environ) if alone else dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                    cmd = [sys.executable, "-m", "smartlib.book", "--preset", preset, "--only", stem, "--root", str(root_p),
                           "--notebooks", str(nb_dir), "--params", str(par_dir), "--out", str(out_p), "--runs", str(runs_p),
                           "--force"]  # this process already found it not current
                    out = Path(tmp) / f"{stem}.log"
                    with open(out, "w") as fh:
                        running[stem] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), out, time.perf_counter())
                    threads[stem] = _threads(env)
                    log(f"{stem}: started ({'all cores' if alone else 'one thread'}; {len(running)} running)")
                if not running:
                    if pending and failure is None:  # nothing can start: the needs of the rest cannot be met
                        raise SmartError(f"notebooks {', '.join(pending)}: their metadata smart.needs cannot be met")
                    break
                time.sleep(0.5)
                for stem, (proc, out, t0) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    del running[stem]
                    seconds = time.perf_counter() - t0
                    if proc.returncode == 0:
                        done.add(stem)
                        timings[stem] = round(seconds, 2)
                        _write_timings(timings_file, preset, {stem: timings[stem]}, {stem: threads[stem]})
                        log(f"{stem}: {seconds:7.1f} s  -> {_rel(out_p / f'{stem}.ipynb', root_p)}")
                    elif failure is None:
                        errors = [ln[len("error: "):] for ln in out.read_text(errors="replace").splitlines() if ln.startswith("error: ")]
                        failure = errors[-1] if errors else f"notebook {stem} failed (exit {proc.returncode})"
                        log(f"{stem}: FAILED after {seconds:.1f} s")
        except BaseException:  # interrupted or failed here: stop the notebooks still running, as Ctrl-C would
            import signal

            for proc, _, _ in running.values():
                proc.send_signal(signal.SIGINT)
            raise
        if failure is not None:
            raise SmartError(failure)
    log(f"{len(timings)} notebook(s) at preset '{preset}' in {sum(timings.values()):.1f} s of notebook time, "
        f"{jobs} at a time; timings in {_rel(timings_file, root_p)}")
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m smartlib.book``: one notebook run of a ``jobs > 1`` book (the parent process starts these)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m smartlib.book")
    for a in ("--preset", "--root", "--notebooks", "--params", "--out", "--runs"):
        p.add_argument(a, required=True)
    p.add_argument("--only", nargs="+", required=True)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    try:
        execute_notebooks(a.preset, only=a.only, notebooks_dir=a.notebooks, params_dir=a.params, out_dir=a.out,
                          runs_dir=a.runs, root=a.root, record_timings=False, force=a.force)
    except SmartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0



@contextlib.contextmanager
def _inline_figures() -> Iterator[None]:
    """Hide ``MPLBACKEND`` from the kernels: ipykernel picks the inline backend only when it is unset,
    and a non-interactive backend (``Agg``) would leave every figure out of the executed notebooks."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def _run_plan(
    plan: list[tuple[str, Path, dict[str, Any], int]],
    preset: str,
    root_p: Path,
    nb_dir: Path,
    out_p: Path,
    runs_p: Path,
    log: Callable[[str], Any],
    record_timings: bool = True,
    stamps: Mapping[str, str] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, float]:
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    timings_file = runs_p / preset / "book_timings.json"
    timings = {} if timings is None else timings  # filled as notebooks finish (the caller keeps it on failure)
    for stem, path, merged, params_index in plan:
        rel = _rel(path, root_p)
        final = out_p / f"{stem}.ipynb"
        failed = out_p / f"{stem}.failed.ipynb"
        tmp = out_p / f".{stem}.{os.getpid()}.running.ipynb"
        _remove_stale_copies(out_p, stem)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(path),
                str(tmp),
                parameters=merged,
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                cwd=str(nb_dir),
            )
        except PapermillExecutionError as exc:
            _keep_failed(tmp, failed)
            where = _failed_cell_number(exc, params_index)
            evalue = " ".join(str(exc.evalue).split())
            log(f"{stem}: FAILED after {time.perf_counter() - t0:.1f} s; executed copy kept in {_rel(failed, root_p)}")
            raise SmartError(f"{rel} failed at cell {where}: {exc.ename}: {evalue}") from None
        except BaseException as exc:
            _keep_failed(tmp, failed)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log(f"{stem}: FAILED after {time.perf_counter() - t0:.1f} s")
            raise SmartError(f"{rel} failed: {type(exc).__name__}: {exc}") from None
        seconds = time.perf_counter() - t0
        if stamps and stem in stamps:  # the executed copy says which sources it was run from (see the module)
            nb = nbformat.read(tmp, as_version=4)
            nb.metadata.setdefault("smart", {})["stamp"] = stamps[stem]
            nbformat.write(nb, tmp)
        os.replace(tmp, final)
        failed.unlink(missing_ok=True)
        timings[stem] = round(seconds, 2)
        if record_timings:
            _write_timings(timings_file, preset, {stem: timings[stem]}, {stem: _threads(os.environ)})
        log(f"{stem}: {seconds:7.1f} s  -> {_rel(final, root_p)}")
    if record_timings:
        total = sum(timings.values())
        log(f"{len(timings)} notebook(s) at preset '{preset}' in {total:.1f} s; timings in {_rel(timings_file, root_p)}")
    return timings


def _read_log(path: Path) -> dict[str, Any]:
    """The JSON object in a book log (timings, sittings); ``{}`` when it is missing, unreadable or not an
    object, so that a corrupt log is rewritten rather than stopping a run."""
    try:
        data = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_timings(runs_p: Path, preset: str) -> dict[str, float]:
    """Wall seconds per notebook of the last run of ``preset`` (else of the cpu preset; else none)."""
    for name in (preset, "cpu"):
        seconds = _read_log(runs_p / name / "book_timings.json").get("seconds")
        if isinstance(seconds, dict) and seconds:
            return {k: float(v) for k, v in seconds.items() if isinstance(v, (int, float))}
    return {}


def _remove_stale_copies(out_p: Path, stem: str) -> None:
    """Remove the partial copies ``.<stem>.<pid>.running.ipynb`` of a process that no longer runs (one killed
    with SIGKILL or by a power cut never reaches its own clean-up); a running process's copy is kept."""
    if os.name != "posix":
        return
    for path in out_p.glob(f".{stem}.*.running.ipynb"):
        pid = path.name[len(stem) + 2:-len(".running.ipynb")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass  # another user's live process, or not a pid: leave it


def _keep_failed(tmp: Path, failed: Path) -> None:
    if tmp.exists():
        os.replace(tmp, failed)


def _threads(env: Mapping[str, str]) -> int:
    """CPU threads a notebook kernel started with ``env`` computes with (``OMP_NUM_THREADS``, else every core)."""
    try:
        return int(env.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1)
    except ValueError:
        return os.cpu_count() or 1


def _log_sitting(path: Path, sitting: Mapping[str, Any]) -> None:
    """Append one sitting (one ``execute_notebooks`` call) to the preset's sittings file (atomic write)."""
    data: dict[str, Any] = {"sittings": []}
    old = _read_log(path)
    if isinstance(old.get("sittings"), list):
        data["sittings"] = old["sittings"]
    data["sittings"].append(dict(sitting))
    data["total_wall_s"] = round(sum(float(x.get("wall_s", 0)) for x in data["sittings"]), 1)
    write_json(path, data)


def _write_timings(path: Path, preset: str, new: Mapping[str, float], threads: Mapping[str, int] | None = None) -> None:
    """Merge ``new`` (and the threads each notebook ran with) into the preset's timing file (atomic write)."""
    data: dict[str, Any] = {"preset": preset, "seconds": {}, "threads": {}}
    old = _read_log(path)
    if isinstance(old.get("seconds"), dict):
        data["seconds"].update(old["seconds"])
        data["threads"].update(old.get("threads") or {})
    data["seconds"].update(new)
    data["threads"].update(threads or {})
    data["threads"] = dict(sorted(data["threads"].items()))
    data["seconds"] = dict(sorted(data["seconds"].items()))
    data["total_seconds"] = round(sum(data["seconds"].values()), 2)
    data["cpu_count"] = os.cpu_count()
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(path, data)


def _rel(p: Path, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root))
    except ValueError:
        return str(p)


if __name__ == "__main__":
    raise SystemExit(main())
