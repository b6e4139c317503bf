"""Choose a trained version's inference backend (Django side of ``ml.export``).

``optimize_version`` gathers the raw frames of the version's held-out clips,
lets ``training.ml.export.optimize`` measure and parity-check every backend,
and stores the table in ``ModelVersion.backends`` and the winner in
``ModelVersion.backend``. It never raises: a failure is recorded as a row of
the table and the version falls back to fp32, which is always correct.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from annotator import proposals
from annotator.media import SampledFrames
from annotator.models import Clip
from annotator.storage import onnx_cache_dir
from training import deploy
from training.ml import clip as clipml
from training.ml import export
from training.models import ModelVersion

log = logging.getLogger(__name__)


def clip_frames(
    clips: Iterable[Clip | int], max_clips: int = export.MAX_CLIPS
) -> np.ndarray:
    """(N, T, H, W, 3) uint8 sampled frames of up to ``max_clips`` clips
    (Clip rows or ids, in the order given)."""
    chosen = _clip_rows(list(clips)[:max_clips])
    by_video: dict[int, SampledFrames] = {}
    out = []
    for clip in chosen:
        if clip.video_id not in by_video:
            by_video[clip.video_id] = SampledFrames.load(clip.video.frames_path())
        frames = by_video[clip.video_id].frames
        out.append(frames[np.asarray(clip.frame_indices, dtype=np.int64)])
    return np.stack(out) if out else np.zeros((0, 1, 1, 1, 3), dtype=np.uint8)


def _clip_rows(clips: list[Clip | int]) -> list[Clip]:
    ids = [c for c in clips if not isinstance(c, Clip)]
    found = Clip.objects.select_related("video").in_bulk(ids) if ids else {}
    rows = [c if isinstance(c, Clip) else found.get(c) for c in clips]
    return [row for row in rows if row is not None]


def optimize_version(
    version: ModelVersion,
    clips: Sequence[Clip | int] | None = None,
    *,
    loaded: clipml.LoadedClip | None = None,
    head: Any = None,
    prefer: Sequence[str] | None = None,
    min_cosine: float = export.MIN_COSINE,
    min_agreement: float = export.MIN_AGREEMENT,
) -> ModelVersion:
    """Measure, choose and record the version's backend; never raises."""
    try:
        result = _optimize(
            version, clips, loaded, head, prefer, min_cosine, min_agreement
        )
        backend, table = result.backend, result.table()
    except Exception as exc:
        log.exception("Optimizing %s failed; serving it with fp32", version)
        backend, table = "fp32", failure_table(exc)
    ModelVersion.objects.filter(pk=version.pk).update(backend=backend, backends=table)
    version.backend, version.backends = backend, table
    return version


def _optimize(version, clips, loaded, head, prefer, min_cosine, min_agreement):
    loaded = loaded or clipml.load_clip(version.encoder_name, device=proposals.device())
    if loaded.fingerprint != version.encoder_fingerprint:
        raise ValueError(
            f"the CLIP weights changed since {version} was trained "
            f"({loaded.fingerprint[:8]} != {version.encoder_fingerprint[:8]})"
        )
    if head is None:
        head = deploy.load_head(version)[0]
    frames = clip_frames(clips or [])
    return export.optimize(
        loaded,
        head,
        frames if len(frames) else None,
        device=loaded.device,
        prefer=tuple(prefer) if prefer else None,
        min_cosine=min_cosine,
        min_agreement=min_agreement,
        cache_dir=onnx_cache_dir(),
    )


def failure_table(exc: BaseException) -> list[dict[str, Any]]:
    """The backends table of a version whose optimisation failed."""
    error = f"optimization failed: {type(exc).__name__}: {exc}"[:500]
    failed = export.BackendReport("optimize", error=error).to_dict()
    fallback = export.BackendReport("fp32", accepted=True, error=None).to_dict()
    return [failed, fallback]
