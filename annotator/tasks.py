"""Celery tasks: take primary keys, claim the row, call one domain function."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import Q
from django.utils import timezone

from annotator import services
from annotator.models import Job, Video, VideoStatus

log = logging.getLogger(__name__)
RESEND_AFTER = timedelta(minutes=3)


@shared_task(acks_late=True)
def process_video_task(video_id: int) -> None:
    video = Video.objects.select_related("project").filter(pk=video_id).first()
    if video is None or not video.claim():
        return
    services.run_video_pipeline(video)


@shared_task(acks_late=True)
def run_job_task(job_id: int) -> None:
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None or not job.claim():
        return
    services.run_job(job)


@shared_task
def requeue_stale() -> int:
    """Re-send work whose message was lost (broker down, worker killed)."""
    now = timezone.now()
    stale = Video.objects.filter(
        status=VideoStatus.PROCESSING, heartbeat_at__lt=now - timedelta(minutes=10)
    )
    revived = stale.update(status=VideoStatus.QUEUED, progress_message="Retrying")
    # heartbeat_at of a queued row is when it was last sent: re-send each at
    # most once per RESEND_AFTER, so a long backlog does not pile up copies.
    due = now - RESEND_AFTER
    waiting = Video.objects.filter(status=VideoStatus.QUEUED).filter(
        Q(heartbeat_at__lt=due) | Q(heartbeat_at__isnull=True, created_at__lt=due)
    )
    for pk in waiting.values_list("pk", flat=True):
        try:
            process_video_task.delay(pk)
        except Exception as exc:  # broker still down: try at the next sweep
            log.warning("Broker unavailable, will retry: %s", exc)
            break
        Video.objects.filter(pk=pk, status=VideoStatus.QUEUED).update(heartbeat_at=now)
    return revived
