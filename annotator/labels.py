"""Label edits that keep history and trigger re-scoring."""

from __future__ import annotations

from django.db import transaction

from annotator.models import (
    ActionLabel,
    Annotation,
    Clip,
    LabelChange,
    Proposal,
    Segment,
)
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


def _next_color(project) -> str:
    """The palette colour for a project's next label (the palette cycles)."""
    return PALETTE[project.labels.count() % len(PALETTE)]


@transaction.atomic
def save_label(form, *, user=None) -> ActionLabel:
    """Create or edit a label from a valid form; re-score when CLIP text changed."""
    label: ActionLabel = form.instance
    before = _snapshot(ActionLabel.objects.get(pk=label.pk)) if label.pk else {}
    if not label.pk and not form.cleaned_data.get("color"):
        label.color = _next_color(label.project)
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
    label = ActionLabel.objects.create(
        project=project, name=name, prompt=prompt, color=_next_color(project)
    )
    LabelChange.objects.create(
        label=label, user=user, action="create", after=_snapshot(label)
    )
    return label


@transaction.atomic
def merge_labels(source: ActionLabel, target: ActionLabel, *, user=None) -> int:
    """Fold ``source`` into ``target``: its clips move over, it is retired.

    History keeps the merge (and the source row stays, inactive), so past
    annotations still say what was chosen. Returns the clips moved.
    """
    if source.project_id != target.project_id or source.pk == target.pk:
        raise ValueError("Merge two different labels of the same project.")
    moved = Clip.objects.filter(label=source).update(label=target)
    Annotation.objects.filter(label=source).update(label=target)
    Proposal.objects.filter(label=source).delete()
    Segment.objects.filter(label=source).delete()
    before = _snapshot(source)
    source.is_active = False
    source.merged_into = target
    source.hotkey = ""
    source.save()
    LabelChange.objects.create(
        label=source,
        user=user,
        action="merge",
        before=before,
        after={"merged_into": target.name, "clips_moved": moved},
    )
    LabelChange.objects.create(
        label=target,
        user=user,
        action="absorb",
        after={"absorbed": source.name, "clips_moved": moved},
    )
    queue_repropose(source.project)
    return moved


def describe_change(change: LabelChange) -> str:
    """One line for the history table."""
    if change.action == "create":
        return "created"
    if change.action == "merge":
        into, moved = change.after.get("merged_into"), change.after.get("clips_moved")
        return f"merged into “{into}” ({moved} clips)"
    if change.action == "absorb":
        return f"absorbed “{change.after.get('absorbed')}”"
    diffs = [
        f"{k} “{change.before.get(k, '')}” → “{v}”"
        for k, v in change.after.items()
        if change.before.get(k) != v
    ]
    return "; ".join(diffs) or change.action


def label_history(project, limit: int = 30) -> list[dict]:
    changes = LabelChange.objects.filter(label__project=project).select_related(
        "label", "user"
    )[:limit]
    return [
        {
            "at": c.at,
            "user": c.user,
            "label": c.label.name,
            "summary": describe_change(c),
        }
        for c in changes
    ]
