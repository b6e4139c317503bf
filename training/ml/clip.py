"""Load a Hugging Face CLIP checkpoint, offline-first, with a clear failure mode.

``load_clip`` accepts a local folder or a Hub id. A Hub id is looked up in the
local HF cache first; the network is only tried when ``HF_HUB_OFFLINE`` is not
set, behind a short, hard time limit, so a worker on an air-gapped machine fails
in seconds with one actionable line (``ModelNotFound``) instead of hanging.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel, CLIPTokenizerFast

from training.ml.devclip import DEV_MARKER, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

HUB_PROBE_TIMEOUT_S = 8.0
# Short Hub timeouts (seconds) unless the user set their own in the environment.
HUB_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": 5, "HF_HUB_DOWNLOAD_TIMEOUT": 10}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
_MiB = 1 << 20


class ModelNotFound(Exception):
    """The configured CLIP model cannot be loaded; the message says what to set."""


@dataclass
class LoadedClip:
    """A CLIP model ready for inference plus what encoders need to know about it."""

    model: CLIPModel  # fp32, eval mode, on `device`
    tokenizer: Any  # CLIP BPE tokenizer (HF)
    name: str  # the setting's value: hub id or folder as given
    path: Path  # folder the files were read from
    fingerprint: str  # stable id of the weights (cache key for derived artefacts)
    is_random: bool  # a dev model with random weights: scores are meaningless
    image_size: int  # vision tower input resolution
    mean: tuple[float, float, float]  # per-channel normalisation mean (RGB, 0-1)
    std: tuple[float, float, float]  # per-channel normalisation std (RGB, 0-1)
    embed_dim: int  # joint embedding size
    logit_scale: float  # exp(learned temperature), multiplies cosine scores
    device: str  # torch device the model lives on


_CACHE: dict[tuple[str, str], LoadedClip] = {}
_CACHE_LOCK = threading.Lock()


def load_clip(
    name_or_path: str, *, setting: str = "HARWEB_CLIP_MODEL", device: str = "cpu"
) -> LoadedClip:
    """Load (once per process) a CLIP model from a folder or a Hub id."""
    device = resolve_device(device)
    key = (name_or_path, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load_uncached(name_or_path, setting, device)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget loaded models (tests, or after the setting changes)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def resolve_device(device: str) -> str:
    """Map "auto" to cuda when available; pass anything else through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def looks_local(name: str) -> bool:
    """A path-like value (or an existing path) is a folder, never a Hub id."""
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def _load_uncached(name: str, setting: str, device: str) -> LoadedClip:
    if looks_local(name):
        folder = _check_local(Path(name).expanduser(), setting)
        fingerprint = local_fingerprint(folder)
    else:
        folder = _resolve_hub(name, setting)
        # Snapshot folders are named after the commit they were resolved to.
        fingerprint = _sha(f"hub:{name}@{folder.name}".encode())
    return _load_folder(name, folder, fingerprint, setting, device)


def _load_folder(
    name: str, folder: Path, fingerprint: str, setting: str, device: str
) -> LoadedClip:
    try:
        model = CLIPModel.from_pretrained(folder)
        tokenizer = CLIPTokenizerFast.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ModelNotFound(
            f"CLIP model {name!r} could not be loaded from {str(folder)!r} "
            f"({reason}): set {setting} to a working CLIP folder."
        ) from exc
    model = model.to(device=device, dtype=torch.float32).eval()
    mean, std = _normalisation(folder)
    return LoadedClip(
        model=model,
        tokenizer=tokenizer,
        name=name,
        path=folder,
        fingerprint=fingerprint,
        is_random=is_random_dev_model(folder),
        image_size=int(model.config.vision_config.image_size),
        mean=mean,
        std=std,
        embed_dim=int(model.config.projection_dim),
        logit_scale=float(model.logit_scale.detach().exp().item()),
        device=device,
    )


# --- local folders ---------------------------------------------------------


def _missing_files(folder: Path) -> list[str]:
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if not any(all((folder / f).is_file() for f in g) for g in _TOKENIZER_FILES):
        missing.append("tokenizer (vocab.json + merges.txt)")
    return missing


