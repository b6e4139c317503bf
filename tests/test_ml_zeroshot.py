"""Image/text encoders (backend parity selection) and zero-shot scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.ml import encoders, zeroshot
from training.ml.clip import LoadedClip, load_clip


@pytest.fixture(scope="module")
def loaded(tiny_clip_dir: Path) -> LoadedClip:
    return load_clip(str(tiny_clip_dir))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return encoders.synthetic_probe_frames(6)


def frames_of(n: int) -> np.ndarray:
    return encoders.synthetic_probe_frames(n)


def _unit_rows(x: np.ndarray) -> bool:
    return np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# --- image encoders -----------------------------------------------------------


def test_fp32_encode_shape_and_norm(loaded: LoadedClip, frames: np.ndarray) -> None:
    enc = encoders.build_backend(loaded, "fp32")
    out = enc.encode(frames, batch_size=4)
    assert out.shape == (6, 64) and out.dtype == np.float32
    assert _unit_rows(out)
    np.testing.assert_allclose(out, enc.encode(frames, batch_size=32), atol=1e-5)
    assert enc.encode(frames[:0]).shape == (0, 64)


def test_encode_matches_get_image_features(
    loaded: LoadedClip, frames: np.ndarray
) -> None:
    import torch

    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    pixels = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.inference_mode():
        feats = loaded.model.get_image_features(pixel_values=pixels)
    feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
    expected = torch.nn.functional.normalize(feats, dim=-1).numpy()
    got = encoders.build_backend(loaded, "fp32").encode(frames)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_other_input_sizes_are_resized(loaded: LoadedClip) -> None:
    small = encoders.synthetic_probe_frames(2, size=160)
    out = encoders.build_backend(loaded, "fp32").encode(small)
    assert out.shape == (2, 64) and _unit_rows(out)


def test_encode_rejects_bad_frames(loaded: LoadedClip) -> None:
    enc = encoders.build_backend(loaded, "fp32")
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(np.zeros((2, 224, 224, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        enc.encode(np.zeros((224, 224, 3), dtype=np.uint8))


def test_fp32_only_preference_is_always_accepted(loaded: LoadedClip) -> None:
    enc = encoders.build_image_encoder(loaded, prefer=["fp32"])
    assert enc.backend == "fp32"
    assert enc.parity == {"fp32": {"cosine_min": 1.0, "accepted": True, "error": None}}


def test_default_cpu_choice_is_first_passing_backend(
    loaded: LoadedClip, tmp_path: Path
) -> None:
    order = encoders.default_preference("cpu")
    enc = encoders.build_image_encoder(loaded, cache_dir=tmp_path)
    first = enc.parity[order[0]]
    assert first["error"] is None and 0.9 < first["cosine_min"] <= 1.0 + 1e-6
    if first["cosine_min"] >= 0.999:  # the int8 ONNX graph, when it is accurate
        assert enc.backend == order[0] and list(enc.parity) == [order[0]]
    out = enc.encode(frames_of(3))
    assert out.shape == (3, 64) and _unit_rows(out)


def test_int8_dynamic_picked_when_preferred_and_accurate(loaded: LoadedClip) -> None:
    enc = encoders.build_image_encoder(loaded, prefer=["int8-dynamic"])
    verdict = enc.parity["int8-dynamic"]
    assert verdict["error"] is None
    assert enc.backend == ("int8-dynamic" if verdict["accepted"] else "fp32")
    assert verdict["accepted"] == (verdict["cosine_min"] >= 0.999)


def test_default_preference_skips_emulated_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoders, "native_cpu_bf16", lambda: False)
    assert encoders.default_preference("cpu") == ("onnx-int8", "int8-dynamic", "fp32")
    monkeypatch.setattr(encoders, "native_cpu_bf16", lambda: True)
    assert encoders.default_preference("cpu") == encoders.CPU_PREFERENCE
    assert encoders.default_preference("cpu")[-1] == "fp32"


def test_all_rejected_falls_back_to_fp32(loaded: LoadedClip, tmp_path: Path) -> None:
    enc = encoders.build_image_encoder(
        loaded, min_cosine=1.5, cache_dir=tmp_path, probe_frames=frames_of(3)
    )
    assert enc.backend == "fp32"
    order = encoders.default_preference("cpu")
    assert list(enc.parity) == list(order)
    assert enc.parity["fp32"]["accepted"] is True
    for name in order[:-1]:
        verdict = enc.parity[name]
        assert verdict["accepted"] is False and verdict["error"] is None, name
        assert verdict["cosine_min"] > 0.99, name
    # The quantised ONNX graph is cached under the weights' fingerprint.
    assert list((tmp_path / loaded.fingerprint).glob("vision_int8_v*.onnx"))
    assert not list((tmp_path / loaded.fingerprint).glob("tmp-*"))


def test_onnx_backend_reuses_cache(loaded: LoadedClip, tmp_path: Path) -> None:
    enc = encoders.build_backend(loaded, "onnx-int8", cache_dir=tmp_path)
    path = encoders.onnx_int8_path(loaded, tmp_path)
    mtime = path.stat().st_mtime_ns
    encoders.build_backend(loaded, "onnx-int8", cache_dir=tmp_path)
    assert path.stat().st_mtime_ns == mtime
    ref = encoders.build_backend(loaded, "fp32").encode(frames_of(4))
    assert encoders.min_row_cosine(enc.encode(frames_of(4)), ref) > 0.99


def test_unavailable_backend_is_recorded_not_fatal(loaded: LoadedClip) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    enc = encoders.build_image_encoder(loaded, prefer=["cuda-bf16"])
    assert enc.backend == "fp32"
    assert enc.parity["cuda-bf16"]["accepted"] is False
    assert "CUDA" in enc.parity["cuda-bf16"]["error"]
    with pytest.raises(ValueError, match="unknown backend"):
        encoders.build_backend(loaded, "int4")


def test_probe_frames_are_structured_and_deterministic() -> None:
    a, b = frames_of(4), frames_of(4)
    assert a.dtype == np.uint8 and a.shape == (4, 224, 224, 3)
    np.testing.assert_array_equal(a, b)
    assert len({f.tobytes() for f in a}) == 4
    # Neighbouring pixels correlate (unlike white noise).
    f = a[0].astype(np.float32)
    assert np.abs(np.diff(f, axis=1)).mean() < 0.25 * f.std()


# --- text ---------------------------------------------------------------------


def test_encode_texts_deterministic_and_normalised(loaded: LoadedClip) -> None:
    texts = ["a photo of a person waving.", "a video of a person running."]
    a = encoders.encode_texts(loaded, texts)
    assert a.shape == (2, 64) and a.dtype == np.float32 and _unit_rows(a)
    np.testing.assert_allclose(a, encoders.encode_texts(loaded, texts), atol=1e-6)
    # Padding to the longest text must not change a text's embedding.
    alone = encoders.encode_texts(loaded, texts[:1])
    np.testing.assert_allclose(a[:1], alone, atol=1e-5)
    assert encoders.encode_texts(loaded, []).shape == (0, 64)


def test_templates() -> None:
    assert len(zeroshot.KINETICS_TEMPLATES) == 28
    assert len(zeroshot.UCF101_TEMPLATES) == 48
    assert len(zeroshot.DEFAULT_TEMPLATES) == 52
    assert zeroshot.KINETICS_TEMPLATES[:2] == (
        "a photo of {}.",
        "a photo of a person {}.",
    )
    assert "a demonstration of a person practicing {}." in zeroshot.KINETICS_TEMPLATES
    assert zeroshot.UCF101_TEMPLATES[4] == "a photo of the person {}."
    assert set(zeroshot.DEFAULT_TEMPLATES) == set(
        zeroshot.KINETICS_TEMPLATES + zeroshot.UCF101_TEMPLATES
    )
    assert all(t.count("{}") == 1 for t in zeroshot.DEFAULT_TEMPLATES)


def test_label_text_embeddings_is_template_ensemble(loaded: LoadedClip) -> None:
    prompts = ["waving", "running", "jumping"]
    templates = ["a photo of a person {}.", "a video of {}."]
    emb = zeroshot.label_text_embeddings(loaded, prompts, templates)
    assert emb.shape == (3, 64) and _unit_rows(emb)
    per = encoders.encode_texts(loaded, [t.format("running") for t in templates])
    mean = per.mean(axis=0)
    np.testing.assert_allclose(emb[1], mean / np.linalg.norm(mean), atol=1e-5)
    again = zeroshot.label_text_embeddings(loaded, prompts, templates)
    np.testing.assert_array_equal(emb, again)
    full = zeroshot.label_text_embeddings(loaded, prompts)
    assert full.shape == (3, 64) and _unit_rows(full)
    assert zeroshot.label_text_embeddings(loaded, []).shape == (0, 64)


def test_text_cache_key() -> None:
    key = zeroshot.text_cache_key("fp", ["a", "b"], zeroshot.DEFAULT_TEMPLATES)
    assert key == zeroshot.text_cache_key("fp", ["a", "b"], zeroshot.DEFAULT_TEMPLATES)
    assert key != zeroshot.text_cache_key("fp2", ["a", "b"], zeroshot.DEFAULT_TEMPLATES)
    assert key != zeroshot.text_cache_key("fp", ["b", "a"], zeroshot.DEFAULT_TEMPLATES)
    assert key != zeroshot.text_cache_key("fp", ["a", "b"], ["{}"])


# --- scoring and proposals ----------------------------------------------------


def test_clip_features_mean_and_score() -> None:
    rng = np.random.default_rng(0)
    frame_emb = rng.normal(size=(4, 8, 16)).astype(np.float32)
    feats = zeroshot.clip_features_mean(frame_emb)
    assert feats.shape == (4, 16) and _unit_rows(feats)
    mean = frame_emb.mean(axis=1)
    np.testing.assert_allclose(
        feats, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6
    )
    text = zeroshot.clip_features_mean(rng.normal(size=(3, 1, 16)))
    logits = zeroshot.score(feats, text, 100.0)
    assert logits.shape == (4, 3)
    np.testing.assert_allclose(logits, 100.0 * feats @ text.T, rtol=1e-5)


def test_probabilities() -> None:
    logits = np.array([[1000.0, 1000.0, 0.0], [0.0, 1.0, 2.0]])
    probs = zeroshot.probabilities(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[0], [0.5, 0.5, 0.0], atol=1e-6)
    flat = zeroshot.probabilities(logits[1:], temperature=1e6)
    np.testing.assert_allclose(flat, 1 / 3, atol=1e-5)


def test_propose_top_k_and_background() -> None:
    logits = np.array([[5.0, 1.0, 0.0], [0.1, 0.0, 0.05]])
    probs = zeroshot.probabilities(logits)
    props = zeroshot.propose(probs, logits, k=2, background_threshold=0.5)
    sure, unsure = props
    assert [r[0] for r in sure.ranked] == [0, 1]
    assert sure.top == 0 and sure.confidence == pytest.approx(probs[0, 0])
    assert sure.ranked[0][1] == pytest.approx(5.0)
    assert unsure.top is None  # best prob ~0.35 < 0.5: background
    assert unsure.confidence == pytest.approx(probs[1].max())
    wide = zeroshot.propose(probs, logits, k=10, background_threshold=0.0)
    assert len(wide[0].ranked) == 3 and wide[1].top == 0
    assert zeroshot.propose(probs[:0], logits[:0], background_threshold=0.5) == []
