"""Shared fixtures: media in a temp folder, a tiny random CLIP, users, projects.

Tests that need PostgreSQL, Redis or Chromium skip when those are missing,
and fail instead under HARWEB_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE = os.environ.get("HARWEB_REQUIRE_SERVICES") == "1"


def need(condition: bool, what: str) -> None:
    """Skip (or fail in CI) when a required service is unavailable."""
    if condition:
        return
    if REQUIRE:
        pytest.fail(f"{what} is required under HARWEB_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not available")


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Every test writes media into its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _eager_celery():
    """Tasks run in-process unless a test starts a real worker."""
    from harweb.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = True


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from training.ml.devclip import make_dev_clip

    return make_dev_clip(tmp_path_factory.mktemp("clip") / "tiny", size="tiny")


@pytest.fixture(scope="session")
def demo_videos(tmp_path_factory):
    from annotator.demo_videos import make_demo_videos

    return make_demo_videos(tmp_path_factory.mktemp("demo"), count=4, seed=1)


@pytest.fixture(scope="session")
def plain_demo_videos(tmp_path_factory):
    """Stick figures that differ only in pose and motion (see make_demo_videos)."""
    from annotator.demo_videos import make_demo_videos

    return make_demo_videos(
        tmp_path_factory.mktemp("plain"), count=8, seed=1, vary_look=False
    )


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ann", password="pw-ann-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("eve", password="pw-eve-123")


@pytest.fixture
def project(user, tiny_clip_dir):
    from annotator.labels import create_label
    from annotator.models import Membership, Project, Role

    p = Project.objects.create(name="Test", slug="test", clip_model=str(tiny_clip_dir))
    Membership.objects.create(project=p, user=user, role=Role.ADMIN)
    for name in ("walking", "jumping", "waving"):
        create_label(p, name)
    return p


@pytest.fixture
def client_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture(scope="session", autouse=True)
def _no_stray_connections(django_db_setup, django_db_blocker):
    """End connections that live-server threads leave idle, so PostgreSQL can
    drop the test database at the end."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
