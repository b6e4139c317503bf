"""Zero-shot (or live-model) action proposals from cached CLIP frame embeddings.

Frames are encoded once per (video, encoder fingerprint) and kept as float16
arrays, so editing labels or prompts only re-scores: it never decodes video
or runs the image encoder again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
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
from annotator.storage import media_path, onnx_cache_dir, write_atomically
from training.ml import clip as clipml
from training.ml import encoders, segments, zeroshot

TOP_K = 5
log = logging.getLogger(__name__)


def device() -> str:
    choice = settings.HARWEB_DEVICE
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_project_clip(project: Project) -> clipml.LoadedClip:
    return clipml.load_clip(project.clip_model_name, device=device())


# Encoders built by this process, by (weights, device, backend): switching the
# live version back and forth, or projects with different live versions, never
# rebuild one. ``_current`` is the last one handed out per (weights, device).
_encoders: dict[tuple[str, str, str], encoders.ImageEncoder] = {}
_current: dict[tuple[str, str], encoders.ImageEncoder] = {}
_failed: dict[tuple[str, str, str], float] = {}  # key -> monotonic time of failure
_build_lock = threading.Lock()
RETRY_FAILED_S = 60.0


def live_backend(project_id: int | None, loaded: clipml.LoadedClip, dev: str) -> str:
    """The live version's chosen backend, if this process can run it; else "auto".

    One indexed query per call (per video encoded), so a promotion is seen by
    every worker at its next video without a restart.
    """
    if project_id is None:
        return "auto"
    from training.models import ModelVersion

    row = (
        ModelVersion.objects.filter(project_id=project_id, is_live=True)
        .values_list("backend", "encoder_fingerprint")
        .first()
    )
    if row is None or not row[0] or row[1] != loaded.fingerprint:
        return "auto"
    runnable = set(encoders.default_preference(dev)) | {"fp32"}
    return row[0] if row[0] in runnable else "auto"


def image_encoder(
    loaded: clipml.LoadedClip, project_id: int | None = None
) -> encoders.ImageEncoder:
    """The encoder for the project's live backend, built once per process.

    While a new backend is being built, callers in other threads keep getting
    the current encoder (they never wait or fail); a backend that cannot be
    built is replaced by the current (or the parity-selected) encoder.
    """
    dev = device()
    key = (loaded.fingerprint, dev, live_backend(project_id, loaded, dev))
    encoder = _encoders.get(key)
    current = _current.get(key[:2])
    if encoder is None:
        if not _build_lock.acquire(blocking=current is None):
            return current  # another thread is building: serve the current one
        try:
            encoder = _encoders.get(key) or _build_encoder(loaded, key, current)
        finally:
            _build_lock.release()
    _current[key[:2]] = encoder
    return encoder


def _build_encoder(
    loaded: clipml.LoadedClip,
    key: tuple[str, str, str],
    current: encoders.ImageEncoder | None,
) -> encoders.ImageEncoder:
    """Build and remember the encoder for ``key``; on failure, fall back to
    the current one (or parity selection) and retry after RETRY_FAILED_S."""
    dev, backend = key[1], key[2]
    if loaded.device != dev:
        loaded = clipml.load_clip(loaded.name, device=dev)
    cache = onnx_cache_dir()
    if backend == "auto":
        encoder = encoders.build_image_encoder(loaded, device=dev, cache_dir=cache)
        # It also serves a live version that chose the same backend.
        _encoders.setdefault((*key[:2], encoder.backend), encoder)
        _encoders[key] = encoder
        return encoder
    if time.monotonic() - _failed.get(key, -math.inf) >= RETRY_FAILED_S:
        try:
            _encoders[key] = encoders.build_backend(
                loaded, backend, device=dev, cache_dir=cache
            )
            return _encoders[key]
        except Exception:
            log.exception("Cannot build the live backend %s; keeping the last", backend)
            _failed[key] = time.monotonic()
    if current is not None:
        return current
    return _build_encoder(loaded, (*key[:2], "auto"), None)


def forget_encoders() -> None:
    """Drop this process's encoders (tests, or after the model setting changes)."""
    with _build_lock:
        _encoders.clear()
        _current.clear()
        _failed.clear()


def embeddings_path(video: Video, fingerprint: str) -> Path:
    return media_path("embeddings", fingerprint, f"{video.pk}.npy")


def frame_embeddings(video: Video, loaded: clipml.LoadedClip) -> np.ndarray:
    """(N, D) float16 embeddings of the video's sampled frames, cached."""
    path = embeddings_path(video, loaded.fingerprint)
    if path.exists():
        return np.load(path)
    frames = SampledFrames.load(video.frames_path())
    emb = (
        image_encoder(loaded, video.project_id).encode(frames.frames).astype(np.float16)
    )
    write_atomically(path, lambda tmp: np.save(tmp, emb))
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
    write_atomically(path, lambda tmp: np.save(tmp, emb))
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
