"""Speed and fidelity of every inference path against float32 eager, measured interleaved in one run.

Paths (benchmarks/paths.py, the library's `onetok.backends`): fp32 eager (the reference
computation), bf16 autocast + channels_last + batched guidance, int8 Linear layers (torchao),
ONNX Runtime fp32 and int8 (`onetok export`), and which of them `precision="auto"` picks (its own
short probe, run on the same model). Models: the released TiTok-L-32 / B-64 / S-128 shapes and their generators
with random weights, and the shipped trained tokenizer and generator. Inputs are real photos.

    .venv/bin/python benchmarks/bench_inference.py --models default,b64 --repeats 1
    .venv/bin/python benchmarks/bench_inference.py --paths fp32,bf16,int8

Writes outputs/bench_inference.md (the printed table) and outputs/bench_inference.png.
"""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import QUICK_CELL_ROUNDS, QUICK_CELL_SECONDS, Cell, machine_line, matmul_rates, measure  # noqa: E402
from paths import PATHS, generator_paths, tokenizer_paths  # noqa: E402
from report import bar_chart, best_paths, bounds_table, class_to_image, throughput_table  # noqa: E402

from onetok import MaskGIT, TiTok  # noqa: E402
from onetok.backends import probe  # noqa: E402
from onetok.fast import can_keep_heap  # noqa: E402
from onetok.data.images import load_image, pil_to_tensor, resize_center_crop  # noqa: E402
from onetok.files import atomic_write_bytes  # noqa: E402
from onetok.hub import default_generator_path, default_tokenizer_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "onetok" / "assets" / "examples"
# the table of cases: name -> (tokenizer, generator, sampling steps)
MODELS = {
    "l32": ("titok_l32", "generator_titok_l32", 8),
    "b64": ("titok_b64", "generator_titok_b64", 8),
    "s128": ("titok_s128", "generator_titok_s128", 64),
    "default": ("shipped", "shipped", None),
    "tiny": ("titok_tiny", "generator_titok_tiny", 4),
}
CLASSES = [207, 360, 387, 974, 88, 979, 417, 279]


def photos(size: int, batch: int) -> torch.Tensor:
    """The shipped example photos and the scikit-image / scikit-learn wheels' photos, cycled to `batch`."""
    images = [load_image(p, size) for p in sorted(EXAMPLES.glob("*.jpg"))]
    try:
        from sklearn.datasets import load_sample_images

        images += [pil_to_tensor(resize_center_crop(Image.fromarray(a), size)) for a in load_sample_images().images]
    except ImportError:
        pass
    return torch.stack(images)[torch.arange(batch) % len(images)]


def build(key: str, kind: str) -> torch.nn.Module:
    name = MODELS[key][0 if kind == "tokenizer" else 1]
    cls = TiTok if kind == "tokenizer" else MaskGIT
    if name == "shipped":
        return cls.from_pretrained(default_tokenizer_path() if kind == "tokenizer" else default_generator_path())
    return cls.from_config(name).eval()


def bench_tokenizer(key: str, args, log) -> list[Cell]:
    model = build(key, "tokenizer")
    paths = tokenizer_paths(model, tuple(args.paths))
    images = photos(model.config.crop_size, args.batch)
    tok = measure(Cell(key, "tokenize", args.batch), {n: (lambda f=f[0]: f(images)) for n, f in paths.items()},
                  args.repeats, args.cell_seconds)
    log(f"{key} tokenize done")
    ids = tok.runs["fp32"].out
    dec = measure(Cell(key, "detokenize", args.batch), {n: (lambda f=f[1]: f(ids)) for n, f in paths.items()},
                  args.repeats, args.cell_seconds)
    paths.clear()  # the probe builds its own runners: two sets of L-32 ONNX sessions do not fit in 24 GB
    gc.collect()
    for cell in (tok, dec):
        cell.auto = probe(cell.task, model, torch.device("cpu"))["chosen"]
    return [tok, dec]


def bench_generator(key: str, args, log) -> list[Cell]:
    model = build(key, "generator")
    steps = MODELS[key][2] or model.config.num_steps
    paths = generator_paths(model, steps, args.seed, tuple(args.paths))
    classes = torch.tensor(CLASSES)[torch.arange(args.batch) % len(CLASSES)] % model.config.condition_num_classes
    cell = measure(Cell(key, "generate", args.batch), {n: (lambda f=f: f(classes)) for n, f in paths.items()},
                   args.repeats, args.cell_seconds)
    paths.clear()
    gc.collect()
    cell.auto = probe("generate", model, torch.device("cpu"))["chosen"]
    return [cell]


