"""Training runs end to end: gather confirmed labels, train, evaluate, version,
promote, re-score. The ML itself lives in ``training.ml`` (no Django there)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from annotator import proposals
from annotator.models import ActionLabel, Clip, ClipStatus, Project
from annotator.services import queue_repropose
from annotator.storage import media_path
from harweb.queueing import enqueue
from training import deploy, optimize
from training.ml import artifacts, metrics, splits, zeroshot
from training.ml.temporal import TemporalHeadConfig
from training.ml.train import TrainConfig, TrainProgress, predict, train_head
from training.models import ModelVersion, RunStatus, TrainingRun

log = logging.getLogger(__name__)
HELDOUT_FRACTION = 0.2
MIN_HELDOUT_FOR_STOPPING = 20
STALE_AFTER = timedelta(minutes=10)


def start_run(
    project: Project, *, reason: str, user=None, queue: bool = True
) -> TrainingRun | None:
    """Queue a run unless one is already queued or running (DB-enforced)."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                project=project,
                reason=reason,
                triggered_by=user,
                progress_message="Waiting for a worker",
            )
    except IntegrityError:
        return None
    if queue:
        from training.tasks import train_task

        enqueue(train_task, run.pk)
    return run


def cancel_run(run: TrainingRun) -> None:
    """Cancel a queued run at once; ask a running one to stop after its epoch."""
    n = TrainingRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now(), cancel_requested=True
    )
    if not n:
        TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            cancel_requested=True
        )


@dataclass
class Dataset:
    clip_ids: list[int]
    x: np.ndarray  # (N, T, D) float32 frame embeddings
    y: np.ndarray  # (N,) label index into ``labels``
    labels: list[ActionLabel]


def confirmed_dataset(project: Project, loaded) -> Dataset:
    labels = proposals.project_labels(project)
    index = {lab.pk: i for i, lab in enumerate(labels)}
    clips = list(
        Clip.objects.filter(
            video__project=project, status=ClipStatus.ACCEPTED, label__in=labels
        )
        .select_related("video")
        .order_by("video_id", "index")
    )
    xs, ids, ys = [], [], []
    by_video: dict[int, list[Clip]] = {}
    for clip in clips:
        by_video.setdefault(clip.video_id, []).append(clip)
    for group in by_video.values():
        emb = proposals.frame_embeddings(group[0].video, loaded)
        xs.append(proposals.clip_embeddings(group, emb))
        ids += [c.pk for c in group]
        ys += [index[c.label_id] for c in group]
    dim = loaded.embed_dim
    x = np.concatenate(xs) if xs else np.zeros((0, project.frames_per_clip, dim))
    return Dataset(ids, x.astype(np.float32), np.asarray(ys, dtype=np.int64), labels)


def _split(project: Project, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    train_ids, held_ids = splits.heldout_split(
        data.clip_ids, data.y.tolist(), fraction=HELDOUT_FRACTION, seed=project.pk
    )
    pos = {cid: i for i, cid in enumerate(data.clip_ids)}
    return (
        np.asarray([pos[c] for c in train_ids], dtype=np.int64),
        np.asarray([pos[c] for c in held_ids], dtype=np.int64),
    )


def _callback(run: TrainingRun, epochs: int):
    def report(p: TrainProgress) -> bool:
        cancelled = TrainingRun.objects.filter(
            pk=run.pk, cancel_requested=True
        ).exists()
        top1 = "–" if p.val_top1 is None else f"{p.val_top1:.3f}"
        run.set_progress(
            0.1 + 0.8 * p.epoch / epochs,
            f"Epoch {p.epoch}/{epochs}: loss {p.loss:.3f}, held-out top-1 {top1}",
        )
        return not cancelled

    return report


def _live_metrics(project, loaded, data: Dataset, text, held: np.ndarray, names):
    live = project.model_versions.filter(is_live=True).first()
    if live is None or not len(held):
        return None, None
    scorer = deploy.scorer_for_version(live, loaded, data.labels, text)
    if scorer is None:
        return live, None
    logits = scorer.logits(data.x[held])
    return live, metrics.evaluate(logits, data.y[held], names)


def run_training(run: TrainingRun, train_config: TrainConfig | None = None) -> None:
    """Train on the project's confirmed labels; the run row records everything."""
    project = run.project
    run.set_progress(0.02, "Loading CLIP and confirmed labels")
    loaded = proposals.load_project_clip(project)
    data = confirmed_dataset(project, loaded)
    names = [lab.name for lab in data.labels]
    run.append_log(f"{len(data.clip_ids)} confirmed clips over {len(names)} labels")
    train_idx, held_idx = _split(project, data)
    text = proposals.text_embeddings(loaded, [lab.prompt_text for lab in data.labels])
    tc = train_config or TrainConfig(seed=project.pk)
    hc = TemporalHeadConfig(
        embed_dim=loaded.embed_dim,
        num_frames=project.frames_per_clip,
        heads=_heads_for(loaded.embed_dim),
        init_logit_scale=loaded.logit_scale,
    )
    # Too few held-out clips make a noisy early-stopping signal: then train on
    # the training loss alone and only measure on the held-out clips.
    watch = len(held_idx) >= MIN_HELDOUT_FOR_STOPPING
    vx, vy = (data.x[held_idx], data.y[held_idx]) if watch else (None, None)
    result = train_head(
        data.x[train_idx],
        data.y[train_idx],
        vx,
        vy,
        text,
        hc,
        tc,
        label_names=names,
        callback=_callback(run, tc.epochs),
    )
    held_x, held_y = data.x[held_idx], data.y[held_idx]
    if not watch and len(held_idx):
        result.metrics = metrics.evaluate(predict(result.head, held_x), held_y, names)
        zs = zeroshot.score(
            zeroshot.clip_features_mean(held_x), text, hc.init_logit_scale
        )
        result.zero_shot_metrics = metrics.evaluate(zs, held_y, names)
    run.set_progress(0.92, "Evaluating against the live model")
    live, live_metrics = _live_metrics(project, loaded, data, text, held_idx, names)
    report = {
        "model": result.metrics,
        "zero_shot": result.zero_shot_metrics,
        "live": live_metrics,
        "n_train": int(len(train_idx)),
        "n_heldout": int(len(held_idx)),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 2),
        "bf16": result.bf16,
    }
    version = save_version(project, run, result, data, text, loaded, report, live)
    run.set_progress(0.95, "Optimizing for inference")
    # Backend parity on held-out clips first, then training clips: it compares
    # backends with fp32, not with labels, so any clip makes the check firmer.
    # Never raises: a failure is recorded in version.backends (fp32 is used).
    parity_ids = [data.clip_ids[i] for i in (*held_idx, *train_idx)]
    optimize.optimize_version(version, parity_ids, loaded=loaded, head=result.head)
    promoted = promote_if_better(version, live)
    run.append_log(
        f"v{version.number}: held-out top-1 {_fmt(result.metrics.get('top1'))} "
        f"(zero-shot {_fmt(result.zero_shot_metrics.get('top1'))}, live "
        f"{_fmt((live_metrics or {}).get('top1'))}); "
        + ("promoted to live" if promoted else "kept; live model unchanged")
        + f"; inference backend {version.backend}"
    )
    run.finish(
        RunStatus.SUCCEEDED,
        progress=1.0,
        progress_message="Done",
        metrics=report,
        history=result.history,
        version=version,
        labels_used=len(data.clip_ids),
    )


