"""Shared argument validators: each caller's wording, bounds and broadcasting."""
from __future__ import annotations

import numpy as np
import pytest

from smartlib.data import validate as v
from smartlib.errors import SmartError


@pytest.mark.parametrize("fn, args, message", [
    (v.check_shape, ((4, 4),), "shape=(4, 4): must be 3 integers >= 4 (X, Y, Z)"),
    (v.check_shape, (None,), "shape=None: must be a sequence of 3 positive integers"),
    (v.check_spacing, (-1,), "spacing=(-1, -1, -1): must be 3 positive finite numbers (mm)"),
    (v.check_spacing, ("ab",), "spacing='ab': must be 3 positive numbers (mm)"),
    (v.as_shape, ("shape", 4), "shape=[4, 4, 4]: must be 3 integers >= 8"),
    (v.as_shape, ("shape", None), "shape=None: must be 3 positive integers"),
    (v.as_spacing, ("spacing", -1), "spacing=[-1, -1, -1]: must be a positive number or 3 of them (mm)"),
    (v.as_range, ("radius_mm", (30, 10), 2.0, 60.0), "radius_mm=(30, 10): must satisfy 2.0 <= min <= max <= 60.0"),
    (v.as_range, ("radius_mm", 5, 2.0, 60.0), "radius_mm=5: must be a (min, max) pair"),
    (v.as_float, ("beta0", True, -20.0, 20.0), "beta0=True: must be a number in [-20.0, 20.0]"),
    (v.as_int, ("size", 4, 8, 512), "size=4: must be an integer in [8, 512]"),
    (v.as_roi, (0,), "roi=0: must be a positive integer or three positive integers"),
    (v.as_roi, ((8, 8),), "roi=(8, 8): must be a positive integer or three positive integers"),
    (v.as_target_spacing, (-1.0,), "spacing=-1.0: must be a positive number of mm or three of them (or None)"),
    (v.as_window, ((500, -500),), "hu_window=(500, -500): must be two finite HU values (low, high) with low < high"),
    (v.check_seed, (-1,), "seed=-1: must be a non-negative integer"),
    (v.check_seed, (True,), "seed=True: must be a non-negative integer"),
])
def test_messages(fn, args, message):
    with pytest.raises(SmartError) as ei:
        fn(*args)
    assert str(ei.value) == message


def test_good_values_and_broadcasting():
    assert v.check_shape([np.int64(4), 5, 6]) == (4, 5, 6)
    assert v.check_spacing(np.float32(2.0)) == (2.0, 2.0, 2.0)
    assert v.as_shape("shape", 16) == [16, 16, 16] and v.as_spacing("spacing", 1.5) == [1.5, 1.5, 1.5]
    assert v.as_roi(64) == (64, 64, 64) and v.as_roi(None) is None and v.as_roi((8, 6, 4)) == (8, 6, 4)
    assert v.as_target_spacing(2) == (2.0, 2.0, 2.0) and v.as_target_spacing(None) is None
    assert v.as_window((-1000, 1000)) == (-1000.0, 1000.0) and v.as_window(None) is None
    assert v.as_range("r", [2, 3], 2.0, 60.0) == [2.0, 3.0]
    assert v.check_seed(np.uint32(7)) == 7 and type(v.check_seed(np.uint32(7))) is int
    assert v.is_number(np.float32(1)) and not v.is_number(True) and v.is_int(np.int8(1)) and not v.is_int(1.0)
