"""Scoring with the project's live fine-tuned version, when one exists."""

from __future__ import annotations


def live_scorer(project, loaded, labels, text):
    """A Scorer for the live ModelVersion, or None to use zero-shot."""
    version = project.model_versions.filter(is_live=True).first()
    if version is None:
        return None
    from training.deploy import scorer_for_version

    return scorer_for_version(version, loaded, labels, text)
