"""Video checks, browser proxies, posters and frame sampling, without Django.

Every time this module hands out is in seconds relative to the first video
frame, taken from the stream's own timestamps (pts * time_base). That keeps
variable-frame-rate video from drifting and makes a non-zero start time
harmless; proxies are cut so that their time 0 is that same first frame, so
the browser's ``currentTime`` lines up with these times.

``rotation`` follows FFmpeg's display matrix: the counter-clockwise angle the
picture must be turned before display, normalised to 0/90/180/270. Sampling
and posters apply it with ``np.rot90``, which matches ffmpeg's autorotate.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import ffmpeg
import numpy as np
from PIL import Image

PathLike = str | os.PathLike[str]

# A grid time and a frame time this close count as equal: timestamps are
# integers in a time base, so only float rounding can separate them.
EPS = 1e-6
# Probing decodes at most this many packets from the last keyframe; longer
# GOPs (or none at all) are rare and would make probing as slow as decoding.
MAX_TAIL_PACKETS = 600
# Before the first picture appears a decoder may reject a few packets (an
# open GOP cut mid-way); more failures than this mean the stream is broken.
MAX_LEADING_ERRORS = 16
# Posters further in than this seek instead of decoding from the start.
SEEK_AFTER_S = 5.0
# How many progress callbacks sample_frames makes at most (plus the last).
PROGRESS_STEPS = 20

MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
STILL_IMAGE_FORMATS = {"image2"}  # and every "*_pipe" format (png_pipe, ...)


class MediaError(Exception):
    """A file that cannot be used; ``str(error)`` is one user-facing line."""


@dataclass(frozen=True)
class ProbeResult:
    """What probe() learned about a usable video."""

    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int
    time_base: str
    start_time: float
    video_codec: str
    pix_fmt: str
    audio_codec: str | None
    container: str
    browser_playable: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary: the system one if installed, else imageio-ffmpeg's."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# --------------------------------------------------------------------------
# Opening


@contextmanager
def _open(path: PathLike) -> Iterator[av.container.InputContainer]:
    path = Path(path)
    if not path.is_file():
        raise MediaError("File not found.")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError(_open_failure(path)) from exc
    try:
        yield container
    finally:
        container.close()


def _open_failure(path: Path) -> str:
    # FFmpeg only says "invalid data"; the magic bytes tell a damaged video
    # (an mp4 whose index at the end was cut off) from something else.
    head = _head(path)
    if head[4:8] == b"ftyp" or head[:4] in (b"\x1a\x45\xdf\xa3", b"RIFF"):
        return "The video file is truncated or corrupt (its header is unreadable)."
    return "Not a video file (no recognisable container)."


def _head(path: Path, size: int = 64) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def _video_stream(container: av.container.InputContainer) -> av.VideoStream:
    for stream in container.streams.video:
        # Album art in a music file is a one-picture "video" stream.
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    if container.streams.audio:
        raise MediaError("No video stream: the file only contains audio.")
    raise MediaError("No video stream in the file.")


def _check_decoder(stream: av.VideoStream) -> str:
    name = _codec_name(stream)
    if name is None:
        raise MediaError("Unsupported video codec (no decoder available).")
    return name


def _codec_name(stream: av.stream.Stream) -> str | None:
    """The codec's own name ("mp3", "av1"), not the decoder's ("mp3float")."""
    try:
        return stream.codec_context.codec.canonical_name
    except (AttributeError, av.error.FFmpegError, ValueError):
        return None


def _rotation(frame: av.VideoFrame) -> int:
    return int(round((frame.rotation or 0) / 90.0)) * 90 % 360


def _time_base(stream: av.VideoStream) -> Fraction:
    return Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)


# --------------------------------------------------------------------------
# Probing


@dataclass
class _Scan:
    """What one demux pass over the video packets learned."""

    pts: list[int] = field(default_factory=list)
    durations: dict[int, int] = field(default_factory=dict)
    total: int = 0
    # Damage since the last keyframe. Earlier damage (a broadcast recording
    # that starts mid-stream) is left to the decoder to conceal.
    tail_corrupt: bool = False
    first_frame: av.VideoFrame | None = None
    leading_errors: int = 0
    tail: list[av.Packet] | None = None

    def add(self, packet: av.Packet) -> None:
        self.total += 1
        self._keep_tail(packet)
        self.tail_corrupt |= bool(packet.is_corrupt)
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.is_discard:
            return
        self.pts.append(ts)
        self.durations[ts] = packet.duration or 0

    def _keep_tail(self, packet: av.Packet) -> None:
        if packet.is_keyframe:
            self.tail, self.tail_corrupt = [packet], False
        elif self.tail is not None:
            self.tail.append(packet)
            if len(self.tail) > MAX_TAIL_PACKETS:
                self.tail = None


def probe(path: PathLike, *, max_duration_s: float | None = None) -> ProbeResult:
    """Check that ``path`` is a complete, decodable video and describe it.

    Raises MediaError with a one-line reason otherwise. Cheap: every packet is
    demuxed but only the first picture and the last GOP are decoded.
    """
    with _open(path) as container:
        fmt = container.format.name
        if fmt in STILL_IMAGE_FORMATS or fmt.endswith("_pipe"):
            raise MediaError("Not a video file (it is a still image).")
        stream = _video_stream(container)
        codec = _check_decoder(stream)
        _check_declared_length(container, max_duration_s)
        scan = _scan(container, stream)
        first = _first_frame(stream, scan)
        _check_tail(stream, scan)
        audio = container.streams.audio
        audio_codec = _codec_name(audio[0]) if audio else None
        result = _result(container, stream, scan, first, codec, audio_codec, path)
    _check_length(result.duration, max_duration_s)
    return result


def _check_declared_length(container, max_duration_s: float | None) -> None:
    # Reject an over-long file before reading all of it. The header counts
    # every stream (audio may run on), hence the slack; the measured video
    # duration is checked exactly afterwards.
    if max_duration_s is None or not container.duration:
        return
    _check_length(container.duration / av.time_base, max_duration_s, slack=1.0)


def _check_length(
    duration: float, max_duration_s: float | None, slack: float = 0.0
) -> None:
    if max_duration_s is not None and duration > max_duration_s + slack:
        raise MediaError(
            f"Video is too long ({_fmt_time(duration)}; "
            f"the limit is {_fmt_time(max_duration_s)})."
        )


def _fmt_time(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _scan(container, stream: av.VideoStream) -> _Scan:
    scan = _Scan()
    ctx = stream.codec_context
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet PyAV adds at the end
            scan.add(packet)
            if scan.first_frame is None:
                _decode_first(ctx, packet, scan)
    except av.error.FFmpegError as exc:
        raise MediaError(_truncated("it stops part-way")) from exc
    return scan


def _decode_first(ctx, packet: av.Packet, scan: _Scan) -> None:
    try:
        frames = ctx.decode(packet)
    except av.error.FFmpegError as exc:
        scan.leading_errors += 1
        if scan.leading_errors > MAX_LEADING_ERRORS:
            raise MediaError("The video stream is corrupt (cannot decode).") from exc
        return
    if frames:
        scan.first_frame = frames[0]


def _first_frame(stream: av.VideoStream, scan: _Scan) -> av.VideoFrame:
    if scan.total == 0 or not scan.pts:
        raise MediaError("The video stream has no frames.")
    if scan.first_frame is None:
        # Short clips may sit in the decoder's delay queue until it drains.
        with suppress(av.error.FFmpegError):
            frames = stream.codec_context.decode(None)
            scan.first_frame = frames[0] if frames else None
    if scan.first_frame is None:
        raise MediaError("The video stream is corrupt (no frame could be decoded).")
    return scan.first_frame


def _check_tail(stream: av.VideoStream, scan: _Scan) -> None:
    """Decode the last GOP: a file cut mid-packet fails here."""
    if scan.tail_corrupt:
        raise MediaError(_truncated("its last frames are cut off"))
    if not scan.tail:
        return
    ctx = stream.codec_context
    ctx.flush_buffers()
    try:
        count = sum(len(ctx.decode(p)) for p in scan.tail)
        count += len(ctx.decode(None))
    except av.error.FFmpegError as exc:
        raise MediaError(_truncated("its last frames do not decode")) from exc
    if count == 0:
        raise MediaError(_truncated("its last frames do not decode"))


def _truncated(why: str) -> str:
    return f"The video file is truncated or corrupt ({why})."


def _span(stream: av.VideoStream, scan: _Scan) -> tuple[np.ndarray, Fraction, float]:
    """(sorted unique pts, time base, seconds from the first frame to the end of
    the last one, whose length is guessed when the container does not say)."""
    tb = _time_base(stream)
    pts = np.unique(np.asarray(scan.pts, dtype=np.int64))
    last = scan.durations.get(int(pts[-1]), 0) or _typical_step(pts, stream)
    return pts, tb, float((int(pts[-1]) + last - int(pts[0])) * tb)


def _timing(stream: av.VideoStream, scan: _Scan) -> tuple[float, float, float]:
    """(start_time, duration, fps) from the packet timestamps."""
    pts, tb, duration = _span(stream, scan)
    if duration <= 0:
        raise MediaError("The video has zero duration.")
    return float(pts[0] * tb), duration, _fps(stream, len(scan.pts), duration)


def _typical_step(pts: np.ndarray, stream: av.VideoStream) -> int:
    # The last frame's duration when the container does not store it.
    if len(pts) > 1:
        return max(int(np.median(np.diff(pts))), 1)
    return _rate_step(stream)


def _rate_step(stream: av.VideoStream) -> int:
    """One frame interval in time-base units, from the declared frame rate."""
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return max(int(round(1 / (float(rate) * _time_base(stream)))), 1)
    return 0


def _fps(stream: av.VideoStream, count: int, duration: float) -> float:
    measured = count / duration
    declared = float(stream.average_rate or 0)
    # Prefer the exact declared rate (30000/1001) when it agrees.
    if declared and abs(declared - measured) <= 0.005 * measured:
        return declared
    return measured


def _check_complete(
    stream: av.VideoStream, scan: _Scan, start: float, duration: float
) -> None:
    """Packets must reach the frame count and duration the headers declare."""
    # Only MP4/MOV sample tables count frames exactly; AVI counts skipped
    # slots too and Matroska counts nothing.
    exact = stream.container.format.name == MP4_FAMILY
    expected = stream.frames if exact else 0
    if expected and scan.total < expected - max(2, 0.01 * expected):
        raise MediaError(_truncated(f"{scan.total} of {expected} frames present"))
    declared = _declared_duration(stream)
    # Muxers disagree on whether that is a duration or an end time (Matroska
    # writes the end, start offset included), so either may match it.
    reached = max(duration, start + duration)
    # Headers and packets legitimately differ by a frame or so (the last
    # frame's length, edit lists); a cut file falls further short.
    frame_s = duration / max(len(scan.pts), 1)
    slack = max(0.25, 2.5 * frame_s, 0.01 * (declared or 0))
    if declared and reached < declared - slack:
        raise MediaError(_truncated(f"it ends at {reached:.1f} s of {declared:.1f} s"))


def _declared_duration(stream: av.VideoStream) -> float | None:
    if stream.duration:
        return float(stream.duration * _time_base(stream))
    # Matroska/WebM keep a per-stream DURATION tag like "00:00:04.000000000".
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if not tag:
        return None
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _result(container, stream, scan, first, codec, audio_codec, path) -> ProbeResult:
    start, duration, fps = _timing(stream, scan)
    _check_complete(stream, scan, start, duration)
    rotation = _rotation(first)
    width, height = first.width, first.height
    if rotation in (90, 270):
        width, height = height, width
    pix_fmt = first.format.name
    fmt = container.format.name
    playable = _browser_playable(
        fmt, _is_webm(Path(path)), codec, pix_fmt, audio_codec, rotation, start
    )
    return ProbeResult(
        duration=duration,
        fps=fps,
        frame_count=len(scan.pts),
        width=width,
        height=height,
        rotation=rotation,
        time_base=str(_time_base(stream)),
        start_time=start,
        video_codec=codec,
        pix_fmt=pix_fmt,
        audio_codec=audio_codec,
        container=fmt,
        browser_playable=playable,
    )


def _is_webm(path: Path) -> bool:
    # PyAV names Matroska and WebM alike; the EBML DocType tells them apart.
    return b"webm" in _head(path)


def _browser_playable(
    fmt: str,
    is_webm: bool,
    codec: str,
    pix_fmt: str,
    audio_codec: str | None,
    rotation: int,
    start: float,
) -> bool:
    # A rotated or late-starting file would put the browser's picture or
    # currentTime out of step with our frame times, so it gets a proxy.
    if rotation or abs(start) > 1e-3 or pix_fmt != "yuv420p":
        return False
    if fmt == MP4_FAMILY:
        return codec == "h264" and audio_codec in (None, "aac", "opus")
    if fmt == "matroska,webm" and is_webm:
        return codec in ("vp8", "vp9") and audio_codec in (None, "opus")
    return False


# --------------------------------------------------------------------------
# Proxy and poster


def make_proxy(src: PathLike, dst: PathLike, probe: ProbeResult) -> None:
    """Write a browser-playable H.264/AAC mp4 of ``src`` to ``dst``.

    Rotation is applied to the pixels, dimensions are made even and the
    first video frame lands at time 0; frame timing (VFR included) is kept.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dst)
    try:
        _run_ffmpeg(_proxy_command(src, tmp, probe))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_beside(dst: Path) -> Path:
    # Same folder so os.replace is an atomic rename; hidden so nothing
    # serves it; the real suffix so tools still recognise the format.
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.part{dst.suffix}")


