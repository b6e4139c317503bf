"""Unit tests for the active-learning sampling strategies (pure numpy, no DB)."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.active import (
    Strategy,
    balanced_uncertainty,
    cold_start_typical,
    entropy_scores,
    kcenter_greedy,
    least_confidence_scores,
    margin_scores,
    needs_cold_start,
    rank_candidates,
)

WARM = np.array([5, 5, 5, 5])  # enough labels per class: no cold start


def _clusters(
    sizes: list[int], dim: int = 16, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated unit-norm clusters around orthogonal axes, plus labels."""
    rng = np.random.default_rng(seed)
    rows, owner = [], []
    for c, size in enumerate(sizes):
        center = np.zeros(dim)
        center[c] = 1.0
        rows.append(center + noise * rng.normal(size=(size, dim)))
        owner += [c] * size
    emb = np.vstack(rows)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), np.array(owner)


def _random_probs(n: int, n_labels: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n, n_labels)) * 2
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- scores


def test_entropy_picks_flattest_distribution() -> None:
    probs = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.34, 0.33, 0.33],  # flattest
            [0.60, 0.30, 0.10],
        ]
    )
    scores = entropy_scores(probs)
    assert scores.shape == (3,)
    assert int(np.argmax(scores)) == 1
    assert scores[1] == pytest.approx(np.log(3), abs=1e-3)
    top = rank_candidates(
        Strategy.ENTROPY,
        probs=probs,
        emb=None,
        labeled_mask=None,
        label_counts=None,
        k=1,
    )
    assert top.tolist() == [1]


