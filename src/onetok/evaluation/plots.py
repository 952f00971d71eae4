"""Small PNG charts drawn with Pillow (no plotting dependency): bars and per-item values."""
from __future__ import annotations

import io
import math
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


SERIES_COLOURS = [(52, 101, 164), (204, 0, 0), (78, 154, 6), (245, 121, 0), (117, 80, 123), (193, 125, 17),
                  (85, 87, 83)]


def _nice_ticks(low: float, high: float) -> list[float]:
    """Powers of ten (with 2x and 5x steps when few) inside [low, high] of a log axis."""
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if low <= t <= high]
    return inside if len(inside) <= 12 else [t for t in inside if math.log10(t).is_integer()]


def log_x_panels(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], path: str | os.PathLike,
                 x_label: str) -> None:
    """Panels stacked top to bottom, each a y-against-x chart on a log x axis shared by all panels:
    one coloured line with dots per series, a legend on the right. Non-finite points are left out."""
    legend_width, plot_right = 180, WIDTH - MARGIN
    names = list(dict.fromkeys(name for _, series in panels for name in series))
    colours = {name: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, name in enumerate(names)}
    xs = [x for _, series in panels for points in series.values() for x, y in points
          if x > 0 and math.isfinite(x) and math.isfinite(y)]
    x_low, x_high = (min(xs) / 1.3, max(xs) * 1.3) if xs else (1.0, 10.0)
    image = Image.new("RGB", (WIDTH + legend_width, HEIGHT * len(panels)), "white")
    for row, (title, series) in enumerate(panels):
        panel, draw = _canvas(title)
        finite = {name: sorted((x, y) for x, y in points if x > 0 and math.isfinite(x) and math.isfinite(y))
                  for name, points in series.items()}
        ys = [y for points in finite.values() for _, y in points]
        y_low, y_high = (min(ys), max(ys)) if ys else (0.0, 1.0)
        pad = (y_high - y_low) * 0.05 or 1.0
        y_low, y_high = y_low - pad, y_high + pad

        def at(x: float, y: float) -> tuple[float, float]:
            u = (math.log10(x) - math.log10(x_low)) / (math.log10(x_high) - math.log10(x_low))
            return MARGIN + u * (plot_right - MARGIN), HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (y - y_low) / (y_high - y_low)

        for tick in _nice_ticks(x_low, x_high):
            x, _ = at(tick, y_low)
            draw.line([(x, HEIGHT - MARGIN), (x, HEIGHT - MARGIN + 4)], fill=AXIS_COLOUR)
            draw.text((x - 8, HEIGHT - MARGIN + 6), f"{tick:g}", fill=AXIS_COLOUR)
        draw.text((plot_right - 120, HEIGHT - MARGIN + 22), x_label, fill=AXIS_COLOUR)
        draw.text((4, MARGIN - 6), f"{y_high:.3g}", fill=AXIS_COLOUR)
        draw.text((4, HEIGHT - MARGIN - 6), f"{y_low:.3g}", fill=AXIS_COLOUR)
        for name, points in finite.items():
            pixels = [at(x, y) for x, y in points]
            if len(pixels) > 1:
                draw.line(pixels, fill=colours[name], width=2)
            for x, y in pixels:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
        image.paste(panel, (0, row * HEIGHT))
        legend = ImageDraw.Draw(image)
        for i, name in enumerate(series):
            top = row * HEIGHT + MARGIN + 18 * i
            legend.rectangle([WIDTH, top + 2, WIDTH + 10, top + 12], fill=colours[name])
            legend.text((WIDTH + 16, top), name, fill=AXIS_COLOUR)
    _save(image, path)
