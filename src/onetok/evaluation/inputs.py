"""Image sets to evaluate: folders or lists of files, tensor datasets, ADM `.npz` batches."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from onetok.data.images import load_image, pil_to_tensor, resize_center_crop
from onetok.data.sources import IMAGE_EXTENSIONS, DatasetError, scan_folder
from onetok.errors import EvalInputError



def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under a folder (recursively, as the training data layer finds them), sorted."""
    try:
        samples, _ = scan_folder(folder)
    except DatasetError as err:
        raise EvalInputError(str(err)) from None
    return [Path(path) for path, _ in samples]


class ImageFiles(Dataset):
    """Files -> (3, size, size) tensors: shorter side resized (bicubic) to size, center crop."""

    def __init__(self, paths: Sequence[str | os.PathLike], size: int):
        self.paths = [Path(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return load_image(self.paths[index], self.size), index

    def names(self) -> list[str]:
        return [str(p) for p in self.paths]


class ImageTensors(Dataset):
    """Wraps a dataset of (3, H, W) tensors in [0, 1], of (tensor, ...) tuples, or of dicts with
    an "image" entry; images of another size are resized and center-cropped like files."""

    def __init__(self, dataset, size: int):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        if isinstance(item, dict):
            item = item.get("image")
        elif isinstance(item, (tuple, list)):
            item = item[0]
        if not torch.is_tensor(item) or item.ndim != 3 or item.shape[0] != 3:
            raise EvalInputError(f"item {index}: expected a (3, H, W) image tensor, got {type(item).__name__}")
        if item.shape[-2:] != (self.size, self.size):
            pixels = item.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
            item = pil_to_tensor(resize_center_crop(Image.fromarray(pixels), self.size))
        return item.float(), index

    def names(self) -> list[str]:
        return [f"item {i}" for i in range(len(self))]


class UInt8Images(Dataset):
    """(N, H, W, 3) uint8 images (an ADM `arr_0`) -> (3, H, W) tensors in [0, 1]."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return torch.from_numpy(np.array(self.images[index])).permute(2, 0, 1).float() / 255, index

    def names(self) -> list[str]:
        return [f"sample {i}" for i in range(len(self))]


def as_image_dataset(data, size: int, limit: int | None = None) -> Dataset:
    """A folder, a list of image files, or a dataset of image tensors -> an (image, index) dataset."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            dataset = ImageFiles(list_images(path), size)
        elif path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            dataset = ImageFiles([path], size)
        else:
            raise EvalInputError(f"{path}: not a folder of images or an image file")
    elif isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        dataset = ImageFiles(data, size)
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        dataset = ImageTensors(data, size)
    else:
        raise EvalInputError(f"cannot evaluate on a {type(data).__name__}: give a folder, image paths or a dataset")
    if len(dataset) == 0:
        raise EvalInputError("the image set is empty")
    if limit is not None:
        dataset = _Head(dataset, limit)
    return dataset


class _Head(Dataset):
    """The first `limit` items of a dataset."""

    def __init__(self, dataset, limit: int):
        self.dataset, self.limit = dataset, min(limit, len(dataset))

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int):
        return self.dataset[index]

    def names(self) -> list[str]:
        return self.dataset.names()[: self.limit]
