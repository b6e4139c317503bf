"""Small test videos made with the real ffmpeg binary, for any test module.

Every helper writes into a path the caller gives (under pytest's tmp_path)
and returns it. Sizes and lengths are tiny so tests stay fast.

``coded()`` makes videos whose frame n shows n in binary (eight vertical
stripes, bit 0 on the left), so a test can tell exactly which frame a
sampler picked; ``read_code()`` reads the number back from any RGB picture
of such a frame, whatever its size.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

CODE_BITS = 8


def ffmpeg(*args: str | Path) -> None:
    """Run ffmpeg quietly; a failure raises with ffmpeg's own message."""
    # The bundled binary, not media.ffmpeg_exe(): a distro ffmpeg may be too
    # old for -display_rotation (6.0+) and would make the fixtures differ.
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    command = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    done = subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))}: {done.stderr}")


def testsrc(
    path: Path,
    *,
    duration: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: str | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """ffmpeg's testsrc pattern; ``audio`` names an encoder for a sine tone."""
    w, h = size
    args = ["-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={fps}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}"]
        args += ["-c:a", audio]
    args += ["-c:v", vcodec, "-pix_fmt", pix_fmt, *extra, path]
    ffmpeg(*args)
    return path


def webm(path: Path, *, duration: float = 2.0, fps: int = 10) -> Path:
    """VP9 testsrc in WebM, with libvpx's fastest settings."""
    fast = ("-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k")
    return testsrc(path, duration=duration, fps=fps, vcodec="libvpx-vp9", extra=fast)


@dataclass(frozen=True)
class Timing:
    """Frame n's timestamp in ms, as an ffmpeg expression and in Python."""

    expr: str
    ms: Callable[[int], int]

    def times(self, frames: int) -> np.ndarray:
        """Every frame's time in seconds."""
        return np.array([self.ms(n) for n in range(frames)], dtype=np.float64) / 1e3


CFR_10 = Timing("100*N", lambda n: 100 * n)
# 20 frames at ~10 fps with jitter of 0-80 ms, then 25 fps: variable rate.
VFR = Timing(
    "if(lt(N,20),100*N+20*mod(7*N,5),2000+40*(N-20))",
    lambda n: 100 * n + 20 * (7 * n % 5) if n < 20 else 2000 + 40 * (n - 20),
)


def coded(
    path: Path,
    *,
    frames: int = 40,
    timing: Timing = CFR_10,
    size: int = 64,
    vcodec: str = "libx264",
    extra: tuple[str, ...] = (),
) -> Path:
    """A square video whose frame n shows n as stripes and has pts timing(n).

    libx264 keeps its default B-frames, so decode order differs from display
    order; the ms time base keeps the timestamps exact.
    """
    stripe = size // CODE_BITS
    code = f"if(mod(floor(N/pow(2\\,floor(X/{stripe})))\\,2)\\,235\\,16)"
    graph = f"geq=lum='{code}':cb=128:cr=128,settb=1/1000,setpts='{timing.expr}'"
    ffmpeg(
        "-f", "lavfi", "-i", f"nullsrc=s={size}x{size}:r=10",
        "-frames:v", str(frames), "-vf", graph,
        "-fps_mode", "passthrough", "-enc_time_base:v", "1/1000",
        "-c:v", vcodec, "-pix_fmt", "yuv420p", *extra, path,
    )  # fmt: skip
    return path


def read_code(rgb: np.ndarray) -> int:
    """The frame number shown by a coded() frame (H, W, 3), any size."""
    width = rgb.shape[1]
    green = rgb[..., 1].astype(np.float64)
    bits = [
        green[:, int((j + 0.5) * width / CODE_BITS)].mean() > 128
        for j in range(CODE_BITS)
    ]
    return sum(int(bit) << j for j, bit in enumerate(bits))


def expected_codes(timing: Timing, frames: int, grid: np.ndarray) -> list[int]:
    """Which frame is on screen at each grid time (the last one started)."""
    times = timing.times(frames)
    return [int(np.searchsorted(times, t + 1e-6, side="right") - 1) for t in grid]


def remux(
    src: Path, dst: Path, *before_input: str, extra: tuple[str, ...] = ()
) -> Path:
    """Copy the streams into another file (container from dst's suffix)."""
    ffmpeg(*before_input, "-i", src, "-c", "copy", *extra, dst)
    return dst


def rotated(src: Path, dst: Path, degrees: int) -> Path:
    """Same pixels with a display matrix: turn ``degrees`` counter-clockwise."""
    return remux(src, dst, "-display_rotation", str(degrees))


def start_offset(src: Path, dst: Path, seconds: float) -> Path:
    """Same video whose first frame is stamped ``seconds`` late."""
    return remux(src, dst, extra=("-output_ts_offset", str(seconds)))


def faststart(src: Path, dst: Path) -> Path:
    """An mp4 with its index (moov) moved in front of the data."""
    return remux(src, dst, extra=("-movflags", "+faststart"))


def audio_only(path: Path, *, duration: float = 1.0, acodec: str = "aac") -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}",
        "-c:a", acodec, path,
    )  # fmt: skip
    return path


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of src's bytes, as an interrupted upload."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def text_file(path: Path) -> Path:
    """Plain text under a video name."""
    path.write_text("This is not a video.\n" * 200)
    return path


def still_image(path: Path, *, fmt: str = "PNG") -> Path:
    """A picture under whatever name the caller picked."""
    Image.new("RGB", (64, 48), (200, 40, 40)).save(path, format=fmt)
    return path
