"""Zero-shot action scoring: prompt ensembles, clip pooling and proposals.

Each label prompt (e.g. "waving") is expanded with the CLIP paper's video
templates, embedded, and averaged into one text embedding per label. Clips are
scored by scaled cosine similarity against those embeddings; a clip whose best
probability is below a threshold is proposed as background.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.ml.clip import LoadedClip
from training.ml.encoders import encode_texts

# CLIP paper (openai/CLIP data/prompts.md) templates, in their published order.
_MEDIA = ("photo", "video", "example", "demonstration")
_HOW = ("", "using ", "doing ", "during ", "performing ", "practicing ")

# Kinetics-700: "a photo of {}." then "a photo of a person {how}{}." per medium.
KINETICS_TEMPLATES: tuple[str, ...] = tuple(
    t
    for medium in _MEDIA
    for t in (
        f"a {medium} of {{}}.",
        *(f"a {medium} of a person {how}{{}}." for how in _HOW),
    )
)

# UCF101: every medium x {a, the} person, grouped by how.
UCF101_TEMPLATES: tuple[str, ...] = tuple(
    f"a {medium} of {article} person {how}{{}}."
    for how in _HOW
    for article in ("a", "the")
    for medium in _MEDIA
)

# Union, first-seen order (the 24 "a person" templates appear in both).
DEFAULT_TEMPLATES: tuple[str, ...] = tuple(
    dict.fromkeys(KINETICS_TEMPLATES + UCF101_TEMPLATES)
)


def label_text_embeddings(
    loaded: LoadedClip,
    prompts: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> np.ndarray:
    """(L, D) ensemble embeddings: mean of normalised templates, renormalised."""
    if not prompts:
        return np.zeros((0, loaded.embed_dim), dtype=np.float32)
    templates = list(templates) or ["{}"]
    texts = [t.format(p) for p in prompts for t in templates]
    emb = encode_texts(loaded, texts).reshape(len(prompts), len(templates), -1)
    return _normalise(emb.mean(axis=1))


def text_cache_key(
    fingerprint: str, prompts: Sequence[str], templates: Sequence[str]
) -> str:
    """Stable key for cached label embeddings (model, prompts and templates)."""
    payload = json.dumps([fingerprint, list(prompts), list(templates)])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def clip_features_mean(frame_emb: np.ndarray) -> np.ndarray:
    """(N, T, D) per-frame embeddings -> (N, D) normalised temporal mean.

    The simplest temporal head; a trained one replaces it later.
    """
    return _normalise(np.asarray(frame_emb, dtype=np.float32).mean(axis=1))


def score(
    clip_feats: np.ndarray, text_emb: np.ndarray, logit_scale: float
) -> np.ndarray:
    """(N, D) x (L, D) -> (N, L) logits: scaled cosine similarity."""
    return (logit_scale * (clip_feats @ text_emb.T)).astype(np.float32)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class ClipProposal:
    """What the model suggests for one clip."""

    ranked: list[tuple[int, float, float]]  # (label index, logit, prob), top-k
    top: int | None  # best label index; None = background (too unsure)
    confidence: float  # probability of the best label


def propose(
    probs: np.ndarray,
    logits: np.ndarray,
    *,
    k: int = 5,
    background_threshold: float,
) -> list[ClipProposal]:
    """Top-k labels per clip; background when the best prob is under threshold."""
    proposals = []
    for p_row, l_row in zip(probs, logits, strict=True):
        order = np.argsort(-p_row, kind="stable")[:k]
        ranked = [(int(i), float(l_row[i]), float(p_row[i])) for i in order]
        best = ranked[0] if ranked else None
        confidence = best[2] if best else 0.0
        top = best[0] if best and confidence >= background_threshold else None
        proposals.append(ClipProposal(ranked, top, confidence))
    return proposals


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)
