"""Small real video files for the Django-level tests, made with ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

from annotator.media import ffmpeg_exe


def ffmpeg(*args: str) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, capture_output=True)


def testsrc(
    path: Path,
    *,
    seconds: float = 4,
    size: str = "160x120",
    rate: int = 10,
    codec: str = "libx264",
) -> Path:
    extra = ["-pix_fmt", "yuv420p"] if codec == "libx264" else []
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=size={size}:rate={rate}:duration={seconds}",
        "-c:v",
        codec,
        *extra,
        str(path),
    )
    return path


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def text_file(path: Path) -> Path:
    path.write_text("this is not a video\n" * 100)
    return path