def write_report(args, machine: str, rates: dict, cells: list[Cell], started: float, log) -> str:
    """The markdown table and the PNG chart of what has been measured so far (rewritten after every model)."""
    command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    report = [
        "# onetok inference benchmark",
        "",
        f"- machine: {machine}",
        f"- command: `{command}`",
        f"- batch {args.batch}; one warm-up round, then up to {args.repeats} timed rounds with every path interleaved "
        f"(a cell whose timed runs total under {QUICK_CELL_SECONDS:.0f} s: more rounds, up to {QUICK_CELL_ROUNDS}); "
        f"rates are medians; random weights of the released shapes unless the model is `default` (the shipped "
        f"trained models); real photos; generate = sampled ids (no pixel decoding); seed {args.seed}",
        "- same ids: token ids identical to fp32 eager's; PSNR: detokenize of the same ids against fp32 eager's pixels",
        "- fp32 eager runs as the reference code does, with glibc's malloc as it is (its adaptive mmap threshold "
        "held at the 32 MiB it settles on); the library's paths run "
        f"each call inside `onetok.fast.kept_heap` as a Pipeline does ({'on' if can_keep_heap() else 'not available here'}); "
        "`benchmarks/bench_heap.py` measures what that alone is worth",
        "- torch.compile: not run (on this CPU the pixel decoder alone took 7+ minutes to compile, per batch size, "
        "for no steady-state gain over eager oneDNN)",
        f"- wall time {time.time() - started:.0f} s",
        "",
        "## Ceiling: 2048^3 matmul, tera-ops/s",
        "",
        "| fp32 | bf16 | int8 (torch._int_mm) | bf16 / fp32 | int8 / fp32 |",
        "|---:|---:|---:|---:|---:|",
        f"| {rates['fp32']:.3f} | {rates['bf16']:.3f} | {rates['int8']:.3f} | {rates['bf16'] / rates['fp32']:.2f}x | "
        f"{rates['int8'] / rates['fp32']:.2f}x |",
        "",
        "## Throughput and fidelity",
        "",
        *throughput_table(cells),
        "",
        "## Targets: the fastest path that keeps 97% identical ids (35 dB for detokenize)",
        "",
        *best_paths(cells),
        "",
        "## Class to image: generate cell + detokenize cell, per sample",
        "",
        *class_to_image(cells),
        "",
        "## What bounds the misses: fp32 eager against this CPU's fp32 matmul rate",
        "",
        "Matmul and convolution FLOPs of one fp32 eager call (torch.utils.flop_counter; attention "
        "scores uncounted). At the full fp32 rate an exact-fp32 path could be at most 1 / share faster.",
        "",
        *bounds_table(cells, rates),
        "",
    ]
    text = "\n".join(report)
    atomic_write_bytes(args.output, text.encode())
    bar_chart(cells, args.output.with_suffix(".png"))
    log(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return text


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="default,s128,b64,l32", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)} (fp32 always runs)")
    p.add_argument("--tasks", default="tokenize,generate", help="tokenize (with detokenize), generate")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2, help="timed rounds per cell at most (after one warm-up round)")
    p.add_argument("--cell-seconds", type=float, default=60.0, help="stop repeating once a cell's timed runs took this long")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=REPO / "outputs" / "bench_inference.md")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.paths = ["fp32", *[x for x in args.paths.split(",") if x and x != "fp32"]]
    bad = [m for m in args.models if m not in MODELS] + [x for x in args.paths if x not in PATHS]
    if bad:
        p.error(f"unknown model(s) or path(s) {bad}; models: {list(MODELS)}, paths: {list(PATHS)}")
    args.tasks = set(args.tasks.split(","))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # the exported graphs of random weights are of no use later: keep them out of the user's cache
    scratch = tempfile.TemporaryDirectory(prefix="onetok-bench-")
    os.environ["ONETOK_CACHE"] = scratch.name
    torch.manual_seed(args.seed)
    started = time.time()
    machine = machine_line()

    def log(msg):
        print(f"[{time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    log("2048^3 matmul rates")
    rates = matmul_rates()
    cells: list[Cell] = []
    with torch.no_grad():
        for key in args.models:
            if "tokenize" in args.tasks:
                log(f"{key} tokenizer")
                cells += bench_tokenizer(key, args, log)
                text = write_report(args, machine, rates, cells, started, log)
            if "generate" in args.tasks:
                log(f"{key} generator")
                cells += bench_generator(key, args, log)
                text = write_report(args, machine, rates, cells, started, log)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
