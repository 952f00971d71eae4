"""Speed and fidelity of the fast inference path against plain float32, measured in one run.

Fast path: bfloat16 autocast (the quantizer's nearest-code search stays float32), SDPA
attention, channels_last convolutions, cond/uncond guidance in one batched pass, and
optionally torch.compile (--compile). Baseline: float32 eager, NCHW, the two guidance
passes of the reference code. Both run on the same weights, interleaved, so a change of
load on a shared machine hits both alike. Models: the released TiTok-L-32 / B-64 / S-128
shapes and their generators with random weights, plus a trained tokenizer if one is given.

    .venv/bin/python benchmarks/bench_inference.py --quick --models s128
    .venv/bin/python benchmarks/bench_inference.py --batches 1,8,32

Writes outputs/bench_inference.md (the printed table) and outputs/bench_inference.png.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from onetok import MaskGIT, TiTok
from onetok.data.images import atomic_write_bytes, load_image, pil_to_tensor, resize_center_crop
from onetok.fast import compile_model, use_channels_last
from onetok.precision import autocast, cpu_flags, has_fast_bf16
from onetok.sampling import default_sampling

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONETOK_SHARED", REPO.parent / "shared"))
DEFAULT_TRAINED = REPO / "src" / "onetok" / "assets" / "default_tokenizer"
# preset, sampling steps (tiny: a smoke test of this script)
MODELS = {"l32": ("titok_l32", 8), "b64": ("titok_b64", 8), "s128": ("titok_s128", 64), "tiny": ("titok_tiny", 8)}
TARGETS = {"tokenize+detokenize": 4.0, "generate": 3.0}
MIN_AGREEMENT, MIN_PSNR = 0.97, 35.0
CLASSES = [207, 360, 387, 974, 88, 979, 417, 279]  # ImageNet classes the reference demos use


# ---------------------------------------------------------------- inputs

def real_photos(size: int) -> torch.Tensor:
    """The golden ImageNet images and the photos shipped in the scikit-image / scikit-learn wheels."""
    images = [load_image(p, size) for p in sorted((SHARED / "golden" / "images").glob("*.png"))]
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), *load_sample_images().images]
    images += [pil_to_tensor(resize_center_crop(Image.fromarray(a), size)) for a in arrays]
    return torch.stack(images)


def take(items: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch of `batch` rows, cycling through `items`."""
    return items[torch.arange(batch) % len(items)]


# ---------------------------------------------------------------- measuring

