"""Who may do what, for every route in annotator/urls.py and api_urls.py.

Anonymous users are sent to the login page (pages) or refused (API);
non-members get 404 for anything inside a project; members whose role is
too low get 403; everyone else gets the endpoint's normal answer. Every POST
needs a CSRF token. A route added without a row here fails
``test_every_route_is_covered``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver

from annotator import api_urls, review
from annotator import urls as page_urls
from annotator.labels import create_label
from annotator.models import (
    ActionLabel,
    Annotation,
    Clip,
    ClipStatus,
    Membership,
    Role,
    Video,
    VideoStatus,
)
from annotator.storage import media_path

pytestmark = pytest.mark.django_db

ALL = (Role.ADMIN, Role.REVIEWER, Role.ANNOTATOR)
EDIT = (Role.ADMIN, Role.REVIEWER)
ROLES = ("anonymous", "outsider", *ALL)
LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def _fresh_caches():
    review.clear_caches()


@dataclass
class World:
    project: object
    video: Video
    label: object
    users: dict = field(default_factory=dict)

    def spare_label(self):
        """A fresh label to merge into ``self.label``."""
        return create_label(self.project, f"spare-{ActionLabel.objects.count()}")

    def clip_for(self, user, *, status=ClipStatus.PROPOSED) -> Clip:
        """A clip claimed by ``user`` (decided by the admin first if needed)."""
        n = Clip.objects.count()
        clip = Clip.objects.create(
            video=self.video,
            index=n,
            start_s=n,
            end_s=n + 2,
            start_frame=0,
            end_frame=1,
            frame_indices=[0],
            status=status,
            label=self.label if status == ClipStatus.ACCEPTED else None,
            labeled_by=self.users["first"] if status != ClipStatus.PROPOSED else None,
        )
        clip.proposals.create(
            label=self.label, rank=0, score=1.0, probability=0.9, model_tag="t"
        )
        if user is not None and user.is_authenticated:
            assert clip.claim_for(user, statuses=(status,))
        return clip


@pytest.fixture
def world(project, user, other_user, django_user_model):
    users = {Role.ADMIN: user, "outsider": other_user}
    # "first" makes the first decisions that the reviewer cases re-judge.
    for key, role in (
        (Role.REVIEWER, Role.REVIEWER),
        (Role.ANNOTATOR, Role.ANNOTATOR),
        ("first", Role.ANNOTATOR),
    ):
        u = django_user_model.objects.create_user(str(key), password="pw")
        Membership.objects.create(project=project, user=u, role=role)
        users[key] = u
    proxy = media_path("proxies", "p.mp4")
    proxy.parent.mkdir(parents=True)
    proxy.write_bytes(b"\x00" * 2048)
    video = Video.objects.create(
        project=project,
        original_name="v.mp4",
        status=VideoStatus.FAILED,  # no re-scoring jobs when labels change
        duration=30.0,
        proxy="proxies/p.mp4",
    )
    return World(project, video, project.labels.first(), users)


@dataclass
class Case:
    """One request to one route; ``allowed`` roles get ``ok``, others 403."""

    name: str  # URL name
    method: str
    path: Callable  # (world, user) -> path
    allowed: tuple = ALL
    ok: int = 200
    data: Callable | None = None  # (world, user) -> dict
    api: bool = False
    form: bool = False  # send an API body as multipart instead of JSON
    effect: Callable | None = None  # (user) -> bool: the change really happened
    tag: str = ""  # tells apart cases of one route in test ids

    @property
    def id(self) -> str:
        return f"{self.method}-{self.name}" + (f"-{self.tag}" if self.tag else "")


def _uid(user) -> int:
    return getattr(user, "pk", None) or 0


def _clip_path(action: str, status=ClipStatus.PROPOSED):
    def path(w, u):
        return f"/p/test/review/clips/{w.clip_for(u, status=status).pk}/{action}"

    return path


def _api_clip(status=ClipStatus.PROPOSED):
    def path(w, u):
        return f"/api/projects/test/clips/{w.clip_for(u, status=status).pk}/decision"

    return path


def _with_undo(path):
    def prepare(w, u):
        """A decision to undo, then the undo route."""
        if u is not None and u.is_authenticated and w.project.role_of(u):
            w.clip_for(u).reject(u)
        return path

    return prepare


def _decided(user) -> bool:
    return Annotation.objects.filter(user=user, undone_at__isnull=True).exists()


def _undone(user) -> bool:
    return Annotation.objects.filter(user=user, undone_at__isnull=False).exists()


CASES = [
    Case("project_list", "get", lambda w, u: "/"),
    Case("project_dashboard", "get", lambda w, u: "/p/test/"),
    Case("upload", "get", lambda w, u: "/p/test/upload/"),
    Case("upload", "post", lambda w, u: "/p/test/upload/", data=lambda w, u: {}),
    Case("labels", "get", lambda w, u: "/p/test/labels/"),
    Case(
        "labels",
        "post",
        lambda w, u: "/p/test/labels/",
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"name": f"new-{_uid(u)}", "color": "#112233"},
    ),
    Case(
        "label_edit",
        "post",
        lambda w, u: f"/p/test/labels/{w.label.pk}/",
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"name": w.label.name, "color": "#445566"},
    ),
    Case(
        "label_merge",
        "post",
        lambda w, u: f"/p/test/labels/{w.spare_label().pk}/merge/",
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"into": w.label.pk},
        effect=lambda u: ActionLabel.objects.filter(merged_into__isnull=False).exists(),
    ),
    Case("video_detail", "get", lambda w, u: f"/p/test/videos/{w.video.pk}/"),
    Case("video_media", "get", lambda w, u: f"/p/test/videos/{w.video.pk}/proxy"),
    Case("review", "get", lambda w, u: "/p/test/review/"),
    Case(
        "review",
        "get",
        lambda w, u: "/p/test/review/?mode=review",
        allowed=EDIT,
        tag="review-mode",
    ),
    Case(
        "review_decide",
        "post",
        _clip_path("decide"),
        ok=302,
        data=lambda w, u: {"choice": "top"},
        effect=_decided,
    ),
    Case(
        "review_decide",
        "post",
        _clip_path("decide", ClipStatus.ACCEPTED),
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"choice": "top", "mode": "review"},
        tag="review-mode",
        effect=_decided,
    ),
    Case(
        "review_decide",
        "post",
        _clip_path("decide"),
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"choice": "named", "label_name": f"made-by-{_uid(u)}"},
        tag="create-label",
        effect=_decided,
    ),
    Case(
        "review_undo",
        "post",
        _with_undo("/p/test/review/undo"),
        ok=302,
        data=lambda w, u: {},
        effect=_undone,
    ),
    Case(
        "review_undo",
        "post",
        lambda w, u: "/p/test/review/undo",
        allowed=EDIT,
        ok=302,
        data=lambda w, u: {"mode": "review"},
        tag="review-mode",
    ),
    Case("api_projects", "get", lambda w, u: "/api/projects/", api=True),
    Case("api_project", "get", lambda w, u: "/api/projects/test/", api=True),
    Case("api_videos", "get", lambda w, u: "/api/projects/test/videos/", api=True),
    Case(
        "api_videos",
        "post",
        lambda w, u: "/api/projects/test/videos/",
        ok=400,  # allowed, but no file sent
        data=lambda w, u: {},
        api=True,
        form=True,
    ),
    Case(
        "api_video",
        "get",
        lambda w, u: f"/api/projects/test/videos/{w.video.pk}/",
        api=True,
    ),
    Case(
        "api_video_clips",
        "get",
        lambda w, u: f"/api/projects/test/videos/{w.video.pk}/clips/",
        api=True,
    ),
    Case("api_labels", "get", lambda w, u: "/api/projects/test/labels/", api=True),
    Case(
        "api_labels",
        "post",
        lambda w, u: "/api/projects/test/labels/",
        allowed=EDIT,
        ok=201,
        data=lambda w, u: {"name": f"api-{_uid(u)}"},
        api=True,
    ),
    Case(
        "api_label",
        "get",
        lambda w, u: f"/api/projects/test/labels/{w.label.pk}/",
        api=True,
    ),
    Case(
        "api_label",
        "patch",
        lambda w, u: f"/api/projects/test/labels/{w.label.pk}/",
        allowed=EDIT,
        data=lambda w, u: {"color": "#abcdef"},
        api=True,
    ),
    Case(
        "api_queue_next", "get", lambda w, u: "/api/projects/test/queue/next", api=True
    ),
    Case(
        "api_queue_next",
        "get",
        lambda w, u: "/api/projects/test/queue/next?mode=review",
        tag="review-mode",
        allowed=EDIT,
        api=True,
    ),
    Case(
        "api_clip_decision",
        "post",
        _api_clip(),
        ok=201,
        data=lambda w, u: {"decision": "reject", "duration_ms": 10},
        api=True,
    ),
    Case(
        "api_clip_decision",
        "post",
        _api_clip(ClipStatus.ACCEPTED),
        allowed=EDIT,
        ok=201,
        data=lambda w, u: {"decision": "review", "label": None},
        tag="review-mode",
        api=True,
    ),
    Case(
        "api_clip_decision",
        "post",
        _api_clip(),
        allowed=EDIT,
        ok=201,
        data=lambda w, u: {
            "decision": "correct",
            "label": f"new-{_uid(u)}",
            "create_label": True,
        },
        tag="create-label",
        api=True,
    ),
    Case(
        "api_undo",
        "post",
        _with_undo("/api/projects/test/undo"),
        data=lambda w, u: {},
        api=True,
        effect=_undone,
    ),
    Case(
        "api_undo",
        "post",
        lambda w, u: "/api/projects/test/undo",
        allowed=EDIT,
        ok=409,  # allowed, nothing to undo
        data=lambda w, u: {"mode": "review"},
        api=True,
        tag="review-mode",
    ),
]


def _route_names(patterns) -> set[str]:
    names = set()
    for p in patterns:
        if isinstance(p, URLResolver):
            names |= _route_names(p.url_patterns)
        elif isinstance(p, URLPattern) and p.name:
            names.add(p.name)
    return names


def test_every_route_is_covered():
    routes = _route_names(page_urls.urlpatterns) | _route_names(api_urls.urlpatterns)
    assert routes == {c.name for c in CASES}


def _send(client, case: Case, world: World, user, **extra):
    path = case.path(world, user)
    kwargs = dict(extra)
    if case.data is not None:
        body = case.data(world, user)
        if case.api and not case.form:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        else:
            kwargs["data"] = body
    return getattr(client, case.method)(path, **kwargs)


def _params():
    return [
        pytest.param(case, role, id=f"{case.id}-{role}")
        for case in CASES
        for role in ROLES
    ]


@pytest.mark.parametrize(("case", "role"), _params())
def test_access(client, world, case: Case, role):
    user = world.users.get(role)
    if user is not None:
        client.force_login(user)
    resp = _send(client, case, world, user)
    if role == "anonymous":
        if case.api:
            assert resp.status_code in (401, 403)
        else:
            assert resp.status_code == 302 and resp["Location"].startswith(LOGIN)
    elif role == "outsider":
        if case.name in ("project_list", "api_projects"):
            assert resp.status_code == 200
            assert b"Test" not in resp.content and b'"test"' not in resp.content
        else:
            assert resp.status_code == 404
    elif role in case.allowed:
        assert resp.status_code == case.ok, resp.content[:300]
        assert case.effect is None or case.effect(user)
        if case.name in ("project_list", "api_projects"):
            assert b"test" in resp.content
    else:
        assert resp.status_code == 403, resp.content[:300]


POSTS = [c for c in CASES if c.method in ("post", "patch")]


@pytest.mark.parametrize("case", POSTS, ids=[c.id for c in POSTS])
def test_posts_need_a_csrf_token(world, case: Case):
    admin = world.users[Role.ADMIN]
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    resp = _send(client, case, world, admin)
    assert resp.status_code == 403
    assert b"CSRF" in resp.content
    # The same request with the token goes through: the 403 was the token.
    client.get("/p/test/")
    token = client.cookies["csrftoken"].value
    resp = _send(client, case, world, admin, HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == case.ok, resp.content[:300]
    assert case.effect is None or case.effect(admin)
