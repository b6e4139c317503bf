"""The Celery app. Workers run ``celery -A harweb worker``."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harweb.settings")

app = Celery("harweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