class PeakMemory:
    """Peak memory a block adds: the CUDA allocator's peak, or on CPU the C heap's bytes in use
    (glibc mallinfo2, where torch's CPU tensors live; resident set size elsewhere), sampled every 2 ms."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, 0.0

    @staticmethod
    def _in_use() -> int:
        if _MALLINFO2 is not None:
            info = _MALLINFO2()
            return info.uordblks + info.hblkhd  # heap chunks + mmapped chunks in use
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self) -> None:
        while not self._done.wait(0.002):
            self._peak = max(self._peak, self._in_use())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        self._start = self._peak = self._in_use()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._done.set()
            self._thread.join()
            peak = max(self._peak, self._in_use())
        self.mib = (peak - self._start) / 2**20


def _load_mallinfo2():
    import ctypes

    class MallInfo2(ctypes.Structure):
        names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

    try:
        function = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    return function


_MALLINFO2 = _load_mallinfo2()


def timed(fn, device: torch.device) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak MiB added, output) of one call."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.mib, out


@dataclass
class Cell:
    """One (model, task, batch): float32 and fast timings, peak memory and last outputs."""

    model: str
    task: str
    batch: int
    ref_s: list[float] = field(default_factory=list)
    fast_s: list[float] = field(default_factory=list)
    ref_mib: float = 0.0
    fast_mib: float = 0.0
    ref_out: torch.Tensor | None = None
    fast_out: torch.Tensor | None = None
    skipped: str = ""

    @property
    def ref_rate(self) -> float:
        return self.batch / statistics.median(self.ref_s)

    @property
    def fast_rate(self) -> float:
        return self.batch / statistics.median(self.fast_s)

    @property
    def ratio(self) -> float:
        return self.fast_rate / self.ref_rate


def measure(cell: Cell, ref_fn, fast_fn, device: torch.device, repeats: int, cell_seconds: float) -> Cell:
    """Alternate float32 and fast calls; repeat while the cell stays within its time budget."""
    spent = 0.0
    for _ in range(repeats):
        for fn, times, which in ((ref_fn, cell.ref_s, "ref"), (fast_fn, cell.fast_s, "fast")):
            seconds, mib, out = timed(fn, device)
            times.append(seconds)
            setattr(cell, f"{which}_mib", max(getattr(cell, f"{which}_mib"), mib))
            setattr(cell, f"{which}_out", out)
            spent += seconds
        if spent > cell_seconds:
            break
    return cell


def too_slow(cells: list[Cell], task: str, batch: int, budget: float) -> str:
    """A skip note when the batch-1 timing predicts that this cell would blow its budget."""
    done = [c for c in cells if c.task == task and c.ref_s]
    if not done:
        return ""
    per_item = statistics.median(done[0].ref_s + done[0].fast_s) / done[0].batch
    estimate = per_item * batch * 2
    return f"skipped: about {estimate:.0f} s > --max-cell-seconds {budget:.0f}" if estimate > budget else ""


# ---------------------------------------------------------------- models

def fast_twin(model: torch.nn.Module, compile: bool) -> torch.nn.Module:
    """The fast-path copy of a model: it shares every weight except the 4-D (conv) ones, which go channels_last."""
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()] if t.dim() != 4}
    twin = use_channels_last(copy.deepcopy(model, shared))
    return compile_model(twin) if compile else twin


def bench_tokenizer(label: str, model: TiTok, photos: torch.Tensor, args, device) -> list[Cell]:
    fast = fast_twin(model, args.compile)
    cells: list[Cell] = []
    for batch in args.batches:
        images = take(photos, batch).to(device)
        cell = Cell(label, "tokenize", batch, skipped=too_slow(cells, "tokenize", batch, args.max_cell_seconds))
        if not cell.skipped:
            measure(cell, lambda: model.tokenize(images), lambda: fast_call(fast.tokenize, images, device),
                    device, args.repeats, args.cell_seconds)
        cells.append(cell)
        ids = cell.ref_out if cell.ref_out is not None else model.tokenize(images)
        cell = Cell(label, "detokenize", batch, skipped=too_slow(cells, "detokenize", batch, args.max_cell_seconds))
        if not cell.skipped:
            measure(cell, lambda: model.detokenize(ids), lambda: fast_call(fast.detokenize, ids, device),
                    device, args.repeats, args.cell_seconds)
        cells.append(cell)
    return cells


def fast_call(fn, inputs: torch.Tensor, device: torch.device, **kwargs) -> torch.Tensor:
    with autocast("bf16", device):
        return fn(inputs, **kwargs)


def bench_generator(label: str, model: MaskGIT, steps: int, args, device) -> list[Cell]:
    fast = copy.deepcopy(model, {id(p): p for p in model.parameters()})  # shares all weights
    if args.compile:
        compile_model(fast)
    settings = {**default_sampling(model), "num_sample_steps": steps}

    def sample(net, condition, batched):
        torch.manual_seed(args.seed)
        return net.generate(condition, batched_guidance=batched, **settings)

    cells: list[Cell] = []
    for batch in args.batches:
        classes = take(torch.tensor(CLASSES), batch) % model.config.condition_num_classes
        condition = classes.to(device)
        cell = Cell(label, "generate", batch, skipped=too_slow(cells, "generate", batch, args.max_cell_seconds))
        if not cell.skipped:
            measure(cell, lambda: sample(model, condition, batched=False),
                    lambda: fast_call(lambda c: sample(fast, c, batched=True), condition, device),
                    device, args.repeats, args.cell_seconds)
        cells.append(cell)
    return cells


def load_trained(path: Path, device) -> TiTok | None:
    return TiTok.from_pretrained(path).eval().to(device) if (path / "config.json").exists() else None


def golden_tiny(name: str, kind: str):
    """A golden fixture's tiny model (reference architecture, random weights) and its sampler settings."""
    import json

    from safetensors.torch import load_file

    from onetok.hub import load_state_strict

    folder = SHARED / "golden" / "tiny"
    meta = json.loads((folder / f"{name}.json").read_text())
    model = {"titok": TiTok, "maskgit": MaskGIT}[kind].from_config(meta["config"])
    load_state_strict(model, load_file(str(folder / f"{name}.weights.safetensors")), name)
    return model.eval(), meta


