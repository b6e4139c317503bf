"""Workflows across models: the video pipeline and project-wide jobs."""

from __future__ import annotations

import logging

from annotator import processing, proposals
from annotator.models import Job, Project, Video, VideoStatus
from harweb.queueing import enqueue
from training.ml.clip import ModelNotFound

log = logging.getLogger(__name__)


def run_video_pipeline(video: Video) -> None:
    """Process a claimed video, then propose; failures are stored on the row."""
    try:
        processing.process_video(video, progress=video.set_progress)
    except Exception as exc:
        log.exception("Processing video %s failed", video.pk)
        video.fail(exc)
        return
    processing.mark_ready(video)
    video.refresh_from_db()
    propose_or_record(video)


def propose_or_record(video: Video) -> None:
    """Make proposals; a missing model is shown on the video, not a failure."""
    video.set_progress(1.0, "Proposing actions")
    error = ""
    try:
        proposals.propose_video(video)
    except ModelNotFound as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("Proposals for video %s failed", video.pk)
        error = f"Proposals failed: {exc}"
    Video.objects.filter(pk=video.pk).update(
        proposal_error=error, progress_message="Done"
    )


def queue_repropose(project: Project) -> Job:
    """Ask the workers to re-score a project (after a label edit)."""
    from annotator.tasks import run_job_task

    job = Job.objects.create(project=project, kind="repropose", message="Waiting")
    enqueue(run_job_task, job.pk)
    return job


def run_job(job: Job) -> None:
    try:
        if job.kind == "repropose":
            proposals.repropose_project(job.project, progress=job.set_progress)
        else:
            raise ValueError(f"Unknown job kind {job.kind!r}")
    except Exception as exc:
        log.exception("Job %s failed", job.pk)
        job.finish(exc)
    else:
        job.finish()


def queue_video_processing(video: Video) -> None:
    from annotator.tasks import process_video_task

    if video.status == VideoStatus.QUEUED:
        enqueue(process_video_task, video.pk)
