"""The labeling queue: which clip next, decisions, undo and reviewer agreement.

``next_clip_for`` must answer in a few milliseconds with tens of thousands of
clips, so it never loads a whole project's proposals:

* uncertainty strategies (entropy, margin, least confidence, balanced) take a
  bounded pool of the most informative free clips from the database (indexed
  ``Clip.informativeness``), rebuild their ``(pool, labels)`` probabilities
  from the Proposal rows and let ``annotator.active.rank_candidates`` order it;
* k-center keeps, per project and in memory, every clip's distance to the
  nearest labeled (or claimed) clip and updates it incrementally;
* the cold start (typical clips, until each label has a few examples) ranks a
  bounded sample once and walks that list until it is used up.

Clip embeddings (mean of the cached CLIP frame embeddings) are cached per
project behind a cheap key (ready videos and when they were processed).
Claims are single conditional UPDATEs (``Clip.claim_for``), so two annotators
never hold the same clip; a lost race just tries the next candidate.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone

from annotator import active
from annotator.access import EDITORS
from annotator.models import (
    LABELED,
    UNLABELED,
    ActionLabel,
    Annotation,
    Clip,
    ClipConflict,
    ClipStatus,
    Decision,
    DecisionError,
    Project,
    Proposal,
    VideoStatus,
)
from annotator.storage import media_path

__all__ = [
    "ClipConflict",
    "DecisionError",
    "Mode",
    "NothingToUndo",
    "agreement",
    "clear_caches",
    "clip_card",
    "decide",
    "forget_skip",
    "labeled_today",
    "next_clip_for",
    "remaining",
    "remember_skip",
    "resolve_label",
    "skipped_ids",
    "undo_last",
]

# How many free clips an uncertainty strategy ranks per request.
POOL_SIZE = 128
# Candidates tried, best first, before the whole ranking is redone.
RANK_K = 8
# Clusters of typical clips in the cold start, and the sample they come from.
COLD_K = 32
COLD_POOL_MAX = 2048
# Cold start lasts until every label has this many confirmed clips, or until
# this many clips per label are labeled (a label nobody uses must not keep a
# project in cold start forever).
COLD_MIN_PER_LABEL = 3
COLD_BUDGET_PER_LABEL = 10
# In-memory caches re-check their database key at most this often.
CACHE_CHECK_S = 5.0
# Labels, label counts and the "remaining" figure are reused this long.
FIGURES_TTL_S = 2.0
# k-center looks for clips labeled by others at most this often.
KCENTER_CHECK_S = 1.0
# Digits 1-9 pick a choice: at most nine buttons.
MAX_CHOICES = 9
# Edge nudge step in seconds ([ and ] keys).
EDGE_STEP_S = 0.25
# Label mode undoes these; a skip belongs to the mode it was made in.
_LABEL_DECISIONS = (Decision.ACCEPT, Decision.CORRECT, Decision.REJECT)


class Mode(StrEnum):
    LABEL = "label"
    REVIEW = "review"

    @property
    def statuses(self) -> tuple[str, ...]:
        """Clip statuses this mode works on: undecided, or decided (review)."""
        return LABELED if self == Mode.REVIEW else UNLABELED


class NothingToUndo(ClipConflict):
    """The user has no decision left to undo in this mode."""


# --------------------------------------------------------------------------
# in-memory caches (per process; every key starts with ``_identity``)


_lock = threading.Lock()  # guards the dicts below
_build_lock = threading.Lock()  # one embedding build at a time
_kcenter_lock = threading.Lock()
_cold_build_lock = threading.Lock()  # one cold-start list build at a time
_embeddings: dict[int, _EmbeddingEntry] = {}
_figures: dict[tuple, tuple[float, object]] = {}
_cold: dict[int, _ColdList] = {}
_kcenter: dict[int, _KCenter] = {}


def clear_caches() -> None:
    """Forget every in-memory queue cache (tests; after bulk data changes)."""
    with _lock:
        _embeddings.clear()
        _figures.clear()
        _cold.clear()
        _kcenter.clear()


def _identity(project: Project) -> tuple:
    # created_at and MEDIA_ROOT tell a re-created project (tests) from the old.
    return (project.pk, project.created_at, str(settings.MEDIA_ROOT))


def _ttl_cached(key: tuple, compute):
    """``compute()``, remembered for ``FIGURES_TTL_S`` (per process)."""
    now = time.monotonic()
    with _lock:
        hit = _figures.get(key)
    if hit is not None and now - hit[0] < FIGURES_TTL_S:
        return hit[1]
    value = compute()
    with _lock:
        _figures[key] = (now, value)
    return value


# --------------------------------------------------------------------------
# pools


def project_clips(project: Project) -> QuerySet[Clip]:
    return Clip.objects.filter(video__project=project)


def _free(now) -> Q:
    """Unclaimed or claim expired (own live claims come via ``_own_claims``)."""
    return Q(claimed_by__isnull=True) | Q(claimed_until__lt=now)


def label_pool(project: Project, user, exclude: Iterable[int] = ()) -> QuerySet[Clip]:
    """Clips waiting for a first decision that ``user`` could claim now."""
    now = timezone.now()
    return (
        project_clips(project)
        .filter(status__in=UNLABELED)
        .filter(_free(now))
        .exclude(pk__in=list(exclude))
    )


def _reviewed() -> Exists:
    return Exists(
        Annotation.objects.filter(
            clip=OuterRef("pk"), decision=Decision.REVIEW, undone_at__isnull=True
        )
    )


def _awaiting_review(project: Project, user) -> QuerySet[Clip]:
    """Clips someone else decided and nobody has given a second opinion on."""
    return (
        project_clips(project)
        .filter(status__in=LABELED)
        .exclude(labeled_by=user)
        .exclude(_reviewed())
    )


def review_pool(project: Project, user, exclude: Iterable[int] = ()) -> QuerySet[Clip]:
    """The clips awaiting ``user``'s second opinion that are free to claim."""
    now = timezone.now()
    return (
        _awaiting_review(project, user).filter(_free(now)).exclude(pk__in=list(exclude))
    )


