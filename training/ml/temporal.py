"""Temporal head: pools per-frame CLIP embeddings into one clip feature and scores it.

Input is a batch of clips, each a (T, D) stack of L2-normalised frame embeddings
from a frozen CLIP image encoder. The head returns label logits.

The design goal is that an *untrained* head is exactly the zero-shot baseline:

    feature = normalise(mean_t(x) + residual(x))      # residual(x) == 0 at init
    logits  = logit_scale * feature @ normalise(W).T  # W == text embeddings at init

The residual branch (attention pooling with a learned query, optionally after a
small transformer over time) has its output projection initialised to zero, and
the classifier rows start as the label text embeddings with CLIP's logit scale.
Training can therefore only move away from zero-shot when the data says so, and
labels added later start from their text embedding (see ``set_labels``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HeadKind = Literal["attention", "transformer"]


@dataclass(frozen=True)
class TemporalHeadConfig:
    # Width of the CLIP joint space (512 for ViT-B/32, 64 for the tiny test model).
    embed_dim: int = 512
    # Frames per clip; sizes the positional table of the transformer kind.
    num_frames: int = 8
    # "attention": learned-query attention pooling straight over the frames.
    # "transformer": a few self-attention blocks over time first, then pooling.
    kind: HeadKind = "attention"
    # Self-attention blocks before pooling (transformer kind only).
    layers: int = 1
    # Attention heads; must divide embed_dim.
    heads: int = 8
    # Hidden width of the transformer MLP as a multiple of embed_dim.
    mlp_ratio: float = 2.0
    # Dropout inside the residual branch (attention weights and MLP).
    dropout: float = 0.1
    # exp(logit_scale) of the CLIP model; 100 for OpenAI CLIP. Zero-shot parity
    # needs the same value the zero-shot scorer uses.
    init_logit_scale: float = 100.0
    # Whether training may change the logit scale. Off by default: with few
    # labelled clips a free temperature mostly learns to be over-confident.
    learn_logit_scale: bool = False
    # Normalise classifier rows in forward (cosine classifier). Keeps the rows
    # comparable to text embeddings, so zero-shot rows added later by
    # set_labels sit on the same scale as trained ones.
    normalize_classifier: bool = True
    # Fine-tune the last N blocks of the CLIP vision tower as well. Needs raw
    # image frames and a GPU worker; the embedding trainer refuses values > 0.
    unfreeze_vision_blocks: int = 0

    def __post_init__(self) -> None:
        if self.embed_dim <= 0 or self.num_frames <= 0:
            raise ValueError("embed_dim and num_frames must be positive")
        if self.kind not in ("attention", "transformer"):
            raise ValueError(
                f"kind must be 'attention' or 'transformer', got {self.kind!r}"
            )
        if self.heads <= 0 or self.embed_dim % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must be positive and divide embed_dim "
                f"({self.embed_dim})"
            )
        if self.kind == "transformer" and self.layers < 1:
            raise ValueError("the transformer kind needs layers >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init_logit_scale <= 0:
            raise ValueError("init_logit_scale must be positive")
        if self.unfreeze_vision_blocks < 0:
            raise ValueError("unfreeze_vision_blocks must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemporalHeadConfig:
        # Ignore unknown keys so configs written by newer code still load.
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over time of (B, T, D); ``mask`` (B, T) marks the frames to keep."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class MultiHeadAttention(nn.Module):
    """Plain multi-head attention written out, so ONNX export stays simple."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, q: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # q: (B, S, D) queries, x: (B, T, D) keys/values, mask: (B, T) valid frames.
        b, s, d = q.shape
        t = x.shape[1]
        hd = d // self.heads
        q = self.q(q).view(b, s, self.heads, hd).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        if mask is not None:
            att = att.masked_fill(~mask[:, None, None, :], torch.finfo(att.dtype).min)
        att = self.attn_drop(att.softmax(dim=-1))
        out = (att @ v).transpose(1, 2).reshape(b, s, d)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block over the time axis."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.ln2(x))


