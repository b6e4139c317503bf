"""Active-learning sampling strategies: which unlabeled clips to show next.

Pure numpy on purpose: the web request that builds the labeling queue calls this
on every refresh, so it must be fast, deterministic and testable without Django.

Conventions shared by every function:

* ``probs`` is an ``(N, L)`` matrix of per-clip label probabilities and ``emb``
  an ``(N, D)`` matrix of clip embeddings (CLIP features); row ``i`` of each is
  the same clip.
* Returned arrays are ``int64`` row indices, most informative first, without
  duplicates and never longer than the number of selectable rows.
* Ties are broken towards the lower row index, so a queue does not reshuffle
  between two requests that see the same model outputs.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = [
    "Strategy",
    "balanced_uncertainty",
    "cold_start_typical",
    "entropy_scores",
    "kcenter_greedy",
    "least_confidence_scores",
    "margin_scores",
    "max_similarity_to",
    "needs_cold_start",
    "rank_candidates",
]

# k-means for the cold start is fitted on at most this many rows: the centroids
# of two thousand CLIP vectors are as good as those of all of them for the small
# k of a labeling batch, and the fit stays in tens of milliseconds at any N.
_KMEANS_MAX_FIT_ROWS = 2048
_KMEANS_MAX_ITER = 10
# The labeled-set distance matrix is built in slices of this many labeled rows
# so that memory stays at N x chunk floats however many clips are labeled.
_DIST_CHUNK = 1024


class Strategy(StrEnum):
    """Names of the sampling strategies, as stored in project settings."""

    ENTROPY = "entropy"
    MARGIN = "margin"
    LEAST_CONFIDENCE = "least_confidence"
    KCENTER = "kcenter"
    BALANCED = "balanced"
    RANDOM = "random"


# --------------------------------------------------------------------------
# helpers


def _as_probs(probs: np.ndarray) -> np.ndarray:
    """Return ``probs`` as float64 rows that sum to one.

    Model outputs arrive as float16/float32 softmaxes that do not sum exactly to
    one (or occasionally contain tiny negatives after export), and entropy is
    only comparable across clips on properly normalised rows.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, L), got shape {p.shape}")
    p = np.clip(p, 0.0, None)
    total = p.sum(axis=1, keepdims=True)
    # An all-zero row carries no information: treat it as maximally uncertain.
    uniform = 1.0 / max(p.shape[1], 1)
    return np.divide(p, total, out=np.full_like(p, uniform), where=total > 0)


def _normalise(emb: np.ndarray) -> np.ndarray:
    """Return float32 unit-length rows; zero rows stay zero.

    Callers are meant to pass normalised embeddings, but re-normalising costs a
    few milliseconds and protects the cosine geometry from an upstream slip.
    """
    x = np.asarray(emb, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"emb must be 2-D (N, D), got shape {x.shape}")
    # einsum avoids the temporary of x * x that np.linalg.norm allocates.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    if np.allclose(norms, 1.0, atol=1e-4):
        return x  # already unit length: skip a 20 MB copy
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first, lower index on ties.

    ``argpartition`` alone picks arbitrarily among values tied at the cut-off,
    so every row tied with the k-th score is kept and the final order comes
    from a lexicographic sort on (score desc, index asc).
    """
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n = s.shape[0]
    k = min(max(int(k), 0), n)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < n:
        cut = s[np.argpartition(-s, k - 1)[:k]].min()
        cand = np.flatnonzero(s >= cut)
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -s[cand]))[:k]
    return cand[order].astype(np.int64)


def max_similarity_to(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Max cosine similarity of each row of ``x`` to any row of ``centers``."""
    best = np.full(x.shape[0], -np.inf, dtype=np.float32)
    for start in range(0, centers.shape[0], _DIST_CHUNK):
        sims = x @ centers[start : start + _DIST_CHUNK].T
        np.maximum(best, sims.max(axis=1), out=best)
    return best


def _label_counts(label_counts: np.ndarray | None, n_labels: int) -> np.ndarray:
    if label_counts is None:
        return np.zeros(n_labels, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64).reshape(-1)
    if counts.shape[0] != n_labels:
        raise ValueError(
            f"label_counts has {counts.shape[0]} entries but probs has "
            f"{n_labels} label columns"
        )
    return counts


