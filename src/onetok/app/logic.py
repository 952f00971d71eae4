"""The functions behind the web demo: plain torch / numpy in, plain values out.

Nothing here imports Gradio, so every step the page runs can be tested (and
scripted) directly. Errors a user can cause are `AppInputError`s whose message
is shown in the page as it is.
"""
from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from onetok.errors import GenerationError, TokenEditError, UploadError
from onetok.evaluation.image_metrics import psnr as image_psnr
from onetok.data.images import make_grid, pil_to_tensor, resize_center_crop, tensor_to_uint8, to_rgb
from onetok.pipeline import Pipeline

MAX_UPLOAD_MB = 10
MAX_UPLOAD_PIXELS = 40_000_000  # e.g. 8000 x 5000: more than any phone photo, far below a decompression bomb
GRID_COLUMNS = 8
MAX_IMAGES_PER_RUN = 16

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


# ---------------------------------------------------------------- uploads


def read_upload(source: str | os.PathLike | bytes, max_mb: float = MAX_UPLOAD_MB) -> bytes:
    """The upload's bytes, refusing files over the size limit before reading them."""
    limit = int(max_mb * 1024 * 1024)
    if isinstance(source, bytes):
        size = len(source)
    else:
        try:
            size = Path(source).stat().st_size
        except OSError:
            raise UploadError("the uploaded file could not be read; please upload it again") from None
    if size > limit:
        raise UploadError(f"the file is {size / 2**20:.1f} MB; the limit is {max_mb:g} MB")
    if size == 0:
        raise UploadError("the uploaded file is empty")
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def decode_image(data: bytes, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Bytes -> upright RGB image, with readable errors for non-images and huge images."""
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise UploadError("the file is not an image this app can read (use JPEG, PNG or WebP)") from None
    width, height = img.size
    if width * height > max_pixels:
        raise UploadError(
            f"the image is {width} x {height} pixels; the limit is {max_pixels / 1e6:g} megapixels"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError):
        raise UploadError("the image file is damaged or truncated") from None
    return to_rgb(ImageOps.exif_transpose(img))  # phone photos store their rotation in EXIF


def preprocess_upload(
    source: str | os.PathLike | bytes,
    size: int,
    max_mb: float = MAX_UPLOAD_MB,
    max_pixels: int = MAX_UPLOAD_PIXELS,
) -> torch.Tensor:
    """An uploaded file -> the (3, size, size) tensor in [0, 1] a tokenizer takes (centre crop)."""
    return pil_to_tensor(resize_center_crop(decode_image(read_upload(source, max_mb), max_pixels), size))


# ---------------------------------------------------------------- reconstruction


@dataclass(frozen=True)
class Reconstruction:
    input: np.ndarray  # (H, W, 3) uint8: what the tokenizer saw
    output: np.ndarray  # (H, W, 3) uint8: the image decoded from the tokens
    ids: list[int]
    psnr: float  # dB, between input and output
    num_bytes: int  # storage for the ids alone


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 HWC images in dB (inf when equal)."""
    as_batch = (torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].double() / 255 for x in (a, b))
    return float(image_psnr(*as_batch)[0])


def bytes_per_image(bits_per_image: float) -> int:
    """Whole bytes to store one image's ids (`Pipeline.bits_per_image`, rounded up)."""
    return math.ceil(bits_per_image / 8)


@torch.inference_mode()
def decode_ids(pipeline: Pipeline, ids: list[int]) -> np.ndarray:
    """One image's ids -> (H, W, 3) uint8 image."""
    return tensor_to_uint8(pipeline.detokenize([ids])[0])


@torch.inference_mode()
def reconstruct(pipeline: Pipeline, image: torch.Tensor) -> Reconstruction:
    """Tokenize one (3, H, W) image and decode it again, at the pipeline's precision (as the CLI)."""
    ids = pipeline.tokenize(image)[0].tolist()
    source = tensor_to_uint8(image)
    output = decode_ids(pipeline, ids)
    return Reconstruction(source, output, ids, psnr(source, output), bytes_per_image(pipeline.bits_per_image))


