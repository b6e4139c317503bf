"""Turn per-clip label proposals into time segments.

Clips are overlapping windows (e.g. 2 s long every 1 s). Runs of consecutive
clips that agree on their top label become one segment spanning the first
clip's start to the last clip's end; a background clip (no label) ends a run,
and so does a gap in time (clips that neither overlap nor touch), which matters
when callers pass a filtered subset such as only the accepted clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 1e-6  # seconds; absorbs float noise in window boundaries


@dataclass(frozen=True)
class Segment:
    """A proposed action interval."""

    label: int  # label index
    start: float  # seconds: start of the first member clip
    end: float  # seconds: end of the last member clip
    confidence: float  # mean confidence of the member clips
    clip_indices: tuple[int, ...]  # member clips, as indices into the inputs


def merge_segments(
    starts: Sequence[float],
    ends: Sequence[float],
    top_labels: Sequence[int | None],
    confidences: Sequence[float],
    *,
    max_gap: float | None = 0.0,
) -> list[Segment]:
    """Merge time-ordered runs of same-label clips; None (background) splits.

    A clip starting more than ``max_gap`` seconds after the run's end starts a
    new segment (``None``: never split on time).
    """
    n = len(starts)
    if not len(ends) == len(top_labels) == len(confidences) == n:
        raise ValueError("starts, ends, top_labels and confidences differ in length")
    # Sort by time (stable) so callers may pass clips in any order.
    order = sorted(range(n), key=lambda i: (starts[i], ends[i]))
    segments: list[Segment] = []
    run: list[int] = []
    run_end = float("-inf")
    for i in order:
        gap = max_gap is not None and starts[i] > run_end + max_gap + _EPS
        if run and (gap or top_labels[i] != top_labels[run[-1]]):
            segments += _close(run, starts, ends, top_labels, confidences)
            run, run_end = [], float("-inf")
        run.append(i)
        run_end = max(run_end, ends[i])
    segments += _close(run, starts, ends, top_labels, confidences)
    return segments


def _close(
    run: list[int],
    starts: Sequence[float],
    ends: Sequence[float],
    top_labels: Sequence[int | None],
    confidences: Sequence[float],
) -> list[Segment]:
    """The segment for a finished run, or nothing for an empty/background run."""
    if not run or top_labels[run[0]] is None:
        return []
    return [
        Segment(
            label=int(top_labels[run[0]]),
            start=float(starts[run[0]]),
            end=float(max(ends[i] for i in run)),
            confidence=float(sum(confidences[i] for i in run) / len(run)),
            clip_indices=tuple(run),
        )
    ]
