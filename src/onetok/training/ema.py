"""Exponential moving average of a model's weights, used for evaluation, previews and the final export."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


class EMA:
    """Shadow copy of `model`'s parameters.

    At the n-th update (n = 1, 2, ...) the decay is min(max_decay, (1 + n') / (10 + n')) with n' = n - 1,
    except that the very first update uses decay 0 (the shadow becomes the current weights), as in the
    reference. Parameters that do not require grad are copied rather than averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.max_decay = decay
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    def decay(self, num_updates: int) -> float:
        """Decay used by update number `num_updates` (1-based)."""
        n = num_updates - 1
        if n <= 0:
            return 0.0
        return min(self.max_decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = self.decay(self.num_updates)
        for name, param in self._matching(model):
            if param.requires_grad:
                self.shadow[name].lerp_(param.detach(), 1.0 - decay)
            else:
                self.shadow[name].copy_(param.detach())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, param in self._matching(model):
            param.copy_(self.shadow[name])

    @contextmanager
    def swap_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run the body with the EMA weights in `model`, then put the trained weights back."""
        backup = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "max_decay": self.max_decay, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not match the model: differing keys {sorted(missing)[:5]}")
        self.num_updates = int(state["num_updates"])
        self.max_decay = float(state["max_decay"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)

    def _matching(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in model.named_parameters():
            if name not in self.shadow:
                raise ValueError(f"parameter {name!r} is not tracked by this EMA (built for another model?)")
            yield name, param
