"""``smart finetune`` and ``smart evaluate`` (downstream studies)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Filled in by the downstream modules."""
