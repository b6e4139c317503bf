"""REST API of the review queue: next clip, decisions and undo.

The same domain functions as the pages (``annotator.review``), with strict
validation: a payload that is not exactly right gets a 400 that says why, a
clip that is not the caller's to decide a 409.
"""

from __future__ import annotations

import math

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from annotator import review
from annotator.access import EDITORS, get_project_for_user
from annotator.models import (
    MAX_DURATION_MS,
    ActionLabel,
    Annotation,
    Clip,
    Decision,
    DecisionError,
    Project,
)
from annotator.review import Mode

_FIELDS = ("decision", "label", "start_s", "end_s", "duration_ms", "create_label")


def _bad(message: str, status: int = 400) -> Response:
    return Response({"detail": message}, status=status)


def _mode(value, role) -> Mode:
    if value in (None, "", Mode.LABEL):
        return Mode.LABEL
    if value != Mode.REVIEW:
        raise DecisionError("mode must be 'label' or 'review'.")
    if role not in EDITORS:
        raise PermissionDenied("Only admins and reviewers give second opinions.")
    return Mode.REVIEW


def _label_json(label: ActionLabel | None) -> dict | None:
    if label is None:
        return None
    return {"id": label.pk, "name": label.name, "color": label.color}


def clip_json(clip: Clip, project: Project, labels: list[ActionLabel]) -> dict:
    card = review.clip_card(clip, project, labels)
    video = card["video"]
    return {
        "id": clip.pk,
        "index": clip.index,
        "video": {
            "id": video.pk,
            "name": video.original_name,
            "duration": video.duration,
            "proxy_url": card["src"] or None,
        },
        "start_s": clip.start_s,
        "end_s": clip.end_s,
        "status": clip.status,
        "label": _label_json(clip.label),
        "labeled_by": clip.labeled_by.username if clip.labeled_by_id else None,
        "claimed_until": clip.claimed_until.isoformat() if clip.claimed_until else None,
        "proposals": [
            {
                "rank": ch["rank"],
                "label": _label_json(ch["label"]),
                "probability": ch["probability"],
            }
            for ch in card["choices"]
            if ch["rank"] is not None
        ],
    }


def _annotation_json(ann: Annotation) -> dict:
    return {
        "id": ann.pk,
        "clip": ann.clip_id,
        "decision": ann.decision,
        "label": _label_json(ann.label),
        "start_s": ann.start_s,
        "end_s": ann.end_s,
        "duration_ms": ann.duration_ms,
        "agrees": ann.agrees,
        "created_at": ann.created_at.isoformat(),
        "undone_at": ann.undone_at.isoformat() if ann.undone_at else None,
    }


def _labels(project: Project) -> list[ActionLabel]:
    return review.project_labels(project)


def _state_json(clip: Clip) -> dict:
    """The clip after a decision (no proposals: the client has them)."""
    return {
        "id": clip.pk,
        "status": clip.status,
        "label": _label_json(clip.label),
        "labeled_by": clip.labeled_by.username if clip.labeled_by_id else None,
        "start_s": clip.start_s,
        "end_s": clip.end_s,
    }


@api_view(["GET"])
def queue_next(request, slug):
    """Claim the next clip (``?mode=review`` for second opinions).

    ``?exclude=1,2`` leaves out clips the client already holds or skipped.
    """
    project, role = get_project_for_user(request.user, slug)
    try:
        mode = _mode(request.query_params.get("mode"), role)
    except DecisionError as exc:
        return _bad(str(exc))
    exclude = set()
    for part in filter(None, request.query_params.get("exclude", "").split(",")):
        if not part.strip().isdigit():
            return _bad("exclude must be comma-separated clip ids.")
        exclude.add(int(part))
    clip = review.next_clip_for(
        request.user,
        project,
        exclude=exclude | review.skipped_ids(request.session, project),
        mode=mode,
    )
    return Response(
        {
            "clip": clip_json(clip, project, _labels(project)) if clip else None,
            "labeled_today": review.labeled_today(request.user, project),
            "remaining": review.remaining(project, request.user, mode),
        }
    )


