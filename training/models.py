"""Model versions and the training runs that make them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotator.models import Project
from harweb.errors import failure_fields


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class ModelVersion(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="model_versions"
    )
    number = models.PositiveIntegerField()
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="children",
    )
    is_live = models.BooleanField(default=False)
    encoder_name = models.CharField(max_length=500)
    encoder_fingerprint = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    artifact_dir = models.CharField(max_length=500)
    checksum = models.CharField(max_length=64)
    backend = models.CharField(max_length=32, blank=True)
    backends = models.JSONField(
        default=list, help_text="Per backend tried: speed, parity."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "number"], name="unique_version"
            ),
            # At most one live version per project, enforced by the database.
            models.UniqueConstraint(
                fields=["project"], condition=Q(is_live=True), name="one_live_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.number}"

    @property
    def tag(self) -> str:
        return f"v{self.number}"

    @property
    def heldout_top1(self) -> float | None:
        return self.metrics.get("model", {}).get("top1")


class TrainingRun(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="training_runs"
    )
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    reason = models.CharField(max_length=32, default="manual")
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True)
    labels_used = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One queued or running run per project, enforced by the database.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_run",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.project.slug} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_RUN_STATUSES

    def claim(self) -> bool:
        """QUEUED -> RUNNING; False when cancelled or taken by another worker."""
        now = timezone.now()
        n = TrainingRun.objects.filter(pk=self.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, heartbeat_at=now
        )
        return n == 1

    def set_progress(self, fraction: float, message: str = "", **fields) -> None:
        TrainingRun.objects.filter(pk=self.pk).update(
            progress=max(0.0, min(1.0, fraction)),
            progress_message=message[:200],
            heartbeat_at=timezone.now(),
            **fields,
        )

    def append_log(self, line: str) -> None:
        self.log += f"{timezone.now():%H:%M:%S} {line}\n"
        TrainingRun.objects.filter(pk=self.pk).update(log=self.log)

    def finish(self, status: str, **fields) -> None:
        TrainingRun.objects.filter(pk=self.pk).update(
            status=status, finished_at=timezone.now(), **fields
        )

    def fail(self, exc: BaseException) -> None:
        TrainingRun.objects.filter(pk=self.pk).update(
            status=RunStatus.FAILED,
            **failure_fields(exc),
            finished_at=timezone.now(),
        )
