"""What the kept heap (`onetok.fast.keep_freed_heap`) alone is worth: fp32 eager and bf16 with glibc's
malloc as it is between the library's calls (blocks past 32 MiB mmapped, and unmapped again when
freed; its adaptive threshold held at the 32 MiB it would settle on, which favours it, if anything)
against each call inside `kept_heap` (what a Pipeline's paths do), measured interleaved in one run.

    .venv/bin/python benchmarks/bench_heap.py --models default,b64

Writes outputs/bench_heap.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_inference import MODELS, REPO, build, photos  # noqa: E402
from measure import Cell, machine_line, measure  # noqa: E402
from paths import generator_paths, tokenizer_paths  # noqa: E402

from onetok.fast import KEEP_HEAP_ENV, can_keep_heap, kept_heap  # noqa: E402
from onetok.files import atomic_write_bytes  # noqa: E402


def on_heap(fn, keep: bool):
    """fn inside `kept_heap` (as a Pipeline's paths run), or with it turned off (glibc as it is)."""
    def call():
        if keep:
            with kept_heap():
                return fn()
        os.environ[KEEP_HEAP_ENV] = "0"  # the library's paths then leave malloc alone too
        try:
            return fn()
        finally:
            del os.environ[KEEP_HEAP_ENV]
    return call


def both_heaps(fns: dict) -> dict:
    """path -> fn becomes 'fp32' (the reference, glibc as it is) and '<path>, default / kept heap'."""
    out = {"fp32": on_heap(fns["fp32"], False)}
    for path, fn in fns.items():
        for keep in (False, True):
            if path != "fp32" or keep:
                out[f"{path}, {'kept' if keep else 'default'} heap"] = on_heap(fn, keep)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="default,b64")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="sampling steps of the generate cells")
    p.add_argument("--output", type=Path, default=REPO / "outputs" / "bench_heap.md")
    args = p.parse_args(argv)
    if not can_keep_heap():
        raise SystemExit("the kept heap needs glibc (and $ONETOK_KEEP_HEAP unset): nothing to measure")
    cells = []
    with torch.no_grad():
        for key in args.models.split(","):
            tokenizer = build(key, "tokenizer")
            images = photos(tokenizer.config.crop_size, args.batch)
            paths = tokenizer_paths(tokenizer, ("bf16",))
            ids = tokenizer.tokenize(images)
            for task, index, data in (("tokenize", 0, images), ("detokenize", 1, ids)):
                fns = {name: (lambda f=f[index]: f(data)) for name, f in paths.items()}
                cells.append(measure(Cell(key, task, args.batch), both_heaps(fns), args.repeats, 1e9))
                print(f"{key} {task} done", file=sys.stderr, flush=True)
            generator = build(key, "generator")
            classes = torch.arange(args.batch) % generator.config.condition_num_classes
            fns = {name: (lambda f=f: f(classes)) for name, f in generator_paths(generator, args.steps, 0, ("bf16",)).items()}
            cells.append(measure(Cell(key, f"generate ({args.steps} steps)", args.batch), both_heaps(fns), args.repeats, 1e9))
            print(f"{key} generate done", file=sys.stderr, flush=True)
    lines = ["# The kept heap alone", "", f"- machine: {machine_line()}",
             f"- batch {args.batch}; one warm-up, then {args.repeats} rounds with every variant interleaved; medians",
             "", "| model | task | variant | items/s | vs fp32, default heap |", "|---|---|---|---:|---:|"]
    for c in cells:
        for name in c.runs:
            label = "fp32, default heap" if name == "fp32" else name
            lines.append(f"| {c.model} | {c.task} | {label} | {c.rate(name):.3g} | {c.ratio(name):.2f}x |")
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(args.output, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
