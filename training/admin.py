"""Admin: training runs with live status and cancel; versions with force/rollback."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from training import pipeline
from training.models import ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "status",
        "progress_bar",
        "reason",
        "created_at",
        "finished_at",
        "version",
    ]
    list_filter = ["status", "project"]
    readonly_fields = [f.name for f in TrainingRun._meta.fields]
    actions = ["cancel"]

    @admin.display(description="Progress")
    def progress_bar(self, run: TrainingRun) -> str:
        pct = round(run.progress * 100)
        return format_html(
            '<progress max="100" value="{}"></progress> {}% <small>{}</small>',
            pct,
            pct,
            run.progress_message,
        )

    @admin.action(description="Cancel selected runs")
    def cancel(self, request, queryset):
        for run in queryset.filter(status__in=["queued", "running"]):
            pipeline.cancel_run(run)
        messages.info(request, "Cancel requested; running runs stop after this epoch.")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "is_live",
        "top1",
        "backend",
        "created_at",
        "promoted_at",
    ]
    list_filter = ["project", "is_live"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
    actions = ["force_live", "rollback"]

    @admin.display(description="Held-out top-1")
    def top1(self, version: ModelVersion) -> str:
        value = version.heldout_top1
        return "–" if value is None else f"{value:.3f}"

    @admin.action(description="Make live (force, ignores the accuracy check)")
    def force_live(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Choose exactly one version.")
            return
        version = queryset.get()
        pipeline.promote(version)
        messages.success(request, f"{version} is live; clips are being re-scored.")

    @admin.action(description="Roll back the project to the previous version")
    def rollback(self, request, queryset):
        for project in {v.project for v in queryset}:
            back = pipeline.rollback(project)
            messages.success(request, f"{project}: live is now {back or 'zero-shot'}.")

    def has_add_permission(self, request) -> bool:
        return False
