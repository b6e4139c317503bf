"""Train a TemporalHead on pre-encoded clips.

Clips arrive as (N, T, D) arrays of frozen-CLIP frame embeddings, so training is
a small optimisation problem that runs on a CPU worker in seconds to minutes.
``train_head`` is a plain function: the Celery task (or a notebook, or the
bench) calls it with arrays and gets weights, history and held-out metrics
back; progress and cancellation go through one callback.

Recipe: class-balanced sampling, AdamW with warmup + cosine decay, label
smoothing, embedding-space augmentation (temporal shift, frame dropout, small
noise on the sphere), early stopping on held-out loss that keeps the best
weights, optional bf16 autocast. Everything random draws from generators seeded
by ``TrainConfig.seed``, so the same inputs and seed give identical weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from training.ml.metrics import evaluate
from training.ml.temporal import TemporalHead, TemporalHeadConfig


@dataclass(frozen=True)
class TrainConfig:
    # Passes over the (re-sampled) training set; early stopping may end sooner.
    epochs: int = 60
    # Clips per optimiser step. Small on purpose: labelled sets are small and
    # the head needs a few hundred steps to learn temporal order.
    batch_size: int = 32
    # Peak AdamW learning rate, reached after warmup.
    lr: float = 3e-3
    # Decoupled weight decay on weight matrices of the residual branch only;
    # classifier rows, norms, biases and embeddings are not decayed.
    weight_decay: float = 0.05
    # Linear warmup length in epochs, then cosine decay to zero.
    warmup_epochs: float = 1.0
    # Label smoothing for the training loss (held-out loss is unsmoothed).
    label_smoothing: float = 0.1
    # Stop after this many epochs without held-out improvement; 0 disables.
    patience: int = 15
    # What "improvement" means: lower held-out loss, or higher held-out top-1
    # (ties broken by loss). Loss is smoother on small held-out sets.
    monitor: Literal["val_loss", "val_top1"] = "val_loss"
    # Sample clips with probability 1/count(label) so rare actions are seen as
    # often as common ones; otherwise a plain shuffle.
    class_balanced: bool = True
    # Probability of dropping each frame (at least one frame is always kept).
    frame_dropout: float = 0.2
    # Shift the frame sequence by up to this many frames (edges repeat).
    time_jitter: int = 1
    # Expected norm of Gaussian noise added to each unit-norm frame embedding
    # before re-normalising; 0 disables.
    noise_std: float = 0.1
    # Clip the global gradient norm; 0 disables.
    grad_clip: float = 1.0
    # Refuse to train on fewer labelled clips than this: the result would be
    # noise, and the zero-shot head is the better model.
    min_train_examples: int = 4
    # Seeds sampling, augmentation, dropout and parameter init.
    seed: int = 0
    # bf16 autocast for the residual branch: True, False, or "auto" (use it
    # when the device has native bf16 support).
    bf16: bool | Literal["auto"] = "auto"
    # "auto" (CUDA when available), "cpu" or "cuda[:i]".
    device: str = "auto"
    # Wall-clock budget; training stops after the step that exceeds it and
    # keeps the best weights so far. None means no limit.
    max_seconds: float | None = None
    # Batch size for held-out evaluation and predict().
    eval_batch_size: int = 512
    # torch intra-op threads while training (restored afterwards); None keeps
    # the process setting. The head's ops are tiny: on an idle 2-core box two
    # threads are ~1.3x faster, but when other work (ffmpeg, other workers)
    # holds the cores every op waits for a descheduled OpenMP thread and an
    # epoch gets 10-20x slower. One thread is the predictable choice.
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        if self.monitor not in ("val_loss", "val_top1"):
            raise ValueError(
                f"monitor must be 'val_loss' or 'val_top1', got {self.monitor!r}"
            )
        if not 0.0 <= self.frame_dropout < 1.0:
            raise ValueError("frame_dropout must be in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        if self.bf16 not in (True, False, "auto"):
            raise ValueError(f"bf16 must be True, False or 'auto', got {self.bf16!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class TrainProgress:
    epoch: int  # 1-based epoch just finished
    epochs: int  # configured maximum
    step: int  # optimiser steps so far
    loss: float  # mean training loss of this epoch
    val_top1: float | None  # held-out top-1 after this epoch (None: no held-out)
    elapsed: float  # seconds since train_head started


class TrainingCancelled(Exception):
    """Raised when the progress callback returns False."""


@dataclass
class TrainResult:
    state_dict: dict[str, Tensor]  # best weights, on CPU
    config: TrainConfig
    head_config: TemporalHeadConfig
    history: list[dict[str, Any]]  # one dict per epoch, see train_head
    best_epoch: int  # epoch whose weights were kept (0: the initial head)
    metrics: dict[str, Any]  # evaluate() of the kept head on held-out clips
    zero_shot_metrics: dict[str, Any]  # same held-out clips, untrained head
    seconds: float
    stopped: str  # "completed", "early_stopping" or "time_limit"
    bf16: bool  # whether autocast was actually used
    head: TemporalHead = field(repr=False)  # kept weights loaded, eval mode, CPU


ProgressCallback = Callable[[TrainProgress], bool | None]


def train_head(
    train_x: Any,
    train_y: Any,
    val_x: Any,
    val_y: Any,
    text_emb: Any,
    head_config: TemporalHeadConfig,
    train_config: TrainConfig | None = None,
    *,
    init_state: dict[str, Tensor] | None = None,
    label_map: dict[int, int] | None = None,
    label_names: Sequence[str] | None = None,
    frames: Any = None,
    callback: ProgressCallback | None = None,
) -> TrainResult:
    """Train a head on (N, T, D) clips with labels in [0, L); return the best.

    ``val_x``/``val_y`` may be None or empty: early stopping then watches the
    training loss and the metrics are empty. ``init_state`` continues from an
    earlier version; if that version had another taxonomy, ``label_map`` maps
    its label indices to the current ones (see ``TemporalHead.set_labels``).
    ``frames`` is reserved for vision fine-tuning, which this trainer refuses.
    History entries hold epoch, train_loss, val_loss, val_top1, lr, seconds.
    """
    tc = train_config or TrainConfig()
    start = time.monotonic()
    _check_vision(head_config, frames)
    text = _as_text(text_emb, head_config)
    x, y = _as_clips(train_x, train_y, head_config, "train")
    vx, vy = _as_clips(val_x, val_y, head_config, "held-out", allow_empty=True)
    num_labels = text.shape[0]
    _check_labels(y, vy, num_labels, tc)
    names = (
        list(label_names)
        if label_names is not None
        else [str(i) for i in range(num_labels)]
    )
    if len(names) != num_labels:
        raise ValueError(f"{len(names)} label names for {num_labels} text embeddings")

    device = _device(tc.device)
    use_bf16 = _use_bf16(tc.bf16, device)
    fork = [device] if device.type == "cuda" else []
    with _threads(tc.num_threads), torch.random.fork_rng(devices=fork):
        torch.manual_seed(tc.seed)
        baseline = TemporalHead(head_config, text).eval()
        head = _initial_head(head_config, text, init_state, label_map)
        if init_state is None:
            head.center.copy_(x.float().mean(dim=(0, 1)))
        head = head.to(device)
        zero_shot = _metrics(baseline, vx, vy, names, tc.eval_batch_size)
        run = _Run(
            head, x.to(device), y.to(device), vx.to(device), vy.to(device), tc, use_bf16
        )
        history, best_epoch, stopped = run.fit(start, callback)

    head.load_state_dict(run.best_state)
    head = head.cpu().eval()
    return TrainResult(
        state_dict=run.best_state,
        config=tc,
        head_config=head_config,
        history=history,
        best_epoch=best_epoch,
        metrics=_metrics(head, vx, vy, names, tc.eval_batch_size),
        zero_shot_metrics=zero_shot,
        seconds=time.monotonic() - start,
        stopped=stopped,
        bf16=use_bf16,
        head=head,
    )


@torch.no_grad()
def predict(head: TemporalHead, x: Any, batch_size: int = 512) -> np.ndarray:
    """Logits (N, L) as float32 numpy, in eval mode, batch by batch."""
    if isinstance(x, Tensor):
        clips = x.float()
    else:
        clips = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if clips.dim() != 3:
        raise ValueError(f"expected (N, T, D) clips, got {tuple(clips.shape)}")
    device = next(head.parameters()).device
    was_training = head.training
    head.eval()
    try:
        out = [head(b.to(device)).float().cpu() for b in clips.split(batch_size)]
    finally:
        head.train(was_training)
    if not out:
        return np.zeros((0, head.num_labels), dtype=np.float32)
    return torch.cat(out).numpy()


# ------------------------------------------------------------------ the loop


class _Run:
    """State of one training run; ``fit`` is the epoch loop."""

    def __init__(
        self,
        head: TemporalHead,
        x: Tensor,
        y: Tensor,
        vx: Tensor,
        vy: Tensor,
        tc: TrainConfig,
        use_bf16: bool,
    ) -> None:
        self.head, self.x, self.y, self.vx, self.vy, self.tc = head, x, y, vx, vy, tc
        self.use_bf16 = use_bf16
        # Sampling and augmentation draw from their own CPU generator, so the
        # sequence does not depend on the device or on other torch users.
        self.gen = torch.Generator().manual_seed(tc.seed)
        self.steps_per_epoch = math.ceil(len(y) / tc.batch_size)
        self.opt = _optimizer(head, tc)
        total = tc.epochs * self.steps_per_epoch
        warmup = max(1, round(tc.warmup_epochs * self.steps_per_epoch))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: _lr_factor(s, warmup, total)
        )
        self.best_state = _cpu_state(head)
        self.step = 0

    def fit(
        self, start: float, callback: ProgressCallback | None
    ) -> tuple[list[dict[str, Any]], int, str]:
        tc = self.tc
        history: list[dict[str, Any]] = []
        best_key = self._score(*self._validate(), math.inf)
        best_epoch, stopped = 0, "completed"
        for epoch in range(1, tc.epochs + 1):
            train_loss, out_of_time = self._train_epoch(start)
            val_loss, val_top1 = self._validate()
            key = self._score(val_loss, val_top1, train_loss)
            if key < best_key:
                best_key, best_epoch = key, epoch
                self.best_state = _cpu_state(self.head)
            elapsed = time.monotonic() - start
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_top1": val_top1,
                    "lr": self.opt.param_groups[0]["lr"],
                    "seconds": elapsed,
                }
            )
            progress = TrainProgress(
                epoch, tc.epochs, self.step, train_loss, val_top1, elapsed
            )
            if callback is not None and callback(progress) is False:
                raise TrainingCancelled(f"training cancelled after epoch {epoch}")
            if out_of_time:
                stopped = "time_limit"
                break
            if tc.patience and epoch - best_epoch >= tc.patience:
                stopped = "early_stopping"
                break
        return history, best_epoch, stopped

    def _score(
        self, val_loss: float | None, val_top1: float | None, train_loss: float
    ) -> tuple[float, float]:
        """Smaller is better. Without held-out clips, fall back to train loss."""
        if val_loss is None or val_top1 is None:
            return (train_loss, 0.0)
        if self.tc.monitor == "val_top1":
            return (-val_top1, val_loss)
        return (val_loss, -val_top1)

    def _train_epoch(self, start: float) -> tuple[float, bool]:
        tc, head = self.tc, self.head
        head.train()
        total, count = 0.0, 0
        for idx in _epoch_order(self.y, tc.class_balanced, self.gen).split(
            tc.batch_size
        ):
            idx = idx.to(self.x.device)
            xb, mask = _augment(self.x[idx], tc, self.gen)
            with _autocast(self.x.device, self.use_bf16):
                logits = head(xb, mask)
            loss = F.cross_entropy(
                logits.float(), self.y[idx], label_smoothing=tc.label_smoothing
            )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), tc.grad_clip)
            self.opt.step()
            self.sched.step()
            self.step += 1
            total += loss.item() * len(idx)
            count += len(idx)
            if tc.max_seconds is not None and time.monotonic() - start > tc.max_seconds:
                return total / count, True
        return total / count, False

    @torch.no_grad()
    def _validate(self) -> tuple[float | None, float | None]:
        if len(self.vy) == 0:
            return None, None
        self.head.eval()
        logits = torch.cat(
            [self.head(b) for b in self.vx.split(self.tc.eval_batch_size)]
        ).float()
        loss = F.cross_entropy(logits, self.vy).item()
        top1 = (logits.argmax(dim=1) == self.vy).float().mean().item()
        return loss, top1


def _epoch_order(y: Tensor, balanced: bool, gen: torch.Generator) -> Tensor:
    """Clip indices for one epoch: N draws, class-balanced or a shuffle."""
    y = y.cpu()
    if not balanced:
        return torch.randperm(len(y), generator=gen)
    counts = torch.bincount(y).double()
    weights = 1.0 / counts[y]
    return torch.multinomial(weights, len(y), replacement=True, generator=gen)


def _augment(
    x: Tensor, tc: TrainConfig, gen: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """Embedding-space augmentation; returns clips and a frame mask (or None)."""
    b, t, d = x.shape
    dev = x.device
    if tc.time_jitter > 0 and t > 1:
        shift = torch.randint(
            -tc.time_jitter, tc.time_jitter + 1, (b, 1), generator=gen
        )
        idx = (torch.arange(t)[None] + shift).clamp(0, t - 1).to(dev)
        x = x.gather(1, idx[..., None].expand(b, t, d))
    if tc.noise_std > 0:
        noise = torch.randn(x.shape, generator=gen).to(dev)
        x = F.normalize(x + noise * (tc.noise_std / math.sqrt(d)), dim=-1)
    mask = None
    if tc.frame_dropout > 0 and t > 1:
        keep = torch.rand(b, t, generator=gen) >= tc.frame_dropout
        keep[torch.arange(b), torch.randint(t, (b,), generator=gen)] = True
        mask = keep.to(dev)
    return x, mask


def _optimizer(head: TemporalHead, tc: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; decay only the residual branch's weight matrices (nanoGPT-style)."""
    decay, no_decay = [], []
    for name, p in head.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and not name.startswith(
            ("classifier", "pos_emb", "pool.query")
        )
        (decay if is_matrix else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": tc.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(0.9, 0.98))


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled
    )


