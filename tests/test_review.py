"""The review queue: decisions, claims, undo, reviewer agreement, the next-clip
strategies on constructed proposals, the page's htmx/no-JS flows and the API."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from annotator import review
from annotator.labels import create_label
from annotator.models import (
    Annotation,
    Clip,
    ClipConflict,
    ClipStatus,
    Decision,
    DecisionError,
    Membership,
    Project,
    Proposal,
    Role,
    Video,
    VideoStatus,
)
from annotator.review import Mode, NothingToUndo
from annotator.storage import media_path

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_caches():
    review.clear_caches()
    yield
    review.clear_caches()


def _entropy(p) -> float:
    p = np.asarray(p, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def make_video(project, duration: float = 60.0) -> Video:
    return Video.objects.create(
        project=project,
        original_name="walk.mp4",
        status=VideoStatus.READY,
        duration=duration,
        processed_at=timezone.now(),
    )


def add_clip(video, index, probs=None, *, status=ClipStatus.PROPOSED, label=None):
    """A clip at [index, index + 2) s with proposals from ``probs``."""
    labels = list(video.project.labels.order_by("id"))
    probs = probs if probs is not None else [0.7, 0.2, 0.1]
    clip = Clip.objects.create(
        video=video,
        index=index,
        start_s=float(index),
        end_s=float(index) + 2.0,
        start_frame=index * 10,
        end_frame=index * 10 + 19,
        frame_indices=[index],
        status=status,
        label=label,
        labeled_at=timezone.now() if label else None,
        informativeness=_entropy(probs),
        top_prob=max(probs),
    )
    order = np.argsort(-np.asarray(probs), kind="stable")
    Proposal.objects.bulk_create(
        Proposal(
            clip=clip,
            label=labels[j],
            rank=r,
            score=0.0,
            probability=probs[j],
            model_tag="test",
        )
        for r, j in enumerate(order)
    )
    return clip


def member(django_user_model, project, name, role):
    u = django_user_model.objects.create_user(name, password=f"pw-{name}-123")
    Membership.objects.create(project=project, user=u, role=role)
    return u


@pytest.fixture
def labels(project):
    return list(project.labels.order_by("id"))  # walking, jumping, waving


@pytest.fixture
def video(project):
    return make_video(project)


@pytest.fixture
def bob(django_user_model, project):
    return member(django_user_model, project, "bob", Role.ANNOTATOR)


@pytest.fixture
def rita(django_user_model, project):
    return member(django_user_model, project, "rita", Role.REVIEWER)


# --------------------------------------------------------------------------
# decisions on the model


def test_accept_top_records_who_how_long_and_the_previous_state(user, video, labels):
    clip = add_clip(video, 0, [0.7, 0.2, 0.1])
    assert clip.claim_for(user)
    ann = clip.accept(user, labels[0], duration_ms=1234)
    clip.refresh_from_db()
    assert ann.decision == Decision.ACCEPT and ann.user == user
    assert ann.duration_ms == 1234
    assert ann.previous["status"] == ClipStatus.PROPOSED
    assert ann.previous["label_id"] is None
    assert clip.status == ClipStatus.ACCEPTED and clip.label == labels[0]
    assert clip.labeled_by == user and clip.labeled_at is not None
    assert clip.claimed_by is None and clip.claimed_until is None


def test_picking_another_label_is_a_correction(user, video, labels):
    clip = add_clip(video, 0, [0.7, 0.2, 0.1])
    clip.claim_for(user)
    ann = clip.accept(user, labels[2], duration_ms=10)
    assert ann.decision == Decision.CORRECT
    assert Clip.objects.get(pk=clip.pk).label == labels[2]


def test_reject_and_skip(user, video):
    a, b = add_clip(video, 0), add_clip(video, 1)
    a.claim_for(user)
    b.claim_for(user)
    assert a.reject(user).decision == Decision.REJECT
    a.refresh_from_db()
    assert a.status == ClipStatus.REJECTED and a.label is None
    ann = b.skip(user, duration_ms=50)
    b.refresh_from_db()
    assert ann.decision == Decision.SKIP
    # A skip leaves the clip undecided and back in the pool.
    assert b.status == ClipStatus.PROPOSED and b.claimed_by is None


def test_nudged_edges_update_the_clip_and_undo_restores_them(user, video, labels):
    clip = add_clip(video, 3)
    clip.claim_for(user)
    ann = clip.accept(user, labels[0], start_s=2.75, end_s=5.5)
    clip.refresh_from_db()
    assert (clip.start_s, clip.end_s) == (2.75, 5.5)
    assert (ann.start_s, ann.end_s) == (2.75, 5.5)
    assert (ann.previous["start_s"], ann.previous["end_s"]) == (3.0, 5.0)
    review.undo_last(user, video.project)
    clip.refresh_from_db()
    assert (clip.start_s, clip.end_s) == (3.0, 5.0)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [(4.0, 4.0, "after start_s"), (-1.0, 2.0, "negative"), (59.0, 61.0, "past")],
)
def test_bad_edges_are_refused_and_nothing_changes(
    user, video, labels, start, end, message
):
    clip = add_clip(video, 3)
    clip.claim_for(user)
    with pytest.raises(DecisionError, match=message):
        clip.accept(user, labels[0], start_s=start, end_s=end)
    clip.refresh_from_db()
    assert clip.status == ClipStatus.PROPOSED and not Annotation.objects.exists()


# --------------------------------------------------------------------------
# claims


def test_two_annotators_never_get_the_same_clip(user, bob, project, video):
    for i in range(3):
        add_clip(video, i)
    mine = review.next_clip_for(user, project)
    theirs = review.next_clip_for(bob, project)
    assert mine and theirs and mine.pk != theirs.pk
    # Bob cannot take or decide the clip Ann holds.
    assert not Clip.objects.get(pk=mine.pk).claim_for(bob)
    with pytest.raises(ClipConflict):
        Clip.objects.get(pk=mine.pk).reject(bob)
    # Asking again resumes the same clip rather than claiming another one.
    assert review.next_clip_for(user, project).pk == mine.pk


def test_expired_claim_goes_back_to_the_pool(user, bob, project, video, labels):
    clip = add_clip(video, 0)
    assert review.next_clip_for(user, project).pk == clip.pk
    assert review.next_clip_for(bob, project) is None
    Clip.objects.filter(pk=clip.pk).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )
    # Still Ann's to decide while nobody else has taken it...
    Clip.objects.get(pk=clip.pk).claim_for(user)
    Clip.objects.filter(pk=clip.pk).update(
        claimed_until=timezone.now() - timedelta(seconds=1)
    )
    # ...but once Bob takes it, Ann's late decision is a conflict.
    assert review.next_clip_for(bob, project).pk == clip.pk
    with pytest.raises(ClipConflict, match="not claimed by you"):
        Clip.objects.get(pk=clip.pk).accept(user, labels[0])
    Clip.objects.get(pk=clip.pk).accept(bob, labels[0])


def test_claim_seconds_come_from_settings(user, video, settings):
    settings.HARWEB_CLAIM_SECONDS = 42
    clip = add_clip(video, 0)
    before = timezone.now()
    clip.claim_for(user)
    left = (clip.claimed_until - before).total_seconds()
    assert 41 <= left <= 43


# --------------------------------------------------------------------------
# undo


def test_undo_walks_back_and_reclaims(user, project, video, labels):
    a, b = add_clip(video, 0), add_clip(video, 1)
    a.claim_for(user)
    b.claim_for(user)
    a.accept(user, labels[1])
    b.reject(user)
    first = review.undo_last(user, project)
    assert first.clip_id == b.pk and first.undone_at is not None
    b.refresh_from_db()
    assert b.status == ClipStatus.PROPOSED and b.claimed_by == user
    second = review.undo_last(user, project)
    assert second.clip_id == a.pk
    a.refresh_from_db()
    assert a.status == ClipStatus.PROPOSED and a.label is None
    assert a.labeled_by is None and a.labeled_at is None
    with pytest.raises(NothingToUndo):
        review.undo_last(user, project)
    assert Annotation.objects.filter(undone_at__isnull=False).count() == 2


def test_undo_never_overwrites_someone_elses_work(user, bob, project, video, labels):
    clip = add_clip(video, 0)
    clip.claim_for(user)
    clip.skip(user)
    taken = review.next_clip_for(bob, project)
    assert taken.pk == clip.pk
    with pytest.raises(ClipConflict, match="looking at"):
        review.undo_last(user, project)
    taken.accept(bob, labels[0])
    with pytest.raises(ClipConflict, match="decided this clip since"):
        review.undo_last(user, project)
    assert Clip.objects.get(pk=clip.pk).labeled_by == bob


# --------------------------------------------------------------------------
# reviewer mode


def test_reviewer_second_opinions_and_agreement(user, rita, project, video, labels):
    walk, jump = add_clip(video, 0), add_clip(video, 1)
    for clip, label in ((walk, labels[0]), (jump, labels[1])):
        clip.claim_for(user)
        clip.accept(user, label)
    add_clip(video, 2)  # undecided: never offered for review
    # Nobody reviews their own labels.
    assert review.next_clip_for(user, project, mode=Mode.REVIEW) is None
    seen = []
    for _ in range(2):
        clip = review.next_clip_for(rita, project, mode=Mode.REVIEW, exclude=seen)
        assert clip.labeled_by == user
        seen.append(clip.pk)
        if clip.pk == walk.pk:
            review.decide(rita, clip, action="top", role=Role.REVIEWER, mode="review")
        else:
            label = labels[2]
            review.decide(
                rita,
                clip,
                action="label",
                label=label,
                role=Role.REVIEWER,
                mode="review",
            )
    assert sorted(seen) == sorted([walk.pk, jump.pk])
    assert review.next_clip_for(rita, project, mode=Mode.REVIEW) is None
    reviews = {a.clip_id: a for a in Annotation.objects.filter(decision="review")}
    assert reviews[walk.pk].agrees is True and reviews[jump.pk].agrees is False
    # The reviewer's label wins; undo would put Ann's back.
    assert Clip.objects.get(pk=jump.pk).label == labels[2]
    assert review.agreement(project) == {"reviewed": 2, "agreed": 1, "rate": 0.5}
    assert review.undo_last(rita, project, mode=Mode.REVIEW).clip_id in seen
    assert review.agreement(project)["reviewed"] == 1


def test_annotators_cannot_give_second_opinions(user, bob, project, video, labels):
    clip = add_clip(video, 0)
    clip.claim_for(user)
    clip.accept(user, labels[0])
    clip.claim_for(bob, statuses=(ClipStatus.ACCEPTED,))
    with pytest.raises(PermissionDenied):
        review.decide(bob, clip, action="top", role=Role.ANNOTATOR, mode="review")


# --------------------------------------------------------------------------
# next clip follows the strategy

# Three labels (walking, jumping, waving). Each candidate wins one strategy:
CANDIDATES = {
    "margin": [0.50, 0.49, 0.01],  # top two nearly tied
    "entropy": [0.42, 0.29, 0.29],  # flattest
    "least_confidence": [0.40, 0.36, 0.24],  # weakest best guess
    "balanced": [0.20, 0.20, 0.60],  # uncertain, predicted label is rare
    "confident": [0.98, 0.01, 0.01],
}


@pytest.fixture
def strategy_project(project, video, labels, _media_root):
    """Labeled clips (10 walking, 3 jumping, 3 waving) plus the candidates,
    with fake frame embeddings: labeled clips and most candidates point one
    way, only "confident" points the opposite way (k-center's pick)."""
    dim, clips = 8, {}
    frames = np.zeros((64, dim), dtype=np.float16)
    rng = np.random.default_rng(0)
    counts = [(labels[0], 10), (labels[1], 3), (labels[2], 3)]
    index = 0
    for label, n in counts:
        for _ in range(n):
            add_clip(video, index, status=ClipStatus.ACCEPTED, label=label)
            frames[index] = np.eye(dim)[0] + 0.05 * rng.standard_normal(dim)
            index += 1
    for name, probs in CANDIDATES.items():
        clips[name] = add_clip(video, index, probs)
        direction = -np.eye(dim)[0] if name == "confident" else np.eye(dim)[0]
        frames[index] = direction + 0.3 * np.eye(dim)[1 + len(clips) % 6]
        index += 1
    path = media_path("embeddings", "fakefingerprint", f"{video.pk}.npy")
    path.parent.mkdir(parents=True)
    np.save(path, frames)
    return clips


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("entropy", "entropy"),
        ("margin", "margin"),
        ("least_confidence", "least_confidence"),
        ("balanced", "balanced"),
        ("kcenter", "confident"),
    ],
)
def test_next_clip_follows_the_strategy(
    user, project, strategy_project, strategy, expected
):
    project.strategy = strategy
    project.save()
    clip = review.next_clip_for(user, project)
    assert clip.pk == strategy_project[expected].pk


