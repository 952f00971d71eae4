"""Codebook usage of a VQ tokenizer: fraction of codes used, entropy (bits), perplexity."""
from __future__ import annotations

import os

import torch

from onetok.evaluation.plots import bar_chart


class CodebookUsage:
    """Counts token ids over any number of batches."""

    def __init__(self, codebook_size: int):
        if codebook_size < 1:
            raise ValueError(f"codebook_size must be positive, got {codebook_size}")
        self.codebook_size = codebook_size
        self.counts = torch.zeros(codebook_size, dtype=torch.long)

    def update(self, ids: torch.Tensor) -> None:
        ids = torch.as_tensor(ids).flatten().long().cpu()
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}), got [{ids.min()}, {ids.max()}]")
        self.counts += torch.bincount(ids, minlength=self.codebook_size)

    def summary(self) -> dict[str, float]:
        return codebook_summary(self.counts)

    def plot(self, path: str | os.PathLike) -> None:
        summary = self.summary()
        title = (f"code counts: {summary['used_fraction']:.1%} of {self.codebook_size} codes used, "
                 f"entropy {summary['entropy_bits']:.2f} bits, perplexity {summary['perplexity']:.1f}")
        bar_chart(self.counts.numpy(), path, title, x_label="code id")


def codebook_summary(counts: torch.Tensor) -> dict[str, float]:
    """Usage statistics from per-code counts."""
    counts = torch.as_tensor(counts).double()
    total = counts.sum()
    if total == 0:
        raise ValueError("no token ids were counted")
    probs = counts[counts > 0] / total
    entropy = float(-(probs * probs.log2()).sum())
    return {
        "used_fraction": float((counts > 0).double().mean()),
        "used_codes": int((counts > 0).sum()),
        "entropy_bits": entropy,
        "perplexity": float(2.0**entropy),
        "num_tokens": int(total),
    }


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> dict[str, float]:
    usage = CodebookUsage(codebook_size)
    usage.update(ids)
    return usage.summary()