def _own_claims(project: Project, user, exclude, mode: Mode) -> QuerySet[Clip]:
    statuses = mode.statuses
    return (
        project_clips(project)
        .filter(claimed_by=user, claimed_until__gt=timezone.now())
        .filter(status__in=statuses)
        .exclude(pk__in=list(exclude))
        .order_by("claimed_until", "id")
    )


def project_labels(project: Project) -> list[ActionLabel]:
    """Active labels by id, cached for ``FIGURES_TTL_S`` (dropped at once when
    a label of the project is saved in this process)."""
    return _ttl_cached(
        ("labels", *_identity(project)),
        lambda: list(project.labels.filter(is_active=True).order_by("id")),
    )


@receiver(post_save, sender=ActionLabel)
def _label_saved(sender, instance: ActionLabel, **kwargs) -> None:
    with _lock:
        for key in [k for k in _figures if k[:2] == ("labels", instance.project_id)]:
            del _figures[key]


def label_counts(project: Project, labels: list[ActionLabel]) -> np.ndarray:
    """Confirmed clips per label (aligned with ``labels``), cached briefly: the
    cold-start check and the balanced strategy need no exact figure."""

    def count() -> dict:
        return dict(
            project_clips(project)
            .filter(status=ClipStatus.ACCEPTED)
            .values_list("label_id")
            .annotate(n=Count("id"))
            .values_list("label_id", "n")
        )

    rows = _ttl_cached(("counts", *_identity(project)), count)
    return np.asarray([rows.get(lab.pk, 0) for lab in labels], dtype=np.int64)


def in_cold_start(counts: np.ndarray) -> bool:
    if counts.size == 0:
        return False
    if int(counts.sum()) >= COLD_BUDGET_PER_LABEL * counts.size:
        return False
    return active.needs_cold_start(counts, COLD_MIN_PER_LABEL)


# --------------------------------------------------------------------------
# clip embeddings, cached per project


