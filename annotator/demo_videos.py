"""Synthetic stick-figure videos with known action labels.

They let the app be demonstrated, and the learning loop be tested, without
real footage: each video is 2-3 actions of at least 4 s, and every video
gets its own background, figure colour, size and position, so a classifier
must learn pose and motion rather than colours. Output is deterministic for
a seed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

ACTIONS = ("walking", "jumping", "waving", "squatting", "clapping")
ACTION_PROMPTS = {
    "walking": "a person walking across the scene",
    "jumping": "a person jumping up and down",
    "waving": "a person waving one hand above their head",
    "squatting": "a person doing squats",
    "clapping": "a person clapping their hands",
}
MIN_SEGMENT_S = 4.0

Point = tuple[float, float]
Segment = tuple[float, float, str]


@dataclass(frozen=True)
class DemoVideo:
    path: Path
    segments: list[Segment]


@dataclass(frozen=True)
class Look:
    """What stays fixed through one video (all in pixels)."""

    background: int
    colour: tuple[int, int, int]
    height: float  # feet to top of head
    x: float  # where the figure stands
    x_range: tuple[float, float]  # where walking may take it
    ground: float  # y of the feet
    speed: float  # multiplies every action's tempo

    @property
    def line(self) -> int:
        # Thick enough to survive downscaling to 224 px and compression.
        return max(2, round(self.height * 0.045))


@dataclass
class Pose:
    """Joint positions in pixels, image coordinates (y grows downwards)."""

    head: Point
    neck: Point
    hip: Point
    hands: tuple[Point, Point]
    elbows: tuple[Point, Point]
    knees: tuple[Point, Point]
    feet: tuple[Point, Point]


# --------------------------------------------------------------------------
# Body geometry: proportions of the figure's height


HEAD_R, TORSO, THIGH, SHIN, UPPER_ARM, FOREARM = 0.08, 0.30, 0.22, 0.22, 0.15, 0.15
HIP_UP = THIGH + SHIN  # hip height when standing straight


def _limb(start: Point, angle: float, length: float) -> Point:
    """End of a segment at ``angle`` from straight down (positive = right)."""
    return (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))


def _bend(start: Point, end: Point, a: float, b: float, side: float) -> Point:
    """Middle joint of a two-segment limb from start to end (side: +1 right)."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    dist = min(math.hypot(dx, dy), a + b - 1e-6)
    along = (a * a - b * b + dist * dist) / (2 * dist) if dist else 0.0
    out = math.sqrt(max(a * a - along * along, 0.0))
    ux, uy = (dx / dist, dy / dist) if dist else (0.0, 1.0)
    # Of the two perpendiculars, take the one pointing to ``side``.
    px, py = (-uy, ux) if -uy * side >= 0 else (uy, -ux)
    return (start[0] + ux * along + px * out, start[1] + uy * along + py * out)


def _body(look: Look, x: float, lift: float = 0.0, drop: float = 0.0) -> Pose:
    """Upright body with arms hanging and legs straight, feet on the ground."""
    h = look.height
    feet_y = look.ground - lift
    hip = (x, feet_y - (HIP_UP - drop) * h)
    neck = (x, hip[1] - TORSO * h)
    head = (x, neck[1] - HEAD_R * h * 1.4)
    feet = ((x - 0.07 * h, feet_y), (x + 0.07 * h, feet_y))
    knees = tuple(_bend(hip, f, THIGH * h, SHIN * h, f[0] - x) for f in feet)
    elbows = (_limb(neck, -0.2, UPPER_ARM * h), _limb(neck, 0.2, UPPER_ARM * h))
    hands = (_limb(elbows[0], -0.1, FOREARM * h), _limb(elbows[1], 0.1, FOREARM * h))
    return Pose(head, neck, hip, hands, elbows, knees, feet)


def _arm(pose: Pose, side: int, upper: float, fore: float, h: float) -> None:
    """Set arm ``side`` (0 left, 1 right) from absolute angles."""
    elbow = _limb(pose.neck, upper, UPPER_ARM * h)
    hands, elbows = list(pose.hands), list(pose.elbows)
    elbows[side], hands[side] = elbow, _limb(elbow, fore, FOREARM * h)
    pose.hands, pose.elbows = tuple(hands), tuple(elbows)


# --------------------------------------------------------------------------
# Actions: pose at time t (seconds into the segment)


