"""Atomic writers, checkpoint loading, seeding and RNG-state round trips, one-line errors."""
from __future__ import annotations

import csv
import random

import numpy as np
import pytest
import torch

from smartlib.errors import SmartError
from smartlib.io import atomic_dir, atomic_path, load_torch, read_json, save_torch, write_csv, write_json
from smartlib.seed import rng_state, seed_everything, set_rng_state


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ atomic writers
def test_atomic_path_success_leaves_only_target(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert _names(target.parent) == ["a.txt"]


def test_atomic_path_exception_keeps_old_target(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["a.txt"]
    # and with no previous target: still absent
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("x")
            raise KeyboardInterrupt
    assert _names(tmp_path) == ["a.txt"]


def test_atomic_dir_success_replaces_whole_folder(tmp_path):
    target = tmp_path / "cache"
    with atomic_dir(target) as tmp:
        (tmp / "one.txt").write_text("1")
        assert not target.exists()
    assert _names(target) == ["one.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "two.txt").write_text("2")
    assert _names(target) == ["two.txt"]  # old content gone, not merged
    assert _names(tmp_path) == ["cache"]


def test_atomic_dir_exception_leaves_target_untouched_or_absent(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "new") as tmp:
            (tmp / "part.txt").write_text("p")
            raise ValueError("fail")
    assert _names(tmp_path) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("k")
    with pytest.raises(ValueError):
        with atomic_dir(old) as tmp:
            (tmp / "part.txt").write_text("p")
            raise ValueError("fail")
    assert _names(tmp_path) == ["old"] and _names(old) == ["keep.txt"]
    assert (old / "keep.txt").read_text() == "k"


def test_write_read_json_with_numpy_and_torch(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(3), "c": torch.tensor([1.0, 2.0]), "d": torch.tensor(4), "p": tmp_path,
           "nan": float("nan")}
    p = write_json(tmp_path / "x.json", obj)
    back = read_json(p)
    assert back["a"] == 1.5 and back["b"] == [0, 1, 2] and back["c"] == [1.0, 2.0] and back["d"] == 4
    assert back["p"] == str(tmp_path) and back["nan"] is None  # strict JSON: NaN is written as null
    assert "NaN" not in p.read_text()
    assert _names(tmp_path) == ["x.json"]
    with pytest.raises(TypeError):
        write_json(tmp_path / "y.json", {"f": object()})
    assert _names(tmp_path) == ["x.json"]  # the failed write left nothing


def test_write_csv_union_of_columns(tmp_path):
    p = write_csv(tmp_path / "t.csv", [{"a": 1, "b": np.float64(2.5)}, {"c": "z", "a": 3}])
    with open(p, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["a", "b", "c"]
    assert rows == [{"a": "1", "b": "2.5", "c": ""}, {"a": "3", "b": "", "c": "z"}]
    assert _names(tmp_path) == ["t.csv"]


def test_save_load_torch_roundtrip(tmp_path):
    obj = {"w": torch.arange(6.0).view(2, 3), "step": 7, "name": "x"}
    p = save_torch(obj, tmp_path / "ck.pt")
    back = load_torch(p)
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 7 and back["name"] == "x"
    assert _names(tmp_path) == ["ck.pt"]


def test_load_torch_missing_and_corrupt(tmp_path):
    with pytest.raises(SmartError, match="nothere.pt"):
        load_torch(tmp_path / "nothere.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SmartError, match="bad.pt"):
        load_torch(tmp_path / "bad.pt")
    # a truncated real checkpoint is corrupt too
    save_torch({"w": torch.zeros(100)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SmartError, match="cut.pt"):
        load_torch(tmp_path / "cut.pt")
    # arbitrary pickled objects are refused (weights_only)
    torch.save({"obj": _Custom()}, tmp_path / "pickle.pt")
    with pytest.raises(SmartError, match="pickle.pt"):
        load_torch(tmp_path / "pickle.pt")
    with pytest.raises(SmartError):  # a folder is not a checkpoint
        load_torch(tmp_path)


class _Custom:
    pass


# ------------------------------------------------------------------ seeding
def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_same_seed_same_draws():
    seed_everything(123)
    a = [_draws() for _ in range(3)]
    seed_everything(123)
    b = [_draws() for _ in range(3)]
    seed_everything(124)
    c = [_draws() for _ in range(3)]
    assert a == b
    for x, y in zip(a[0], c[0]):  # every one of the three streams depends on the seed
        assert x != y


def test_rng_state_roundtrip_restores_all_streams(tmp_path):
    seed_everything(5)
    _draws()
    state = rng_state()
    expected = [_draws() for _ in range(4)]
    # checkpoint-safe: survives save_torch / load_torch (weights_only=True)
    save_torch({"rng": state}, tmp_path / "s.pt")
    restored = load_torch(tmp_path / "s.pt")["rng"]
    seed_everything(999)
    _draws()
    set_rng_state(restored)
    assert [_draws() for _ in range(4)] == expected
    # numpy's gaussian cache is part of the state
    np.random.seed(1)
    np.random.standard_normal()  # leaves one cached gaussian
    st = rng_state()
    nxt = np.random.standard_normal()
    np.random.seed(2)
    set_rng_state(st)
    assert np.random.standard_normal() == nxt


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, None])
def test_bad_seed(seed):
    with pytest.raises(SmartError, match="seed"):
        seed_everything(seed)


def test_large_seed_accepted():
    seed_everything(2**40)
    a = _draws()
    seed_everything(2**40)
    assert _draws() == a
    seed_everything(np.int64(7))


# ------------------------------------------------------------------ errors
def test_smart_error_is_one_line_value_error():
    e = SmartError("bad\nthing   here\n\n  now\t!")
    assert str(e) == "bad thing here now !"
    assert isinstance(e, ValueError)
    assert "\n" not in str(SmartError(ValueError("a\nb")))