# --------------------------------------------------------------------------
# uncertainty scores (higher = more informative)


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row (nats): the flatter, the higher."""
    # Sorting each row first makes the sum order independent of label order, so
    # rows that are permutations of one another tie exactly instead of differing
    # in the last bit and ranking by accident.
    p = np.sort(_as_probs(probs), axis=1)
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logp).sum(axis=1)


def _top_two(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second-largest value of each row (0 when L == 1)."""
    if p.shape[1] == 0:
        zeros = np.zeros(p.shape[0])
        return zeros, zeros
    if p.shape[1] == 1:
        return p[:, 0], np.zeros(p.shape[0])
    # Partition is O(L) per row, cheaper than a full sort for the top two.
    part = np.partition(p, p.shape[1] - 2, axis=1)
    return part[:, -1], part[:, -2]


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """``1 - (p1 - p2)``: high when the two best labels are nearly tied."""
    p1, p2 = _top_two(_as_probs(probs))
    return 1.0 - (p1 - p2)


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """``1 - p1``: high when the model's best guess is weak."""
    p1, _ = _top_two(_as_probs(probs))
    return 1.0 - p1


# --------------------------------------------------------------------------
# selection strategies


def kcenter_greedy(emb: np.ndarray, labeled_mask: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center (Sener & Savarese, 2018) on cosine distance.

    Repeatedly picks the unlabeled clip farthest from everything labeled or
    already picked, so the batch covers regions of embedding space the labeled
    set does not. Without labeled clips the first pick is the clip closest to
    the mean embedding, a stable and representative anchor.

    Returns indices into ``emb`` of unlabeled rows only.
    """
    x = _normalise(emb)
    n = x.shape[0]
    labeled = np.asarray(labeled_mask, dtype=bool).reshape(-1)
    if labeled.shape[0] != n:
        raise ValueError("labeled_mask must have one entry per embedding row")
    k = min(max(int(k), 0), int(n - labeled.sum()))
    picks = np.empty(k, dtype=np.int64)
    if k == 0:
        return picks

    # Taken rows (labeled or picked) sit at -inf, not 0: a near-duplicate of a
    # labeled clip can be at distance ~0, or just below from rounding, and must
    # still outrank them.
    if labeled.any():
        # Labeled rows are never picked, so only unlabeled rows need distances.
        min_dist = np.full(n, -np.inf, dtype=np.float32)
        min_dist[~labeled] = 1.0 - max_similarity_to(x[~labeled], x[labeled])
        start = 0
    else:
        # Nothing covered yet: seed with the most central clip.
        picks[0] = int(np.argmax(x @ x.mean(axis=0)))
        min_dist = 1.0 - x @ x[picks[0]]
        min_dist[picks[0]] = -np.inf
        start = 1

    for j in range(start, k):
        idx = int(np.argmax(min_dist))
        picks[j] = idx
        # Running minimum: one N x D mat-vec per pick instead of a full matrix.
        np.minimum(min_dist, 1.0 - x @ x[idx], out=min_dist)
        min_dist[idx] = -np.inf
    return picks


def balanced_uncertainty(
    probs: np.ndarray, label_counts: np.ndarray, k: int
) -> np.ndarray:
    """Uncertain clips whose predicted label is under-represented.

    Each clip scores ``u / (1 + c)``, where ``u`` is its entropy normalised to
    [0, 1] and ``c`` the number of confirmed clips of its predicted label, so a
    rare action beats a common one at equal uncertainty. After every pick ``c``
    of that label grows by one, which spreads a batch over the rare labels
    instead of spending it all on the single rarest one. Equal scores go to the
    lower label id.
    """
    p = _as_probs(probs)
    n, n_labels = p.shape
    k = min(max(int(k), 0), n)
    if k == 0 or n_labels == 0:
        return np.empty(0, dtype=np.int64)
    counts = _label_counts(label_counts, n_labels).copy()
    u = entropy_scores(p) / np.log(n_labels) if n_labels > 1 else np.ones(n)
    pred = p.argmax(axis=1)

    # Group rows by predicted label, most uncertain first inside each group; the
    # greedy loop then only compares the L group heads, O(k * L) in total.
    order = np.lexsort((np.arange(n), -u, pred))
    labels = np.arange(n_labels)
    head = np.searchsorted(pred[order], labels, side="left")
    end = np.searchsorted(pred[order], labels, side="right")

    picks = np.empty(k, dtype=np.int64)
    for j in range(k):
        has_more = head < end
        head_u = np.where(has_more, u[order[np.minimum(head, n - 1)]], -np.inf)
        # The epsilon lets rarity decide between fully confident clips (u == 0)
        # instead of all of them scoring exactly zero.
        lab = int(np.argmax((head_u + 1e-9) / (1.0 + counts)))
        picks[j] = order[head[lab]]
        head[lab] += 1
        counts[lab] += 1
    return picks


def _kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; as in scikit-learn).

    Each step draws a few D^2-weighted candidates and keeps the one that lowers
    the total squared distance most: plain k-means++ puts two seeds in one
    cluster often enough (a few percent per step) to miss a whole kind of
    action, and a few Lloyd steps rarely repair that.
    """
    n = x.shape[0]
    n_trials = 2 + int(np.log(k))
    sq = np.einsum("ij,ij->i", x, x).astype(np.float64)

    def sq_dist(rows: np.ndarray) -> np.ndarray:
        # Expanded form: a matrix product instead of an (n, D) temporary.
        return np.maximum(sq[rows, None] - 2.0 * (x[rows] @ x.T) + sq, 0.0)

    picked = np.empty(k, dtype=np.int64)
    picked[0] = rng.integers(n)
    d2 = sq_dist(picked[:1])[0]
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:
            # Only duplicates of chosen seeds remain: any row will do.
            picked[j] = rng.integers(n)
            continue
        trials = rng.choice(n, size=n_trials, p=d2 / total)
        trial_d2 = np.minimum(d2, sq_dist(trials))
        best = int(np.argmin(trial_d2.sum(axis=1)))
        picked[j] = trials[best]
        d2 = trial_d2[best]
    return x[picked].copy()


def _assign(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of each row and the squared distance to it."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, as one matrix product.
    d2 = (
        (x * x).sum(axis=1, keepdims=True)
        - 2.0 * (x @ centers.T)
        + (centers * centers).sum(axis=1)
    )
    nearest = d2.argmin(axis=1)
    return nearest, d2[np.arange(x.shape[0]), nearest]


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A few Lloyd iterations from k-means++ seeds; returns the centroids."""
    centers = _kmeans_pp_init(x, k, rng)
    for _ in range(_KMEANS_MAX_ITER):
        nearest, _ = _assign(x, centers)
        sizes = np.bincount(nearest, minlength=k)
        # One-hot product instead of np.add.at: a BLAS call, not a Python-speed
        # scatter over thousands of 512-wide rows.
        onehot = np.zeros((k, x.shape[0]), dtype=x.dtype)
        onehot[nearest, np.arange(x.shape[0])] = 1.0
        sums = onehot @ x
        # An emptied cluster keeps its old centroid rather than becoming NaN.
        new = np.where(
            sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], centers
        )
        if np.allclose(new, centers, atol=1e-6):
            break
        centers = new.astype(x.dtype)
    return centers


def cold_start_typical(emb: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Typical clips for a cold start, before the model's scores mean anything.

    Clusters the embeddings into ``k`` groups (seeded k-means++ plus a few Lloyd
    steps, fitted on a subsample for large N) and returns, per cluster, the
    member nearest its centroid, largest cluster first: the first clips a user
    labels are then the most common kinds of action, not outliers.
    """
    x = _normalise(emb)
    n = x.shape[0]
    k = min(max(int(k), 0), n)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit_rows = (
        np.sort(rng.choice(n, _KMEANS_MAX_FIT_ROWS, replace=False))
        if n > _KMEANS_MAX_FIT_ROWS
        else np.arange(n)
    )
    centers = _kmeans(x[fit_rows], k, rng)

    # Sizes and representatives come from all rows, not only the fitted sample.
    nearest, d2 = _assign(x, centers)
    sizes = np.bincount(nearest, minlength=k)
    clusters = np.flatnonzero(sizes)
    # Nearest member per cluster: sort by (cluster, distance, index), take firsts.
    order = np.lexsort((np.arange(n), d2, nearest))
    firsts = np.searchsorted(nearest[order], clusters)
    reps = order[firsts]
    picks = reps[np.lexsort((reps, -sizes[clusters]))].astype(np.int64)

    if picks.shape[0] < k:
        # Fewer non-empty clusters than asked (duplicate-heavy data): top up
        # with the clips farthest from those already chosen.
        taken = np.zeros(n, dtype=bool)
        taken[picks] = True
        picks = np.concatenate([picks, kcenter_greedy(x, taken, k - picks.shape[0])])
    return picks


def needs_cold_start(label_counts: np.ndarray, min_per_label: int = 3) -> bool:
    """True while some label has fewer than ``min_per_label`` confirmed clips.

    Until every label has a few examples the classifier's probabilities are not
    trustworthy enough to rank by, so typical clips are sampled instead.
    """
    counts = np.asarray(label_counts).reshape(-1)
    # No labels defined yet: nothing to trust either.
    return counts.size == 0 or bool((counts < min_per_label).any())


def rank_candidates(
    strategy: Strategy | str,
    *,
    probs: np.ndarray,
    emb: np.ndarray | None,
    labeled_mask: np.ndarray | None,
    label_counts: np.ndarray | None,
    k: int,
    seed: int = 0,
    cold_start_min: int = 3,
) -> np.ndarray:
    """Top-``k`` row indices to label next, most informative first.

    Rows marked in ``labeled_mask`` are never returned; k-center uses them as
    already-covered centers (pass ``None`` when every row is a candidate).
    While ``needs_cold_start(label_counts)`` holds and embeddings are given,
    typical clips are returned whatever the strategy. ``label_counts=None``
    skips that check (and counts as all-zero for the balanced strategy).
    """
    strategy = Strategy(strategy)
    p = _as_probs(probs)
    n = p.shape[0]
    mask = (
        np.zeros(n, dtype=bool)
        if labeled_mask is None
        else np.asarray(labeled_mask, dtype=bool).reshape(-1)
    )
    if mask.shape[0] != n:
        raise ValueError("labeled_mask must have one entry per probs row")
    if emb is not None and np.shape(emb)[0] != n:
        raise ValueError("emb must have one row per probs row")
    cand = np.flatnonzero(~mask)
    k = min(max(int(k), 0), cand.shape[0])
    if k == 0:
        return np.empty(0, dtype=np.int64)

    cold = label_counts is not None and needs_cold_start(label_counts, cold_start_min)
    if cold and emb is not None:
        # Skip the fancy-index copy of the whole matrix when nothing is labeled.
        pool = np.asarray(emb) if cand.shape[0] == n else np.asarray(emb)[cand]
        return cand[cold_start_typical(pool, k, seed)]
    return _dispatch(strategy, p, emb, mask, cand, label_counts, k, seed)


def _dispatch(
    strategy: Strategy,
    p: np.ndarray,
    emb: np.ndarray | None,
    mask: np.ndarray,
    cand: np.ndarray,
    label_counts: np.ndarray | None,
    k: int,
    seed: int,
) -> np.ndarray:
    """Run one strategy; ``cand`` holds the selectable rows, ``1 <= k <= len``."""
    if strategy is Strategy.RANDOM:
        rng = np.random.default_rng(seed)
        return rng.choice(cand, size=k, replace=False).astype(np.int64)
    if strategy is Strategy.KCENTER:
        if emb is None:
            raise ValueError("the kcenter strategy needs embeddings")
        # Full emb + mask, so labeled clips count as covered centers.
        return kcenter_greedy(emb, mask, k)
    if strategy is Strategy.BALANCED:
        counts = _label_counts(label_counts, p.shape[1])
        return cand[balanced_uncertainty(p[cand], counts, k)]
    scorer = {
        Strategy.ENTROPY: entropy_scores,
        Strategy.MARGIN: margin_scores,
        Strategy.LEAST_CONFIDENCE: least_confidence_scores,
    }[strategy]
    return cand[_top_k(scorer(p[cand]), k)]
