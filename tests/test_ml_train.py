"""Training core: splits, metrics, the training loop and version artifacts."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training.ml.artifacts import (
    ArtifactCorrupt,
    load_version,
    read_text_emb,
    save_version,
    verify_version,
)
from training.ml.metrics import evaluate, render_confusion_png, render_curves_png
from training.ml.splits import heldout_split
from training.ml.temporal import TemporalHead, TemporalHeadConfig
from training.ml.train import (
    TrainConfig,
    TrainingCancelled,
    TrainProgress,
    predict,
    train_head,
)

D, T = 64, 8
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def order_dataset(n_per: int, rng: np.random.Generator, num_labels: int = 5):
    """Classes share the same frames in different temporal orders.

    The mean over frames is the same for every class, so the zero-shot scorer
    (and any order-blind pooling) is at chance; only temporal order separates
    them. Each clip also gets its own content offset and per-frame noise.
    """
    base = np.random.default_rng(123).standard_normal((T, D))
    orders = [np.random.default_rng(1000 + c).permutation(T) for c in range(num_labels)]
    xs, ys = [], []
    for c in range(num_labels):
        for _ in range(n_per):
            clip = base[orders[c]] + 0.7 * rng.standard_normal(D)
            clip = clip + 0.3 * rng.standard_normal((T, D))
            xs.append(clip / np.linalg.norm(clip, axis=1, keepdims=True))
            ys.append(c)
    return np.asarray(xs, np.float32), np.asarray(ys)


def random_text(num_labels: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_labels, D, generator=gen), dim=-1)


def small_problem(num_labels: int = 3, n_per: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, y = order_dataset(n_per, rng, num_labels)
    vx, vy = order_dataset(3, rng, num_labels)
    return x, y, vx, vy, random_text(num_labels, seed)


HEAD = TemporalHeadConfig(embed_dim=D, num_frames=T, kind="transformer", heads=4)
FAST = TrainConfig(epochs=3, batch_size=8, bf16=False, patience=0)


# ---------------------------------------------------------------------- splits


def test_split_is_deterministic_and_order_independent():
    ids = list(range(1000, 1300))
    labels = [i % 7 for i in ids]
    train, held = heldout_split(ids, labels, fraction=0.2, seed=3)
    assert heldout_split(ids, labels, fraction=0.2, seed=3) == (train, held)
    pairs = list(zip(ids, labels, strict=True))
    random.Random(0).shuffle(pairs)
    s_ids, s_labels = zip(*pairs, strict=True)
    train2, held2 = heldout_split(list(s_ids), list(s_labels), fraction=0.2, seed=3)
    assert set(train2) == set(train) and set(held2) == set(held)
    assert set(train) | set(held) == set(ids) and not set(train) & set(held)
    assert 0.12 < len(held) / len(ids) < 0.28
    assert heldout_split(ids, labels, seed=4)[1] != held  # seed matters


def test_split_is_stable_as_labels_arrive():
    ids = list(range(200))
    labels = [i % 4 for i in ids]
    _, held_small = heldout_split(ids, labels)
    more = list(range(500))
    _, held_big = heldout_split(more, [i % 4 for i in more])
    assert set(held_big) & set(ids) == set(held_small)


def test_split_keeps_a_training_example_for_every_label():
    ids = list(range(600))
    labels = [i // 2 for i in ids]  # 300 labels with two clips each
    ids.append(10_000)
    labels.append("singleton")
    train, held = heldout_split(ids, labels, fraction=0.9, seed=1)
    by_id = dict(zip(ids, labels, strict=True))
    assert {by_id[i] for i in train} == set(labels)
    assert 10_000 in train
    assert len(held) > 200  # still holds out most clips at fraction 0.9


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="ids"):
        heldout_split([1, 2], ["a"])
    with pytest.raises(ValueError, match="unique"):
        heldout_split([1, 1], ["a", "b"])


# --------------------------------------------------------------------- metrics


def test_evaluate_hand_made_example():
    scores = [
        [0.9, 0.05, 0.05],  # true 0 -> 0
        [0.3, 0.6, 0.1],  # true 0 -> 1
        [0.2, 0.7, 0.1],  # true 1 -> 1
        [0.5, 0.1, 0.4],  # true 2 -> 0
    ]
    m = evaluate(scores, [0, 0, 1, 2], ["walk", "run", "sit"])
    assert m["n"] == 4
    assert m["top1"] == 0.5
    assert m["top5"] == 1.0  # only 3 labels: every label is in the top 5
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert m["per_label_recall"] == {"walk": 0.5, "run": 1.0, "sit": 0.0}
    # F1: walk 0.5, run 2*(1/2*1)/(3/2) = 2/3, sit 0 -> mean 7/18.
    assert m["macro_f1"] == pytest.approx(7 / 18, abs=1e-12)
    assert m["support"] == {"walk": 2, "run": 1, "sit": 1}
    json.dumps(m)  # JSON-ready


def test_evaluate_top5_ties_and_missing_labels():
    scores = [[6, 5, 4, 3, 2, 1], [2, 1, 3, 4, 5, 6]]
    m = evaluate(scores, [5, 0], list("abcdef"))
    assert m["top1"] == 0.0 and m["top5"] == 0.5
    assert m["per_label_recall"]["b"] is None  # no held-out clip of "b"
    tie = evaluate([[1.0, 1.0]], [0], ["a", "b"])
    assert tie["top1"] == 1.0 and tie["confusion"] == [[1, 0], [0, 0]]
    empty = evaluate(np.zeros((0, 2)), [], ["a", "b"])
    assert empty["n"] == 0 and empty["top1"] is None
    with pytest.raises(ValueError):
        evaluate([[1.0, 2.0]], [0], ["a", "b", "c"])


def test_confusion_png_is_a_readable_picture(tmp_path):
    names = [f"action {i}" for i in range(9)] + ["a rather long label name here"]
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 4, (10, 10)) + np.diag(rng.integers(10, 30, 10))
    path = render_confusion_png(cm.tolist(), names, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = Image.open(path).convert("RGB")
    assert 400 <= img.width <= 1200 and 400 <= img.height <= 1200
    pixels = np.asarray(img).astype(int)
    r, b = pixels[..., 0], pixels[..., 2]
    assert ((b - r) > 60).mean() > 0.03  # shaded cells
    assert (pixels.sum(axis=-1) < 200).mean() > 0.002  # dark text: names, counts


def test_curves_png(tmp_path):
    history = [
        {"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "val_top1": 0.2 + e / 20}
        for e in range(1, 11)
    ]
    history[3]["val_loss"] = None
    path = render_curves_png(history, tmp_path / "curves.png", best_epoch=7)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert Image.open(path).size == (820, 300)
    render_curves_png([], tmp_path / "empty.png")  # no data still renders


# -------------------------------------------------------------------- training


def test_training_learns_temporal_order_where_zero_shot_is_at_chance():
    rng = np.random.default_rng(0)
    x, y = order_dataset(40, rng)
    vx, vy = order_dataset(20, rng)
    config = TrainConfig(epochs=50, lr=3e-3, batch_size=32, bf16=False, seed=0)
    result = train_head(x, y, vx, vy, random_text(5), HEAD, config)
    assert result.zero_shot_metrics["top1"] <= 0.4
    assert result.metrics["top1"] >= 0.8, result.history
    assert result.metrics["n"] == 100
    assert result.best_epoch > 0
    assert [h["epoch"] for h in result.history] == list(
        range(1, len(result.history) + 1)
    )
    logits = predict(result.head, vx)
    assert logits.shape == (100, 5) and logits.dtype == np.float32
    assert (logits.argmax(1) == vy).mean() == pytest.approx(result.metrics["top1"])


def test_same_seed_gives_identical_weights():
    x, y, vx, vy, text = small_problem()
    a = train_head(x, y, vx, vy, text, HEAD, FAST)
    b = train_head(x, y, vx, vy, text, HEAD, FAST)
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    c = train_head(
        x, y, vx, vy, text, HEAD, TrainConfig(**{**FAST.to_dict(), "seed": 1})
    )
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_callback_sees_progress_and_can_cancel():
    x, y, vx, vy, text = small_problem()
    seen: list[TrainProgress] = []

    def callback(p: TrainProgress) -> bool:
        seen.append(p)
        return p.epoch < 2

    with pytest.raises(TrainingCancelled):
        train_head(x, y, vx, vy, text, HEAD, FAST, callback=callback)
    assert [p.epoch for p in seen] == [1, 2]
    assert seen[0].epochs == 3 and seen[0].step == 3  # 24 clips / batch 8
    assert seen[1].elapsed >= seen[0].elapsed > 0
    assert 0 <= seen[0].val_top1 <= 1 and np.isfinite(seen[0].loss)

    calls = []
    train_head(x, y, vx, vy, text, HEAD, FAST, callback=calls.append)  # None: go on
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text_emb": np.zeros((0, D))}, "no labels"),
        ({"train_y": np.zeros(24, int)}, "one label"),
        ({"train_x": np.zeros((2, T, D)), "train_y": [0, 1]}, "at least 4"),
        ({"train_y": np.full(24, 7)}, r"\[0, 3\)"),
        ({"train_x": np.zeros((24, T, D + 1))}, "frame embeddings"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    x, y, vx, vy, text = small_problem()
    args = {"train_x": x, "train_y": y, "text_emb": text, **kwargs}
    with pytest.raises(ValueError, match=message):
        train_head(
            args["train_x"], args["train_y"], vx, vy, args["text_emb"], HEAD, FAST
        )


def test_vision_fine_tuning_needs_frames():
    x, y, vx, vy, text = small_problem()
    config = TemporalHeadConfig(embed_dim=D, heads=4, unfreeze_vision_blocks=2)
    with pytest.raises(ValueError, match="image frames"):
        train_head(x, y, vx, vy, text, config, FAST)


def test_label_with_one_example_and_no_heldout_set():
    x, y, _, _, text = small_problem(num_labels=3, n_per=6)
    keep = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:1]])
    result = train_head(x[keep], y[keep], None, None, text, HEAD, FAST)
    assert result.metrics == {} and result.zero_shot_metrics == {}
    assert len(result.history) == 3 and result.history[0]["val_top1"] is None


def test_time_limit_and_bf16():
    x, y, vx, vy, text = small_problem()
    quick = TrainConfig(epochs=50, batch_size=8, max_seconds=0.0, bf16=True)
    result = train_head(x, y, vx, vy, text, HEAD, quick)
    assert result.stopped == "time_limit" and len(result.history) == 1
    assert result.bf16
    assert all(torch.isfinite(v).all() for v in result.state_dict.values())


def test_continue_training_on_a_grown_taxonomy():
    x, y, vx, vy, text = small_problem(num_labels=3)
    first = train_head(x, y, vx, vy, text, HEAD, FAST)
    grown = torch.cat([text, random_text(1, seed=5)])
    with pytest.raises(ValueError, match="label_map"):
        train_head(x, y, vx, vy, grown, HEAD, FAST, init_state=first.state_dict)
    second = train_head(
        x,
        y,
        vx,
        vy,
        grown,
        HEAD,
        FAST,
        init_state=first.state_dict,
        label_map={0: 0, 1: 1, 2: 2},
    )
    assert second.head.num_labels == 4
    assert second.zero_shot_metrics["confusion"].__len__() == 4


# ------------------------------------------------------------------- artifacts


def trained_head() -> tuple[TemporalHead, torch.Tensor]:
    x, y, vx, vy, text = small_problem()
    return train_head(x, y, vx, vy, text, HEAD, FAST).head, text


def save(folder, head, text, **extra):
    names = [f"label {i}" for i in range(head.num_labels)]
    prompts = [f"a video of a person doing {n}" for n in names]
    meta = {"encoder": "tiny-clip", "encoder_fingerprint": "abc123", **extra}
    return save_version(
        folder, head, head.config, names, prompts, text, {"top1": 0.9}, meta
    )


def test_version_roundtrip(tmp_path):
    tmp_path = tmp_path / "versions"
    head, text = trained_head()
    checksum = save(tmp_path / "v1", head, text, train_config=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # no temp folders
    loaded, config, labels = load_version(tmp_path / "v1", checksum)
    x = torch.as_tensor(small_problem()[2])
    assert torch.equal(loaded(x), head.eval()(x))
    assert not loaded.training
    assert config["encoder_fingerprint"] == "abc123"
    assert config["train_config"]["epochs"] == FAST.epochs
    assert TemporalHeadConfig.from_dict(config["head_config"]) == HEAD
    assert labels[1] == {
        "name": "label 1",
        "prompt": "a video of a person doing label 1",
        "index": 1,
    }
    assert torch.equal(read_text_emb(tmp_path / "v1"), text)
    assert json.loads((tmp_path / "v1" / "metrics.json").read_text()) == {"top1": 0.9}
    # Same inputs, same bytes: the checksum identifies the content.
    assert save(tmp_path / "v2", head, text, train_config=FAST) == checksum
    with pytest.raises(FileExistsError):
        save(tmp_path / "v1", head, text)


def test_corrupt_versions_are_refused(tmp_path):
    head, text = trained_head()
    checksum = save(tmp_path / "v", head, text)
    weights = tmp_path / "v" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match="checksum mismatch"):
        load_version(tmp_path / "v")

    save(tmp_path / "w", head, text)
    with pytest.raises(ArtifactCorrupt, match="not the expected"):
        verify_version(tmp_path / "w", "0" * 64)
    (tmp_path / "w" / "labels.json").unlink()
    with pytest.raises(ArtifactCorrupt, match="missing labels.json"):
        load_version(tmp_path / "w", checksum)
    with pytest.raises(ArtifactCorrupt, match="does not exist"):
        load_version(tmp_path / "nowhere")
