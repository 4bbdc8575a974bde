"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

import numpy as np
import pytest

from smartlib.errors import SmartError


def raises_smart(fn, *args, words=(), **kwargs) -> str:
    """Call ``fn``; assert it raises SmartError whose one-line message contains every word."""
    with pytest.raises(SmartError) as ei:
        fn(*args, **kwargs)
    msg = str(ei.value)
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    return msg


def mw_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann–Whitney AUC by pairwise comparison (ties count ½): an independent reference for the library's AUC."""
    pos, neg = s[y == 1], s[y == 0]
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)