@dataclass
class ProjectEmbeddings:
    """Unit-length mean CLIP embedding of every clip that has cached frames."""

    key: tuple
    ids: np.ndarray  # sorted clip ids, int64
    emb: np.ndarray  # (N, D) float32

    def rows(self, clip_ids) -> np.ndarray:
        """Row of each id (-1 where the clip has no embedding)."""
        ids = np.asarray(list(clip_ids), dtype=np.int64)
        if self.ids.size == 0 or ids.size == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids).clip(0, self.ids.size - 1)
        return np.where(self.ids[pos] == ids, pos, -1)


@dataclass
class _EmbeddingEntry:
    key: tuple
    value: ProjectEmbeddings | None
    checked_at: float


def _embedding_key(project: Project) -> tuple:
    videos = tuple(
        project.videos.filter(status=VideoStatus.READY)
        .order_by("id")
        .values_list("id", "processed_at")
    )
    try:
        folders = tuple(
            sorted(
                (e.name, e.stat().st_mtime_ns)
                for e in os.scandir(media_path("embeddings"))
            )
        )
    except FileNotFoundError:
        folders = ()
    return (*_identity(project), videos, folders)


def _embedding_files(video_ids: list[int]) -> dict[int, Path]:
    """The cached frame-embedding file of each video, one encoder for all.

    Files live under ``embeddings/<encoder fingerprint>/<video>.npy``; the
    fingerprint folder covering most of the videos (newest on a tie) wins, so
    clips embedded by two different encoders are never compared.
    """
    root = media_path("embeddings")
    if not root.is_dir():
        return {}
    wanted = {f"{v}.npy": v for v in video_ids}
    best: tuple[int, float] = (0, 0.0)
    chosen: dict[int, Path] = {}
    for folder in os.scandir(root):
        if not folder.is_dir():
            continue
        found = {
            wanted[e.name]: Path(e.path) for e in os.scandir(folder) if e.name in wanted
        }
        score = (len(found), folder.stat().st_mtime)
        if found and score > best:
            best, chosen = score, found
    return chosen


def _build_embeddings(key: tuple) -> ProjectEmbeddings | None:
    files = _embedding_files([v for v, _ in key[3]])
    ids: list[int] = []
    parts: list[np.ndarray] = []
    for video_id, path in sorted(files.items()):
        frames = np.load(path).astype(np.float32)
        rows = list(
            Clip.objects.filter(video_id=video_id)
            .order_by("id")
            .values_list("id", "frame_indices")
        )
        if not rows or frames.ndim != 2 or frames.shape[0] == 0:
            continue
        top = frames.shape[0] - 1
        parts.append(
            np.stack(
                [
                    frames[np.clip(np.asarray(fi or [0]), 0, top)].mean(0)
                    for _, fi in rows
                ]
            )
        )
        ids.extend(pk for pk, _ in rows)
    if not ids:
        return None
    emb = np.concatenate(parts).astype(np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    ids_arr = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids_arr, kind="stable")
    return ProjectEmbeddings(key=key, ids=ids_arr[order], emb=emb[order])


def project_embeddings(project: Project) -> ProjectEmbeddings | None:
    """Clip embeddings of a project, rebuilt only when its key changes.

    The key (a small query and a directory listing) is re-read at most every
    ``CACHE_CHECK_S``; a stale answer only means a few new clips wait.
    """
    now = time.monotonic()
    with _lock:
        entry = _embeddings.get(project.pk)
    if (
        entry is not None
        and entry.key[:3] == _identity(project)
        and now - entry.checked_at < CACHE_CHECK_S
    ):
        return entry.value
    key = _embedding_key(project)
    with _build_lock:
        with _lock:
            entry = _embeddings.get(project.pk)
        if entry is None or entry.key != key:
            entry = _EmbeddingEntry(key, _build_embeddings(key), now)
        entry.checked_at = now
        with _lock:
            _embeddings[project.pk] = entry
    return entry.value


# --------------------------------------------------------------------------
# ranking