def _heads_for(dim: int) -> int:
    return next(h for h in (8, 4, 2, 1) if dim % h == 0)


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def save_version(
    project, run, result, data, text, loaded, report, live
) -> ModelVersion:
    number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
    folder = media_path("models", project.pk, f"v{number}")
    names = [lab.name for lab in data.labels]
    extra = {
        "encoder_name": loaded.name,
        "encoder_fingerprint": loaded.fingerprint,
        "train_config": result.config.to_dict(),
        "project": project.slug,
        "version": number,
        "n_train": report["n_train"],
        "n_heldout": report["n_heldout"],
    }
    checksum = artifacts.save_version(
        folder,
        result.head,
        result.head_config,
        names,
        [lab.prompt_text for lab in data.labels],
        text,
        report,
        extra,
    )
    _draw(folder, result, names)
    return ModelVersion.objects.create(
        project=project,
        number=number,
        parent=live,
        encoder_name=loaded.name,
        encoder_fingerprint=loaded.fingerprint,
        config={"head": result.head_config.to_dict(), "train": result.config.to_dict()},
        metrics=report,
        artifact_dir=str(folder),
        checksum=checksum,
    )


def _draw(folder: Path, result, names: list[str]) -> None:
    # Pictures live beside the artifact but outside its checksum.
    confusion = result.metrics.get("confusion")
    if confusion:
        metrics.render_confusion_png(confusion, names, folder / "confusion.png")
    if result.history:
        metrics.render_curves_png(result.history, folder / "curves.png")


def promote_if_better(version: ModelVersion, live: ModelVersion | None) -> bool:
    """Live only if held-out top-1 >= the live model's (zero-shot if none)."""
    new = version.metrics.get("model", {}).get("top1")
    if live is not None:
        old = (version.metrics.get("live") or {}).get("top1")
    else:
        old = version.metrics.get("zero_shot", {}).get("top1")
    if new is None or (old is not None and new < old):
        return False
    promote(version)
    return True


def promote(version: ModelVersion) -> None:
    """Make ``version`` the live one atomically, then re-score in the background."""
    with transaction.atomic():
        ModelVersion.objects.filter(project=version.project, is_live=True).update(
            is_live=False
        )
        ModelVersion.objects.filter(pk=version.pk).update(
            is_live=True, promoted_at=timezone.now()
        )
    queue_repropose(version.project)


def rollback(project: Project) -> ModelVersion | None:
    """Make the live version's parent live again (None: back to zero-shot)."""
    live = project.model_versions.filter(is_live=True).first()
    if live is None:
        return None
    if live.parent is not None:
        promote(live.parent)
        return live.parent
    ModelVersion.objects.filter(pk=live.pk).update(is_live=False)
    queue_repropose(project)
    return None


def new_labels_since_last_run(project: Project) -> int:
    last = project.training_runs.order_by("-created_at").first()
    clips = Clip.objects.filter(video__project=project, status=ClipStatus.ACCEPTED)
    if last is not None:
        clips = clips.filter(labeled_at__gt=last.created_at)
    return clips.count()


def check_projects() -> list[int]:
    """Beat: fail runs whose worker died, re-send lost ones, start due ones."""
    now = timezone.now()
    for run in TrainingRun.objects.filter(
        status=RunStatus.RUNNING, heartbeat_at__lt=now - STALE_AFTER
    ):
        run.fail(
            RuntimeError(
                "The worker stopped during the run (no progress for "
                f"{STALE_AFTER.seconds // 60} minutes)."
            )
        )
    from training.tasks import train_task

    for run in TrainingRun.objects.filter(
        status=RunStatus.QUEUED, created_at__lt=now - timedelta(minutes=1)
    ):
        enqueue(train_task, run.pk)
    started = []
    for project in Project.objects.all():
        due = new_labels_since_last_run(project) >= project.retrain_min_labels
        if due and (run := start_run(project, reason="scheduled")) is not None:
            started.append(run.pk)
    return started