def _proxy_command(src: PathLike, tmp: Path, probe: ProbeResult):
    inp = ffmpeg.input(str(src))
    # ffmpeg autorotates while decoding; setpts moves the first frame to 0.
    # "V": the first real video stream, never a cover picture.
    video = (
        inp["V"]
        .filter("setpts", "PTS-STARTPTS")
        .filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")
    )
    streams = [video]
    options: dict[str, str | int] = {}
    if probe.audio_codec:
        streams.append(inp.audio.filter("asetpts", "PTS-STARTPTS"))
        options.update({"c:a": "aac", "b:a": "128k"})
    return (
        ffmpeg.output(
            *streams,
            str(tmp),
            format="mp4",
            vcodec="libx264",
            preset="veryfast",
            crf=23,
            pix_fmt="yuv420p",
            movflags="+faststart",
            # Keep each frame's own timestamp: the mp4 default would make the
            # output constant-rate by duplicating/dropping frames.
            fps_mode="vfr",
            # ...and at full precision: by default the encoder's time base is
            # 1/frame-rate, which would round VFR timestamps onto a grid.
            **{"enc_time_base:v": probe.time_base},
            **options,
        )
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
    )


def _run_ffmpeg(command) -> None:
    try:
        command.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MediaError(f"Conversion failed: {_last_line(exc.stderr)}") from exc
    except OSError as exc:
        raise MediaError(f"Conversion failed: cannot run ffmpeg ({exc}).") from exc


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1].strip() if lines else "ffmpeg gave no reason."


