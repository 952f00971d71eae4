"""Codebook usage statistics and the histogram plot."""
import math

import pytest
import torch
from PIL import Image

from onetok.evaluation.codebook import CodebookUsage, codebook_usage


def test_hand_checked_usage():
    # counts: code 0 x2, code 1 x1, code 2 x1, codes 3..7 unused -> p = (1/2, 1/4, 1/4)
    stats = codebook_usage(torch.tensor([[0, 1], [0, 2]]), codebook_size=8)
    assert stats["used_fraction"] == 3 / 8 and stats["used_codes"] == 3
    assert stats["entropy_bits"] == pytest.approx(1.5)
    assert stats["perplexity"] == pytest.approx(2**1.5)
    assert stats["num_tokens"] == 4


def test_uniform_usage_over_batches():
    usage = CodebookUsage(16)
    for _ in range(3):
        usage.update(torch.arange(16).view(2, 1, 8))
    stats = usage.summary()
    assert stats["used_fraction"] == 1.0 and stats["entropy_bits"] == pytest.approx(math.log2(16))


def test_errors():
    usage = CodebookUsage(4)
    with pytest.raises(ValueError, match="token ids"):
        usage.update(torch.tensor([4]))
    with pytest.raises(ValueError, match="no token ids"):
        usage.summary()


def test_histogram_png(tmp_path):
    usage = CodebookUsage(4096)
    usage.update(torch.randint(0, 300, (64, 32)))
    usage.plot(tmp_path / "hist.png")
    with Image.open(tmp_path / "hist.png") as img:
        assert img.format == "PNG" and img.size[0] > 100
        # Bars are drawn: some pixels have the bar colour.
        assert (52, 101, 164) in {c for _, c in img.convert("RGB").getcolors(1 << 16)}
