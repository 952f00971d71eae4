"""ConvNeXt-Small in torchvision's module layout, so its IMAGENET1K_V1 weights load as they are.

Written here so the ConvNeXt perceptual loss (SPEC 4.3) needs no torchvision. Stochastic
depth is left out: it has no parameters and does nothing in eval mode, the only mode a
frozen loss network runs in.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from onetok.files import cached_file, download_state_dict
from onetok.errors import WeightsNotFoundError

WEIGHTS_URL = "https://download.pytorch.org/models/convnext_small-0c510722.pth"
WEIGHTS_ENV = "ONETOK_CONVNEXT_WEIGHTS"
DEPTHS = (3, 3, 27, 3)
DIMS = (96, 192, 384, 768)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b c h w -> b h w c")
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return rearrange(x, "b h w c -> b c h w")


class ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b c h w -> b h w c")


class ChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b h w c -> b c h w")


class CNBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> MLP (x4) -> per-channel layer scale, plus the residual."""

    def __init__(self, dim: int, layer_scale: float = 1e-6):
        super().__init__()
        # Indices 0..6 match torchvision (1 and 6 are its parameter-free permutes).
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            ChannelsLast(),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            ChannelsFirst(),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXt(nn.Module):
    """features.0 stem, features.{1,3,5,7} stages, features.{2,4,6} downsamplers; classifier head."""

    def __init__(self, depths=DEPTHS, dims=DIMS, num_classes: int = 1000):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        layers: list[nn.Module] = [stem]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            layers.append(nn.Sequential(*(CNBlock(dim) for _ in range(depth))))
            if i + 1 < len(dims):
                downsample = nn.Sequential(
                    LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, dims[i + 1], 2, stride=2)
                )
                layers.append(downsample)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], num_classes)
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images (B, 3, H, W) -> class logits (B, num_classes)."""
        return self.classifier(self.avgpool(self.features(x)))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def convnext_small(pretrained: bool = True, weights_path: str | os.PathLike | None = None) -> ConvNeXt:
    """ConvNeXt-Small; pretrained loads torchvision's IMAGENET1K_V1 weights strictly."""
    model = ConvNeXt()
    if pretrained:
        model.load_state_dict(load_convnext_small_weights(weights_path))
    return model


def load_convnext_small_weights(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """From `path`, else $ONETOK_CONVNEXT_WEIGHTS, else the onetok cache, downloading when online."""
    path = path or os.environ.get(WEIGHTS_ENV)
    if path:
        if not Path(path).is_file():
            raise WeightsNotFoundError(f"ConvNeXt-Small weights file {path} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return download_state_dict(WEIGHTS_URL, check_hash=True)
    except OSError as err:
        raise WeightsNotFoundError(
            f"cannot get ConvNeXt-Small weights ({err}); put {WEIGHTS_URL.rsplit('/', 1)[1]} in "
            f"{cached_weights_path().parent} or set ${WEIGHTS_ENV}, or use perceptual loss 'inception'"
        ) from None


def cached_weights_path() -> Path:
    """Where the cache keeps (and looks for) the downloaded weights file."""
    return cached_file(WEIGHTS_URL.rsplit("/", 1)[1])
