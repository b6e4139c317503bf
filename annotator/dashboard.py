"""Figures for the project dashboard and the video page."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from annotator.models import (
    LABELED,
    ActionLabel,
    Clip,
    ClipStatus,
    Project,
    Video,
    VideoStatus,
)
from annotator.proposals import is_random_model
from training.ml.segments import merge_segments

BUSY = (VideoStatus.QUEUED, VideoStatus.PROCESSING)


def video_rows(project: Project) -> dict:
    """The videos table (all the 1 s status poll needs) and whether it polls."""
    videos = list(
        project.videos.annotate(n_clips=Count("clips")).order_by("-created_at")
    )
    return {"videos": videos, "busy": any(v.status in BUSY for v in videos)}


def label_rows(project: Project) -> QuerySet[ActionLabel]:
    """Active labels, each with its count of confirmed clips (``n_clips``)."""
    return project.labels.filter(is_active=True).annotate(
        n_clips=Count("clips", filter=Q(clips__status=ClipStatus.ACCEPTED))
    )


def summary(project: Project) -> dict:
    from annotator.review import agreement

    return {
        **video_rows(project),
        "labels": label_rows(project),
        "clip_counts": project_clip_counts(project),
        "random_model": is_random_model(project.clip_model_name),
        "live_version": project.model_versions.filter(is_live=True).first(),
        "agreement": agreement(project),
        "chart": labeled_chart(project),
    }


def labeled_chart(project: Project, width: int = 560, height: int = 120) -> dict:
    """Cumulative labeled clips over time, as SVG polyline points."""
    times = list(
        Clip.objects.filter(
            video__project=project,
            status__in=LABELED,
            labeled_at__isnull=False,
        )
        .order_by("labeled_at")
        .values_list("labeled_at", flat=True)
    )
    if len(times) < 2:
        return {"points": "", "total": len(times)}
    t0, t1 = times[0].timestamp(), times[-1].timestamp()
    span = max(t1 - t0, 1e-3)
    pts = [(0.0, float(height))]
    for i, t in enumerate(times, start=1):
        x = width * (t.timestamp() - t0) / span
        pts.append((x, height - height * i / len(times)))
    return {
        "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in pts),
        "total": len(times),
        "start": times[0],
        "end": times[-1],
        "width": width,
        "height": height,
    }


def project_clip_counts(project: Project) -> dict:
    counts = dict(
        project.videos.values_list("clips__status")
        .annotate(n=Count("clips"))
        .values_list("clips__status", "n")
    )
    total = sum(n for s, n in counts.items() if s)
    labeled = sum(counts.get(status, 0) for status in LABELED)
    return {"total": total, "labeled": labeled, "unlabeled": total - labeled}


def _bars(video: Video, segs) -> list[dict]:
    duration = video.duration or 1.0
    return [
        {
            "label": s["label"],
            "start": s["start"],
            "end": s["end"],
            "confidence": s["confidence"],
            # Faint but readable: confidence shades the bar from 0.55 to 1.
            "opacity": 0.55 + 0.45 * min(max(s["confidence"], 0.0), 1.0),
            "left": 100.0 * s["start"] / duration,
            "width": max(100.0 * (s["end"] - s["start"]) / duration, 0.5),
        }
        for s in segs
    ]


def proposed_segments(video: Video) -> list[dict]:
    rows = video.segments.filter(source="proposed").select_related("label")
    return _bars(
        video,
        [
            {
                "label": r.label,
                "start": r.start_s,
                "end": r.end_s,
                "confidence": r.confidence,
            }
            for r in rows
        ],
    )


def confirmed_segments(video: Video) -> list[dict]:
    clips = list(
        video.clips.filter(status=ClipStatus.ACCEPTED)
        .select_related("label")
        .order_by("start_s")
    )
    labels = {c.label_id: c.label for c in clips}
    merged = merge_segments(
        [c.start_s for c in clips],
        [c.end_s for c in clips],
        [c.label_id for c in clips],
        [1.0] * len(clips),
    )
    # Clips that are not neighbours must not merge across a gap.
    return _bars(
        video,
        [
            {
                "label": labels[s.label],
                "start": s.start,
                "end": s.end,
                "confidence": 1.0,
            }
            for s in merged
        ],
    )


def video_context(video: Video) -> dict:
    proposed = proposed_segments(video)
    has_proposals = (
        bool(proposed) or video.clips.filter(proposals__isnull=False).exists()
    )
    settled = video.is_done and (
        video.status != VideoStatus.READY
        or has_proposals
        or bool(video.proposal_error)
        or not video.project.labels.exists()
    )
    return {
        "proposed": proposed,
        "confirmed": confirmed_segments(video),
        "n_clips": video.clips.count(),
        # PyAV names demuxers by all their aliases ("mov,mp4,m4a,..."): show one.
        "container": video.container.split(",")[0],
        "settled": settled,
        "random_model": is_random_model(video.project.clip_model_name),
    }