@torch.inference_mode()
def budget_row(tokenizer: torch.nn.Module, source: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """The (H, W, 3) uint8 input decoded from its first 1, 2, 4, ... K tokens, each captioned with
    its token count, bytes and PSNR to the input (a TiTok: one tokenization, every prefix)."""
    from onetok.evaluation.rate_quality import budget_strip

    image = pil_to_tensor(Image.fromarray(np.ascontiguousarray(source)))
    return [(tensor_to_uint8(step["image"]), f"{step['num_tokens']} token{'s' * (step['num_tokens'] > 1)} · {step['bytes']:g} B · {step['psnr']:.1f} dB")
            for step in budget_strip(tokenizer, image)]


# ---------------------------------------------------------------- token grid and editing


def token_grid(ids: list[int], columns: int = GRID_COLUMNS) -> list[list[int | None]]:
    """Ids laid out row by row, `columns` to a row; the last row is padded with None."""
    rows = [ids[start : start + columns] for start in range(0, len(ids), columns)]
    if rows and len(rows[-1]) < columns:
        rows[-1] = rows[-1] + [None] * (columns - len(rows[-1]))
    return rows


def grid_position(row: int, column: int, num_tokens: int, columns: int = GRID_COLUMNS) -> int:
    """The token index of a cell in `token_grid`'s layout."""
    position = row * columns + column
    if not (0 <= column < columns and 0 <= position < num_tokens):
        raise TokenEditError(f"cell ({row}, {column}) holds no token")
    return position


def replace_token(ids: list[int], position: int, new_id: int, codebook_size: int) -> list[int]:
    """A copy of `ids` with one id replaced."""
    if not 0 <= position < len(ids):
        raise TokenEditError(f"token position {position} is out of range: use 0 to {len(ids) - 1}")
    if not 0 <= new_id < codebook_size:
        raise TokenEditError(f"token id {new_id} is out of range: use 0 to {codebook_size - 1}")
    edited = list(ids)
    edited[position] = int(new_id)
    return edited


def randomise_tokens(ids: list[int], count: int, codebook_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Replace `count` distinct positions by random different ids; returns (new ids, positions)."""
    if not 1 <= count <= len(ids):
        raise TokenEditError(f"can randomise 1 to {len(ids)} tokens, not {count}")
    if codebook_size < 2:
        raise TokenEditError("a codebook of one entry leaves nothing to randomise")
    rng = torch.Generator().manual_seed(int(seed))
    positions = sorted(torch.randperm(len(ids), generator=rng)[:count].tolist())
    edited = list(ids)
    for position in positions:
        # an offset in 1..N-1 guarantees a different id
        offset = int(torch.randint(1, codebook_size, (1,), generator=rng))
        edited[position] = (ids[position] + offset) % codebook_size
    return edited, positions


# ---------------------------------------------------------------- generation


@dataclass(frozen=True)
class GenerationSettings:
    """What the Generate tab asks for; None sampling settings take the generator's configured ones."""

    class_id: int
    guidance_scale: float | None = None
    temperature: float | None = None
    num_steps: int | None = None
    seed: int = 0
    num_images: int = 4

    def check(self, num_classes: int) -> None:
        if not 0 <= self.class_id < num_classes:
            raise GenerationError(f"class {self.class_id} is out of range: use 0 to {num_classes - 1}")
        if not 1 <= self.num_images <= MAX_IMAGES_PER_RUN:
            raise GenerationError(f"can make 1 to {MAX_IMAGES_PER_RUN} images at once, not {self.num_images}")
        if self.num_steps is not None and self.num_steps < 1:
            raise GenerationError(f"steps must be at least 1, not {self.num_steps}")
        if (self.guidance_scale or 0) < 0 or (self.temperature or 0) < 0:
            raise GenerationError("guidance scale and temperature must not be negative")


@dataclass(frozen=True)
class Generation:
    images: list[np.ndarray]  # each (H, W, 3) uint8
    grid: np.ndarray  # all of them in one (H', W', 3) uint8 image
    seconds: float


@torch.inference_mode()
def generate(pipeline: Pipeline, settings: GenerationSettings, progress: Progress = _no_progress) -> Generation:
    """Sample class-conditional images one at a time (for progress); image i is the Pipeline's
    sample i of `seed`, the same pixels `onetok generate --seed` makes."""
    settings.check(pipeline.num_classes)
    start = time.perf_counter()
    images = []
    for index in range(settings.num_images):
        progress(index / settings.num_images, f"image {index + 1} of {settings.num_images}")
        images.append(pipeline.generate([settings.class_id], seed=settings.seed, first_index=index,
                                        guidance_scale=settings.guidance_scale,
                                        randomize_temperature=settings.temperature,
                                        num_sample_steps=settings.num_steps)[0])
    progress(1.0, "done")
    grid = make_grid(torch.stack(images), ncol=min(4, len(images)))
    return Generation([tensor_to_uint8(image) for image in images], tensor_to_uint8(grid), time.perf_counter() - start)
