"""Helpers shared by several test modules (pytest puts this folder on sys.path)."""
from __future__ import annotations

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
