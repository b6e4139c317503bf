"""Turning an accepted video into a proxy, a poster, clips and sampled frames."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotator import media
from annotator.models import Clip, ClipStatus, Video, VideoStatus
from annotator.storage import media_path, relative, write_atomically

Progress = Callable[[float, str], None]


def process_video(video: Video, progress: Progress | None = None) -> None:
    """Probe, proxy, poster, sample and cut one video; safe to run again."""
    report = progress or (lambda fraction, message: None)
    src = video.original.path
    report(0.02, "Checking the file")
    info = media.probe(src)
    report(0.05, "Making a browser-playable copy")
    _make_proxy(video, src, info)
    report(0.2, "Making a poster")
    poster = media_path("posters", f"{video.token}.jpg")
    media.make_poster(src, poster, at_s=min(1.0, info.duration * 0.1))
    video.poster.name = relative(poster)
    report(0.25, "Sampling frames")
    frames = media.sample_frames(
        src,
        fps=video.project.sample_fps,
        progress=lambda f: report(0.25 + 0.6 * f, "Sampling frames"),
    )
    path = write_atomically(video.frames_path(), frames.save)
    report(0.87, "Cutting clips")
    _replace_clips(video, frames, info.duration)
    video.frames_file = relative(path)
    video.processed_at = timezone.now()
    video.save(update_fields=["proxy", "poster", "frames_file", "processed_at"])


def _make_proxy(video: Video, src: str, info: media.ProbeResult) -> None:
    if info.browser_playable:
        video.proxy.name = video.original.name
        return
    dst = media_path("proxies", f"{video.token}.mp4")
    media.make_proxy(src, dst, info)
    video.proxy.name = relative(dst)


def clip_rows(video: Video, frames: media.SampledFrames, duration: float) -> list[Clip]:
    project = video.project
    windows = media.clip_windows(duration, project.window_s, project.stride_s)
    last_frame = max(len(frames.frame_times) - 1, 0)
    rows = []
    for i, (start, end) in enumerate(windows):
        idx = media.clip_frame_indices(
            frames.times, start, end, project.frames_per_clip
        )
        # The last frame that starts before the window ends (half-open [s, e)).
        end_frame = int(np.searchsorted(frames.frame_times, end - 1e-6)) - 1
        rows.append(
            Clip(
                video=video,
                index=i,
                start_s=round(start, 6),
                end_s=round(end, 6),
                start_frame=media.frame_at(frames.frame_times, start),
                end_frame=min(max(end_frame, 0), last_frame),
                frame_indices=[int(x) for x in idx],
                status=ClipStatus.PENDING,
            )
        )
    return rows


@transaction.atomic
def _replace_clips(video: Video, frames: media.SampledFrames, duration: float) -> None:
    # Clips are rebuilt only while no one has decided on any of them, so a
    # re-run after a crash never throws away human labels.
    if video.clips.exclude(
        status__in=[ClipStatus.PENDING, ClipStatus.PROPOSED]
    ).exists():
        return
    video.clips.all().delete()
    Clip.objects.bulk_create(clip_rows(video, frames, duration))


def mark_ready(video: Video) -> None:
    Video.objects.filter(pk=video.pk).update(
        status=VideoStatus.READY, progress=1.0, progress_message="Done"
    )
