"""Image sources: a folder (ImageFolder layout), a file list, a pre-decoded uint8 array.

All are map-style datasets, so a trainer resumes at an exact data position by passing
`(index, position)` keys. Each sample is a dict: `image` (3, H, W) in [0, 1], `label` (int),
`skipped` (how many unreadable files were passed over to produce it; summed over a batch
it tells the trainer how many were skipped, whatever worker or process read them).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .images import ImageReadError, open_rgb, pil_to_tensor, tensor_to_uint8
from ..files import atomic_save_npy, atomic_write_bytes
from .transforms import sample_generator
from ..errors import DatasetError

logger = logging.getLogger("onetok.data")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}
LIST_EXTENSIONS = {".txt", ".lst", ".list", ".tsv"}

Transform = Callable[[Image.Image, torch.Generator], torch.Tensor]


class SkipLog:
    """Unreadable images met by this process: counted, and each path warned about once."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    @property
    def count(self) -> int:
        return len(self.paths)

    def add(self, where: str, reason: str) -> None:
        if where not in self.paths:
            self.paths.append(where)
            logger.warning("skipping unreadable image %s (%s)", where, reason.removeprefix(f"{where}: "))


skip_log = SkipLog()


def to_tensor(img: Image.Image, transform: Transform | None, generator: torch.Generator) -> torch.Tensor:
    return pil_to_tensor(img) if transform is None else transform(img, generator)


class _IndexedImages(Dataset):
    """Shared indexing: an int index, or (index, position) from the trainer's sampler.

    The augmentation seed follows the position in the sample stream (or the index when
    none is given), so a replayed position gives the same pixels.
    """

    accepts_position_keys = True  # the Trainer passes (index, position): crops differ every epoch

    classes: list[str]
    seed: int

    def _load(self, index: int) -> tuple[Image.Image, int]:
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        return f"{type(self).__name__}[{index}]"

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, position = key if isinstance(key, tuple) else (int(key), int(key))
        n = len(self)
        for skipped in range(n):
            i = (index + skipped) % n
            try:
                img, label = self._load(i)
            except ImageReadError as err:
                skip_log.add(self._describe(i), str(err))
                continue
            image = to_tensor(img, self.transform, sample_generator(self.seed, position))
            return {"image": image, "label": label, "skipped": skipped}
        raise DatasetError(f"{type(self).__name__}: none of its {n} images could be read")


class ImageFileDataset(_IndexedImages):
    """Images on disk, given as (path, label) pairs."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: Transform | None = None, seed: int = 0):
        if not samples:
            raise DatasetError("no images found")
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return open_rgb(path), label

    def _describe(self, index: int) -> str:
        return self.samples[index][0]


def _walk(root: Path) -> Iterator[Path]:
    """Files under root, following symlinked folders, skipping hidden ones (e.g. temp files)."""
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(folder) / name for name in names if not name.startswith("."))


def scan_folder(root: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """ImageFolder layout, searched recursively. A file's class is its first-level subfolder;
    files lying directly in `root` form a class named after `root`. Classes are sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    files = sorted(p for p in _walk(root) if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found")

    def class_of(path: Path) -> str:
        parts = path.relative_to(root).parts
        return parts[0] if len(parts) > 1 else root.name

    classes = sorted({class_of(p) for p in files})
    if {"train", "val"} <= set(classes):
        raise DatasetError(f"{root}: holds train/ and val/ splits, not classes; give {root / 'train'} or {root / 'val'}")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    return [(str(p), class_to_idx[class_of(p)]) for p in files], classes


def read_file_list(list_path: str | os.PathLike) -> tuple[list[tuple[str, int]], list[str]]:
    """A text file with one `path` or `path<TAB>label` per line (relative paths are relative
    to the list). Labels are integers or class names; '#' starts a comment line."""
    list_path = Path(list_path)
    try:
        lines = list_path.read_text().splitlines()
    except OSError as err:
        raise DatasetError(f"{list_path}: cannot read file list ({err.strerror})") from None
    rows = [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]
    if not rows:
        raise DatasetError(f"{list_path}: file list is empty")
    if len({len(row) for row in rows}) > 1 or len(rows[0]) > 2:
        raise DatasetError(f"{list_path}: every line must be 'path' or 'path<TAB>label', not a mix")
    paths = [str(list_path.parent / row[0].strip()) for row in rows]
    if len(rows[0]) == 1:
        return [(p, 0) for p in paths], [list_path.stem]
    labels = [row[1].strip() for row in rows]
    if all(label.lstrip("-").isdigit() for label in labels):
        ints = [int(label) for label in labels]
        if min(ints) < 0:
            raise DatasetError(f"{list_path}: negative class label {min(ints)}")
        return list(zip(paths, ints)), [str(i) for i in range(max(ints) + 1)]
    classes = sorted(set(labels))
    return [(p, classes.index(label)) for p, label in zip(paths, labels)], classes


class ArrayDataset(_IndexedImages):
    """A pre-decoded uint8 array (N, H, W, 3) in a .npy file, memory-mapped.

    Labels come from `<stem>.labels.npy` and class names from `<stem>.classes.json` beside it
    (all zeros / one class when absent). `predecode` writes this layout.
    """

    def __init__(self, path: str | os.PathLike, transform: Transform | None = None, seed: int = 0):
        self.path = Path(path)
        try:
            images = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DatasetError(f"{self.path}: not a readable .npy array ({err})") from None
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{self.path}: expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        self.num_images = len(images)
        labels_path, classes_path = array_sidecars(self.path)
        self.labels = np.load(labels_path) if labels_path.exists() else np.zeros(self.num_images, np.int64)
        if len(self.labels) != self.num_images:
            raise DatasetError(f"{labels_path}: {len(self.labels)} labels for {self.num_images} images")
        self.classes = json.loads(classes_path.read_text()) if classes_path.exists() else [self.path.stem]
        self.transform = transform
        self.seed = seed
        self._images: np.ndarray | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return self.num_images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def _load(self, index: int) -> tuple[Image.Image, int]:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return Image.fromarray(np.ascontiguousarray(self._images[index])), int(self.labels[index])


def array_sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.with_suffix("")
    return Path(f"{stem}.labels.npy"), Path(f"{stem}.classes.json")


def predecode(source: str | os.PathLike, size: int, out_path: str | os.PathLike) -> Path:
    """Decode every image of a folder or file list, resized and center-cropped to `size`,
    into one uint8 .npy array with its labels and class names (each file written atomically)."""
    from .transforms import EvalTransform

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
    from .shards import ShardDataset

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
        has_images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in _walk(path))
        if tars and not has_images:
            return ShardDataset(tars, transform=transform, seed=seed, **shard_options)
        return ImageFileDataset(*scan_folder(path), transform=transform, seed=seed)
    if path.suffix.lower() in LIST_EXTENSIONS:
        return ImageFileDataset(*read_file_list(path), transform=transform, seed=seed)
    if path.suffix.lower() == ".npy":
        return ArrayDataset(path, transform=transform, seed=seed)
    raise DatasetError(f"{path}: not a folder, file list (.txt), array (.npy) or shard (.tar)")
