"""One exception type for every user-facing input problem.

The CLI catches :class:`SmartError` and prints its message as a single line
(``error: <message>``) with exit status 2, never a traceback. Library code
raises it with a message that names the offending file or value and says
what is wrong with it.
"""
from __future__ import annotations


class SmartError(ValueError):
    """Bad input: a file, value or configuration the user must fix."""

    def __init__(self, message: str) -> None:
        # keep it to one line so the CLI prints exactly one line
        super().__init__(" ".join(str(message).split()))
