"""Train and eval preprocessing: PIL image in, float tensor (3, size, size) in [0, 1] out.

Every random choice is drawn from a `torch.Generator`, so one (seed, data position) pair
always gives the same crop and flip: a resumed run replays its data exactly.
"""
from __future__ import annotations

import math

import torch
from PIL import Image

from ..processes import mix_seed
from .images import pil_to_tensor, resize_center_crop


def sample_generator(seed: int, *position: int) -> torch.Generator:
    """A generator for one sample, derived from the run seed and the sample's position."""
    return torch.Generator().manual_seed(mix_seed(seed, *position))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in [0, high]."""
    return int(torch.randint(high + 1, (), generator=generator).item())


class EvalTransform:
    """Resize the shorter side to `size` (bicubic) and center crop (SPEC 4.1)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        return pil_to_tensor(resize_center_crop(img, self.size))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


class TrainTransform:
    """Training augmentation, two modes.

    * `scale=None` (SPEC 4.1): resize the shorter side to `resize_shorter` (default `size`),
      bicubic, then a random (or center) `size` crop.
    * `scale=(lo, hi)`: random resized crop; a box covering a fraction in [lo, hi] of the area
      with aspect ratio in `ratio` is resized to `size`. It turns a small photo pool into a
      varied stream.
    Both end with an optional horizontal flip.
    """

    def __init__(
        self,
        size: int,
        resize_shorter: int | None = None,
        random_crop: bool = True,
        random_flip: bool = True,
        scale: tuple[float, float] | None = None,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
        if resize_shorter is not None and resize_shorter < size:
            raise ValueError(f"resize_shorter {resize_shorter} is smaller than the crop size {size}")
        self.size = size
        self.resize_shorter = resize_shorter or size
        self.random_crop = random_crop
        self.random_flip = random_flip
        self.scale = scale
        self.ratio = ratio

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:  # follow the global RNG, so torch.manual_seed still makes runs repeatable
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ()).item()))
        if self.scale is None:
            img = self._resize_then_crop(img, generator)
        else:
            img = self._random_resized_crop(img, generator)
        if self.random_flip and torch.rand((), generator=generator).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)

    def _resize_then_crop(self, img: Image.Image, generator: torch.Generator) -> Image.Image:
        w, h = img.size
        scale = self.resize_shorter / min(w, h)
        new_w, new_h = max(self.resize_shorter, round(w * scale)), max(self.resize_shorter, round(h * scale))
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BICUBIC)
        if self.random_crop:
            left, top = _randint(generator, new_w - self.size), _randint(generator, new_h - self.size)
        else:
            left, top = (new_w - self.size) // 2, (new_h - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))

    def _random_resized_crop(self, img: Image.Image, generator: torch.Generator) -> Image.Image:
        left, top, width, height = self._crop_box(img.size, generator)
        box = (left, top, left + width, top + height)
        return img.resize((self.size, self.size), Image.BICUBIC, box=box)

    def _crop_box(self, image_size: tuple[int, int], generator: torch.Generator) -> tuple[int, int, int, int]:
        w, h = image_size
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = w * h * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, *log_ratio))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return _randint(generator, w - cw), _randint(generator, h - ch), cw, ch
        # Rare fallback (extreme aspect ratios): the largest central box with an allowed ratio.
        aspect = min(max(w / h, self.ratio[0]), self.ratio[1])
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        cw, ch = min(cw, w), min(ch, h)
        return (w - cw) // 2, (h - ch) // 2, cw, ch

    def __repr__(self) -> str:
        mode = f"scale={self.scale}" if self.scale else f"resize_shorter={self.resize_shorter}"
        return f"TrainTransform(size={self.size}, {mode}, random_crop={self.random_crop}, flip={self.random_flip})"


def build_transform(
    train: bool,
    size: int,
    *,
    resize_shorter: int | None = None,
    random_crop: bool = True,
    random_flip: bool = True,
    scale: tuple[float, float] | None = None,
) -> TrainTransform | EvalTransform:
    if not train:
        return EvalTransform(size)
    return TrainTransform(size, resize_shorter, random_crop, random_flip, scale)