def _pool_probs(pool: QuerySet[Clip], label_ids: list[int]):
    """Clip ids of ``pool`` and their ``(len, L)`` probabilities, one query.

    Only the top-k proposals are stored; labels outside a clip's top k share
    the remaining mass evenly, which keeps entropy and margins comparable.
    """
    col = {lab: j for j, lab in enumerate(label_ids)}
    rows = Proposal.objects.filter(clip_id__in=pool.values("pk")).values_list(
        "clip_id", "label_id", "probability", "clip__informativeness"
    )
    info: dict[int, float] = {}
    cells: list[tuple[int, int, float]] = []
    for clip_id, label_id, p, inf in rows:
        info[clip_id] = inf or 0.0
        j = col.get(label_id)
        if j is not None:
            cells.append((clip_id, j, p))
    # Most informative first, as the pool was chosen (ties by id).
    ids = sorted(info, key=lambda pk: (-info[pk], pk))
    row = {pk: i for i, pk in enumerate(ids)}
    probs = np.full((len(ids), len(label_ids)), np.nan)
    for clip_id, j, p in cells:
        probs[row[clip_id], j] = p
    known = np.nan_to_num(probs, nan=0.0)
    missing = np.isnan(probs)
    n_missing = missing.sum(axis=1, keepdims=True)
    rest = np.clip(1.0 - known.sum(axis=1, keepdims=True), 0.0, 1.0)
    fill = np.divide(rest, n_missing, out=np.zeros_like(rest), where=n_missing > 0)
    return ids, np.where(missing, fill, known)


def _uncertainty_ranking(
    project: Project, user, exclude, label_ids, counts, strategy: str
) -> list[int]:
    pool = label_pool(project, user, exclude).order_by("-informativeness", "id")[
        :POOL_SIZE
    ]
    ids, probs = _pool_probs(pool, label_ids)
    if not ids or not label_ids:
        return ids[:RANK_K]
    order = active.rank_candidates(
        strategy,
        probs=probs,
        emb=None,
        labeled_mask=None,
        label_counts=counts,
        k=RANK_K,
    )
    return [ids[i] for i in order]


def _available(project, user, exclude, ids: list[int]) -> list[int]:
    """``ids`` that are still free for ``user``, in the given order."""
    ok = set(
        label_pool(project, user, exclude)
        .filter(pk__in=ids)
        .values_list("pk", flat=True)
    )
    return [pk for pk in ids if pk in ok]


@dataclass
class _ColdList:
    """A typical-first ordering of a sample of clips, walked from ``cursor``."""

    key: tuple
    ids: list[int]
    cursor: int = 0


# Clips checked per step of the walk.
_COLD_WINDOW = 64


def typical_order(x: np.ndarray, k: int) -> np.ndarray:
    """Every row of ``x``, typical first: the ``cold_start_typical``
    representatives (largest cluster first), then round-robin over those
    clusters, each member ordered by closeness to its representative."""
    reps = active.cold_start_typical(x, k)
    if reps.size == 0:
        return reps
    sims = x @ x[reps].T
    group = sims.argmax(axis=1)
    closeness = sims[np.arange(x.shape[0]), group]
    by_group = np.lexsort((np.arange(x.shape[0]), -closeness, group))
    starts = np.searchsorted(group[by_group], np.arange(reps.size))
    turn = np.empty(x.shape[0], dtype=np.int64)
    turn[by_group] = np.arange(x.shape[0]) - starts[group[by_group]]
    return np.lexsort((group, turn)).astype(np.int64)


def _build_cold_list(project, user, exclude, emb, key) -> _ColdList | None:
    free = np.asarray(
        list(label_pool(project, user, exclude).values_list("pk", flat=True)),
        dtype=np.int64,
    )
    rows = emb.rows(free)
    free, rows = free[rows >= 0], rows[rows >= 0]
    if free.size == 0:
        return None
    if free.size > COLD_POOL_MAX:
        pick = np.sort(
            np.random.default_rng(project.pk).choice(
                free.size, COLD_POOL_MAX, replace=False
            )
        )
        free, rows = free[pick], rows[pick]
    order = typical_order(emb.emb[rows], min(COLD_K, free.size))
    return _ColdList(key=key, ids=[int(free[i]) for i in order])


