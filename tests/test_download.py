"""Model download: zip via the page and the token API, 404 for outsiders, and a
fresh interpreter that runs the zip with only onnxruntime + numpy."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from rest_framework.authtoken.models import Token

from annotator import proposals
from annotator.media import SampledFrames
from annotator.models import Membership, Role
from tests.test_export import _one_thread, make_stick_project, train  # noqa: F401
from training import download, pipeline
from training.deploy import scorer_for_version
from training.models import ModelVersion

pytestmark = pytest.mark.django_db
ROOT = "harweb-sticks-v1"
# Blocks the app's heavy dependencies, then runs classify.py as a script.
ISOLATED = (
    "import sys, runpy\n"
    "for name in ('torch', 'django', 'transformers', 'training', 'annotator'):\n"
    "    sys.modules[name] = None\n"
    "script = sys.argv[1]\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


@pytest.fixture
def trained(user, tiny_clip_dir, plain_demo_videos):
    project = make_stick_project(user, tiny_clip_dir, plain_demo_videos)
    return project, train(project).version


def _body(resp) -> bytes:
    return b"".join(resp.streaming_content)


def _check_zip(resp) -> zipfile.ZipFile:
    assert resp.status_code == 200, resp.content[:300]
    assert resp["Content-Type"] == "application/zip"
    assert resp["Content-Disposition"] == f'attachment; filename="{ROOT}.zip"'
    body = _body(resp)
    assert resp["X-Checksum-SHA256"] == hashlib.sha256(body).hexdigest()
    return zipfile.ZipFile(io.BytesIO(body))


def test_download_from_the_page_and_the_token_api(trained, client_in, user):
    project, version = trained
    page = client_in.get(f"/p/sticks/models/v{version.number}/")
    assert b'id="download"' in page.content
    zf = _check_zip(client_in.get("/p/sticks/models/v1/download/"))
    names = set(zf.namelist())
    expected = {
        "README.md",
        "classify.py",
        "config.json",
        "labels.json",
        "metrics.json",
        "model.safetensors",
        "image_encoder.onnx",
        "head.onnx",
        "SHA256SUMS.json",
        "base_encoder/model.safetensors",  # a tiny dev model rides along
    }
    assert {f"{ROOT}/{n}" for n in expected} <= names
    config = json.loads(zf.read(f"{ROOT}/config.json"))
    assert config["encoder"]["random_weights"] and config["encoder"]["weights_included"]
    assert config["standalone"]["num_frames"] == project.frames_per_clip
    labels = json.loads(zf.read(f"{ROOT}/labels.json"))
    assert all(lab["prompt"] for lab in labels)
    metrics = json.loads(zf.read(f"{ROOT}/metrics.json"))
    assert metrics["inference"]["backends"] == version.backends
    assert metrics["inference"]["standalone_parity"]["top1_agreement"] == 1.0
    card = zf.read(f"{ROOT}/README.md").decode()
    assert "random weights" in card and "Held-out results" in card

    token = Token.objects.create(user=user)
    api = client_in.__class__()  # no session: the token alone authenticates
    resp = api.get(
        "/api/projects/sticks/models/1/download",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        HTTP_ACCEPT="application/zip",
    )
    first = client_in.get("/p/sticks/models/v1/download/")["X-Checksum-SHA256"]
    assert _check_zip(resp).namelist() == zf.namelist()
    assert resp["X-Checksum-SHA256"] == first  # built once, then served from disk
    assert len(list(Path(version.artifact_dir, "download").glob("*.zip"))) == 1


def test_outsiders_get_404_and_members_of_any_role_may_download(
    trained, client, other_user
):
    _, version = trained
    client.force_login(other_user)
    assert client.get("/p/sticks/models/v1/download/").status_code == 404
    token = Token.objects.create(user=other_user)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    api = client.__class__()
    assert api.get("/api/projects/sticks/models/1/download", **auth).status_code == 404
    assert api.get("/api/projects/sticks/models/9/download").status_code in (401, 403)
    Membership.objects.create(
        project=version.project, user=other_user, role=Role.ANNOTATOR
    )
    assert download.can_download(other_user, version.project)
    page = client.get("/p/sticks/models/v1/")
    assert b'id="download"' in page.content
    assert api.get("/api/projects/sticks/models/9/download", **auth).status_code == 404

    # A damaged version is refused with a reason, never zipped.
    weights = Path(version.artifact_dir) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    resp = api.get("/api/projects/sticks/models/1/download", **auth)
    assert resp.status_code == 409 and "checksum" in resp.json()["detail"]


def test_the_zip_runs_standalone_and_matches_the_app(trained, client_in, tmp_path):
    project, version = trained
    resp = client_in.get("/p/sticks/models/v1/download/")
    zipfile.ZipFile(io.BytesIO(_body(resp))).extractall(tmp_path)
    folder = tmp_path / ROOT

    # The app's scores on the same frames, encoded by the live backend: the
    # one matching the zip's image encoder (int8 graph when it passed parity).
    config = json.loads((folder / "config.json").read_text())
    int8 = config["standalone"]["image_encoder_precision"] != "fp32"
    ModelVersion.objects.filter(pk=version.pk).update(
        backend="onnx-int8" if int8 else "fp32"
    )
    pipeline.promote(version)
    proposals.forget_encoders()  # a fresh worker process
    loaded = proposals.load_project_clip(project)
    labels = proposals.project_labels(project)
    text = proposals.text_embeddings(loaded, [lab.prompt_text for lab in labels])
    scorer = scorer_for_version(version, loaded, labels, text)
    live = proposals.image_encoder(loaded, project.pk)
    assert live.backend == ("onnx-int8" if int8 else "fp32")

    video = project.videos.order_by("pk").first()
    clips = list(video.clips.order_by("index")[:6])
    frames = SampledFrames.load(video.frames_path()).frames
    sample = np.stack([frames[c.frame_indices] for c in clips])  # (6, T, 224, 224, 3)
    np.save(tmp_path / "clips.npy", sample)
    n, t = sample.shape[:2]
    app = scorer.logits(
        live.encode(sample.reshape(n * t, 224, 224, 3)).reshape(n, t, -1)
    )
    out = _run_isolated(folder / "classify.py", tmp_path / "clips.npy", "--json")
    assert out["labels"] == [lab.name for lab in labels]
    ours = np.asarray([row["logits"] for row in out["clips"]], dtype=np.float32)
    np.testing.assert_allclose(ours, app, atol=1e-3)

    # A video: sampled, cut and encoded like the app does; its proposals came
    # from float16-cached embeddings of the same frames.
    proposals.embeddings_path(video, loaded.fingerprint).unlink()  # re-encode live
    clips = list(video.clips.order_by("index"))
    emb = proposals.frame_embeddings(video, loaded)
    app = scorer.logits(proposals.clip_embeddings(clips, emb))
    out = _run_isolated(folder / "classify.py", video.original.path, "--json")
    ours = np.asarray([row["logits"] for row in out["clips"]], dtype=np.float32)
    assert [(r["start"], r["end"]) for r in out["clips"]] == [
        (round(c.start_s, 3), round(c.end_s, 3)) for c in clips
    ]
    np.testing.assert_allclose(ours, app, atol=0.02)
    assert (ours.argmax(1) == app.argmax(1)).mean() >= 0.9


def _run_isolated(script: Path, *args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=script.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)
