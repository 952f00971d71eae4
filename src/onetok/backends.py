"""The inference paths a Pipeline runs its tasks on, and what precision "auto" picks among them.

Every call runs inside `onetok.fast.kept_heap` (large freed buffers reused within the call).
Paths: "fp32" (eager float32, the reference computation), "bf16" (autocast), "int8" (torchao
int8 Linear layers, quantizes the models in place), "onnx" and "onnx-int8" (ONNX Runtime on
graphs `onetok.export` writes once per model into the onetok cache). Every path keeps the
nearest-code search in float32 and takes and returns torch tensors.

"auto" picks per task (tokenize, detokenize, generate) the fastest path whose results stay
within FIDELITY of fp32, from a short probe on the shipped example photos, run once per machine
and model and cached in $ONETOK_CACHE/auto_precision.json. Candidates: fp32; bf16 where the
hardware has native bf16 (`precision.has_fast_bf16`; emulated bf16 is many times slower);
ONNX Runtime fp32 and int8 on the CPU when onnxruntime is installed. Torch int8 is not a
candidate: it quantizes the model for every task at once, and on the machines measured it was
slower than bf16. With $ONETOK_AUTO_PROBE=0 "auto" skips the probe and follows the documented
rule `precision.auto_precision` (bf16 where native, else fp32).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.images import load_image
from .data.tokens import model_fingerprint
from .errors import PrecisionError
from .fast import kept_heap
from .files import atomic_write_bytes, cache_root
from .hub import example_photos
from .int8 import quantize_linear_int8
from .models import MaskGIT, TiTok
from .precision import ALIASES, ONNX_PATHS, auto_precision, cpu_name, has_fast_bf16, resolve_precision
from .sampling import default_sampling, generate_seeded

TASKS = ("tokenize", "detokenize", "generate")
PATHS = ("fp32", "bf16", "int8", *ONNX_PATHS)
FIDELITY = {"same_ids": 0.97, "psnr_db": 35.0}  # the fast paths' promise against fp32
PROBE_ENV = "ONETOK_AUTO_PROBE"
PROBE_BATCH = 8  # images or samples per call (the benchmark's batch)
PROBE_TIMED_STEPS, PROBE_CHECKED_STEPS = 4, 16  # sampling steps timed, and checked against fp32
PROBE_MIN_ROUNDS, PROBE_MAX_ROUNDS, PROBE_SECONDS = 3, 20, 3.0
CACHE_NAME = "auto_precision.json"


def check_path(name: str, device: torch.device) -> str:
    """A path name ('auto' excluded), checked to run on `device`."""
    name = ALIASES.get(name, name)
    if name in ONNX_PATHS:
        if device.type != "cpu":
            raise PrecisionError(f"precision {name!r} runs ONNX Runtime on the CPU; use device 'cpu'")
        if not onnx_available():
            raise PrecisionError(f"precision {name!r} needs onnxruntime: pip install 'onetok[onnx]'")
        return name
    return resolve_precision(name, device)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_folder(model: TiTok | MaskGIT, int8: bool) -> Path:
    """The model's exported graphs in the onetok cache, exported on first use (fp32, and int8 when asked)."""
    from .export import add_int8, export_onnx
    from .onnx import META_NAME

    folder = cache_root() / "onnx" / model_fingerprint(model)[:24]
    part = "tokenizer" if isinstance(model, TiTok) else "generator"
    meta = folder / META_NAME
    files = json.loads(meta.read_text()).get(part, {}).get("files", {}) if meta.is_file() else {}
    if "fp32" in files:
        return add_int8(folder) if int8 and "int8" not in files else folder
    tqdm.write(f"exporting {type(model).__name__} to ONNX once, into {folder}", file=sys.stderr)
    kwargs = {"tokenizer": model} if part == "tokenizer" else {"generator": model}
    try:
        return export_onnx(folder, int8=int8, **kwargs)
    except ValueError as err:  # VAE and stage-1 tokenizers have no pixel graph
        raise PrecisionError(f"this model has no ONNX path: {err}") from None