def _cold_ranking(project, user, exclude, label_ids) -> list[int] | None:
    """Typical clips first; None without embeddings (or while another request
    builds the list: this one then uses the project's strategy)."""
    emb = project_embeddings(project)
    if emb is None:
        return None
    key = (emb.key, tuple(label_ids))
    with _lock:
        entry = _cold.get(project.pk)
    if entry is None or entry.key != key:
        if not _cold_build_lock.acquire(blocking=False):
            return None
        try:
            entry = _build_cold_list(project, user, exclude, emb, key)
        finally:
            _cold_build_lock.release()
        if entry is None:
            return None
        with _lock:
            _cold[project.pk] = entry
    # Walk past windows that are all taken (labeled clips never come back).
    while entry.cursor < len(entry.ids):
        window = entry.ids[entry.cursor : entry.cursor + _COLD_WINDOW]
        ranked = _available(project, user, exclude, window)
        if ranked:
            return ranked[:RANK_K]
        entry.cursor += _COLD_WINDOW
    return None


@dataclass
class _KCenter:
    """Cosine distance of every clip to its nearest labeled or claimed clip."""

    key: tuple
    min_dist: np.ndarray
    seen_until: object  # datetime: labels up to here are covered
    checked_at: float = 0.0  # monotonic time of the last look for new labels

    def cover(self, emb: ProjectEmbeddings, rows: np.ndarray) -> None:
        """Make ``rows`` centres (those already covered are skipped)."""
        rows = rows[rows >= 0]
        rows = rows[self.min_dist[rows] != -np.inf]
        for start in range(0, rows.size, 256):  # one matrix product per chunk
            sims = emb.emb @ emb.emb[rows[start : start + 256]].T
            np.minimum(self.min_dist, 1.0 - sims.max(axis=1), out=self.min_dist)
        self.min_dist[rows] = -np.inf


def _kcenter_state(project: Project, emb: ProjectEmbeddings) -> _KCenter:
    now = timezone.now()
    with _kcenter_lock:
        state = _kcenter.get(project.pk)
        # Rebuilt only for new clips; an undone label stays covered (its clip
        # goes straight back to the user who undid it anyway).
        if state is not None and state.key == emb.key:
            if time.monotonic() - state.checked_at < KCENTER_CHECK_S:
                return state  # claims are covered as they happen anyway
            state.checked_at = time.monotonic()  # one look per second
            since = state.seen_until
        else:
            state = _build_kcenter(project, emb, now)
            with _lock:
                _kcenter[project.pk] = state
            return state
    # Clips labeled since the last look become centres too (the query runs
    # outside the lock; only the array update is serialised).
    new = project_clips(project).filter(status__in=LABELED, labeled_at__gte=since)
    rows = emb.rows(new.values_list("pk", flat=True))
    with _kcenter_lock:
        state.cover(emb, rows)
        state.seen_until = max(state.seen_until, now - timedelta(seconds=2))
    return state


def _build_kcenter(project: Project, emb: ProjectEmbeddings, now) -> _KCenter:
    labeled = emb.rows(
        project_clips(project).filter(status__in=LABELED).values_list("pk", flat=True)
    )
    labeled = labeled[labeled >= 0]
    x = emb.emb
    if labeled.size:
        min_dist = 1.0 - active.max_similarity_to(x, x[labeled])
        min_dist[labeled] = -np.inf
    else:
        # Nothing covered yet: the most central clip goes first (above any
        # distance, which is at most 2), as in ``active.kcenter_greedy``.
        min_dist = 2.0 + x @ x.mean(axis=0)
    return _KCenter(
        key=emb.key,
        min_dist=min_dist.astype(np.float32),
        seen_until=now - timedelta(seconds=2),
        checked_at=time.monotonic(),
    )


