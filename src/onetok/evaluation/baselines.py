"""The best image of a given byte budget that needs no model: a tiny thumbnail, bicubic up."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..data.images import pil_to_tensor, tensor_to_uint8


def thumbnail_side(budget_bytes: float) -> int:
    """Side of the largest RGB thumbnail (1 byte per channel) within the budget."""
    return max(1, int(math.sqrt(budget_bytes / 3)))


def thumbnail_baseline(images: torch.Tensor, budget_bytes: float) -> tuple[torch.Tensor, int]:
    """(B, 3, S, S) in [0, 1] -> (the thumbnails upsampled to S, their side)."""
    side, size = thumbnail_side(budget_bytes), images.shape[-1]
    out = []
    for array in tensor_to_uint8(images):
        small = Image.fromarray(np.ascontiguousarray(array)).resize((side, side), Image.BOX)
        out.append(pil_to_tensor(small.resize((size, size), Image.BICUBIC)))
    return torch.stack(out), side
