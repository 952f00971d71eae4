"""WebDataset tar shards: write them from a folder, stream them back split across
processes (rank / world size) and DataLoader workers.

A shard holds samples `<key>.jpg` (or `.png`) + `<key>.cls` (class index as text), the
layout of the ImageNet shards of SPEC 4.1; `classes.json` beside the shards names the classes.
"""
from __future__ import annotations

import copy
import io
import json
import os
import random
import tarfile
import time
from itertools import count
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from torch.utils.data import IterableDataset, get_worker_info

from ..errors import CorruptShardError
from ..files import atomic_write_bytes
from .images import ImageReadError, open_rgb
from ..processes import rank_and_world_size
from .sources import DatasetError, Transform, read_file_list, scan_folder, skip_log, to_tensor
from .transforms import sample_generator

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "tif", "tiff")
RAW_KEYS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}  # stored as they are; others become PNG


# ---------------------------------------------------------------- writing


def _encode_for_shard(path: str) -> tuple[str, bytes]:
    """(key extension, bytes) of a readable image; raises ImageReadError otherwise."""
    img = open_rgb(path)  # validates: decodes the whole image
    ext = RAW_KEYS.get(Path(path).suffix.lower())
    if ext is not None:
        return ext, Path(path).read_bytes()
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "png", buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            _add_member(tar, name, data)
    atomic_write_bytes(path, buf.getvalue())


def make_shards(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    prefix: str = "shard",
    shuffle: bool = True,
    seed: int = 0,
) -> dict:
    """Convert a folder (ImageFolder layout) or a file list into tar shards.

    Samples are shuffled (with `seed`) before sharding so that each shard mixes classes.
    The key of a sample is its index in the sorted file scan. Unreadable images are
    skipped and listed. Each shard and `classes.json` is written atomically.
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    source = Path(source)
    samples, classes = scan_folder(source) if source.is_dir() else read_file_list(source)
    order = list(range(len(samples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, members, skipped, written = [], [], [], 0

    def flush() -> None:
        path = out_dir / f"{prefix}-{len(shards):05d}.tar"
        _write_tar(path, members)
        shards.append(str(path))
        members.clear()

    for index in order:
        path, label = samples[index]
        try:
            ext, data = _encode_for_shard(path)
        except ImageReadError as err:
            skip_log.add(path, str(err))
            skipped.append(path)
            continue
        key = f"{index:09d}"
        members += [(f"{key}.{ext}", data), (f"{key}.cls", str(label).encode())]
        written += 1
        if len(members) == 2 * shard_size:
            flush()
    if members:
        flush()
    atomic_write_bytes(out_dir / "classes.json", json.dumps(classes).encode())
    return {"shards": shards, "written": written, "skipped": skipped, "classes": classes}


# ---------------------------------------------------------------- reading


def expand_shard_spec(spec: str | Sequence[str]) -> list[str]:
    """Brace patterns (`train-{0000..0009}.tar`) and `::`-joined lists to a list of URLs."""
    from webdataset.shardlists import expand_urls

    urls = [u for item in ([spec] if isinstance(spec, str) else spec) for u in expand_urls(os.fspath(item))]
    if not urls:
        raise DatasetError(f"{spec}: no shards")
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).exists()]
    if missing:
        raise DatasetError(f"shard {missing[0]} does not exist ({len(missing)} of {len(urls)} missing)")
    return urls


def _classes_beside(url: str) -> list[str] | None:
    path = Path(url).parent / "classes.json"
    if "://" in url or not path.exists():
        return None
    return json.loads(path.read_text())


def _shuffled(samples: Iterable[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Buffer shuffle for streams: keep `size` samples, emit a random one per arrival."""
    buffer: list[dict] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer


