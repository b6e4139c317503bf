"""TemporalHead: zero-shot parity at init, taxonomy changes, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.ml.temporal import TemporalHead, TemporalHeadConfig

D, T, L = 64, 8, 5


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def zero_shot_logits(x: torch.Tensor, text: torch.Tensor, scale: float = 100.0):
    """Today's scorer: normalised mean over frames against text embeddings."""
    return scale * F.normalize(x.mean(dim=1), dim=-1) @ F.normalize(text, dim=-1).T


def make_head(kind: str = "attention", **kw) -> TemporalHead:
    config = TemporalHeadConfig(embed_dim=D, num_frames=T, kind=kind, heads=4, **kw)
    return TemporalHead(config, unit(L, D, seed=1))


def perturb_(head: TemporalHead) -> None:
    """Make the residual branch non-zero, as training would."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_untrained_head_reproduces_zero_shot_logits(kind):
    head = make_head(kind, layers=2).eval()
    x, text = unit(16, T, D, seed=2), unit(L, D, seed=1)
    got = head(x)
    assert got.shape == (16, L)
    assert torch.allclose(got, zero_shot_logits(x, text), rtol=0, atol=1e-5)
    # In float64 the two agree to rounding noise (same fp32 text rows in both).
    got64 = head.double()(x.double())
    want64 = zero_shot_logits(x.double(), F.normalize(text, dim=-1).double())
    assert (got64 - want64).abs().max().item() < 1e-10


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_untrained_features_are_the_normalised_mean(kind):
    head = make_head(kind).train()  # dropout on: must not matter at init
    x = unit(4, T, D, seed=3)
    feat = head.features(x)
    assert torch.allclose(feat, F.normalize(x.mean(1), dim=-1), atol=1e-6)
    assert torch.allclose(feat.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_full_mask_equals_no_mask_and_mask_drops_frames():
    head = make_head("transformer").eval()
    perturb_(head)
    x = unit(3, T, D, seed=4)
    full = torch.ones(3, T, dtype=torch.bool)
    assert torch.allclose(head(x, full), head(x), atol=1e-5)
    # Masked frames must not influence the output at all.
    mask = full.clone()
    mask[:, 5:] = False
    y = x.clone()
    y[:, 5:] = unit(3, T - 5, D, seed=5)
    assert torch.allclose(head(x, mask), head(y, mask), atol=1e-5)


def test_set_labels_grows_taxonomy_keeping_trained_rows():
    head = make_head()
    perturb_(head)
    trained = head.class_weights().detach().clone()
    x = unit(6, T, D, seed=6)
    before = head.eval()(x).detach()

    new_text = torch.cat([unit(L, D, seed=1), unit(2, D, seed=9)])  # two appended
    head.set_labels(new_text, keep={i: i for i in range(L)})

    assert head.num_labels == L + 2
    w = head.class_weights().detach()
    assert torch.allclose(w[:L], trained, atol=1e-6)
    assert torch.allclose(w[L:], unit(2, D, seed=9), atol=1e-6)
    after = head(x).detach()
    assert torch.allclose(after[:, :L], before, atol=1e-5)
    # New labels score with their zero-shot rows on the (trained) feature.
    want_new = 100.0 * head.features(x).detach() @ unit(2, D, seed=9).T
    assert torch.allclose(after[:, L:], want_new, atol=1e-4)


def test_set_labels_reorders_and_drops():
    head = make_head()
    perturb_(head)
    trained = head.class_weights().detach().clone()
    text = unit(3, D, seed=11)
    head.set_labels(text, keep={4: 0, 1: 2})  # old 4 -> new 0, old 1 -> new 2
    w = head.class_weights().detach()
    assert torch.allclose(w[0], trained[4], atol=1e-6)
    assert torch.allclose(w[2], trained[1], atol=1e-6)
    assert torch.allclose(w[1], text[1], atol=1e-6)  # new label: zero-shot row


def test_set_labels_none_resets_to_zero_shot():
    head = make_head().eval()
    perturb_(head)
    text = unit(L, D, seed=1)
    head.set_labels(text)
    assert torch.allclose(head.class_weights(), text, atol=1e-6)


def test_set_labels_rejects_bad_mapping():
    head = make_head()
    with pytest.raises(ValueError, match="outside"):
        head.set_labels(unit(2, D), keep={0: 5})
    with pytest.raises(ValueError, match="width"):
        head.set_labels(unit(2, D + 1))


def test_config_roundtrip_and_validation():
    config = TemporalHeadConfig(embed_dim=D, kind="transformer", layers=2, heads=4)
    data = config.to_dict()
    assert TemporalHeadConfig.from_dict({**data, "future_field": 1}) == config
    with pytest.raises(ValueError, match="divide"):
        TemporalHeadConfig(embed_dim=64, heads=5)
    with pytest.raises(ValueError, match="kind"):
        TemporalHeadConfig(kind="lstm")  # type: ignore[arg-type]


def test_state_dict_roundtrip_rebuilds_label_count():
    head = make_head("transformer")
    perturb_(head)
    head.set_labels(unit(7, D, seed=3), keep={0: 0})
    clone = TemporalHead.from_state_dict(head.config, head.state_dict()).eval()
    x = unit(2, T, D)
    assert clone.num_labels == 7
    assert torch.equal(clone(x), head.eval()(x))


def test_transformer_rejects_too_many_frames():
    head = make_head("transformer")
    with pytest.raises(ValueError, match="frames"):
        head(unit(1, T + 1, D))


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_onnx_export_matches_torch(tmp_path, kind):
    import onnx

    from training.ml.artifacts import export_onnx_head

    head = make_head(kind)
    perturb_(head)
    path = tmp_path / "head.onnx"
    diff = export_onnx_head(head, path, num_frames=T, embed_dim=D)
    assert diff < 1e-3
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [T, D]
    assert head.training  # the caller's module is left alone
    assert not list(tmp_path.glob(".*tmp*"))


def test_head_accepts_numpy_text_embeddings():
    text = np.asarray(unit(L, D, seed=1))
    head = TemporalHead(TemporalHeadConfig(embed_dim=D, heads=4), text)
    assert head.num_labels == L
