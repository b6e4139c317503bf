"""Accepting uploads: check each file with PyAV before anything is stored.

A rejected file leaves a Video row with the reason and no file; an accepted
one is moved into media storage under a random name and queued.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePath

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from annotator import media
from annotator.models import Project, Video, VideoStatus
from annotator.services import queue_video_processing


def safe_display_name(name: str) -> str:
    """The last path component of a client-supplied name, for display only."""
    base = PurePath(name.replace("\\", "/")).name.strip()
    return base[:255] or "upload"


@contextmanager
def _local_path(upload: UploadedFile | Path):
    """A filesystem path for PyAV, writing in-memory uploads to a temp file."""
    if isinstance(upload, Path):
        yield upload
        return
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    fd, tmp = tempfile.mkstemp(suffix=Path(upload.name or "").suffix[:8])
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        yield Path(tmp)
    finally:
        os.unlink(tmp)


def _size_error(size: int) -> str | None:
    limit = settings.HARWEB_MAX_UPLOAD_MB
    if size > limit * 1024 * 1024:
        return f"File is {size / 2**20:.0f} MB; the limit is {limit} MB."
    if size == 0:
        return "File is empty."
    return None


def _apply_probe(video: Video, info: media.ProbeResult) -> None:
    video.duration = info.duration
    video.fps = info.fps
    video.frame_count = info.frame_count
    video.width, video.height = info.width, info.height
    video.rotation = info.rotation
    video.time_base = info.time_base
    video.start_time = info.start_time
    video.video_codec = info.video_codec
    video.container = info.container


def ingest_upload(
    project: Project,
    upload: UploadedFile | Path,
    *,
    user=None,
    name: str = "",
    queue: bool = True,
) -> Video:
    """Check one file and store it as a queued video, or record why not.

    With ``queue=False`` the caller processes the video itself.
    """
    display = safe_display_name(name or getattr(upload, "name", "") or str(upload))
    size = upload.stat().st_size if isinstance(upload, Path) else upload.size
    video = Video(project=project, uploaded_by=user, original_name=display)
    video.size_bytes = size or 0
    reason = _size_error(video.size_bytes)
    info = None
    if reason is None:
        with _local_path(upload) as path:
            try:
                info = media.probe(path, max_duration_s=settings.HARWEB_MAX_DURATION_S)
            except media.MediaError as exc:
                reason = str(exc)
            else:
                _store(video, upload, path, info, queue=queue)
    if reason is not None:
        video.status, video.error = VideoStatus.REJECTED, reason
        video.save()
    return video


def _store(
    video: Video, upload, path: Path, info: media.ProbeResult, *, queue: bool
) -> None:
    _apply_probe(video, info)
    video.status = VideoStatus.QUEUED
    video.progress_message = "Waiting for a worker"
    video.heartbeat_at = timezone.now()  # when it was sent (see requeue_stale)
    video.save()  # gives the token used in the stored name
    try:
        with transaction.atomic():
            if isinstance(upload, Path):
                with open(path, "rb") as fh:
                    video.original.save(video.original_name, File(fh), save=False)
            else:
                video.original.save(video.original_name, upload, save=False)
            video.save(update_fields=["original"])
    except BaseException:
        if video.original:
            video.original.delete(save=False)
        video.delete()
        raise
    if queue:
        queue_video_processing(video)
