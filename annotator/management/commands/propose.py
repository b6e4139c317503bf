"""``manage.py propose --project SLUG [--video ID]``: score clips, print segments."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotator.models import Project, VideoStatus
from annotator.proposals import propose_video
from training.ml.clip import ModelNotFound


class Command(BaseCommand):
    help = "Make action proposals for a project's videos and print their segments."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--video", type=int)

    def handle(self, *args, project, video, **options):
        proj = Project.objects.filter(slug=project).first()
        if proj is None:
            raise CommandError(f"No project with slug {project!r}.")
        videos = proj.videos.filter(status=VideoStatus.READY)
        if video is not None:
            videos = videos.filter(pk=video)
            if not videos.exists():
                raise CommandError(f"No ready video {video} in {project}.")
        for v in videos.order_by("pk"):
            try:
                propose_video(v)
            except ModelNotFound as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"video {v.pk} {v.original_name} ({v.duration:.1f} s)")
            for s in v.segments.filter(source="proposed").select_related("label"):
                self.stdout.write(
                    f"  {s.label.name:<20} {s.start_s:7.2f} {s.end_s:7.2f}  "
                    f"{s.confidence:.3f}"
                )
