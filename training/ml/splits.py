"""Deterministic train / held-out split of labelled clips.

Each clip's side is decided by a hash of (seed, clip id), not by its position in
the list, so a clip stays on the same side as more labels arrive and successive
model versions are compared on (mostly) the same held-out clips.

The one exception is the fix-up that keeps every label trainable: a label whose
examples all hashed to held-out gets the example closest to the threshold moved
to training. Once the label gains a training example through the hash, that
clip returns to held-out.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Hashable, Sequence


def hash_fraction(seed: int, clip_id: int) -> float:
    """Stable uniform number in [0, 1) for (seed, clip id), same on every run."""
    digest = hashlib.blake2b(f"{seed}:{clip_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def heldout_split(
    ids: Sequence[int],
    labels: Sequence[Hashable],
    *,
    fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[int], list[int]]:
    """Split clip ids into (train_ids, heldout_ids), both in input order.

    About ``fraction`` of the clips are held out. Every label keeps at least one
    training example, so a label with a single clip is never held out (the
    trainer could not learn it, and one held-out clip says little).
    """
    if len(ids) != len(labels):
        raise ValueError(f"got {len(ids)} ids but {len(labels)} labels")
    if len(set(ids)) != len(ids):
        raise ValueError("clip ids must be unique")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")

    score = {i: hash_fraction(seed, i) for i in ids}
    heldout = {i for i in ids if score[i] < fraction}

    by_label: dict[Hashable, list[int]] = defaultdict(list)
    for clip_id, label in zip(ids, labels, strict=True):
        by_label[label].append(clip_id)
    for members in by_label.values():
        if all(m in heldout for m in members):
            # Highest score = nearest the threshold; ties broken by id.
            heldout.discard(max(members, key=lambda m: (score[m], m)))

    train = [i for i in ids if i not in heldout]
    held = [i for i in ids if i in heldout]
    return train, held
