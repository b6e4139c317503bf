"""Celery tasks for training (on the ``gpu`` queue; CPU workers consume it too)."""

from __future__ import annotations

import logging

from celery import shared_task

from training import pipeline
from training.ml.train import TrainingCancelled
from training.models import RunStatus, TrainingRun

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def train_task(run_id: int) -> None:
    run = TrainingRun.objects.select_related("project").filter(pk=run_id).first()
    if run is None or not run.claim():
        return
    try:
        pipeline.run_training(run)
    except TrainingCancelled:
        run.finish(RunStatus.CANCELLED, progress_message="Cancelled")
    except Exception as exc:
        log.exception("Training run %s failed", run_id)
        run.fail(exc)


@shared_task
def check_retrain() -> list[int]:
    return pipeline.check_projects()
