"""HARweb: label human actions in video with CLIP proposals and active learning."""

import os

# numpy's OpenBLAS keeps its idle threads spinning. With several web processes
# on a small machine they burn the cores the requests need: bench/review.py
# measured k-center next-clip p95 53 ms -> 28 ms (3 processes, 2 cores) with
# one BLAS thread. The matrices here are small; one thread is not slower.
# A default only, set before anything imports numpy; the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from harweb.celery import app as celery_app  # noqa: E402

__all__ = ("celery_app",)
