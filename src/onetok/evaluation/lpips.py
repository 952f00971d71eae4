"""LPIPS (Zhang et al. 2018, v0.1) with a VGG16 trunk, written here.

The trunk uses torchvision's `vgg16().features` indices, so the ImageNet file
`vgg16-397923af.pth` loads directly; the five linear heads use the `lpips` package
layout (`lin{i}.model.1.weight`), which its wheel ships as `lpips/weights/v0.1/vgg.pth`
(`pip install --no-deps lpips`; the package itself is never imported).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from onetok.files import cached_file, download_state_dict
from onetok.errors import LPIPSWeightsError

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
HEADS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
# Conv widths of VGG16 ("M" = max pool); relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 are tapped.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
TAP_INDICES = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            channels = item
    return nn.Sequential(*layers)


class LinearHead(nn.Module):
    """Dropout + 1x1 conv to one channel; `model.1.weight` is the lpips key."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Images in [0, 1] -> (B,) perceptual distances."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        for i, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels))

    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{i}") for i in range(len(TAP_CHANNELS))]

    def tapped_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features[: TAP_INDICES[-1] + 1]):
            x = layer(x)
            if i in TAP_INDICES:
                taps.append(x)
        return taps

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"expected two (B, 3, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        feats_a = self.tapped_features(self._scale(a))
        feats_b = self.tapped_features(self._scale(b))
        total = 0
        for fa, fb, head in zip(feats_a, feats_b, self.heads()):
            diff = (unit_normalize(fa) - unit_normalize(fb)) ** 2
            total = total + head(diff).mean(dim=(2, 3))
        return total.flatten()

    def _scale(self, images: torch.Tensor) -> torch.Tensor:
        return (images * 2 - 1 - self.shift) / self.scale


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each spatial feature vector to unit length over channels."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


# --------------------------------------------------------------------------- weights


def load_lpips(vgg_weights: str | os.PathLike | None = None, heads: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS-VGG in eval mode. Missing paths resolve to the cache, the lpips wheel, or a download."""
    model = LPIPS()
    vgg_state = _read(vgg_weights) if vgg_weights else _fetch(VGG16_URL, "vgg16-397923af.pth")
    features = {k.removeprefix("features."): v for k, v in vgg_state.items() if k.startswith("features.")}
    _load_strict(model.features, features, "VGG16 features")
    head_path = heads or wheel_heads_path()
    head_state = _read(head_path) if head_path else _fetch(HEADS_URL, "lpips_v0.1_vgg.pth")
    for i, head in enumerate(model.heads()):
        _load_strict(head, {k.removeprefix(f"lin{i}."): v for k, v in head_state.items() if k.startswith(f"lin{i}.")},
                     f"LPIPS head lin{i}")
    return model.eval().requires_grad_(False).to(device)


def wheel_heads_path() -> Path | None:
    """`weights/v0.1/vgg.pth` of an installed lpips wheel, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    return path if path.exists() else None


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise LPIPSWeightsError(f"{what}: weights do not fit ({first})") from None


def _read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise LPIPSWeightsError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise LPIPSWeightsError(f"{path}: not a readable state dict ({err})") from None


def _fetch(url: str, name: str) -> dict[str, torch.Tensor]:
    cached = cached_file(name)
    if cached.exists():
        return _read(cached)
    try:
        return download_state_dict(url, name)
    except OSError as err:
        raise LPIPSWeightsError(f"{err}; pass a local file instead") from None
