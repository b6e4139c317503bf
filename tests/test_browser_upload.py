"""Upload in the browser; a real worker processes it; the timeline appears
on the open video page without a reload (htmx polling, then it stops).

Needs Chromium, PostgreSQL and Redis (required under HARWEB_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import pytest

from annotator.models import Video
from tests import videos
from tests.test_browser import browser  # noqa: F401 - fixture
from tests.test_worker_integration import services, worker  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.slow]


def _login(page, base: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "pw-ann-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_upload_shows_timeline(browser, worker, project, live_server, tmp_path):  # noqa: F811
    good = videos.testsrc(tmp_path / "walk.mp4", seconds=6)
    bad = videos.text_file(tmp_path / "notes.mp4")
    page = browser.new_page()
    _login(page, live_server.url)
    page.goto(f"{live_server.url}/p/test/upload/")
    page.set_input_files("#files", [str(good), str(bad)])
    rejected = page.locator(".upload.rejected .reason")
    rejected.wait_for(timeout=30_000)
    assert "not a video" in rejected.inner_text().lower()
    accepted = page.locator(".upload.accepted a")
    accepted.wait_for(timeout=30_000)
    accepted.click()
    page.wait_for_selector("#video-status")
    loads = []
    page.on("load", lambda: loads.append(page.url))
    # The worker finishes while the page polls; segments appear in place.
    page.wait_for_selector("#timeline-proposed .seg", timeout=120_000)
    assert loads == []  # no reload happened
    polling = page.locator("#video-status[hx-get]")
    assert polling.count() == 0  # polling stopped once settled
    video = Video.objects.get(original_name="walk.mp4")
    assert video.segments.count() == page.locator("#timeline-proposed .seg").count()
    page.screenshot(path=str(tmp_path / "video.png"))
