"""Pages and htmx fragments: projects, upload, videos and labels."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotator import dashboard
from annotator.access import (
    EDITORS,
    get_project_for_user,
    get_video_for_user,
    projects_for,
)
from annotator.forms import LabelForm
from annotator.ingest import ingest_upload
from annotator.labels import label_history, merge_labels, save_label
from annotator.models import JobStatus, VideoStatus
from annotator.ranges import ranged_file_response


@login_required
def project_list(request):
    projects = projects_for(request.user).annotate(
        n_videos=Count("videos", distinct=True),
    )
    return render(request, "annotator/project_list.html", {"projects": projects})


@login_required
def project_dashboard(request, slug):
    project, role = get_project_for_user(request.user, slug)
    ctx = {"project": project, "role": role}
    if request.htmx and request.GET.get("partial") == "videos":
        ctx.update(dashboard.video_rows(project))  # only what the poll shows
        resp = render(request, "annotator/project_dashboard.html#videos", ctx)
        return resp if ctx["busy"] else HttpResponseStopPolling(resp.content)
    ctx.update(dashboard.summary(project))
    return render(request, "annotator/project_dashboard.html", ctx)


def _upload_result(video) -> dict:
    return {
        "id": video.pk,
        "name": video.original_name,
        "status": video.status,
        "error": video.error,
        "url": reverse("video_detail", args=[video.project.slug, video.pk])
        if video.status != VideoStatus.REJECTED
        else None,
    }


@login_required
@require_http_methods(["GET", "POST"])
def upload(request, slug):
    project, role = get_project_for_user(request.user, slug)
    results = []
    if request.method == "POST":
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
        for f in files:
            results.append(_upload_result(ingest_upload(project, f, user=request.user)))
        if request.headers.get("Accept", "").startswith("application/json"):
            status = 400 if not files else 200
            return JsonResponse({"results": results}, status=status)
        if not files:
            messages.error(request, "Choose at least one video file.")
    ctx = {
        "project": project,
        "role": role,
        "results": results,
        "max_upload_bytes": settings.HARWEB_MAX_UPLOAD_MB * 1024 * 1024,
    }
    return render(request, "annotator/upload.html", ctx)


@login_required
def video_detail(request, slug, pk):
    video, role = get_video_for_user(request.user, slug, pk)
    ctx = {"project": video.project, "video": video, "role": role}
    ctx.update(dashboard.video_context(video))
    partial = request.GET.get("partial")
    if request.htmx and partial == "status":
        resp = render(request, "annotator/video_detail.html#status", ctx)
        return HttpResponseStopPolling(resp.content) if ctx["settled"] else resp
    return render(request, "annotator/video_detail.html", ctx)


@login_required
def video_media(request, slug, pk, kind):
    video, _ = get_video_for_user(request.user, slug, pk)
    field = {"proxy": video.proxy, "poster": video.poster, "original": video.original}
    f = field.get(kind)
    if not f:
        raise Http404("Not available yet")
    return ranged_file_response(request, f.path, filename=f.name)


@login_required
@require_http_methods(["GET", "POST"])
def labels(request, slug):
    project, role = get_project_for_user(request.user, slug)
    form = LabelForm(project=project)
    if request.method == "POST":
        if role not in EDITORS:
            raise PermissionDenied("Only admins and reviewers edit labels.")
        form = LabelForm(request.POST, project=project)
        if form.is_valid():
            save_label(form, user=request.user)
            messages.success(request, "Saved; proposals are being re-scored.")
            return redirect("labels", slug=slug)
    job = project.jobs.first()
    ctx = {"project": project, "role": role, "job": job}
    if request.htmx and request.GET.get("partial") == "job":
        resp = render(request, "annotator/labels.html#job", ctx)
        running = job and job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        return resp if running else HttpResponseStopPolling(resp.content)
    ctx.update(
        form=form,
        labels=dashboard.label_rows(project),
        can_edit=role in EDITORS,
        history=label_history(project),
    )
    return render(request, "annotator/labels.html", ctx)


@login_required
@require_POST
def label_merge(request, slug, label_id):
    project, _ = get_project_for_user(request.user, slug, roles=EDITORS)
    active = project.labels.filter(is_active=True)
    source = active.filter(pk=label_id).first()
    target = active.filter(pk=request.POST.get("into") or 0).first()
    if source is None or target is None or source == target:
        messages.error(request, "Choose two different labels to merge.")
        return redirect("labels", slug=slug)
    moved = merge_labels(source, target, user=request.user)
    messages.success(
        request, f"Merged “{source.name}” into “{target.name}” ({moved} clips moved)."
    )
    return redirect("labels", slug=slug)


@login_required
@require_POST
def label_edit(request, slug, label_id):
    project, role = get_project_for_user(request.user, slug, roles=EDITORS)
    label = project.labels.filter(pk=label_id).first()
    if label is None:
        raise Http404("No such label")
    form = LabelForm(request.POST, instance=label, project=project)
    if form.is_valid():
        save_label(form, user=request.user)
        messages.success(
            request, f"Saved “{label.name}”; proposals are being re-scored."
        )
    else:
        for err in form.errors.values():
            messages.error(request, err.as_text())
    return redirect("labels", slug=slug)
