"""The lean export graph computes what transformers' CLIP vision forward does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.ml import encoders
from training.ml.clip import LoadedClip, load_clip
from training.ml.devclip import make_dev_clip
from training.ml.visiongraph import LeanVisionHead


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedClip:
    folder = make_dev_clip(tmp_path_factory.mktemp("clip") / "tiny", "tiny", seed=3)
    return load_clip(str(folder))


@pytest.fixture(scope="module")
def pixels(loaded: LoadedClip) -> torch.Tensor:
    frames = encoders.synthetic_probe_frames(5, size=loaded.image_size)
    return encoders.build_backend(loaded, "fp32")._preprocess(frames)


def reference(loaded: LoadedClip, pixels: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return encoders.VisionHead(loaded.model).eval()(pixels).numpy()


def test_lean_head_matches_transformers_forward(
    loaded: LoadedClip, pixels: torch.Tensor
) -> None:
    with torch.inference_mode():
        got = LeanVisionHead(loaded.model).eval()(pixels).numpy()
    expected = reference(loaded, pixels)
    assert np.abs(expected).max() > 0.1  # not trivially zero
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4)


def test_lean_head_leaves_the_shared_model_alone(
    loaded: LoadedClip, pixels: torch.Tensor
) -> None:
    before = reference(loaded, pixels)
    lean = LeanVisionHead(loaded.model)
    with torch.no_grad():  # its own copies, not views of the model's weights
        lean.patch_proj.weight.mul_(0)
        lean.layers[0].qkv.weight.mul_(0)
        lean.layers[0].qkv.bias.mul_(0)
    np.testing.assert_array_equal(reference(loaded, pixels), before)


def test_lean_head_rejects_other_image_sizes(loaded: LoadedClip) -> None:
    lean = LeanVisionHead(loaded.model)
    size = 2 * loaded.image_size  # would silently reshape into more patches
    with pytest.raises(ValueError, match="expected pixels shaped"):
        lean(torch.zeros(1, 3, size, size))


def test_exported_fp32_graph_matches_and_has_no_conv(
    loaded: LoadedClip, pixels: torch.Tensor, tmp_path: Path
) -> None:
    path = tmp_path / "vision.onnx"
    encoders.export_vision_fp32(loaded, path)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Conv" not in ops and "MatMul" in ops  # the patches are a MatMul
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (pixels[:1], pixels):  # the batch axis stays dynamic
        (got,) = session.run(None, {"pixel_values": batch.numpy()})
        np.testing.assert_allclose(got, reference(loaded, batch), atol=2e-5, rtol=1e-4)


def test_int8_graph_quantises_the_patch_embedding(
    loaded: LoadedClip, tmp_path: Path
) -> None:
    path = encoders.onnx_int8_path(loaded, tmp_path)
    nodes = onnx.load(str(path)).graph.node
    patch = {n.op_type for n in nodes if "patch_proj" in n.name}
    assert "MatMulInteger" in patch and "MatMul" not in patch
