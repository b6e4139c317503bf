"""Model download: one zip per version that runs standalone (onnxruntime + numpy).

The zip holds the temporal head's fp32 weights (safetensors), config.json,
labels.json (names and prompts), metrics.json (held-out results and backend
parity), the ONNX graphs (image encoder and temporal head), the base encoder's
id and revision - or its files, for a small local folder such as a dev model -,
a model card (README.md) and ``classify.py`` (``training/ml/runtime.py``).

It is built once per version, checksum and backend into the version's folder
(temp file + rename, so concurrent downloads never see half a file), then served
from disk with ``FileResponse``; nothing reads the whole zip into memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.http import FileResponse

from annotator.access import role_for
from annotator.storage import onnx_cache_dir
from training import deploy
from training.ml import artifacts, encoders, export, runtime
from training.ml import clip as clipml
from training.ml.train import predict
from training.ml.zeroshot import DEFAULT_TEMPLATES
from training.models import ModelVersion

log = logging.getLogger(__name__)
DOWNLOAD_FORMAT = 1  # bump when the zip's contents change: old caches are rebuilt
# Base encoder files ride along only for local folders up to this size.
MAX_BASE_BYTES = 256 << 20
CLASSIFY_SOURCE = Path(runtime.__file__)
_STORED = {".onnx", ".safetensors", ".bin", ".npy"}  # incompressible: not deflated
_lock = threading.Lock()
_BACKEND_COLUMNS = (
    "backend",
    "images_per_s",
    "clips_per_s",
    "peak_mb",
    "cosine_min",
    "top1_agreement",
    "accepted",
)


class DownloadUnavailable(Exception):
    """The zip cannot be built (damaged version, missing encoder weights)."""


def can_download(user, project) -> bool:
    """Members of the project may download its models; site admins always."""
    return role_for(user, project) is not None


def filename(version: ModelVersion) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", version.project.slug).strip("-")
    return f"harweb-{slug or 'project'}-v{version.number}.zip"


def response(version: ModelVersion) -> FileResponse:
    """Stream the (cached) zip as an attachment with its SHA-256 in a header."""
    path, sha = zip_for(version)
    resp = FileResponse(
        path.open("rb"),
        as_attachment=True,
        filename=filename(version),
        content_type="application/zip",
    )
    resp["X-Checksum-SHA256"] = sha
    resp["ETag"] = f'"{sha}"'
    return resp


def zip_for(version: ModelVersion) -> tuple[Path, str]:
    """(path, sha256) of the version's zip, built on first use."""
    path = _cached_path(version)
    sha_file = path.with_name(path.name + ".sha256")
    with _lock:  # one build per process; other processes' builds just race
        if not (path.is_file() and sha_file.is_file()):
            _build(version, path, sha_file)
    return path, sha_file.read_text(encoding="ascii").strip()


def _cached_path(version: ModelVersion) -> Path:
    key = f"{DOWNLOAD_FORMAT}:{version.checksum}:{version.backend}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = filename(version).removesuffix(".zip")
    return Path(version.artifact_dir) / "download" / f"{stem}-{digest}.zip"


