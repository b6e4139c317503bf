"""Projects, labels, videos, clips, proposals and human decisions.

Single-row state changes live on the models (``Clip.accept``); workflows that
touch several models live in ``annotator.services`` and ``annotator.review``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from harweb.errors import failure_fields


class Strategy(models.TextChoices):
    """Active-learning strategies; the values match ``annotator.active.Strategy``."""

    ENTROPY = "entropy", "Uncertainty: entropy"
    MARGIN = "margin", "Uncertainty: margin"
    LEAST_CONFIDENCE = "least_confidence", "Uncertainty: least confidence"
    KCENTER = "kcenter", "Diversity: k-center"
    BALANCED = "balanced", "Class-balanced uncertainty"
    RANDOM = "random", "Random"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    REVIEWER = "reviewer", "Reviewer"
    ANNOTATOR = "annotator", "Annotator"


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    clip_model = models.CharField(
        max_length=500,
        blank=True,
        help_text="Hugging Face id or local folder of a CLIP model; "
        "blank uses HARWEB_CLIP_MODEL.",
    )
    window_s = models.FloatField(default=2.0, help_text="Clip length in seconds.")
    stride_s = models.FloatField(default=1.0, help_text="Seconds between clip starts.")
    sample_fps = models.FloatField(default=4.0, help_text="Frames sampled per second.")
    frames_per_clip = models.PositiveSmallIntegerField(default=8)
    background_threshold = models.FloatField(
        default=0.0,
        help_text="A clip whose best label probability is below this is "
        "proposed as background (no action).",
    )
    strategy = models.CharField(
        max_length=32, choices=Strategy.choices, default=Strategy.ENTROPY
    )
    retrain_min_labels = models.PositiveIntegerField(
        default=20, help_text="New confirmed labels that trigger a training run."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        if not self.slug:
            self.slug = slugify(self.name)[:200] or "project"
        super().save(*args, **kwargs)

    @property
    def clip_model_name(self) -> str:
        return self.clip_model or settings.HARWEB_CLIP_MODEL

    def role_of(self, user) -> str | None:
        if not user.is_authenticated:
            return None
        m = self.memberships.filter(user=user).first()
        return m.role if m else None


class Membership(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"], name="one_role_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} – {self.project} ({self.role})"


class ActionLabel(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="labels"
    )
    name = models.CharField(max_length=100)
    prompt = models.CharField(
        max_length=300, blank=True, help_text="Text for CLIP; blank uses the name."
    )
    color = models.CharField(max_length=7, default="#4e79a7")
    hotkey = models.CharField(max_length=1, blank=True)
    is_active = models.BooleanField(default=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], name="unique_label_name"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def prompt_text(self) -> str:
        return self.prompt or self.name


class LabelChange(models.Model):
    """History of renames, prompt edits and merges, so nothing is lost."""

    label = models.ForeignKey(
        ActionLabel, on_delete=models.CASCADE, related_name="history"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    action = models.CharField(max_length=32)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]


class VideoStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    PROCESSING = "processing", "Processing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"


def _upload_to(instance: Video, filename: str) -> str:
    # The user's filename is never a path: only a cleaned extension survives.
    suffix = Path(filename).suffix.lower()
    suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
    return (
        f"videos/{instance.project_id}/{timezone.now():%Y%m%d}/{instance.token}{suffix}"
    )


class Video(models.Model):
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="videos"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    token = models.CharField(max_length=32, unique=True, editable=False)
    original_name = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField(default=0)
    original = models.FileField(upload_to=_upload_to, max_length=500, blank=True)
    proxy = models.FileField(max_length=500, blank=True)
    poster = models.FileField(max_length=500, blank=True)
    frames_file = models.CharField(max_length=500, blank=True)
    duration = models.FloatField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)
    frame_count = models.PositiveIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    rotation = models.SmallIntegerField(default=0)
    time_base = models.CharField(max_length=32, blank=True)
    start_time = models.FloatField(default=0.0)
    video_codec = models.CharField(max_length=32, blank=True)
    container = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=16, choices=VideoStatus.choices, default=VideoStatus.QUEUED
    )
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    progress = models.FloatField(default=0.0)
    progress_message = models.CharField(max_length=200, blank=True)
    proposal_error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.original_name

    def save(self, *args, **kwargs):
        if not self.token:
            import secrets

            self.token = secrets.token_hex(16)
        super().save(*args, **kwargs)

    @property
    def is_done(self) -> bool:
        return self.status in (
            VideoStatus.READY,
            VideoStatus.FAILED,
            VideoStatus.REJECTED,
        )

    def claim(self) -> bool:
        """Move QUEUED -> PROCESSING; False when another worker has it."""
        n = Video.objects.filter(pk=self.pk, status=VideoStatus.QUEUED).update(
            status=VideoStatus.PROCESSING,
            progress=0.0,
            error="",
            traceback="",
            heartbeat_at=timezone.now(),
        )
        return n == 1

    def set_progress(self, fraction: float, message: str = "") -> None:
        # A plain UPDATE so that progress shows while the task still runs.
        Video.objects.filter(pk=self.pk).update(
            progress=max(0.0, min(1.0, fraction)),
            progress_message=message[:200],
            heartbeat_at=timezone.now(),
        )

    def fail(self, exc: BaseException) -> None:
        Video.objects.filter(pk=self.pk).update(
            status=VideoStatus.FAILED,
            **failure_fields(exc),
        )

    def frames_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "frames" / f"{self.pk}.npz"


class ClipStatus(models.TextChoices):
    PENDING = "pending", "Waiting for proposals"
    PROPOSED = "proposed", "Proposed"
    ACCEPTED = "accepted", "Labeled"
    REJECTED = "rejected", "None of these"
    SKIPPED = "skipped", "Skipped"


# Clips waiting for a first decision, and clips that carry one.
UNLABELED = (ClipStatus.PROPOSED,)
LABELED = (ClipStatus.ACCEPTED, ClipStatus.REJECTED)
# The longest decision time kept; a tab left open overnight is not a signal.
MAX_DURATION_MS = 24 * 3600 * 1000


class DecisionError(ValueError):
    """A decision that cannot be recorded as sent (HTTP 400)."""

    status_code = 400


class ClipConflict(DecisionError):
    """The clip is not (or no longer) this user's to decide (HTTP 409)."""

    status_code = 409


