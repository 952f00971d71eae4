"""The benchmark's tables (markdown) and chart (PNG)."""
from __future__ import annotations

from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw

from onetok.backends import fidelity
from onetok.files import atomic_write_bytes

from measure import Cell

TARGETS = {"tokenize": 3.0, "detokenize": 4.0, "generate": 3.0}
COLOURS = {"bf16": "#2a7ab0", "int8": "#d9822b", "onnx": "#7a7a7a", "onnx-int8": "#5aa469"}


def throughput_table(cells: list[Cell]) -> list[str]:
    lines = ["| model | task | batch | path | images/s | vs fp32 eager | peak MiB | runs | same ids | PSNR vs fp32 |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        for path, run in c.runs.items():
            if not run.seconds:
                continue
            agree, quality = fidelity_text(c, path)
            lines.append(f"| {c.model} | {c.task} | {c.batch} | {path} | {c.rate(path):.3f} | "
                         f"**{c.ratio(path):.2f}x** | {run.mib:.0f} | {len(run.seconds)} | {agree} | {quality} |")
    return lines


def fidelity_text(c: Cell, path: str) -> tuple[str, str]:
    """(identical ids, PSNR) of a path's output against fp32's, as table text."""
    measured = fidelity(c.task, c.runs[path].out, c.runs["fp32"].out)
    if c.task == "detokenize":
        return "", f"{measured['psnr_db']:.1f} dB"
    return f"{100 * measured['same_ids']:.1f}%", ""


def faithful(c: Cell, path: str) -> bool:
    """The library's own fidelity bar (what "auto" applies)."""
    return fidelity(c.task, c.runs[path].out, c.runs["fp32"].out)["faithful"]


def fastest_faithful(c: Cell) -> tuple[float, str]:
    return max((c.ratio(p), p) for p, run in c.runs.items() if run.seconds and faithful(c, p))


def best_paths(cells: list[Cell]) -> list[str]:
    """Per batch-8 cell: the fastest path that keeps the fidelity bar, and what "auto" picks, against the target."""
    lines = ["| model | task | target | fastest path within 97% ids / 35 dB | ratio | verdict | auto picks | auto's ratio |",
             "|---|---|---:|---|---:|---|---|---:|"]
    for c in cells:
        if c.batch != 8 or c.task not in TARGETS:
            continue
        ratio, path = fastest_faithful(c)
        goal = TARGETS[c.task]
        verdict = "met" if ratio >= goal else f"missed by {goal - ratio:.2f}x ({100 * (1 - ratio / goal):.0f}% short)"
        auto = c.auto if c.auto in c.runs and c.runs[c.auto].seconds else None
        auto_ratio = f"{c.ratio(auto):.2f}x" + ("" if faithful(c, auto) else " (unfaithful here)") if auto else "not measured"
        lines.append(f"| {c.model} | {c.task} | {goal:.0f}x | {path} | {ratio:.2f}x | {verdict} | {c.auto} | {auto_ratio} |")
    return lines


def class_to_image(cells: list[Cell]) -> list[str]:
    """Class -> pixels per model: its generate cell's seconds per sample plus its detokenize cell's
    seconds per image, for fp32 eager, what "auto" picks, and the fastest faithful pair."""
    lines = ["| model | fp32 eager | auto picks (generate + detokenize) | ratio | fastest faithful pair | ratio | target |",
             "|---|---:|---|---:|---|---:|---|"]
    by_task = {(c.model, c.task): c for c in cells if c.batch == 8}
    for (model, task), gen in by_task.items():
        dec = by_task.get((model, "detokenize"))
        if task != "generate" or dec is None:
            continue

        def seconds(gen_path: str, dec_path: str) -> float:
            return gen.seconds_per_item(gen_path) + dec.seconds_per_item(dec_path)

        reference = seconds("fp32", "fp32")
        pair = (fastest_faithful(gen)[1], fastest_faithful(dec)[1])
        measured = gen.auto in gen.runs and dec.auto in dec.runs
        auto = f"{reference / seconds(gen.auto, dec.auto):.2f}x" if measured else "not measured"
        best = reference / seconds(*pair)
        verdict = "met" if best >= TARGETS["generate"] else f"missed by {TARGETS['generate'] - best:.2f}x"
        lines.append(f"| {model} | {1 / reference:.3g} images/s | {gen.auto} + {dec.auto} | {auto} | "
                     f"{pair[0]} + {pair[1]} | {best:.2f}x | {TARGETS['generate']:.0f}x: {verdict} |")
    return lines


def bounds_table(cells: list[Cell], rates: dict) -> list[str]:
    """How close fp32 eager already runs to this CPU's fp32 matmul rate (so how much any exact-fp32
    path could still gain), beside the fastest path at any fidelity."""
    lines = ["| model | task | GFLOP per item | fp32 eager tera-ops/s | share of the fp32 2048^3 rate | "
             "fastest path at any fidelity |",
             "|---|---|---:|---:|---:|---|"]
    for c in cells:
        if not c.flops:
            continue
        ratio, path = max((c.ratio(p), p) for p, run in c.runs.items() if run.seconds)
        agree, quality = fidelity_text(c, path)
        lines.append(f"| {c.model} | {c.task} | {c.flops / c.batch / 1e9:.1f} | {c.tera_ops():.3f} | "
                     f"{100 * c.tera_ops() / rates['fp32']:.0f}% | {path} {ratio:.2f}x, {agree or quality} |")
    return lines


def bar_chart(cells: list[Cell], path: Path) -> None:
    """Each path's ratio to fp32 eager per cell, the targets as red ticks, 1x dotted."""
    rows = [(c, p) for c in cells for p, r in c.runs.items() if p != "fp32" and r.seconds]
    if not rows:
        return
    row, left, width = 18, 300, 560
    top = max([c.ratio(p) for c, p in rows] + list(TARGETS.values()))
    scale = width / top / 1.08
    image = Image.new("RGB", (left + width + 70, row * len(rows) + 50), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), "throughput / fp32 eager (red | = target, dotted = 1x)", fill="black")
    for i, (c, p) in enumerate(rows):
        y = 30 + i * row
        ratio = c.ratio(p)
        draw.text((10, y + 3), f"{c.model} {c.task} b{c.batch} {p}", fill="black")
        draw.rectangle([left, y + 2, left + ratio * scale, y + row - 3], fill=COLOURS.get(p, "#444444"))
        draw.text((left + ratio * scale + 4, y + 3), f"{ratio:.2f}x", fill="black")
        if c.task in TARGETS:
            x = left + TARGETS[c.task] * scale
            draw.line([x, y, x, y + row - 1], fill="red", width=2)
    for y in range(28, image.height - 10, 5):
        draw.point((left + scale, y), fill="gray")
    buf = BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