def test_random_strategy_only_returns_free_candidates(
    user, bob, project, strategy_project
):
    project.strategy = "random"
    project.save()
    free = {c.pk for c in strategy_project.values()}
    got = {review.next_clip_for(u, project).pk for u in (user, bob)}
    assert len(got) == 2 and got <= free


def test_kcenter_spreads_concurrent_annotators(user, bob, project, strategy_project):
    project.strategy = "kcenter"
    project.save()
    first = review.next_clip_for(user, project)
    second = review.next_clip_for(bob, project)
    assert first.pk == strategy_project["confident"].pk
    # Ann's claim counts as covered: Bob gets another region, not a neighbour.
    assert second.pk != first.pk


def test_cold_start_serves_typical_clips_first(user, project, video, _media_root):
    # No labels confirmed yet; five near-identical clips and two outliers.
    dim = 8
    frames = np.zeros((16, dim), dtype=np.float16)
    rng = np.random.default_rng(1)
    common = []
    for i in range(7):
        probs = [0.98, 0.01, 0.01] if i < 5 else [0.34, 0.33, 0.33]
        clip = add_clip(video, i, probs)
        if i < 5:
            common.append(clip.pk)
            frames[i] = np.eye(dim)[0] + 0.02 * rng.standard_normal(dim)
        else:
            frames[i] = np.eye(dim)[i - 3]
    path = media_path("embeddings", "fp", f"{video.pk}.npy")
    path.parent.mkdir(parents=True)
    np.save(path, frames)
    # Entropy alone would pick an outlier; the cold start picks a typical clip.
    assert review.next_clip_for(user, project).pk in common


