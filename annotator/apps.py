"""App config: makes the folders that the embedded broker and media need."""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class AnnotatorConfig(AppConfig):
    name = "annotator"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        opts = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders = [settings.MEDIA_ROOT, settings.VAR_DIR, settings.STATIC_ROOT]
        folders += [opts[k] for k in ("data_folder_in", "control_folder") if k in opts]
        folders += [opts["processed_folder"]] if "processed_folder" in opts else []
        for folder in folders:
            # Read-only deploys create these themselves.
            with contextlib.suppress(OSError):
                Path(folder).mkdir(parents=True, exist_ok=True)
