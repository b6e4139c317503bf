"""``manage.py ingest FILE... --project SLUG``: check, store and process videos."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotator.ingest import ingest_upload
from annotator.models import Project, VideoStatus
from annotator.services import run_video_pipeline


class Command(BaseCommand):
    help = "Ingest video files into a project (same checks as the upload page)."

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument(
            "--queue", action="store_true", help="Hand processing to the workers"
        )

    def handle(self, *args, files, project, queue, **options):
        proj = Project.objects.filter(slug=project).first()
        if proj is None:
            raise CommandError(f"No project with slug {project!r}.")
        rejected = 0
        for path in files:
            if not path.is_file():
                self.stdout.write(f"REJECTED {path}: no such file")
                rejected += 1
                continue
            video = ingest_upload(proj, path, name=path.name, queue=queue)
            if video.status == VideoStatus.REJECTED:
                rejected += 1
                self.stdout.write(f"REJECTED {path}: {video.error}")
                continue
            self.stdout.write(f"ACCEPTED {path} as video {video.pk}")
            if not queue and video.claim():
                run_video_pipeline(video)
                video.refresh_from_db()
                self._report(video)
        if rejected:
            raise CommandError(f"{rejected} of {len(files)} file(s) rejected.")

    def _report(self, video) -> None:
        if video.status == VideoStatus.FAILED:
            self.stdout.write(f"  FAILED: {video.error}")
            return
        extra = f"; proposals: {video.proposal_error}" if video.proposal_error else ""
        self.stdout.write(
            f"  processed: {video.duration:.2f} s, {video.clips.count()} clips{extra}"
        )
