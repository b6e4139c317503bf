"""A real Celery worker process on real Redis and PostgreSQL ingests a video.

Run with DATABASE_URL=postgres://... and REDIS_URL=redis://... (as .ci/run does);
skipped otherwise, and required under HARWEB_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from annotator.ingest import ingest_upload
from annotator.models import Video, VideoStatus
from tests import videos
from tests.conftest import need

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def services():
    need(connection.vendor == "postgresql", "PostgreSQL (set DATABASE_URL)")
    need(bool(settings.REDIS_URL), "Redis (set REDIS_URL)")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        need(False, f"Redis at {settings.REDIS_URL}")
    client.flushdb()  # no stale messages from an earlier run
    from harweb.celery import app

    app.conf.task_always_eager = False
    return client


def _worker_env(media_root: Path) -> dict:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        REDIS_URL=settings.REDIS_URL,
        HARWEB_MEDIA_ROOT=str(media_root),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(env: dict, name: str, log) -> subprocess.Popen:
    """A real Celery worker process on both queues, logging to ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "harweb",
        "worker",
        "-Q",
        "celery,gpu",
        "--pool=solo",
        "-l",
        "info",
        "-n",
        f"{name}@%h",
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


@pytest.fixture
def worker(services, _media_root, tmp_path):
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    proc = start_worker(_worker_env(_media_root), "test", log)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


def _wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")


def test_worker_ingests_a_video_end_to_end(worker, project, tmp_path):
    path = videos.testsrc(tmp_path / "e2e.mp4", seconds=4)
    video = ingest_upload(project, path, name="e2e.mp4")  # queued on commit
    assert video.status == VideoStatus.QUEUED

    def ready():
        v = Video.objects.get(pk=video.pk)
        return v.status in (VideoStatus.READY, VideoStatus.FAILED) and (
            v.progress_message == "Done"
        )

    _wait_for(ready, 120, "the worker to process the video", tmp_path / "worker.log")
    video.refresh_from_db()
    assert video.status == VideoStatus.READY, video.traceback
    assert video.clips.count() == 3
    assert video.proposal_error == ""
    assert video.segments.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _manage(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )


SWEEP = (
    "from datetime import timedelta; from django.utils import timezone; "
    "from annotator.models import Video; from annotator.tasks import requeue_stale; "
    "Video.objects.update(created_at=timezone.now() - timedelta(minutes=5), "
    "heartbeat_at=timezone.now() - timedelta(minutes=30)); requeue_stale()"
)


def test_redis_down_at_upload_loses_nothing(services, project, _media_root, tmp_path):
    """Upload while the broker is down; the sweeper sends it once it is back."""
    port = _free_port()
    env = _worker_env(_media_root)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"  # nothing listens here yet
    path = videos.testsrc(tmp_path / "offline.mp4", seconds=3)
    started = time.monotonic()
    done = _manage(env, "ingest", str(path), "--project", "test", "--queue")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30  # no hang on the dead broker
    assert "ACCEPTED" in done.stdout
    video = Video.objects.get(original_name="offline.mp4")
    assert video.status == VideoStatus.QUEUED and video.original

    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    log = tmp_path / "worker.log"
    worker = None
    try:
        time.sleep(0.5)
        with open(log, "w") as fh:
            worker = start_worker(env, "late", fh)
            swept = _manage(env, "shell", "-c", SWEEP)
            assert swept.returncode == 0, swept.stderr
            _wait_for(
                lambda: Video.objects.get(pk=video.pk).status == VideoStatus.READY,
                120,
                "the re-sent video to be processed",
                log,
            )
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)


def test_worker_killed_mid_job_is_retried(worker, project, _media_root, tmp_path):
    path = videos.testsrc(tmp_path / "long.mp4", seconds=40, size="640x480", rate=30)
    video = ingest_upload(project, path, name="long.mp4")
    log = tmp_path / "worker.log"
    _wait_for(
        lambda: Video.objects.get(pk=video.pk).status == VideoStatus.PROCESSING,
        60,
        "processing to start",
        log,
    )
    worker.kill()  # SIGKILL: no clean-up, the row stays "processing"
    worker.wait()
    assert Video.objects.get(pk=video.pk).status == VideoStatus.PROCESSING
    env = _worker_env(_media_root)
    with open(tmp_path / "worker2.log", "w") as fh:
        second = start_worker(env, "second", fh)
        try:
            swept = _manage(env, "shell", "-c", SWEEP)
            assert swept.returncode == 0, swept.stderr
            _wait_for(
                lambda: Video.objects.get(pk=video.pk).status == VideoStatus.READY,
                180,
                "the retried video",
                tmp_path / "worker2.log",
            )
        finally:
            second.terminate()
            second.wait(timeout=20)
    assert Video.objects.get(pk=video.pk).clips.count() == 39
