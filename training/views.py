"""Pages for model versions and training runs, and the model download."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling
from rest_framework import status
from rest_framework.decorators import api_view, content_negotiation_class
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from annotator.access import get_project_for_user
from annotator.models import Role
from annotator.ranges import ranged_file_response
from training import download, pipeline
from training.models import ModelVersion, TrainingRun

PICTURES = {"confusion.png", "curves.png"}


def _get_version_for_user(user, slug, number) -> tuple[ModelVersion, str]:
    project, role = get_project_for_user(user, slug)
    version = project.model_versions.filter(number=number).first()
    if version is None:
        raise Http404("No such model version")
    return version, role


def _get_run_for_user(user, slug, pk) -> tuple[TrainingRun, str]:
    project, role = get_project_for_user(user, slug)
    run = project.training_runs.filter(pk=pk).first()
    if run is None:
        raise Http404("No such training run")
    return run, role


@login_required
def models_page(request, slug):
    project, role = get_project_for_user(request.user, slug)
    runs = list(project.training_runs.select_related("version")[:20])
    ctx = {
        "project": project,
        "role": role,
        "versions": project.model_versions.all(),
        "runs": runs,
        "busy": any(r.is_active for r in runs),
        "new_labels": pipeline.new_labels_since_last_run(project),
    }
    if request.htmx and request.GET.get("partial") == "runs":
        resp = render(request, "training/models.html#runs", ctx)
        return resp if ctx["busy"] else HttpResponseStopPolling(resp.content)
    return render(request, "training/models.html", ctx)


@login_required
@require_POST
def retrain(request, slug):
    project, _ = get_project_for_user(request.user, slug, roles=(Role.ADMIN,))
    pipeline.start_run(project, reason="manual", user=request.user)
    return redirect("models", slug=slug)


@login_required
def run_detail(request, slug, pk):
    run, role = _get_run_for_user(request.user, slug, pk)
    folder = Path(run.version.artifact_dir) if run.version else None
    pictures = sorted(p for p in PICTURES if folder and (folder / p).exists())
    ctx = {"project": run.project, "role": role, "run": run, "pictures": pictures}
    if request.htmx and request.GET.get("partial") == "status":
        resp = render(request, "training/run_detail.html#status", ctx)
        return resp if run.is_active else HttpResponseStopPolling(resp.content)
    return render(request, "training/run_detail.html", ctx)


@login_required
def version_detail(request, slug, number):
    version, role = _get_version_for_user(request.user, slug, number)
    folder = Path(version.artifact_dir)
    ctx = {
        "project": version.project,
        "role": role,
        "version": version,
        "pictures": sorted(p for p in PICTURES if (folder / p).exists()),
        "labels_table": _per_label(version),
        "can_download": download.can_download(request.user, version.project),
    }
    return render(request, "training/version_detail.html", ctx)


def _per_label(version: ModelVersion) -> list[dict]:
    model = version.metrics.get("model") or {}
    zero = version.metrics.get("zero_shot") or {}
    recall = model.get("per_label_recall") or {}
    zrecall = zero.get("per_label_recall") or {}
    return [
        {"name": name, "recall": r, "zero_shot": zrecall.get(name)}
        for name, r in recall.items()
    ]


@login_required
def version_picture(request, slug, number, name):
    version, _ = _get_version_for_user(request.user, slug, number)
    path = Path(version.artifact_dir) / name
    if name not in PICTURES or not path.exists():
        raise Http404("No such picture")
    return ranged_file_response(request, str(path))


def _downloadable(user, slug, number) -> ModelVersion:
    version, _ = _get_version_for_user(user, slug, number)
    if not download.can_download(user, version.project):
        raise Http404("No such model version")
    return version


@login_required
@require_GET
def version_download(request, slug, number):
    version = _downloadable(request.user, slug, number)
    try:
        return download.response(version)
    except download.DownloadUnavailable as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain")


class _IgnoreAccept(BaseContentNegotiation):
    """The zip is not rendered by DRF, so an ``Accept: application/zip`` must
    not be refused; errors still render as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@api_view(["GET"])
@content_negotiation_class(_IgnoreAccept)
def api_version_download(request, slug, number):
    """GET /api/projects/{slug}/models/{n}/download: session or token auth."""
    version = _downloadable(request.user, slug, number)
    try:
        return download.response(version)
    except download.DownloadUnavailable as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
