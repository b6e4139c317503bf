"""The review queue page: one clip at a time, keyboard first.

Without JavaScript every button is a plain form that POSTs and redirects to the
next clip. With ``review.js`` the same POSTs come back as fragments (named
partials of ``annotator/review.html``): the next clip to keep prefetched and
the counter, so a keystroke swaps clips without waiting for the server.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotator import review
from annotator.access import EDITORS, get_project_for_user
from annotator.models import ActionLabel, Clip, Decision, DecisionError, Project
from annotator.review import Mode


def _mode(value: str | None, role: str | None) -> Mode:
    if value == Mode.REVIEW:
        if role not in EDITORS:
            raise PermissionDenied("Only admins and reviewers give second opinions.")
        return Mode.REVIEW
    return Mode.LABEL


def _ids(value: str | None) -> set[int]:
    """Clip ids the client holds ("12,13"); junk is ignored."""
    out = set()
    for part in (value or "").split(",")[:10]:
        if part.strip().isdigit():
            out.add(int(part))
    return out


def _want(value: str | None) -> int:
    return 2 if value == "2" else 1


def _review_url(project: Project, mode: Mode, **extra) -> str:
    query = {"mode": mode.value} if mode == Mode.REVIEW else {}
    query.update({k: v for k, v in extra.items() if v is not None})
    url = reverse("review", args=[project.slug])
    return f"{url}?{urlencode(query)}" if query else url


def _labels(project: Project) -> list[ActionLabel]:
    return sorted(review.project_labels(project), key=lambda lab: lab.name.lower())


def _card(clip: Clip | None, project, labels, *, autoplay: bool) -> dict | None:
    if clip is None:
        return None
    card = review.clip_card(clip, project, labels)
    card["autoplay"] = autoplay
    return card


def _base_context(request, project, role, mode: Mode, labels) -> dict:
    return {
        "project": project,
        "role": role,
        "mode": mode.value,
        "can_review": role in EDITORS,
        "can_create": role in EDITORS,
        "labels": labels,
        "hotkeys": {lab.hotkey: lab.pk for lab in labels if lab.hotkey},
        "labeled_today": review.labeled_today(request.user, project),
        "remaining": review.remaining(project, request.user, mode),
        "step": review.EDGE_STEP_S,
    }


def _next_cards(request, project, mode, labels, *, exclude, want, autoplay) -> list:
    """Claim up to ``want`` clips after ``exclude``; an empty card ends the list."""
    cards, exclude = [], set(exclude)
    for i in range(want):
        clip = review.next_clip_for(request.user, project, exclude=exclude, mode=mode)
        cards.append(_card(clip, project, labels, autoplay=autoplay and i == 0))
        if clip is None:
            break
        exclude.add(clip.pk)
    return cards


def _fragment(request, ctx: dict, cards: list, status: int = 200) -> HttpResponse:
    ctx["cards"] = cards
    return render(request, "annotator/review.html#next", ctx, status=status)


def _error(request, ctx: dict, message: str, status: int) -> HttpResponse:
    ctx["error"] = message
    return render(request, "annotator/review.html#error", ctx, status=status)


@login_required
@require_GET
def review_page(request, slug):
    project, role = get_project_for_user(request.user, slug)
    mode = _mode(request.GET.get("mode"), role)
    labels = _labels(project)
    skipped = review.skipped_ids(request.session, project)
    ctx = _base_context(request, project, role, mode, labels)
    if request.GET.get("partial") == "next":
        held = _ids(request.GET.get("held"))
        cards = _next_cards(
            request,
            project,
            mode,
            labels,
            exclude=skipped | held,
            want=_want(request.GET.get("want")),
            autoplay=not held,
        )
        return _fragment(request, ctx, cards)
    current = None
    wanted = request.GET.get("clip", "")
    if wanted.isdigit():
        current = review.own_claimed_clip(request.user, project, int(wanted), mode)
    if current is None:
        current = review.next_clip_for(
            request.user, project, exclude=skipped, mode=mode
        )
    upcoming = None
    if current is not None:
        upcoming = review.next_clip_for(
            request.user, project, exclude=skipped | {current.pk}, mode=mode
        )
    ctx.update(
        current=_card(current, project, labels, autoplay=True),
        upcoming=_card(upcoming, project, labels, autoplay=False),
        has_current=current is not None,
    )
    return render(request, "annotator/review.html", ctx)


def _float(value: str | None, name: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DecisionError(f"{name} must be a number of seconds.") from None


def _duration_ms(post) -> int:
    """Client-measured time on the clip; else since the page rendered it."""
    raw = post.get("duration_ms", "")
    if raw.isdigit():
        return int(raw)
    shown = post.get("shown_at", "")
    if shown.isdigit():
        return max(0, int(time.time() * 1000) - int(shown))
    return 0


def _parse_choice(post, project, role, user) -> tuple[str, ActionLabel | None]:
    choice = post.get("choice", "default")
    name = post.get("label_name", "").strip()
    if choice in ("top", "reject", "skip"):
        return choice, None
    if choice.startswith("label:"):
        return "label", review.resolve_label(project, choice[6:], role=role)
    if choice in ("named", "default"):
        if name:
            label = review.resolve_label(
                project, name, role=role, user=user, create=True
            )
            return "label", label
        if choice == "default":  # Enter in a field with nothing typed
            return "top", None
        raise DecisionError("Type a label name first.")
    raise DecisionError(f"Unknown choice {choice!r}.")


@login_required
@require_POST
def decide(request, slug, pk):
    project, role = get_project_for_user(request.user, slug)
    mode = _mode(request.POST.get("mode"), role)
    clip = get_object_or_404(
        Clip.objects.with_top_label().select_related("video", "label"),
        pk=pk,
        video__project=project,
    )
    clip.video.project = project  # already loaded: no join for it
    try:
        action, label = _parse_choice(request.POST, project, role, request.user)
        annotation = review.decide(
            request.user,
            clip,
            action=action,
            role=role,
            mode=mode,
            label=label,
            start_s=_float(request.POST.get("start_s"), "start_s"),
            end_s=_float(request.POST.get("end_s"), "end_s"),
            duration_ms=_duration_ms(request.POST),
        )
    except (DecisionError, PermissionDenied) as exc:
        status = getattr(exc, "status_code", 403)
        if not request.htmx:
            if status == 403:
                raise
            messages.error(request, str(exc))
            return redirect(_review_url(project, mode))
        labels = _labels(project)
        ctx = _base_context(request, project, role, mode, labels)
        return _error(request, ctx, str(exc), status)
    if annotation.decision == Decision.SKIP:
        review.remember_skip(request.session, project, clip.pk)
    if not request.htmx:
        return redirect(_review_url(project, mode))
    labels = _labels(project)
    ctx = _base_context(request, project, role, mode, labels)
    held = _ids(request.POST.get("held"))
    cards = _next_cards(
        request,
        project,
        mode,
        labels,
        exclude=review.skipped_ids(request.session, project) | held,
        want=_want(request.POST.get("want")),
        autoplay=not held,
    )
    return _fragment(request, ctx, cards)


@login_required
@require_POST
def undo(request, slug):
    project, role = get_project_for_user(request.user, slug)
    mode = _mode(request.POST.get("mode"), role)
    try:
        annotation = review.undo_last(request.user, project, mode=mode)
    except DecisionError as exc:
        if not request.htmx:
            messages.error(request, str(exc))
            return redirect(_review_url(project, mode))
        labels = _labels(project)
        ctx = _base_context(request, project, role, mode, labels)
        return _error(request, ctx, str(exc), exc.status_code)
    review.forget_skip(request.session, project, annotation.clip_id)
    if not request.htmx:
        messages.success(request, "Undone: the clip is back for you to decide.")
        return redirect(_review_url(project, mode, clip=annotation.clip_id))
    labels = _labels(project)
    ctx = _base_context(request, project, role, mode, labels)
    clip = Clip.objects.select_related("video", "label", "labeled_by").get(
        pk=annotation.clip_id
    )
    return _fragment(request, ctx, [_card(clip, project, labels, autoplay=True)])
