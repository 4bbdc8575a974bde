"""Recorded runs (smartlib/archive.py): record a tiny run, verify it, and make every check fail once."""
from __future__ import annotations

import json

import pytest

from smartlib import archive
from smartlib.archive import record, verify
from smartlib.cli import main
from smartlib.errors import SmartError
from smartlib.io import read_json, write_json
from smartlib.pretrain import pretrain
from smartlib.variants import variant_config


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/smoke as ``make book`` leaves it: a chapter's results and checkpoint, one full smoke pretraining."""
    root = tmp_path_factory.mktemp("runs")
    chapter = root / "smoke" / "01_pretraining"
    (chapter / "downstream").mkdir(parents=True)
    (chapter / "summary.csv").write_text("variant,loss\nsmart,1.5\n")
    (chapter / "downstream" / "results.json").write_text('{"auc": 0.7}')
    (chapter / "downstream" / "model.pt").write_bytes(b"\0" * 64)  # a checkpoint: never archived
    (chapter / "figure.png").write_bytes(b"\x89PNG not really")
    write_json(root / "smoke" / "book_timings.json", {"preset": "smoke", "seconds": {"01_pretraining": 3.0},
                                                      "total_seconds": 3.0, "threads": {"01_pretraining": 1}})
    write_json(root / "smoke" / "book_sittings.json", {"sittings": [
        {"started": "a", "wall_s": 5.0, "completed": False, "jobs": 2, "notebooks_run": {}, "skipped_current": []},
        {"started": "b", "wall_s": 7.5, "completed": True, "jobs": 2, "notebooks_run": {"01_pretraining": 3.0},
         "skipped_current": []}], "total_wall_s": 12.5})
    pretrain(variant_config("smart", "smoke"), root / "smoke" / "pretrain" / "smart", progress=False, log=_quiet)
    _executed(root / "executed", "01_pretraining")
    return root


def _executed(folder, stem, stamp=None):
    """An executed copy of ``stem`` as `smart book execute` leaves it: stamped with the sources it ran from."""
    import nbformat

    from smartlib.book import notebook_stamps

    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["smart"] = {"stamp": stamp or notebook_stamps("smoke")[stem]}
    nbformat.write(nb, folder / f"{stem}.ipynb")


@pytest.fixture()
def archived(runs, tmp_path):
    return record("smoke", runs_dir=runs, out=tmp_path / "results", executed=runs / "executed")


def _rehash(root, rel):
    """Update one file's hash in provenance.json, so that only the check after the hashes can catch the edit."""
    prov = read_json(root / "provenance.json")
    prov["files"][rel] = archive._sha256(root / rel)
    write_json(root / "provenance.json", prov)


def test_record_keeps_results_and_provenance_not_checkpoints(archived, runs):
    assert (archived / "01_pretraining" / "summary.csv").read_text() == "variant,loss\nsmart,1.5\n"
    assert (archived / "01_pretraining" / "downstream" / "results.json").is_file()
    assert not list(archived.rglob("*.pt"))
    assert {p.name for p in (archived / "pretrain" / "smart").iterdir()} == {"config.json", "summary.json", "metrics.jsonl"}
    prov = read_json(archived / "provenance.json")
    assert prov["preset"] == "smoke" and len(prov["commit"]) == 40
    assert prov["runs"]["smart"] == read_json(runs / "smoke" / "pretrain" / "smart" / "config.json")
    assert prov["wall_s"] == {"01_pretraining": 3.0} and prov["threads"] >= 1
    assert prov["notebook_threads"] == {"01_pretraining": 1}
    # a run over two sittings: both are listed and their wall times add up
    assert [x["wall_s"] for x in prov["sittings"]] == [5.0, 7.5] and prov["sittings_wall_s"] == 12.5
    logged = (runs / "smoke" / "pretrain" / "smart" / "metrics.jsonl").read_text().splitlines()
    assert prov["run_compute"]["smart"]["steps_logged"] == len(logged) > 0
    assert prov["run_compute"]["smart"]["step_time_s"] == pytest.approx(sum(json.loads(x)["step_time"] for x in logged), abs=0.1)
    assert prov["libraries"]["torch"] != "not installed" and prov["machine"]["cpu_count"] >= 1
    listed = set(prov["files"])
    on_disk = {p.relative_to(archived).as_posix() for p in archived.rglob("*") if p.is_file()} - {"provenance.json"}
    assert listed == on_disk and "pretrain/smart/metrics.jsonl" in listed