def _walking(look: Look, t: float) -> Pose:
    h, phase = look.height, 2 * math.pi * 0.9 * look.speed * t
    swing = 0.45 * math.sin(phase)
    x = _patrol(look.x, 0.35 * h * look.speed * t, *look.x_range)
    pose = _body(look, x, lift=0.02 * h * abs(math.sin(phase)))
    hip = pose.hip
    knees, feet = [], []
    for sign in (1, -1):
        knee = _limb(hip, sign * swing, THIGH * h)
        bend = 0.35 * max(0.0, -sign * math.sin(phase))
        knees.append(knee)
        feet.append(_limb(knee, sign * swing - bend, SHIN * h))
    pose.knees, pose.feet = tuple(knees), tuple(feet)
    _arm(pose, 0, -0.15 - 0.4 * math.sin(phase), -0.05 - 0.5 * math.sin(phase), h)
    _arm(pose, 1, 0.15 + 0.4 * math.sin(phase), 0.05 + 0.5 * math.sin(phase), h)
    return pose


def _patrol(start: float, travelled: float, lo: float, hi: float) -> float:
    """Walk back and forth between lo and hi, starting at ``start``."""
    span = max(hi - lo, 1.0)
    pos = (min(max(start, lo), hi) - lo + travelled) % (2 * span)
    return lo + (pos if pos <= span else 2 * span - pos)


def _jumping(look: Look, t: float) -> Pose:
    h, cycle = look.height, (1.1 * look.speed * t) % 1.0
    air = math.sin(math.pi * cycle)  # 0 on the ground, 1 at the top
    crouch = 0.08 * max(0.0, 1 - 4 * air)  # knees give at take-off/landing
    pose = _body(look, look.x, lift=0.28 * h * air, drop=crouch)
    spread = 0.5 + 1.6 * air
    _arm(pose, 0, -spread, -spread - 0.3, h)
    _arm(pose, 1, spread, spread + 0.3, h)
    return pose


def _waving(look: Look, t: float) -> Pose:
    h, phase = look.height, 2 * math.pi * 1.8 * look.speed * t
    pose = _body(look, look.x)
    # Right upper arm raised high, forearm swinging over the head.
    _arm(pose, 1, math.pi - 0.7, math.pi + 0.55 * math.sin(phase), h)
    return pose


def _squatting(look: Look, t: float) -> Pose:
    h = look.height
    depth = 0.5 * (1 - math.cos(2 * math.pi * 0.5 * look.speed * t))
    pose = _body(look, look.x, drop=0.2 * depth)
    # Arms come up to the front (sideways in this view) as the body goes down.
    lift = 0.3 + 1.2 * depth
    _arm(pose, 0, -lift, -lift, h)
    _arm(pose, 1, lift, lift, h)
    return pose


def _clapping(look: Look, t: float) -> Pose:
    h = look.height
    open_ = 0.5 * (1 - math.cos(2 * math.pi * 1.6 * look.speed * t))
    pose = _body(look, look.x)
    chest_y = pose.neck[1] + 0.1 * h
    reach = UPPER_ARM * h + FOREARM * h
    hands, elbows = [], []
    for side in (-1, 1):
        hand = (pose.neck[0] + side * (0.015 + 0.2 * open_) * h, chest_y)
        hands.append(hand)
        elbows.append(
            _bend(pose.neck, hand, UPPER_ARM * h, reach - UPPER_ARM * h, side)
        )
    pose.hands, pose.elbows = tuple(hands), tuple(elbows)
    return pose


POSES: dict[str, Callable[[Look, float], Pose]] = {
    "walking": _walking,
    "jumping": _jumping,
    "waving": _waving,
    "squatting": _squatting,
    "clapping": _clapping,
}


# --------------------------------------------------------------------------
# Drawing and encoding


def _draw(pose: Pose, look: Look, size: tuple[int, int]) -> np.ndarray:
    image = Image.new("RGB", size, (look.background,) * 3)
    draw = ImageDraw.Draw(image)
    width, colour = look.line, look.colour
    lines = [(pose.neck, pose.hip)]
    for i in (0, 1):
        lines += [(pose.neck, pose.elbows[i]), (pose.elbows[i], pose.hands[i])]
        lines += [(pose.hip, pose.knees[i]), (pose.knees[i], pose.feet[i])]
    for start, end in lines:
        draw.line([start, end], fill=colour, width=width)
    joint = width / 2
    for x, y in [pose.hip, pose.neck, *pose.elbows, *pose.knees]:
        draw.ellipse([x - joint, y - joint, x + joint, y + joint], fill=colour)
    r = HEAD_R * look.height
    hx, hy = pose.head
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=colour)
    return np.asarray(image)


