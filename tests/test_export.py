"""Optimized redeploy: per-backend parity table, refusals, and live reloading."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from annotator import proposals
from annotator.media import SampledFrames
from annotator.models import Clip, ClipStatus, Project
from tests.sticks import confirm, ingest_sticks
from training import optimize, pipeline
from training.ml import encoders, export
from training.ml.clip import load_clip
from training.ml.temporal import TemporalHead, TemporalHeadConfig
from training.ml.train import TrainConfig
from training.models import ModelVersion, RunStatus, TrainingRun

FAST = TrainConfig(epochs=6, batch_size=16, patience=0, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model, busy CI box: extra threads only wait
    yield
    torch.set_num_threads(before)


# --- a small trained project (also used by test_download) ----------------------


def make_stick_project(user, clip_dir, demos, n_videos: int = 2) -> Project:
    """Ingest a few stick-figure videos and confirm every clean clip."""
    project, truth = ingest_sticks(user, clip_dir, demos[:n_videos])
    confirm(Clip.objects.filter(pk__in=truth), truth, user)
    return project


def train(project: Project, config: TrainConfig = FAST) -> TrainingRun:
    run = pipeline.start_run(project, reason="test", queue=False)
    assert run.claim()
    pipeline.run_training(run, config)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error + run.traceback
    return run


@pytest.fixture
def trained(user, tiny_clip_dir, plain_demo_videos):
    project = make_stick_project(user, tiny_clip_dir, plain_demo_videos)
    return project, train(project)


# --- pure ML: the table and the choice -------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_clip_dir):
    loaded = load_clip(str(tiny_clip_dir))
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(4, loaded.embed_dim), dim=-1)
    config = TemporalHeadConfig(embed_dim=loaded.embed_dim, num_frames=4, heads=2)
    head = TemporalHead(config, text).eval()
    frames = encoders.synthetic_probe_frames(12)
    return loaded, head, frames.reshape(3, 4, *frames.shape[1:])


def test_export_records_a_parity_table_and_picks_the_fastest(tiny, tmp_path):
    loaded, head, clips = tiny
    result = export.optimize(loaded, head, clips, cache_dir=tmp_path, rounds=1)
    table = result.table()
    assert [r["backend"] for r in table] == list(export.candidate_backends("cpu"))
    assert table[-1]["backend"] == "fp32" and table[-1]["accepted"]
    ran = [r for r in table if not (r["error"] or "").startswith("skipped")]
    for row in ran:
        assert row["images_per_s"] > 0 and row["clips_per_s"] > 0, row
        assert row["peak_mb"] >= 0 and 0.99 < row["cosine_min"] <= 1 + 1e-6, row
        assert 0 <= row["top1_agreement"] <= 1, row
        ok = row["cosine_min"] >= 0.999 and row["top1_agreement"] >= 0.99
        assert row["accepted"] == (ok or row["backend"] == "fp32"), row
    accepted = [r for r in table if r["accepted"]]
    fastest = max(accepted, key=lambda r: r["clips_per_s"])
    assert result.backend == fastest["backend"] == result.encoder.backend
    assert (result.clips, result.frames) == (3, 12)


def test_impossible_threshold_refuses_all_but_fp32(tiny, tmp_path):
    loaded, head, clips = tiny
    result = export.optimize(
        loaded, head, clips, min_cosine=1.01, cache_dir=tmp_path, rounds=1
    )
    assert result.backend == "fp32" and result.encoder.backend == "fp32"
    *others, last = result.reports
    assert last.backend == "fp32" and last.accepted
    for report in others:
        assert not report.accepted
        if not report.error.startswith("skipped"):
            assert report.error.startswith("parity: cosine"), report.error
            assert report.cosine_min > 0.99


def test_a_backend_that_fails_is_recorded_not_raised(tiny, tmp_path, monkeypatch):
    loaded, head, clips = tiny
    real = encoders.build_backend

    def broken(loaded, backend, **kw):
        if backend == "onnx-int8":
            raise RuntimeError("no onnxruntime here")
        return real(loaded, backend, **kw)

    monkeypatch.setattr(encoders, "build_backend", broken)
    result = export.optimize(
        loaded, head, clips, prefer=("onnx-int8",), cache_dir=tmp_path, rounds=1
    )
    row = result.report("onnx-int8")
    assert not row.accepted and row.error == "RuntimeError: no onnxruntime here"
    assert result.backend == "fp32"


# --- the training workflow ------------------------------------------------------


def test_training_run_optimizes_the_new_version(trained, client_in):
    project, run = trained
    version = run.version
    table = version.backends
    assert version.backend and table[-1]["backend"] == "fp32"
    chosen = next(r for r in table if r["backend"] == version.backend)
    assert chosen["accepted"] and chosen["top1_agreement"] >= 0.99
    assert f"inference backend {version.backend}" in run.log
    page = client_in.get(f"/p/{project.slug}/models/v{version.number}/")
    assert b'id="backends"' in page.content
    assert b'id="download"' in page.content

    # Re-optimized with an impossible threshold: every backend but fp32 refused.
    clips = Clip.objects.filter(video__project=project, status=ClipStatus.ACCEPTED)
    optimize.optimize_version(version, list(clips[:4]), min_cosine=1.01)
    version.refresh_from_db()
    assert version.backend == "fp32"
    *refused, last = version.backends
    assert last["backend"] == "fp32" and last["accepted"]
    assert refused and not any(r["accepted"] for r in refused)


def test_optimization_failure_does_not_fail_the_run(
    user, tiny_clip_dir, plain_demo_videos, monkeypatch
):
    project = make_stick_project(user, tiny_clip_dir, plain_demo_videos)

    def boom(*args, **kwargs):
        raise MemoryError("out of memory while exporting")

    monkeypatch.setattr(export, "optimize", boom)
    version = train(project).version
    assert version.backend == "fp32"
    failed, fallback = version.backends
    assert failed["backend"] == "optimize" and not failed["accepted"]
    assert "MemoryError: out of memory" in failed["error"]
    assert fallback == {**fallback, "backend": "fp32", "accepted": True}


# --- serving ------------------------------------------------------------------


def _second_version(v1: ModelVersion, backend: str) -> ModelVersion:
    """Another version over the same artifact (what a retrain would produce)."""
    return ModelVersion.objects.create(
        project=v1.project,
        number=v1.number + 1,
        parent=v1,
        encoder_name=v1.encoder_name,
        encoder_fingerprint=v1.encoder_fingerprint,
        config=v1.config,
        metrics=v1.metrics,
        artifact_dir=v1.artifact_dir,
        checksum=v1.checksum,
        backend=backend,
    )


def test_serving_follows_the_live_version_without_restart(trained, monkeypatch):
    project, run = trained
    v1 = run.version
    ModelVersion.objects.filter(pk=v1.pk).update(backend="int8-dynamic")
    v2 = _second_version(v1, "fp32")
    loaded = proposals.load_project_clip(project)
    proposals.forget_encoders()  # as in a fresh worker process
    pipeline.promote(v1)
    first = proposals.image_encoder(loaded, project.pk)
    assert first.backend == "int8-dynamic"
    assert proposals.image_encoder(loaded, project.pk) is first  # once per process

    # A request arriving while another thread builds the new backend is served
    # at once by the current encoder, then the switch completes.
    pipeline.promote(v2)
    building, done = threading.Event(), threading.Event()

    def other_worker_thread() -> None:
        with proposals._build_lock:  # as if it were building the new backend
            building.set()
            done.wait(10)

    thread = threading.Thread(target=other_worker_thread)
    thread.start()
    building.wait(5)
    try:
        assert proposals.image_encoder(loaded, project.pk) is first
    finally:
        done.set()
        thread.join()
    second = proposals.image_encoder(loaded, project.pk)
    assert second.backend == "fp32"

    # New videos are encoded with the live backend (cache key: encoder weights).
    video = project.videos.first()
    proposals.embeddings_path(video, loaded.fingerprint).unlink()
    frames = SampledFrames.load(video.frames_path()).frames
    emb = proposals.frame_embeddings(video, loaded)
    np.testing.assert_array_equal(emb, second.encode(frames).astype(np.float16))

    # A live backend that cannot be built never fails a request.
    def broken(*args, **kwargs):
        raise RuntimeError("corrupt graph")

    monkeypatch.setattr(encoders, "build_backend", broken)
    ModelVersion.objects.filter(pk=v1.pk).update(backend="onnx-int8")
    pipeline.promote(v1)
    assert proposals.image_encoder(loaded, project.pk) is second
    monkeypatch.undo()

    # Switching back to a backend built before costs nothing.
    ModelVersion.objects.filter(pk=v1.pk).update(backend="int8-dynamic")
    assert proposals.image_encoder(loaded, project.pk) is first
    pipeline.rollback(project)  # v1 has no parent: back to zero-shot
    auto = proposals.image_encoder(loaded, project.pk)
    assert auto.backend in encoders.BACKENDS and auto not in (first, second)
    proposals.forget_encoders()