def _cpu_state(head: TemporalHead) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}


@torch.no_grad()
def _metrics(
    head: TemporalHead, x: Tensor, y: Tensor, names: list[str], batch_size: int
) -> dict[str, Any]:
    if len(y) == 0:
        return {}
    return evaluate(predict(head, x, batch_size), y.cpu().numpy(), names)


# ------------------------------------------------------------- input checks


def _check_vision(hc: TemporalHeadConfig, frames: Any) -> None:
    if hc.unfreeze_vision_blocks <= 0:
        return
    if frames is None:
        raise ValueError(
            f"unfreeze_vision_blocks={hc.unfreeze_vision_blocks} fine-tunes the CLIP "
            "vision tower and needs image frames; train_head only received frame "
            "embeddings. Set unfreeze_vision_blocks=0 to train the temporal head."
        )
    raise NotImplementedError("vision-tower fine-tuning is not implemented yet")


def _as_text(text_emb: Any, hc: TemporalHeadConfig) -> Tensor:
    text = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32)
    if text.dim() != 2 or text.shape[0] == 0:
        raise ValueError(
            "no labels: text_emb must be (L, D) with L >= 1; add labels to the "
            "taxonomy before training"
        )
    if text.shape[1] != hc.embed_dim:
        raise ValueError(f"text_emb width {text.shape[1]} != embed_dim {hc.embed_dim}")
    return text


