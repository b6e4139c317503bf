"""The video pipeline end to end (in-process): clips, frames, proposals, cache."""

from __future__ import annotations

import numpy as np
import pytest

from annotator import media, proposals
from annotator.ingest import ingest_upload
from annotator.models import Clip, ClipStatus, Proposal, Segment, Video, VideoStatus
from annotator.services import run_video_pipeline
from tests import videos
from training.ml import encoders

pytestmark = pytest.mark.django_db


def _ingest(project, path) -> Video:
    video = ingest_upload(project, path, name=path.name, queue=False)
    assert video.status == VideoStatus.QUEUED, video.error
    assert video.claim()
    run_video_pipeline(video)
    video.refresh_from_db()
    return video


@pytest.fixture
def clip_video(tmp_path):
    return videos.testsrc(tmp_path / "clip.mp4", seconds=5, rate=10)


class EncodeSpy:
    """Counts frames through the real encoder (it still runs)."""

    def __init__(self, monkeypatch):
        self.frames = 0
        real = encoders.ImageEncoder.encode

        def counting(encoder, frames, *args, **kwargs):
            self.frames += len(frames)
            return real(encoder, frames, *args, **kwargs)

        monkeypatch.setattr(encoders.ImageEncoder, "encode", counting)


def test_video_is_cut_sampled_and_proposed(project, clip_video):
    video = _ingest(project, clip_video)
    assert video.status == VideoStatus.READY, video.error
    assert video.proposal_error == ""
    assert video.duration == pytest.approx(5.0, abs=0.01)
    assert video.frame_count == 50
    clips = list(video.clips.order_by("index"))
    # 2 s windows every 1 s over 5 s: starts 0, 1, 2, 3.
    assert [(c.start_s, c.end_s) for c in clips] == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert [(c.start_frame, c.end_frame) for c in clips] == [
        (0, 19),
        (10, 29),
        (20, 39),
        (30, 49),
    ]
    frames = media.SampledFrames.load(video.frames_path())
    assert frames.frames.shape == (20, 224, 224, 3)
    np.testing.assert_allclose(frames.times, np.arange(20) / 4)
    # Overlapping clips share grid frames: clip 1 starts where clip 0's 5th is.
    assert clips[0].frame_indices == list(range(8))
    assert clips[1].frame_indices == list(range(4, 12))
    assert all(c.status == ClipStatus.PROPOSED for c in clips)
    tags = set(Proposal.objects.values_list("model_tag", flat=True))
    assert len(tags) == 1 and tags.pop().startswith("zero-shot:")
    assert Proposal.objects.filter(clip=clips[0]).count() == 3  # three labels
    probs = Proposal.objects.filter(clip=clips[0]).values_list("probability", flat=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    segs = list(Segment.objects.filter(video=video).order_by("start_s"))
    assert segs and segs[0].start_s == 0 and segs[-1].end_s == 5
    assert video.proxy and video.poster


def test_frames_are_encoded_once_and_reused(project, clip_video, monkeypatch):
    spy = EncodeSpy(monkeypatch)
    video = _ingest(project, clip_video)
    assert spy.frames == 20  # each sampled frame once, though clips overlap
    proposals.propose_video(video)
    proposals.repropose_project(project)
    assert spy.frames == 20


def test_label_edit_rescores_without_decoding(
    client_in, project, clip_video, monkeypatch, django_capture_on_commit_callbacks
):
    video = _ingest(project, clip_video)
    spy = EncodeSpy(monkeypatch)

    def no_decoding(*args, **kwargs):
        raise AssertionError("video was decoded again")

    monkeypatch.setattr(media, "sample_frames", no_decoding)
    monkeypatch.setattr(media.av, "open", no_decoding)
    label = project.labels.get(name="waving")
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_in.post(
            f"/p/test/labels/{label.pk}/",
            {
                "name": "waving hands",
                "prompt": "waving both hands",
                "color": "#112233",
                "hotkey": "w",
            },
        )
    assert resp.status_code == 302
    assert spy.frames == 0
    job = project.jobs.get()
    assert job.status == "succeeded", job.error
    assert Proposal.objects.filter(clip__video=video, label=label).count() == 4
    assert label.history.filter(action="edit").exists()


def test_random_model_banner_and_timeline_on_video_page(client_in, project, clip_video):
    video = _ingest(project, clip_video)
    resp = client_in.get(f"/p/test/videos/{video.pk}/")
    assert b"random weights" in resp.content
    assert b'id="timeline-proposed"' in resp.content
    # Polling stops once proposals are there (htmx's 286).
    resp = client_in.get(
        f"/p/test/videos/{video.pk}/?partial=status", HTTP_HX_REQUEST="true"
    )
    assert resp.status_code == 286
    assert b'class="seg"' in resp.content


def test_missing_model_is_a_clear_error_naming_the_setting(
    project, clip_video, tmp_path
):
    project.clip_model = str(tmp_path / "no-such-model")
    project.save()
    video = _ingest(project, clip_video)
    assert video.status == VideoStatus.READY
    assert "HARWEB_CLIP_MODEL" in video.proposal_error
    assert str(tmp_path / "no-such-model") in video.proposal_error
    assert not Proposal.objects.exists()


def test_non_browser_codec_gets_an_h264_proxy(project, tmp_path):
    src = videos.testsrc(tmp_path / "old.avi", seconds=3, codec="mpeg4")
    video = _ingest(project, src)
    info = media.probe(video.proxy.path)
    assert info.video_codec == "h264" and info.browser_playable
    assert video.proxy.name != video.original.name


def test_proxy_serves_byte_ranges(client_in, project, clip_video):
    video = _ingest(project, clip_video)
    url = f"/p/test/videos/{video.pk}/proxy"
    resp = client_in.get(url, HTTP_RANGE="bytes=0-99")
    assert resp.status_code == 206
    assert resp["Content-Range"].startswith("bytes 0-99/")
    assert len(b"".join(resp.streaming_content)) == 100
    assert client_in.get(url, HTTP_RANGE="bytes=999999999-").status_code == 416


def test_worker_crash_leaves_labeled_clips_alone(project, clip_video):
    video = _ingest(project, clip_video)
    clip = video.clips.first()
    Clip.objects.filter(pk=clip.pk).update(status=ClipStatus.ACCEPTED)
    Video.objects.filter(pk=video.pk).update(status=VideoStatus.QUEUED)
    video.refresh_from_db()
    assert video.claim()
    run_video_pipeline(video)
    assert Clip.objects.filter(pk=clip.pk, status=ClipStatus.ACCEPTED).exists()


def test_sweeper_resends_only_rows_not_sent_recently(project, clip_video):
    from datetime import timedelta

    from django.utils import timezone

    from annotator.tasks import requeue_stale

    fresh = ingest_upload(project, clip_video, name="fresh.mp4", queue=False)
    lost = ingest_upload(project, clip_video, name="lost.mp4", queue=False)
    Video.objects.filter(pk=lost.pk).update(
        heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    requeue_stale()  # tasks are eager here: the re-sent one runs now
    assert Video.objects.get(pk=lost.pk).status == VideoStatus.READY
    assert Video.objects.get(pk=fresh.pk).status == VideoStatus.QUEUED
