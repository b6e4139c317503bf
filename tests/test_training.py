"""Fine-tuning from confirmed labels: versions, promotion, pictures, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.db import IntegrityError
from django.utils import timezone

from annotator import proposals
from annotator.labels import create_label
from annotator.models import Clip
from tests.sticks import confirm, ingest_sticks
from training import pipeline
from training.deploy import scorer_for_version
from training.ml import artifacts, zeroshot
from training.ml.metrics import evaluate
from training.ml.train import TrainConfig
from training.models import RunStatus, TrainingRun
from training.tasks import train_task

pytestmark = pytest.mark.django_db
FAST = TrainConfig(epochs=8, batch_size=16, patience=0, seed=0)


@pytest.fixture
def stick_project(user, tiny_clip_dir, plain_demo_videos):
    return ingest_sticks(user, tiny_clip_dir, plain_demo_videos)


def _run(project, config=FAST) -> TrainingRun:
    run = pipeline.start_run(project, reason="test", queue=False)
    assert run.claim()
    try:
        pipeline.run_training(run, config)
    except Exception as exc:
        run.fail(exc)
    run.refresh_from_db()
    return run


def test_training_learns_what_zero_shot_cannot(stick_project, user):
    """Half the videos labeled; the deployed version labels the other half."""
    project, truth = stick_project
    clips = sorted(Clip.objects.filter(pk__in=truth), key=lambda c: (c.video_id, c.pk))
    videos = sorted({c.video_id for c in clips})
    train_videos = set(videos[: len(videos) // 2])
    confirm([c for c in clips if c.video_id in train_videos], truth, user)
    run = _run(project, TrainConfig(seed=0))
    assert run.status == RunStatus.SUCCEEDED, run.error + run.traceback
    assert run.version.is_live  # at least as good as zero-shot on held-out clips
    unseen = [c for c in clips if c.video_id not in train_videos]
    labels = proposals.project_labels(project)
    names = [lab.name for lab in labels]
    loaded = proposals.load_project_clip(project)
    x = np.concatenate(
        [
            proposals.clip_embeddings([c], proposals.frame_embeddings(c.video, loaded))
            for c in unseen
        ]
    )
    y = np.array([names.index(truth[c.pk].name) for c in unseen])
    live = proposals.project_scorer(project, loaded, labels)
    assert live.tag == f"v{run.version.number}"
    tuned = evaluate(live.logits(x), y, names)
    text = proposals.text_embeddings(loaded, [lab.prompt_text for lab in labels])
    mean = zeroshot.clip_features_mean(x)
    zero = evaluate(zeroshot.score(mean, text, loaded.logit_scale), y, names)
    assert zero["top1"] < 0.4, zero  # random CLIP weights know nothing of actions
    assert tuned["top1"] >= 0.8, tuned


def test_run_records_metrics_pictures_and_checksum(stick_project, user, client_in):
    project, truth = stick_project
    confirm(Clip.objects.filter(pk__in=truth), truth, user)
    run = _run(project)
    assert run.status == RunStatus.SUCCEEDED, run.traceback
    m = run.metrics
    assert {"top1", "top5", "macro_f1", "per_label_recall", "confusion"} <= set(
        m["model"]
    )
    assert m["zero_shot"]["n"] == m["n_heldout"] > 0
    resp = client_in.get(f"/p/sticks/models/v{run.version.number}/confusion.png")
    assert resp.status_code == 200 and resp["Content-Type"] == "image/png"
    page = client_in.get(f"/p/sticks/models/v{run.version.number}/")
    assert b"Held-out clips" in page.content
    run_page = client_in.get(f"/p/sticks/runs/{run.pk}/")
    assert b"confusion.png" in run_page.content  # the picture is on the run page


def test_corrupt_artifact_refuses_to_load(stick_project, user):
    project, truth = stick_project
    confirm(Clip.objects.filter(pk__in=truth), truth, user)
    version = _run(project).version
    weights = Path(version.artifact_dir) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(artifacts.ArtifactCorrupt):
        artifacts.load_version(version.artifact_dir, expected_checksum=version.checksum)


def test_no_labels_fails_with_a_reason(project):
    run = _run(project)
    assert run.status == RunStatus.FAILED
    assert run.error
    assert not project.model_versions.exists()


def test_one_active_run_per_project_in_the_database(project):
    TrainingRun.objects.create(project=project)
    assert pipeline.start_run(project, reason="test", queue=False) is None
    with pytest.raises(IntegrityError):
        TrainingRun.objects.create(project=project, status=RunStatus.RUNNING)


def test_killed_run_is_failed_by_the_check_and_a_new_one_starts(project):
    run = TrainingRun.objects.create(project=project, status=RunStatus.RUNNING)
    old = timezone.now() - pipeline.STALE_AFTER * 2
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=old)
    project.retrain_min_labels = 0
    project.save()
    started = pipeline.check_projects()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "worker stopped" in run.error
    assert len(started) == 1


def test_cancel_stops_a_queued_run(project):
    run = pipeline.start_run(project, reason="test", queue=False)
    pipeline.cancel_run(run)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    train_task.apply(args=(run.pk,))  # a late message does nothing
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_new_label_after_training_gets_zero_shot_weights(stick_project, user):
    project, truth = stick_project
    confirm(Clip.objects.filter(pk__in=truth), truth, user)
    version = _run(project).version
    create_label(project, "kicking", "a person kicking")
    labels = proposals.project_labels(project)
    loaded = proposals.load_project_clip(project)
    text = proposals.text_embeddings(loaded, [lab.prompt_text for lab in labels])
    scorer = scorer_for_version(version, loaded, labels, text)
    clip = Clip.objects.filter(pk__in=truth).first()
    x = proposals.clip_embeddings(
        [clip], proposals.frame_embeddings(clip.video, loaded)
    )
    assert scorer.logits(x).shape == (1, 6)


def test_one_label_is_refused_with_a_reason(stick_project, user):
    project, truth = stick_project
    walking = project.labels.get(name="walking")
    one = [c for c in Clip.objects.filter(pk__in=truth) if truth[c.pk] == walking]
    confirm(one, truth, user)
    run = _run(project)
    assert run.status == RunStatus.FAILED
    assert "label" in run.error.lower()
    assert not project.model_versions.exists()


def test_admin_force_live_and_rollback(stick_project, user, admin_client):
    project, truth = stick_project
    confirm(Clip.objects.filter(pk__in=truth), truth, user)
    first = _run(project).version
    _run(project)  # a second version, live or not
    admin_client.post(
        "/admin/training/modelversion/",
        {"action": "force_live", "_selected_action": [first.pk]},
    )
    first.refresh_from_db()
    assert first.is_live
    assert project.model_versions.filter(is_live=True).count() == 1
    admin_client.post(
        "/admin/training/modelversion/",
        {"action": "rollback", "_selected_action": [first.pk]},
    )
    assert first.parent is None  # trained when zero-shot was live
    assert not project.model_versions.filter(is_live=True).exists()
