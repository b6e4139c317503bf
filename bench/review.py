"""Benchmark the review queue on PostgreSQL: next-clip and decision latency.

Run from the repository root (PostgreSQL on 127.0.0.1; the script creates and
drops its own database)::

    .venv/bin/python bench/review.py [--clips 10000] [--annotators 20]

Builds a project of ``--clips`` clips in 50 videos with top-5 proposals from
random probabilities over 8 labels, plus fake frame-embedding files (k-center
and the cold start need clip embeddings). Then:

1. time to pick the next clip (``review.next_clip_for``, one thread) for the
   cold start and each strategy, the first call (cache build) apart;
2. ``--annotators`` threads, each with its own logged-in Django test Client,
   doing ``GET queue/next`` + ``POST decision`` with a think time (mean
   ``--think-ms``), for the ``--concurrent`` strategies: all threads in this
   process, then spread over ``--processes`` forked processes (gunicorn's
   sync workers serve one request per process at a time).

Server time is measured by an outermost middleware: the whole Django stack,
database included, sharing one process and its GIL with the other threads as
a threaded server would (the client's own wall time is reported beside it,
and the machine's load average, since other work on it skews the figures).
Prints one JSON object per line; targets: next-clip p95 < 50 ms, decision
p95 < 30 ms (``meets_target``). Always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(ROOT))

# First, as in the app: the numerical libraries' thread defaults.
import training.ml  # noqa: E402, F401, I001
import numpy as np  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/harweb_bench"
NEXT_TARGET_MS = 50.0
DECISION_TARGET_MS = 30.0
N_LABELS = 8
N_VIDEOS = 50
DIM = 512


_timings = threading.local()


class ServerTiming:
    """Outermost middleware: the request's time inside Django (server time)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        t0, c0 = time.perf_counter(), time.thread_time()
        response = self.get_response(request)
        _timings.last = time.perf_counter() - t0
        _timings.cpu = time.thread_time() - c0
        return response


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def stats(samples_s: list[float]) -> dict:
    ms = sorted(1000.0 * s for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(ms[-1], 2),
    }


# --------------------------------------------------------------------------
# database


def _admin_conn(url: str):
    import psycopg

    base = url.rsplit("/", 1)[0] + "/postgres"
    return psycopg.connect(base, autocommit=True)


