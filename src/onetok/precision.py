"""Inference precision inside the torch models: exact float32, bfloat16 autocast, or int8 Linear layers.

`auto_precision` is the documented rule: bf16 on CUDA GPUs with bf16 and on CPUs whose flags list
AVX512-BF16 or AMX, float32 elsewhere; never bf16 on a CPU without native bf16 (emulated bf16
matmuls are many times slower than fp32), never int8. It is what "auto" means inside a model
(`TiTok.tokenize(precision="auto")`). `onetok.Pipeline`, which every front-end goes through,
measures instead: its "auto" picks per task among fp32, bf16, and ONNX Runtime ("onnx",
"onnx-int8", which only a Pipeline runs) from a probe cached per machine (`onetok.backends`),
and falls back to this rule with $ONETOK_AUTO_PROBE=0.
"""
from __future__ import annotations

import contextlib

import torch

from .errors import PrecisionError

TORCH_PRECISIONS = ("fp32", "bf16", "int8")  # int8: onetok.int8 quantizes the model's Linear layers first
ONNX_PATHS = ("onnx", "onnx-int8")  # ONNX Runtime on exported graphs: only a Pipeline runs them (onetok.backends)
PRECISIONS = ("auto", "fp32", "bf16", "int8", *ONNX_PATHS)  # what the CLI commands offer
ALIASES = {"float32": "fp32", "bfloat16": "bf16"}


def cpu_flags() -> str:
    """The CPU feature flags the kernel reports ('' where there is no /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_name() -> str:
    """The processor's model name as the kernel reports it ('' where it does not)."""
    names = [line.split(":", 1)[1].strip() for line in cpu_flags().splitlines() if line.startswith("model name")]
    return names[0] if names else ""


def has_fast_bf16(device: torch.device | str = "cpu") -> bool:
    """CUDA GPUs with bf16, and CPUs with AMX or AVX512-BF16 (oneDNN uses them)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def auto_precision(device: torch.device | str = "cpu") -> str:
    """What "auto" means on `device`: 'bf16' where the hardware is fast at it, else 'fp32'."""
    return "bf16" if has_fast_bf16(device) else "fp32"


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """'fp32', 'bf16' or 'int8' ('auto' through `auto_precision`)."""
    name = ALIASES.get(precision, precision) if isinstance(precision, str) else precision
    if name in ONNX_PATHS:
        raise PrecisionError(f"precision {name!r} runs exported graphs in ONNX Runtime: use it through onetok.Pipeline")
    if name not in ("auto", *TORCH_PRECISIONS):
        known = ", ".join([*PRECISIONS, *ALIASES])
        raise PrecisionError(f"precision must be one of {known}; got {precision!r}")
    if name == "auto":
        return auto_precision(device)
    return name


def autocast(precision: str, device: torch.device | str = "cpu"):
    """A context that runs matmuls and convs in bf16; the quantizer keeps its float32 search.

    "int8": the ops that int8 Linear layers leave (attention, convolutions) run in bf16 where
    the hardware has native bf16, else float32.
    """
    device = torch.device(device)
    if lowers_to_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lowers_to_bf16(precision: str, device: torch.device) -> bool:
    """Whether `autocast(precision, device)` runs matmuls and convolutions in bf16."""
    name = resolve_precision(precision, device)
    return name == "bf16" or (name == "int8" and has_fast_bf16(device))


def kept_weight_casts(precision: str, device: torch.device | str = "cpu"):
    """A block around many `autocast(precision)` blocks (the sampling steps) in which each weight is
    cast to bf16 once, not once per inner block: autocast keeps its casts of leaf tensors that
    require grad (the models' parameters) until the outermost autocast context ends, and this one
    leaves autocast off, so nothing between the inner blocks changes. The same numbers, faster.
    """
    device = torch.device(device)
    if not lowers_to_bf16(precision, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=False)