def test_entropy_handles_zero_probabilities() -> None:
    scores = entropy_scores(np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    assert np.isfinite(scores).all()
    assert scores[0] == 0.0
    assert scores[1] == pytest.approx(np.log(2))


def test_margin_picks_closest_top_two() -> None:
    probs = np.array(
        [
            [0.50, 0.45, 0.05],  # top-2 gap 0.05: most ambiguous
            [0.40, 0.30, 0.30],  # gap 0.10 although flatter overall
            [0.80, 0.10, 0.10],
        ]
    )
    scores = margin_scores(probs)
    np.testing.assert_allclose(scores, [0.95, 0.90, 0.30])
    assert int(np.argmax(scores)) == 0
    # Entropy would rank row 1 first: margin really is a different criterion.
    assert int(np.argmax(entropy_scores(probs))) == 1


def test_least_confidence_picks_lowest_max() -> None:
    probs = np.array(
        [
            [0.70, 0.20, 0.10],
            [0.45, 0.45, 0.10],
            [0.40, 0.35, 0.25],  # lowest top probability
        ]
    )
    np.testing.assert_allclose(least_confidence_scores(probs), [0.30, 0.55, 0.60])
    top = rank_candidates(
        "least_confidence",
        probs=probs,
        emb=None,
        labeled_mask=None,
        label_counts=None,
        k=3,
    )
    assert top.tolist() == [2, 1, 0]


def test_scores_are_permutation_invariant_and_normalise_rows() -> None:
    row = np.array([0.5, 0.3, 0.2])
    probs = np.vstack([row, row[::-1], row[[1, 0, 2]], row * 4])  # last unnormalised
    for scorer in (entropy_scores, margin_scores, least_confidence_scores):
        scores = scorer(probs)
        assert np.all(scores == scores[0]), scorer.__name__


@pytest.mark.parametrize(
    "strategy", [Strategy.ENTROPY, Strategy.MARGIN, Strategy.LEAST_CONFIDENCE]
)
def test_ties_break_towards_lower_index(strategy: Strategy) -> None:
    flat = [1 / 3, 1 / 3, 1 / 3]
    sure = [0.9, 0.05, 0.05]
    probs = np.array([sure, flat, sure, flat, flat, sure])
    kwargs = {"emb": None, "labeled_mask": None, "label_counts": None}
    for k in (1, 2, 3, 4):
        top = rank_candidates(strategy, probs=probs, k=k, **kwargs)
        assert top.tolist() == [1, 3, 4, 0][:k]
    # Same input, same answer, however often it is asked.
    first = rank_candidates(strategy, probs=probs, k=5, **kwargs)
    for _ in range(3):
        np.testing.assert_array_equal(
            rank_candidates(strategy, probs=probs, k=5, **kwargs), first
        )


def test_probs_must_be_two_dimensional() -> None:
    with pytest.raises(ValueError):
        entropy_scores(np.array([0.5, 0.5]))


# ---------------------------------------------------------------- k-center


def test_kcenter_next_picks_land_in_uncovered_clusters() -> None:
    emb, owner = _clusters([25, 25, 25, 25])
    labeled = np.zeros(len(owner), dtype=bool)
    labeled[[0, 1, 2, 25, 26]] = True  # clusters 0 and 1 are covered
    picks = kcenter_greedy(emb, labeled, 2)
    assert sorted(owner[picks].tolist()) == [2, 3]
    assert not labeled[picks].any()


def test_kcenter_without_labels_starts_central_and_covers_all_clusters() -> None:
    emb, owner = _clusters([25, 25, 25, 25])
    picks = kcenter_greedy(emb, np.zeros(len(owner), dtype=bool), 4)
    assert sorted(owner[picks].tolist()) == [0, 1, 2, 3]
    centrality = emb @ emb.mean(axis=0)
    assert picks[0] == int(np.argmax(centrality))


def test_kcenter_returns_only_unlabeled_and_stops_when_exhausted() -> None:
    emb, owner = _clusters([5, 5])
    labeled = np.zeros(len(owner), dtype=bool)
    labeled[:7] = True
    picks = kcenter_greedy(emb, labeled, 50)
    assert sorted(picks.tolist()) == [7, 8, 9]
    assert kcenter_greedy(emb, np.ones(len(owner), dtype=bool), 3).size == 0


def test_kcenter_handles_duplicate_embeddings_without_repeats() -> None:
    emb = np.tile(np.eye(4, dtype=np.float32)[:1], (6, 1))  # six identical rows
    picks = kcenter_greedy(emb, np.zeros(6, dtype=bool), 6)
    assert sorted(picks.tolist()) == list(range(6))


def test_rank_kcenter_uses_labeled_rows_as_centers() -> None:
    emb, owner = _clusters([25, 25, 25, 25])
    labeled = owner < 2  # everything in clusters 0 and 1 is already labeled
    probs = _random_probs(len(owner), 4)
    picks = rank_candidates(
        "kcenter", probs=probs, emb=emb, labeled_mask=labeled, label_counts=WARM, k=2
    )
    assert sorted(owner[picks].tolist()) == [2, 3]


def test_kcenter_requires_embeddings() -> None:
    with pytest.raises(ValueError, match="embeddings"):
        rank_candidates(
            "kcenter",
            probs=_random_probs(5, 4),
            emb=None,
            labeled_mask=None,
            label_counts=WARM,
            k=2,
        )


# ---------------------------------------------------------------- balanced


def test_balanced_prefers_under_represented_predicted_label() -> None:
    # Rows 0 and 1 are equally uncertain; row 0 predicts the common label 0,
    # row 1 the rare label 2.
    probs = np.array(
        [
            [0.5, 0.1, 0.4],
            [0.1, 0.4, 0.5],
            [0.9, 0.05, 0.05],
        ]
    )
    counts = np.array([20, 5, 0])
    assert balanced_uncertainty(probs, counts, 1).tolist() == [1]
    # Plain entropy cannot tell rows 0 and 1 apart and takes the lower index.
    assert int(np.argmax(entropy_scores(probs))) == 0


def test_balanced_spreads_a_batch_over_rare_labels() -> None:
    # Three clips predicted as each of labels 0..2, all equally uncertain.
    row = np.array([0.6, 0.2, 0.2])
    probs = np.vstack([np.roll(row, lab) for lab in (0, 0, 0, 1, 1, 1, 2, 2, 2)])
    picks = balanced_uncertainty(probs, np.array([0, 0, 0]), 3)
    assert sorted(probs[picks].argmax(axis=1).tolist()) == [0, 1, 2]
    # A common label still gets its turn once the rare ones are "filled up".
    picks = balanced_uncertainty(probs, np.array([4, 0, 0]), 9)
    assert probs[picks[:2]].argmax(axis=1).tolist() != [0, 0]
    assert sorted(picks.tolist()) == list(range(9))


def test_balanced_still_ranks_by_uncertainty_within_a_label() -> None:
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3]])
    assert balanced_uncertainty(probs, np.array([1, 1]), 3).tolist() == [1, 2, 0]


