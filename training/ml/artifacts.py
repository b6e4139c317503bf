"""Model versions on disk: one immutable folder per trained head.

A version folder holds

    model.safetensors  fp32 head weights, plus the label text embeddings
                       under the key ``text_emb`` (the zero-shot rows)
    config.json        format tag, head config, train config, caller metadata
    labels.json        [{"name", "prompt", "index"}] in classifier-row order
    metrics.json       held-out metrics (whatever the caller passes)
    checksum.txt       sha256 over the four files above in that order

``save_version`` builds the folder under a temporary name and renames it into
place, so readers never see a half-written version. ``load_version`` recomputes
the checksum before trusting any byte. ``export_onnx_head`` writes the head as
an ONNX graph (B, T, D) -> (B, L) and checks it against torch with onnxruntime.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.ml.temporal import TemporalHead, TemporalHeadConfig

FORMAT = "harweb.temporal_head"
FORMAT_VERSION = 1
# Checksummed files, in hashing order. checksum.txt itself is not included.
FILES = ("model.safetensors", "config.json", "labels.json", "metrics.json")
TEXT_EMB_KEY = "text_emb"
_RESERVED = {"format", "format_version", "head_config", "num_labels", "embed_dim"}


class ArtifactCorrupt(Exception):
    """A version folder is missing files, fails its checksum, or does not parse."""


def save_version(
    folder: str | Path,
    head: TemporalHead,
    head_config: TemporalHeadConfig,
    label_names: Sequence[str],
    prompts: Sequence[str],
    text_emb: Any,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a version folder atomically and return its sha256 checksum.

    ``extra`` holds metadata merged into config.json: the encoder name and
    fingerprint, dataset ids, and ``train_config`` (a TrainConfig or a dict).
    The folder must not exist yet (an empty directory is accepted): versions are
    immutable.
    """
    folder = Path(folder)
    n = head.num_labels
    text = torch.as_tensor(np.asarray(text_emb), dtype=torch.float32)
    if len(label_names) != n or len(prompts) != n or text.shape[0] != n:
        raise ValueError(
            f"head has {n} labels but got {len(label_names)} names, "
            f"{len(prompts)} prompts and {text.shape[0]} text embeddings"
        )
    config = _config_json(head_config, n, extra or {})
    labels = [
        {"name": str(name), "prompt": str(prompt), "index": i}
        for i, (name, prompt) in enumerate(zip(label_names, prompts, strict=True))
    ]
    _claim(folder)

    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True)
    try:
        tensors = {
            k: v.detach().to("cpu", torch.float32).contiguous()
            for k, v in head.state_dict().items()
        }
        tensors[TEXT_EMB_KEY] = text.contiguous()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "labels.json", labels)
        _write_json(tmp / "metrics.json", metrics)
        checksum = folder_checksum(tmp)
        (tmp / "checksum.txt").write_text(checksum + "\n", encoding="ascii")
        _fsync_tree(tmp)
        os.rename(tmp, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return checksum


def load_version(
    folder: str | Path, expected_checksum: str | None = None
) -> tuple[TemporalHead, dict[str, Any], list[dict[str, Any]]]:
    """Verify and load a version: (head in eval mode, config.json, labels.json).

    Raises ArtifactCorrupt when files are missing, the checksum differs from
    checksum.txt or from ``expected_checksum`` (e.g. the one stored in the
    database), or the contents do not parse.
    """
    folder = Path(folder)
    verify_version(folder, expected_checksum)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ArtifactCorrupt(f"{folder}: config.json is not a {FORMAT} file")
        if config.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactCorrupt(
                f"{folder}: format version {config['format_version']} is newer "
                f"than this code reads ({FORMAT_VERSION})"
            )
        head_config = TemporalHeadConfig.from_dict(config["head_config"])
        state = load_file(str(folder / "model.safetensors"))
        state.pop(TEXT_EMB_KEY, None)
        head = TemporalHead.from_state_dict(head_config, state).eval()
    except ArtifactCorrupt:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ArtifactCorrupt(f"{folder}: cannot load version: {exc}") from exc
    if [lab.get("index") for lab in labels] != list(range(head.num_labels)):
        raise ArtifactCorrupt(
            f"{folder}: labels.json lists {len(labels)} labels, "
            f"weights have {head.num_labels}"
        )
    return head, config, labels


def verify_version(folder: str | Path, expected_checksum: str | None = None) -> str:
    """Check presence and checksum of every file; return the checksum."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactCorrupt(f"version folder {folder} does not exist")
    missing = [f for f in (*FILES, "checksum.txt") if not (folder / f).is_file()]
    if missing:
        raise ArtifactCorrupt(f"{folder}: missing {', '.join(missing)}")
    recorded = (folder / "checksum.txt").read_text(encoding="ascii").strip()
    actual = folder_checksum(folder)
    if actual != recorded:
        raise ArtifactCorrupt(
            f"{folder}: checksum mismatch, files hash to {actual[:12]}… but "
            f"checksum.txt says {recorded[:12]}…; the version was modified or "
            "damaged"
        )
    if expected_checksum is not None and actual != expected_checksum.strip():
        raise ArtifactCorrupt(
            f"{folder}: checksum {actual[:12]}… is not the expected "
            f"{expected_checksum.strip()[:12]}…; the folder holds another version"
        )
    return actual


def read_text_emb(folder: str | Path) -> torch.Tensor:
    """The (L, D) label text embeddings saved with a version (not verified)."""
    return load_file(str(Path(folder) / "model.safetensors"))[TEXT_EMB_KEY]


def folder_checksum(folder: str | Path) -> str:
    """sha256 over (name, size, bytes) of FILES in order; names guard reorders."""
    h = hashlib.sha256()
    for name in FILES:
        data = (Path(folder) / name).read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def export_onnx_head(
    head: TemporalHead,
    path: str | Path,
    num_frames: int,
    embed_dim: int,
    *,
    opset: int = 17,
    atol: float = 1e-3,
) -> float:
    """Export (frames: B x T x D) -> (logits: B x L) with a dynamic batch axis.

    Checks onnxruntime against torch on two batch sizes and raises
    RuntimeError if the largest absolute logit difference exceeds ``atol``
    (logits are on CLIP's x100 scale). Returns that difference.
    """
    import onnxruntime as ort  # heavy import; only exporters need it

    path = Path(path)
    model = copy.deepcopy(head).cpu().float().eval()
    gen = torch.Generator().manual_seed(0)
    dummy = F.normalize(torch.randn(2, num_frames, embed_dim, generator=gen), dim=-1)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo
            # one, which needs onnxscript; this venv does not ship it.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                dynamo=False,
                input_names=["frames"],
                output_names=["logits"],
                dynamic_axes={"frames": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff = 0.0
        for batch in (1, 5):
            x = torch.randn(batch, num_frames, embed_dim, generator=gen)
            x = F.normalize(x, dim=-1)
            with torch.no_grad():
                ref = model(x).numpy()
            (got,) = session.run(["logits"], {"frames": x.numpy()})
            diff = max(diff, float(np.abs(got - ref).max()))
        if diff > atol:
            raise RuntimeError(
                f"ONNX export differs from torch by {diff:.2e} (> {atol:.0e})"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff


# --------------------------------------------------------------------- helpers


def _config_json(
    head_config: TemporalHeadConfig, num_labels: int, extra: dict[str, Any]
) -> dict[str, Any]:
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"extra may not set reserved keys: {sorted(clash)}")
    meta = dict(extra)
    train_config = meta.pop("train_config", None)
    if dataclasses.is_dataclass(train_config) and not isinstance(train_config, type):
        train_config = dataclasses.asdict(train_config)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "head_config": head_config.to_dict(),
        "train_config": train_config,
        "num_labels": num_labels,
        "embed_dim": head_config.embed_dim,
        **meta,
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | torch.Tensor):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable)
    path.write_text(text + "\n", encoding="utf-8")


def _claim(folder: Path) -> None:
    """Refuse to overwrite a version; an empty placeholder directory is fine."""
    if folder.exists():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        else:
            raise FileExistsError(f"version folder {folder} already exists")
    folder.parent.mkdir(parents=True, exist_ok=True)


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