class TokenizerPath:
    """tokenize / detokenize of one tokenizer on one path."""

    def __init__(self, model: TiTok, name: str):
        self.model, self.name = model, name
        self.onnx = None
        if name in ONNX_PATHS:
            from .onnx import OnnxTokenizer

            int8 = name == "onnx-int8"
            self.onnx = OnnxTokenizer(onnx_folder(model, int8), int8=int8, threads=torch.get_num_threads())
        elif name == "int8":
            quantize_linear_int8(model)

    @kept_heap()
    def tokenize(self, images: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        if self.onnx is None:
            return self.model.tokenize(images, precision=self.name, num_tokens=num_tokens)
        self.model.check_images(images)
        k = None if num_tokens is None else self.model.check_num_tokens(num_tokens)
        return torch.from_numpy(self.onnx.tokenize(images.cpu().numpy(), num_tokens=k))

    @kept_heap()
    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        if self.onnx is None:
            return self.model.detokenize(ids, precision=self.name)
        ids, config = self.model.check_tokens(ids), self.model.config
        if ids.shape[1] != config.num_latent_tokens and not config.variable_length:
            return self.model.detokenize(ids)  # a fixed-length graph reads all K ids: its (poor) prefixes stay in torch
        return torch.from_numpy(self.onnx.detokenize(ids.cpu().numpy()))


class GeneratorPath:
    """Seeded class-to-ids sampling of one generator on one path (ONNX: its step inside torch's loop,
    so the random draws, and the samples, are fp32's)."""

    def __init__(self, model: MaskGIT, name: str):
        self.model, self.name = model, name
        if name in ONNX_PATHS:
            from .export import with_onnx_step
            from .onnx import OnnxGenerator

            int8 = name == "onnx-int8"
            step = OnnxGenerator(onnx_folder(model, int8), int8=int8, threads=torch.get_num_threads())
            self.model, self.name = with_onnx_step(model, step), "fp32"
        elif name == "int8":
            quantize_linear_int8(model)

    @kept_heap()
    def generate(self, condition: torch.Tensor, seeds, **sampling) -> torch.Tensor:
        return generate_seeded(self.model, condition, seeds, precision=self.name, **sampling)


# ---------------------------------------------------------------- "auto": the measured choice

def machine_key(device: torch.device) -> str:
    """What the fastest path depends on besides the model: the processor, its threads and the libraries."""
    parts = [platform.machine(), cpu_name() or platform.processor(), str(torch.get_num_threads()), torch.__version__, device.type]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    try:
        import onnxruntime

        parts.append(onnxruntime.__version__)
    except ImportError:
        parts.append("no onnxruntime")
    flags = "bf16" if has_fast_bf16(device) else "no-bf16"
    return hashlib.sha256("|".join([*parts, flags]).encode()).hexdigest()[:16]


def candidates(model: torch.nn.Module, device: torch.device) -> list[str]:
    from .export import exportable

    paths = ["fp32"] + (["bf16"] if has_fast_bf16(device) else [])
    if device.type == "cpu" and exportable(model) and onnx_available():
        paths += list(ONNX_PATHS)
    return paths


def choose_paths(tokenizer: TiTok, generator: MaskGIT | None, device: torch.device) -> dict[str, str]:
    """task -> path for "auto": the cached probe result for this machine and these models, else a new probe."""
    if os.environ.get(PROBE_ENV, "1") == "0":
        rule = auto_precision(device)
        return {task: rule for task in TASKS}
    cache_file = cache_root() / CACHE_NAME
    cache = read_cache(cache_file)
    machine = cache.setdefault(machine_key(device), {})
    jobs = [("tokenize", tokenizer), ("detokenize", tokenizer)] + ([("generate", generator)] if generator else [])
    chosen, changed = {}, False
    for task, model in jobs:
        key = f"{task}:{model_fingerprint(model)[:24]}"
        if key not in machine:
            machine[key] = probe(task, model, device)
            changed = True
        chosen[task] = machine[key]["chosen"]
    if changed:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache_file, json.dumps(cache, indent=1).encode())
        except OSError as err:  # a read-only cache: the choice holds for this process only
            tqdm.write(f"auto precision: could not cache the measured choice in {cache_file} ({err})", file=sys.stderr)
    return chosen


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}
    return data if isinstance(data, dict) else {}