def test_balanced_uses_rarity_even_for_confident_clips() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert balanced_uncertainty(probs, np.array([9, 9, 0]), 1).tolist() == [1]


def test_balanced_rejects_mismatched_counts() -> None:
    with pytest.raises(ValueError, match="label_counts"):
        balanced_uncertainty(_random_probs(4, 3), np.array([1, 2]), 2)


# ---------------------------------------------------------------- cold start


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cold_start_returns_one_typical_clip_per_cluster(seed: int) -> None:
    emb, owner = _clusters([40, 30, 20, 10], seed=seed)
    picks = cold_start_typical(emb, 4, seed=seed)
    # One per cluster, largest cluster first.
    assert owner[picks].tolist() == [0, 1, 2, 3]
    # "Typical": each pick is its cluster's member nearest the cluster mean.
    for pick in picks:
        members = np.flatnonzero(owner == owner[pick])
        center = emb[members].mean(axis=0)
        dists = np.linalg.norm(emb[members] - center, axis=1)
        assert pick == members[int(np.argmin(dists))]


def test_cold_start_is_seeded() -> None:
    emb = np.random.default_rng(7).normal(size=(300, 8))
    a = cold_start_typical(emb, 10, seed=3)
    np.testing.assert_array_equal(a, cold_start_typical(emb, 10, seed=3))
    assert len(set(a.tolist())) == 10


def test_cold_start_with_duplicates_and_large_k() -> None:
    emb = np.repeat(np.eye(3), 4, axis=0)  # 3 distinct points, 4 copies each
    picks = cold_start_typical(emb, 20, seed=0)
    assert sorted(picks.tolist()) == list(range(12))


@pytest.mark.parametrize(
    ("counts", "min_per_label", "expected"),
    [
        ([3, 3, 3], 3, False),
        ([3, 2, 3], 3, True),
        ([0, 10, 10], 3, True),
        ([1, 1, 1], 1, False),
        ([5, 4], 5, True),
        ([], 3, True),
    ],
)
def test_needs_cold_start_thresholds(
    counts: list[int], min_per_label: int, expected: bool
) -> None:
    assert needs_cold_start(np.array(counts), min_per_label) is expected


def test_needs_cold_start_default_minimum_is_three() -> None:
    assert needs_cold_start(np.array([2, 9])) is True
    assert needs_cold_start(np.array([3, 9])) is False


def test_rank_uses_cold_start_until_labels_suffice() -> None:
    emb, owner = _clusters([40, 30, 20, 10])
    probs = _random_probs(len(owner), 4)
    kwargs = {"probs": probs, "emb": emb, "labeled_mask": None, "k": 4}
    cold = rank_candidates("entropy", label_counts=np.array([3, 3, 2, 3]), **kwargs)
    np.testing.assert_array_equal(cold, cold_start_typical(emb, 4, seed=0))
    warm = rank_candidates("entropy", label_counts=np.array([3, 3, 3, 3]), **kwargs)
    np.testing.assert_array_equal(warm, np.argsort(-entropy_scores(probs))[:4])
    # A lower threshold ends the cold start earlier.
    low = rank_candidates(
        "entropy", label_counts=np.array([3, 3, 2, 3]), cold_start_min=2, **kwargs
    )
    np.testing.assert_array_equal(low, warm)


def test_rank_cold_start_skips_labeled_rows_and_needs_embeddings() -> None:
    emb, owner = _clusters([40, 30, 20, 10])
    probs = _random_probs(len(owner), 4)
    labeled = np.zeros(len(owner), dtype=bool)
    labeled[:40] = True  # the whole biggest cluster is done
    zeros = np.zeros(4)
    picks = rank_candidates(
        "margin", probs=probs, emb=emb, labeled_mask=labeled, label_counts=zeros, k=3
    )
    assert owner[picks].tolist() == [1, 2, 3]
    # Without embeddings the cold start cannot run: the strategy decides.
    no_emb = rank_candidates(
        "margin", probs=probs, emb=None, labeled_mask=labeled, label_counts=zeros, k=3
    )
    np.testing.assert_array_equal(
        no_emb, 40 + np.argsort(-margin_scores(probs[40:]))[:3]
    )


