"""LPIPS (Zhang et al. 2018, v0.1) on a VGG16 or AlexNet trunk, written here.

The trunks use torchvision's `vgg16().features` / `alexnet().features` indices, so the ImageNet
files `vgg16-397923af.pth` and `alexnet-owt-7be5be79.pth` load directly; the five linear heads
use the `lpips` package layout (`lin{i}.model.1.weight`), which its wheel ships as
`lpips/weights/v0.1/{vgg,alex}.pth` (`pip install --no-deps lpips`; the package itself is never
imported). Every file is checked against the full SHA-256 of the published one before loading:
a random or retrained trunk gives numbers that look like LPIPS and are not.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from onetok.files import cache_root, fetch_file
from onetok.errors import LPIPSWeightsError

HEADS_BASE_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1"


@dataclass(frozen=True)
class LPIPSNet:
    """One LPIPS variant: its torchvision trunk (conv/pool layout, tapped ReLUs) and its weight files.

    layout: ("conv", out channels, kernel, stride, padding) or ("pool", kernel, stride) per layer;
    every conv is followed by a ReLU, so torchvision's `features` indices are reproduced.
    """

    name: str
    layout: tuple[tuple, ...]
    taps: tuple[int, ...]  # `features` indices of the tapped ReLUs
    channels: tuple[int, ...]  # their widths
    backbone_file: str
    backbone_sha256: str
    heads_sha256: str

    @property
    def backbone_url(self) -> str:
        return f"https://download.pytorch.org/models/{self.backbone_file}"

    @property
    def heads_file(self) -> str:
        return f"{self.name}.pth"

    @property
    def heads_url(self) -> str:
        return f"{HEADS_BASE_URL}/{self.heads_file}"


def _vgg16_layout() -> tuple[tuple, ...]:
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    return tuple(("pool", 2, 2) if w == "M" else ("conv", w, 3, 1, 1) for w in widths)


# Full SHA-256 of the published files. torchvision names its files by the first 8 hex digits and
# checks only that prefix; the full digests (vgg16: 553,433,881 bytes; alexnet: 244,408,911 bytes)
# are the ones several independent public projects pin for these exact download.pytorch.org files
# (e.g. asset tables of LPIPS/DISTS evaluation suites found on GitHub), and they extend the
# torchvision prefixes. The head digests are those of the lpips 0.1.4 wheel's
# weights/v0.1/{vgg,alex}.pth, computed here from the installed wheel.
NETS: dict[str, LPIPSNet] = {
    "vgg": LPIPSNet(
        name="vgg", layout=_vgg16_layout(), taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512),
        backbone_file="vgg16-397923af.pth",
        backbone_sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        heads_sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    ),
    "alex": LPIPSNet(
        name="alex",
        layout=(("conv", 64, 11, 4, 2), ("pool", 3, 2), ("conv", 192, 5, 1, 2), ("pool", 3, 2),
                ("conv", 384, 3, 1, 1), ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1)),
        taps=(1, 4, 7, 9, 11), channels=(64, 192, 384, 256, 256),
        backbone_file="alexnet-owt-7be5be79.pth",
        backbone_sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        heads_sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
    ),
}


def lpips_net(name: str) -> LPIPSNet:
    if name not in NETS:
        raise LPIPSWeightsError(f"unknown LPIPS network {name!r}; known: {', '.join(NETS)}")
    return NETS[name]


def trunk_features(net: LPIPSNet) -> nn.Sequential:
    """torchvision's `features` of the net, up to its last tapped ReLU."""
    layers: list[nn.Module] = []
    channels = 3
    for kind, *spec in net.layout:
        if kind == "pool":
            layers.append(nn.MaxPool2d(*spec))
        else:
            width, kernel, stride, padding = spec
            layers += [nn.Conv2d(channels, width, kernel, stride, padding), nn.ReLU(inplace=False)]
            channels = width
    return nn.Sequential(*layers[: net.taps[-1] + 1])


