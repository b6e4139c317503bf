"""Django admin for projects, members, labels and videos."""

from __future__ import annotations

from django.contrib import admin, messages

from annotator.models import (
    ActionLabel,
    Annotation,
    Clip,
    Job,
    LabelChange,
    Membership,
    Project,
    Video,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class LabelInline(admin.TabularInline):
    model = ActionLabel
    extra = 0
    fields = ["name", "prompt", "color", "hotkey", "is_active"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "strategy", "retrain_min_labels"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline, LabelInline]
    search_fields = ["name", "slug"]
    actions = ["retrain_now"]

    @admin.action(description="Retrain now")
    def retrain_now(self, request, queryset):
        from training.pipeline import start_run

        for project in queryset:
            run = start_run(project, reason="admin", user=request.user)
            if run is None:
                messages.warning(request, f"{project}: a run is already going.")
            else:
                messages.success(request, f"{project}: training run {run.pk} queued.")


@admin.register(Video)
class VideoAdmin(admin.ModelAdmin):
    list_display = [
        "original_name",
        "project",
        "status",
        "progress",
        "duration",
        "created_at",
    ]
    list_filter = ["status", "project"]
    search_fields = ["original_name"]
    readonly_fields = ["token", "traceback", "error", "proposal_error"]


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "label", "labeled_by", "top_prob"]
    list_filter = ["status", "video__project"]
    list_select_related = ["video", "label", "labeled_by"]  # __str__ reads video
    raw_id_fields = ["video", "label"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = [
        "clip",
        "user",
        "decision",
        "label",
        "duration_ms",
        "created_at",
        "undone_at",
    ]
    list_filter = ["decision"]
    list_select_related = ["clip__video", "user", "label"]  # the clip shows its video
    raw_id_fields = ["clip"]


admin.site.register(LabelChange)
admin.site.register(Job)
