"""Per-image PSNR and SSIM on 8-bit-quantised images in [0, 1] (data range 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the nearest k / 255, the precision of a saved PNG."""
    return images.clamp(0, 1).mul(255).round().div(255)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two image batches of the same shape (B, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of each pair after 8-bit quantisation; inf for identical images."""
    _check_pair(reference, test)
    ref, out = quantize_8bit(reference.double()), quantize_8bit(test.double())
    mse = (ref - out).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return window / window.sum()


def ssim(reference: torch.Tensor, test: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """(B,) mean SSIM per image, averaged over channels.

    Matches skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...): local statistics under
    a Gaussian window, averaged over the pixels whose window lies inside the image.
    """
    _check_pair(reference, test)
    if min(reference.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}, got {tuple(reference.shape[-2:])}")
    x, y = quantize_8bit(reference.double()), quantize_8bit(test.double())
    b, c, h, w = x.shape
    window = gaussian_window(window_size, sigma).to(x.device)

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        # Separable blur of every channel, valid region only.
        t = t.reshape(b * c, 1, t.shape[-2], t.shape[-1])
        t = F.conv2d(t, window.view(1, 1, -1, 1))
        return F.conv2d(t, window.view(1, 1, 1, -1))

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = k1**2, k2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(b, c, -1).mean(dim=2).mean(dim=1)
