"""REST API routes under /api/."""

from __future__ import annotations

from django.urls import path

from annotator import api, review_api

urlpatterns = [
    path("projects/", api.project_list, name="api_projects"),
    path("projects/<slug:slug>/", api.project_detail, name="api_project"),
    path("projects/<slug:slug>/videos/", api.videos, name="api_videos"),
    path("projects/<slug:slug>/videos/<int:pk>/", api.video_detail, name="api_video"),
    path(
        "projects/<slug:slug>/videos/<int:pk>/clips/",
        api.video_clips,
        name="api_video_clips",
    ),
    path("projects/<slug:slug>/labels/", api.labels, name="api_labels"),
    path(
        "projects/<slug:slug>/labels/<int:label_id>/",
        api.label_detail,
        name="api_label",
    ),
    path(
        "projects/<slug:slug>/queue/next",
        review_api.queue_next,
        name="api_queue_next",
    ),
    path(
        "projects/<slug:slug>/clips/<int:pk>/decision",
        review_api.clip_decision,
        name="api_clip_decision",
    ),
    path("projects/<slug:slug>/undo", review_api.undo, name="api_undo"),
]
