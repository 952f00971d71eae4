"""Measuring helpers of the inference benchmark: timing, peak memory, fidelity, the hardware's ceilings."""
from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from onetok.fast import malloc_bytes
from onetok.precision import cpu_flags, cpu_name, has_fast_bf16


class PeakMemory:
    """Peak memory a block adds: the C heap's bytes in use (glibc mallinfo2, where torch's and ONNX
    Runtime's CPU buffers live; resident set size elsewhere), sampled every 2 ms."""

    def __init__(self):
        self.mib = 0.0

    @staticmethod
    def _in_use() -> int:
        in_use = malloc_bytes()
        if in_use is not None:
            return sum(in_use)  # heap chunks + mmapped chunks in use
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self) -> None:
        while not self._done.wait(0.002):
            self._peak = max(self._peak, self._in_use())

    def __enter__(self):
        self._start = self._peak = self._in_use()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.mib = (max(self._peak, self._in_use()) - self._start) / 2**20


def timed(fn) -> tuple[float, float, torch.Tensor]:
    """(seconds, peak MiB added, output as a tensor) of one call."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    return seconds, memory.mib, torch.as_tensor(out)


@dataclass
class Run:
    """One path's timings and peak memory in a cell, and its last output."""

    seconds: list[float] = field(default_factory=list)
    mib: float = 0.0
    out: torch.Tensor | None = None


@dataclass
class Cell:
    """One (model, task, batch): every path measured interleaved with the fp32 eager reference."""

    model: str
    task: str
    batch: int
    runs: dict[str, Run] = field(default_factory=dict)
    auto: str | None = None  # the path Pipeline(precision="auto") picks for this model and task
    flops: float = 0.0  # matmul and convolution FLOPs of one fp32 eager call (torch's flop counter)

    def rate(self, path: str) -> float:
        return self.batch / statistics.median(self.runs[path].seconds)

    def ratio(self, path: str) -> float:
        return self.rate(path) / self.rate("fp32")

    def seconds_per_item(self, path: str) -> float:
        return 1.0 / self.rate(path)

    def tera_ops(self, path: str = "fp32") -> float:
        """Counted FLOPs per second of `path` (the fp32 call's FLOPs: the same work on every path)."""
        return self.flops * self.rate(path) / self.batch / 1e12


QUICK_CELL_SECONDS, QUICK_CELL_ROUNDS = 2.0, 40  # cells faster than this get more rounds, for a steady median


def measure(cell: Cell, paths: dict, repeats: int, cell_seconds: float) -> Cell:
    """Round robin over the paths (fp32 first), `repeats` rounds at most, fewer once past `cell_seconds`;
    a quick cell goes on for up to QUICK_CELL_ROUNDS rounds until its timed runs took QUICK_CELL_SECONDS.

    A warm-up call per path comes first (first-call allocations, oneDNN kernel creation, lazy
    quantization state); its output is kept as the fidelity sample if no timed run happens. fp32's
    warm-up also counts the FLOPs (under no_grad: the counter does not run in inference mode).
    """
    for name, fn in paths.items():
        if name == "fp32":
            with FlopCounterMode(display=False) as counter:
                out = fn()
            cell.flops = float(counter.get_total_flops())
        else:
            out = fn()
        cell.runs[name] = Run(out=torch.as_tensor(out))
    spent = 0.0
    for round_index in range(max(repeats, QUICK_CELL_ROUNDS)):
        if round_index >= repeats and spent > QUICK_CELL_SECONDS:
            break
        for name, fn in paths.items():
            seconds, mib, out = timed(fn)
            run = cell.runs[name]
            run.seconds.append(seconds)
            run.mib, run.out = max(run.mib, mib), out
            spent += seconds
        if spent > cell_seconds:
            break
    return cell


def matmul_rates(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Tera-ops/s of n^3 products in fp32, bf16 and int8 (torch._int_mm, oneDNN VNNI): best of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ai, bi = torch.randint(-128, 127, (n, n), dtype=torch.int8), torch.randint(-128, 127, (n, n), dtype=torch.int8)
    abf, bbf = a.bfloat16(), b.bfloat16()
    cases = {"fp32": lambda: a @ b, "bf16": lambda: abf @ bbf, "int8": lambda: torch._int_mm(ai, bi)}
    rates = {}
    for name, fn in cases.items():
        fn()
        best = min(timed(fn)[0] for _ in range(repeats))
        rates[name] = 2 * n**3 / best / 1e12
    return rates


def machine_line() -> str:
    flags = cpu_flags()
    cpu = cpu_name() or platform.processor()
    isa = [name for name in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni") if name in flags.split()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"ISA: {', '.join(isa) or 'none'} (native bf16: {has_fast_bf16()}), load average at start {load:.2f}")