def probe_images(size: int, batch: int = PROBE_BATCH) -> torch.Tensor:
    """The example photos, then their mirror images, cycled to `batch`."""
    photos = [load_image(path, size) for path in example_photos()]
    photos += [photo.flip(-1) for photo in photos]
    return torch.stack([photos[i % len(photos)] for i in range(batch)])


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(1.0 / mse))


def fidelity(task: str, out: torch.Tensor, reference: torch.Tensor) -> dict:
    """How close a path's output is to fp32's, and whether within FIDELITY: pixels by PSNR, ids by
    the share that are identical."""
    out, reference = out.cpu(), reference.cpu()
    if task == "detokenize":
        value = psnr_db(out, reference)
        return {"psnr_db": value, "faithful": value >= FIDELITY["psnr_db"]}
    value = float((out == reference).float().mean())
    return {"same_ids": value, "faithful": value >= FIDELITY["same_ids"]}


def probe(task: str, model: TiTok | MaskGIT, device: torch.device) -> dict:
    """Time `task` on every candidate path for `model` (the tokenizer, or the generator for "generate"):
    interleaved rounds, the fastest of the timed ones; each checked against fp32.
    -> {"chosen": the fastest faithful path, "measured": {path: {"seconds", fidelity, "faithful"}}}."""
    paths = candidates(model, device)
    with torch.inference_mode():
        if task == "generate":
            # timed over a few sampling steps; checked over more (a flipped id early on changes what
            # later steps see, so fidelity is only known at the end): all of them, up to 16
            configured = default_sampling(model)
            steps = configured["num_sample_steps"]
            timed = {**configured, "num_sample_steps": min(steps, PROBE_TIMED_STEPS)}
            checked = {**configured, "num_sample_steps": min(steps, PROBE_CHECKED_STEPS)}
            classes = torch.arange(PROBE_BATCH, device=device) % model.config.condition_num_classes
            seeds = list(range(PROBE_BATCH))
            runners = {p: GeneratorPath(model, p) for p in paths}
            calls = {p: (lambda r=r: r.generate(classes, seeds, **timed)) for p, r in runners.items()}
            checks = {p: (lambda r=r: r.generate(classes, seeds, **checked)) for p, r in runners.items()}
        else:
            images = probe_images(model.config.crop_size).to(device)
            runners = {p: TokenizerPath(model, p) for p in paths}
            ids = model.tokenize(images)
            calls = {p: (lambda r=r: r.tokenize(images) if task == "tokenize" else r.detokenize(ids))
                     for p, r in runners.items()}
            checks = calls
        seconds = {p: float("inf") for p in paths}
        outputs, started = {}, time.perf_counter()
        progress = tqdm(desc=f"auto precision: timing {task} on {', '.join(paths)}", unit="round", leave=False)
        # interleaved rounds, the first a warm-up; small models get more rounds, against timer noise
        for round_index in range(PROBE_MAX_ROUNDS):
            if round_index >= PROBE_MIN_ROUNDS and time.perf_counter() - started > PROBE_SECONDS:
                break
            for path, call in calls.items():
                start = time.perf_counter()
                outputs[path] = call()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if round_index:
                    seconds[path] = min(seconds[path], time.perf_counter() - start)
            progress.update()
        progress.close()
        if checks is not calls:
            outputs = {path: check() for path, check in checks.items()}
    measured = {path: {"seconds": seconds[path], **fidelity(task, outputs[path], outputs["fp32"])} for path in paths}
    fastest = min((p for p in paths if measured[p]["faithful"]), key=lambda p: measured[p]["seconds"])
    return {"chosen": fastest, "measured": measured}