# ---------------------------------------------------------------- fidelity

def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


@dataclass
class Fidelity:
    model: str
    weights: str
    agreement: float | None = None
    psnr_e2e: float | None = None
    psnr_decoder: float | None = None
    sampled_agreement: float | None = None


def tokenizer_fidelity(label: str, weights: str, model: TiTok, photos: torch.Tensor, device) -> Fidelity:
    """Fast vs float32 on real photos: identical ids, and PSNR of the reconstructions (end to end, decoder alone)."""
    fast = fast_twin(model, compile=False)
    photos = photos.to(device)
    ref_ids, fast_ids = model.tokenize(photos), fast_call(fast.tokenize, photos, device)
    ref_images = model.detokenize(ref_ids)
    same_ids = fast_call(fast.detokenize, ref_ids, device)
    e2e = same_ids if torch.equal(ref_ids, fast_ids) else fast_call(fast.detokenize, fast_ids, device)
    return Fidelity(label, weights, (ref_ids == fast_ids).float().mean().item(),
                    psnr(e2e, ref_images), psnr(same_ids, ref_images))


def fidelity_from_cells(label: str, cells: list[Cell], model: TiTok | None, device) -> Fidelity:
    """Pooled over the timed runs: they ran on real photos, float32 and fast, with the same inputs."""
    fid = Fidelity(label, "random")
    tok = [c for c in cells if c.task == "tokenize" and c.ref_out is not None]
    dec = [c for c in cells if c.task == "detokenize" and c.ref_out is not None]
    gen = [c for c in cells if c.task == "generate" and c.ref_out is not None]
    if tok:
        fid.agreement = torch.cat([(c.ref_out == c.fast_out).flatten() for c in tok]).float().mean().item()
    if dec:
        fid.psnr_decoder = psnr(torch.cat([c.fast_out for c in dec]), torch.cat([c.ref_out for c in dec]))
        fid.psnr_e2e = fid.psnr_decoder
        changed = [c for c in tok if not torch.equal(c.ref_out, c.fast_out)]
        if changed and model is not None:  # decode the fast ids of the smallest changed batch too
            c = min(changed, key=lambda c: c.batch)
            ref_images = next(d.ref_out for d in dec if d.batch == c.batch)
            fast = fast_twin(model, compile=False)
            fid.psnr_e2e = psnr(fast_call(fast.detokenize, c.fast_out, device), ref_images)
    if gen:
        fid.sampled_agreement = torch.cat([(c.ref_out == c.fast_out).flatten() for c in gen]).float().mean().item()
    return fid


def tiny_generator_agreement(name: str) -> float:
    model, meta = golden_tiny(name, "maskgit")
    s = meta["sample_settings"]
    kwargs = dict(guidance_scale=s["guidance_scale"], guidance_decay=s["guidance_decay"],
                  randomize_temperature=s["randomize_temperature"], num_sample_steps=s["num_sample_steps"])
    condition = torch.tensor(CLASSES) % model.config.condition_num_classes
    torch.manual_seed(s["seed"])
    ref = model.generate(condition, batched_guidance=False, **kwargs)
    torch.manual_seed(s["seed"])
    with autocast("bf16"):
        fast = model.generate(condition, **kwargs)
    return (ref == fast).float().mean().item()