def _build(version: ModelVersion, path: Path, sha_file: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        files = _stage(version, work / "stage")
        zip_tmp = work / "out.zip"
        _write_zip(zip_tmp, filename(version).removesuffix(".zip"), files)
        sha = sha256_file(zip_tmp)
        (work / "out.sha256").write_text(sha + "\n", encoding="ascii")
        # The checksum first: a zip that is visible always has its checksum.
        os.replace(work / "out.sha256", sha_file)
        os.replace(zip_tmp, path)
    for old in path.parent.glob("*.zip*"):
        if old.name not in {path.name, sha_file.name}:
            old.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_zip(dest: Path, root: str, files: dict[str, Path]) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for arcname, src in sorted(files.items()):
            method = zipfile.ZIP_STORED if src.suffix in _STORED else None
            zf.write(src, f"{root}/{arcname}", compress_type=method)


# --- contents ------------------------------------------------------------------


def _stage(version: ModelVersion, stage: Path) -> dict[str, Path]:
    """Write the generated files into ``stage``; return arcname -> file."""
    folder = Path(version.artifact_dir)
    try:
        head, config, labels = deploy.load_head(version)
    except artifacts.ArtifactCorrupt as exc:
        raise DownloadUnavailable(str(exc)) from exc
    loaded = _load_encoder(version)
    stage.mkdir(parents=True)
    spec = export.export_standalone(
        loaded,
        head,
        stage,
        int8=_int8_accepted(version),
        cache_dir=onnx_cache_dir(),
    )
    spec.update(_sampling(version))
    encoder = _encoder_info(version, loaded)
    config = {**config, "encoder_name": encoder["name"]}  # no server paths
    config.update(encoder=encoder, standalone=spec)
    _json(stage / "config.json", config)
    shutil.copyfile(folder / "labels.json", stage / "labels.json")
    shutil.copyfile(CLASSIFY_SOURCE, stage / "classify.py")
    parity = standalone_parity(stage, loaded, head)
    metrics = {**version.metrics, "inference": _inference(version, parity)}
    _json(stage / "metrics.json", metrics)
    card = model_card(version, config, labels, metrics, encoder)
    (stage / "README.md").write_text(card, encoding="utf-8")
    files = {p.name: p for p in stage.iterdir() if p.is_file()}
    files["model.safetensors"] = folder / "model.safetensors"
    files.update(_base_files(loaded) if encoder["weights_included"] else {})
    _json(stage / "SHA256SUMS.json", {k: sha256_file(v) for k, v in files.items()})
    files["SHA256SUMS.json"] = stage / "SHA256SUMS.json"
    return files


def _load_encoder(version: ModelVersion) -> clipml.LoadedClip:
    try:
        loaded = clipml.load_clip(version.encoder_name, device="cpu")
    except clipml.ModelNotFound as exc:
        raise DownloadUnavailable(str(exc)) from exc
    if loaded.fingerprint != version.encoder_fingerprint:
        raise DownloadUnavailable(
            f"The CLIP weights at {version.encoder_name!r} changed since "
            f"{version} was trained; its image encoder cannot be exported."
        )
    return loaded


def _int8_accepted(version: ModelVersion) -> bool:
    return any(
        row.get("backend") == "onnx-int8" and row.get("accepted")
        for row in version.backends or []
    )


def _sampling(version: ModelVersion) -> dict[str, Any]:
    p = version.project
    return {
        "sample_fps": p.sample_fps,
        "window_s": p.window_s,
        "stride_s": p.stride_s,
        "logit_scale": version.config.get("head", {}).get("init_logit_scale"),
    }


def _encoder_info(version: ModelVersion, loaded: clipml.LoadedClip) -> dict[str, Any]:
    local = clipml.looks_local(version.encoder_name)
    size = _folder_bytes(loaded.path) if local else None
    included = bool(local and size is not None and size <= MAX_BASE_BYTES)
    return {
        # A server path means nothing elsewhere: local folders go by their name.
        "name": loaded.path.name if local else version.encoder_name,
        "revision": None if local else loaded.path.name,
        "fingerprint": version.encoder_fingerprint,
        "random_weights": loaded.is_random,
        "weights_included": included,
        "folder": "base_encoder/" if included else None,
        "frozen": True,
    }


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if _base_file(p))


def _base_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


def _base_files(loaded: clipml.LoadedClip) -> dict[str, Path]:
    return {f"base_encoder/{p.name}": p for p in loaded.path.iterdir() if _base_file(p)}


def _inference(version: ModelVersion, parity: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": version.backend,
        "backends": version.backends,
        "standalone_parity": parity,
    }


def standalone_parity(
    folder: Path, loaded: clipml.LoadedClip, head, clips: np.ndarray | None = None
) -> dict[str, Any]:
    """classify.py's logits against the app's fp32 torch path on the same frames."""
    t = head.config.num_frames
    if clips is None:
        frames = encoders.synthetic_probe_frames(2 * t, loaded.image_size)
        clips = frames.reshape(2, t, *frames.shape[1:])
    model = runtime.Model(folder, threads=torch.get_num_threads())
    ours = model.logits(clips)
    emb = encoders.build_backend(loaded, "fp32").encode(
        clips.reshape(-1, *clips.shape[2:])
    )
    ref = predict(head, emb.reshape(len(clips), t, -1))
    agree = float(np.mean(ours.argmax(1) == ref.argmax(1)))
    return {
        "reference": "fp32 torch (image encoder + temporal head)",
        "clips": len(clips),
        "max_abs_logit_diff": round(float(np.abs(ours - ref).max()), 5),
        "top1_agreement": agree,
        "image_encoder_precision": model.spec["image_encoder_precision"],
    }


