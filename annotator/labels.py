"""Label edits that keep history and trigger re-scoring."""

from __future__ import annotations

from django.db import transaction

from annotator.models import ActionLabel, LabelChange
from annotator.services import queue_repropose

PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
]
_TRACKED = ("name", "prompt", "color", "hotkey")


def _snapshot(label: ActionLabel) -> dict:
    return {f: getattr(label, f) for f in _TRACKED}


@transaction.atomic
def save_label(form, *, user=None) -> ActionLabel:
    """Create or edit a label from a valid form; re-score when CLIP text changed."""
    label: ActionLabel = form.instance
    before = _snapshot(ActionLabel.objects.get(pk=label.pk)) if label.pk else {}
    if not label.pk and not form.cleaned_data.get("color"):
        label.color = PALETTE[label.project.labels.count() % len(PALETTE)]
    label = form.save()
    after = _snapshot(label)
    if before != after:
        action = "create" if not before else "edit"
        LabelChange.objects.create(
            label=label, user=user, action=action, before=before, after=after
        )
    text_changed = (before.get("name"), before.get("prompt")) != (
        label.name,
        label.prompt,
    )
    if text_changed:
        queue_repropose(label.project)
    return label


def create_label(project, name: str, prompt: str = "", *, user=None) -> ActionLabel:
    """Programmatic creation (demo, type-ahead) with a palette colour."""
    color = PALETTE[project.labels.count() % len(PALETTE)]
    label = ActionLabel.objects.create(
        project=project, name=name, prompt=prompt, color=color
    )
    LabelChange.objects.create(
        label=label, user=user, action="create", after=_snapshot(label)
    )
    return label
