"""Page routes of the annotator."""

from __future__ import annotations

from django.urls import path

from annotator import review_views, views

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("p/<slug:slug>/", views.project_dashboard, name="project_dashboard"),
    path("p/<slug:slug>/upload/", views.upload, name="upload"),
    path("p/<slug:slug>/labels/", views.labels, name="labels"),
    path("p/<slug:slug>/labels/<int:label_id>/", views.label_edit, name="label_edit"),
    path(
        "p/<slug:slug>/labels/<int:label_id>/merge/",
        views.label_merge,
        name="label_merge",
    ),
    path("p/<slug:slug>/videos/<int:pk>/", views.video_detail, name="video_detail"),
    path(
        "p/<slug:slug>/videos/<int:pk>/<str:kind>",
        views.video_media,
        name="video_media",
    ),
    path("p/<slug:slug>/review/", review_views.review_page, name="review"),
    path(
        "p/<slug:slug>/review/clips/<int:pk>/decide",
        review_views.decide,
        name="review_decide",
    ),
    path("p/<slug:slug>/review/undo", review_views.undo, name="review_undo"),
]