def _as_clips(
    x: Any, y: Any, hc: TemporalHeadConfig, what: str, allow_empty: bool = False
) -> tuple[Tensor, Tensor]:
    if x is None or y is None or (allow_empty and len(y) == 0):
        if not allow_empty:
            raise ValueError(f"no {what} clips")
        return torch.zeros(0, hc.num_frames, hc.embed_dim), torch.zeros(
            0, dtype=torch.long
        )
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y)).long().reshape(-1)
    if xt.dim() != 3 or xt.shape[-1] != hc.embed_dim:
        raise ValueError(
            f"{what} clips must be (N, T, {hc.embed_dim}) frame embeddings, "
            f"got {tuple(xt.shape)}"
        )
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"{xt.shape[0]} {what} clips but {yt.shape[0]} labels")
    if hc.kind == "transformer" and xt.shape[1] > hc.num_frames:
        raise ValueError(
            f"{what} clips have {xt.shape[1]} frames; "
            f"head config allows {hc.num_frames}"
        )
    if not torch.isfinite(xt).all():
        raise ValueError(f"{what} clips contain NaN or infinite values")
    return xt, yt


def _check_labels(y: Tensor, vy: Tensor, num_labels: int, tc: TrainConfig) -> None:
    for what, t in (("training", y), ("held-out", vy)):
        if len(t) and (t.min() < 0 or t.max() >= num_labels):
            raise ValueError(
                f"{what} labels must be indices in [0, {num_labels}), "
                "the rows of text_emb"
            )
    if len(y) < tc.min_train_examples:
        raise ValueError(
            f"only {len(y)} labelled training clips; need at least "
            f"{tc.min_train_examples} (TrainConfig.min_train_examples)"
        )
    present = torch.unique(y)
    if len(present) < 2:
        raise ValueError(
            f"all {len(y)} training clips have the single label {int(present[0])}; "
            "a classifier cannot be trained on one label. Label clips of at least "
            "one other action, or keep using zero-shot."
        )


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CPU: AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # private op, but it is how torch itself checks the CPU
        return bool(torch.backends.mkldnn.is_available()) and bool(
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def _use_bf16(flag: bool | str, device: torch.device) -> bool:
    # True is honoured even without native support (autocast still runs,
    # slowly); "auto" only uses bf16 where the hardware has it.
    return flag is True or (flag == "auto" and native_bf16(device))


def _initial_head(
    hc: TemporalHeadConfig,
    text: Tensor,
    init_state: dict[str, Tensor] | None,
    label_map: dict[int, int] | None,
) -> TemporalHead:
    if init_state is None:
        return TemporalHead(hc, text)
    head = TemporalHead.from_state_dict(hc, init_state)
    if label_map is not None:
        head.set_labels(text, keep=label_map)
    elif head.num_labels != text.shape[0]:
        raise ValueError(
            f"init_state has {head.num_labels} labels but text_emb has "
            f"{text.shape[0]}; pass label_map (old index -> new index)"
        )
    return head
