"""Random-weight CLIP checkpoints for development, tests and benchmarks.

The real CLIP weights are a download away, which CI and offline machines do
not have. A dev model has the exact file layout of an HF CLIP checkpoint and the
*real* CLIP tokenizer (rebuilt from open_clip's BPE file, which is vendored in
the open-clip-torch wheel), so every code path - tokenisation, loading, image
and text encoding, ONNX export - runs for real; only the weights are noise.
A ``harweb_dev_model.json`` marker lets the app warn that its scores mean
nothing.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
from transformers import CLIPConfig, CLIPModel

DEV_MARKER = "harweb_dev_model.json"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# open_clip/OpenAI keep merges[1 : 49152 - 256 - 2 + 1] of the BPE file: the
# first line is a header, and the vocab is capped at 49408 = 2*256 + merges + 2.
_N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 2 * 256 + _N_MERGES + 2
CONTEXT_LENGTH = 77
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class DevClipShape:
    """Architecture of a dev CLIP; only the sizes that differ between presets."""

    vision_hidden: int  # ViT width
    vision_layers: int  # ViT depth
    vision_heads: int  # ViT attention heads
    text_hidden: int  # text transformer width
    text_layers: int  # text transformer depth
    text_heads: int  # text attention heads
    projection_dim: int  # joint image-text embedding size
    patch_size: int = 32  # ViT patch size (B/32 like the default real model)
    image_size: int = 224  # input resolution the app samples frames at


DEV_SHAPES: dict[str, DevClipShape] = {
    # Small enough to build, load and run in well under a second in tests.
    "tiny": DevClipShape(64, 2, 2, 64, 2, 2, 64),
    # openai/clip-vit-base-patch32 shapes, so benchmarks see real FLOPs.
    "base": DevClipShape(768, 12, 12, 512, 12, 8, 512),
}


def make_dev_clip(
    out_dir: str | Path, size: Literal["tiny", "base"] = "tiny", seed: int = 0
) -> Path:
    """Write a random-weight HF CLIP checkpoint with the real tokenizer."""
    if size not in DEV_SHAPES:
        raise ValueError(f"unknown dev CLIP size {size!r}; use one of {DEV_SHAPES}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model = _random_model(DEV_SHAPES[size], seed)
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer_files(out)
    _write_json(out / "preprocessor_config.json", _preprocessor_config(224))
    marker = {"random_weights": True, "size": size, "seed": seed}
    _write_json(out / DEV_MARKER, marker)
    return out


def _random_model(shape: DevClipShape, seed: int) -> CLIPModel:
    config = CLIPConfig(
        text_config={
            "hidden_size": shape.text_hidden,
            "intermediate_size": 4 * shape.text_hidden,
            "num_hidden_layers": shape.text_layers,
            "num_attention_heads": shape.text_heads,
            "vocab_size": VOCAB_SIZE,
            "max_position_embeddings": CONTEXT_LENGTH,
            # Real CLIP ids: pad = eos = <|endoftext|>, bos = <|startoftext|>.
            "bos_token_id": VOCAB_SIZE - 2,
            "eos_token_id": VOCAB_SIZE - 1,
            "pad_token_id": VOCAB_SIZE - 1,
            "projection_dim": shape.projection_dim,
        },
        vision_config={
            "hidden_size": shape.vision_hidden,
            "intermediate_size": 4 * shape.vision_hidden,
            "num_hidden_layers": shape.vision_layers,
            "num_attention_heads": shape.vision_heads,
            "patch_size": shape.patch_size,
            "image_size": shape.image_size,
            "projection_dim": shape.projection_dim,
        },
        projection_dim=shape.projection_dim,
    )
    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval()


# --- tokenizer -------------------------------------------------------------


def open_clip_bpe_path() -> Path:
    """Locate open_clip's BPE file without importing open_clip (needs torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open-clip-torch is not installed")
    return Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (same order as open_clip)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    bs, cs = printable[:], printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


@lru_cache(maxsize=1)
def clip_merges() -> tuple[tuple[str, str], ...]:
    """The BPE merges exactly as open_clip's SimpleTokenizer slices them."""
    with gzip.open(open_clip_bpe_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    return tuple(tuple(line.split()) for line in lines[1 : _N_MERGES + 1])


@lru_cache(maxsize=1)
def clip_vocab() -> dict[str, int]:
    """Token -> id, in SimpleTokenizer's order (bytes, bytes</w>, merges, specials)."""
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    tokens += ["".join(merge) for merge in clip_merges()]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {tok: i for i, tok in enumerate(tokens)}


def write_tokenizer_files(out: Path) -> None:
    """Write vocab.json, merges.txt and the HF tokenizer configs for CLIP."""
    _write_json(out / "vocab.json", clip_vocab(), indent=None)
    merges = "\n".join(" ".join(m) for m in clip_merges())
    (out / "merges.txt").write_text("#version: 0.2\n" + merges + "\n", "utf-8")
    specials = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    }
    _write_json(out / "special_tokens_map.json", specials)
    config = {
        **specials,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    _write_json(out / "tokenizer_config.json", config)


def _preprocessor_config(image_size: int) -> dict[str, object]:
    # Same as openai/clip-vit-base-patch32's; resample 3 = bicubic.
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
        "do_convert_rgb": True,
    }


def _write_json(path: Path, data: object, indent: int | None = 2) -> None:
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), "utf-8")