def _kcenter_ranking(project, user, exclude) -> list[int] | None:
    emb = project_embeddings(project)
    if emb is None:
        return None
    state = _kcenter_state(project, emb)
    d = state.min_dist
    for width in (64, 512, d.size):
        width = min(width, d.size)
        top = (
            np.argpartition(-d, width - 1)[:width]
            if width < d.size
            else np.arange(d.size)
        )
        top = top[np.isfinite(d[top])]
        top = top[np.lexsort((top, -d[top]))]
        ranked = _available(project, user, exclude, [int(emb.ids[r]) for r in top])
        if ranked:
            return ranked[:RANK_K]
        if width == d.size:
            break
    return None


def _after_claim(project: Project, clip_id: int) -> None:
    """A claimed clip is as good as labeled for k-center's coverage."""
    if project.strategy != active.Strategy.KCENTER:
        return
    with _lock:
        state, entry = _kcenter.get(project.pk), _embeddings.get(project.pk)
    emb = entry.value if entry is not None else None
    if state is not None and emb is not None and state.key == emb.key:
        with _kcenter_lock:
            state.cover(emb, emb.rows([clip_id]))


def _ranking(project: Project, user, exclude) -> list[int]:
    labels = project_labels(project)
    label_ids = [lab.pk for lab in labels]
    counts = label_counts(project, labels)
    if in_cold_start(counts):
        ranked = _cold_ranking(project, user, exclude, label_ids)
        if ranked is not None:
            return ranked
    strategy = project.strategy
    if strategy == active.Strategy.KCENTER:
        ranked = _kcenter_ranking(project, user, exclude)
        if ranked is not None:
            return ranked
        strategy = active.Strategy.ENTROPY  # no embeddings cached yet
    if strategy == active.Strategy.RANDOM:
        return list(
            label_pool(project, user, exclude)
            .order_by("?")
            .values_list("pk", flat=True)[:RANK_K]
        )
    return _uncertainty_ranking(project, user, exclude, label_ids, counts, strategy)


def next_clip_for(
    user, project: Project, *, exclude: Iterable[int] = (), mode: Mode = Mode.LABEL
) -> Clip | None:
    """Claim and return the clip ``user`` should see next (None: queue empty).

    The user's own live claims come first (a reload resumes where they were);
    ``exclude`` holds clips the client already shows or prefetched, and the
    ones skipped this session.
    """
    exclude = set(exclude)
    statuses = mode.statuses
    own = _own_claims(project, user, exclude, mode).first()
    if own is not None and own.claim_for(user, statuses=statuses):
        return own
    for _ in range(4):
        if mode == Mode.REVIEW:
            ranked = list(
                review_pool(project, user, exclude)
                .order_by("?")
                .values_list("pk", flat=True)[:RANK_K]
            )
        else:
            ranked = _ranking(project, user, exclude)
        if not ranked:
            return None
        pk = Clip.claim_first(user, ranked, statuses=statuses)
        if pk is not None:
            if mode == Mode.LABEL:
                _after_claim(project, pk)
            return Clip.objects.select_related("video", "label", "labeled_by").get(
                pk=pk
            )
        # Every candidate was taken by someone faster: rank again without them.
        exclude.update(ranked)
    return None


def own_claimed_clip(user, project: Project, pk: int, mode: Mode) -> Clip | None:
    """Clip ``pk`` if ``user`` holds it (to show it again after an undo)."""
    statuses = mode.statuses
    clip = (
        project_clips(project)
        .select_related("video", "label", "labeled_by")
        .filter(pk=pk, claimed_by=user, status__in=statuses)
        .first()
    )
    if clip is not None and clip.claim_for(user, statuses=statuses):
        return clip
    return None


# --------------------------------------------------------------------------
# decisions