def test_verify_passes_on_the_record_and_replays(archived):
    lines = verify("smoke", results=archived.parent, steps=2, log=_quiet)
    assert any("first 2 steps replayed" in line for line in lines)
    assert any("files match" in line for line in lines)


def test_verify_catches_an_edited_file(archived):
    (archived / "01_pretraining" / "summary.csv").write_text("variant,loss\nsmart,1.4\n")
    with pytest.raises(SmartError, match="summary.csv: sha256 differs"):
        verify("smoke", results=archived.parent, steps=0, log=_quiet)


def test_verify_catches_a_missing_and_an_added_file(archived):
    (archived / "figure2.png").write_bytes(b"x")
    with pytest.raises(SmartError, match="figure2.png: not listed"):
        verify("smoke", results=archived.parent, steps=0, log=_quiet)
    (archived / "figure2.png").unlink()
    (archived / "01_pretraining" / "figure.png").unlink()
    with pytest.raises(SmartError, match="figure.png: listed in provenance.json but missing"):
        verify("smoke", results=archived.parent, steps=0, log=_quiet)


def test_replay_catches_a_recorded_loss_that_the_config_does_not_give(archived):
    """Positive control for the replay: a recorded loss off by 10 % (hash updated) is caught at its step."""
    rel = "pretrain/smart/metrics.jsonl"
    recs = [json.loads(line) for line in (archived / rel).read_text().splitlines()]
    recs[1]["loss"] *= 1.10
    (archived / rel).write_text("".join(json.dumps(r) + "\n" for r in recs))
    _rehash(archived, rel)
    verify("smoke", results=archived.parent, steps=1, log=_quiet)  # step 0 alone still matches
    with pytest.raises(SmartError, match=r"pretrain/smart: step 1: replayed loss .* \(relative difference 9\.\d+% > 2\.00%\)"):
        verify("smoke", results=archived.parent, steps=2, log=_quiet)


def test_verify_catches_a_config_this_repository_no_longer_runs(archived):
    rel = "pretrain/smart/config.json"
    cfg = read_json(archived / rel)
    cfg["lr"] = cfg["lr"] * 2
    write_json(archived / rel, cfg)
    _rehash(archived, rel)
    with pytest.raises(SmartError, match=r"pretrain/smart: recorded config is not what this repository runs .*\(lr: recorded"):
        verify("smoke", results=archived.parent, steps=0, log=_quiet)


def test_verify_catches_an_unknown_commit(archived):
    prov = read_json(archived / "provenance.json")
    prov["commit"] = "0" * 40
    write_json(archived / "provenance.json", prov)
    with pytest.raises(SmartError, match="commit 000000000000, which is not in this repository"):
        verify("smoke", results=archived.parent, steps=0, log=_quiet)


