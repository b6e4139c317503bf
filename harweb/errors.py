"""How a failure is recorded on a row: one line for people, the traceback for us."""

from __future__ import annotations

import traceback


def failure_fields(exc: BaseException) -> dict[str, str]:
    """``error`` (first line of the message, or the type) and ``traceback``."""
    lines = str(exc).strip().splitlines()
    return {
        "error": (lines[0] if lines else type(exc).__name__)[:500],
        "traceback": "".join(traceback.format_exception(exc)),
    }
