"""annotator.demo_videos: labelled synthetic videos that real tools can read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator import demo_videos, media
from annotator.demo_videos import ACTION_PROMPTS, ACTIONS, make_demo_videos

SIZE = (160, 120)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, make_demo_videos(out, count=3, seed=7, size=SIZE)


def test_every_action_has_a_prompt():
    assert set(ACTION_PROMPTS) == set(ACTIONS)
    assert all(prompt.strip() for prompt in ACTION_PROMPTS.values())


def test_segments_cover_each_video(made):
    _, videos = made
    for video in videos:
        segments = video.segments
        assert 2 <= len(segments) <= 3
        assert segments[0][0] == 0.0 and segments[-1][1] == pytest.approx(12.0)
        for (_, end, _), (start, _, _) in zip(segments, segments[1:], strict=False):
            assert start == end
        assert all(end - start >= 4.0 - 1e-6 for start, end, _ in segments)
        actions = [action for _, _, action in segments]
        assert set(actions) <= set(ACTIONS) and len(set(actions)) == len(actions)


def test_labels_json_matches(made):
    out, videos = made
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {v.path.name: [list(s) for s in v.segments] for v in videos}


def test_files_probe_as_browser_ready_video(made):
    _, videos = made
    for video in videos:
        info = media.probe(video.path)
        assert info.duration == pytest.approx(12.0)
        assert info.frame_count == 180 and info.fps == pytest.approx(15.0)
        assert (info.width, info.height) == SIZE
        assert info.browser_playable == (demo_videos._codec() == "libx264")


def test_figure_is_visible_and_moves_in_every_segment(made):
    _, videos = made
    for video in videos:
        sampled = media.sample_frames(video.path, fps=4.0, size=112)
        for frame in sampled.frames:
            background = np.median(frame.reshape(-1, 3), axis=0)
            figure = np.abs(frame.astype(int) - background).sum(axis=2) > 60
            assert figure.mean() > 0.005  # inside the centre crop
        for start, end, action in video.segments:
            inside = sampled.frames[(sampled.times >= start) & (sampled.times < end)]
            motion = np.abs(np.diff(inside.astype(int), axis=0)).mean()
            assert motion > 0.05, action


def test_same_seed_same_videos(made, tmp_path):
    _, videos = made
    again = make_demo_videos(tmp_path, count=2, seed=7, size=SIZE)
    for first, second in zip(videos, again, strict=False):
        assert first.segments == second.segments
        a = media.sample_frames(first.path, fps=1.0, size=64).frames
        b = media.sample_frames(second.path, fps=1.0, size=64).frames
        np.testing.assert_array_equal(a, b)


def test_other_seed_other_videos(made, tmp_path):
    _, videos = made
    other = make_demo_videos(tmp_path, count=3, seed=8, size=SIZE)
    assert [v.segments for v in other] != [v.segments for v in videos]


def test_short_video_is_one_action(tmp_path):
    (video,) = make_demo_videos(tmp_path, count=1, duration_s=3.0, size=SIZE)
    assert video.segments == [(0.0, 3.0, ACTIONS[0])]
    assert media.probe(video.path).frame_count == 45
