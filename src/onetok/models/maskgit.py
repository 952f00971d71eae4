"""MaskGIT over TiTok ids: the token space, the training mask and the reference sampler.

Token space (SPEC 3.1): ids 0..N-1 are codes, N is [MASK], N+1+c is class c and
N+1+num_classes is the null class used for classifier-free guidance. The
backbones (``bert.py``, ``uvit.py``) only map a token sequence to logits.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..config import GUIDANCE_DECAYS, GeneratorConfig
from ..pretrained import HubMixin
from ..precision import autocast, kept_weight_casts
from ..errors import GeneratorError


def mask_schedule(num_tokens: int, num_steps: int) -> list[int]:
    """How many tokens stay masked after each sampling step (arccos schedule)."""
    counts, masked = [], num_tokens
    for step in range(num_steps):
        if step == num_steps - 1:
            masked = 0
        else:
            masked = _num_to_mask(num_tokens, (step + 1) / num_steps, masked)
        counts.append(masked)
    return counts


def _num_to_mask(num_tokens: int, ratio: float, currently_masked: int) -> int:
    wanted = math.floor(num_tokens * np.arccos(ratio) / (math.pi * 0.5))
    return max(1, min(currently_masked - 1, wanted))


def _gumbel(uniform: torch.Tensor) -> torch.Tensor:
    return -torch.log((-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20))


def _is_guided(cfg_scale, guidance_scale: float, progress: float, power: float) -> bool | None:
    """Whether cfg_scale != 0, decided on the host so that the sampling loop never waits for the device.

    power-cosine keeps cfg_scale a float32 tensor (for bit-equal logits); its value is recomputed
    here in float64, and only a value within rounding of 0 is left to the device (None).
    """
    if not torch.is_tensor(cfg_scale):
        return cfg_scale != 0
    host_scale = (guidance_scale - 1) * (1 - math.cos(progress**power * math.pi)) * 0.5 + 1
    return True if abs(host_scale) > 1e-3 else None


class _SamplerNoise:
    """The sampler's random draws, in the reference's order and shapes.

    From the global RNG (the reference's stream), or with one generator per row, each row
    drawing what a batch of one would: then a sample's ids do not depend on its batch.
    """

    def __init__(self, generators: list[torch.Generator] | None = None):
        self.generators = generators

    def class_drop_draws(self, batch: int, passes: int, device) -> None:
        # the reference draws one uniform per row and forward pass even at drop prob 0 or 1
        for rows in ([None] if self.generators is None else self.generators):
            for _ in range(passes):
                torch.rand(batch if rows is None else 1, generator=rows, device=device)

    def gumbel(self, like: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            return _gumbel(torch.zeros_like(like).uniform_(0, 1))
        rows = [torch.rand(like.shape[1:], generator=g, device=like.device) for g in self.generators]
        return _gumbel(torch.stack(rows).to(like.dtype))


class MaskGIT(HubMixin, nn.Module):
    """Base class of the generators: condition handling, training mask, sampling.

    ``MaskGIT.from_config`` / ``from_pretrained`` build the backbone named by
    ``model.generator.model_type``: "ViT" -> ImageBert, "UViT" -> UViTBert.
    """

    config_class = GeneratorConfig
    # backbone classes by `model.generator.model_type`; each registers itself by setting `backbone_name`
    backbones: dict[str, type["MaskGIT"]] = {}
    backbone_name: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.backbone_name:
            MaskGIT.backbones[cls.backbone_name] = cls

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config

    # ------------------------------------------------------------ token space
    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def null_condition_id(self) -> int:
        return self.config.codebook_size + 1 + self.config.condition_num_classes

    def condition_tokens(self, condition: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) -> condition token ids (B, 1); dropped rows get the null class."""
        tokens = condition.long() + self.config.codebook_size + 1
        tokens = torch.where(drop, torch.full_like(tokens, self.null_condition_id), tokens)
        return tokens.unsqueeze(-1)

    def logits(self, sequence: torch.Tensor) -> torch.Tensor:
        """[condition, K ids] (B, 1+K) -> logits over codes (B, K, N). Backbones implement this."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, condition: torch.Tensor, cond_drop_prob: float = 0.1) -> torch.Tensor:
        # one uniform draw per row even at prob 0 or 1: the reference's RNG stream depends on it
        drop = torch.rand(condition.shape, device=condition.device) < cond_drop_prob
        return self.forward_with_drop(input_ids, condition, drop)

    def forward_with_drop(self, input_ids: torch.Tensor, condition: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        sequence = torch.cat([self.condition_tokens(condition, drop), input_ids.reshape(input_ids.shape[0], -1)], dim=1)
        return self.logits(sequence)

    def masking_input_tokens(self, tokens: torch.Tensor, generator: torch.Generator | None = None):
        """Training mask (SPEC 3.2): -> (masked tokens, bool mask)."""
        b, k = tokens.shape
        u = torch.rand(b, device=tokens.device, generator=generator)
        ratio = (torch.arccos(u) / (math.pi * 0.5)).clamp(1e-6, 1.0)
        num_masked = (k * ratio).round().clamp(min=1)
        ranks = torch.rand(b, k, device=tokens.device, generator=generator).argsort(dim=-1).argsort(dim=-1)
        mask = ranks < num_masked.unsqueeze(-1)
        return torch.where(mask, self.mask_token_id, tokens), mask

    # ------------------------------------------------------------ sampling
    def _check_generate_args(self, condition, guidance_decay, num_sample_steps):
        if guidance_decay not in GUIDANCE_DECAYS:
            raise GeneratorError(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {guidance_decay!r}")
        if num_sample_steps < 1:
            raise GeneratorError("num_sample_steps must be >= 1")
        if condition.dim() != 1 or condition.is_floating_point():
            raise GeneratorError(f"condition must be integer class ids of shape (B,), got {tuple(condition.shape)}")
        n = self.config.condition_num_classes
        if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) >= n):
            raise GeneratorError(f"class ids must lie in [0, {n - 1}]")

    def guided_logits(self, ids, condition, cfg_scale, guidance_decay, batched: bool,
                      guided: bool | None = None) -> torch.Tensor:
        """Guided logits in float32; ``guided`` (whether cfg_scale != 0) saves a device read when known."""
        if guided is None:
            guided = bool(cfg_scale != 0)
        no_drop = torch.zeros(condition.shape[0], dtype=torch.bool, device=condition.device)
        if not guided:
            return self.forward_with_drop(ids, condition, no_drop).float()
        if batched:
            both = self.forward_with_drop(
                torch.cat([ids, ids]), torch.cat([condition, condition]), torch.cat([no_drop, ~no_drop])
            )
            cond_logits, uncond_logits = both.float().chunk(2)
        else:
            # .float(): under bf16 autocast, combine the two passes in float32
            cond_logits = self.forward_with_drop(ids, condition, no_drop).float()
            uncond_logits = self.forward_with_drop(ids, condition, ~no_drop).float()
        if guidance_decay == "power-cosine":
            return uncond_logits + (cond_logits - uncond_logits) * cfg_scale
        return cond_logits + (cond_logits - uncond_logits) * cfg_scale

    @torch.no_grad()
    def generate(
        self,
        condition: torch.Tensor,
        guidance_scale: float | None = None,
        guidance_decay: str | None = None,
        guidance_scale_pow: float | None = None,
        randomize_temperature: float | None = None,
        softmax_temperature_annealing: bool = False,
        num_sample_steps: int | None = None,
        batched_guidance: bool = True,
        generators: list[torch.Generator] | None = None,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Class ids (B,) -> sampled code ids (B, K), drawing random numbers as the reference does.

        ``batched_guidance`` runs the conditional and unconditional passes as one
        batch of 2B; the ids are the same, it is just faster. ``generators`` (one per
        row) make each row draw its own noise, as a batch of one would. ``precision``
        "bf16" / "auto" runs the transformer under bfloat16 autocast (logits combined in float32).
        Sampling settings left as None take this generator's config values (``config.sampling``).
        """
        configured = self.config.sampling
        guidance_scale = configured["guidance_scale"] if guidance_scale is None else guidance_scale
        guidance_decay = configured["guidance_decay"] if guidance_decay is None else guidance_decay
        guidance_scale_pow = configured["guidance_scale_pow"] if guidance_scale_pow is None else guidance_scale_pow
        if randomize_temperature is None:
            randomize_temperature = configured["randomize_temperature"]
        num_sample_steps = configured["num_sample_steps"] if num_sample_steps is None else num_sample_steps
        self._check_generate_args(condition, guidance_decay, num_sample_steps)
        if generators is not None and len(generators) != condition.shape[0]:
            raise GeneratorError(f"got {len(generators)} generators for {condition.shape[0]} rows")
        noise = _SamplerNoise(generators)
        device = condition.device
        k = self.config.image_seq_len
        ids = torch.full((condition.shape[0], k), self.mask_token_id, device=device, dtype=torch.long)
        cfg_scale = guidance_scale if guidance_decay == "constant" else 0.0

        with kept_weight_casts(precision, device):
            for step in range(num_sample_steps):
                ratio = (step + 1) / num_sample_steps
                temperature = randomize_temperature * (1.0 - ratio)
                is_mask = ids == self.mask_token_id
                if guidance_decay == "power-cosine":
                    # computed in float32 tensors like the reference, so logits match bit for bit
                    pow_ = torch.ones(1, device=device) * guidance_scale_pow
                    scale_step = (1 - torch.cos(((step / num_sample_steps) ** pow_) * torch.pi)) * 0.5
                    cfg_scale = (guidance_scale - 1) * scale_step + 1

                guided = _is_guided(cfg_scale, guidance_scale, step / num_sample_steps, guidance_scale_pow)
                if guided is None:
                    guided = bool(cfg_scale != 0)
                noise.class_drop_draws(condition.shape[0], 2 if guided else 1, device)
                with autocast(precision, device):
                    logits = self.guided_logits(ids, condition, cfg_scale, guidance_decay, batched_guidance, guided)
                if softmax_temperature_annealing:
                    logits = logits / (0.5 + 0.8 * (1 - ratio))

                sampled = (logits + temperature * noise.gumbel(logits)).argmax(dim=-1)
                sampled_logits = logits.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
                sampled = torch.where(is_mask, sampled, ids)
                confidence = torch.where(is_mask, sampled_logits, torch.inf)

                # as the reference: the first row's mask count, kept on the device (no sync)
                wanted = math.floor(k * np.arccos(ratio) / (math.pi * 0.5))
                num_masked = (is_mask[0].sum() - 1).clamp(max=wanted).clamp(min=1)
                confidence = confidence + temperature * noise.gumbel(confidence)
                index = (num_masked - 1).expand(confidence.shape[0], 1)
                cut_off = confidence.sort(dim=-1).values.gather(-1, index)
                if step == num_sample_steps - 1:
                    ids = sampled
                else:
                    ids = torch.where(confidence <= cut_off, self.mask_token_id, sampled)

                if guidance_decay == "linear":
                    cfg_scale = ratio * guidance_scale
        return ids

    # ------------------------------------------------------------ construction
    @classmethod
    def _class_for(cls, config: GeneratorConfig) -> type["MaskGIT"]:
        return cls if cls is not MaskGIT else MaskGIT.backbones[config.model_type]
