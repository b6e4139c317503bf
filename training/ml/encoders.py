"""CLIP image/text encoding with a fast backend chosen by measured parity.

Frames arrive already sampled, resized and centre-cropped (uint8 RGB, N x 224 x
224 x 3), so preprocessing is just a normalisation done in torch. The image
tower can run as plain fp32, bf16, dynamically quantised int8 (torch) or an
int8 ONNX graph (onnxruntime). ``build_image_encoder`` tries them in order of
expected speed and keeps the first whose embeddings stay within ``min_cosine``
of fp32 on a probe batch, so a backend that is fast but wrong on this model or
this CPU is never used silently; the measurements are kept in ``parity``.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.ml.clip import LoadedClip
from training.ml.visiongraph import LeanVisionHead

# Fastest first, as measured on ViT-B/32 (bench/encode.py): the int8 ONNX graph
# beats torch's dynamic int8 (which re-quantises activations op by op) by ~2.5x,
# and bf16 only pays off with native bf16 matmuls (AMX / AVX512-BF16).
CPU_PREFERENCE = ("onnx-int8", "bf16", "int8-dynamic", "fp32")
CUDA_PREFERENCE = ("cuda-bf16", "cuda-fp16", "fp32")
BACKENDS = frozenset(CPU_PREFERENCE + CUDA_PREFERENCE)
ONNX_OPSET = 17
# Bump when the exported graph changes so stale cached .onnx files are ignored.
ONNX_FORMAT = 2  # 2: LeanVisionHead (patch MatMul, fused qkv, CLS-only end)
PROBE_FRAMES = 8
TEXT_BATCH = 256

Runner = Callable[[torch.Tensor], torch.Tensor]


class VisionHead(nn.Module):
    """Vision tower + projection: pixels -> joint-space image embedding."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixel_values).pooler_output
        return self.visual_projection(pooled)


