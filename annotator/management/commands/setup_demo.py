"""``manage.py setup_demo``: a demo user, project, labels, model and videos."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from annotator.demo_videos import ACTION_PROMPTS, make_demo_videos
from annotator.ingest import ingest_upload
from annotator.labels import create_label
from annotator.models import Membership, Project, Role
from training.ml.clip import ModelNotFound, load_clip
from training.ml.devclip import make_dev_clip


class Command(BaseCommand):
    help = "Create the demo project (idempotent): user demo/demo, labels, videos."

    def add_arguments(self, parser):
        parser.add_argument("--videos", type=int, default=6)
        parser.add_argument("--password", default="demo")
        parser.add_argument(
            "--queue", action="store_true", help="Let the workers process the videos"
        )

    def handle(self, *args, videos, password, queue, **options):
        user = self._user(password)
        project, created = Project.objects.get_or_create(
            slug="demo", defaults={"name": "Demo: stick figures"}
        )
        Membership.objects.get_or_create(
            project=project, user=user, defaults={"role": Role.ADMIN}
        )
        if not created:
            self.stdout.write("Demo project exists; leaving it as it is.")
            return
        project.clip_model = self._model()
        project.retrain_min_labels = 15
        project.save()
        for name, prompt in ACTION_PROMPTS.items():
            create_label(project, name, prompt)
        folder = settings.VAR_DIR / "demo-videos"
        for demo in make_demo_videos(folder, count=videos, seed=0):
            video = ingest_upload(project, demo.path, name=demo.path.name, queue=queue)
            self.stdout.write(f"{demo.path.name}: {video.status}")
        self.stdout.write("Log in as demo / demo.")

    def _user(self, password):
        users = get_user_model()
        user = users.objects.filter(username="demo").first()
        if user is None:
            user = users.objects.create_superuser("demo", "demo@example.com", password)
        return user

    def _model(self) -> str:
        """The configured CLIP if it loads offline, else a random-weight one."""
        try:
            load_clip(settings.HARWEB_CLIP_MODEL)
            return ""
        except ModelNotFound:
            folder = settings.VAR_DIR / "models" / "dev-clip-tiny"
            if not (folder / "config.json").exists():
                make_dev_clip(folder, size="tiny")
            self.stdout.write(f"No CLIP model available offline; using {folder}.")
            return str(folder)
