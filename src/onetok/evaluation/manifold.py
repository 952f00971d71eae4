"""Improved precision and recall (Kynkäänniemi et al. 2019), as the ADM evaluation suite reports.

Each set's manifold is the union of balls around its points, a ball's radius being the distance
to the point's k-th nearest neighbour in its own set. Precision: the fraction of generated
samples inside the real manifold; recall: the fraction of real samples inside the generated one.
"""
from __future__ import annotations

import numpy as np
import torch


def _pairwise(a: torch.Tensor, b: torch.Tensor, chunk: int):
    """Yield (start, distances of a[start:start+chunk] to all of b)."""
    for start in range(0, len(a), chunk):
        yield start, torch.cdist(a[start : start + chunk], b)


def knn_radii(points: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    if len(points) <= k:
        raise ValueError(f"need more than k={k} points for neighbourhood radii, got {len(points)}")
    radii = torch.empty(len(points), dtype=points.dtype)
    for start, dist in _pairwise(points, points, chunk):
        # index 0 of the sorted row is the point itself (distance 0)
        radii[start : start + len(dist)] = dist.kthvalue(k + 1, dim=1).values
    return radii


def coverage_fraction(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int = 4096) -> float:
    """Fraction of queries within radii[i] of some manifold point i."""
    inside = torch.zeros(len(queries), dtype=torch.bool)
    for start, dist in _pairwise(queries, manifold, chunk):
        inside[start : start + len(dist)] = (dist <= radii[None, :]).any(dim=1)
    return float(inside.double().mean())


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     chunk: int = 4096) -> tuple[float, float]:
    real_t = torch.as_tensor(np.asarray(real, dtype=np.float64))
    fake_t = torch.as_tensor(np.asarray(fake, dtype=np.float64))
    if real_t.ndim != 2 or fake_t.ndim != 2 or real_t.shape[1] != fake_t.shape[1]:
        raise ValueError(f"expected two (N, D) feature sets of one dim, got {tuple(real_t.shape)} and {tuple(fake_t.shape)}")
    precision = coverage_fraction(real_t, knn_radii(real_t, k, chunk), fake_t, chunk)
    recall = coverage_fraction(fake_t, knn_radii(fake_t, k, chunk), real_t, chunk)
    return precision, recall