class ImageEncoder:
    """Encodes uint8 RGB frames to L2-normalised float32 CLIP embeddings."""

    def __init__(self, backend: str, runner: Runner, loaded: LoadedClip, device: str):
        self.backend = backend
        self.device = device
        self.embed_dim = loaded.embed_dim
        self.image_size = loaded.image_size
        self.parity: dict[str, dict[str, Any]] = {}
        self._runner = runner
        self._mean = torch.tensor(loaded.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(loaded.std, device=device).view(1, 3, 1, 1)

    def encode(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, D) float32, unit L2 norm per row."""
        frames = _check_frames(frames)
        out = np.empty((len(frames), self.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                pixels = self._preprocess(frames[start : start + batch_size])
                feats = self._runner(pixels).float()
                feats = F.normalize(feats, dim=-1)
                out[start : start + len(pixels)] = feats.cpu().numpy()
        return out

    def _preprocess(self, frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.image_size
        if x.shape[-2:] != (size, size):
            # Only when the model's input size differs from the sampled frames.
            x = F.interpolate(
                x, size=(size, size), mode="bicubic", antialias=True
            ).clamp_(0.0, 1.0)
        return (x - self._mean) / self._std


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 frames shaped (N, H, W, 3), got {frames.dtype} "
            f"{frames.shape}"
        )
    return frames


# --- backend construction --------------------------------------------------


def build_backend(
    loaded: LoadedClip,
    backend: str,
    *,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> ImageEncoder:
    """One specific backend, without any parity check (benchmarks, tests)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {sorted(BACKENDS)}")
    if backend.startswith("cuda-"):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available")
        device = device if device.startswith("cuda") else "cuda"
    elif backend != "fp32":
        device = "cpu"  # the quantised and bf16 CPU paths are CPU-only
    runner = _make_runner(loaded, backend, device, cache_dir)
    return ImageEncoder(backend, runner, loaded, device)


def _make_runner(
    loaded: LoadedClip, backend: str, device: str, cache_dir: str | Path | None
) -> Runner:
    if backend == "fp32":  # the reference: transformers' own forward, as is
        head = VisionHead(loaded.model).eval()
        return head if loaded.device == device else copy.deepcopy(head).to(device)
    if backend == "onnx-int8":
        return _onnx_int8(loaded, cache_dir)
    # The other optimised backends run the same maths with less work.
    head = LeanVisionHead(loaded.model).eval()
    if backend == "int8-dynamic":
        return _int8_dynamic(head)
    dtype = torch.float16 if backend == "cuda-fp16" else torch.bfloat16
    low = copy.deepcopy(head).to(device=device, dtype=dtype)
    return lambda x: low(x.to(dtype))


def _int8_dynamic(head: nn.Module) -> Runner:
    # torch.ao.quantization is deprecated in favour of torchao, which this
    # project does not install; the API still works and is what we measure.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        cpu_head = copy.deepcopy(head).cpu()  # never touch the shared model
        return torch.ao.quantization.quantize_dynamic(
            cpu_head, {nn.Linear}, dtype=torch.qint8, inplace=True
        )


def default_cache_dir() -> Path:
    """Where derived model artefacts (ONNX graphs) are kept between runs."""
    if os.environ.get("HARWEB_MODEL_CACHE"):
        return Path(os.environ["HARWEB_MODEL_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "harweb"


def onnx_int8_path(loaded: LoadedClip, cache_dir: str | Path | None = None) -> Path:
    """Cached quantised graph for these weights (exported on first use)."""
    root = Path(cache_dir) if cache_dir else default_cache_dir() / "onnx"
    folder = root / loaded.fingerprint
    int8 = folder / f"vision_int8_v{ONNX_FORMAT}.onnx"
    if not int8.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _export_int8(loaded, folder, int8)
    return int8


def export_vision_fp32(loaded: LoadedClip, dest: str | Path) -> None:
    """The vision tower + projection as an fp32 ONNX graph at ``dest``."""
    head = LeanVisionHead(loaded.model).eval()
    if loaded.device != "cpu":
        head = copy.deepcopy(head).cpu()
    dummy = torch.zeros(1, 3, loaded.image_size, loaded.image_size)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head,
            (dummy,),
            str(dest),
            dynamo=False,  # the dynamo exporter needs onnxscript (not installed)
            input_names=["pixel_values"],
            output_names=["image_embeds"],
            dynamic_axes={"pixel_values": {0: "n"}, "image_embeds": {0: "n"}},
            opset_version=ONNX_OPSET,
        )


def _export_int8(loaded: LoadedClip, folder: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Unique temp names + rename: concurrent workers never read a half file.
    tag = f"{os.getpid()}-{threading.get_ident()}"
    fp32, int8 = folder / f"tmp-{tag}-fp32.onnx", folder / f"tmp-{tag}-int8.onnx"
    try:
        export_vision_fp32(loaded, fp32)
        # Only the matmuls (the patch embedding is one too): the FLOPs are there.
        with _quiet_root_logger("Please consider to run pre-processing"):
            quantize_dynamic(
                fp32,
                int8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
            )
        os.replace(int8, dest)
    finally:
        for tmp in (fp32, int8):
            tmp.unlink(missing_ok=True)


@contextmanager
def _quiet_root_logger(prefix: str) -> Iterator[None]:
    """Drop one known, harmless root-logger warning (onnxruntime logs there).

    Measured: ORT's optional pre-processing pass did not make this graph faster.
    """

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _onnx_int8(loaded: LoadedClip, cache_dir: str | Path | None) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread budget as torch so the two never oversubscribe the cores.
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Spin during a run, not after it: torch works between runs (training.ml).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(
        str(onnx_int8_path(loaded, cache_dir)),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )

    def run(pixels: torch.Tensor) -> torch.Tensor:
        feed = {"pixel_values": pixels.cpu().numpy().astype(np.float32)}
        return torch.from_numpy(session.run(None, feed)[0])

    return run


# --- parity-checked selection ----------------------------------------------


def synthetic_probe_frames(n: int = PROBE_FRAMES, size: int = 224) -> np.ndarray:
    """Deterministic frames with edges, gradients and blobs (not white noise).

    Pure noise excites a ViT unlike real video; structured images give the
    parity check activations closer to what the app encodes.
    """
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    frames = []
    for i in range(n):
        freq = 2 + 3 * i
        r = 0.5 + 0.5 * np.sin(2 * np.pi * freq * xx + i)
        g = yy if i % 2 else 1.0 - yy
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        b = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.02 * i))
        checker = ((xx * (i + 2)).astype(int) + (yy * (i + 2)).astype(int)) % 2
        img = np.stack([r, g, b], axis=-1) * (0.6 + 0.4 * checker[..., None])
        img += rng.normal(0, 0.03, img.shape)  # a little sensor noise
        frames.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return np.stack(frames)


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (else bf16 is emulated, slow)."""
    try:
        return bool(
            torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        )
    except AttributeError:  # private helpers; absent means "do not bet on it"
        return False


def backend_device(device: str) -> str:
    """``device`` when it names CUDA and CUDA is there; otherwise "cpu"."""
    return device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def default_preference(device: str = "cpu") -> tuple[str, ...]:
    """Backends to try, fastest first, for this device and CPU."""
    if backend_device(device) != "cpu":
        return CUDA_PREFERENCE
    if native_cpu_bf16():
        return CPU_PREFERENCE
    return tuple(b for b in CPU_PREFERENCE if b != "bf16")


def build_image_encoder(
    loaded: LoadedClip,
    *,
    device: str = "cpu",
    prefer: Sequence[str] | None = None,
    min_cosine: float = 0.999,
    cache_dir: str | Path | None = None,
    probe_frames: np.ndarray | None = None,
) -> ImageEncoder:
    """The first backend in ``prefer`` whose output matches fp32 closely enough."""
    device = backend_device(device)
    order = list(prefer or default_preference(device))
    if "fp32" not in order:
        order.append("fp32")  # always a correct answer to fall back on
    probe = synthetic_probe_frames() if probe_frames is None else probe_frames
    reference_encoder = build_backend(loaded, "fp32", device=device)
    reference = reference_encoder.encode(probe)
    parity: dict[str, dict[str, Any]] = {}
    chosen = reference_encoder  # fp32 is the reference: accepted as it is
    for backend in order:
        if backend == "fp32":
            parity[backend] = _verdict(1.0, True)
            break
        encoder, parity[backend] = _try_backend(
            loaded, backend, device, cache_dir, probe, reference, min_cosine
        )
        if encoder is not None:
            chosen = encoder
            break
    chosen.parity = parity
    return chosen


def _try_backend(
    loaded: LoadedClip,
    backend: str,
    device: str,
    cache_dir: str | Path | None,
    probe: np.ndarray,
    reference: np.ndarray,
    min_cosine: float,
) -> tuple[ImageEncoder | None, dict[str, Any]]:
    try:
        encoder = build_backend(loaded, backend, device=device, cache_dir=cache_dir)
        cosine = min_row_cosine(encoder.encode(probe), reference)
    except Exception as exc:  # a backend that cannot run is just skipped
        return None, _verdict(None, False, f"{type(exc).__name__}: {exc}")
    accepted = cosine >= min_cosine
    return (encoder if accepted else None), _verdict(cosine, accepted)


def _verdict(
    cosine: float | None, accepted: bool, error: str | None = None
) -> dict[str, Any]:
    return {"cosine_min": cosine, "accepted": accepted, "error": error}


def min_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest cosine similarity between matching rows of two embedding sets."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


# --- text ------------------------------------------------------------------


def encode_texts(loaded: LoadedClip, texts: list[str]) -> np.ndarray:
    """Texts -> (len(texts), D) float32 L2-normalised joint-space embeddings."""
    model, out = loaded.model, []
    with torch.inference_mode():
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = loaded.tokenizer(
                texts[start : start + TEXT_BATCH],
                padding=True,
                truncation=True,
                max_length=model.config.text_config.max_position_embeddings,
                return_tensors="pt",
            ).to(loaded.device)
            pooled = model.text_model(**tokens).pooler_output
            out.append(F.normalize(model.text_projection(pooled).float(), dim=-1))
    if not out:
        return np.zeros((0, loaded.embed_dim), dtype=np.float32)
    return torch.cat(out).cpu().numpy()
