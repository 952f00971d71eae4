"""Opt-in inference speed-ups that leave the computed function unchanged.

Pair them with ``onetok.precision.autocast`` (bfloat16 matmuls and convolutions):

    model = optimize_for_inference(TiTok.from_pretrained(path))
    with autocast("auto"):
        ids = model.tokenize(images)

* channels_last: convolution weights in NHWC, so every convolution (the
  MaskGIT-VQGAN pixel decoder above all) runs in the layout oneDNN and cuDNN
  prefer, without a reorder per layer; tensors keep their (N, C, H, W) shapes.
  On the project's 2-core AVX512-BF16 CPU it makes the 256 px pixel decoder
  about 1.17x faster in float32 and in bfloat16 (bf16 + channels_last: 2.2x
  float32 NCHW).
* a kept heap (CPU, glibc): glibc hands every block over 32 MiB back to the kernel when it is
  freed, so each large activation of a forward pass starts on fresh pages and pays a page fault
  per 4 KiB. Inside `kept_heap()` malloc keeps such blocks for reuse; on leaving, the free pages
  go back to the kernel and glibc's default settings return, so between calls the process holds
  no more than it would without. The Pipeline's paths run every call inside it. Measured on the
  2-core AMX Xeon (benchmarks/bench_heap.py, batch 8): B-64 detokenize 1.24x faster in bfloat16,
  the shipped models' tokenize and detokenize about 1.2x in float32; large fp32 matmul-bound
  calls gain nothing. $ONETOK_KEEP_HEAP=0 turns it off.
* torch.compile: off by default. On that CPU, compiling the pixel decoder alone
  took over 7 minutes (and again for every new batch size) for no measurable
  steady-state gain over eager oneDNN. On a GPU it may pay: try ``compile=True``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os

import torch
from torch import nn

from .int8 import quantize_linear_int8
from .models.maskgit import MaskGIT
from .models.titok import TiTok
from .models.vqgan import MaskGITVQGAN
from .precision import resolve_precision


def use_channels_last(model: nn.Module) -> nn.Module:
    """Store 4-D (convolution) weights channels_last; convolutions then emit channels_last too."""
    return model.to(memory_format=torch.channels_last)


KEEP_HEAP_ENV = "ONETOK_KEEP_HEAP"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # where glibc's own adaptive threshold stops rising


@functools.cache
def _glibc():
    """glibc's C library, or None (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def can_keep_heap() -> bool:
    """Whether `kept_heap` does anything here: glibc, and $ONETOK_KEEP_HEAP not 0."""
    return _glibc() is not None and os.environ.get(KEEP_HEAP_ENV, "1") != "0"


def keep_freed_heap(keep: bool = True) -> bool:
    """Make glibc's malloc keep freed large blocks in the heap for reuse (True), or return them to the
    kernel past 32 MiB as its adaptive default settles on (False). -> whether malloc was told; False
    without glibc, or when $ONETOK_KEEP_HEAP=0 asks to keep the defaults."""
    libc = _glibc()
    if libc is None or (keep and not can_keep_heap()):
        return False
    if keep:  # no block is mmapped, and the top of the heap is trimmed only past 2 GiB free
        settings = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
    else:
        settings = {M_MMAP_MAX: 65536, M_MMAP_THRESHOLD: GLIBC_MMAP_THRESHOLD_MAX,
                    M_TRIM_THRESHOLD: 2 * GLIBC_MMAP_THRESHOLD_MAX}
    return all(libc.mallopt(key, value) == 1 for key, value in settings.items())


@contextlib.contextmanager
def kept_heap():
    """A block whose large freed buffers are reused rather than unmapped (`keep_freed_heap`); on
    leaving it, malloc_trim returns the free pages and glibc's defaults come back. Without glibc,
    or with $ONETOK_KEEP_HEAP=0, it changes nothing."""
    kept = keep_freed_heap()
    try:
        yield
    finally:
        if kept:
            _glibc().malloc_trim(0)
            keep_freed_heap(False)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def malloc_bytes() -> tuple[int, int] | None:
    """(bytes in use in heap chunks, bytes in mmapped chunks) from glibc's mallinfo2 (2.33+), else None."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks, info.hblkhd


def compile_model(model: nn.Module, **compile_kwargs) -> nn.Module:
    """torch.compile the parts that do the work, in place; the quantizers stay eager (float32 search)."""
    if isinstance(model, TiTok):
        parts = [model.encoder, model.decoder] + ([model.pixel_decoder] if hasattr(model, "pixel_decoder") else [])
    elif isinstance(model, MaskGITVQGAN):
        parts = [model.encoder, model.decoder]
    elif isinstance(model, MaskGIT):
        # the sampling loop itself is data-dependent; its backbone pass is the fixed-shape part
        model.logits = torch.compile(model.logits, **compile_kwargs)
        return model
    else:
        raise TypeError(f"compile_model expects a TiTok, MaskGIT or MaskGITVQGAN, got {type(model).__name__}")
    for part in parts:
        part.compile(**compile_kwargs)
    return model


def optimize_for_inference(model: nn.Module, channels_last: bool = True, compile: bool = False,
                           precision: str = "fp32") -> nn.Module:
    """Eval mode plus the layout (and optionally compile) speed-ups; returns the same model.

    ``precision="int8"`` also quantizes its Linear layers (onetok.int8); then call it with
    ``precision="int8"`` too (the rest of the ops run under that autocast).
    """
    model.eval()
    if resolve_precision(precision) == "int8":
        quantize_linear_int8(model)
    if channels_last:
        use_channels_last(model)
    if compile:
        compile_model(model)
    return model
