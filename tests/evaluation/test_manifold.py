"""Improved precision/recall on hand-checked points."""
import numpy as np
import pytest
import torch

from onetok.evaluation.manifold import knn_radii, precision_recall


def test_hand_checked_one_dimensional_sets():
    # k=1. Real {0, 1, 10}: radii 1, 1, 9. Fake {0.5, 5, 30}: radii 4.5, 4.5, 25.
    # Precision: 0.5 (near 0) and 5 (within 9 of 10) are inside, 30 is not -> 2/3.
    # Recall: 0 and 1 are within 4.5 of 0.5; 10 is within 25 of 30 -> 1.
    real, fake = np.array([[0.0], [1.0], [10.0]]), np.array([[0.5], [5.0], [30.0]])
    np.testing.assert_allclose(knn_radii(torch.tensor(real), 1).numpy(), [1, 1, 9])
    precision, recall = precision_recall(real, fake, k=1, chunk=2)
    assert precision == pytest.approx(2 / 3) and recall == 1.0


def test_same_distribution_high_and_disjoint_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    p, r = precision_recall(a, b)
    assert p > 0.6 and r > 0.6
    assert precision_recall(a, b + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(a[:3], b, k=3)
