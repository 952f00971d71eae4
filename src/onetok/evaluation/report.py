"""Result files: a JSON of the numbers and a Markdown page with them and the pictures."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from onetok.files import atomic_write_bytes


def json_safe(value):
    """Non-finite floats -> None (JSON has no inf/nan); numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    text = json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def _format(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def write_markdown(path: str | os.PathLike, title: str, summary: dict, pictures: dict[str, str]) -> None:
    """A report page from a summary ({"metrics", "details", "conventions", "notes"}): the metric
    table, the settings, the conventions that change the numbers (once), notes, then each picture
    (caption -> file beside the page)."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_format(value)} |" for name, value in summary["metrics"].items()]
    if summary.get("details"):
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {_format(value)} |" for name, value in summary["details"].items()]
    if summary.get("conventions"):
        lines += ["", "## Conventions", "", "| quantity | convention |", "|---|---|"]
        lines += [f"| {name} | {text} |" for name, text in summary["conventions"].items()]
    if summary.get("notes"):
        lines += [""] + [f"- {note}" for note in summary["notes"]]
    for caption, file_name in pictures.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({Path(file_name).name})"]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list]) -> None:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(v) for v in row] for row in rows])
    atomic_write_bytes(path, buf.getvalue().encode())


def _csv_cell(value):
    return f"{value:.6f}" if isinstance(value, float) else value
