"""Merging per-clip top labels into time segments."""

from __future__ import annotations

import pytest

from training.ml.segments import Segment, merge_segments


def windows(n: int, length: float = 2.0, stride: float = 1.0):
    starts = [i * stride for i in range(n)]
    return starts, [s + length for s in starts]


def test_empty_input() -> None:
    assert merge_segments([], [], [], []) == []


def test_single_clip() -> None:
    assert merge_segments([3.0], [5.0], [7], [0.8]) == [
        Segment(label=7, start=3.0, end=5.0, confidence=0.8, clip_indices=(0,))
    ]


def test_single_background_clip() -> None:
    assert merge_segments([0.0], [2.0], [None], [0.1]) == []


def test_run_merges_overlapping_windows() -> None:
    starts, ends = windows(4)
    (seg,) = merge_segments(starts, ends, [1, 1, 1, 1], [0.5, 0.7, 0.9, 0.3])
    assert (seg.label, seg.start, seg.end) == (1, 0.0, 5.0)
    assert seg.confidence == pytest.approx(0.6)
    assert seg.clip_indices == (0, 1, 2, 3)


def test_alternating_labels_never_merge() -> None:
    starts, ends = windows(4)
    segs = merge_segments(starts, ends, [0, 1, 0, 1], [0.9] * 4)
    assert [s.label for s in segs] == [0, 1, 0, 1]
    assert [(s.start, s.end) for s in segs] == [(0, 2), (1, 3), (2, 4), (3, 5)]


def test_background_splits_a_run() -> None:
    starts, ends = windows(6)
    labels = [2, 2, None, None, 2, 2]
    segs = merge_segments(starts, ends, labels, [0.8, 0.6, 0.2, 0.1, 0.9, 0.7])
    assert [(s.label, s.start, s.end, s.clip_indices) for s in segs] == [
        (2, 0.0, 3.0, (0, 1)),
        (2, 4.0, 7.0, (4, 5)),
    ]
    assert [s.confidence for s in segs] == pytest.approx([0.7, 0.8])


def test_label_change_then_back() -> None:
    starts, ends = windows(5)
    segs = merge_segments(starts, ends, [0, 0, 3, 0, 0], [1.0] * 5)
    assert [(s.label, s.clip_indices) for s in segs] == [
        (0, (0, 1)),
        (3, (2,)),
        (0, (3, 4)),
    ]


def test_unsorted_input_is_merged_in_time_order() -> None:
    segs = merge_segments([2.0, 0.0, 1.0], [4.0, 2.0, 3.0], [5, 5, 5], [0.3, 0.6, 0.9])
    assert len(segs) == 1
    assert (segs[0].start, segs[0].end) == (0.0, 4.0)
    assert segs[0].clip_indices == (1, 2, 0)


def test_time_gap_splits_unless_disabled() -> None:
    # Only some clips given (e.g. just the accepted ones): 0-2 and 5-7 are apart.
    starts, ends, labels = [0.0, 2.0, 5.0], [2.0, 4.0, 7.0], [1, 1, 1]
    segs = merge_segments(starts, ends, labels, [1.0] * 3)
    assert [(s.start, s.end) for s in segs] == [(0.0, 4.0), (5.0, 7.0)]
    (joined,) = merge_segments(starts, ends, labels, [1.0] * 3, max_gap=None)
    assert (joined.start, joined.end) == (0.0, 7.0)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_segments([0.0], [1.0, 2.0], [1], [1.0])


def test_segment_is_frozen() -> None:
    seg = Segment(label=0, start=0.0, end=1.0, confidence=1.0, clip_indices=(0,))
    with pytest.raises(AttributeError):
        seg.label = 1  # type: ignore[misc]
