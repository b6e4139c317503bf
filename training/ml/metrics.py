"""Classification metrics and their pictures, with numpy and Pillow only.

``evaluate`` turns scores (logits or probabilities; only their ranking is used)
into a JSON-ready dict. The two renderers draw the confusion matrix and the
training curves as PNGs for the version pages, without pulling in matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# --------------------------------------------------------------------- metrics


def evaluate(scores: Any, y: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, macro F1, per-label recall and confusion counts.

    ``scores`` is (N, L); ``y`` holds true label indices (N,). Ties go to the
    lower label index. Macro F1 averages over labels that occur in ``y`` or in
    the predictions (sklearn's convention); labels with no held-out clips get
    recall ``None``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    num_labels = len(label_names)
    if s.ndim != 2 or s.shape[0] != y.shape[0] or s.shape[1] != num_labels:
        raise ValueError(
            f"scores must be (N, {num_labels}) for {y.shape[0]} targets, got {s.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= num_labels):
        raise ValueError(f"targets must be label indices in [0, {num_labels})")

    names = [str(n) for n in label_names]
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    if y.size == 0:
        return {
            "n": 0,
            "top1": None,
            "top5": None,
            "macro_f1": None,
            "per_label_recall": dict.fromkeys(names),
            "support": dict.fromkeys(names, 0),
            "confusion": confusion.tolist(),
        }

    # Stable sort makes ties deterministic and consistent with argmax.
    ranked = np.argsort(-s, axis=1, kind="stable")
    pred = ranked[:, 0]
    top5 = (ranked[:, : min(5, num_labels)] == y[:, None]).any(axis=1)
    np.add.at(confusion, (y, pred), 1)

    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(
        2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0
    )
    present = (support > 0) | (predicted > 0)

    return {
        "n": int(y.size),
        "top1": float((pred == y).mean()),
        "top5": float(top5.mean()),
        "macro_f1": float(f1[present].mean()),
        "per_label_recall": {
            name: (float(recall[i]) if support[i] else None)
            for i, name in enumerate(names)
        },
        "support": {name: int(support[i]) for i, name in enumerate(names)},
        "confusion": confusion.tolist(),
    }


# -------------------------------------------------------------------- drawing

_INK = (33, 37, 41)
_GRID = (222, 226, 230)
_BLUE = (33, 102, 172)
_ORANGE = (230, 115, 0)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - top)


def _shorten(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _shade(frac: float) -> tuple[int, int, int]:
    """White -> blue as ``frac`` goes 0 -> 1; gamma < 1 lifts small fractions."""
    t = float(frac) ** 0.7
    return tuple(round(255 + (c - 255) * t) for c in _BLUE)  # type: ignore[return-value]


def _paste_vertical(
    img: Image.Image, xy: tuple[int, int], text: str, font: Any
) -> None:
    """Draw ``text`` rotated 90 degrees (reading upwards) with its top-left at xy."""
    w, h = _text_size(font, text)
    left, top = font.getbbox(text)[:2]
    stamp = Image.new("L", (w + 2, h + 2), 0)
    ImageDraw.Draw(stamp).text((1 - left, 1 - top), text, font=font, fill=255)
    stamp = stamp.rotate(90, expand=True)
    img.paste(_INK, (xy[0], xy[1], xy[0] + stamp.width, xy[1] + stamp.height), stamp)


def render_confusion_png(
    confusion: Sequence[Sequence[int]],
    label_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Heat-map of counts: rows are true labels, columns predicted labels.

    Cells are shaded by the row-normalised fraction (so each row reads as that
    label's recall pattern) and show the raw count when there is room.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    n = len(label_names)
    if cm.shape != (n, n):
        raise ValueError(f"confusion must be {n}x{n}, got {cm.shape}")
    names = [_shorten(str(x)) for x in label_names]
    font, small, bold = _font(12), _font(11), _font(14)

    cell = int(np.clip(560 // max(n, 1), 12, 44))
    name_w = max((_text_size(font, t)[0] for t in names), default=0)
    pad = 8
    left = pad + 16 + pad + name_w + pad  # axis title, names, gap
    top = pad + 20 + 16 + pad + name_w + pad  # title, axis title, rotated names
    width = left + n * cell + pad * 2
    height = top + n * cell + pad * 2
    img = Image.new("RGB", (max(width, 240), max(height, 120)), "white")
    draw = ImageDraw.Draw(img)

    draw.text((pad, pad), title, font=bold, fill=_INK)
    pw, _ = _text_size(font, "predicted")
    draw.text(
        (left + (n * cell - pw) // 2, pad + 20), "predicted", font=font, fill=_INK
    )
    tw, _ = _text_size(font, "true")
    _paste_vertical(img, (pad, top + (n * cell - tw) // 2), "true", font)

    row_sums = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, row_sums, out=np.zeros(cm.shape), where=row_sums > 0)
    for i in range(n):
        y0 = top + i * cell
        w, h = _text_size(font, names[i])
        draw.text(
            (left - pad - w, y0 + (cell - h) // 2 - 2), names[i], font=font, fill=_INK
        )
        _paste_vertical(
            img, (left + i * cell + (cell - h) // 2 - 1, top - pad - w), names[i], font
        )
        for j in range(n):
            x0 = left + j * cell
            box = (x0, y0, x0 + cell - 1, y0 + cell - 1)
            draw.rectangle(box, fill=_shade(frac[i, j]), outline=_GRID)
            if cell >= 18 and cm[i, j]:
                label = str(cm[i, j])
                lw, lh = _text_size(small, label)
                if lw <= cell - 2:
                    ink = "white" if frac[i, j] > 0.4 else _INK
                    draw.text(
                        (x0 + (cell - lw) // 2, y0 + (cell - lh) // 2 - 2),
                        label,
                        font=small,
                        fill=ink,
                    )
    # Outline the diagonal so correct predictions are easy to find.
    for i in range(n):
        x0, y0 = left + i * cell, top + i * cell
        draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), outline=_INK)

    path = Path(path)
    img.save(path, format="PNG")
    return path


def _nice_range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    margin = 0.05 * (hi - lo)
    return lo - margin, hi + margin


def _panel(
    img: Image.Image,
    box: tuple[int, int, int, int],
    title: str,
    series: Sequence[tuple[str, tuple[int, int, int], list[float], list[float]]],
    y_range: tuple[float, float] | None,
    mark_x: float | None,
) -> None:
    """One line chart inside ``box``: axes, 5 y ticks, epoch x ticks, legend."""
    draw = ImageDraw.Draw(img)
    font = _font(11)
    x0, y0, x1, y1 = box
    draw.text((x0, y0), title, font=_font(13), fill=_INK)
    plot = (x0 + 44, y0 + 22, x1 - 8, y1 - 30)
    px0, py0, px1, py1 = plot
    xs_all = [x for _, _, xs, _ in series for x in xs]
    ys_all = [y for _, _, _, ys in series for y in ys]
    if not xs_all:
        draw.text((px0, (py0 + py1) // 2), "no data", font=font, fill=_INK)
        return
    xmin, xmax = min(xs_all), max(xs_all)
    if xmax == xmin:
        xmin, xmax = xmin - 1, xmax + 1
    ymin, ymax = y_range or _nice_range(ys_all)

    def to_px(x: float, y: float) -> tuple[float, float]:
        fx = (x - xmin) / (xmax - xmin)
        fy = (y - ymin) / (ymax - ymin)
        return px0 + fx * (px1 - px0), py1 - fy * (py1 - py0)

    for k in range(5):
        yv = ymin + (ymax - ymin) * k / 4
        _, py = to_px(xmin, yv)
        draw.line((px0, py, px1, py), fill=_GRID)
        label = f"{yv:.2f}"
        w, h = _text_size(font, label)
        draw.text((px0 - w - 4, py - h // 2 - 2), label, font=font, fill=_INK)
    step = max(1, round((xmax - xmin) / 8))
    for xv in range(int(np.ceil(xmin)), int(xmax) + 1, step):
        px, _ = to_px(xv, ymin)
        draw.line((px, py1, px, py1 + 3), fill=_INK)
        w, _ = _text_size(font, str(xv))
        draw.text((px - w / 2, py1 + 5), str(xv), font=font, fill=_INK)
    w, _ = _text_size(font, "epoch")
    draw.text(((px0 + px1 - w) / 2, py1 + 16), "epoch", font=font, fill=_INK)
    draw.rectangle(plot, outline=_INK)
    if mark_x is not None and xmin <= mark_x <= xmax:
        px, _ = to_px(mark_x, ymin)
        for yy in range(int(py0), int(py1), 6):
            draw.line((px, yy, px, min(yy + 3, py1)), fill=(120, 120, 120))

    lx = px1 - 4
    for k, (name, color, xs, ys) in enumerate(series):
        pts = [to_px(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for px, py in pts:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)
        w, h = _text_size(font, name)
        ly = py0 + 4 + k * (h + 6)
        draw.line(
            (lx - w - 22, ly + h // 2 + 2, lx - w - 6, ly + h // 2 + 2),
            fill=color,
            width=2,
        )
        draw.text((lx - w, ly), name, font=font, fill=_INK)


def _series(
    history: Sequence[dict[str, Any]], key: str
) -> tuple[list[float], list[float]]:
    pts = [
        (float(h["epoch"]), float(h[key]))
        for h in history
        if h.get(key) is not None and np.isfinite(h[key])
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def render_curves_png(
    history: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    best_epoch: int | None = None,
) -> Path:
    """Loss (train and held-out) and held-out top-1 per epoch, side by side.

    ``history`` is ``TrainResult.history``: dicts with ``epoch``, ``train_loss``,
    ``val_loss`` and ``val_top1`` (missing or None values are skipped). A dashed
    line marks ``best_epoch``, the weights that were kept.
    """
    img = Image.new("RGB", (820, 300), "white")
    _panel(
        img,
        (8, 8, 410, 292),
        "Loss",
        [
            ("train", _BLUE, *_series(history, "train_loss")),
            ("held-out", _ORANGE, *_series(history, "val_loss")),
        ],
        None,
        best_epoch,
    )
    _panel(
        img,
        (418, 8, 812, 292),
        "Held-out top-1",
        [("held-out", _ORANGE, *_series(history, "val_top1"))],
        (0.0, 1.0),
        best_epoch,
    )
    path = Path(path)
    img.save(path, format="PNG")
    return path
