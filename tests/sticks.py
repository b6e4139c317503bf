"""A project of ingested stick-figure demo videos with their true labels."""

from __future__ import annotations

from django.utils import timezone

from annotator.demo_videos import ACTION_PROMPTS
from annotator.ingest import ingest_upload
from annotator.labels import create_label
from annotator.models import ActionLabel, Clip, ClipStatus, Membership, Project, Role
from annotator.services import run_video_pipeline


def clean_label(clip, segments) -> str | None:
    """The action covering the whole clip, or None if it straddles two."""
    for start, end, action in segments:
        if start - 1e-6 <= clip.start_s and clip.end_s <= end + 1e-6:
            return action
    return None


def ingest_sticks(user, clip_dir, demos) -> tuple[Project, dict[int, ActionLabel]]:
    """Project "sticks" (``user`` is admin) with ``demos`` ingested; the true
    label of every clip that lies inside one action, by clip id."""
    project = Project.objects.create(
        name="Sticks", slug="sticks", clip_model=str(clip_dir)
    )
    Membership.objects.create(project=project, user=user, role=Role.ADMIN)
    labels = {n: create_label(project, n, p) for n, p in ACTION_PROMPTS.items()}
    truth = {}
    for demo in demos:
        video = ingest_upload(project, demo.path, name=demo.path.name, queue=False)
        assert video.claim()
        run_video_pipeline(video)
        for clip in video.clips.all():
            action = clean_label(clip, demo.segments)
            if action:
                truth[clip.pk] = labels[action]
    return project, truth


def confirm(clips, truth: dict[int, ActionLabel], user) -> None:
    """Accept each clip with its true label, as ``user``."""
    for clip in clips:
        Clip.objects.filter(pk=clip.pk).update(
            status=ClipStatus.ACCEPTED,
            label=truth[clip.pk],
            labeled_by=user,
            labeled_at=timezone.now(),
        )