def test_typical_order_covers_every_clip_biggest_cluster_first():
    rng = np.random.default_rng(3)
    centres = np.eye(6, dtype=np.float32)[:3] * 5
    sizes = [6, 3, 1]
    x = np.concatenate(
        [
            c + 0.1 * rng.standard_normal((n, 6))
            for c, n in zip(centres, sizes, strict=True)
        ]
    ).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = review.typical_order(x, 3)
    assert sorted(order.tolist()) == list(range(10))
    cluster = np.repeat([0, 1, 2], sizes)
    # One of each cluster first (largest first), then round-robin.
    assert cluster[order[:3]].tolist() == [0, 1, 2]
    assert cluster[order[3:5]].tolist() == [0, 1]
    assert cluster[order[-1]] == 0


def test_no_embeddings_falls_back_to_the_strategy(user, project, video):
    flat = add_clip(video, 0, [0.34, 0.33, 0.33])
    add_clip(video, 1, [0.98, 0.01, 0.01])
    assert review.next_clip_for(user, project).pk == flat.pk


def test_exclude_and_empty_queue(user, project, video):
    a = add_clip(video, 0)
    assert review.next_clip_for(user, project, exclude=[a.pk]) is None
    assert review.next_clip_for(user, project).pk == a.pk


# --------------------------------------------------------------------------
# the page


