"""Inference precision: exact float32, bfloat16 autocast, or int8 Linear layers; and the one "auto" rule.

The "auto" rule: bf16 wherever the hardware runs it natively (CUDA, or a CPU with AMX or
AVX512-BF16), else fp32. It never picks bf16 on a CPU without native bf16 (emulated bf16
matmuls are many times slower than fp32) and never picks int8: measured on the project's
AVX512-BF16 + VNNI CPU (benchmarks/bench_inference.py), int8 Linear layers (torchao, eager)
are slower than bf16 and flip more token ids, and ONNX Runtime (fp32 or int8) is slower than
torch's fp32 on the pixel decoder. int8 and ONNX Runtime stay explicit choices.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "auto")  # what the CLI commands offer
# library only: the model must first pass through onetok.fast.optimize_for_inference(model, "int8")
QUANTIZED = ("int8",)
ALIASES = {"float32": "fp32", "bfloat16": "bf16"}


class PrecisionError(ValueError):
    """An unknown precision name."""


def cpu_flags() -> str:
    """The CPU feature flags the kernel reports ('' where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def has_fast_bf16(device: torch.device | str = "cpu") -> bool:
    """CUDA GPUs with bf16, and CPUs with AMX or AVX512-BF16 (oneDNN uses them)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """'fp32', 'bf16' or 'int8': 'auto' picks bf16 only where the hardware is fast at it."""
    name = ALIASES.get(precision, precision) if isinstance(precision, str) else precision
    if name not in PRECISIONS + QUANTIZED:
        known = ", ".join([*PRECISIONS, *QUANTIZED, *ALIASES])
        raise PrecisionError(f"precision must be one of {known}; got {precision!r}")
    if name == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return name


def autocast(precision: str, device: torch.device | str = "cpu"):
    """A context that runs matmuls and convs in bf16; the quantizer keeps its float32 search.

    "int8": the ops that int8 Linear layers leave (attention, convolutions) run in bf16 where
    the hardware has native bf16, else float32.
    """
    device = torch.device(device)
    name = resolve_precision(precision, device)
    if name == "bf16" or (name == "int8" and has_fast_bf16(device)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
