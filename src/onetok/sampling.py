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

import math
from typing import Sequence

import numpy as np
import torch

from .models.maskgit import MaskGIT

SAMPLING_KEYS = ("guidance_scale", "guidance_decay", "guidance_scale_pow", "randomize_temperature",
                 "softmax_temperature_annealing", "num_sample_steps")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run seeded `seed` (63 bits, well mixed)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def default_sampling(model: MaskGIT) -> dict:
    """The sampling settings stored in a generator's config."""
    cfg = model.config
    return {"guidance_scale": cfg.guidance_scale, "guidance_decay": cfg.guidance_decay,
            "guidance_scale_pow": cfg.guidance_scale_pow, "randomize_temperature": cfg.randomize_temperature,
            "softmax_temperature_annealing": False, "num_sample_steps": cfg.num_steps}


def _row_rand(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in generators])


def _row_gumbel(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    uniform = _row_rand(generators, shape, device)
    return -torch.log((-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20))


def _mirror_drop_draws(generators: list[torch.Generator], guided: bool, device: torch.device) -> None:
    """`generate` draws one (unguided) or two (guided) class-drop numbers per row and step."""
    for g in generators:
        for _ in range(2 if guided else 1):
            torch.rand(1, generator=g, device=device)


@torch.no_grad()
def _generate_rows(model: MaskGIT, condition: torch.Tensor, generators: list[torch.Generator],
                   guidance_scale: float, guidance_decay: str, guidance_scale_pow: float,
                   randomize_temperature: float, softmax_temperature_annealing: bool, num_sample_steps: int,
                   batched_guidance: bool) -> torch.Tensor:
    """`MaskGIT.generate`'s loop, step for step, with per-row noise."""
    device, k, steps = condition.device, model.config.image_seq_len, num_sample_steps
    ids = torch.full((condition.shape[0], k), model.mask_token_id, device=device, dtype=torch.long)
    cfg_scale = guidance_scale if guidance_decay == "constant" else 0.0
    for step in range(steps):
        ratio = (step + 1) / steps
        temperature = randomize_temperature * (1.0 - ratio)
        is_mask = ids == model.mask_token_id
        if guidance_decay == "power-cosine":
            pow_ = torch.ones(1, device=device) * guidance_scale_pow
            cfg_scale = (guidance_scale - 1) * (1 - torch.cos(((step / steps) ** pow_) * torch.pi)) * 0.5 + 1

        _mirror_drop_draws(generators, bool(cfg_scale != 0), device)
        logits = model.guided_logits(ids, condition, cfg_scale, guidance_decay, batched_guidance).float()
        if softmax_temperature_annealing:
            logits = logits / (0.5 + 0.8 * (1 - ratio))

        sampled = (logits + temperature * _row_gumbel(generators, tuple(logits.shape[1:]), device)).argmax(dim=-1)
        sampled_logits = logits.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        sampled = torch.where(is_mask, sampled, ids)
        confidence = torch.where(is_mask, sampled_logits, torch.inf)

        wanted = math.floor(k * np.arccos(ratio) / (math.pi * 0.5))
        num_masked = (is_mask[0].sum() - 1).clamp(max=wanted).clamp(min=1)
        confidence = confidence + temperature * _row_gumbel(generators, (k,), device)
        cut_off = confidence.sort(dim=-1).values.gather(-1, (num_masked - 1).expand(confidence.shape[0], 1))
        ids = sampled if step == steps - 1 else torch.where(confidence <= cut_off, model.mask_token_id, sampled)
        if guidance_decay == "linear":
            cfg_scale = ratio * guidance_scale
    return ids


@torch.no_grad()
def generate_seeded(model: MaskGIT, condition: torch.Tensor, seeds: Sequence[int], chunk_size: int | None = None,
                    batched_guidance: bool = True, **sampling) -> torch.Tensor:
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
    model._check_generate_args(condition, settings["guidance_decay"], settings["num_sample_steps"])
    chunk_size = chunk_size or max(1, condition.shape[0])
    out = []
    for start in range(0, condition.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        generators = [torch.Generator(condition.device).manual_seed(int(s)) for s in seeds[rows]]
        out.append(_generate_rows(model, condition[rows], generators, batched_guidance=batched_guidance, **settings))
    k = model.config.image_seq_len
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=condition.device)
