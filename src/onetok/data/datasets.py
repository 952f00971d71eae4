"""Every way to name a set of images, turned into a dataset: the one dataset layer.

`build_dataset` (training and pretokenization): a folder, a file list, a pre-decoded array
or WebDataset shards -> samples as dicts (`image`, `label`, `skipped`), see `sources`.
`as_image_dataset` (evaluation): a folder, image paths or a dataset of tensors -> `(image,
index)` items with `names()`, every image resized and center-cropped to one size.
`predecode` turns a folder into the array `build_dataset` reads fastest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DatasetError, EvalInputError
from ..files import atomic_save_npy, atomic_write_bytes
from .images import load_image, pil_to_tensor, resize_center_crop, tensor_to_uint8
from .shards import ShardDataset
from .sources import (
    IMAGE_EXTENSIONS, LIST_EXTENSIONS, ArrayDataset, ImageFileDataset, Transform, walk_files, array_sidecars,
    read_file_list, scan_folder,
)
from .transforms import EvalTransform

# ---------------------------------------------------------------- training and pretokenization


def is_shard_spec(spec: str) -> bool:
    return "://" in spec or "{" in spec or spec.endswith(".tar") or spec.startswith("pipe:")


def build_dataset(
    spec: str | os.PathLike | Sequence[str],
    *,
    transform: Transform | None = None,
    seed: int = 0,
    **shard_options,
) -> Dataset:
    """Pick the source by what `spec` is.

    * `.tar`, a URL, a brace pattern `train-{0000..0009}.tar`, or a list of those: WebDataset
      shards, streamed (`ShardDataset`; `shard_options` go to it).
    * a folder of .tar files only: those shards.
    * `.txt` / `.lst` / `.tsv`: a file list.   * `.npy`: a pre-decoded array.
    * any other folder: ImageFolder layout.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return ShardDataset(list(spec), transform=transform, seed=seed, **shard_options)
    text = os.fspath(spec)
    if is_shard_spec(text):
        return ShardDataset(text, transform=transform, seed=seed, **shard_options)
    path = Path(text).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        tars = sorted(str(p) for p in path.glob("*.tar"))
        has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in walk_files(path))
        if tars and not has_images:
            return ShardDataset(tars, transform=transform, seed=seed, **shard_options)
        return ImageFileDataset(*scan_folder(path), transform=transform, seed=seed)
    if path.suffix.lower() in LIST_EXTENSIONS:
        return ImageFileDataset(*read_file_list(path), transform=transform, seed=seed)
    if path.suffix.lower() == ".npy":
        return ArrayDataset(path, transform=transform, seed=seed)
    raise DatasetError(f"{path}: not a folder, file list (.txt), array (.npy) or shard (.tar)")


def predecode(source: str | os.PathLike, size: int, out_path: str | os.PathLike) -> Path:
    """Decode every image of a folder or file list, resized and center-cropped to `size`,
    into one uint8 .npy array with its labels and class names (each file written atomically)."""
    dataset = build_dataset(source, transform=EvalTransform(size))
    images, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        if sample["skipped"]:
            continue  # it stands in for an unreadable file and is stored under its own index
        images.append(tensor_to_uint8(sample["image"]))
        labels.append(sample["label"])
    out_path = Path(out_path)
    labels_path, classes_path = array_sidecars(out_path)
    atomic_save_npy(labels_path, np.asarray(labels, dtype=np.int64))
    atomic_write_bytes(classes_path, json.dumps(list(dataset.classes)).encode())
    atomic_save_npy(out_path, np.stack(images))
    return out_path


# ---------------------------------------------------------------- evaluation


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
