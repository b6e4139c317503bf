"""Classify human actions with an exported HARweb model: onnxruntime + numpy only.

This file is shipped as ``classify.py`` in every model download, next to
``config.json``, ``labels.json``, ``image_encoder.onnx`` (CLIP image tower:
normalised pixels -> image embedding) and ``head.onnx`` (temporal head:
T frame embeddings -> label logits). It imports nothing from HARweb, torch or
Django, so it runs anywhere onnxruntime does.

Usage::

    python classify.py frames.npy            # uint8 RGB (T, H, W, 3) or (N, T, H, W, 3)
    python classify.py video.mp4             # needs PyAV (pip install av)
    python classify.py video.mp4 --json      # logits and top labels as JSON

Frames should be what HARweb samples: RGB, short side scaled to the model's
image size (224) and centre-cropped. Videos are cut like in the app: windows of
``window_s`` seconds every ``stride_s`` seconds, ``num_frames`` frames each
from a ``sample_fps`` grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

EPS = 1e-6
BATCH = 32


class Model:
    """An exported model folder loaded into two onnxruntime sessions."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.spec: dict[str, Any] = config["standalone"]
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        self.labels = [entry["name"] for entry in labels]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # The two sessions take turns: an idle pool spinning would slow the other.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        providers = ["CPUExecutionProvider"]
        self.image = ort.InferenceSession(
            str(folder / self.spec["image_encoder"]), options, providers=providers
        )
        self.head = ort.InferenceSession(
            str(folder / self.spec["head"]), options, providers=providers
        )
        self.num_frames = int(self.spec["num_frames"])
        self.size = int(self.spec["image_size"])
        self.mean = np.asarray(self.spec["mean"], dtype=np.float32)
        self.std = np.asarray(self.spec["std"], dtype=np.float32)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, 3, S, S) float32, CLIP-normalised."""
        if frames.shape[1:3] != (self.size, self.size):
            frames = np.stack([resize_square(f, self.size) for f in frames])
        x = frames.astype(np.float32) / np.float32(255.0)
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, D) float32 unit-norm image embeddings."""
        out = []
        for start in range(0, len(frames), BATCH):
            pixels = self.preprocess(frames[start : start + BATCH])
            (emb,) = self.image.run(["image_embeds"], {"pixel_values": pixels})
            out.append(emb / np.linalg.norm(emb, axis=1, keepdims=True))
        return np.concatenate(out).astype(np.float32)

    def logits(self, clips: np.ndarray) -> np.ndarray:
        """(N, T, H, W, 3) uint8 clips -> (N, L) label logits."""
        clips = np.stack([c[self._fit(len(c))] for c in clips])
        n, t = clips.shape[:2]
        emb = self.embed(clips.reshape(n * t, *clips.shape[2:]))
        return self.head_logits(emb.reshape(n, t, -1))

    def head_logits(self, emb: np.ndarray) -> np.ndarray:
        """(N, T, D) unit-norm frame embeddings -> (N, L) label logits."""
        emb = np.stack([e[self._fit(len(e))] for e in emb]).astype(np.float32)
        (logits,) = self.head.run(["logits"], {"frames": emb})
        return logits.astype(np.float32)

    def _fit(self, length: int) -> np.ndarray:
        """Indices of exactly ``num_frames`` frames spread over ``length``."""
        picks = np.round(np.linspace(0, length - 1, self.num_frames))
        return picks.astype(np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size``, centre crop (needs Pillow for the resize)."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale = size / min(h, w)
    out_w, out_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = np.asarray(Image.fromarray(frame).resize((out_w, out_h), Image.BICUBIC))
    top, left = (out_h - size) // 2, (out_w - size) // 2
    return img[top : top + size, left : left + size]


# --- videos --------------------------------------------------------------------


def sample_video(path: str | Path, fps: float, size: int) -> tuple[np.ndarray, ...]:
    """(grid times, frames): the frame shown at each k / fps, squared to size."""
    import av

    frames, shown, prev, first = [], [], None, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else len(shown) / fps
            first = t if first is None else first
            t -= first
            while prev is not None and len(frames) / fps + EPS < t:
                frames.append(_square(prev, size))
            prev = frame
            shown.append(t)
    if prev is None:
        raise ValueError(f"{path}: no video frames")
    step = float(np.median(np.diff(shown))) if len(shown) > 1 else 1.0 / fps
    while len(frames) / fps < shown[-1] + step - 1e-9 or not frames:
        frames.append(_square(prev, size))
    return np.arange(len(frames)) / fps, np.stack(frames)


def _square(frame: Any, size: int) -> np.ndarray:
    scale = size / min(frame.width, frame.height)
    out_w = max(size, round(frame.width * scale))
    out_h = max(size, round(frame.height * scale))
    shrink = out_w * out_h < frame.width * frame.height
    rgb = frame.to_ndarray(  # the same swscale call as the app makes
        width=out_w,
        height=out_h,
        format="rgb24",
        interpolation="AREA" if shrink else "BICUBIC",
        threads=1,
    )
    top, left = (out_h - size) // 2, (out_w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def clip_windows(duration: float, window: float, stride: float) -> list[tuple]:
    """Half-open [start, end) windows covering the video, as the app cuts them."""
    if duration <= 0:
        return []
    if duration <= window + EPS:
        return [(0.0, float(duration))]
    count = int(np.floor((duration - window + EPS) / stride)) + 1
    windows = [(i * stride, i * stride + window) for i in range(count)]
    if duration - windows[-1][1] > window / 2 + EPS:
        windows.append((duration - window, float(duration)))
    return windows


def clip_indices(times: np.ndarray, start: float, end: float, t: int) -> np.ndarray:
    """``t`` grid indices spread over [start, end)."""
    inside = np.flatnonzero((times >= start - EPS) & (times < end - EPS))
    if len(inside) == 0:
        nearest = int(np.argmin(np.abs(times - (start + end) / 2)))
        return np.full(t, nearest, dtype=np.int64)
    return inside[np.round(np.linspace(0, len(inside) - 1, t)).astype(np.int64)]


def video_logits(model: Model, path: str | Path) -> tuple[np.ndarray, list[tuple]]:
    """Logits per window of a video; each sampled frame is encoded once, in
    order and in the same batches as the app, so int8 results match it."""
    spec = model.spec
    fps = float(spec.get("sample_fps", 4.0))
    times, frames = sample_video(path, fps, model.size)
    duration = len(frames) / fps
    windows = clip_windows(
        duration, spec.get("window_s", 2.0), spec.get("stride_s", 1.0)
    )
    idx = np.stack([clip_indices(times, s, e, model.num_frames) for s, e in windows])
    return model.head_logits(model.embed(frames)[idx]), windows


# --- command line ----------------------------------------------------------------


def input_logits(model: Model, path: Path) -> tuple[np.ndarray, list]:
    """Logits (N, L) for a .npy of frames or a video, and each clip's
    (start, end) seconds (None for .npy input)."""
    if path.suffix.lower() == ".npy":
        frames = np.load(path)
        if frames.dtype != np.uint8 or frames.ndim not in (4, 5):
            raise SystemExit(
                f"{path}: expected uint8 RGB frames (T, H, W, 3) or (N, T, H, W, 3),"
                f" got {frames.dtype} {frames.shape}"
            )
        clips = frames[None] if frames.ndim == 4 else frames
        return model.logits(clips), [None] * len(clips)
    try:
        return video_logits(model, path)
    except ImportError as exc:
        raise SystemExit(f"reading videos needs PyAV (pip install av): {exc}") from exc


def ranked(model: Model, logits: np.ndarray, windows: list, top: int) -> list[dict]:
    """One row per clip: its window, raw logits and the top labels."""
    probs = softmax(logits.astype(np.float64))
    rows = []
    for window, row, p in zip(windows, logits, probs, strict=True):
        order = np.argsort(-p, kind="stable")[:top]
        rows.append(
            {
                "start": None if window is None else round(float(window[0]), 3),
                "end": None if window is None else round(float(window[1]), 3),
                "logits": [float(v) for v in row],
                "top": [
                    {"label": model.labels[i], "probability": float(p[i])}
                    for i in order
                ],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify actions in clips.")
    parser.add_argument("input", type=Path, help=".npy of frames, or a video file")
    parser.add_argument(
        "--model", type=Path, default=Path(__file__).resolve().parent,
        help="exported model folder (default: this file's folder)",
    )  # fmt: skip
    parser.add_argument("--top", type=int, default=3, help="labels shown per clip")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    model = Model(args.model)
    logits, windows = input_logits(model, args.input)
    rows = ranked(model, logits, windows, args.top)
    if args.json:
        print(json.dumps({"labels": model.labels, "clips": rows}))
        return 0
    for i, row in enumerate(rows):
        span = "" if row["start"] is None else f" {row['start']:.1f}-{row['end']:.1f}s"
        best = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in row["top"])
        print(f"clip {i}{span}: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