class LinearHead(nn.Module):
    """Dropout + 1x1 conv to one channel; `model.1.weight` is the lpips key."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Images in [0, 1] -> (B,) perceptual distances; `net` is "vgg" or "alex"."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        self.net = lpips_net(net)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.features = trunk_features(self.net)
        for i, channels in enumerate(self.net.channels):
            self.add_module(f"lin{i}", LinearHead(channels))

    @property
    def net_name(self) -> str:
        return self.net.name

    def heads(self) -> list[LinearHead]:
        return [getattr(self, f"lin{i}") for i in range(len(self.net.channels))]

    def tapped_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.net.taps:
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


def load_lpips(backbone: str | os.PathLike | None = None, heads: str | os.PathLike | None = None, *,
               net: str = "vgg", device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS in eval mode from the published files only (SHA-256 checked).

    backbone: torchvision's ImageNet file of the net; None looks in the onetok cache, then torch's
    hub cache (where torchvision and the lpips package keep it), then downloads into the onetok cache.
    heads: the lpips v0.1 linear heads; None takes the lpips wheel's, the cache's or a download.
    """
    spec = lpips_net(net)
    model = LPIPS(spec.name)
    backbone_path = Path(backbone) if backbone else _find_or_fetch(
        spec.backbone_url, spec.backbone_file, spec.backbone_sha256, [torch_hub_checkpoints() / spec.backbone_file])
    _check_published(backbone_path, spec.backbone_sha256, f"{spec.name} ImageNet trunk {spec.backbone_file}",
                     f"put {spec.backbone_url} at {cache_root() / spec.backbone_file} or pass it with --lpips-backbone")
    state = _read(backbone_path)
    features = {k.removeprefix("features."): v for k, v in state.items()
                if k.startswith("features.") and int(k.split(".")[1]) < len(model.features)}
    _load_strict(model.features, features, f"{spec.name} features")
    wheel = wheel_heads_path(spec.name)
    heads_path = Path(heads) if heads else _find_or_fetch(
        spec.heads_url, f"lpips_v0.1_{spec.heads_file}", spec.heads_sha256, [wheel] if wheel else [])
    _check_published(heads_path, spec.heads_sha256, f"lpips v0.1 {spec.heads_file} heads",
                     f"put {spec.heads_url} at {cache_root() / f'lpips_v0.1_{spec.heads_file}'} or pass it with "
                     "--lpips-heads (pip install --no-deps lpips ships it)")
    head_state = _read(heads_path)
    for i, head in enumerate(model.heads()):
        _load_strict(head, {k.removeprefix(f"lin{i}."): v for k, v in head_state.items() if k.startswith(f"lin{i}.")},
                     f"LPIPS head lin{i}")
    return model.eval().requires_grad_(False).to(device)


def wheel_heads_path(net: str = "vgg") -> Path | None:
    """`weights/v0.1/{net}.pth` of an installed lpips wheel, found without importing it."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.exists() else None


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_published(path: Path, expected: str, what: str, fix: str) -> None:
    if not path.is_file():
        raise LPIPSWeightsError(f"{path}: no such weights file; {fix}")
    actual = sha256_of(path)
    if actual != expected:
        raise LPIPSWeightsError(f"{path}: not the published {what} (SHA-256 {actual[:16]}..., expected "
                                f"{expected[:16]}...); {fix}")


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise LPIPSWeightsError(f"{what}: weights do not fit ({first})") from None


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise LPIPSWeightsError(f"{path}: not a readable state dict ({err})") from None


def _find_or_fetch(url: str, name: str, sha256: str, elsewhere: list[Path]) -> Path:
    try:
        return fetch_file(url, name, sha256, elsewhere)
    except OSError as err:
        raise LPIPSWeightsError(f"{err}; put the file at {cache_root() / name} instead") from None
