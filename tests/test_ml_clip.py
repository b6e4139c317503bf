"""Dev CLIP checkpoints, the real CLIP tokenizer, and offline-first loading."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

import pytest
import regex
import torch
from transformers import CLIPTokenizer, CLIPTokenizerFast

from training.ml import clip as clipml
from training.ml.devclip import make_dev_clip, open_clip_bpe_path

SENTENCES = [
    "a photo of a person waving.",
    "a photo of a cat",
    "A Video of the person PRACTICING  jumping jacks!",
    "someone's doing 3 push-ups, isn't it?",
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clipml.clear_cache()
    yield
    clipml.clear_cache()


# --- an independent re-implementation of open_clip's SimpleTokenizer --------


@lru_cache(maxsize=1)
def _reference_tables() -> tuple[dict[int, str], dict[str, int], dict[tuple, int]]:
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_encoder = dict(zip(bs, map(chr, cs), strict=True))
    with gzip.open(open_clip_bpe_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(byte_encoder.values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {tok: i for i, tok in enumerate(vocab)}
    return byte_encoder, encoder, {m: i for i, m in enumerate(merges)}


def _reference_bpe(token: str, ranks: dict[tuple, int]) -> list[str]:
    word = [*token[:-1], token[-1] + "</w>"]
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                merged.append(word[i] + word[i + 1])
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def _reference_encode(text: str) -> list[int]:
    byte_encoder, encoder, ranks = _reference_tables()
    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
        r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    text = " ".join(text.split()).strip().lower()
    ids = [encoder["<|startoftext|>"]]
    for token in pattern.findall(text):
        chars = "".join(byte_encoder[b] for b in token.encode("utf-8"))
        ids += [encoder[t] for t in _reference_bpe(chars, ranks)]
    return ids + [encoder["<|endoftext|>"]]


# --- dev checkpoint files -----------------------------------------------------


def test_dev_clip_writes_hf_layout(tiny_clip_dir: Path) -> None:
    names = {p.name for p in tiny_clip_dir.iterdir()}
    expected = {
        "config.json",
        "model.safetensors",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "preprocessor_config.json",
        "harweb_dev_model.json",
    }
    assert expected <= names
    marker = json.loads((tiny_clip_dir / "harweb_dev_model.json").read_text())
    assert marker == {"random_weights": True, "size": "tiny", "seed": 0}
    vocab = json.loads((tiny_clip_dir / "vocab.json").read_text())
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (tiny_clip_dir / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    pre = json.loads((tiny_clip_dir / "preprocessor_config.json").read_text())
    assert pre["crop_size"] == {"height": 224, "width": 224}
    assert pre["image_mean"][0] == pytest.approx(0.48145466)


@pytest.mark.parametrize("cls", [CLIPTokenizer, CLIPTokenizerFast])
def test_tokenizer_matches_open_clip(tiny_clip_dir: Path, cls: type) -> None:
    tok = cls.from_pretrained(tiny_clip_dir)
    for text in SENTENCES:
        assert tok(text).input_ids == _reference_encode(text), text
    # Published ids of the real CLIP vocabulary.
    cat = [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("a photo of a cat").input_ids == cat
    assert tok("a photo of a person waving.").input_ids[:6] == [
        49406, 320, 1125, 539, 320, 2533,
    ]  # fmt: skip


def test_make_dev_clip_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_dev_clip(tmp_path / "m", "tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


# --- loading ------------------------------------------------------------------


def test_load_local_folder(tiny_clip_dir: Path) -> None:
    start = time.perf_counter()
    loaded = clipml.load_clip(str(tiny_clip_dir))
    assert time.perf_counter() - start < 5
    assert loaded.is_random
    assert not loaded.model.training
    assert loaded.image_size == 224 and loaded.embed_dim == 64
    assert loaded.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert loaded.logit_scale == pytest.approx(float(torch.tensor(2.6592).exp()), 1e-3)
    assert loaded.model.dtype == torch.float32
    assert clipml.load_clip(str(tiny_clip_dir)) is loaded  # process cache


def test_fingerprint_stable_and_weight_sensitive(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    first = clipml.load_clip(str(tiny_clip_dir)).fingerprint
    clipml.clear_cache()
    assert clipml.load_clip(str(tiny_clip_dir)).fingerprint == first
    assert clipml.local_fingerprint(tiny_clip_dir) == first
    other = make_dev_clip(tmp_path / "seed1", "tiny", seed=1)
    assert clipml.local_fingerprint(other) != first


def test_real_folder_is_not_random(tiny_clip_dir: Path, tmp_path: Path) -> None:
    real = Path(shutil.copytree(tiny_clip_dir, tmp_path / "real"))
    (real / "harweb_dev_model.json").unlink()
    assert not clipml.load_clip(str(real)).is_random


def test_missing_folder_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(clipml.ModelNotFound) as err:
        clipml.load_clip("/nonexistent/clip-model", setting="MY_SETTING")
    assert time.perf_counter() - start < 1
    message = str(err.value)
    assert "/nonexistent/clip-model" in message and "MY_SETTING" in message
    assert "\n" not in message


def test_incomplete_folder_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(clipml.ModelNotFound, match="incomplete.*weights"):
        clipml.load_clip(str(tmp_path))


def test_hub_id_offline_fails_fast_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be tried when offline")

    monkeypatch.setattr(clipml, "_probe_hub", no_network)
    monkeypatch.setattr(clipml, "_download", no_network)
    start = time.perf_counter()
    with pytest.raises(clipml.ModelNotFound) as err:
        clipml.load_clip("harweb-tests/no-such-clip-model")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "HARWEB_CLIP_MODEL" in message and "make_dev_clip" in message
    assert "not available offline" in message and "\n" not in message


def test_unresponsive_hub_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(clipml, "HUB_PROBE_TIMEOUT_S", 0.1)
    monkeypatch.setattr(
        huggingface_hub.HfApi, "model_info", lambda *a, **k: time.sleep(3)
    )
    start = time.perf_counter()
    with pytest.raises(clipml.ModelNotFound, match="did not answer"):
        clipml.load_clip("harweb-tests/no-such-clip-model")
    assert time.perf_counter() - start < 5


def test_hub_offline_switch_is_read_at_call_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not clipml.hub_offline()
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "true")
    assert clipml.hub_offline()


def test_looks_local() -> None:
    assert clipml.looks_local("./models/clip")
    assert clipml.looks_local("~/clip")
    assert clipml.looks_local(os.sep + "abs")
    assert not clipml.looks_local("openai/clip-vit-base-patch32")