@pytest.fixture
def queue(project, video):
    return [add_clip(video, i, [0.7 - i * 0.01, 0.2, 0.1 + i * 0.01]) for i in range(6)]


def test_page_shows_a_clip_and_prefetches_the_next(client_in, user, queue):
    resp = client_in.get("/p/test/review/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert html.count('class="clip-card"') == 2
    assert 'id="prefetch" hidden' in html
    assert Clip.objects.filter(claimed_by=user).count() == 2
    for text in ("Accept top", "None of these", "Skip", "Undo last", "labeled today"):
        assert text in html
    # Without JavaScript the choices are submit buttons of a real form.
    assert 'name="choice" value="label:' in html and 'method="post"' in html


def test_plain_form_post_redirects_to_the_next_clip(client_in, user, queue, labels):
    client_in.get("/p/test/review/")
    clip = Clip.objects.filter(claimed_by=user).order_by("claimed_until", "id")[0]
    resp = client_in.post(
        f"/p/test/review/clips/{clip.pk}/decide",
        {"choice": f"label:{labels[1].pk}", "mode": "label", "shown_at": "0"},
    )
    assert resp.status_code == 302 and resp["Location"] == "/p/test/review/"
    ann = Annotation.objects.get()
    assert ann.decision == Decision.CORRECT and ann.label == labels[1]
    assert ann.duration_ms > 0  # measured from when the page showed it
    html = client_in.get(resp["Location"]).content.decode()
    assert f'data-clip-id="{clip.pk}"' not in html
    assert "<b>1</b> labeled today" in html


def test_htmx_decision_returns_the_next_clip_fragment(client_in, user, queue):
    client_in.get("/p/test/review/")
    current, upcoming = Clip.objects.filter(claimed_by=user).order_by(
        "claimed_until", "id"
    )
    resp = client_in.post(
        f"/p/test/review/clips/{current.pk}/decide",
        {"choice": "top", "duration_ms": "870", "held": str(upcoming.pk), "want": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "<html" not in html and 'id="counter"' in html
    assert html.count('class="clip-card"') == 1
    assert f'data-clip-id="{upcoming.pk}"' not in html
    assert f'data-clip-id="{current.pk}"' not in html
    assert Annotation.objects.get().duration_ms == 870
    # want=2 (nothing prefetched) returns two clips.
    resp = client_in.post(
        f"/p/test/review/clips/{upcoming.pk}/decide",
        {"choice": "reject", "want": "2"},
        HTTP_HX_REQUEST="true",
    )
    assert resp.content.decode().count('class="clip-card"') == 2


def test_htmx_errors_are_fragments_with_the_status(client_in, user, bob, queue):
    clip = review.next_clip_for(bob, Project.objects.get(slug="test"))
    resp = client_in.post(
        f"/p/test/review/clips/{clip.pk}/decide",
        {"choice": "top"},
        HTTP_HX_REQUEST="true",
    )
    assert resp.status_code == 409
    assert b"not claimed by you" in resp.content


def test_skipped_clip_is_not_shown_again_this_session(
    client_in, user, bob, queue, project
):
    client_in.get("/p/test/review/")
    clip = Clip.objects.filter(claimed_by=user).order_by("claimed_until", "id")[0]
    client_in.post(f"/p/test/review/clips/{clip.pk}/decide", {"choice": "skip"})
    for _ in range(len(queue) - 1):
        html = client_in.get("/p/test/review/").content.decode()
        assert f'data-clip-id="{clip.pk}"' not in html
        shown = Clip.objects.filter(claimed_by=user).order_by("claimed_until", "id")[0]
        client_in.post(f"/p/test/review/clips/{shown.pk}/decide", {"choice": "top"})
    # ...but it went back to the pool for everyone else.
    assert review.next_clip_for(bob, project).pk == clip.pk


def test_page_undo_brings_the_clip_back(client_in, user, queue):
    client_in.get("/p/test/review/")
    clip = Clip.objects.filter(claimed_by=user).order_by("claimed_until", "id")[0]
    client_in.post(f"/p/test/review/clips/{clip.pk}/decide", {"choice": "reject"})
    resp = client_in.post("/p/test/review/undo", {"mode": "label"})
    assert resp.status_code == 302 and f"clip={clip.pk}" in resp["Location"]
    html = client_in.get(resp["Location"]).content.decode()
    stage = html.split('id="stage"')[1].split('id="prefetch"')[0]
    assert f'data-clip-id="{clip.pk}"' in stage
    resp = client_in.post(
        "/p/test/review/undo", {"mode": "label"}, HTTP_HX_REQUEST="true"
    )
    assert resp.status_code == 409 and b"Nothing to undo" in resp.content


def test_typeahead_creates_labels_for_admins_only(
    client, client_in, user, bob, queue, project
):
    client_in.get("/p/test/review/")
    clip = Clip.objects.filter(claimed_by=user).order_by("claimed_until", "id")[0]
    resp = client_in.post(
        f"/p/test/review/clips/{clip.pk}/decide",
        {"choice": "named", "label_name": "  Cart wheel "},
    )
    assert resp.status_code == 302
    assert Clip.objects.get(pk=clip.pk).label.name == "Cart wheel"
    client.force_login(bob)
    client.get("/p/test/review/")
    mine = Clip.objects.filter(claimed_by=bob).order_by("claimed_until", "id")[0]
    url = f"/p/test/review/clips/{mine.pk}/decide"
    resp = client.post(url, {"choice": "named", "label_name": "handstand"})
    assert resp.status_code == 403
    assert not project.labels.filter(name="handstand").exists()
    # Existing labels are found by name, case-insensitively.
    resp = client.post(url, {"choice": "named", "label_name": "WAVING"})
    assert resp.status_code == 302
    assert Clip.objects.get(pk=mine.pk).label.name == "waving"


# --------------------------------------------------------------------------
# the API


def _post(client, url, payload):
    return client.post(url, json.dumps(payload), content_type="application/json")


@pytest.fixture
def claimed(client_in, queue):
    body = client_in.get("/api/projects/test/queue/next").json()
    return body


def test_api_next_claims_and_returns_proposals(client_in, user, claimed, labels):
    clip = claimed["clip"]
    assert Clip.objects.get(pk=clip["id"]).claimed_by == user
    assert [p["rank"] for p in clip["proposals"]] == [0, 1, 2]
    assert clip["proposals"][0]["label"]["name"] == "walking"
    assert claimed["remaining"] == 6
    again = client_in.get("/api/projects/test/queue/next").json()["clip"]["id"]
    assert again == clip["id"]  # resumes the claim
    other = client_in.get(f"/api/projects/test/queue/next?exclude={again}").json()
    assert other["clip"]["id"] != again


def test_api_decisions(client_in, user, claimed, labels):
    url = f"/api/projects/test/clips/{claimed['clip']['id']}/decision"
    resp = _post(
        client_in,
        url,
        {
            "decision": "correct",
            "label": "jumping",
            "duration_ms": 2100,
            "start_s": 0.25,
            "end_s": 2.0,
        },
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["annotation"]["decision"] == "correct"
    assert body["annotation"]["duration_ms"] == 2100
    assert body["clip"]["label"]["name"] == "jumping"
    assert body["clip"]["start_s"] == 0.25
    resp = _post(client_in, "/api/projects/test/undo", {})
    assert resp.status_code == 200 and resp.json()["clip"]["status"] == "proposed"
    resp = _post(client_in, url, {"decision": "accept", "duration_ms": 5})
    assert resp.status_code == 201 and resp.json()["annotation"]["decision"] == "accept"
    assert _post(client_in, "/api/projects/test/undo", {}).status_code == 200
    resp = _post(client_in, "/api/projects/test/undo", {})
    assert resp.status_code == 409 and resp.json()["detail"] == "Nothing to undo."
    assert Annotation.objects.filter(undone_at__isnull=False).count() == 2


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"decision": "approve"}, 400, "decision must be one of"),
        ({"decision": "correct", "label": "flying"}, 400, "Unknown label"),
        ({"decision": "correct", "label": 999999}, 400, "Unknown label id"),
        ({"decision": "correct"}, 400, "needs a label"),
        ({"decision": "accept", "label": "waving"}, 400, "not the top proposal"),
        ({"decision": "reject", "label": "waving"}, 400, "takes no label"),
        ({"decision": "reject", "start_s": 1.0, "end_s": 1.0}, 400, "after start_s"),
        ({"decision": "reject", "start_s": "1"}, 400, "must be a number"),
        ({"decision": "reject", "duration_ms": -5}, 400, "duration_ms"),
        ({"decision": "reject", "duration_ms": 1.5}, 400, "duration_ms"),
        ({"decision": "reject", "colour": "red"}, 400, "Unknown field"),
        ({"decision": "review", "label": None}, 409, "no decision yet to review"),
        ({"decision": "review"}, 400, "null for none of these"),
    ],
)
def test_api_rejects_bad_payloads(client_in, claimed, payload, status, message):
    url = f"/api/projects/test/clips/{claimed['clip']['id']}/decision"
    resp = _post(client_in, url, payload)
    assert resp.status_code == status, resp.content
    assert message in resp.json().get("detail", "")
    assert not Annotation.objects.exists()