def _json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")


# --- model card ----------------------------------------------------------------


def model_card(
    version: ModelVersion,
    config: dict[str, Any],
    labels: list[dict[str, Any]],
    metrics: dict[str, Any],
    encoder: dict[str, Any],
) -> str:
    """README.md: what the model is, how it was trained, how well, its limits."""
    parts = [
        _card_intro(version, config, labels, encoder),
        _card_usage(config),
        _card_training(version, config, labels, encoder),
        _card_results(metrics),
        _card_backends(metrics["inference"]),
        _card_limitations(version, encoder, config),
    ]
    return "\n\n".join(p.strip() for p in parts) + "\n"


def _card_intro(version, config, labels, encoder) -> str:
    spec = config["standalone"]
    warning = ""
    if encoder["random_weights"]:
        warning = (
            "> **Warning: the base image encoder has random weights** (a HARweb "
            "development model). Its embeddings carry no visual meaning, so "
            "predictions are only as good as what the head memorised from very "
            "few clips. Do not use this model for anything but testing.\n\n"
        )
    names = ", ".join(f"`{lab['name']}`" for lab in labels)
    return f"""
# HARweb action model: {version.project.name} v{version.number}

{warning}Classifies short video clips into {len(labels)} human actions: {names}.
A clip is {spec["num_frames"]} RGB frames ({spec["image_size"]}x{spec["image_size"]},
short side scaled and centre-cropped) taken from a {spec["sample_fps"]:g} fps grid
over a {spec["window_s"]:g} s window; the app cuts videos into windows every
{spec["stride_s"]:g} s. Version checksum `{version.checksum}`.
"""


def _card_usage(config) -> str:
    spec = config["standalone"]
    size, dim, t = spec["image_size"], spec["embed_dim"], spec["num_frames"]
    note = spec.get("image_encoder_quantization")
    precision = spec["image_encoder_precision"] + (f" ({note})" if note else "")
    files = [
        (
            "image_encoder.onnx",
            f"CLIP image tower, {precision}: `pixel_values` "
            f"(N, 3, {size}, {size}), normalised with the mean/std in `config.json`,"
            f" -> `image_embeds` (N, {dim}); L2-normalise them for the head",
        ),
        (
            "head.onnx",
            f"temporal head: `frames` (B, {t}, {dim}) unit-norm frame embeddings "
            "-> `logits` (B, L)",
        ),
        (
            "model.safetensors",
            "fp32 head weights (`TemporalHead` state dict) plus the label text "
            "embeddings under `text_emb`",
        ),
        ("config.json", "head and training config, encoder id, `standalone` spec"),
        ("labels.json", "labels in logit order, with the prompt of each"),
        ("metrics.json", "held-out metrics, backend speed and parity figures"),
        ("classify.py", "the example above (onnxruntime + numpy; PyAV optional)"),
        ("SHA256SUMS.json", "checksum of every other file"),
    ]
    table = "\n".join(f"| `{name}` | {what} |" for name, what in files)
    return f"""
## Quick start

```sh
pip install onnxruntime numpy        # and `av` to read video files
python classify.py clips.npy          # uint8 (T, H, W, 3) or (N, T, H, W, 3)
python classify.py video.mp4 --json   # per-window logits and top labels
```

| File | What |
| --- | --- |
{table}
"""


