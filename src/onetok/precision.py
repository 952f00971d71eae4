"""Inference precision: exact float32, or bfloat16 autocast where the hardware is fast at it."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "auto")


def has_fast_bf16(device: torch.device | str = "cpu") -> bool:
    """CUDA GPUs with bf16, and CPUs with AMX or AVX512-BF16 (oneDNN uses them)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if has_fast_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str = "cpu"):
    """A context that runs matmuls and convs in bf16; the quantizer keeps its float32 search."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