def test_api_label_from_another_project(client_in, user, claimed, tiny_clip_dir):
    other = Project.objects.create(name="Other", slug="other")
    foreign = create_label(other, "walking")
    url = f"/api/projects/test/clips/{claimed['clip']['id']}/decision"
    resp = _post(client_in, url, {"decision": "correct", "label": foreign.pk})
    assert resp.status_code == 400 and "another project" in resp.json()["detail"]


def test_api_conflicts_and_shapes(client_in, bob, claimed, queue):
    # Not claimed by the caller: 409.
    taken = review.next_clip_for(bob, queue[0].video.project)
    resp = _post(
        client_in,
        f"/api/projects/test/clips/{taken.pk}/decision",
        {"decision": "reject"},
    )
    assert resp.status_code == 409 and "not claimed by you" in resp.json()["detail"]
    url = f"/api/projects/test/clips/{claimed['clip']['id']}/decision"
    assert client_in.post(url, {"decision": "reject"}).status_code == 415
    resp = client_in.post(url, "[1, 2]", content_type="application/json")
    assert resp.status_code == 400
    resp = client_in.post(url, "{not json", content_type="application/json")
    assert resp.status_code == 400
    resp = client_in.get("/api/projects/test/queue/next?mode=sideways")
    assert resp.status_code == 400


