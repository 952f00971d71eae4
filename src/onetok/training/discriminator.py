"""PatchGAN discriminator of the TiTok stage-2 recipe (SPEC 4.3).

Module names follow the reference `NLayerDiscriminator` (block_in, blocks, to_logits)
so its state dicts are interchangeable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onetok.errors import DiscriminatorInputError


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: depthwise [1,3,3,1] x [1,3,3,1] / 64 filter, SAME padding."""

    def __init__(self, taps: tuple[int, ...] = (1, 3, 3, 1)):
        super().__init__()
        taps_1d = torch.tensor(taps, dtype=torch.float32)
        kernel = torch.outer(taps_1d, taps_1d)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.shape[-1]
        pad_h, pad_w = same_padding(x.shape[-2], k, 2), same_padding(x.shape[-1], k, 2)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        weight = self.kernel.to(x.dtype).expand(x.shape[1], 1, k, k)
        return F.conv2d(x, weight, stride=2, groups=x.shape[1])


def same_padding(size: int, kernel: int, stride: int) -> int:
    """Total padding TensorFlow's SAME mode adds so the output has ceil(size / stride) positions."""
    return max((-(-size // stride) - 1) * stride + kernel - size, 0)


class NLayerDiscriminator(nn.Module):
    """Images in [0, 1], (B, 3, H, W) -> patch logits (B, 1, 16, 16)."""

    def __init__(self, in_channels: int = 3, hidden_channels: int = 128, num_stages: int = 3):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731
        self.block_in = nn.Sequential(nn.Conv2d(in_channels, hidden_channels, 5, padding=2), act())
        widths = [hidden_channels] + [hidden_channels * 2**i for i in range(num_stages)]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1),
                BlurDownsample(),
                nn.GroupNorm(32, c_out),
                act(),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.pool = nn.AdaptiveMaxPool2d((16, 16))
        c_last = widths[-1]
        self.to_logits = nn.Sequential(
            nn.Conv2d(c_last, c_last, 1), act(), nn.Conv2d(c_last, 1, 5, padding=2)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.block_in[0].in_channels:
            raise DiscriminatorInputError(
                f"discriminator expects (B, {self.block_in[0].in_channels}, H, W) images, "
                f"got shape {tuple(images.shape)}"
            )
        h = self.block_in(images)
        for block in self.blocks:
            h = block(h)
        return self.to_logits(self.pool(h))


