"""AdamW with the reference's weight-decay grouping, and the warmup + cosine learning-rate schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from onetok.training.config import OptimizerConfig

# Parameters whose name contains one of these get no weight decay (norms, biases, embeddings, codebooks).
NO_DECAY_KEYWORDS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


@dataclass
class WarmupCosine:
    """LambdaLR multiplier: linear warmup from 0 to base_lr, then cosine from base_lr down to end_lr.

    A callable object rather than a closure so that LambdaLR's state_dict can hold it.
    """

    base_lr: float
    end_lr: float
    warmup_steps: int
    total_steps: int

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        progress = min(progress, 1.0)
        return self.end_lr + (self.base_lr - self.end_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.lr(step) / self.base_lr if self.base_lr > 0 else 0.0


def is_decayed(name: str, param: nn.Parameter) -> bool:
    return param.ndim >= 2 and not any(word in name for word in NO_DECAY_KEYWORDS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: with and without weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if is_decayed(name, param) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimizerConfig, lr: float | None = None) -> torch.optim.AdamW:
    groups = param_groups(model, config.weight_decay)
    if not any(group["params"] for group in groups):
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimise")
    return torch.optim.AdamW(groups, lr=config.lr if lr is None else lr, betas=config.betas, eps=config.eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, end_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """One scheduler step per optimizer step (the Trainer steps it itself, not once per process)."""
    base_lr = optimizer.param_groups[0]["lr"]
    schedule = WarmupCosine(base_lr, end_lr, warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
