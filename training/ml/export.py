"""Pick and export the inference backend of a trained version (no Django here).

``optimize`` measures each candidate backend of the CLIP image encoder (built
by ``encoders.build_backend``) on the version's held-out clips: images/s,
clips/s (encoder + temporal head), peak extra memory while building it and
encoding the clips (the int8 graph's one-off export, cached on disk, is not
counted), and parity with fp32 eager - the smallest cosine between matching
image embeddings, and how often the head's top-1 label on the backend's
embeddings agrees with fp32's. A
backend under either threshold is refused. Of the accepted ones the fastest
(clips/s) is chosen; fp32 is the reference and always accepted, so there is
always an answer.

``export_standalone`` writes the ONNX graphs a download ships: the image
encoder (the int8 graph when it passed parity, else an fp32 export) and the
temporal head (``artifacts.export_onnx_head``); ``training.ml.runtime`` runs
them with onnxruntime and numpy only.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.ml import artifacts, encoders
from training.ml.clip import LoadedClip
from training.ml.temporal import TemporalHead
from training.ml.train import predict

# Expected speed order on CPU (the order; fp32 last). Every candidate
# is measured anyway and the fastest accepted one wins.
CPU_ORDER = ("onnx-int8", "int8-dynamic", "bf16", "fp32")
CUDA_ORDER = encoders.CUDA_PREFERENCE
MIN_COSINE = 0.999
MIN_AGREEMENT = 0.99
# Parity runs on at most this many held-out clips (frames = clips x T), speed
# on the first TIMING_CLIPS of them, one timed pass after the parity pass has
# warmed the backend up (``rounds``): enough to rank backends whose speeds
# differ by 1.5x or more, and it keeps the optimisation step of a ViT-B/32 run
# on a 2-core worker under a minute.
MAX_CLIPS = 8
TIMING_CLIPS = 4
IMAGE_ONNX = "image_encoder.onnx"
INT8_NOTE = (
    "onnxruntime dynamic quantization: MatMul weights QInt8, activations "
    "quantized at run time per batch"
)
HEAD_ONNX = "head.onnx"
_MiB = float(1 << 20)


@dataclass
class BackendReport:
    """One row of a version's backends table (``ModelVersion.backends``)."""

    backend: str
    images_per_s: float | None = None
    clips_per_s: float | None = None
    peak_mb: float | None = None
    cosine_min: float | None = None
    top1_agreement: float | None = None
    accepted: bool = False
    error: str | None = None  # why it could not run, or why it was refused

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for key, digits in (("images_per_s", 2), ("clips_per_s", 2), ("peak_mb", 1)):
            if row[key] is not None:
                row[key] = round(row[key], digits)
        return row


@dataclass
class ExportResult:
    backend: str  # the chosen one
    reports: list[BackendReport]  # in the order tried, fp32 last
    clips: int  # held-out clips the parity check used
    frames: int  # their frames
    min_cosine: float
    min_agreement: float
    encoder: encoders.ImageEncoder | None = field(default=None, repr=False)

    def table(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.reports]

    def report(self, backend: str) -> BackendReport:
        return next(r for r in self.reports if r.backend == backend)


def candidate_backends(device: str = "cpu") -> tuple[str, ...]:
    """Backends to try on ``device``, fastest expected first, fp32 last."""
    if encoders.backend_device(device) != "cpu":
        return CUDA_ORDER
    return CPU_ORDER


@dataclass
class _Context:
    loaded: LoadedClip
    head: TemporalHead
    clips: np.ndarray  # (N, T, H, W, 3) uint8
    device: str
    cache_dir: str | Path | None
    rounds: int
    timing_clips: int
    reference: np.ndarray | None = None  # fp32 embeddings, (N * T, D)
    reference_top1: np.ndarray | None = None  # (N,)

    @property
    def frames(self) -> np.ndarray:
        return self.clips.reshape(-1, *self.clips.shape[2:])