# ---------------------------------------------------------------- random


def test_random_is_seeded_and_deterministic() -> None:
    probs = _random_probs(200, 4)
    kwargs = {"probs": probs, "emb": None, "labeled_mask": None, "label_counts": WARM}
    a = rank_candidates("random", k=10, seed=42, **kwargs)
    b = rank_candidates("random", k=10, seed=42, **kwargs)
    c = rank_candidates("random", k=10, seed=43, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 10


# ---------------------------------------------------------------- dispatch


def test_rank_dispatches_to_each_strategy() -> None:
    emb, owner = _clusters([10, 10, 10, 10])
    probs = _random_probs(len(owner), 4, seed=3)
    k = 5

    def rank(strategy: str) -> list[int]:
        return rank_candidates(
            strategy, probs=probs, emb=emb, labeled_mask=None, label_counts=WARM, k=k
        ).tolist()

    assert rank("entropy") == np.argsort(-entropy_scores(probs))[:k].tolist()
    assert rank("margin") == np.argsort(-margin_scores(probs))[:k].tolist()
    assert (
        rank("least_confidence")
        == np.argsort(-least_confidence_scores(probs))[:k].tolist()
    )
    no_labels = np.zeros(len(owner), dtype=bool)
    assert rank("kcenter") == kcenter_greedy(emb, no_labels, k).tolist()
    assert rank("balanced") == balanced_uncertainty(probs, WARM, k).tolist()
    with pytest.raises(ValueError):
        rank("no-such-strategy")


def test_rank_excludes_labeled_rows_for_uncertainty() -> None:
    probs = np.array([[1 / 3] * 3, [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    picks = rank_candidates(
        "entropy",
        probs=probs,
        emb=None,
        labeled_mask=np.array([True, False, False]),
        label_counts=None,
        k=3,
    )
    assert picks.tolist() == [1, 2]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_k_larger_than_n_returns_every_candidate_once(strategy: Strategy) -> None:
    emb, owner = _clusters([3, 4])
    n = len(owner)
    labeled = np.zeros(n, dtype=bool)
    labeled[[0, 4]] = True
    picks = rank_candidates(
        strategy,
        probs=_random_probs(n, 4),
        emb=emb,
        labeled_mask=labeled,
        label_counts=WARM,
        k=100,
    )
    assert sorted(picks.tolist()) == np.flatnonzero(~labeled).tolist()


@pytest.mark.parametrize("strategy", list(Strategy))
@pytest.mark.parametrize("k", [0, 1, 7, 50])
@pytest.mark.parametrize("cold", [False, True])
def test_results_are_in_bounds_and_unique(
    strategy: Strategy, k: int, cold: bool
) -> None:
    rng = np.random.default_rng(k)
    n = 60
    emb = rng.normal(size=(n, 32))
    labeled = rng.random(n) < 0.3
    counts = np.zeros(4) if cold else WARM
    picks = rank_candidates(
        strategy,
        probs=_random_probs(n, 4, seed=k),
        emb=emb,
        labeled_mask=labeled,
        label_counts=counts,
        k=k,
        seed=k,
    )
    assert picks.dtype == np.int64
    assert len(picks) == min(k, int((~labeled).sum()))
    assert len(set(picks.tolist())) == len(picks)
    assert ((picks >= 0) & (picks < n)).all()
    assert not labeled[picks].any()


def test_empty_candidate_pool() -> None:
    picks = rank_candidates(
        "entropy",
        probs=np.empty((0, 3)),
        emb=None,
        labeled_mask=None,
        label_counts=None,
        k=5,
    )
    assert picks.size == 0


@pytest.mark.parametrize("strategy", list(Strategy))
def test_ten_thousand_candidates_give_k_distinct_picks(strategy: Strategy) -> None:
    # Timing lives in bench/review.py; this checks the large case is correct.
    n, n_labels, dim = 10_000, 20, 512
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    probs = _random_probs(n, n_labels)
    picks = rank_candidates(
        strategy,
        probs=probs,
        emb=emb,
        labeled_mask=None,
        label_counts=np.full(n_labels, 10),
        k=20,
    )
    assert len(picks) == 20
    assert len(set(picks.tolist())) == 20
    assert picks.min() >= 0 and picks.max() < n
