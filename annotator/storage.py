"""Where derived files live under MEDIA_ROOT, and how they are written safely."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings


def media_path(*parts: str | int) -> Path:
    return Path(settings.MEDIA_ROOT).joinpath(*map(str, parts))


def onnx_cache_dir() -> Path:
    """Where the int8 ONNX graphs live: one cache for the proposal workers,
    the training step and downloads (keyed inside by weights fingerprint)."""
    return media_path("cache", "onnx")


def relative(path: Path) -> str:
    """The path as stored in a FileField (relative to MEDIA_ROOT)."""
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def write_atomically(dst: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then move tmp to dst, so dst is never half-written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-", suffix=dst.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