def test_record_leaves_out_large_files(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "MAX_FILE_BYTES", 20)
    out = record("smoke", runs_dir=runs, out=tmp_path / "results", executed=runs / "executed")
    prov = read_json(out / "provenance.json")
    assert not (out / "01_pretraining" / "summary.csv").exists()
    assert any(line.startswith("01_pretraining/summary.csv (") for line in prov["left_out"])


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, runs):
    assert main(["results", "record", "cpu", "--runs-dir", str(tmp_path / "none"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no runs of preset 'cpu'" in err and not (tmp_path / "r").exists()
    (tmp_path / "empty" / "cpu").mkdir(parents=True)
    with pytest.raises(SmartError, match="holds no chapter results"):
        record("cpu", runs_dir=tmp_path / "empty", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert main(["results", "verify", "smoke", "--results", str(tmp_path / "r")]) == 2
    assert "provenance.json: no such file" in capsys.readouterr().err
    with pytest.raises(SmartError, match="steps=-1"):
        verify("smoke", results=tmp_path, steps=-1)
    with pytest.raises(SmartError, match="rtol=0"):
        verify("smoke", results=tmp_path, rtol=0)
    out = record("smoke", runs_dir=runs, out=tmp_path / "r", executed=runs / "executed")
    (out / "provenance.json").write_text("{not json")
    with pytest.raises(SmartError, match="provenance.json: not readable as JSON"):
        verify("smoke", results=tmp_path / "r", log=_quiet)
    (out / "provenance.json").write_text("[1, 2]")
    with pytest.raises(SmartError, match="provenance.json: holds a JSON list, not a provenance record"):
        verify("smoke", results=tmp_path / "r", log=_quiet)
    write_json(out / "provenance.json", {"preset": "cpu", "files": {}, "runs": {}, "commit": None})
    with pytest.raises(SmartError, match="records preset 'cpu', not 'smoke'"):
        verify("smoke", results=tmp_path / "r", log=_quiet)


def test_cli_record_and_verify(runs, tmp_path, capsys):
    assert main(["results", "record", "smoke", "--runs-dir", str(runs), "--results", str(tmp_path / "r"),
                 "--executed", str(runs / "executed")]) == 0
    assert main(["results", "verify", "smoke", "--results", str(tmp_path / "r"), "--steps", "1"]) == 0
    assert "verified" in capsys.readouterr().out


def test_recorded_table_lists_each_archive(archived, tmp_path):
    from smartlib.archive import recorded_table

    t = recorded_table(archived.parent)
    assert list(t["preset"]) == ["smoke"] and t.loc[0, "runs"] == 1 and t.loc[0, "wall_min"] == 0.1
    assert t.loc[0, "files"] == len(read_json(archived / "provenance.json")["files"])
    empty = recorded_table(tmp_path / "nothing")
    assert empty.empty and "commit" in empty.columns
    (archived / "provenance.json").write_text("{")
    with pytest.raises(SmartError, match="provenance.json: not readable"):
        recorded_table(archived.parent)


def test_runs_needing_files_outside_the_archive_are_hashed_not_replayed(runs, tmp_path):
    """A run on a pool folder inside the runs folder: archived with a relative path, reported, not replayed."""
    import shutil

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    pool_run = copy / "smoke" / "pretrain" / "swin-self"
    shutil.copytree(copy / "smoke" / "pretrain" / "smart", pool_run)
    cfg = read_json(pool_run / "config.json")
    cfg["data"] = str((copy / "smoke" / "pools" / "self" / "manifest.csv").resolve())
    write_json(pool_run / "config.json", cfg)
    out = record("smoke", runs_dir=copy, out=tmp_path / "results", executed=copy / "executed")
    archived = read_json(out / "pretrain" / "swin-self" / "config.json")
    assert archived["data"] == "{runs}/smoke/pools/self/manifest.csv"
    assert str(tmp_path) not in (out / "provenance.json").read_text()
    lines = verify("smoke", results=out.parent, steps=1, log=_quiet)
    assert any("swin-self: not replayed from the archive (trained on {runs}/smoke/pools/self/manifest.csv" in x for x in lines)
    assert any("pretrain/smart: first 1 steps replayed" in x for x in lines)


def test_verify_needs_every_chapter_current_when_recorded(runs, tmp_path):
    """The recorded commit must be where each chapter's results came from: a chapter whose executed notebook ran
    from other sources (or did not run) fails verify, naming it; a current one passes with its stamp recorded."""
    out = record("smoke", runs_dir=runs, out=tmp_path / "ok", executed=runs / "executed")
    chapters = read_json(out / "provenance.json")["chapters"]
    assert chapters == {"01_pretraining": {"stamp": chapters["01_pretraining"]["stamp"], "current": True}}
    lines = verify("smoke", results=out.parent, steps=0, log=_quiet)
    assert any("all 1 chapters were current when recorded; 1 of them would run from the same sources" in x for x in lines)
    _executed(tmp_path / "stale", "01_pretraining", stamp="0" * 64)
    out = record("smoke", runs_dir=runs, out=tmp_path / "bad", executed=tmp_path / "stale")
    with pytest.raises(SmartError, match="chapter 01_pretraining was not current when recorded"):
        verify("smoke", results=out.parent, steps=0, log=_quiet)
    out = record("smoke", runs_dir=runs, out=tmp_path / "none", executed=tmp_path / "nothing-executed")
    with pytest.raises(SmartError, match="chapter 01_pretraining was not current"):
        verify("smoke", results=out.parent, steps=0, log=_quiet)
