"""Benchmark TemporalHead training: seconds per epoch and clips/s, fp32 vs bf16.

Synthetic clips at ViT-B/32 width (D=512), 8 frames, 1000 training clips by
default. Each (kind, precision) run prints one JSON line; a last line per kind
gives the bf16 speed-up (fp32 seconds / bf16 seconds; > 1 means bf16 is faster).

    python bench/train.py            # both head kinds, 6 epochs each
    python bench/train.py --quick    # attention head, 2 epochs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# First, as in the app: the numerical libraries' thread defaults.
import training.ml  # noqa: E402, F401, I001
import numpy as np  # noqa: E402
import torch  # noqa: E402

from training.ml.temporal import TemporalHeadConfig  # noqa: E402
from training.ml.train import TrainConfig, native_bf16, train_head  # noqa: E402


def synthetic(n: int, frames: int, dim: int, labels: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, frames, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y = rng.integers(0, labels, n)
    text = rng.standard_normal((labels, dim)).astype(np.float32)
    return x, y, text / np.linalg.norm(text, axis=-1, keepdims=True)


def run(args: argparse.Namespace, kind: str, bf16: bool, data) -> dict:
    x, y, vx, vy, text = data
    head = TemporalHeadConfig(
        embed_dim=args.dim, num_frames=args.frames, kind=kind, layers=args.layers
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=0,
        bf16=bf16,
        num_threads=args.threads,
    )
    start = time.perf_counter()
    result = train_head(x, y, vx, vy, text, head, config)
    total = time.perf_counter() - start
    # Per-epoch wall time from the history; the first epoch pays one-off costs.
    stamps = [0.0] + [h["seconds"] for h in result.history]
    per_epoch = np.diff(stamps)[1:] if len(stamps) > 2 else np.diff(stamps)
    sec = float(np.median(per_epoch))
    return {
        "kind": kind,
        "precision": "bf16" if bf16 else "fp32",
        "clips": len(y),
        "frames": args.frames,
        "dim": args.dim,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads() if args.threads is None else args.threads,
        "epochs": len(result.history),
        "sec_per_epoch": round(sec, 4),
        "clips_per_s": round(len(y) / sec, 1),
        "total_s": round(total, 3),
        "bf16_used": result.bf16,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="attention, 2 epochs")
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=TrainConfig.num_threads, help="0: torch default"
    )
    parser.add_argument("--kind", choices=["attention", "transformer", "both"])
    args = parser.parse_args()
    args.threads = args.threads or None
    if args.quick:
        args.epochs = 2
    kinds = (
        ["attention", "transformer"] if (args.kind or "both") == "both" else [args.kind]
    )
    if args.quick and args.kind is None:
        kinds = ["attention"]

    x, y, text = synthetic(args.clips, args.frames, args.dim, args.labels, seed=0)
    vx, vy, _ = synthetic(
        max(args.clips // 5, 2), args.frames, args.dim, args.labels, 1
    )
    data = (x, y, vx, vy, text)
    native = native_bf16(torch.device("cpu"))
    print(json.dumps({"torch": torch.__version__, "native_bf16": native}), flush=True)
    # Warm-up: the first optimiser import and kernel selection are one-off.
    warm = argparse.Namespace(**{**vars(args), "epochs": 1})
    run(warm, kinds[0], False, data)

    for kind in kinds:
        fp32 = run(args, kind, False, data)
        print(json.dumps(fp32), flush=True)
        bf16 = run(args, kind, True, data)
        print(json.dumps(bf16), flush=True)
        speedup = fp32["sec_per_epoch"] / bf16["sec_per_epoch"]
        print(json.dumps({"kind": kind, "bf16_speedup": round(speedup, 3)}), flush=True)


if __name__ == "__main__":
    main()