def _card_training(version, config, labels, encoder) -> str:
    head, train = config.get("head_config", {}), config.get("train_config") or {}
    m = version.metrics
    rev = f" at revision `{encoder['revision']}`" if encoder["revision"] else ""
    if encoder["weights_included"]:
        base = "Its files are included under `base_encoder/`."
    elif encoder["revision"]:
        base = "Its weights are on the Hugging Face Hub under that id."
    else:
        base = (
            "It is a local folder on the HARweb server, too large to include; "
            "`image_encoder.onnx` replaces it for inference."
        )
    rows = "\n".join(f"| {lab['name']} | {lab['prompt']} |" for lab in labels)
    return f"""
## How it was trained

- Base image encoder: `{encoder["name"]}`{rev} (fingerprint `{encoder["fingerprint"]}`),
  kept frozen: only the temporal head was trained. {base}
- Temporal head: {head.get("kind")} pooling over {head.get("num_frames")} frame
  embeddings of width {head.get("embed_dim")}; classifier rows start as the CLIP
  text embeddings of each label's prompt (ensemble of {len(DEFAULT_TEMPLATES)}
  templates), i.e. the untrained head is zero-shot CLIP.
- Data: {m.get("n_train")} confirmed clips for training, {m.get("n_heldout")} held out
  (a stable hash of the clip id decides the side), {len(labels)} labels.
- Recipe: up to {train.get("epochs")} epochs (kept epoch {m.get("best_epoch")}, stopped:
  {m.get("stopped")}), AdamW lr {train.get("lr")}, batch {train.get("batch_size")},
  label smoothing {train.get("label_smoothing")}, class-balanced sampling
  {train.get("class_balanced")}, embedding-space augmentation, seed {train.get("seed")};
  {m.get("seconds")} s.

| Label | Prompt |
| --- | --- |
{rows}
"""


def _clips(n: Any) -> str:
    return f"{n} clip" if n == 1 else f"{n} clips"


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _card_results(metrics: dict[str, Any]) -> str:
    lines = [
        "## Held-out results",
        "",
        "| Model | Top-1 | Top-5 | Macro F1 | Clips |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, name in (
        ("model", "this version"),
        ("zero_shot", "zero-shot CLIP"),
        ("live", "live model at training time"),
    ):
        m = metrics.get(key) or {}
        if m:
            lines.append(
                f"| {name} | {_fmt(m.get('top1'))} | {_fmt(m.get('top5'))} | "
                f"{_fmt(m.get('macro_f1'))} | {m.get('n', '–')} |"
            )
    recall = (metrics.get("model") or {}).get("per_label_recall") or {}
    if recall:
        lines += ["", "| Label | Held-out recall |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in recall.items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}" if 0.99 < value < 1 else f"{value:g}"
    return str(value)


def _card_backends(inference: dict[str, Any]) -> str:
    lines = [
        "## Inference backends",
        "",
        f"Served in the app with `{inference['backend']}`. Each backend was checked "
        "against fp32 on held-out clips (cosine of image embeddings >= "
        f"{export.MIN_COSINE}, top-1 agreement >= {export.MIN_AGREEMENT:.0%}).",
        "",
        "| Backend | Images/s | Clips/s | Peak MB | Cosine | Top-1 agreement | "
        "Accepted | Note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in inference["backends"] or []:
        cells = [_cell(b.get(k)) for k in _BACKEND_COLUMNS] + [b.get("error") or ""]
        lines.append("| " + " | ".join(cells) + " |")
    p = inference["standalone_parity"]
    lines += [
        "",
        f"`classify.py` ({p['image_encoder_precision']} image encoder) against the "
        f"app's fp32 path on {p['clips']} probe clips: max |logit difference| "
        f"{p['max_abs_logit_diff']}, top-1 agreement {p['top1_agreement']:.0%}.",
    ]
    return "\n".join(lines)


def _card_limitations(version, encoder, config) -> str:
    items = [
        f"The held-out set is small ({_clips(version.metrics.get('n_heldout'))}) and "
        "comes from the same project's videos (clips of one video can fall on both "
        "sides), so it likely overestimates accuracy on new footage.",
        "It only knows the labels above and always ranks them; it has no "
        "background class (the app proposes background when the top probability "
        "is under a threshold).",
        "The image encoder is frozen CLIP: it inherits CLIP's biases and blind "
        "spots, sees frames one at a time, and only the head models motion over "
        f"{version.config.get('head', {}).get('num_frames')} frames.",
    ]
    if config["standalone"]["image_encoder_precision"] != "fp32":
        items.append(
            "The int8 image encoder differs slightly from fp32 (see the parity "
            "figures above)."
        )
    if encoder["random_weights"]:
        items.insert(
            0,
            "**The base encoder has random weights**: results are meaningless "
            "outside tests.",
        )
    return "## Limitations\n\n" + "\n".join(f"- {i}" for i in items)