# ---------------------------------------------------------------- ceiling

def matmul_tflops(dtype: torch.dtype, device: torch.device, n: int = 2048, repeats: int = 8) -> float:
    """The best of `repeats` n^3 products: a ceiling, so the least disturbed run counts."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = min(timed(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e12


# ---------------------------------------------------------------- report

def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def roundtrip_cells(cells: list[Cell]) -> list[Cell]:
    """tokenize + detokenize of the same batch, as one derived cell (times add)."""
    out = []
    for tok in (c for c in cells if c.task == "tokenize" and c.ref_s):
        same = (c for c in cells if c.task == "detokenize" and (c.model, c.batch) == (tok.model, tok.batch))
        dec = next((c for c in same if c.ref_s), None)
        if dec:
            out.append(Cell(tok.model, "tokenize+detokenize", tok.batch,
                            [statistics.median(tok.ref_s) + statistics.median(dec.ref_s)],
                            [statistics.median(tok.fast_s) + statistics.median(dec.fast_s)],
                            max(tok.ref_mib, dec.ref_mib), max(tok.fast_mib, dec.fast_mib)))
    return out


def throughput_table(cells: list[Cell]) -> list[str]:
    lines = ["| model | task | batch | fp32 /s | fast /s | fast / fp32 | fp32 peak MiB | fast peak MiB | runs |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cells:
        if c.skipped:
            lines.append(f"| {c.model} | {c.task} | {c.batch} | {c.skipped} |  |  |  |  |  |")
            continue
        lines.append(f"| {c.model} | {c.task} | {c.batch} | {c.ref_rate:.3f} | {c.fast_rate:.3f} | "
                     f"**{c.ratio:.2f}x** | {c.ref_mib:.0f} | {c.fast_mib:.0f} | {len(c.ref_s)} |")
    return lines


def target_lines(cells: list[Cell], fidelity: list[Fidelity]) -> list[str]:
    lines = ["| target (batch 8 on this machine) | model | measured | verdict |", "|---|---|---:|---|"]
    for c in cells:
        goal = TARGETS.get(c.task)
        if goal is None or c.batch != 8 or c.skipped:
            continue
        short = f"missed by {goal - c.ratio:.2f}x ({100 * (1 - c.ratio / goal):.0f}% short)"
        verdict = "met" if c.ratio >= goal else short
        lines.append(f"| {c.task} >= {goal:.0f}x | {c.model} | {c.ratio:.2f}x | {verdict} |")
    for f in fidelity:
        if f.agreement is not None:
            ok = f.agreement >= MIN_AGREEMENT
            verdict = "met" if ok else f"missed by {100 * (MIN_AGREEMENT - f.agreement):.1f} points"
            lines.append(f"| identical token ids >= 97% | {f.model} ({f.weights}) | "
                         f"{100 * f.agreement:.1f}% | {verdict} |")
        if f.psnr_e2e is not None:
            verdict = "met" if f.psnr_e2e >= MIN_PSNR else f"missed by {MIN_PSNR - f.psnr_e2e:.1f} dB"
            lines.append(f"| reconstruction PSNR vs fp32 >= 35 dB | {f.model} ({f.weights}) | "
                         f"{f.psnr_e2e:.1f} dB | {verdict} |")
    return lines


def closing_note(tflops: dict[str, float], cells: list[Cell]) -> list[str]:
    """Why a speed target is missed, when the hardware's own bf16 / fp32 matmul ratio is below it."""
    ceiling = tflops["bf16"] / tflops["fp32"]
    missed = sorted({c.task for c in cells if c.batch == 8 and not c.skipped and c.ratio < TARGETS.get(c.task, 0)})
    if not missed:
        return []
    lines = ["## Note", ""]
    below = [t for t in missed if TARGETS[t] > ceiling]
    reach = [c.ratio / ceiling for c in cells if c.batch == 8 and not c.skipped and c.task in TARGETS]
    if below:
        lines.append(f"The targets missed ({', '.join(below)}) lie above this machine's bf16 / fp32 matmul "
                     f"ratio of {ceiling:.2f}x: bf16 halves memory traffic and doubles the multiply rate here "
                     "(AVX512-BF16), while the 4x / 3x targets assume AMX tiles (about 7x). Lowering precision "
                     "cannot beat that ratio on a compute-bound model. The batch-8 ratios measured reach "
                     f"{min(reach):.0%} to {max(reach):.0%} of it.")
    return lines + [""]


