"""Uploads through the page and the API: checks, rejections, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from annotator.models import Video, VideoStatus
from tests import videos

pytestmark = pytest.mark.django_db


def _upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def _stored_files(media_root: Path) -> list[Path]:
    root = media_root / "videos"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def good(tmp_path):
    return videos.testsrc(tmp_path / "good.mp4")


def test_page_batch_keeps_good_files_and_explains_bad_ones(
    client_in, project, good, tmp_path, _media_root, django_capture_on_commit_callbacks
):
    bad_text = videos.text_file(tmp_path / "notes.mp4")
    cut = videos.truncated(good, tmp_path / "cut.mp4")
    files = [_upload(good), _upload(bad_text), _upload(cut)]
    with django_capture_on_commit_callbacks(execute=True):
        resp = client_in.post(
            "/p/test/upload/", {"files": files}, HTTP_ACCEPT="application/json"
        )
    assert resp.status_code == 200
    results = {r["name"]: r for r in resp.json()["results"]}
    assert results["good.mp4"]["error"] == ""
    assert results["good.mp4"]["url"].startswith("/p/test/videos/")
    assert "not a video" in results["notes.mp4"]["error"].lower()
    assert results["cut.mp4"]["status"] == VideoStatus.REJECTED
    assert results["cut.mp4"]["error"]
    # Rejected rows keep the reason; only the accepted file is in storage.
    rejected = Video.objects.filter(status=VideoStatus.REJECTED)
    assert {v.original_name for v in rejected} == {"notes.mp4", "cut.mp4"}
    assert all(not v.original for v in rejected)
    stored = _stored_files(_media_root)
    assert len(stored) == 1 and stored[0].suffix == ".mp4"


def test_filename_is_never_a_path(client_in, project, good, _media_root):
    resp = client_in.post(
        "/p/test/upload/",
        {"files": [_upload(good, name="../../../etc/evil name.mp4")]},
        HTTP_ACCEPT="application/json",
    )
    video = Video.objects.get(pk=resp.json()["results"][0]["id"])
    assert video.original_name == "evil name.mp4"
    stored = Path(video.original.path).resolve()
    assert stored.is_relative_to(Path(_media_root).resolve() / "videos")
    assert "evil" not in stored.name


def test_oversized_upload_is_rejected_with_the_limit(
    client_in, project, good, settings, _media_root
):
    settings.HARWEB_MAX_UPLOAD_MB = 0
    resp = client_in.post(
        "/p/test/upload/", {"files": [_upload(good)]}, HTTP_ACCEPT="application/json"
    )
    result = resp.json()["results"][0]
    assert "the limit is 0 MB" in result["error"]
    assert _stored_files(_media_root) == []


def test_too_long_video_is_rejected(client_in, project, good, settings):
    settings.HARWEB_MAX_DURATION_S = 1.0
    resp = client_in.post(
        "/p/test/upload/", {"files": [_upload(good)]}, HTTP_ACCEPT="application/json"
    )
    assert resp.json()["results"][0]["status"] == VideoStatus.REJECTED


def test_upload_page_without_javascript_lists_results(client_in, project, tmp_path):
    bad = videos.text_file(tmp_path / "x.avi")
    resp = client_in.post("/p/test/upload/", {"files": [_upload(bad)]})
    assert resp.status_code == 200
    assert b"x.avi" in resp.content and b"rejected" in resp.content


def test_api_upload_with_token(client, user, project, good, tmp_path):
    token = Token.objects.create(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    resp = client.post("/api/projects/test/videos/", {"file": _upload(good)}, **auth)
    assert resp.status_code == 201, resp.content
    assert resp.json()["results"][0]["status"] in ("queued", "ready")
    bad = videos.text_file(tmp_path / "bad.mp4")
    resp = client.post("/api/projects/test/videos/", {"file": _upload(bad)}, **auth)
    assert resp.status_code == 400
    assert resp.json()["results"][0]["error"]
    resp = client.post("/api/projects/test/videos/", {}, **auth)
    assert resp.status_code == 400
    assert "file" in resp.json()["detail"]


def test_outsiders_get_404(client, other_user, project, good):
    client.force_login(other_user)
    assert client.get("/p/test/").status_code == 404
    assert client.get("/p/test/upload/").status_code == 404
    resp = client.post("/api/projects/test/videos/", {"file": _upload(good)})
    assert resp.status_code == 404
    assert Video.objects.count() == 0


def test_anonymous_is_sent_to_login(client, project):
    resp = client.get("/p/test/")
    assert resp.status_code == 302 and "/accounts/login/" in resp["Location"]
    assert client.get("/api/projects/").status_code in (401, 403)
