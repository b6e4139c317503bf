"""``manage.py train --project SLUG [--wait]``: train on confirmed labels."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from annotator.models import Project
from training import pipeline
from training.models import RunStatus, TrainingRun
from training.tasks import train_task


class Command(BaseCommand):
    help = "Train the project's temporal head now (or queue it with --queue)."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Queue the run for the workers and wait for it to finish",
        )

    def handle(self, *args, project, wait, **options):
        proj = Project.objects.filter(slug=project).first()
        if proj is None:
            raise CommandError(f"No project with slug {project!r}.")
        run = pipeline.start_run(proj, reason="command", queue=wait)
        if run is None:
            raise CommandError("A training run is already queued or running.")
        if wait:
            run = self._wait(run)
        else:
            train_task.apply(args=(run.pk,))  # same task code, in this process
            run.refresh_from_db()
        self._report(run)
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error}")

    def _wait(self, run: TrainingRun) -> TrainingRun:
        while True:
            run.refresh_from_db()
            if not run.is_active:
                return run
            self.stdout.write(f"\r{run.progress:5.0%} {run.progress_message}"[:120])
            time.sleep(1)

    def _report(self, run: TrainingRun) -> None:
        self.stdout.write(run.log)
        m = run.metrics or {}
        rows = [
            ("fine-tuned", m.get("model")),
            ("live", m.get("live")),
            ("zero-shot", m.get("zero_shot")),
        ]
        self.stdout.write(f"{'model':<12}{'top-1':>8}{'top-5':>8}{'macro-F1':>10}")
        for name, row in rows:
            if row:
                self.stdout.write(
                    f"{name:<12}{row.get('top1', 0):>8.3f}{row.get('top5', 0):>8.3f}"
                    f"{row.get('macro_f1', 0):>10.3f}"
                )
        if run.version_id:
            live = " (live)" if run.version.is_live else ""
            self.stdout.write(f"version v{run.version.number}{live}")
