"""MaskGIT-VQGAN: the 2D proxy-code teacher and the stage-2 pixel decoder.

Two reference quirks are reproduced because the released weights depend on them:
TF-style "SAME" padding computed at run time, and a residual block whose 1x1
shortcut is applied to the block's output rather than its input (SPEC 1.7).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VQGANConfig
from ..errors import CheckpointError
from ..pretrained import CONFIG_NAME, HubMixin, download_file, load_state_strict, read_state_dict, weights_file
from .quantizers import VectorQuantizer

# the released MaskGIT-VQGAN: a raw state dict without config.json
RELEASED_WEIGHTS = ("fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin")


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel on the right/bottom when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:
            # the usual case (odd kernel, stride 1): the convolution pads itself, saving a copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        return super().forward(F.pad(x, (left, right, top, bottom)))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.conv1 = Conv2dSame(in_channels, out_channels, 3, bias=False)
        self.norm2 = nn.GroupNorm(32, out_channels, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2dSame(out_channels, out_channels, 3, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2dSame(out_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            return h + self.nin_shortcut(h)  # the reference drops the input here
        return x + h


class _Level(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, dropout: float, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if j == 0 else out_channels, out_channels, dropout) for j in range(num_blocks)
        )
        if upsample:
            self.upsample_conv = Conv2dSame(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if hasattr(self, "upsample_conv"):
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class VQGANEncoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        widths = [cfg.hidden_channels * m for m in cfg.channel_mult]
        inputs = [cfg.hidden_channels] + widths[:-1]
        self.conv_in = Conv2dSame(cfg.num_channels, cfg.hidden_channels, 3, bias=False)
        self.down = nn.ModuleList(
            _Level(cin, cout, cfg.num_res_blocks, cfg.dropout) for cin, cout in zip(inputs, widths)
        )
        self.mid = nn.ModuleList(ResnetBlock(widths[-1], widths[-1], cfg.dropout) for _ in range(2))
        self.norm_out = nn.GroupNorm(32, widths[-1], eps=1e-6)
        self.conv_out = Conv2dSame(widths[-1], cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, level in enumerate(self.down):
            x = level(x)
            if i < len(self.down) - 1:
                x = F.avg_pool2d(x, 2, 2)
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class VQGANDecoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        widths = [cfg.hidden_channels * m for m in cfg.channel_mult]
        self.conv_in = Conv2dSame(cfg.z_channels, widths[-1], 3)
        self.mid = nn.ModuleList(ResnetBlock(widths[-1], widths[-1], cfg.dropout) for _ in range(2))
        # stored by level number; run from the deepest (last) level to level 0
        inputs = widths[1:] + [widths[-1]]
        self.up = nn.ModuleList(
            _Level(inputs[i], widths[i], cfg.num_res_blocks, cfg.dropout, upsample=i > 0)
            for i in range(cfg.num_resolutions)
        )
        self.norm_out = nn.GroupNorm(32, widths[0], eps=1e-6)
        self.conv_out = Conv2dSame(widths[0], cfg.num_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for block in self.mid:
            x = block(x)
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MaskGITVQGAN(HubMixin, nn.Module):
    """Encoder + 1024-code quantizer + decoder; pixels in [0, 1]."""

    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig | None = None, **fields):
        """A config, or its fields as keywords (`MaskGITVQGAN(hidden_channels=32, ...)`); none: the released model's."""
        super().__init__()
        self.config = config if config is not None else VQGANConfig(**fields)
        self.encoder = VQGANEncoder(self.config)
        self.decoder = VQGANDecoder(self.config)
        self.quantize = VectorQuantizer(self.config.num_embeddings, self.config.embedding_dim, commitment_cost=0.25)

    @classmethod
    def _build(cls, config: VQGANConfig) -> "MaskGITVQGAN":
        return cls(config)

    @classmethod
    def from_pretrained(cls, path=None, revision: str | None = None) -> "MaskGITVQGAN":
        """A checkpoint folder, a raw state-dict file (the released .bin) or a folder holding only
        weights (default config), or the released weights from the hub when None."""
        path = download_file(*RELEASED_WEIGHTS) if path is None else Path(path)
        if path.is_dir() and (path / CONFIG_NAME).is_file():
            return super().from_pretrained(path, revision)
        file = weights_file(path) if path.is_dir() else path
        if not file.is_file():
            raise CheckpointError(f"{file}: no such file")
        with torch.device("meta"):
            model = cls()
        load_state_strict(model, read_state_dict(file), file)
        return model.eval()

    def encode_latents(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (encoder output, quantized latents, ids (B, h*w))."""
        z = self.encoder(pixels)
        z_quantized, result = self.quantize(z)
        return z, z_quantized, result["min_encoding_indices"].flatten(1)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Reconstruction through the quantizer (training): (pixels, quantizer result)."""
        z_quantized, result = self.quantize(self.encoder(pixels))
        return self.decode(z_quantized), result

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Proxy codes: ids (B, h*w), row-major."""
        return self.encode_latents(pixels)[2]

    def decode(self, z_quantized: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_quantized)

    def decode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        b, n = ids.shape
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"expected a square grid of ids, got {n} per image")
        codes = self.quantize.get_codebook_entry(ids.reshape(-1))
        return self.decode(codes.view(b, side, side, -1).permute(0, 3, 1, 2))