def fidelity_table(fidelity: list[Fidelity]) -> list[str]:
    lines = ["| model | weights | identical token ids | PSNR fast vs fp32 recon (end to end) "
             "| PSNR (same ids, decoder only) | identical sampled ids |",
             "|---|---|---:|---:|---:|---:|"]
    for f in fidelity:
        agree = None if f.agreement is None else 100 * f.agreement
        sampled = None if f.sampled_agreement is None else 100 * f.sampled_agreement
        lines.append(f"| {f.model} | {f.weights} | {fmt(agree, '.1f', '%')} | {fmt(f.psnr_e2e, '.1f', ' dB')} | "
                     f"{fmt(f.psnr_decoder, '.1f', ' dB')} | {fmt(sampled, '.1f', '%')} |")
    return lines


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    flags = cpu_flags()
    names = [line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    isa = [name for name in ("amx_bf16", "avx512_bf16") if name in flags]
    return (f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"bf16 ISA: {', '.join(isa) or 'none'} (fast bf16: {has_fast_bf16(device)})")


def bar_chart(cells: list[Cell], path: Path) -> None:
    """Fast / fp32 ratio per measured cell, with the targets drawn as ticks."""
    shown = [c for c in cells if not c.skipped]
    if not shown:
        return
    row, left, width = 22, 260, 520
    top = max(c.ratio for c in shown + [Cell("", "", 1, [1], [1])])
    scale = width / max(top, max(TARGETS.values())) / 1.05
    image = Image.new("RGB", (left + width + 80, row * len(shown) + 50), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), "fast / float32 throughput (| = target, dashed = 1x)", fill="black")
    for i, c in enumerate(shown):
        y = 34 + i * row
        draw.text((10, y + 4), f"{c.model} {c.task} b{c.batch}", fill="black")
        colour = "#2a7ab0" if c.task != "generate" else "#d9822b"
        draw.rectangle([left, y + 2, left + c.ratio * scale, y + row - 4], fill=colour)
        draw.text((left + c.ratio * scale + 4, y + 4), f"{c.ratio:.2f}x", fill="black")
        if c.task in TARGETS:
            x = left + TARGETS[c.task] * scale
            draw.line([x, y, x, y + row - 2], fill="red", width=2)
    for y in range(30, image.height - 10, 6):
        draw.point((left + scale, y), fill="gray")
    from io import BytesIO

    buf = BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="l32,b64,s128", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--batches", default=None, help="comma list of batch sizes (default 1,8,32; --quick: 1,8)")
    p.add_argument("--tasks", default="tokenize,generate", help="tokenize (with detokenize), generate")
    p.add_argument("--quick", action="store_true", help="one timed run per cell, 4 photos, 60 s per cell at most")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell and path (at most)")
    p.add_argument("--cell-seconds", type=float, default=30.0, help="stop repeating once a cell took this long")
    p.add_argument("--max-cell-seconds", type=float, default=240.0, help="skip a cell predicted to take longer")
    p.add_argument("--trained", type=Path, default=DEFAULT_TRAINED, help="a trained tokenizer folder (fidelity)")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=REPO / "outputs" / "bench_inference.md")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in (args.batches or ("1,8" if args.quick else "1,8,32")).split(",")]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    args.tasks = set(args.tasks.split(","))
    if args.quick:
        args.repeats, args.max_cell_seconds = 1, min(args.max_cell_seconds, 60.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    started = time.time()
    log = lambda msg: print(f"[{time.time() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    log("matmul ceiling")
    tflops = {name: matmul_tflops(dtype, device) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    cells: list[Cell] = []
    fidelity: list[Fidelity] = []
    with torch.no_grad():
        for key in args.models:
            name, steps = MODELS[key]
            if "tokenize" in args.tasks:
                log(f"{name} tokenizer")
                model = TiTok.from_config(name).eval().to(device)
                photos = real_photos(model.config.crop_size)[: 4 if args.quick else None]
                model_cells = bench_tokenizer(name, model, photos, args, device)
                cells += model_cells
                fidelity.append(fidelity_from_cells(name, model_cells, model, device))
                del model
            if "generate" in args.tasks:
                log(f"generator_{name} ({steps} steps)")
                model = MaskGIT.from_config(f"generator_{name}").eval().to(device)
                gen_cells = bench_generator(f"generator_{name}", model, steps, args, device)
                cells += gen_cells
                fidelity.append(fidelity_from_cells(f"generator_{name}", gen_cells, None, device))
                del model
        log("fidelity: trained tokenizer and golden tiny fixtures")
        trained = load_trained(args.trained, device)
        if trained is not None:
            photos = real_photos(trained.config.crop_size)
            fidelity.append(tokenizer_fidelity(args.trained.name, "trained", trained, photos, device))
        if (SHARED / "golden" / "tiny").exists():
            for name in ("titok_vq_twostage", "titok_vq_pixel"):
                model, _ = golden_tiny(name, "titok")
                photos = real_photos(model.config.crop_size)
                fidelity.append(tokenizer_fidelity(f"tiny {name}", "golden fixture", model, photos, device))
            for name in ("imagebert", "uvitbert"):
                agreement = tiny_generator_agreement(name)
                fidelity.append(Fidelity(f"tiny {name}", "golden fixture", sampled_agreement=agreement))

    order = ["tokenize", "detokenize", "tokenize+detokenize", "generate"]
    cells = sorted(cells + roundtrip_cells(cells),
                   key=lambda c: (c.model.removeprefix("generator_"), order.index(c.task), c.batch))
    report = [
        "# onetok inference benchmark",
        "",
        f"- machine: {machine_line(device)}",
        f"- command: `{' '.join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        f"- fast path: bf16 autocast (quantizer search in fp32), SDPA, channels_last convolutions, batched guidance"
        f"{', torch.compile' if args.compile else ''}; baseline: fp32 eager, NCHW, two guidance passes",
        f"- random weights of the released shapes; real photos as inputs; seed {args.seed}; "
        f"rates are medians over the runs column; generate = sampled ids (no pixel decoding)",
        f"- wall time {time.time() - started:.0f} s",
        "",
        "## Ceiling: 2048^3 matmul",
        "",
        "| fp32 TFLOP/s | bf16 TFLOP/s | bf16 / fp32 |",
        "|---:|---:|---:|",
        f"| {tflops['fp32']:.3f} | {tflops['bf16']:.3f} | {tflops['bf16'] / tflops['fp32']:.2f}x |",
        "",
        "## Throughput (images/s; generate: samples/s)",
        "",
        *throughput_table(cells),
        "",
        "## Fidelity of the fast path against fp32 (real photos; generation at a fixed seed)",
        "",
        *fidelity_table(fidelity),
        "",
        "## Targets",
        "",
        *target_lines(cells, fidelity),
        "",
        *closing_note(tflops, cells),
    ]
    text = "\n".join(report)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.output, text.encode())
    bar_chart(cells, args.output.with_suffix(".png"))
    log(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