def optimize(
    loaded: LoadedClip,
    head: TemporalHead,
    clips: np.ndarray | None,
    *,
    device: str = "cpu",
    prefer: tuple[str, ...] | list[str] | None = None,
    min_cosine: float = MIN_COSINE,
    min_agreement: float = MIN_AGREEMENT,
    cache_dir: str | Path | None = None,
    max_clips: int = MAX_CLIPS,
    timing_clips: int = TIMING_CLIPS,
    rounds: int = 1,
) -> ExportResult:
    """Measure every candidate backend on ``clips`` and choose the fastest
    accepted one. ``clips`` is (N, T, H, W, 3) uint8; None or empty uses
    synthetic probe frames. Backend failures are recorded, never raised."""
    device = encoders.backend_device(device)
    head = head.eval()
    ctx = _Context(
        loaded,
        head,
        _prepare_clips(clips, head, loaded.image_size, max_clips),
        device,
        cache_dir,
        max(1, rounds),
        max(1, timing_clips),
    )
    order = [b for b in (prefer or candidate_backends(device)) if b != "fp32"]
    fp32_report, best = _measure_reference(ctx)
    reports: list[BackendReport] = []
    for backend in order:
        report, encoder = _measure(ctx, backend, min_cosine, min_agreement)
        reports.append(report)
        if encoder is not None and _faster(report, best[0]):
            best = (report, encoder)
        del encoder
        gc.collect()
    reports.append(fp32_report)
    return ExportResult(
        backend=best[0].backend,
        reports=reports,
        clips=len(ctx.clips),
        frames=len(ctx.frames),
        min_cosine=min_cosine,
        min_agreement=min_agreement,
        encoder=best[1],
    )


def _faster(a: BackendReport, b: BackendReport) -> bool:
    return (a.clips_per_s or 0.0) > (b.clips_per_s or 0.0)


def _prepare_clips(
    clips: np.ndarray | None, head: TemporalHead, size: int, max_clips: int
) -> np.ndarray:
    if clips is not None and len(clips):
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.dtype != np.uint8 or clips.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 clips shaped (N, T, H, W, 3), got {clips.dtype} "
                f"{clips.shape}"
            )
        return np.ascontiguousarray(clips[:max_clips])
    t = head.config.num_frames
    probe = encoders.synthetic_probe_frames(2 * t, size)
    return probe.reshape(2, t, *probe.shape[1:])


def _measure_reference(
    ctx: _Context,
) -> tuple[BackendReport, tuple[BackendReport, encoders.ImageEncoder]]:
    """fp32 eager: the parity reference, always accepted."""
    report = BackendReport("fp32", cosine_min=1.0, top1_agreement=1.0, accepted=True)
    with PeakMemory(ctx.device) as mem:
        encoder = encoders.build_backend(ctx.loaded, "fp32", device=ctx.device)
        ctx.reference = encoder.encode(ctx.frames)
    report.peak_mb = mem.mb
    ctx.reference_top1 = _top1(ctx.head, ctx.reference, ctx.clips.shape[:2])
    report.images_per_s, report.clips_per_s = _speed(ctx, encoder)
    return report, (report, encoder)


def _measure(
    ctx: _Context, backend: str, min_cosine: float, min_agreement: float
) -> tuple[BackendReport, encoders.ImageEncoder | None]:
    """Build, check and time one backend; the encoder only when accepted."""
    report = BackendReport(backend)
    skip = _skip_reason(backend, ctx.device)
    if skip:
        report.error = skip
        return report, None
    try:
        if backend == "onnx-int8":  # the one-off export is not serving memory
            encoders.onnx_int8_path(ctx.loaded, ctx.cache_dir)
        with PeakMemory(ctx.device) as mem:
            encoder = encoders.build_backend(
                ctx.loaded, backend, device=ctx.device, cache_dir=ctx.cache_dir
            )
            emb = encoder.encode(ctx.frames)
        report.peak_mb = mem.mb
        report.cosine_min = encoders.min_row_cosine(emb, ctx.reference)
        top1 = _top1(ctx.head, emb, ctx.clips.shape[:2])
        report.top1_agreement = float(np.mean(top1 == ctx.reference_top1))
        report.images_per_s, report.clips_per_s = _speed(ctx, encoder)
    except Exception as exc:  # a backend that cannot run is refused, not fatal
        report.error = f"{type(exc).__name__}: {exc}"[:500]
        return report, None
    report.error = _refusal(report, min_cosine, min_agreement)
    report.accepted = report.error is None
    return report, (encoder if report.accepted else None)