def create_database(url: str) -> str:
    name = url.rsplit("/", 1)[1]
    with _admin_conn(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(url: str, name: str) -> None:
    from django.db import connections

    connections.close_all()
    with _admin_conn(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(url: str, media: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["HARWEB_MEDIA_ROOT"] = str(media)
    os.environ.setdefault("HARWEB_LOG_LEVEL", "ERROR")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harweb.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test Client's host, no e-mail
    call_command("migrate", verbosity=0)
    from django.conf import settings

    settings.MIDDLEWARE = [f"{__name__}.ServerTiming", *settings.MIDDLEWARE]


# --------------------------------------------------------------------------
# data


def build(n_clips: int, seed: int = 0):
    """Project, users, videos, clips, proposals and fake embeddings."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from annotator.labels import create_label
    from annotator.models import (
        Clip,
        ClipStatus,
        Membership,
        Project,
        Proposal,
        Role,
        Video,
        VideoStatus,
    )
    from annotator.storage import media_path

    rng = np.random.default_rng(seed)
    project = Project.objects.create(name="Bench", slug="bench", clip_model="unused")
    for i in range(N_LABELS):
        create_label(project, f"action {i}")
    labels = list(project.labels.order_by("id"))
    per_video = -(-n_clips // N_VIDEOS)
    videos = [
        Video(
            project=project,
            original_name=f"v{i}.mp4",
            token=f"{i:032x}",
            status=VideoStatus.READY,
            duration=per_video + 1.0,
            processed_at=timezone.now(),
        )
        for i in range(N_VIDEOS)
    ]
    Video.objects.bulk_create(videos)
    videos = list(project.videos.order_by("id"))
    centres = rng.standard_normal((24, DIM)).astype(np.float32)
    fp = media_path("embeddings", "benchfingerprint")
    fp.mkdir(parents=True)
    clips = []
    made = 0
    for video in videos:
        n = min(per_video, n_clips - made)
        if n <= 0:
            break
        n_frames = 4 * (n + 1)
        which = rng.integers(len(centres), size=n_frames // 16 + 1).repeat(16)
        frames = centres[which[:n_frames]] + 0.6 * rng.standard_normal(
            (n_frames, DIM)
        ).astype(np.float32)
        np.save(fp / f"{video.pk}.npy", frames.astype(np.float16))
        for i in range(n):
            clips.append(
                Clip(
                    video=video,
                    index=i,
                    start_s=float(i),
                    end_s=float(i) + 2.0,
                    start_frame=i * 30,
                    end_frame=i * 30 + 59,
                    frame_indices=list(range(4 * i, 4 * i + 8)),
                    status=ClipStatus.PROPOSED,
                )
            )
        made += n
    probs = rng.dirichlet(np.full(N_LABELS, 0.4), size=len(clips))
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(axis=1)
    for clip, p, h in zip(clips, probs, entropy, strict=True):
        clip.top_prob, clip.informativeness = float(p.max()), float(h)
    Clip.objects.bulk_create(clips, batch_size=2000)
    clips = list(Clip.objects.filter(video__project=project).order_by("id"))
    rows = []
    for clip, p in zip(clips, probs, strict=True):
        for rank, j in enumerate(np.argsort(-p)[:5]):
            rows.append(
                Proposal(
                    clip=clip,
                    label=labels[j],
                    rank=rank,
                    score=float(np.log(p[j] + 1e-9)),
                    probability=float(p[j]),
                    model_tag="bench",
                )
            )
    Proposal.objects.bulk_create(rows, batch_size=5000)
    from django.db import connection

    with connection.cursor() as cursor:  # fresh planner statistics, as
        cursor.execute("ANALYZE")  # autovacuum would have after a bulk load
    User = get_user_model()
    seeder = User.objects.create_user("seeder")
    Membership.objects.create(project=project, user=seeder, role=Role.ANNOTATOR)
    return project, labels, clips, seeder


def prelabel(project, labels, clips, user, n: int, seed: int = 1) -> None:
    """Confirm ``n`` clips (every label well past the cold start)."""
    from django.utils import timezone

    from annotator.models import Clip, ClipStatus

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(clips), size=n, replace=False)
    now = timezone.now()
    for k, i in enumerate(chosen):
        Clip.objects.filter(pk=clips[i].pk).update(
            status=ClipStatus.ACCEPTED,
            label=labels[k % len(labels)],
            labeled_by=user,
            labeled_at=now,
        )


# --------------------------------------------------------------------------
# measurements


def pick_times(project, user, label: str, rounds: int) -> None:
    """Single-thread ``next_clip_for``: first call apart, then ``rounds``."""
    from annotator import review

    t0 = time.perf_counter()
    clip = review.next_clip_for(user, project)
    first = time.perf_counter() - t0
    clip.release(user)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        clip = review.next_clip_for(user, project)
        samples.append(time.perf_counter() - t0)
        clip.release(user)
    emit(
        metric="pick_next_clip",
        strategy=label,
        first_call_ms=round(1000 * first, 2),
        **stats(samples),
        target_p95_ms=NEXT_TARGET_MS,
        meets_target=stats(samples)["p95_ms"] < NEXT_TARGET_MS,
    )


_KINDS = ("next", "decision", "next_wall", "decision_wall", "next_cpu", "decision_cpu")


def annotate(user, slug, decisions, think_s, out, rng_seed, ready, go) -> None:
    """One annotator: next clip, look at it, decide; again."""
    from django.db import connections
    from django.test import Client

    rng = random.Random(rng_seed)
    client = Client()
    client.force_login(user)
    try:
        # Warm up (session, database connection) untimed, then start together
        # but not in lockstep: people do not press keys in unison.
        client.get(f"/api/projects/{slug}/")
        ready.wait()
        go.wait()
        time.sleep(think_s * rng.uniform(0, 1.5))
        for _ in range(decisions):
            t0 = time.perf_counter()
            resp = client.get(f"/api/projects/{slug}/queue/next")
            out["next_wall"].append(time.perf_counter() - t0)
            out["next"].append(_timings.last)
            out["next_cpu"].append(_timings.cpu)
            clip = resp.json()["clip"] if resp.status_code == 200 else None
            if clip is None:
                out["errors"].append(f"next {resp.status_code}")
                break
            time.sleep(think_s * rng.uniform(0.5, 1.5))
            kind = rng.random()
            if kind < 0.6:
                body = {"decision": "accept"}
            elif kind < 0.9:
                other = clip["proposals"][min(1, len(clip["proposals"]) - 1)]
                body = {"decision": "correct", "label": other["label"]["id"]}
            else:
                body = {"decision": "reject"}
            body["duration_ms"] = rng.randint(400, 4000)
            t0 = time.perf_counter()
            resp = client.post(
                f"/api/projects/{slug}/clips/{clip['id']}/decision",
                json.dumps(body),
                content_type="application/json",
            )
            out["decision_wall"].append(time.perf_counter() - t0)
            out["decision"].append(_timings.last)
            out["decision_cpu"].append(_timings.cpu)
            if resp.status_code != 201:
                out["errors"].append(f"decision {resp.status_code} {resp.content!r}")
            time.sleep(think_s * rng.uniform(0.2, 0.6))
    finally:
        connections.close_all()


def run_share(user_ids, slug, decisions, think_s, seed0, start, results) -> dict:
    """Run some annotators as threads of this process; ``start`` is passed
    once they are all warm. Returns (or puts on ``results``) their timings."""
    from django.contrib.auth import get_user_model

    users = list(get_user_model().objects.filter(pk__in=user_ids).order_by("pk"))
    out = {k: [] for k in _KINDS}
    out["errors"] = []
    ready = threading.Barrier(len(users) + 1)
    go = threading.Barrier(len(users) + 1)
    threads = [
        threading.Thread(
            target=annotate,
            args=(u, slug, decisions, think_s, out, seed0 + i, ready, go),
            name=f"annotator-{seed0 + i}",
        )
        for i, u in enumerate(users)
    ]
    for t in threads:
        t.start()
    ready.wait()
    start.wait()
    go.wait()
    for t in threads:
        t.join()
    if results is not None:
        results.put(out)
    return out


def concurrent(project, annotators, decisions, think_s, label, processes) -> None:
    """All annotators as threads of one process (``processes=1``: one threaded
    server sharing a GIL) or spread over forked processes (like gunicorn's
    sync workers, which each serve one request at a time)."""
    import multiprocessing as mp

    from django.db import connections

    ids = [u.pk for u in annotators]
    shares = [ids[i::processes] for i in range(processes)]
    if processes == 1:
        start = threading.Barrier(2)
        result: dict = {}

        def solo():
            result.update(
                run_share(shares[0], project.slug, decisions, think_s, 0, start, None)
            )

        runner = threading.Thread(target=solo)
        runner.start()
        start.wait()
        t0 = time.perf_counter()
        runner.join()
        outs = [result]
    else:
        connections.close_all()  # never share a connection across a fork
        ctx = mp.get_context("fork")
        start, results = ctx.Barrier(processes + 1), ctx.Queue()
        procs = [
            ctx.Process(
                target=run_share,
                args=(share, project.slug, decisions, think_s, 100 * i, start, results),
            )
            for i, share in enumerate(shares)
        ]
        for proc in procs:
            proc.start()
        start.wait()
        t0 = time.perf_counter()
        outs = [results.get() for _ in procs]
        for proc in procs:
            proc.join()
    wall = time.perf_counter() - t0
    out = {k: [x for o in outs for x in o[k]] for k in (*_KINDS, "errors")}

    from annotator.models import Annotation, Clip

    served = [a.clip_id for a in Annotation.objects.filter(user__in=annotators)]
    nxt, dec = stats(out["next"]), stats(out["decision"])
    common = {
        "strategy": label,
        "annotators": len(annotators),
        "processes": processes,
        "decisions_per_s": round(len(out["decision"]) / wall, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    emit(
        metric="next_clip_request",
        **common,
        **nxt,
        client_wall_p95_ms=stats(out["next_wall"])["p95_ms"],
        python_cpu_median_ms=stats(out["next_cpu"])["median_ms"],
        target_p95_ms=NEXT_TARGET_MS,
        meets_target=nxt["p95_ms"] < NEXT_TARGET_MS,
    )
    emit(
        metric="decision_request",
        **common,
        **dec,
        client_wall_p95_ms=stats(out["decision_wall"])["p95_ms"],
        python_cpu_median_ms=stats(out["decision_cpu"])["median_ms"],
        target_p95_ms=DECISION_TARGET_MS,
        meets_target=dec["p95_ms"] < DECISION_TARGET_MS,
    )
    # Two annotators never got the same clip; nothing is left claimed.
    emit(
        metric="integrity",
        strategy=label,
        processes=processes,
        errors=out["errors"][:5],
        n_errors=len(out["errors"]),
        duplicate_clips=len(served) - len(set(served)),
        claimed_left=Clip.objects.filter(claimed_by__in=annotators).count(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=20, help="per annotator")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=1000.0,
        help="mean time an annotator looks at a clip (a fast human)",
    )
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--processes",
        type=int,
        default=3,
        help="also run the annotators spread over this many processes "
        "(docker-compose runs gunicorn -w 3); 1 = threads only",
    )
    parser.add_argument(
        "--concurrent",
        default="entropy,kcenter",
        help="strategies for the concurrent runs (comma-separated)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("bench/review.py needs a PostgreSQL DATABASE_URL")
    name = create_database(url)
    media = Path(tempfile.mkdtemp(prefix="harweb-bench-"))
    setup_django(url, media)
    try:
        from django.contrib.auth import get_user_model

        from annotator import review
        from annotator.models import Membership, Role

        t0 = time.perf_counter()
        project, labels, clips, seeder = build(args.clips)
        emit(
            metric="setup",
            clips=len(clips),
            proposals=5 * len(clips),
            seconds=round(time.perf_counter() - t0, 1),
        )
        User = get_user_model()
        annotators = []
        for i in range(args.annotators):
            u = User.objects.create_user(f"annotator{i}")
            Membership.objects.create(project=project, user=u, role=Role.ANNOTATOR)
            annotators.append(u)
        solo = annotators[0]

        pick_times(project, solo, "cold_start", args.rounds)
        prelabel(project, labels, clips, seeder, n=max(len(clips) // 20, 50))
        for strategy in (
            "entropy",
            "margin",
            "least_confidence",
            "balanced",
            "kcenter",
            "random",
        ):
            project.strategy = strategy
            project.save(update_fields=["strategy"])
            review.clear_caches()
            pick_times(project, solo, strategy, args.rounds)

        for strategy in args.concurrent.split(","):
            for processes in sorted({1, args.processes}):
                project.strategy = strategy
                project.save(update_fields=["strategy"])
                review.clear_caches()
                review.next_clip_for(solo, project).release(solo)  # warm caches
                concurrent(
                    project,
                    annotators,
                    args.decisions,
                    args.think_ms / 1000,
                    strategy,
                    processes,
                )
    finally:
        if not args.keep:
            drop_database(url, name)


if __name__ == "__main__":
    main()