class AttentionPool(nn.Module):
    """Learned-query attention over frames; output projection starts at zero."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.ln = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        # Zero output projection: the residual is exactly 0 until trained, so
        # the pooled feature starts as the zero-shot mean.
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q = self.query.expand(x.shape[0], -1, -1)
        return self.attn(q, self.ln(x), mask).squeeze(1)


class TemporalHead(nn.Module):
    """(B, T, D) normalised frame embeddings -> (B, L) label logits."""

    def __init__(self, config: TemporalHeadConfig, text_emb: Tensor) -> None:
        super().__init__()
        self.config = config
        c = config
        text_emb = _as_text_emb(text_emb, c.embed_dim)
        if c.kind == "transformer":
            # Small init so the blocks start close to identity on the frames.
            self.pos_emb = nn.Parameter(
                torch.randn(1, c.num_frames, c.embed_dim) * 0.02
            )
            self.blocks = nn.ModuleList(
                Block(c.embed_dim, c.heads, c.mlp_ratio, c.dropout)
                for _ in range(c.layers)
            )
        self.pool = AttentionPool(c.embed_dim, c.heads, c.dropout)
        # Mean frame embedding of the training set. CLIP embeddings share a
        # large common direction, so clips of different actions can differ by
        # a few degrees only; the residual branch sees ``x - center`` and so
        # learns from the differences. The zero-shot path uses raw ``x``.
        self.register_buffer("center", torch.zeros(c.embed_dim))
        self.classifier = nn.Linear(c.embed_dim, text_emb.shape[0], bias=False)
        with torch.no_grad():
            self.classifier.weight.copy_(text_emb)
        # Stored as a log like CLIP's, so a learned scale stays positive.
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(c.init_logit_scale)),
            requires_grad=c.learn_logit_scale,
        )

    @property
    def num_labels(self) -> int:
        return self.classifier.weight.shape[0]

    def features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pooled clip feature (B, D), unit norm, in CLIP's joint space."""
        if x.dim() != 3 or x.shape[-1] != self.config.embed_dim:
            raise ValueError(
                f"expected (B, T, {self.config.embed_dim}) frame embeddings, "
                f"got {tuple(x.shape)}"
            )
        base = masked_mean(x, mask)
        h = x - self.center.to(x.dtype)
        if self.config.kind == "transformer":
            t = x.shape[1]
            if t > self.config.num_frames:
                raise ValueError(
                    f"clip has {t} frames, head was built for {self.config.num_frames}"
                )
            h = h + self.pos_emb[:, :t]
            for block in self.blocks:
                h = block(h, mask)
        return F.normalize(base + self.pool(h, mask), dim=-1)

    def class_weights(self) -> Tensor:
        w = self.classifier.weight
        return F.normalize(w, dim=-1) if self.config.normalize_classifier else w

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        feat = self.features(x, mask)
        # Score in fp32 even under bf16 autocast: at scale 100, bf16 logits are
        # quantised to ~0.25, coarser than the gaps between labels.
        with torch.autocast(device_type=feat.device.type, enabled=False):
            if self.config.learn_logit_scale:
                # CLIP's cap: an unbounded temperature drifts to over-confidence.
                cap = max(100.0, self.config.init_logit_scale)
                scale = self.logit_scale.exp().clamp(max=cap)
            else:
                # The constant itself, not exp(log(.)), which is off by an ulp.
                scale = self.config.init_logit_scale
            dtype = torch.promote_types(feat.dtype, torch.float32)  # keeps fp64
            return scale * feat.to(dtype) @ self.class_weights().to(dtype).t()

    @torch.no_grad()
    def set_labels(self, text_emb: Tensor, keep: dict[int, int] | None = None) -> None:
        """Replace the taxonomy with ``text_emb`` (L', D) rows.

        ``keep`` maps old row index -> new row index for labels whose trained
        rows should survive (renamed prompts, reordering, appended labels).
        Every other new row starts from its text embedding, i.e. zero-shot.
        ``keep=None`` keeps nothing; for a taxonomy that only grew at the end
        pass ``{i: i for i in range(head.num_labels)}``.
        """
        text_emb = _as_text_emb(text_emb, self.config.embed_dim)
        old = self.classifier.weight
        new = text_emb.to(device=old.device, dtype=old.dtype).clone()
        for src, dst in (keep or {}).items():
            if not (0 <= src < old.shape[0] and 0 <= dst < new.shape[0]):
                raise ValueError(
                    f"keep maps {src}->{dst}, outside {old.shape[0]} old / "
                    f"{new.shape[0]} new labels"
                )
            new[dst] = old[src]
        classifier = nn.Linear(new.shape[1], new.shape[0], bias=False)
        classifier.to(device=old.device, dtype=old.dtype)
        classifier.weight.copy_(new)
        self.classifier = classifier

    @classmethod
    def from_state_dict(
        cls, config: TemporalHeadConfig, state: dict[str, Tensor]
    ) -> TemporalHead:
        """Rebuild a head, taking the label count from the classifier weights."""
        if "classifier.weight" not in state:
            raise ValueError("state dict has no classifier.weight")
        head = cls(config, state["classifier.weight"].float())
        head.load_state_dict(state)
        return head


def _as_text_emb(text_emb: Any, dim: int) -> Tensor:
    t = torch.as_tensor(text_emb, dtype=torch.float32)
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(
            "text embeddings must be (L, D) with at least one label, "
            f"got {tuple(t.shape)}"
        )
    if t.shape[1] != dim:
        raise ValueError(f"text embeddings have width {t.shape[1]}, head expects {dim}")
    return F.normalize(t, dim=-1)
