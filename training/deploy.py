"""Loading a ModelVersion for scoring, once per process, verified by checksum.

Workers ask the database which version is live each time they score, and keep
loaded heads keyed by (version, checksum): a promotion takes effect at the next
scoring call without a restart.
"""

from __future__ import annotations

import functools
import logging
import threading

import numpy as np
import torch

from annotator.proposals import Scorer
from training.ml import artifacts
from training.ml.train import predict

log = logging.getLogger(__name__)
_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _load(artifact_dir: str, checksum: str):
    return artifacts.load_version(artifact_dir, expected_checksum=checksum)


def load_head(version):
    with _lock:
        return _load(version.artifact_dir, version.checksum)


def scorer_for_version(version, loaded, labels, text: np.ndarray) -> Scorer | None:
    """A scorer that maps the version's labels onto the current ones.

    Labels added since training get their zero-shot text rows; None when the
    version was trained on another image encoder's embeddings.
    """
    if version.encoder_fingerprint != loaded.fingerprint:
        log.warning("%s was trained on another encoder; using zero-shot", version)
        return None
    head, _config, trained = load_head(version)
    head = _retarget(head, trained, labels, text)

    def logits(x: np.ndarray) -> np.ndarray:
        return predict(head, x)

    return Scorer(tag=f"v{version.number}", logits=logits, version_id=version.pk)


def _retarget(head, trained: list[dict], labels, text: np.ndarray):
    import copy

    names = [entry["name"] for entry in trained]
    keep = {
        names.index(lab.name): i for i, lab in enumerate(labels) if lab.name in names
    }
    if keep == {i: i for i in range(len(names))} and len(labels) == len(names):
        return head
    head = copy.deepcopy(head)
    head.set_labels(torch.as_tensor(text, dtype=torch.float32), keep=keep)
    return head.eval()
