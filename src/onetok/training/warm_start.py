"""Warm start for short TiTok runs: what lets a small CPU budget escape the collapsed start.

With the reference init, a small model trained for a few thousand steps never leaves its
starting point. Three things go wrong, each fixed here (`model.warm_start` in a config):

1. The image barely reaches the latents. `ln_pre` gives each latent token a norm of
   sqrt(width) while the attention output that carries the image has a norm ~0.5 (residual
   projections drawn at std 0.02): the latents vary across images by ~1.5% of their norm.
   `rescale_init` draws the residual output projections at std fan_in^-0.5 and the decoder's
   token embedding at std 1, so a token moves the decoder as much as its position does.
2. The decoder first learns the mean colour and, while doing so, learns to ignore its input.
   `output_bias` starts the pixel head at a grey level instead of 0.
3. A random 4096-code codebook has cells far wider than the latents' spread: every image
   lands on the same K ids and the straight-through gradient never moves one across a cell
   border. The first `continuous_steps` train without the lookup (latents only
   l2-normalised); the latents of the last `kmeans_steps` of them seed the codebook by
   k-means, after which training is the ordinary VQ recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from accelerate.utils import broadcast
from einops import rearrange

from ..models import TiTok
from ..models.quantizers import kmeans_codebook
from .trainer import TrainingError


@dataclass
class WarmStartConfig:
    rescale_init: bool = True
    output_bias: float | None = 0.5
    continuous_steps: int = 0
    kmeans_steps: int = 32
    kmeans_iterations: int = 10

    @classmethod
    def from_dict(cls, values: dict) -> "WarmStartConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TrainingError(f"model.warm_start: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        config = cls(**values)
        if config.continuous_steps and not 0 < config.kmeans_steps <= config.continuous_steps:
            raise TrainingError("model.warm_start.kmeans_steps must lie in [1, continuous_steps]")
        return config


@torch.no_grad()
def initialise(titok: TiTok, config: WarmStartConfig) -> None:
    """Fixes 1 and 2 on a freshly built single-stage TiTok."""
    if config.rescale_init:
        # residual output projections at std fan_in^-0.5; decoder token embedding at std 1
        for stack in (titok.encoder, titok.decoder):
            for block in stack.transformer:
                for projection in (block.attn.out_proj, block.mlp.c_proj):
                    projection.weight.normal_(0.0, projection.weight.shape[1] ** -0.5)
        titok.decoder.decoder_embed.weight.normal_(0.0, 1.0)
    if config.output_bias is not None:
        titok.decoder.conv_out.bias.fill_(config.output_bias)


class CodebookSeeder:
    """Collects the continuous warm-up's latents and seeds the codebook from them once."""

    def __init__(self, config: WarmStartConfig, seed: int):
        self.config, self.seed = config, seed
        self.latents: list[torch.Tensor] = []

    def quantize(self, step: int) -> bool:
        return step >= self.config.continuous_steps

    def collect(self, latents: torch.Tensor, step: int, accelerator) -> None:
        """Keep (B, C, 1, K) latents of the last kmeans_steps continuous steps, from every process."""
        if step >= self.config.continuous_steps - self.config.kmeans_steps:
            gathered = accelerator.gather(latents.contiguous())
            self.latents.append(rearrange(gathered, "b c 1 k -> (b k) c").cpu())

    @torch.no_grad()
    def seed_codebook(self, titok: TiTok, accelerator, ema=None) -> None:
        quantizer = titok.quantize
        if self.latents and accelerator.is_main_process:
            codes = kmeans_codebook(torch.cat(self.latents), quantizer.codebook_size,
                                    self.config.kmeans_iterations, quantizer.use_l2_norm,
                                    torch.Generator().manual_seed(self.seed))
        else:
            codes = torch.zeros_like(quantizer.embedding.weight, device="cpu")
        codes = broadcast(codes.to(accelerator.device))  # every process seeds the same codebook
        quantizer.embedding.weight.copy_(codes)
        if ema is not None:  # the exported EMA weights must use the seeded codebook too
            ema.shadow["quantize.embedding.weight"].copy_(codes)
        self.latents.clear()

    def state_dict(self) -> dict:
        return {"latents": list(self.latents)}

    def load_state_dict(self, state: dict) -> None:
        self.latents = list(state["latents"])
