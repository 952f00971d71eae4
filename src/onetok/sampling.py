"""Seeded, chunked MaskGIT sampling: every sample draws its noise from its own seed.

`MaskGIT.generate` draws all its noise from the global RNG, so a sample's ids depend on
which other samples share its batch. `generate_seeded` runs the same loop (SPEC 3.3) with one
`torch.Generator` per row, drawing per row exactly what `generate` draws for a batch of one.
So sample i with seed s has the same ids
  * as `torch.manual_seed(s); model.generate(condition[i:i+1], ...)`,
  * whatever the chunk size, batch composition or number of processes.
That is what lets `onetok sample` split 50k samples over processes and memory-sized chunks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .models.maskgit import MaskGIT
from .processes import sample_seed  # noqa: F401  (re-exported: callers seed samples through sampling)

SAMPLING_KEYS = ("guidance_scale", "guidance_decay", "guidance_scale_pow", "randomize_temperature",
                 "softmax_temperature_annealing", "num_sample_steps")


def default_sampling(model: MaskGIT) -> dict:
    """The sampling settings stored in a generator's config."""
    return model.config.sampling


@torch.no_grad()
def generate_seeded(model: MaskGIT, condition: torch.Tensor, seeds: Sequence[int], chunk_size: int | None = None,
                    batched_guidance: bool = True, precision: str = "fp32", **sampling) -> torch.Tensor:
    """Class ids (B,) and one seed per sample -> code ids (B, K), `chunk_size` rows at a time.

    `sampling` takes `MaskGIT.generate`'s settings (`SAMPLING_KEYS`); missing ones come from
    the model's config. The result does not depend on `chunk_size` or `batched_guidance`.
    """
    unknown = set(sampling) - set(SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"unknown sampling settings: {', '.join(sorted(unknown))}")
    if len(seeds) != condition.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {condition.shape[0]} samples")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    settings = default_sampling(model) | sampling
    chunk_size = chunk_size or max(1, condition.shape[0])
    out = []
    for start in range(0, condition.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        generators = [torch.Generator(condition.device).manual_seed(int(s)) for s in seeds[rows]]
        out.append(model.generate(condition[rows], batched_guidance=batched_guidance, generators=generators,
                                  precision=precision, **settings))
    k = model.config.image_seq_len
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=condition.device)