def _codec() -> str:
    # PyAV wheels ship libx264; a build without it still has mpeg4.
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encode(path: Path, frames, fps: int, size: tuple[int, int]) -> None:
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    codec = _codec()
    # zerolatency: no lookahead or B-frames; 40% faster, files stay tiny.
    x264 = {"crf": "23", "preset": "veryfast", "tune": "zerolatency"}
    options = x264 if codec == "libx264" else {}
    with av.open(
        str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}
    ) as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Planning


def _segments(
    rng: np.random.Generator, first: str, duration: float, fps: int
) -> list[Segment]:
    """2-3 distinct actions of >= 4 s each (fewer if the video is short)."""
    fits = max(1, int(duration // MIN_SEGMENT_S))
    count = min(fits, 3 if rng.random() < 0.5 else 2)
    others = [a for a in ACTIONS if a != first]
    actions = [first, *rng.permutation(others)[: count - 1].tolist()]
    spare = duration - MIN_SEGMENT_S * count
    shares = rng.dirichlet(np.ones(count)) if count > 1 else np.ones(1)
    ends = np.cumsum(MIN_SEGMENT_S + spare * shares) if spare > 0 else None
    if ends is None:
        ends = np.linspace(duration / count, duration, count)
    # Boundaries on frame times, so a label never splits a frame.
    ends = np.round(ends * fps) / fps
    ends[-1] = duration
    starts = [0.0, *ends[:-1].tolist()]
    return [
        (round(s, 6), round(float(e), 6), a)
        for s, e, a in zip(starts, ends, actions, strict=True)
    ]


def _walk_range(width: int, height: int, figure_h: float) -> tuple[float, float]:
    """Where the figure's centre may walk: sampling keeps the centre square of
    each frame, so the figure stays inside it."""
    side, margin = min(width, height), 0.3 * figure_h
    return (width - side) / 2 + margin, (width + side) / 2 - margin


def _look(rng: np.random.Generator, size: tuple[int, int]) -> Look:
    width, height = size
    background = int(rng.integers(30, 226))
    figure_h = float(rng.uniform(0.45, 0.7)) * height
    lo, hi = _walk_range(width, height, figure_h)
    return Look(
        background=background,
        colour=_contrasting_colour(rng, background),
        height=figure_h,
        x=float(rng.uniform(lo, hi)),
        x_range=(lo, hi),
        ground=float(rng.uniform(0.88, 0.96)) * height,
        speed=float(rng.uniform(0.8, 1.25)),
    )


def _plain_look(size: tuple[int, int]) -> Look:
    width, height = size
    figure_h = 0.6 * height
    lo, hi = _walk_range(width, height, figure_h)
    return Look(
        background=200,
        colour=(20, 20, 20),
        height=figure_h,
        x=width / 2,
        x_range=(lo, hi),
        ground=0.92 * height,
        speed=1.0,
    )


def _contrasting_colour(rng: np.random.Generator, background: int) -> tuple:
    # Any hue, but far from the background in brightness to stay visible.
    base = rng.uniform(0, 1, size=3)
    bright = background < 128
    lo, hi = (170, 255) if bright else (0, 85)
    return tuple(int(lo + (hi - lo) * v) for v in base)


def _frames(look: Look, segments: list[Segment], fps: int, size: tuple[int, int]):
    n_frames = round(segments[-1][1] * fps)
    for index in range(n_frames):
        t = index / fps
        start, _, action = next(s for s in segments if s[0] <= t + 1e-9 < s[1])
        yield _draw(POSES[action](look, t - start), look, size)


# --------------------------------------------------------------------------
# Entry point


def make_demo_videos(
    out_dir: str | os.PathLike[str],
    *,
    count: int = 10,
    seed: int = 0,
    duration_s: float = 12.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 15,
    vary_look: bool = True,
) -> list[DemoVideo]:
    """Write ``count`` labelled mp4s and a labels.json into ``out_dir``.

    ``vary_look=False`` keeps background, colour, size and place the same in
    every video, so only pose and motion tell actions apart: what a model with
    random weights can still learn from (the training test uses it).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    duration = round(duration_s * fps) / fps
    videos = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        # Rotate the opening action so every action shows up early on.
        first = ACTIONS[(index + seed) % len(ACTIONS)]
        segments = _segments(rng, first, duration, fps)
        look = _look(rng, size) if vary_look else _plain_look(size)
        path = out / f"demo_{index:02d}.mp4"
        _encode(path, _frames(look, segments, fps, size), fps, size)
        videos.append(DemoVideo(path=path, segments=segments))
    labels = {v.path.name: [list(s) for s in v.segments] for v in videos}
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return videos
