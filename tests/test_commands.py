"""Management commands run the same code paths as the UI and the workers."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotator.models import Video, VideoStatus
from tests import videos
from training import pipeline
from training.models import RunStatus, TrainingRun

pytestmark = pytest.mark.django_db


def _call(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_ingest_processes_good_files_and_fails_on_bad(project, tmp_path):
    good = videos.testsrc(tmp_path / "good.mp4", seconds=3)
    bad = videos.text_file(tmp_path / "bad.mp4")
    out = StringIO()
    with pytest.raises(CommandError, match="2 of 3 file"):
        call_command(
            "ingest",
            str(good),
            str(bad),
            str(tmp_path / "missing.mp4"),
            "--project",
            "test",
            stdout=out,
        )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"ACCEPTED {good}")
    assert "processed: 3.00 s, 2 clips" in lines[1]
    assert lines[2].startswith(f"REJECTED {bad}: ")
    assert lines[3] == f"REJECTED {tmp_path / 'missing.mp4'}: no such file"
    video = Video.objects.get(status=VideoStatus.READY)
    assert video.segments.exists()


def test_ingest_unknown_project(tmp_path):
    with pytest.raises(CommandError, match="No project"):
        call_command("ingest", str(tmp_path / "x.mp4"), "--project", "nope")


def test_make_demo_videos_writes_labels(tmp_path):
    out = _call("make_demo_videos", str(tmp_path), "--count", "2")
    assert len(out.splitlines()) == 2 and "demo_01.mp4: " in out
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert set(labels) == {"demo_00.mp4", "demo_01.mp4"}


def test_make_dev_clip_and_propose_print_segments(project, tmp_path):
    _call("make_dev_clip", str(tmp_path / "clip"))
    assert (tmp_path / "clip" / "vocab.json").exists()
    call_command(
        "ingest",
        str(videos.testsrc(tmp_path / "a.mp4", seconds=3)),
        "--project",
        "test",
        stdout=StringIO(),
    )
    out = _call("propose", "--project", "test")
    assert "a.mp4 (3.0 s)" in out
    label_lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert label_lines and all(len(ln.split()) == 4 for ln in label_lines)


def test_train_command_reports_failure_clearly(project):
    with pytest.raises(CommandError, match="failed"):
        call_command("train", "--project", "test", stdout=StringIO())
    run = TrainingRun.objects.get()
    assert run.status == RunStatus.FAILED and run.error


def test_beat_resends_a_run_whose_message_was_lost(
    project, django_capture_on_commit_callbacks
):
    run = TrainingRun.objects.create(project=project, reason="scheduled")
    TrainingRun.objects.filter(pk=run.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.check_projects()  # eager here: the re-sent task runs at once
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED  # it ran (and failed: no labels)


def test_admin_retrain_now_and_cancel(admin_client, project):
    resp = admin_client.post(
        "/admin/annotator/project/",
        {"action": "retrain_now", "_selected_action": [project.pk]},
    )
    assert resp.status_code == 302
    run = TrainingRun.objects.get(project=project)
    assert run.reason == "admin"
    admin_client.post(
        "/admin/training/trainingrun/",
        {"action": "cancel", "_selected_action": [run.pk]},
    )
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