class ShardDataset(IterableDataset):
    """Stream samples from WebDataset shards; dicts as in `sources` (image, label, skipped).

    Shards are dealt out round-robin: rank r of R processes takes shards r, r+R, ...; DataLoader
    worker w of W then takes every W-th of those. So every sample is read by exactly one
    (process, worker) per pass. With `repeat=True` the stream is endless (training), each pass
    in a new shard order; `shuffle_buffer` > 0 also shuffles samples across shards. Use
    `repeat=True` for multi-process training: ranks may hold unequal numbers of samples.

    The stream of pass (epoch) e is a function of (seed, rank, worker, e): shard order, buffer
    shuffle and each position's augmentation seed, so `resumed_at` can replay it to any batch.
    A shard that breaks off (truncated or scrambled tar) is named in a warning and counted in
    `skip_log`; with `strict=True` it raises CorruptShardError instead.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Transform | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        repeat: bool = False,
        shuffle_buffer: int = 0,
        classes: Sequence[str] | None = None,
        strict: bool = False,
    ):
        self.urls = expand_shard_spec(urls)
        self.transform = transform
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.repeat = repeat
        self.shuffle_buffer = shuffle_buffer
        self.classes = list(classes) if classes is not None else _classes_beside(self.urls[0]) or ["0"]
        self.strict = strict
        self.epoch = 0
        self.skip_batches, self.batch_size, self.num_workers = 0, 1, 0

    def resumed_at(self, epoch: int, batches: int, batch_size: int, num_workers: int) -> "ShardDataset":
        """A copy that streams pass `epoch` from after its first `batches` batches of `batch_size`
        (as a DataLoader with `num_workers` workers deals them out), exactly as an uninterrupted
        reader would have gone on. The copy replays the skipped part without transforming it."""
        resumed = copy.copy(self)
        resumed.epoch, resumed.skip_batches = epoch, batches
        resumed.batch_size, resumed.num_workers = batch_size, num_workers
        return resumed

    def _my_urls(self) -> tuple[list[str], int]:
        rank, world = rank_and_world_size()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        if world > len(self.urls):
            raise DatasetError(f"{len(self.urls)} shards cannot be split over {world} processes: make more, smaller shards")
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        stream_id = rank * num_workers + worker_id
        return self.urls[rank::world][worker_id::num_workers], stream_id

    def _raw_samples(self, urls: list[str], stream_id: int) -> Iterator[dict]:
        import webdataset as wds

        for epoch in count(self.epoch):
            order = list(urls)
            if self.repeat or epoch:
                random.Random(f"{self.seed}:{stream_id}:{epoch}").shuffle(order)
            for url in order:
                yield from wds.WebDataset(
                    [url], shardshuffle=False, nodesplitter=None, workersplitter=None,
                    handler=self._broken_shard_handler(url), empty_check=False,
                )
            if not self.repeat:
                return

    def _broken_shard_handler(self, url: str):
        def handle(err: Exception) -> bool:
            reason = (str(err.args[0]) if err.args else type(err).__name__).split(" @ <")[0]  # drop the file repr
            if self.strict:
                raise CorruptShardError(f"{url}: {reason}")
            skip_log.add(url, f"corrupt shard, read up to here: {reason}")
            return True
        return handle

    def _samples_to_skip(self, worker_id: int) -> int:
        """Samples this worker's stream gave for the first `skip_batches` batches: a DataLoader
        takes batch b from worker b % W."""
        workers = max(self.num_workers, 1)
        return max(0, (self.skip_batches - worker_id + workers - 1) // workers) * self.batch_size

    def __iter__(self) -> Iterator[dict]:
        urls, stream_id = self._my_urls()
        if not urls:
            return
        samples = self._raw_samples(urls, stream_id)
        if self.shuffle_buffer > 0:
            samples = _shuffled(samples, self.shuffle_buffer, random.Random(f"{self.seed}:{stream_id}:{self.epoch}:buffer"))
        worker = get_worker_info()
        to_skip = self._samples_to_skip(worker.id if worker else 0)
        skipped = 0
        for position, raw in enumerate(samples):
            where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
            try:
                img, label = self._decode(raw, where)
            except ImageReadError as err:
                skip_log.add(where, str(err))
                skipped += 1
                continue
            if to_skip:  # replayed up to the resume point: decoded (unreadable ones do not count), not transformed
                to_skip -= 1
                skipped = 0
                continue
            generator = sample_generator(self.seed, stream_id, self.epoch, position)
            yield {"image": to_tensor(img, self.transform, generator), "label": label, "skipped": skipped}
            skipped = 0

    @staticmethod
    def _decode(raw: dict, where: str):
        key = next((k for k in IMAGE_KEYS if k in raw), None)
        if key is None:
            raise ImageReadError(f"{where}: no image entry (has {sorted(k for k in raw if not k.startswith('__'))})")
        try:
            label = int(raw["cls"]) if "cls" in raw else 0
        except ValueError:
            raise ImageReadError(f"{where}: class label {raw['cls'][:20]!r} is not an integer") from None
        try:
            return open_rgb(io.BytesIO(raw[key])), label
        except ImageReadError as err:
            reason = str(err).split(": ", 1)[-1]  # drop the BytesIO repr
            raise ImageReadError(f"{where}: {reason}") from None