def test_api_create_label_needs_an_editor(client, client_in, bob, queue, project):
    first = client_in.get("/api/projects/test/queue/next").json()["clip"]["id"]
    resp = _post(
        client_in,
        f"/api/projects/test/clips/{first}/decision",
        {"decision": "correct", "label": "cartwheel", "create_label": True},
    )
    assert resp.status_code == 201
    assert project.labels.filter(name="cartwheel").exists()
    client.force_login(bob)
    mine = client.get("/api/projects/test/queue/next").json()["clip"]["id"]
    resp = _post(
        client,
        f"/api/projects/test/clips/{mine}/decision",
        {"decision": "correct", "label": "handstand", "create_label": True},
    )
    assert resp.status_code == 403
    assert not project.labels.filter(name="handstand").exists()


def test_api_reviewer_mode(client, client_in, user, rita, queue, labels):
    first = client_in.get("/api/projects/test/queue/next").json()["clip"]["id"]
    _post(
        client_in, f"/api/projects/test/clips/{first}/decision", {"decision": "accept"}
    )
    client.force_login(rita)
    body = client.get("/api/projects/test/queue/next?mode=review").json()
    assert body["clip"]["id"] == first and body["clip"]["labeled_by"] == "ann"
    resp = _post(
        client,
        f"/api/projects/test/clips/{first}/decision",
        {"decision": "review", "label": labels[0].pk, "duration_ms": 300},
    )
    assert resp.status_code == 201 and resp.json()["annotation"]["agrees"] is True
    resp = _post(client, "/api/projects/test/undo", {"mode": "review"})
    assert resp.status_code == 200 and resp.json()["undone"]["decision"] == "review"


def test_api_undo_of_a_skip_brings_the_clip_back(client_in, user, claimed):
    clip_id = claimed["clip"]["id"]
    url = f"/api/projects/test/clips/{clip_id}/decision"
    assert _post(client_in, url, {"decision": "skip"}).status_code == 201
    skipped_next = client_in.get("/api/projects/test/queue/next").json()
    assert skipped_next["clip"]["id"] != clip_id  # not shown again...
    resp = _post(client_in, "/api/projects/test/undo", {})
    assert resp.status_code == 200 and resp.json()["clip"]["id"] == clip_id
    # ...until it is undone: then it is the caller's to decide again.
    held = skipped_next["clip"]["id"]
    again = client_in.get(f"/api/projects/test/queue/next?exclude={held}").json()
    assert again["clip"]["id"] == clip_id
