"""Images per second of tokenize, detokenize and class-conditional generation, with peak memory."""
from __future__ import annotations

import resource
import sys
import time
from typing import Callable

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated tensor memory since the last reset. CPU: the process's peak resident
    size so far (it only grows, so read it per run in increasing batch-size order)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def time_call(fn: Callable[[], object], batch_size: int, device: torch.device, warmup: int = 1,
              iters: int = 3) -> dict[str, float]:
    """Median wall time of `fn` over `iters` runs after `warmup` runs -> images/s and peak memory."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    _reset_peak(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    return {"batch_size": batch_size, "seconds_per_batch": seconds, "images_per_second": batch_size / seconds,
            "peak_memory_mb": peak_memory_mb(device)}


def measure_throughput(make_tasks: Callable[[int], dict[str, Callable[[], object]]], batch_sizes: list[int],
                       device: torch.device | str = "cpu", warmup: int = 1, iters: int = 3) -> list[dict]:
    """One row per (task, batch size), increasing batch sizes; `make_tasks(batch)` -> {task name: call}."""
    device = torch.device(device)
    rows = []
    for batch in sorted(batch_sizes):
        if batch < 1:
            raise ValueError(f"batch sizes must be positive, got {batch}")
        for task, fn in make_tasks(batch).items():
            rows.append({"task": task, **time_call(fn, batch, device, warmup, iters)})
    return rows
