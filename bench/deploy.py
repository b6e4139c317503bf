"""Benchmark the optimized redeploy: backend speed and parity at ViT-B/32 shapes.

Run from the repository root::

    .venv/bin/python bench/deploy.py [--quick] [--model DIR] [--clips N]

Without ``--model`` a random-weight ViT-B/32-shaped dev CLIP is built in a temp
folder (speed and parity depend on shapes). Held-out clips come from
stick-figure demo videos, decoded and sampled like the app does, and the
temporal head is initialised from label prompts (an untrained version). Then
``training.ml.export.optimize`` runs exactly as a training run does after it
saves a version. Prints one JSON object per line: each backend's images/s,
clips/s, peak memory and parity (cosine, top-1 agreement, accepted), the chosen
backend with its speed-up over fp32 eager (timed in alternation with fp32, so
load on the machine hits both), and the standalone ``classify.py`` runtime's
speed. Always exits 0; see "meets_target".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

from annotator import media  # noqa: E402
from annotator.demo_videos import ACTION_PROMPTS, make_demo_videos  # noqa: E402
from training.ml import encoders, export, runtime, zeroshot  # noqa: E402
from training.ml.clip import LoadedClip, load_clip, resolve_device  # noqa: E402
from training.ml.devclip import make_dev_clip  # noqa: E402
from training.ml.temporal import TemporalHead, TemporalHeadConfig  # noqa: E402

TARGET = 4.0  # chosen backend vs fp32 eager, with parity met
FRAMES = 8  # per clip, the app's default
FPS = 4.0


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def held_out_clips(workdir: Path, n: int) -> np.ndarray:
    """(n, FRAMES, 224, 224, 3) uint8 clips of stick-figure demo videos."""
    videos = make_demo_videos(workdir / "demo", count=2, seed=3, duration_s=8.0)
    clips = []
    for video in videos:
        sampled = media.sample_frames(video.path, fps=FPS, size=224)
        for start, end in media.clip_windows(len(sampled.frames) / FPS, 2.0, 1.0):
            idx = media.clip_frame_indices(sampled.times, start, end, FRAMES)
            clips.append(sampled.frames[idx])
    order = np.random.default_rng(0).permutation(len(clips))[:n]
    return np.stack([clips[i] for i in order])


def make_head(loaded: LoadedClip) -> TemporalHead:
    prompts = list(ACTION_PROMPTS.values())
    text = zeroshot.label_text_embeddings(loaded, prompts, ["a video of {}."])
    config = TemporalHeadConfig(
        embed_dim=loaded.embed_dim,
        num_frames=FRAMES,
        init_logit_scale=loaded.logit_scale,
    )
    return TemporalHead(config, torch.from_numpy(text)).eval()


def paired_ratio(
    fp32: encoders.ImageEncoder,
    chosen: encoders.ImageEncoder,
    frames: np.ndarray,
    rounds: int,
) -> tuple[float, float]:
    """(fp32 s, chosen s), best of ``rounds`` alternating runs."""
    t_ref, t_new = [], []
    for _ in range(rounds):
        for enc, times in ((fp32, t_ref), (chosen, t_new)):
            start = time.perf_counter()
            enc.encode(frames)
            times.append(time.perf_counter() - start)
    return min(t_ref), min(t_new)


def bench_standalone(
    loaded: LoadedClip,
    head: TemporalHead,
    result: export.ExportResult,
    clips: np.ndarray,
    workdir: Path,
) -> None:
    """The downloadable graphs run by classify.py's code (onnxruntime only)."""
    int8 = any(r.backend == "onnx-int8" and r.accepted for r in result.reports)
    folder = workdir / "standalone"
    spec = export.export_standalone(loaded, head, folder, int8=int8)
    spec.update(sample_fps=FPS, window_s=2.0, stride_s=1.0)
    (folder / "config.json").write_text(json.dumps({"standalone": spec}))
    labels = [{"name": n, "index": i} for i, n in enumerate(ACTION_PROMPTS)]
    (folder / "labels.json").write_text(json.dumps(labels))
    model = runtime.Model(folder, threads=torch.get_num_threads())
    model.logits(clips[:1])  # warm-up
    start = time.perf_counter()
    model.logits(clips)
    seconds = time.perf_counter() - start
    emit(
        figure="standalone_classify_py",
        image_encoder=spec["image_encoder_precision"],
        clips_per_s=round(len(clips) / seconds, 2),
        images_per_s=round(clips.shape[0] * clips.shape[1] / seconds, 2),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="CLIP folder (default: dev B/32)")
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--clips", type=int, help="held-out clips for parity")
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda or auto (cuda when available)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n_clips = args.clips or (4 if args.quick else export.MAX_CLIPS)
    rounds = 2 if args.quick else 5
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="harweb-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model or make_dev_clip(work / "clip-b32", "base")
        loaded = load_clip(str(model_dir), device=device)
        clips = held_out_clips(work, n_clips)
        head = make_head(loaded)
        emit(
            figure="setup",
            model=str(model_dir),
            random_weights=loaded.is_random,
            clips=len(clips),
            frames=int(clips.shape[0] * clips.shape[1]),
            device=device,
            torch=torch.__version__,
            threads=torch.get_num_threads(),
        )
        start = time.perf_counter()
        result = export.optimize(
            loaded,
            head,
            clips,
            device=device,
            cache_dir=work / "onnx",
            max_clips=n_clips,
            timing_clips=min(n_clips, 4),
            rounds=min(rounds, 3),
        )
        optimize_s = time.perf_counter() - start
        fp32 = result.report("fp32")
        for row in result.table():
            ratio = (
                row["clips_per_s"] / fp32.clips_per_s if row["clips_per_s"] else None
            )
            emit(
                figure="backend",
                **row,
                ratio_vs_fp32_eager=None if ratio is None else round(ratio, 3),
            )
        chosen = result.report(result.backend)
        frames = clips.reshape(-1, 224, 224, 3)
        reference = encoders.build_backend(loaded, "fp32", device=device)
        t_ref, t_new = paired_ratio(reference, result.encoder, frames, rounds)
        ratio = t_ref / t_new
        parity = chosen.cosine_min >= result.min_cosine and (
            chosen.top1_agreement >= result.min_agreement
        )
        emit(
            figure="chosen_backend",
            backend=result.backend,
            optimize_s=round(optimize_s, 2),
            images_per_s=round(len(frames) / t_new, 2),
            fp32_eager_images_per_s=round(len(frames) / t_ref, 2),
            ratio_vs_fp32_eager=round(ratio, 3),
            cosine_min=chosen.cosine_min,
            top1_agreement=chosen.top1_agreement,
            target=f">= {TARGET}x fp32 eager with cosine >= {result.min_cosine} "
            f"and top-1 agreement >= {result.min_agreement}",
            meets_target=bool(ratio >= TARGET and parity),
        )
        bench_standalone(loaded, head, result, clips, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
