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


class VolumeWarning(UserWarning):
    """A volume that loads but deserves a look (e.g. a gantry-tilted DICOM series); ``smart data check``
    lists these as problems."""


def short_error(exc: BaseException, limit: int = 160) -> str:
    """``"ExcType: message"`` on one line, cut to ``limit`` characters (for error messages)."""
    msg = " ".join(str(exc).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
