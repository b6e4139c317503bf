"""Who may see and change what: membership lookups that 404 for outsiders."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import Http404

from annotator.models import Project, Role, Video

# Roles allowed to edit labels and to review others' decisions.
EDITORS = (Role.ADMIN, Role.REVIEWER)


def projects_for(user) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def role_for(user, project: Project) -> str | None:
    if user.is_superuser:
        return Role.ADMIN
    return project.role_of(user)


def get_project_for_user(user, slug: str, roles=None) -> tuple[Project, str]:
    """The project and the user's role; 404 when not a member, 403 if the role
    is not among ``roles``."""
    if not user.is_authenticated:
        raise Http404("No such project")
    if user.is_superuser:
        project, role = Project.objects.filter(slug=slug).first(), Role.ADMIN
    else:
        # One query: the project and this user's role in it.
        project = (
            Project.objects.filter(slug=slug, memberships__user=user)
            .annotate(my_role=F("memberships__role"))
            .first()
        )
        role = project.my_role if project else None
    if project is None:
        raise Http404("No such project")
    if roles is not None and role not in roles:
        raise PermissionDenied("Your role in this project does not allow this.")
    return project, role


def get_video_for_user(user, slug: str, pk: int) -> tuple[Video, str]:
    project, role = get_project_for_user(user, slug)
    video = project.videos.filter(pk=pk).first()
    if video is None:
        raise Http404("No such video")
    video.project = project
    return video, role
