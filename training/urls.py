"""Page routes for model versions and training runs."""

from __future__ import annotations

from django.urls import path

from training import views

urlpatterns = [
    path("p/<slug:slug>/models/", views.models_page, name="models"),
    path("p/<slug:slug>/models/retrain/", views.retrain, name="retrain"),
    path("p/<slug:slug>/runs/<int:pk>/", views.run_detail, name="run_detail"),
    path(
        "p/<slug:slug>/models/v<int:number>/",
        views.version_detail,
        name="version_detail",
    ),
    path(
        "p/<slug:slug>/models/v<int:number>/download/",
        views.version_download,
        name="version_download",
    ),
    path(
        "api/projects/<slug:slug>/models/<int:number>/download",
        views.api_version_download,
        name="api_version_download",
    ),
    path(
        "p/<slug:slug>/models/v<int:number>/<str:name>",
        views.version_picture,
        name="version_picture",
    ),
]
