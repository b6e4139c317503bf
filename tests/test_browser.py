"""The review queue in real headless Chromium, driven by the keyboard alone.

Two demo videos are ingested and proposed in-process with the tiny CLIP; the
user logs in through the login form, labels ten clips with digits, Enter and
X, undoes the last one with U, and the database and the video page's
confirmed timeline must show exactly that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from annotator.ingest import ingest_upload
from annotator.models import Annotation, Clip, ClipStatus, Decision, VideoStatus
from annotator.services import run_video_pipeline
from tests.conftest import need

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Keys for the ten decisions and what each must record (rank 0 = "1").
KEYS = ["Enter", "2", "x", "1", "3", "Enter", "x", "2", "Enter", "1"]
NUDGED = 3  # the fourth clip's edges are nudged before deciding
EXPECTED = {
    "Enter": Decision.ACCEPT,
    "1": Decision.ACCEPT,
    "2": Decision.CORRECT,
    "3": Decision.CORRECT,
    "x": Decision.REJECT,
}


@pytest.fixture
def browser(monkeypatch):
    need(CHROMIUM.exists(), "Chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls
    # the test makes around it are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def two_videos(project, demo_videos):
    """Two short demo videos, processed and proposed (no worker needed)."""
    videos = []
    for path in [v.path for v in demo_videos[:2]]:
        video = ingest_upload(project, Path(path), queue=False)
        assert video.claim()
        run_video_pipeline(video)
        video.refresh_from_db()
        assert video.status == VideoStatus.READY, video.error
        videos.append(video)
    assert Clip.objects.filter(status=ClipStatus.PROPOSED).count() >= 12
    return videos


STAGE_ID = "document.querySelector('#stage .clip-card')?.dataset.clipId"


def _stage_id(page) -> str | None:
    return page.evaluate(f"() => {STAGE_ID} ?? null")


def _settled(page) -> None:
    page.wait_for_function(
        "() => window.harwebReview && window.harwebReview.pending === 0"
    )


def test_keyboard_labeling_end_to_end(
    live_server, transactional_db, browser, project, user, two_videos
):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/accounts/login/?next=/p/test/review/")
    page.fill("input[name=username]", "ann")
    page.fill("input[name=password]", "pw-ann-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/p/test/review/")
    page.wait_for_selector("#stage .clip-card[data-clip-id]")
    page.wait_for_selector("#prefetch .clip-card[data-clip-id]", state="attached")
    page.wait_for_timeout(400)  # let the first frame of the loop paint
    page.screenshot(path="/tmp/review.png", full_page=True)

    decided = []
    for i, key in enumerate(KEYS):
        before = _stage_id(page)
        decided.append(int(before))
        if i == NUDGED:  # start later by a step, end later by a step
            page.keyboard.press("BracketRight")
            page.keyboard.press("Shift+BracketRight")
        page.keyboard.press(key)
        page.wait_for_function(
            f"(id) => {STAGE_ID} !== id",
            arg=before,
        )
    _settled(page)
    assert page.inner_text("#counter").startswith("10 labeled today")

    page.keyboard.press("u")
    page.wait_for_function(
        f"(id) => {STAGE_ID} === id",
        arg=str(decided[-1]),
    )
    _settled(page)
    assert page.inner_text("#counter").startswith("9 labeled today")
    assert not errors, errors

    anns = list(Annotation.objects.order_by("id"))
    assert [a.clip_id for a in anns] == decided
    assert [a.decision for a in anns] == [EXPECTED[k] for k in KEYS]
    assert all(a.user == user for a in anns)
    assert all(0 < a.duration_ms < 60_000 for a in anns)
    nudged = anns[NUDGED]
    before = nudged.previous
    assert nudged.start_s == pytest.approx(before["start_s"] + 0.25)
    assert nudged.end_s == pytest.approx(before["end_s"] + 0.25)
    clip = Clip.objects.get(pk=nudged.clip_id)
    assert (clip.start_s, clip.end_s) == (nudged.start_s, nudged.end_s)
    undone = [a for a in anns if a.undone_at is not None]
    assert [a.clip_id for a in undone] == [decided[-1]]
    last = Clip.objects.get(pk=decided[-1])
    assert last.status == ClipStatus.PROPOSED and last.claimed_by == user
    accepted = Clip.objects.filter(status=ClipStatus.ACCEPTED, labeled_by=user)
    assert accepted.count() == sum(EXPECTED[k] != Decision.REJECT for k in KEYS[:-1])

    # The confirmed timeline of a video fills in from the accepted clips.
    video = accepted.first().video
    page.goto(f"{live_server.url}/p/test/videos/{video.pk}/")
    segs = page.locator("#timeline-confirmed .seg")
    assert segs.count() >= 1
    names = set(segs.all_inner_texts())
    assert names <= {c.label.name for c in accepted.filter(video=video)}