def _skip_reason(backend: str, device: str) -> str | None:
    if backend not in encoders.BACKENDS:
        return f"unknown backend {backend!r}"
    if backend == "bf16" and device == "cpu" and not encoders.native_cpu_bf16():
        return "skipped: this CPU has no native bf16 (emulated bf16 is slow)"
    return None


def _refusal(
    report: BackendReport, min_cosine: float, min_agreement: float
) -> str | None:
    why = []
    if report.cosine_min is None or report.cosine_min < min_cosine:
        why.append(f"cosine {report.cosine_min:.5f} < {min_cosine:g}")
    if report.top1_agreement is None or report.top1_agreement < min_agreement:
        why.append(f"top-1 agreement {report.top1_agreement:.3f} < {min_agreement:g}")
    return ("parity: " + "; ".join(why)) if why else None


def _top1(head: TemporalHead, emb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    n, t = shape
    return predict(head, emb.reshape(n, t, -1)).argmax(axis=1)


def _speed(ctx: _Context, encoder: encoders.ImageEncoder) -> tuple[float, float]:
    """(images/s, clips/s), best of ``rounds``; the parity pass was the warm-up."""
    clips = ctx.clips[: ctx.timing_clips]
    n, t = clips.shape[:2]
    frames = clips.reshape(n * t, *clips.shape[2:])
    best_encode = best_total = float("inf")
    for _ in range(ctx.rounds):
        start = time.perf_counter()
        emb = encoder.encode(frames)
        encoded = time.perf_counter()
        predict(ctx.head, emb.reshape(n, t, -1))
        done = time.perf_counter()
        best_encode = min(best_encode, encoded - start)
        best_total = min(best_total, done - start)
    return n * t / max(best_encode, 1e-9), n / max(best_total, 1e-9)


# --- memory --------------------------------------------------------------------


class PeakMemory:
    """Peak extra memory (MB) while the block runs: CUDA allocations on a GPU,
    else the process's resident set sampled every few milliseconds (it sees
    onnxruntime's native buffers, which tracemalloc would not)."""

    def __init__(self, device: str = "cpu", interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self.mb: float | None = None
        self._stop = threading.Event()
        self._peak = self._base = 0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        gc.collect()
        _trim_heap()  # hand freed pages back, so the delta is this block's own
        self._base = self._peak = rss_bytes()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self._peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._peak = max(self._peak, rss_bytes())
        self.mb = max(0, self._peak - self._base) / _MiB

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, rss_bytes())


def _trim_heap() -> None:
    """glibc keeps freed memory mapped; ask it to release it (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int:
    """Current resident set size; the high-water mark where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- standalone ONNX -------------------------------------------------------------


def export_standalone(
    loaded: LoadedClip,
    head: TemporalHead,
    dest: str | Path,
    *,
    int8: bool,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Write IMAGE_ONNX (pixels -> image embeddings) and HEAD_ONNX (frame
    embeddings -> logits) into ``dest``; return what the runtime needs."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if int8:
        shutil.copyfile(encoders.onnx_int8_path(loaded, cache_dir), dest / IMAGE_ONNX)
    else:
        encoders.export_vision_fp32(loaded, dest / IMAGE_ONNX)
    cfg = head.config
    head_diff = artifacts.export_onnx_head(
        head, dest / HEAD_ONNX, cfg.num_frames, cfg.embed_dim
    )
    return {
        "image_encoder": IMAGE_ONNX,
        "image_encoder_precision": "int8" if int8 else "fp32",
        "image_encoder_quantization": INT8_NOTE if int8 else None,
        "head": HEAD_ONNX,
        "head_onnx_max_abs_diff": head_diff,
        "image_size": loaded.image_size,
        "mean": list(loaded.mean),
        "std": list(loaded.std),
        "num_frames": cfg.num_frames,
        "embed_dim": cfg.embed_dim,
    }