def _check_local(folder: Path, setting: str) -> Path:
    hint = f"or create one with `python manage.py make_dev_clip {folder}`."
    if not folder.is_dir():
        raise ModelNotFound(
            f"CLIP model folder {str(folder)!r} does not exist: set {setting} "
            f"to a folder holding a Hugging Face CLIP checkpoint, {hint}"
        )
    missing = _missing_files(folder)
    if missing:
        raise ModelNotFound(
            f"CLIP model folder {str(folder)!r} is incomplete (missing "
            f"{', '.join(missing)}): set {setting} to a complete folder, {hint}"
        )
    return folder.resolve()


def local_fingerprint(folder: Path) -> str:
    """Hash config + weight files' sizes and edges: cheap, and changes with them.

    Reading the first and last MiB instead of whole files keeps this fast for
    large checkpoints while still catching re-saved or swapped weights.
    """
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for name in _WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        digest.update(f"{name}:{size}".encode())
        with path.open("rb") as fh:
            digest.update(fh.read(_MiB))
            fh.seek(max(0, size - _MiB))
            digest.update(fh.read(_MiB))
    return digest.hexdigest()[:32]


def is_random_dev_model(folder: Path) -> bool:
    """True for folders written by ``make_dev_clip`` (random weights)."""
    marker = folder / DEV_MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text("utf-8")).get("random_weights"))
    except (OSError, ValueError):
        return True  # a damaged marker still means "not a real model"


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        cfg = json.loads((folder / "preprocessor_config.json").read_text("utf-8"))
        return tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    except (OSError, ValueError, KeyError):
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


# --- Hugging Face Hub ------------------------------------------------------


def hub_offline() -> bool:
    """Read the offline switches now (huggingface_hub reads them at import)."""
    values = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in values)


def _offline_message(name: str, setting: str, why: str) -> str:
    return (
        f"CLIP model {name!r} is not available offline{why}: set {setting} "
        "(or the project's CLIP model) to a local folder, or create one with "
        "`python manage.py make_dev_clip DIR`."
    )


def _resolve_hub(name: str, setting: str) -> Path:
    cached = _cached_snapshot(name)
    if cached is not None and not _missing_files(cached):
        return cached
    if hub_offline():
        raise ModelNotFound(_offline_message(name, setting, ""))
    weights = _probe_hub(name, setting)
    return _download(name, weights, setting)


def _cached_snapshot(name: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # any failure just means "not cached"
        return None


def _probe_hub(name: str, setting: str) -> str:
    """Ask the Hub which weight file to fetch, giving up after a few seconds.

    Runs in a daemon thread because DNS lookups ignore socket timeouts: a
    firewalled machine would otherwise block here for minutes.
    """
    result: dict[str, Any] = {}

    def probe() -> None:
        from huggingface_hub import HfApi

        try:
            info = HfApi().model_info(name, timeout=HUB_PROBE_TIMEOUT_S)
            result["files"] = {s.rfilename for s in info.siblings or []}
        except Exception as exc:  # reported by the caller as ModelNotFound
            result["error"] = exc

    thread = threading.Thread(target=probe, daemon=True, name="hf-hub-probe")
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 2)
    if "files" not in result:
        exc = result.get("error")
        why = f" ({type(exc).__name__})" if exc else " (Hub did not answer)"
        raise ModelNotFound(_offline_message(name, setting, why))
    files = result["files"]
    weights = next((f for f in _WEIGHT_FILES if f in files), None)
    if weights is None:
        raise ModelNotFound(
            f"Hub repo {name!r} has no PyTorch/safetensors weights: set {setting} "
            "to a CLIP checkpoint."
        )
    return weights


def _short_hub_timeouts() -> None:
    """Lower the Hub client's timeouts; it read the env at import, so patch both."""
    from huggingface_hub import constants

    for key, seconds in HUB_TIMEOUTS.items():
        if key not in os.environ:
            os.environ[key] = str(seconds)
            setattr(constants, key, seconds)


def _download(name: str, weights: str, setting: str) -> Path:
    from huggingface_hub import snapshot_download

    _short_hub_timeouts()
    # Only what CLIPModel + tokenizer need: skips the TF/Flax weight copies.
    ext = ".safetensors" if "safetensors" in weights else ".bin"
    patterns = ["*.json", "*.txt", f"*{ext}"]
    try:
        path = snapshot_download(name, allow_patterns=patterns, etag_timeout=5)
    except Exception as exc:  # network errors come in many types
        why = f" (download failed: {type(exc).__name__})"
        raise ModelNotFound(_offline_message(name, setting, why)) from exc
    return Path(path)
