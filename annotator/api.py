"""REST API: the same operations as the pages, with session or token auth."""

from __future__ import annotations

from django.http import Http404
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from annotator.access import (
    EDITORS,
    get_project_for_user,
    get_video_for_user,
    projects_for,
)
from annotator.forms import LabelForm
from annotator.ingest import ingest_upload
from annotator.labels import save_label
from annotator.models import VideoStatus
from annotator.serializers import (
    ClipSerializer,
    LabelSerializer,
    ProjectSerializer,
    VideoSerializer,
)


@api_view(["GET"])
def project_list(request):
    return Response(ProjectSerializer(projects_for(request.user), many=True).data)


@api_view(["GET"])
def project_detail(request, slug):
    project, _ = get_project_for_user(request.user, slug)
    return Response(ProjectSerializer(project).data)


@api_view(["GET", "POST"])
@parser_classes([MultiPartParser, FormParser])
def videos(request, slug):
    project, _ = get_project_for_user(request.user, slug)
    if request.method == "GET":
        rows = project.videos.prefetch_related("segments__label")
        return Response(VideoSerializer(rows, many=True).data)
    files = request.FILES.getlist("files") or request.FILES.getlist("file")
    if not files:
        return Response(
            {"detail": "Send one or more files in the multipart field 'file'."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    made = [ingest_upload(project, f, user=request.user) for f in files]
    accepted = [v for v in made if v.status != VideoStatus.REJECTED]
    body = {"results": VideoSerializer(made, many=True).data}
    code = status.HTTP_201_CREATED if accepted else status.HTTP_400_BAD_REQUEST
    return Response(body, status=code)


@api_view(["GET"])
def video_detail(request, slug, pk):
    video, _ = get_video_for_user(request.user, slug, pk)
    return Response(VideoSerializer(video).data)


@api_view(["GET"])
def video_clips(request, slug, pk):
    video, _ = get_video_for_user(request.user, slug, pk)
    clips = video.clips.select_related("label").prefetch_related("proposals__label")
    return Response(ClipSerializer(clips, many=True).data)


@api_view(["GET", "POST"])
@parser_classes([JSONParser, FormParser, MultiPartParser])
def labels(request, slug):
    roles = EDITORS if request.method == "POST" else None
    project, _ = get_project_for_user(request.user, slug, roles=roles)
    if request.method == "GET":
        return Response(
            LabelSerializer(project.labels.filter(is_active=True), many=True).data
        )
    return _save_label(request, project, instance=None)


@api_view(["GET", "PATCH"])
@parser_classes([JSONParser, FormParser, MultiPartParser])
def label_detail(request, slug, label_id):
    roles = EDITORS if request.method == "PATCH" else None
    project, _ = get_project_for_user(request.user, slug, roles=roles)
    label = project.labels.filter(pk=label_id).first()
    if label is None:
        raise Http404("No such label")
    if request.method == "GET":
        return Response(LabelSerializer(label).data)
    return _save_label(request, project, instance=label)


def _save_label(request, project, instance):
    if not isinstance(request.data, dict):
        return Response({"detail": "Expected a JSON object."}, status=400)
    data = LabelSerializer(instance).data if instance else {"color": "#4e79a7"}
    data.update({k: v for k, v in request.data.items() if k in LabelForm.Meta.fields})
    data = {k: ("" if v is None else v) for k, v in data.items()}
    form = LabelForm(data, instance=instance, project=project)
    if not form.is_valid():
        return Response({"errors": form.errors.get_json_data()}, status=400)
    label = save_label(form, user=request.user)
    code = status.HTTP_200_OK if instance else status.HTTP_201_CREATED
    return Response(LabelSerializer(label).data, status=code)
