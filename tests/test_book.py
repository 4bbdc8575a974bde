"""The book's structure (notebooks, presets, table of contents) and its papermill executor."""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from smartlib.book import execute_notebooks, find_root, load_params, notebook_parameters, notebook_stamps
from smartlib.errors import SmartError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STEMS = [p.stem for p in NOTEBOOKS]
PRESETS = ["smoke", "cpu", "long", "paper"]
COMMON_KEYS = {"preset", "runs_dir", "seed"}


# --------------------------------------------------------------------------- notebooks


def test_there_are_notebooks() -> None:
    assert "00_data" in STEMS, STEMS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=STEMS)
def test_notebook_is_clean_and_parameterised(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in (c.metadata.get("tags") or [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert nb.cells[tagged[0]].cell_type == "code"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", nb.metadata.get("kernelspec")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} has an execution count"
        assert "injected-parameters" not in (cell.metadata.get("tags") or []), f"{path.name}: papermill output committed"
    declared = notebook_parameters(path)
    assert COMMON_KEYS <= set(declared), f"{path.name}: parameters cell lacks {COMMON_KEYS - set(declared)}"


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", PRESETS)
def test_params_file_matches_notebooks(preset: str) -> None:
    path = ROOT / "params" / f"{preset}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict) and isinstance(raw.get("common"), dict), f"{path.name}: no 'common' mapping"
    common = raw["common"]
    assert common.get("preset") == preset
    assert common.get("runs_dir") == f"../runs/{preset}"
    assert isinstance(common.get("seed"), int) and not isinstance(common["seed"], bool)

    params = load_params(path)
    for key, mapping in params.items():
        if key == "common":
            continue
        # a chapter not written yet may only hold an empty placeholder mapping
        assert key in STEMS or mapping == {}, f"{path.name}: key '{key}' sets {sorted(mapping)} for a notebook that does not exist"
    for stem, nb_path in zip(STEMS, NOTEBOOKS):
        declared = notebook_parameters(nb_path)
        merged = {**params["common"], **params.get(stem, {})}
        unknown = sorted(set(merged) - set(declared))
        assert not unknown, f"{path.name}: sets {unknown} for {stem}, not defined in its parameters cell"


def _literal_defaults(nb_path: Path) -> dict[str, object]:
    out = {}
    for name, src in notebook_parameters(nb_path).items():
        try:
            out[name] = ast.literal_eval(src)
        except (ValueError, SyntaxError):
            pass  # an expression default cannot be compared statically
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=STEMS)
def test_notebook_defaults_are_the_smoke_preset(path: Path) -> None:
    params = load_params(ROOT / "params" / "smoke.yaml")
    merged = {**params["common"], **params.get(path.stem, {})}
    defaults = _literal_defaults(path)
    differing = {k: (v, defaults[k]) for k, v in merged.items() if k in defaults and defaults[k] != v}
    assert not differing, f"{path.name}: smoke preset vs parameters-cell default differ: {differing}"


# --------------------------------------------------------------------------- table of contents


def _toc_files(node: object) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("file", "root") and isinstance(v, str):
                files.append(v)
            else:
                files.extend(_toc_files(v))
    elif isinstance(node, list):
        for v in node:
            files.extend(_toc_files(v))
    return files


def test_toc_points_to_existing_sources() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    assert toc["root"] == "book/intro"
    files = _toc_files(toc)
    missing = []
    for entry in files:
        if entry.startswith("book/executed/"):
            if not (ROOT / "notebooks" / f"{Path(entry).name}.ipynb").is_file():
                missing.append(entry)
        elif not any((ROOT / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")):
            missing.append(entry)
    assert not missing, f"_toc.yml entries without a source: {missing}"
    listed = {Path(f).name for f in files if f.startswith("book/executed/")}
    assert set(STEMS) <= listed, f"notebooks missing from _toc.yml: {sorted(set(STEMS) - listed)}"


def test_config_renders_without_executing() -> None:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    for pattern in (".venv", "runs", "notebooks", "_build"):
        assert pattern in cfg["exclude_patterns"]


def test_find_root() -> None:
    assert find_root(ROOT / "smartlib") == ROOT


# --------------------------------------------------------------------------- execute_notebooks


def _notebook(path: Path, params_src: str, *body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny")]
    if params_src:
        cell = nbformat.v4.new_code_cell(params_src)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells += [nbformat.v4.new_code_cell(src) for src in body]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


OK_BODY = (
    "import json, os, sys\n"
    "import matplotlib\n"
    "json.dump({'preset': preset, 'runs_dir': runs_dir, 'seed': seed, 'word': word,\n"
    "           'cwd': os.getcwd(), 'prefix': sys.prefix, 'backend': matplotlib.get_backend()},\n"
    "          open('seen.json', 'w'))"
)
PARAMS_SRC = 'preset = "smoke"\nruns_dir = "../runs/smoke"\nseed = 0\nword = "default"\n'


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A miniature repository: two notebooks (the second fails) and one preset."""
    _notebook(tmp_path / "notebooks" / "00_ok.ipynb", PARAMS_SRC, OK_BODY)
    _notebook(tmp_path / "notebooks" / "01_bad.ipynb", PARAMS_SRC, "x = 1", "raise ValueError('boom 42')", "y = 2")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "tiny.yaml").write_text(
        "common: {preset: tiny, runs_dir: ../runs/tiny, seed: 3}\n00_ok: {word: hello}\n01_bad: {}\n"
    )
    return tmp_path


def _run(root: Path, preset: str = "tiny", **kw):
    lines: list[str] = []
    t = execute_notebooks(preset, root=root, log=lines.append, **kw)
    return t, lines


def test_execute_success_injects_parameters(book: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")  # must not leak into the kernel (figures would vanish)
    timings, lines = _run(book, only=["00_ok"])
    assert list(timings) == ["00_ok"] and timings["00_ok"] > 0
    seen = json.loads((book / "notebooks" / "seen.json").read_text())
    assert seen["preset"] == "tiny" and seen["runs_dir"] == "../runs/tiny"
    assert seen["seed"] == 3 and seen["word"] == "hello"
    assert Path(seen["cwd"]).resolve() == (book / "notebooks").resolve()
    # the kernel runs in the same environment as the caller (the venv's python, not a system one)
    assert Path(seen["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert "inline" in seen["backend"], seen["backend"]
    assert os.environ["MPLBACKEND"] == "Agg"  # restored for the caller
    out = nbformat.read(book / "book" / "executed" / "00_ok.ipynb", as_version=4)
    assert any("injected-parameters" in (c.metadata.get("tags") or []) for c in out.cells)
    left = sorted(p.name for p in (book / "book" / "executed").iterdir())
    assert left == ["00_ok.ipynb"], left
    saved = json.loads((book / "runs" / "tiny" / "book_timings.json").read_text())
    assert saved["preset"] == "tiny" and set(saved["seconds"]) == {"00_ok"}
    assert any(line.startswith("00_ok:") for line in lines)


def test_execute_failure_names_notebook_and_keeps_previous(book: Path) -> None:
    executed = book / "book" / "executed"
    with pytest.raises(SmartError) as err:
        _run(book)
    msg = str(err.value)
    assert msg == "notebooks/01_bad.ipynb failed at cell 4: ValueError: boom 42", msg
    assert (executed / "00_ok.ipynb").is_file()  # the notebook before it completed
    assert not (executed / "01_bad.ipynb").exists()
    assert (executed / "01_bad.failed.ipynb").is_file()
    assert not [p for p in executed.iterdir() if p.name.startswith(".")]
    assert set(json.loads((book / "runs" / "tiny" / "book_timings.json").read_text())["seconds"]) == {"00_ok"}

    # a previous good copy survives a failed re-run untouched
    (executed / "01_bad.ipynb").write_text("previous")
    with pytest.raises(SmartError, match="01_bad.ipynb failed at cell 4"):
        _run(book, only=["01_bad"])
    assert (executed / "01_bad.ipynb").read_text() == "previous"


def test_execute_unknown_preset(book: Path) -> None:
    with pytest.raises(SmartError, match=r"preset 'nope'.*params/nope.yaml.*tiny"):
        _run(book, preset="nope")
    assert not (book / "book" / "executed").exists()


def test_execute_unknown_stem(book: Path) -> None:
    with pytest.raises(SmartError, match=r"unknown notebook '99_missing'.*00_ok, 01_bad"):
        _run(book, only=["00_ok", "99_missing"])
    assert not (book / "book" / "executed").exists()


def test_execute_needs_parameters_cell(book: Path) -> None:
    _notebook(book / "notebooks" / "02_noparams.ipynb", "", "x = 1")
    with pytest.raises(SmartError, match=r"02_noparams.ipynb: no code cell tagged 'parameters'"):
        _run(book, only=["02_noparams"])


def test_execute_rejects_unknown_parameter(book: Path) -> None:
    (book / "params" / "tiny.yaml").write_text("common: {preset: tiny, runs_dir: x, seed: 0}\n00_ok: {wrod: hi}\n")
    with pytest.raises(SmartError, match=r"params/tiny.yaml: sets wrod for notebooks/00_ok.ipynb"):
        _run(book, only=["00_ok"])


@pytest.mark.parametrize(
    "text, match",
    [
        ("common: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("00_ok: {word: x}\n", "missing the 'common' mapping"),
        ("common: 3\n", "'common' must be a mapping"),
        ("common: {}\n00_ok: {1: x}\n", "not a valid Python variable name"),
    ],
)
def test_execute_malformed_params(book: Path, text: str, match: str) -> None:
    (book / "params" / "tiny.yaml").write_text(text)
    with pytest.raises(SmartError, match=r"tiny\.yaml: .*" + match.replace("[", r"\[")):
        _run(book)
    assert not (book / "book" / "executed").exists()


# --------------------------------------------------------------------------- notebooks side by side (jobs > 1)
STAMP_BODY = (
    "import json, os, time\n"
    "t0 = time.time(); time.sleep(4)\n"
    "json.dump({'start': t0, 'end': time.time(), 'omp': os.environ.get('OMP_NUM_THREADS')},\n"
    "          open(f'stamp_{name}.json', 'w'))"
)


def _stamp_book(root: Path, needs: dict[str, list[str] | None]) -> Path:
    for stem, need in needs.items():
        path = _notebook(root / "notebooks" / f"{stem}.ipynb", PARAMS_SRC.replace("word", "name"), STAMP_BODY)
        nb = nbformat.read(path, as_version=4)
        if need is not None:
            nb.metadata["smart"] = {"needs": need}
        nbformat.write(nb, path)
    (root / "params").mkdir(exist_ok=True)
    (root / "params" / "tiny.yaml").write_text(
        "common: {preset: tiny, runs_dir: ../runs/tiny, seed: 0}\n" + "".join(f"{s}: {{name: {s}}}\n" for s in needs))
    return root


def _stamps(root: Path) -> dict[str, dict]:
    return {p.stem[len("stamp_"):]: json.loads(p.read_text()) for p in (root / "notebooks").glob("stamp_*.json")}


def test_parallel_notebooks_overlap_and_wait_for_their_needs(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": [], "01_b": [], "02_c": ["00_a"], "03_d": None})
    timings, lines = _run(root, jobs=2)
    assert set(timings) == {"00_a", "01_b", "02_c", "03_d"}
    st = _stamps(root)
    # 00_a and 01_b need nothing: they ran at the same time, one thread each
    assert st["00_a"]["start"] < st["01_b"]["end"] and st["01_b"]["start"] < st["00_a"]["end"]
    assert st["00_a"]["omp"] == st["01_b"]["omp"] == "1"
    # 02_c started only after 00_a had finished; 03_d (no metadata) after every notebook before it
    assert st["02_c"]["start"] >= st["00_a"]["end"]
    assert st["03_d"]["start"] >= max(st[s]["end"] for s in ("00_a", "01_b", "02_c"))
    assert st["03_d"]["omp"] is None or st["03_d"]["omp"] == os.environ.get("OMP_NUM_THREADS")  # alone: every core
    saved = json.loads((root / "runs" / "tiny" / "book_timings.json").read_text())
    assert set(saved["seconds"]) == set(timings)
    assert sorted(p.name for p in (root / "book" / "executed").iterdir()) == [f"{s}.ipynb" for s in sorted(timings)]


def test_parallel_failure_is_one_line_and_stops_what_needs_it(book: Path) -> None:
    nb = nbformat.read(book / "notebooks" / "01_bad.ipynb", as_version=4)
    nb.metadata["smart"] = {"needs": []}
    nbformat.write(nb, book / "notebooks" / "01_bad.ipynb")
    _notebook(book / "notebooks" / "02_after.ipynb", PARAMS_SRC, "open('after_ran', 'w')")
    (book / "params" / "tiny.yaml").write_text("common: {preset: tiny, runs_dir: ../runs/tiny, seed: 3}\n00_ok: {word: hi}\n")
    with pytest.raises(SmartError) as err:
        _run(book, jobs=2)
    assert str(err.value) == "notebooks/01_bad.ipynb failed at cell 4: ValueError: boom 42"
    assert (book / "book" / "executed" / "00_ok.ipynb").is_file()
    assert not (book / "notebooks" / "after_ran").exists()  # 02_after needs every notebook before it


def test_parallel_bad_arguments(book: Path) -> None:
    with pytest.raises(SmartError, match="jobs=0"):
        _run(book, jobs=0)
    nb = nbformat.read(book / "notebooks" / "01_bad.ipynb", as_version=4)
    nb.metadata["smart"] = {"needs": ["07_missing"]}
    nbformat.write(nb, book / "notebooks" / "01_bad.ipynb")
    with pytest.raises(SmartError, match=r"01_bad.ipynb: metadata smart.needs names 07_missing"):
        _run(book, jobs=2)


# --------------------------------------------------------------------------- current notebooks are skipped


def test_current_notebooks_are_skipped_and_changes_rerun_them(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": [], "01_b": ["00_a"]})
    first, _ = _run(root)
    assert set(first) == {"00_a", "01_b"}
    stamps = notebook_stamps("tiny", root=root)
    for stem in first:  # each executed copy carries the stamp of the sources it ran from
        assert nbformat.read(root / "book" / "executed" / f"{stem}.ipynb", as_version=4).metadata["smart"]["stamp"] == stamps[stem]
    again, lines = _run(root)
    assert again == {} and sum("current" in ln for ln in lines) == 2, lines
    # a changed parameter of 00_a makes 00_a and, through its needs, 01_b stale
    (root / "params" / "tiny.yaml").write_text((root / "params" / "tiny.yaml").read_text().replace("{name: 00_a}", "{name: a2}"))
    assert notebook_stamps("tiny", root=root)["01_b"] != stamps["01_b"]
    rerun, _ = _run(root)
    assert set(rerun) == {"00_a", "01_b"}
    # an edited notebook is stale alone when nothing needs it; force runs a current one
    path = root / "notebooks" / "01_b.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("z = 3"))
    nbformat.write(nb, path)
    assert set(_run(root)[0]) == {"01_b"}
    assert set(_run(root, only=["00_a"], force=True)[0]) == {"00_a"}


def test_a_stale_or_unstamped_copy_is_run_again(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": []})
    _run(root)
    copy = root / "book" / "executed" / "00_a.ipynb"
    nb = nbformat.read(copy, as_version=4)
    nb.metadata["smart"]["stamp"] = "0" * 64  # run from other sources
    nbformat.write(nb, copy)
    assert set(_run(root)[0]) == {"00_a"}
    nb = nbformat.read(copy, as_version=4)
    del nb.metadata["smart"]  # executed before stamps existed
    nbformat.write(nb, copy)
    assert set(_run(root)[0]) == {"00_a"}


def test_stamps_follow_the_library_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import smartlib.book as book_mod

    root = _stamp_book(tmp_path, {"00_a": []})
    before = notebook_stamps("tiny", root=root)
    fake = tmp_path / "lib" / "smartlib"
    fake.mkdir(parents=True)
    (fake / "book.py").write_text("x = 1\n")
    monkeypatch.setattr(book_mod, "__file__", str(fake / "book.py"))
    changed = notebook_stamps("tiny", root=root)
    (fake / "book.py").write_text("x = 2\n")
    assert changed != before and notebook_stamps("tiny", root=root) != changed


def test_parallel_starts_the_longest_chain_first(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": [], "01_b": [], "02_c": [], "03_d": ["00_a"]})
    # last run's wall times: 00_a is short itself but 03_d needs it, so its chain (1 + 9) is the longest
    (root / "runs" / "tiny").mkdir(parents=True)
    (root / "runs" / "tiny" / "book_timings.json").write_text(json.dumps({"seconds": {"00_a": 1, "01_b": 2, "02_c": 5, "03_d": 9}}))
    _run(root, jobs=2)
    st = _stamps(root)
    first_two = sorted(st, key=lambda s: st[s]["start"])[:2]
    assert set(first_two) == {"00_a", "02_c"}, {s: st[s]["start"] for s in st}
    assert st["01_b"]["start"] >= min(st["00_a"]["end"], st["02_c"]["end"])


def test_every_sitting_is_logged_with_threads(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": [], "01_b": []})
    _run(root, jobs=2)
    _run(root, jobs=2)  # all current: nothing runs, nothing is logged
    nb = nbformat.read(root / "notebooks" / "01_b.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('stop')"))
    nbformat.write(nb, root / "notebooks" / "01_b.ipynb")
    with pytest.raises(SmartError, match="stop"):
        _run(root)
    log = json.loads((root / "runs" / "tiny" / "book_sittings.json").read_text())
    first, failed = log["sittings"]
    assert first["completed"] and set(first["notebooks_run"]) == {"00_a", "01_b"} and first["jobs"] == 2
    assert not failed["completed"] and failed["notebooks_run"] == {} and failed["skipped_current"] == ["00_a"]
    assert log["total_wall_s"] == pytest.approx(first["wall_s"] + failed["wall_s"], abs=0.2)
    timings = json.loads((root / "runs" / "tiny" / "book_timings.json").read_text())
    assert timings["threads"] == {"00_a": 1, "01_b": 1}  # side by side: one thread each


def test_corrupt_timing_and_sittings_logs_are_rewritten_not_fatal(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": []})
    logs = root / "runs" / "tiny"
    logs.mkdir(parents=True)
    (logs / "book_timings.json").write_text("{cut off")
    (logs / "book_sittings.json").write_text("[1, 2]")  # valid JSON, not a log
    _run(root)
    timings = json.loads((logs / "book_timings.json").read_text())
    sittings = json.loads((logs / "book_sittings.json").read_text())
    assert set(timings["seconds"]) == {"00_a"} and timings["seconds"]["00_a"] > 0
    assert len(sittings["sittings"]) == 1 and sittings["sittings"][0]["completed"]


def test_partial_copies_of_a_killed_run_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    root = _stamp_book(tmp_path, {"00_a": []})
    out = root / "book" / "executed"
    out.mkdir(parents=True, exist_ok=True)
    dead = out / ".00_a.4194305.running.ipynb"  # above Linux's largest pid (2^22): no such process
    live = out / f".00_a.{os.getppid()}.running.ipynb"  # a process that runs (this one's parent)
    other = out / ".01_b.4194305.running.ipynb"  # another notebook's: left to that notebook's next run
    for p in (dead, live, other):
        p.write_text("{}")
    _run(root)
    assert not dead.exists() and live.exists() and other.exists()


def test_a_terminated_run_logs_its_sitting_and_stops_its_notebooks(tmp_path: Path) -> None:
    """SIGTERM (a closed session, `kill`) stops `smart book execute` as Ctrl-C does: the sitting is logged as not
    completed and no notebook kernel is left running."""
    import signal
    import subprocess
    import time

    root = _stamp_book(tmp_path, {"00_a": [], "01_b": []})
    for stem in ("00_a", "01_b"):
        path = root / "notebooks" / f"{stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell("import os, time\nopen(f'pid_{name}', 'w').write(str(os.getpid()))\ntime.sleep(120)"))
        nbformat.write(nb, path)
    script = ("from smartlib.cli import _stop_on_signals\nfrom smartlib.book import execute_notebooks\n_stop_on_signals()\n"
              f"execute_notebooks('tiny', root={str(root)!r}, jobs=2)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pids = [root / "notebooks" / f"pid_{s}" for s in ("00_a", "01_b")]
    deadline = time.time() + 120
    while not all(p.is_file() and p.read_text() for p in pids) and time.time() < deadline:
        time.sleep(0.5)
    assert all(p.is_file() for p in pids), proc.stdout.read() if proc.poll() is not None else "kernels did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    log = json.loads((root / "runs" / "tiny" / "book_sittings.json").read_text())
    assert [s["completed"] for s in log["sittings"]] == [False] and log["sittings"][0]["notebooks_run"] == {}
    time.sleep(3)
    for p in pids:  # the kernels are gone
        with pytest.raises(ProcessLookupError):
            os.kill(int(p.read_text()), 0)