def make_poster(
    src: PathLike, dst: PathLike, *, at_s: float, max_width: int = 640
) -> None:
    """Save the frame shown at ``at_s`` (first-frame-relative) as a JPEG."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    frame = _frame_shown_at(src, at_s)
    image = Image.fromarray(_display_rgb(frame, max_width=max_width))
    tmp = _temp_beside(dst)
    try:
        image.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _frame_shown_at(src: PathLike, at_s: float) -> av.VideoFrame:
    # Decoding a few seconds is quick and exact; seeking is only worth it
    # further in, and some demuxers (AVI, MPEG-TS) land after the target.
    if at_s > SEEK_AFTER_S:
        with _open(src) as container:
            frame = _seek_to(container, _video_stream(container), at_s)
        if frame is not None:
            return frame
    with _open(src) as container:
        frame, _ = _decode_to(container, _video_stream(container), at_s, None)
    if frame is None:
        raise MediaError("The video stream has no frames.")
    return frame


def _seek_to(container, stream: av.VideoStream, at_s: float) -> av.VideoFrame | None:
    """Seek to a keyframe before at_s and decode forward; None if it overshot."""
    first, _ = _decode_to(container, stream, -1.0, None)  # the first frame
    if first is None or first.pts is None:
        return None
    tb = _time_base(stream)
    for lead in (0.0, 3.0):
        target = first.pts + int(max(at_s - lead, 0.0) / tb)
        with suppress(av.error.FFmpegError):
            container.seek(target, stream=stream, backward=True)
        frame, overshot = _decode_to(container, stream, at_s, first.pts)
        if frame is not None and not overshot:
            return frame
    return None


def _decode_to(
    container, stream: av.VideoStream, at_s: float, first: int | None
) -> tuple[av.VideoFrame | None, bool]:
    """(frame shown at at_s, whether decoding began after it).

    Times are relative to ``first``, or to the first decoded frame if None.
    """
    chosen = None
    tb = _time_base(stream)
    try:
        for frame in container.decode(stream):
            if first is None:
                first = frame.pts if frame.pts is not None else 0
            late = _rel_time(frame, first, tb) > at_s + EPS
            if late:
                return (chosen or frame), chosen is None
            chosen = frame
    except av.error.FFmpegError as exc:
        raise MediaError("The video stream is corrupt (cannot decode).") from exc
    return chosen, chosen is None


def _rel_time(frame: av.VideoFrame, first: int, tb: Fraction) -> float:
    return float((frame.pts - first) * tb) if frame.pts is not None else 0.0


def _display_rgb(frame: av.VideoFrame, *, max_width: int) -> np.ndarray:
    """RGB pixels as displayed (rotated), downscaled to at most max_width."""
    rotation = _rotation(frame)
    quarter = rotation in (90, 270)
    disp_w = frame.height if quarter else frame.width
    disp_h = frame.width if quarter else frame.height
    scale = min(1.0, max_width / disp_w)
    out_w, out_h = max(1, round(disp_w * scale)), max(1, round(disp_h * scale))
    return _rgb(frame, out_w, out_h, rotation)


def _rgb(frame: av.VideoFrame, out_w: int, out_h: int, rotation: int) -> np.ndarray:
    """Scale to (out_w, out_h) display size in one swscale call, then rotate."""
    quarter = rotation in (90, 270)
    width, height = (out_h, out_w) if quarter else (out_w, out_h)
    shrink = width * height < frame.width * frame.height
    rgb = frame.to_ndarray(
        width=width,
        height=height,
        format="rgb24",
        interpolation="AREA" if shrink else "BICUBIC",
        # One thread: a per-call swscale thread pool costs more than it saves
        # on frames this small, and the decoder already uses every core.
        threads=1,
    )
    return np.rot90(rgb, rotation // 90) if rotation else rgb


# --------------------------------------------------------------------------
# Clips


def clip_windows(
    duration: float, window_s: float = 2.0, stride_s: float = 1.0
) -> list[tuple[float, float]]:
    """Half-open windows [start, end) covering a video of ``duration`` s."""
    if duration <= 0:
        return []
    if duration <= window_s + EPS:
        return [(0.0, float(duration))]
    count = int(np.floor((duration - window_s + EPS) / stride_s)) + 1
    windows = [
        (round(i * stride_s, 6), round(i * stride_s + window_s, 6))
        for i in range(count)
    ]
    # A long uncovered tail gets one more window that ends at the end.
    if duration - windows[-1][1] > window_s / 2 + EPS:
        windows.append((round(duration - window_s, 6), float(duration)))
    return windows


def frame_at(frame_times: np.ndarray, t: float) -> int:
    """Index of the frame being displayed at time ``t``."""
    if len(frame_times) == 0:
        return 0
    index = int(np.searchsorted(frame_times, t + EPS, side="right")) - 1
    return min(max(index, 0), len(frame_times) - 1)


def clip_frame_indices(
    times: np.ndarray, start: float, end: float, T: int
) -> np.ndarray:
    """Exactly ``T`` sample-grid indices spread over the clip [start, end)."""
    inside = np.flatnonzero((times >= start - EPS) & (times < end - EPS))
    if len(inside) == 0:
        # A clip between grid points: repeat the grid point nearest its middle.
        if len(times) == 0:
            return np.zeros(T, dtype=np.int64)
        nearest = int(np.argmin(np.abs(times - (start + end) / 2)))
        return np.full(T, nearest, dtype=np.int64)
    picks = np.round(np.linspace(0, len(inside) - 1, T)).astype(np.int64)
    return inside[picks].astype(np.int64)


# --------------------------------------------------------------------------
# Frame sampling


@dataclass
class SampledFrames:
    """Frames on a regular time grid, plus the time of every video frame."""

    times: np.ndarray
    frames: np.ndarray
    frame_times: np.ndarray

    def save(self, path: PathLike) -> None:
        # A file handle keeps np.savez from appending ".npz" to the name.
        with open(path, "wb") as fh:
            np.savez(
                fh, times=self.times, frames=self.frames, frame_times=self.frame_times
            )

    @classmethod
    def load(cls, path: PathLike) -> SampledFrames:
        with np.load(path) as data:
            return cls(
                times=data["times"],
                frames=data["frames"],
                frame_times=data["frame_times"],
            )


class _GridSampler:
    """Picks, while frames stream past, the frame shown at each k / fps."""

    def __init__(self, fps: float, size: int, step_pts: int) -> None:
        self.fps, self.size, self.step_pts = fps, size, step_pts
        self.first_pts: int | None = None
        self.frame_times: list[float] = []
        self.frames: list[np.ndarray] = []
        self.prev: av.VideoFrame | None = None
        self.prev_rgb: np.ndarray | None = None
        self.last_pts = 0

    def grid_time(self) -> float:
        return len(self.frames) / self.fps

    def push(self, frame: av.VideoFrame, tb: Fraction) -> None:
        pts = frame.pts if frame.pts is not None else self.last_pts + self.step_pts
        if self.first_pts is None:
            self.first_pts = pts
        t = float((pts - self.first_pts) * tb)
        self.frame_times.append(t)
        # Grid points before this frame's time show the previous frame.
        while self.prev is not None and self.grid_time() + EPS < t:
            self._take_prev()
        self.prev, self.prev_rgb = frame, None
        self.last_pts = pts

    def finish(self, tb: Fraction) -> SampledFrames:
        if self.prev is None:
            raise MediaError("The video stream has no frames.")
        last = self.prev.duration or self.step_pts
        end = float((self.last_pts + last - self.first_pts) * tb)
        while self.grid_time() < end - 1e-9:
            self._take_prev()
        if not self.frames:
            self._take_prev()
        return SampledFrames(
            times=np.arange(len(self.frames), dtype=np.float64) / self.fps,
            frames=np.stack(self.frames),
            frame_times=np.sort(np.asarray(self.frame_times, dtype=np.float64)),
        )

    def _take_prev(self) -> None:
        if self.prev_rgb is None:
            self.prev_rgb = _square_rgb(self.prev, self.size)
        self.frames.append(self.prev_rgb)


def _square_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
    """Short side scaled to ``size``, centre-cropped to size x size, upright."""
    rotation = _rotation(frame)
    quarter = rotation in (90, 270)
    disp_w = frame.height if quarter else frame.width
    disp_h = frame.width if quarter else frame.height
    scale = size / min(disp_w, disp_h)
    out_w = max(size, round(disp_w * scale))
    out_h = max(size, round(disp_h * scale))
    rgb = _rgb(frame, out_w, out_h, rotation)
    top, left = (out_h - size) // 2, (out_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


class _Progress:
    """Calls back at most PROGRESS_STEPS times as decoding advances."""

    def __init__(self, callback: Callable[[float], None] | None, total: int) -> None:
        self.callback, self.total = callback, max(total, 1)
        self.count, self.next_step = 0, 1

    def tick(self) -> None:
        self.count += 1
        if self.callback is None:
            return
        fraction = min(self.count / self.total, 1.0)
        if fraction * PROGRESS_STEPS >= self.next_step and fraction < 1.0:
            self.next_step = int(fraction * PROGRESS_STEPS) + 1
            self.callback(fraction)


def sample_frames(
    path: PathLike,
    *,
    fps: float = 4.0,
    size: int = 224,
    progress: Callable[[float], None] | None = None,
) -> SampledFrames:
    """Decode once, keeping the frame displayed at each time k / fps.

    A cheap demux pass first reads every frame's timestamp, so the decode
    pass knows which frames land on the grid: only those are converted to
    RGB, and the decoder skips the non-reference frames nobody needs (about
    a third of typical H.264). Files whose timestamps cannot be trusted fall
    back to plain streaming, which gives the same result more slowly.
    """
    if fps <= 0 or size <= 0:
        raise ValueError("fps and size must be positive")
    plan = _plan(path, fps)
    result = _sample_planned(path, plan, size, progress) if plan else None
    if result is None:
        result = _sample_streaming(path, fps, size, progress)
    if progress is not None:
        progress(1.0)
    return result


@dataclass
class _Plan:
    """Which frame each grid point shows, worked out from packet timestamps."""

    frame_times: np.ndarray
    times: np.ndarray
    wanted: dict[int, list[int]]  # pts -> the grid points showing that frame
    packets: int


def _plan(path: PathLike, fps: float) -> _Plan | None:
    with _open(path) as container:
        stream = _video_stream(container)
        scan = _Scan()
        try:
            for packet in container.demux(stream):
                if packet.size:
                    scan.add(packet)
                    if packet.pts is None and not packet.is_discard:
                        return None  # no pts: frames cannot be matched up
        except av.error.FFmpegError as exc:
            raise MediaError(_truncated("it stops part-way")) from exc
        if not scan.pts:
            raise MediaError("The video stream has no frames.")
        return _grid_plan(stream, scan, fps)


def _grid_plan(stream: av.VideoStream, scan: _Scan, fps: float) -> _Plan:
    pts, tb, end = _span(stream, scan)
    frame_times = (pts - pts[0]).astype(np.float64) * tb.numerator / tb.denominator
    times = _grid(end, fps)
    shown = np.searchsorted(frame_times, times + EPS, side="right") - 1
    wanted: dict[int, list[int]] = {}
    for k, index in enumerate(np.maximum(shown, 0)):
        wanted.setdefault(int(pts[index]), []).append(k)
    return _Plan(frame_times, times, wanted, scan.total)


def _grid(end: float, fps: float) -> np.ndarray:
    """k / fps for every k with k / fps < end; always at least time 0."""
    count = max(int(np.ceil(end * fps - 1e-9)), 1)
    return np.arange(count, dtype=np.float64) / fps


def _sample_planned(
    path: PathLike,
    plan: _Plan,
    size: int,
    progress: Callable[[float], None] | None,
) -> SampledFrames | None:
    frames = np.empty((len(plan.times), size, size, 3), dtype=np.uint8)
    filled = np.zeros(len(plan.times), dtype=bool)
    reporter = _Progress(progress, plan.packets)
    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        try:
            for packet in container.demux(stream):
                _set_skip(ctx, packet.pts is None or packet.pts in plan.wanted)
                for frame in ctx.decode(packet):
                    slots = plan.wanted.get(frame.pts)
                    if slots:
                        frames[slots] = _square_rgb(frame, size)
                        filled[slots] = True
                reporter.tick()
        except av.error.FFmpegError as exc:
            raise MediaError("The video stream is corrupt (cannot decode).") from exc
    # A decoder that dropped or re-stamped a frame: redo it the plain way.
    if not filled.all():
        return None
    return SampledFrames(times=plan.times, frames=frames, frame_times=plan.frame_times)


def _set_skip(ctx, wanted: bool) -> None:
    # Frame threads copy skip_frame per packet, so this applies per packet;
    # NONREF only drops frames that no other frame is predicted from.
    mode = "DEFAULT" if wanted else "NONREF"
    if ctx.skip_frame != mode:
        ctx.skip_frame = mode


def _sample_streaming(
    path: PathLike,
    fps: float,
    size: int,
    progress: Callable[[float], None] | None,
) -> SampledFrames:
    with _open(path) as container:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        tb = _time_base(stream)
        sampler = _GridSampler(fps, size, _rate_step(stream))
        reporter = _Progress(progress, _expected_frames(stream))
        try:
            for frame in container.decode(stream):
                sampler.push(frame, tb)
                reporter.tick()
        except av.error.FFmpegError as exc:
            raise MediaError("The video stream is corrupt (cannot decode).") from exc
        return sampler.finish(tb)


def _expected_frames(stream: av.VideoStream) -> int:
    if stream.frames:
        return stream.frames
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    seconds = _declared_duration(stream)
    if seconds is None and stream.container.duration:
        seconds = stream.container.duration / av.time_base
    return int((seconds or 0) * rate)
