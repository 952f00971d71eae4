"""Small PNG charts drawn with Pillow (no plotting dependency): bars and per-item values."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw

from onetok.files import atomic_write_bytes

WIDTH, HEIGHT, MARGIN = 800, 360, 48
BAR_COLOUR, LINE_COLOUR, AXIS_COLOUR = (52, 101, 164), (204, 0, 0), (40, 40, 40)


def _canvas(title: str) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    draw.text((MARGIN, 12), title, fill=AXIS_COLOUR)
    draw.line([(MARGIN, MARGIN), (MARGIN, HEIGHT - MARGIN), (WIDTH - MARGIN, HEIGHT - MARGIN)], fill=AXIS_COLOUR)
    return img, draw


def _label_axes(draw: ImageDraw.ImageDraw, x_label: str, x_last: int, y_low: float, y_high: float) -> None:
    draw.text((MARGIN, HEIGHT - MARGIN + 6), f"0  {x_label}", fill=AXIS_COLOUR)
    draw.text((WIDTH - MARGIN - 24, HEIGHT - MARGIN + 6), str(x_last), fill=AXIS_COLOUR)
    draw.text((4, MARGIN - 6), f"{y_high:.3g}", fill=AXIS_COLOUR)
    draw.text((4, HEIGHT - MARGIN - 6), f"{y_low:.3g}", fill=AXIS_COLOUR)


def _save(img: Image.Image, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def bar_chart(values: np.ndarray, path: str | os.PathLike, title: str, x_label: str) -> None:
    """One bar per value (values are max-pooled into at most one bar per pixel column)."""
    values = np.asarray(values, dtype=np.float64)
    plot_width = WIDTH - 2 * MARGIN
    bins = np.array_split(values, min(len(values), plot_width))
    heights = np.array([b.max() for b in bins])
    top = heights.max() if heights.max() > 0 else 1.0
    img, draw = _canvas(title)
    step = plot_width / len(heights)
    for i, value in enumerate(heights):
        if value <= 0:
            continue
        x0 = MARGIN + i * step
        y0 = HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * value / top
        draw.rectangle([x0, min(y0, HEIGHT - MARGIN - 1), max(x0, x0 + step - 1), HEIGHT - MARGIN - 1], fill=BAR_COLOUR)
    _label_axes(draw, x_label, len(values) - 1, 0.0, top)
    _save(img, path)


def line_chart(values: np.ndarray, path: str | os.PathLike, title: str, x_label: str) -> None:
    """Values in item order joined by a line, with a dot per item; non-finite values are left out."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    high = high if high > low else low + 1.0
    img, draw = _canvas(title)
    step = (WIDTH - 2 * MARGIN) / max(1, len(values) - 1)
    points = [
        (MARGIN + i * step, HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (v - low) / (high - low))
        for i, v in enumerate(values) if np.isfinite(v)
    ]
    if len(points) > 1:
        draw.line(points, fill=LINE_COLOUR, width=1)
    for x, y in points:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=LINE_COLOUR)
    _label_axes(draw, x_label, len(values) - 1, low, high)
    _save(img, path)