def resolve_label(
    project: Project, value, *, role: str | None, user=None, create: bool = False
) -> ActionLabel:
    """A label of ``project`` from an id or a name (case-insensitive).

    A merged label resolves to the one it was merged into. With ``create``,
    an unknown name becomes a new label, for admins and reviewers only.
    """
    if isinstance(value, bool) or value is None:
        raise DecisionError("label must be a label id or a label name.")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        label = ActionLabel.objects.filter(pk=int(value)).first()
        if label is None:
            raise DecisionError(f"Unknown label id {int(value)}.")
        if label.project_id != project.pk:
            raise DecisionError(
                f"Label {label.pk} belongs to another project, not {project.slug!r}."
            )
    elif isinstance(value, str):
        name = " ".join(value.split())
        if not name:
            raise DecisionError("The label name is empty.")
        if len(name) > ActionLabel._meta.get_field("name").max_length:
            raise DecisionError("That label name is too long (100 characters at most).")
        label = project.labels.filter(name__iexact=name).first()
        if label is None:
            if not create:
                raise DecisionError(f"Unknown label “{name}” in this project.")
            if role not in EDITORS:
                raise PermissionDenied("Only admins and reviewers can create labels.")
            from annotator.labels import create_label
            from annotator.services import queue_repropose

            label = create_label(project, name, user=user)
            queue_repropose(project)  # score the new label on every clip
            return label
    else:
        raise DecisionError("label must be a label id or a label name.")
    seen = set()
    while label.merged_into_id and label.pk not in seen:
        seen.add(label.pk)
        label = label.merged_into
    if not label.is_active:
        raise DecisionError(f"Label “{label.name}” is archived.")
    return label


def decide(
    user,
    clip: Clip,
    *,
    action: str,
    role: str | None,
    mode: Mode = Mode.LABEL,
    label: ActionLabel | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    duration_ms: int = 0,
) -> Annotation:
    """Record one decision from the page or the API.

    ``action`` is ``label`` (with ``label``), ``top`` (the first proposal; in
    reviewer mode: agree with the first decision), ``reject`` (none of these)
    or ``skip``. Reviewer mode needs an admin or reviewer.
    """
    edges = {"start_s": start_s, "end_s": end_s, "duration_ms": duration_ms}
    if action == "skip":
        return clip.skip(user, duration_ms=duration_ms)
    if mode == Mode.REVIEW:
        if role not in EDITORS:
            raise PermissionDenied("Only admins and reviewers give second opinions.")
        if action == "top":
            label = clip.label if clip.status == ClipStatus.ACCEPTED else None
        elif action == "reject":
            label = None
        elif action != "label" or label is None:
            raise DecisionError(f"Unknown action {action!r}.")
        return clip.review(user, label, **edges)
    if action == "top":
        top = clip.top_label_id
        if top is None:
            raise DecisionError("This clip has no proposal to accept.")
        project = clip.video.project
        label = next((lab for lab in project_labels(project) if lab.pk == top), None)
        if label is None:  # merged or archived since it was proposed
            label = resolve_label(project, top, role=role)
        return clip.accept(user, label, **edges)
    if action == "label":
        if label is None:
            raise DecisionError("Choose a label.")
        return clip.accept(user, label, **edges)
    if action == "reject":
        return clip.reject(user, **edges)
    raise DecisionError(f"Unknown action {action!r}.")


def _mode_q(mode: Mode) -> Q:
    if mode == Mode.REVIEW:
        return Q(decision=Decision.REVIEW) | Q(
            decision=Decision.SKIP, previous__status__in=list(LABELED)
        )
    return Q(decision__in=_LABEL_DECISIONS) | Q(
        decision=Decision.SKIP, previous__status__in=list(UNLABELED)
    )


def undo_last(user, project: Project, *, mode: Mode = Mode.LABEL) -> Annotation:
    """Undo ``user``'s latest decision in this mode; the clip is theirs again.

    Repeated calls walk further back. NothingToUndo when there is none,
    ClipConflict when the clip changed hands since.
    """
    ann = (
        Annotation.objects.filter(
            user=user, clip__video__project=project, undone_at__isnull=True
        )
        .filter(_mode_q(mode))
        .order_by("-id")
        .first()
    )
    if ann is None:
        raise NothingToUndo("Nothing to undo.")
    ann.undo()
    return ann


