"""Image codecs as rate–quality baselines: JPEG, WebP and AVIF through Pillow (the largest file
within a byte budget, found by binary search on quality) and ThumbHash (the `thumbhash` package).
The thumbnail of the same bytes lives in baselines.py."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, features

from ..data.images import pil_to_tensor, tensor_to_uint8


@dataclass(frozen=True)
class Codec:
    name: str
    pil_format: str
    qualities: tuple[int, ...]  # lowest first; file sizes grow with quality
    options: dict = field(default_factory=dict)

    def encode(self, image: Image.Image, quality: int) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format=self.pil_format, quality=quality, **self.options)
        return buf.getvalue()

    @staticmethod
    def decode(data: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as img:
            return pil_to_tensor(img.convert("RGB"))

    def describe_quality(self, quality: int) -> str:
        return f"quality {quality}"


# Each codec's smallest-file settings: optimised Huffman tables (JPEG), the slowest, tightest
# WebP method; AVIF at libavif's default speed.
CODECS = (
    Codec("JPEG", "JPEG", tuple(range(1, 96)), {"optimize": True}),
    Codec("WebP", "WEBP", tuple(range(0, 101)), {"method": 6}),
    Codec("AVIF", "AVIF", tuple(range(0, 101))),
)


@dataclass
class CodecSet:
    usable: dict[str, Codec]
    missing: dict[str, str]  # name -> why it cannot be measured here


def _has_avif() -> bool:
    if features.check("avif"):  # Pillow >= 11.2 may be built with libavif
        return True
    try:
        import pillow_avif  # noqa: F401  (registers the AVIF plugin on import)
    except ImportError:
        return False
    return "AVIF" in Image.SAVE


def available_codecs() -> CodecSet:
    present = {"JPEG": features.check("jpg"), "WebP": features.check("webp"), "AVIF": _has_avif()}
    usable = {c.name: c for c in CODECS if present[c.name]}
    missing = {name: ("this Pillow has no AVIF encoder (Pillow >= 11.2 wheels have one; or pip install pillow-avif-plugin)"
                      if name == "AVIF" else f"this Pillow was built without {name}")
               for name, ok in present.items() if not ok}
    return CodecSet(usable, missing)


@dataclass
class CodecResult:
    images: torch.Tensor        # (N, 3, S, S) decoded files in [0, 1]
    sizes: np.ndarray           # (N,) file bytes
    qualities: list[int]        # the quality setting chosen for each image
    within_budget: np.ndarray   # (N,) bool: the file fits in the budget (else it is the smallest file)

    @property
    def mean_bytes(self) -> float:
        return float(self.sizes.mean())


class CodecSearch:
    """One codec on a fixed set of images; every (image, quality) is encoded at most once."""

    def __init__(self, codec: Codec, originals: torch.Tensor):
        self.codec = codec
        self.images = [Image.fromarray(np.ascontiguousarray(a)) for a in tensor_to_uint8(originals)]
        self._files: list[dict[int, bytes]] = [{} for _ in self.images]

    def _file(self, index: int, quality: int) -> bytes:
        files = self._files[index]
        if quality not in files:
            files[quality] = self.codec.encode(self.images[index], quality)
        return files[quality]

    def largest_within(self, index: int, budget: float) -> tuple[int, bool]:
        """(quality of the largest file of at most `budget` bytes, True), or (lowest quality, False)
        when even the smallest file is larger."""
        qualities = self.codec.qualities
        if len(self._file(index, qualities[0])) > budget:
            return qualities[0], False
        lo, hi = 0, len(qualities) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self._file(index, qualities[mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return qualities[lo], True

    def within(self, budget: float) -> CodecResult:
        """Each image's largest file within `budget` bytes (budget 0: the smallest files), decoded."""
        chosen = [self.largest_within(i, budget) for i in range(len(self.images))]
        files = [self._file(i, q) for i, (q, _) in enumerate(chosen)]
        return CodecResult(torch.stack([Codec.decode(f) for f in files]), np.array([len(f) for f in files]),
                           [q for q, _ in chosen], np.array([ok for _, ok in chosen]))


THUMBHASH_MAX_SIDE = 100  # ThumbHash encodes images of at most 100x100 pixels


def thumbhash_reconstructions(originals: torch.Tensor) -> tuple[torch.Tensor, list[int]] | None:
    """(ThumbHash decodings upsampled bicubic to the originals' size, hash bytes per image), or
    None when the `thumbhash` package is missing."""
    try:
        import thumbhash
    except ImportError:
        return None
    size, out, sizes = originals.shape[-1], [], []
    for array in tensor_to_uint8(originals):
        image = Image.fromarray(np.ascontiguousarray(array))
        image.thumbnail((THUMBHASH_MAX_SIDE, THUMBHASH_MAX_SIDE), Image.BOX)
        hashed = thumbhash.rgba_to_thumb_hash(image.width, image.height, list(image.convert("RGBA").tobytes()))
        with contextlib.redirect_stdout(io.StringIO()):  # thumbhash 0.1.2 prints the aspect ratio as it decodes
            width, height, rgba = thumbhash.thumb_hash_to_rgba(hashed)
        small = Image.frombytes("RGBA", (width, height), bytes(rgba)).convert("RGB")
        out.append(pil_to_tensor(small.resize((size, size), Image.BICUBIC)))
        sizes.append(len(hashed))
    return torch.stack(out), sizes
