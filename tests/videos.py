"""Short names for the videos the Django-level tests need (see media_factory)."""

from __future__ import annotations

from pathlib import Path

from tests import media_factory
from tests.media_factory import text_file, truncated

__all__ = ["testsrc", "text_file", "truncated"]


def testsrc(
    path: Path,
    *,
    seconds: float = 4,
    size: str = "160x120",
    rate: int = 10,
    codec: str = "libx264",
) -> Path:
    width, height = (int(v) for v in size.split("x"))
    return media_factory.testsrc(
        path, duration=seconds, fps=rate, size=(width, height), vcodec=codec
    )