def claim_free(user, now=None) -> Q:
    """Clips ``user`` may claim: unclaimed, claim expired, or already theirs."""
    now = now or timezone.now()
    return Q(claimed_by__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=user)


class ClipQuerySet(models.QuerySet):
    def with_top_label(self) -> ClipQuerySet:
        """Annotate the rank-0 proposal's label id (saves a query per clip)."""
        top = Proposal.objects.filter(clip=models.OuterRef("pk"), rank=0)
        return self.annotate(top_label_pk=models.Subquery(top.values("label_id")[:1]))


class Clip(models.Model):
    video = models.ForeignKey(Video, on_delete=models.CASCADE, related_name="clips")
    index = models.PositiveIntegerField()
    start_s = models.FloatField()
    end_s = models.FloatField()
    start_frame = models.PositiveIntegerField()
    end_frame = models.PositiveIntegerField()
    # Indices into the video's sampled-frame grid (shared by overlapping clips).
    frame_indices = models.JSONField(default=list)
    status = models.CharField(
        max_length=16, choices=ClipStatus.choices, default=ClipStatus.PENDING
    )
    label = models.ForeignKey(
        ActionLabel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="clips",
    )
    labeled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    labeled_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Uncertainty of the live model's proposal, for fast queue ordering.
    top_prob = models.FloatField(null=True, blank=True)
    informativeness = models.FloatField(null=True, blank=True)

    objects = ClipQuerySet.as_manager()

    class Meta:
        ordering = ["video_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["video", "index"], name="unique_clip_index")
        ]
        indexes = [models.Index(fields=["status", "informativeness"])]

    def __str__(self) -> str:
        return f"{self.video} [{self.start_s:.1f}–{self.end_s:.1f}s]"

    # --- claims --------------------------------------------------------------

    def claim_for(self, user, *, statuses=UNLABELED) -> bool:
        """Atomically claim (or renew) the clip for ``user``; False if taken.

        One conditional UPDATE: of two users racing for the same clip exactly
        one matches the WHERE clause, so nobody ever shares a clip.
        """
        now = timezone.now()
        until = now + timedelta(seconds=settings.HARWEB_CLAIM_SECONDS)
        n = Clip.objects.filter(
            claim_free(user, now), pk=self.pk, status__in=statuses
        ).update(claimed_by=user, claimed_until=until)
        if n:
            self.claimed_by, self.claimed_until = user, until
        return n == 1

    @classmethod
    def claim_first(cls, user, ids: list[int], *, statuses=UNLABELED) -> int | None:
        """Claim the first of ``ids`` (in that order) that is free; its id.

        On PostgreSQL this is one statement, ``SKIP LOCKED``: annotators
        racing for the same top candidates each take the next one instead of
        queueing behind each other's row locks. Other databases serialise
        writers anyway and get the same in a short transaction.
        """
        if not ids:
            return None
        now = timezone.now()
        until = now + timedelta(seconds=settings.HARWEB_CLAIM_SECONDS)
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(cls._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""UPDATE {table} SET claimed_by_id = %s, claimed_until = %s
                    WHERE id = (
                        SELECT id FROM {table}
                        WHERE id = ANY(%s::bigint[]) AND status = ANY(%s::text[])
                          AND (claimed_by_id IS NULL OR claimed_until < %s
                               OR claimed_by_id = %s)
                        ORDER BY array_position(%s::bigint[], id)
                        LIMIT 1 FOR UPDATE SKIP LOCKED
                    ) RETURNING id""",
                    [user.pk, until, ids, list(statuses), now, user.pk, ids],
                )
                row = cursor.fetchone()
            return row[0] if row else None
        order = models.Case(
            *(models.When(pk=pk, then=models.Value(i)) for i, pk in enumerate(ids)),
            output_field=models.IntegerField(),
        )
        with transaction.atomic():
            pk = (
                cls.objects.filter(
                    claim_free(user, now), pk__in=ids, status__in=statuses
                )
                .order_by(order)
                .values_list("pk", flat=True)
                .first()
            )
            if pk is not None:
                cls.objects.filter(pk=pk).update(claimed_by=user, claimed_until=until)
        return pk

    def release(self, user) -> bool:
        """Give the clip back to the pool if ``user`` holds it."""
        n = Clip.objects.filter(pk=self.pk, claimed_by=user).update(
            claimed_by=None, claimed_until=None
        )
        if n:
            self.claimed_by, self.claimed_until = None, None
        return n == 1

    # --- decisions -----------------------------------------------------------

    @property
    def top_label_id(self) -> int | None:
        """The label of the live model's first proposal (rank 0), if any."""
        if "top_label_pk" not in self.__dict__:  # not from with_top_label()
            self.top_label_pk = (
                self.proposals.filter(rank=0).values_list("label_id", flat=True).first()
            )
        return self.top_label_pk

    def snapshot(self) -> dict:
        """The decided state, as kept in ``Annotation.previous`` for undo."""
        return {
            "status": self.status,
            "label_id": self.label_id,
            "labeled_by_id": self.labeled_by_id,
            "labeled_at": self.labeled_at.isoformat() if self.labeled_at else None,
            "start_s": self.start_s,
            "end_s": self.end_s,
        }

    def restore(self, previous: dict) -> None:
        """Put back a ``snapshot()`` (in memory; the caller saves)."""
        from django.utils.dateparse import parse_datetime

        self.status = previous["status"]
        self.label_id = previous["label_id"]
        self.labeled_by_id = previous["labeled_by_id"]
        at = previous["labeled_at"]
        self.labeled_at = parse_datetime(at) if at else None
        self.start_s = previous["start_s"]
        self.end_s = previous["end_s"]

    def checked_edges(
        self, start_s: float | None, end_s: float | None
    ) -> tuple[float, float]:
        """New clip edges (unchanged where None); DecisionError when invalid."""
        start = self.start_s if start_s is None else float(start_s)
        end = self.end_s if end_s is None else float(end_s)
        if not (math.isfinite(start) and math.isfinite(end)):
            raise DecisionError("start_s and end_s must be finite numbers.")
        if start < 0:
            raise DecisionError("start_s must not be negative.")
        if end <= start:
            raise DecisionError(f"end_s ({end:g}) must be after start_s ({start:g}).")
        duration = self.video.duration
        if duration and end > duration + 1e-3:
            raise DecisionError(
                f"end_s ({end:g}) is past the end of the video ({duration:g} s)."
            )
        return round(start, 3), round(end, 3)

    def accept(
        self,
        user,
        label: ActionLabel,
        *,
        duration_ms: int = 0,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Annotation:
        """Confirm ``label``: ACCEPT when it is the top proposal, else CORRECT."""
        decision = (
            Decision.ACCEPT if label.pk == self.top_label_id else Decision.CORRECT
        )
        return self._decide(
            user,
            decision=decision,
            label=label,
            status=ClipStatus.ACCEPTED,
            duration_ms=duration_ms,
            start_s=start_s,
            end_s=end_s,
        )

    def reject(
        self,
        user,
        *,
        duration_ms: int = 0,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Annotation:
        """None of the labels fits this clip."""
        return self._decide(
            user,
            decision=Decision.REJECT,
            label=None,
            status=ClipStatus.REJECTED,
            duration_ms=duration_ms,
            start_s=start_s,
            end_s=end_s,
        )

    def skip(self, user, *, duration_ms: int = 0) -> Annotation:
        """Hand the clip back to the pool undecided (the claim is released)."""
        return self._decide(
            user,
            decision=Decision.SKIP,
            label=None,
            status=None,
            duration_ms=duration_ms,
            allowed=UNLABELED + LABELED,
        )

    def review(
        self,
        user,
        label: ActionLabel | None,
        *,
        duration_ms: int = 0,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> Annotation:
        """A second opinion on a decided clip; ``label=None`` means none fits.

        ``agrees`` records whether it matches the first decision as this
        instance saw it (the write fails if the clip changed since). A
        differing opinion replaces the clip's label (reviewers edit labels);
        undo puts the first one back.
        """
        if self.labeled_by_id == user.pk:
            raise DecisionError("A second opinion must come from someone else.")
        if label is None:
            agrees = self.status == ClipStatus.REJECTED
            status = ClipStatus.REJECTED
        else:
            agrees = self.status == ClipStatus.ACCEPTED and self.label_id == label.pk
            status = ClipStatus.ACCEPTED
        return self._decide(
            user,
            decision=Decision.REVIEW,
            label=label,
            status=None if agrees else status,
            duration_ms=duration_ms,
            start_s=start_s,
            end_s=end_s,
            allowed=LABELED,
            agrees=agrees,
        )

    def _decide(
        self,
        user,
        *,
        decision: str,
        label: ActionLabel | None,
        status: str | None,
        duration_ms: int,
        start_s: float | None = None,
        end_s: float | None = None,
        allowed=UNLABELED,
        agrees: bool | None = None,
    ) -> Annotation:
        """Record one decision; ``status=None`` keeps the label.

        Only the user holding the claim may decide (an expired claim still
        counts until someone else takes the clip); the claim ends with it.
        Optimistic: the UPDATE only matches the row as this instance saw it,
        claimed by ``user``, so the snapshot kept for undo is exact.
        """
        if label is not None and label.project_id != self.video.project_id:
            raise DecisionError("That label belongs to another project.")
        if self.claimed_by_id != user.pk or self.status not in allowed:
            raise ClipConflict(self._conflict(user, allowed, decision))
        duration_ms = max(0, min(int(duration_ms or 0), MAX_DURATION_MS))
        now = timezone.now()
        previous = self.snapshot()
        start, end = self.start_s, self.end_s
        if decision != Decision.SKIP:
            start, end = self.checked_edges(start_s, end_s)
        change = {
            "start_s": start,
            "end_s": end,
            "claimed_by": None,
            "claimed_until": None,
        }
        if status is not None:
            change.update(status=status, label=label, labeled_by=user, labeled_at=now)
        with transaction.atomic():
            n = Clip.objects.filter(
                pk=self.pk,
                claimed_by=user,
                status=self.status,
                label_id=self.label_id,
                start_s=self.start_s,
                end_s=self.end_s,
            ).update(**change)
            if n != 1:
                raise ClipConflict(self._conflict(user, allowed, decision, fresh=True))
            annotation = Annotation.objects.create(
                clip=self,
                user=user,
                decision=decision,
                label=label,
                previous=previous,
                start_s=start,
                end_s=end,
                duration_ms=duration_ms,
                agrees=agrees,
            )
        self.start_s, self.end_s = start, end
        self.claimed_by, self.claimed_until = None, None
        if status is not None:  # keep the related objects: no re-fetch needed
            self.status, self.label, self.labeled_by = status, label, user
            self.labeled_at = now
        return annotation

    def _conflict(self, user, allowed, decision, *, fresh: bool = False) -> str:
        """Why ``user`` cannot decide this clip now (re-read when ``fresh``)."""
        clip = Clip.objects.get(pk=self.pk) if fresh else self
        if clip.claimed_by_id != user.pk:
            return (
                "This clip is not claimed by you (the claim expired and someone "
                "else took it, or it was never yours)."
            )
        if clip.status not in allowed:
            if decision == Decision.REVIEW:
                return "This clip has no decision yet to review."
            return "This clip has already been decided."
        return "This clip changed while you were looking at it; please look again."


class Proposal(models.Model):
    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="proposals")
    label = models.ForeignKey(
        ActionLabel, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    rank = models.PositiveSmallIntegerField()
    score = models.FloatField(help_text="Logit.")
    probability = models.FloatField()
    model_tag = models.CharField(max_length=100)
    model_version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["clip_id", "rank"]
        indexes = [models.Index(fields=["clip", "rank"])]


class SegmentSource(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    CONFIRMED = "confirmed", "Confirmed"


class Segment(models.Model):
    video = models.ForeignKey(Video, on_delete=models.CASCADE, related_name="segments")
    label = models.ForeignKey(ActionLabel, on_delete=models.CASCADE, related_name="+")
    start_s = models.FloatField()
    end_s = models.FloatField()
    confidence = models.FloatField(default=1.0)
    source = models.CharField(max_length=16, choices=SegmentSource.choices)
    model_tag = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["video_id", "start_s"]


class Decision(models.TextChoices):
    ACCEPT = "accept", "Accepted proposal"
    CORRECT = "correct", "Corrected label"
    REJECT = "reject", "None of these"
    SKIP = "skip", "Skipped"
    REVIEW = "review", "Second opinion"


class Annotation(models.Model):
    """One human decision on a clip; undone decisions are kept, marked."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE, related_name="annotations")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision = models.CharField(max_length=16, choices=Decision.choices)
    label = models.ForeignKey(
        ActionLabel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    previous = models.JSONField(default=dict, help_text="Clip state before, for undo.")
    start_s = models.FloatField(null=True, blank=True)
    end_s = models.FloatField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    agrees = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def undo(self) -> Clip:
        """Put the clip back as it was before this decision and re-claim it.

        Refused (ClipConflict) when the clip changed since, or someone else is
        looking at it now: undo must never overwrite another person's work.
        """
        now = timezone.now()
        with transaction.atomic():
            ann = Annotation.objects.select_for_update().get(pk=self.pk)
            if ann.undone_at is not None:
                raise ClipConflict("This decision has already been undone.")
            clip = (
                Clip.objects.select_for_update(of=("self",))
                .select_related("video")
                .get(pk=ann.clip_id)
            )
            later = clip.annotations.filter(undone_at__isnull=True, pk__gt=ann.pk)
            if later.exists():
                raise ClipConflict(
                    "Someone else has decided this clip since; it cannot be undone."
                )
            if (
                clip.claimed_by_id not in (None, ann.user_id)
                and clip.claimed_until
                and clip.claimed_until > now
            ):
                raise ClipConflict(
                    "Someone else is looking at this clip now; try again later."
                )
            clip.restore(ann.previous)
            clip.claimed_by_id = ann.user_id
            clip.claimed_until = now + timedelta(seconds=settings.HARWEB_CLAIM_SECONDS)
            clip.save()
            ann.undone_at = now
            ann.save(update_fields=["undone_at"])
        self.undone_at = now
        return clip


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Done"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """A project-wide background job (re-scoring), with progress for the UI."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=32)
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED
    )
    progress = models.FloatField(default=0.0)
    message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def claim(self) -> bool:
        n = Job.objects.filter(pk=self.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING
        )
        return n == 1

    def set_progress(self, fraction: float, message: str = "") -> None:
        Job.objects.filter(pk=self.pk).update(progress=fraction, message=message[:200])

    def finish(self, exc: BaseException | None = None) -> None:
        fields = {"finished_at": timezone.now()}
        if exc is None:
            fields.update(status=JobStatus.SUCCEEDED, progress=1.0)
        else:
            fields.update(
                status=JobStatus.FAILED,
                **failure_fields(exc),
            )
        Job.objects.filter(pk=self.pk).update(**fields)
