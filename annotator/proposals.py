"""Zero-shot (or live-model) action proposals from cached CLIP frame embeddings.

Frames are encoded once per (video, encoder fingerprint) and kept as float16
arrays, so editing labels or prompts only re-scores: it never decodes video
or runs the image encoder again.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from annotator.media import SampledFrames
from annotator.models import (
    ActionLabel,
    Clip,
    ClipStatus,
    Project,
    Proposal,
    Segment,
    SegmentSource,
    Video,
    VideoStatus,
)
from annotator.storage import media_path
from training.ml import clip as clipml
from training.ml import encoders, segments, zeroshot

TOP_K = 5
_lock = threading.Lock()


def device() -> str:
    choice = settings.HARWEB_DEVICE
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_project_clip(project: Project) -> clipml.LoadedClip:
    return clipml.load_clip(project.clip_model_name, device=device())


@functools.cache
def _encoder_for(fingerprint: str, name: str, dev: str) -> encoders.ImageEncoder:
    loaded = clipml.load_clip(name, device=dev)
    cache = media_path("cache", "onnx")
    return encoders.build_image_encoder(loaded, device=dev, cache_dir=cache)


def image_encoder(loaded: clipml.LoadedClip) -> encoders.ImageEncoder:
    with _lock:  # one parity check per process, even with a threaded pool
        return _encoder_for(loaded.fingerprint, loaded.name, device())


def embeddings_path(video: Video, fingerprint: str) -> Path:
    return media_path("embeddings", fingerprint, f"{video.pk}.npy")


def frame_embeddings(video: Video, loaded: clipml.LoadedClip) -> np.ndarray:
    """(N, D) float16 embeddings of the video's sampled frames, cached."""
    path = embeddings_path(video, loaded.fingerprint)
    if path.exists():
        return np.load(path)
    frames = SampledFrames.load(video.frames_path())
    emb = image_encoder(loaded).encode(frames.frames).astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


def text_embeddings(loaded: clipml.LoadedClip, prompts: list[str]) -> np.ndarray:
    """(L, D) prompt-ensemble embeddings, cached per label set and encoder."""
    key = zeroshot.text_cache_key(
        loaded.fingerprint, prompts, zeroshot.DEFAULT_TEMPLATES
    )
    path = media_path("cache", "text", f"{key}.npy")
    if path.exists():
        return np.load(path)
    emb = zeroshot.label_text_embeddings(loaded, prompts).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def clip_embeddings(clips: list[Clip], frame_emb: np.ndarray) -> np.ndarray:
    """(N, T, D) float32 per-clip frame embeddings from the video's grid."""
    idx = np.asarray([c.frame_indices for c in clips], dtype=np.int64)
    return frame_emb[idx].astype(np.float32)


@dataclass
class Scorer:
    """Turns per-clip frame embeddings into label logits."""

    tag: str
    logits: Callable[[np.ndarray], np.ndarray]
    version_id: int | None = None


def project_labels(project: Project) -> list[ActionLabel]:
    return list(project.labels.filter(is_active=True).order_by("id"))


def project_scorer(
    project: Project, loaded: clipml.LoadedClip, labels: list[ActionLabel]
) -> Scorer:
    text = text_embeddings(loaded, [lab.prompt_text for lab in labels])
    from training.serving import live_scorer

    live = live_scorer(project, loaded, labels, text)
    if live is not None:
        return live

    def zero_shot(x: np.ndarray) -> np.ndarray:
        return zeroshot.score(zeroshot.clip_features_mean(x), text, loaded.logit_scale)

    return Scorer(tag=f"zero-shot:{loaded.fingerprint[:8]}", logits=zero_shot)


def _entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def write_proposals(
    video: Video,
    clips: list[Clip],
    labels: list[ActionLabel],
    logits: np.ndarray,
    scorer: Scorer,
) -> None:
    """Replace the video's proposals and proposed segments in one transaction."""
    probs = zeroshot.probabilities(logits)
    ranked = zeroshot.propose(
        probs, logits, k=TOP_K, background_threshold=video.project.background_threshold
    )
    rows, informativeness = [], _entropy(probs)
    for clip, prop, info in zip(clips, ranked, informativeness, strict=True):
        for rank, (li, logit, prob) in enumerate(prop.ranked):
            rows.append(
                Proposal(
                    clip=clip,
                    label=labels[li],
                    rank=rank,
                    score=float(logit),
                    probability=float(prob),
                    model_tag=scorer.tag,
                    model_version_id=scorer.version_id,
                )
            )
        clip.top_prob = float(prop.confidence)
        clip.informativeness = float(info)
        if clip.status == ClipStatus.PENDING:
            clip.status = ClipStatus.PROPOSED
    merged = segments.merge_segments(
        [c.start_s for c in clips],
        [c.end_s for c in clips],
        [p.top for p in ranked],
        [p.confidence for p in ranked],
    )
    with transaction.atomic():
        Proposal.objects.filter(clip__video=video).delete()
        Proposal.objects.bulk_create(rows, batch_size=2000)
        Clip.objects.bulk_update(
            clips, ["top_prob", "informativeness", "status"], batch_size=2000
        )
        video.segments.filter(source=SegmentSource.PROPOSED).delete()
        Segment.objects.bulk_create(
            Segment(
                video=video,
                label=labels[s.label],
                start_s=s.start,
                end_s=s.end,
                confidence=s.confidence,
                source=SegmentSource.PROPOSED,
                model_tag=scorer.tag,
            )
            for s in merged
        )


def propose_video(video: Video, loaded=None, scorer=None, labels=None) -> int:
    """Encode (once) and score every clip of a video; returns the clip count."""
    project = video.project
    labels = labels if labels is not None else project_labels(project)
    clips = list(video.clips.order_by("index"))
    if not labels or not clips:
        return 0
    loaded = loaded or load_project_clip(project)
    scorer = scorer or project_scorer(project, loaded, labels)
    emb = frame_embeddings(video, loaded)
    logits = scorer.logits(clip_embeddings(clips, emb))
    write_proposals(video, clips, labels, logits, scorer)
    return len(clips)


def repropose_project(project: Project, progress=None) -> int:
    """Re-score every ready video of a project from cached embeddings."""
    report = progress or (lambda fraction, message: None)
    labels = project_labels(project)
    videos = list(project.videos.filter(status=VideoStatus.READY))
    if not labels or not videos:
        return 0
    loaded = load_project_clip(project)
    scorer = project_scorer(project, loaded, labels)
    total = 0
    for i, video in enumerate(videos):
        total += propose_video(video, loaded, scorer, labels)
        report((i + 1) / len(videos), f"Re-scored {i + 1} of {len(videos)} videos")
    return total


def is_random_model(name: str) -> bool:
    """True when the model folder was made by ``make_dev_clip`` (random weights).

    Cheap (reads one small file), so every page can show the banner.
    """
    return clipml.looks_local(name) and clipml.is_random_dev_model(
        Path(name).expanduser()
    )
