"""The chapters' view of recorded runs (smartlib.recorded): what is shown, with which label, and bad archives."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from smartlib.errors import SmartError
from smartlib.recorded import VIEWS, provenance_label, recorded_presets, show_recorded

ROOT = Path(__file__).resolve().parent.parent


def _archive(root: Path, preset: str, commit: str = "abcdef0123456789", dirty: bool = False) -> Path:
    arch = root / preset
    (arch / "03_nodule_malignancy").mkdir(parents=True)
    (arch / "03_nodule_malignancy" / "summary.csv").write_text("init,auc\nscratch,0.61\nsmart,0.74\n")
    (arch / "03_nodule_malignancy" / "comparisons.csv").write_text("a,b,diff\nsmart,scratch,0.13\n")
    (arch / "provenance.json").write_text(json.dumps({
        "preset": preset, "commit": commit, "dirty": dirty, "recorded": "2026-12-07T12:00:00+0000",
        "machine": {"cpu": "x86_64", "cpu_count": 2, "gpu": None}, "threads": 2,
        "notebook_threads": {"03_nodule_malignancy": 1}, "wall_s": {"03_nodule_malignancy": 1260.0}, "total_wall_s": 9000.0,
        "sittings": [{"wall_s": 6000.0}, {"wall_s": 4800.0}], "sittings_wall_s": 10800.0}))
    return arch


def test_shows_each_recorded_preset_but_the_live_one(tmp_path: Path) -> None:
    _archive(tmp_path, "long")
    _archive(tmp_path, "gpu", commit="1234567890abcdef")
    seen: list = []
    shown = show_recorded("03_nodule_malignancy", tmp_path, live="gpu", display=seen.append)
    # the chapter's files of the long record only, in VIEWS order; a view the record lacks (the figure) is skipped
    assert shown == ["long/03_nodule_malignancy/summary.csv", "long/03_nodule_malignancy/comparisons.csv"]
    label = seen[0]
    assert "preset long" in label and "abcdef0123" in label and "last execution 21 min" in label and "1 CPU thread," in label, label
    assert "the whole run 180 min over 2 sittings" in label
    assert "1234567890" not in " ".join(map(str, seen))  # nothing of the live preset's record
    tables = [x for x in seen if hasattr(x, "columns")]
    assert [list(t["init"]) for t in tables[:1]] == [["scratch", "smart"]] and tables[0]["auc"].tolist() == [0.61, 0.74]
    assert recorded_presets(tmp_path) == ["gpu", "long"] and recorded_presets(tmp_path, live="long") == ["gpu"]


def test_nothing_recorded_says_so(tmp_path: Path) -> None:
    seen: list = []
    assert show_recorded("00_data", tmp_path / "absent", live="cpu", display=seen.append) == []
    assert len(seen) == 1 and "No recorded run" in seen[0]
    _archive(tmp_path, "long")
    seen.clear()
    assert show_recorded("07_organ_clustering", tmp_path, live="cpu", display=seen.append) == []
    assert "holds no results of this chapter" in seen[-1]


def test_label_marks_uncommitted_changes_and_whole_run(tmp_path: Path) -> None:
    _archive(tmp_path, "long", dirty=True)
    assert "uncommitted changes" in provenance_label(tmp_path, "long", "03_nodule_malignancy")
    whole = provenance_label(tmp_path, "long")  # the whole run: the sittings' wall times added, 2 threads
    assert "180 min over 2 sittings" in whole and "2 CPU threads" in whole, whole


def test_bad_arguments_and_bad_archives(tmp_path: Path) -> None:
    with pytest.raises(SmartError, match="chapter 'nope'"):
        show_recorded("nope", tmp_path, display=list().append)
    arch = _archive(tmp_path, "long")
    (arch / "03_nodule_malignancy" / "summary.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SmartError, match="summary.csv: not readable as CSV"):
        show_recorded("03_nodule_malignancy", tmp_path, display=list().append)
    (arch / "provenance.json").write_text("{not json")
    with pytest.raises(SmartError, match="provenance.json: not readable"):
        provenance_label(tmp_path, "long")


def test_every_chapter_shows_its_own_recorded_views() -> None:
    stems = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(VIEWS) == stems
    for stem in stems:
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        calls = [c.source for c in nb.cells if c.cell_type == "code" and "show_recorded(" in c.source]
        assert len(calls) == 1 and f'show_recorded("{stem}", results_dir, live=preset)' in calls[0], stem


def test_figures_are_shown_as_images(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.display import Image

    arch = _archive(tmp_path, "long")
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(arch / "03_nodule_malignancy" / "auc_vs_fraction.png")
    plt.close(fig)
    seen: list = []
    shown = show_recorded("03_nodule_malignancy", tmp_path, live="cpu", display=seen.append)
    assert shown[-1] == "long/03_nodule_malignancy/auc_vs_fraction.png"
    images = [x for x in seen if isinstance(x, Image)]
    assert len(images) == 1 and images[0].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_in_a_notebook_text_is_markdown_and_tables_are_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display
    import pandas as pd

    seen: list = []
    monkeypatch.setattr(IPython.display, "display", seen.append)  # the default display, as in a kernel
    _archive(tmp_path, "long")
    show_recorded("03_nodule_malignancy", tmp_path, live="cpu")
    texts = [x for x in seen if not isinstance(x, pd.DataFrame)]
    assert texts and all(isinstance(x, IPython.display.Markdown) for x in texts), [type(x) for x in seen]
    assert "preset long" in texts[0].data and "`long/03_nodule_malignancy/summary.csv`" in texts[1].data
    assert sum(isinstance(x, pd.DataFrame) for x in seen) == 2
