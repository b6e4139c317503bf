"""Pure PyTorch/numpy ML core of HARweb: nothing in this package imports Django.

The CLIP core: ``devclip`` (random-weight dev checkpoints with the real
tokenizer), ``clip`` (offline-first model loading), ``encoders`` (parity-checked
fast image encoders, text encoding), ``zeroshot`` (prompt ensembles, scoring,
proposals) and ``segments`` (clip proposals -> time segments).

Importing this package sets two thread defaults for the numerical libraries;
they only work when set before torch and numpy load, so entry points (harweb,
bench scripts) import ``training.ml`` first. Both are defaults: the
environment wins.
"""

import os
import platform

# torch's OpenMP threads (libgomp) spin after each parallel op. Encoding
# alternates torch (preprocessing, the temporal head) with onnxruntime (the
# int8 graph), and the spinning threads took a core from it: on one ViT-B/32
# GEMM, alternating, torch 71 -> 42 ms and onnxruntime 19 -> 10 ms with
# PASSIVE; run alone, neither got slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's OpenBLAS spins the same way. With several web processes on a small
# machine they burned the cores the requests need: bench/review.py measured
# k-center next-clip p95 53 -> 28 ms (3 processes, 2 cores) with one thread.
# The matrices numpy sees here are small; one thread is not slower. Only on
# x86-64, where torch brings its own BLAS (MKL): elsewhere torch may use
# OpenBLAS too, and its matmuls must keep their threads.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