# --------------------------------------------------------------------------
# skipped clips, remembered per session and project (not shown again)

_SKIPPED_MAX = 500


def _skip_key(project: Project) -> str:
    return f"review_skipped:{project.pk}"


def skipped_ids(session: MutableMapping, project: Project) -> set[int]:
    return set(session.get(_skip_key(project), []))


def remember_skip(session: MutableMapping, project: Project, clip_id: int) -> None:
    ids = [i for i in session.get(_skip_key(project), []) if i != clip_id]
    session[_skip_key(project)] = [*ids, clip_id][-_SKIPPED_MAX:]


def forget_skip(session: MutableMapping, project: Project, clip_id: int) -> None:
    ids = session.get(_skip_key(project), [])
    if clip_id in ids:
        session[_skip_key(project)] = [i for i in ids if i != clip_id]


# --------------------------------------------------------------------------
# figures


def labeled_today(user, project: Project) -> int:
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    return (
        Annotation.objects.filter(
            user=user,
            clip__video__project=project,
            created_at__gte=start,
            undone_at__isnull=True,
        )
        .exclude(decision=Decision.SKIP)
        .count()
    )


def remaining(project: Project, user, mode: Mode = Mode.LABEL) -> int:
    """Clips left in the queue (cached for ``FIGURES_TTL_S``)."""
    if mode == Mode.REVIEW:
        return _ttl_cached(
            ("review-left", user.pk, *_identity(project)),
            lambda: _awaiting_review(project, user).count(),
        )
    return _ttl_cached(
        ("left", *_identity(project)),
        lambda: project_clips(project).filter(status__in=UNLABELED).count(),
    )


def agreement(project: Project) -> dict:
    """Second opinions given, how many agreed, and the share (None if none)."""
    reviews = Annotation.objects.filter(
        clip__video__project=project, decision=Decision.REVIEW, undone_at__isnull=True
    ).aggregate(n=Count("id"), agreed=Count("id", filter=Q(agrees=True)))
    n, agreed = reviews["n"], reviews["agreed"]
    return {"reviewed": n, "agreed": agreed, "rate": agreed / n if n else None}


# --------------------------------------------------------------------------
# what a page or API client needs to show a clip


def clip_card(clip: Clip, project: Project, labels: list[ActionLabel]) -> dict:
    """Choices (proposals in rank order, then the other labels) and geometry.

    ``labels`` are the project's active labels; merged or archived labels in
    old proposals are left out.
    """
    by_id = {lab.pk: lab for lab in labels}
    choices, seen = [], set()
    for p in clip.proposals.order_by("rank").values("label_id", "rank", "probability"):
        lab = by_id.get(p["label_id"])
        if lab is None or lab.pk in seen:
            continue
        seen.add(lab.pk)
        choices.append(
            {"label": lab, "rank": p["rank"], "probability": p["probability"]}
        )
    for lab in sorted(labels, key=lambda lab: lab.name.lower()):
        if lab.pk not in seen:
            choices.append({"label": lab, "rank": None, "probability": None})
    for i, ch in enumerate(choices):
        ch["key"] = str(i + 1) if i < MAX_CHOICES else ""
        ch["pct"] = 100.0 * ch["probability"] if ch["probability"] is not None else 0
    video = clip.video
    duration = video.duration or max(clip.end_s, 1e-6)
    top = choices[0] if choices and choices[0]["rank"] == 0 else None
    background = (
        top is not None
        and project.background_threshold > 0
        and (clip.top_prob or 0.0) < project.background_threshold
    )
    return {
        "clip": clip,
        "video": video,
        "choices": choices[:MAX_CHOICES],
        "top": top,
        "background": background,
        "src": reverse("video_media", args=[project.slug, video.pk, "proxy"])
        if video.proxy
        else "",
        "duration": duration,
        "left": 100.0 * clip.start_s / duration,
        "width": max(100.0 * (clip.end_s - clip.start_s) / duration, 0.4),
        "shown_at": int(time.time() * 1000),
    }