def _number(data: dict, name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecisionError(f"{name} must be a number of seconds.")
    if not math.isfinite(value):
        raise DecisionError(f"{name} must be a finite number.")
    return float(value)


def _duration(data: dict) -> int:
    value = data.get("duration_ms", 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecisionError("duration_ms must be a whole number of milliseconds.")
    if not 0 <= value <= MAX_DURATION_MS:
        raise DecisionError(f"duration_ms must be between 0 and {MAX_DURATION_MS}.")
    return value


def _parse(data, project: Project, clip: Clip, role, user) -> dict:
    """Validate a decision payload into ``review.decide`` arguments."""
    if not isinstance(data, dict):
        raise DecisionError("Send a JSON object.")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise DecisionError(
            f"Unknown field(s): {', '.join(unknown)}. Allowed: {', '.join(_FIELDS)}."
        )
    decision = data.get("decision")
    if decision not in Decision.values:
        raise DecisionError(f"decision must be one of: {', '.join(Decision.values)}.")
    create = data.get("create_label", False)
    if not isinstance(create, bool):
        raise DecisionError("create_label must be true or false.")
    has_label = data.get("label") is not None
    label = None
    if has_label:
        if decision in (Decision.REJECT, Decision.SKIP):
            raise DecisionError(f"A {decision} decision takes no label.")
        label = review.resolve_label(
            project, data["label"], role=role, user=user, create=create
        )
    args = {
        "start_s": _number(data, "start_s"),
        "end_s": _number(data, "end_s"),
        "duration_ms": _duration(data),
        "mode": Mode.LABEL,
        "label": label,
    }
    if decision == Decision.ACCEPT:
        if label is not None and label.pk != clip.top_label_id:
            raise DecisionError(
                f"“{label.name}” is not the top proposal; send decision 'correct'."
            )
        args["action"] = "top"
    elif decision == Decision.CORRECT:
        if label is None:
            raise DecisionError("A correct decision needs a label (id or name).")
        args["action"] = "label"
    elif decision == Decision.REVIEW:
        if "label" not in data:
            raise DecisionError(
                "A review needs a label (id or name), or null for none of these."
            )
        args.update(mode=Mode.REVIEW, action="label" if label else "reject")
    else:
        args["action"] = decision  # reject, skip
    return args


@api_view(["POST"])
@parser_classes([JSONParser])
def clip_decision(request, slug, pk):
    """Record a decision on a clip the caller has claimed."""
    project, role = get_project_for_user(request.user, slug)
    clip = (
        Clip.objects.with_top_label()
        .select_related("video", "label", "labeled_by")
        .filter(pk=pk, video__project=project)
        .first()
    )
    if clip is None:
        raise Http404("No such clip")
    clip.video.project = project  # already loaded: no join for it
    try:
        args = _parse(request.data, project, clip, role, request.user)
        annotation = review.decide(request.user, clip, role=role, **args)
    except DecisionError as exc:
        return _bad(str(exc), exc.status_code)
    if annotation.decision == Decision.SKIP:
        review.remember_skip(request.session, project, clip.pk)
    return Response(
        {"annotation": _annotation_json(annotation), "clip": _state_json(clip)},
        status=201,
    )


@api_view(["POST"])
@parser_classes([JSONParser])
def undo(request, slug):
    """Undo the caller's latest decision (``{"mode": "review"}`` for reviews)."""
    project, role = get_project_for_user(request.user, slug)
    data = request.data if isinstance(request.data, dict) else None
    if data is None:
        return _bad("Send a JSON object (it may be empty).")
    if set(data) - {"mode"}:
        return _bad("Only the field 'mode' is allowed.")
    try:
        mode = _mode(data.get("mode"), role)
        annotation = review.undo_last(request.user, project, mode=mode)
    except DecisionError as exc:
        return _bad(str(exc), exc.status_code)
    review.forget_skip(request.session, project, annotation.clip_id)
    clip = Clip.objects.select_related("video", "label", "labeled_by").get(
        pk=annotation.clip_id
    )
    return Response(
        {
            "undone": _annotation_json(annotation),
            "clip": clip_json(clip, project, _labels(project)),
        }
    )
