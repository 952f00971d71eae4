"""int8 Linear layers (torchao dynamic quantization) for the transformers of TiTok and MaskGIT.

Activations are quantized per token at run time and weights per output channel, and the
matmul runs in int8 (VNNI on x86). Only ``nn.Linear`` layers outside the vector quantizers
change: the nearest-code search, the codebooks, embeddings, attention products and the pixel
decoder's convolutions keep their precision (pair with ``precision.autocast("int8")``, which
runs those in bf16 where the CPU has native bf16).

Measured on the shared 2-core CPU the benchmark ran on (AMX, AVX512-BF16 and VNNI), eager: int8
is slower than bf16 autocast and flips more token ids, so ``precision="auto"`` does not pick it.
"""
from __future__ import annotations

import warnings

from torch import nn

QUANTIZER_PARTS = ("quantize", "pixel_quantize")


def _in_quantizer(name: str) -> bool:
    return any(part == name.split(".")[0] for part in QUANTIZER_PARTS)


def is_int8(model: nn.Module) -> bool:
    """Whether quantize_linear_int8 has run on this model."""
    return bool(getattr(model, "_onetok_int8", False))


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Quantize the model's Linear layers in place (once) and return it; needs `pip install onetok[int8]`."""
    if is_int8(model):
        return model
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchao's notes about CUDA-only kernels it cannot load here
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise ImportError("precision 'int8' needs torchao: pip install 'onetok[int8]'") from None
    quantize_(model.eval(), Int8DynamicActivationInt8WeightConfig(),
              filter_fn=lambda module, name: isinstance(module, nn.Linear) and not _in_quantizer(name))
    model._onetok_int8 = True
    return model
