"""Reading and writing images: Pillow in, float tensors in [0, 1] out."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..files import atomic_write_bytes
from ..errors import ImageReadError


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open any image Pillow reads as RGB; transparency is composited onto grey."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic) and take the central size x size crop."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((new_w, new_h), Image.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """HWC uint8 PIL image -> float tensor (3, H, W) in [0, 1]."""
    # numpy, not torch: small torch ops start intra-op threads, which is slow on a busy CPU
    chw = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
    return torch.from_numpy(chw / np.float32(255.0))


def tensor_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) floats in [0, 1] -> uint8 HWC arrays, rounded (not truncated)."""
    images = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return images.movedim(-3, -1).cpu().numpy()


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    return pil_to_tensor(resize_center_crop(open_rgb(path), size))


def save_image(image: torch.Tensor | np.ndarray | Image.Image, path: str | os.PathLike) -> None:
    """Save one image atomically; the format follows the file suffix."""
    import io

    if isinstance(image, torch.Tensor):
        image = tensor_to_uint8(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    image.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def make_grid(images: torch.Tensor, ncol: int = 8, pad: int = 2) -> torch.Tensor:
    """(B, 3, H, W) -> one (3, H', W') grid with white padding."""
    b, c, h, w = images.shape
    ncol = max(1, min(ncol, b))
    nrow = (b + ncol - 1) // ncol
    grid = images.new_ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i, img in enumerate(images):
        r, col = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = img
    return grid
