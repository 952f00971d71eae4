"""The offline photo pool: openly licensed real photos shipped inside pinned Debian packages.

`fetch_debian_photos(root)` downloads the packages with `apt-get download` (nothing is
installed), reads the photos out of them (Qt resource bundles are carved for embedded
WebP/PNG/JPEG files), drops drawings and duplicates, and writes an ImageFolder tree
`root/debian-photos/{train,val}/<class>/...` with `manifest.jsonl` (source package, version,
licence, sha256 per image). The licences are mixed (GPL, CC-BY-SA): fine to train on, not
to redistribute, so the pool lives in a cache folder, never in the repository.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from ..files import cache_root
from .images import to_rgb
from ..errors import FetchError

logger = logging.getLogger("onetok.data")

DEFAULT_ROOT = cache_root() / "datasets"
POOL_NAME = "debian-photos"


@dataclass(frozen=True)
class Candidate:
    """One image found in a package, before filtering."""

    class_name: str
    source_path: str  # path inside the package, `@offset` for images carved out of a bundle
    data: bytes
    ext: str  # jpg, png or webp


# ---------------------------------------------------------------- carving


_MAGIC = re.compile(rb"RIFF....WEBP|\x89PNG\r\n\x1a\n|\xff\xd8\xff", re.DOTALL)
MAX_JPEG_ENDS = 64  # end markers tried per JPEG start (embedded thumbnails end early)


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:  # Pillow raises many types for broken data; all mean "not an image"
        return False


def _webp_at(blob: bytes, start: int) -> bytes | None:
    size = int.from_bytes(blob[start + 4 : start + 8], "little") + 8
    return blob[start : start + size] if start + size <= len(blob) else None


def _png_at(blob: bytes, start: int) -> bytes | None:
    iend = blob.find(b"IEND", start)
    return blob[start : iend + 8] if iend >= 0 else None  # 'IEND' + 4-byte CRC


def _jpeg_at(blob: bytes, start: int) -> bytes | None:
    end = start
    for _ in range(MAX_JPEG_ENDS):
        end = blob.find(b"\xff\xd9", end + 2)
        if end < 0:
            return None
        if _decodes(blob[start : end + 2]):
            return blob[start : end + 2]
    return None


def carve_images(blob: bytes) -> Iterator[tuple[int, str, bytes]]:
    """(offset, format, bytes) of each complete WebP / PNG / JPEG stored uncompressed in a
    byte blob (e.g. a Qt .rcc bundle). Every slice is validated by decoding it with Pillow;
    images inside an image already carved (EXIF thumbnails) are not reported again."""
    carved_until = 0
    for match in _MAGIC.finditer(blob):
        start = match.start()
        if start < carved_until:
            continue
        head = match.group()
        fmt, cut = ("webp", _webp_at) if head.startswith(b"RIFF") else ("png", _png_at) if head.startswith(b"\x89") else ("jpg", _jpeg_at)
        data = cut(blob, start)
        if data and (fmt == "jpg" or _decodes(data)):  # _jpeg_at has decoded it already
            carved_until = start + len(data)
            yield start, fmt, data


# ---------------------------------------------------------------- filtering


def looks_like_photo(img: Image.Image, min_side: int = 64, min_colours: int = 1000, min_chroma: float = 4.0) -> bool:
    """Tell colour photos from drawings, icons and greyscale images.

    Drawings use few distinct colours: count them on a nearest-neighbour thumbnail (which
    adds no new colours) of the visible pixels; palette images hold at most 256 colours, so
    for them 200 is enough. `min_chroma` is the mean max-min channel spread.
    """
    if min(img.size) < min_side:
        return False
    thumb = img.copy()
    thumb.thumbnail((256, 256), Image.NEAREST)
    rgba = np.asarray(thumb.convert("RGBA"))
    pixels = rgba[..., :3][rgba[..., 3] > 128].astype(np.int32)
    if len(pixels) < min_side * min_side // 4:
        return False
    colours = len(np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]))
    chroma = float((pixels.max(1) - pixels.min(1)).mean())
    needed = min(min_colours, 200) if img.mode == "P" else min_colours
    return colours >= needed and chroma >= min_chroma


# ---------------------------------------------------------------- packages


GCOMPRIS_BUNDLES = ("categorization", "erase", "explore_farm_animals", "explore_monuments", "explore_world_animals")
TUXPAINT_DRAWINGS = re.compile(r"cartoon|symbols|alphabet|seasonal|roadsign|flags|money|shapes")


def _gcompris(files: dict[str, bytes]) -> Iterator[Candidate]:
    for bundle in GCOMPRIS_BUNDLES:
        path = f"usr/share/gcompris-qt/rcc/{bundle}.rcc"
        for offset, fmt, data in carve_images(files[path]):
            yield Candidate(f"gcompris-{bundle}", f"{path}@{offset}", data, fmt)


def _tuxpaint(files: dict[str, bytes]) -> Iterator[Candidate]:
    for path, data in sorted(files.items()):
        if not path.endswith(".png") or TUXPAINT_DRAWINGS.search(path) or path.endswith("_mirror.png"):
            continue  # mirrored copies are duplicates; PNGs beside an SVG are rendered drawings
        if path[: -len(".png")] + ".svg" in files:
            continue
        category = path.split("/stamps/")[1].split("/")[0]
        yield Candidate(f"tuxpaint-{category}", path, data, "png")


def _jpgs_in(class_of: Callable[[str], str], exclude: tuple[str, ...] = ()) -> Callable:
    def collect(files: dict[str, bytes]) -> Iterator[Candidate]:
        for path, data in sorted(files.items()):
            if path.lower().endswith(".jpg") and not any(word in path for word in exclude):
                yield Candidate(class_of(path), path, data, "jpg")

    return collect


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    licence: str
    prefix: str  # only files under this path are read
    collect: Callable[[dict[str, bytes]], Iterator[Candidate]]


PACKAGES = (
    DebPackage("gcompris-qt-data", "3.1-2", "GPL-3+", "usr/share/gcompris-qt/rcc/", _gcompris),
    DebPackage("tuxpaint-stamps-default", "2022.06.04-1", "GPL-2", "usr/share/tuxpaint/stamps/", _tuxpaint),
    DebPackage(
        "scratch", "1.4.0.6~dfsg1-6.1", "CC-BY-SA-3.0", "usr/share/scratch/Media/Backgrounds/",
        _jpgs_in(lambda p: "scratch-" + p.split("/Backgrounds/")[1].split("/")[0].lower()),
    ),
    DebPackage(
        "kalzium-data", "4:22.12.3-1", "GPL-2.0-or-later", "usr/share/kalzium/data/toolpics/",
        _jpgs_in(lambda p: "kalzium-labware"),
    ),
    DebPackage(
        "kphotoalbum", "5.9.1-1", "GPL-2+", "usr/share/kphotoalbum/demo/",
        _jpgs_in(lambda p: "kphotoalbum-demo", exclude=("CategoryImages", "qt-logo")),
    ),
    DebPackage(
        "palapeli-data", "4:22.12.3-1", "GPL-2+", "usr/share/palapeli/collection/",
        _jpgs_in(lambda p: "palapeli-puzzles"),
    ),
)


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, **kwargs)
    except FileNotFoundError:
        raise FetchError(f"`{cmd[0]}` not found: fetching the photo pool needs a Debian/Ubuntu system with apt") from None
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"`{' '.join(cmd)}` failed: {detail[0]}") from None


def download_deb(package: DebPackage, deb_dir: Path) -> Path:
    """The package's .deb in `deb_dir`, downloaded with `apt-get download` unless cached."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    for deb in sorted(deb_dir.glob(f"{package.name}_*.deb")):
        if _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.decode().strip() == package.version:
            return deb
    try:
        _run(["apt-get", "download", f"{package.name}={package.version}"], cwd=deb_dir)
    except FetchError as err:
        raise FetchError(f"{err} (is `apt-get update` done, with Debian bookworm sources?)") from None
    return download_deb(package, deb_dir)


def read_deb_files(deb: Path, prefix: str) -> dict[str, bytes]:
    """Regular files under `prefix` inside a .deb, read from `dpkg-deb --fsys-tarfile` in memory."""
    files: dict[str, bytes] = {}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isfile() and (name.startswith(prefix) or name.startswith("usr/share/doc/")):
                    files[name] = tar.extractfile(member).read()
    if proc.returncode:
        raise FetchError(f"dpkg-deb could not read {deb}")
    return files


# ---------------------------------------------------------------- the pool


@dataclass
class Photo:
    candidate: Candidate
    package: DebPackage
    data: bytes  # bytes written to disk
    ext: str
    size: tuple[int, int]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def to_photo(candidate: Candidate, package: DebPackage) -> Photo | None:
    """Decode, filter out non-photos, and pick the bytes to store (RGBA goes onto grey, as PNG)."""
    try:
        with Image.open(io.BytesIO(candidate.data)) as img:
            img.load()
            if not looks_like_photo(img):
                return None
            rgb = to_rgb(img)
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            keep_bytes = not has_alpha and img.mode == "RGB"
    except Exception as err:  # a broken file inside a package: skip it, say which
        logger.warning("skipping unreadable %s in %s (%s)", candidate.source_path, package.name, err)
        return None
    if keep_bytes:
        return Photo(candidate, package, candidate.data, candidate.ext, rgb.size)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return Photo(candidate, package, buf.getvalue(), "png", rgb.size)


def pixel_hash(photo: Photo) -> str:
    with Image.open(io.BytesIO(photo.data)) as img:
        rgb = to_rgb(img)
    return hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()


def dedupe(photos: list[Photo]) -> list[Photo]:
    """Drop photos whose decoded pixels equal an earlier one's (the same photo in two bundles)."""
    seen: set[str] = set()
    unique = []
    for photo in photos:
        key = pixel_hash(photo)
        if key not in seen:
            seen.add(key)
            unique.append(photo)
    return unique


def merge_small_classes(photos: list[Photo], min_size: int) -> dict[str, list[Photo]]:
    """Group by class; classes with fewer than `min_size` photos join `<source>-other`."""
    by_class: dict[str, list[Photo]] = defaultdict(list)
    for photo in photos:
        by_class[photo.candidate.class_name].append(photo)
    merged: dict[str, list[Photo]] = defaultdict(list)
    for name, members in by_class.items():
        target = name if len(members) >= min_size else name.split("-")[0] + "-other"
        merged[target] += members
    return dict(sorted(merged.items()))


def split_holdout(members: list[Photo], val_fraction: float) -> tuple[list[Photo], list[Photo]]:
    """Deterministic held-out split: the photos with the smallest sha256 go to val."""
    ordered = sorted(members, key=lambda p: p.sha256)
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) >= 2:
        n_val = max(n_val, 1)
    return ordered[n_val:], ordered[:n_val]


def file_name(photo: Photo) -> str:
    stem = Path(photo.candidate.source_path.split("@")[0]).stem
    offset = photo.candidate.source_path.partition("@")[2]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{stem}-{offset}" if offset else stem)
    return f"{stem}-{photo.sha256[:8]}.{photo.ext}"


def write_pool(by_class: dict[str, list[Photo]], out_dir: Path, val_fraction: float) -> list[dict]:
    """Write train/ and val/ ImageFolder trees plus manifest.jsonl into `out_dir`."""
    records = []
    for class_name, members in by_class.items():
        for split, photos in zip(("train", "val"), split_holdout(members, val_fraction)):
            for photo in photos:
                rel = Path(split) / class_name / file_name(photo)
                (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                (out_dir / rel).write_bytes(photo.data)
                records.append({
                    "path": rel.as_posix(), "split": split, "class": class_name,
                    "source_package": photo.package.name, "source_version": photo.package.version,
                    "source_path": photo.candidate.source_path, "licence": photo.package.licence,
                    "sha256": photo.sha256, "width": photo.size[0], "height": photo.size[1],
                })
    (out_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out_dir / "classes.json").write_text(json.dumps(list(by_class)))
    return records


def collect_photos(package: DebPackage, deb: Path, licence_dir: Path) -> list[Photo]:
    files = read_deb_files(deb, package.prefix)
    copyright_file = files.get(f"usr/share/doc/{package.name}/copyright")
    if copyright_file:
        licence_dir.mkdir(parents=True, exist_ok=True)
        (licence_dir / f"{package.name}.copyright").write_bytes(copyright_file)
    photos = [to_photo(c, package) for c in package.collect(files)]
    return [p for p in photos if p is not None]


def fetch_debian_photos(
    root: str | os.PathLike = DEFAULT_ROOT,
    val_fraction: float = 0.1,
    min_class_size: int = 5,
    force: bool = False,
    packages: tuple[DebPackage, ...] = PACKAGES,
) -> Path:
    """Build `root/debian-photos` (skipped when it exists, unless `force`); returns its path.

    The tree is built in a temporary folder and renamed into place, so an interrupted fetch
    leaves nothing half written. Downloaded .deb files are kept in `root/debs` for reruns.
    """
    root = Path(root).expanduser()
    out_dir = root / POOL_NAME
    if (out_dir / "manifest.jsonl").exists() and not force:
        logger.info("%s exists; pass force=True to rebuild", out_dir)
        return out_dir
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{POOL_NAME}.") as tmp:
        tmp_dir = Path(tmp) / POOL_NAME
        photos: list[Photo] = []
        for package in packages:
            deb = download_deb(package, root / "debs")
            found = collect_photos(package, deb, tmp_dir / "licences")
            logger.info("%s %s: %d photos", package.name, package.version, len(found))
            photos += found
        by_class = merge_small_classes(dedupe(photos), min_class_size)
        write_pool(by_class, tmp_dir, val_fraction)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    return out_dir


def class_counts(pool_dir: str | os.PathLike) -> dict[str, dict[str, int]]:
    """{class: {"train": n, "val": m}} from a pool's manifest."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"train": 0, "val": 0})
    for line in (Path(pool_dir) / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        counts[record["class"]][record["split"]] += 1
    return dict(sorted(counts.items()))


def predecode_pool(pool_dir: str | os.PathLike, size: int) -> list[Path]:
    """`train-<size>.npy` and `val-<size>.npy` (uint8, resized + center-cropped) beside the tree."""
    from .sources import predecode

    pool_dir = Path(pool_dir)
    return [predecode(pool_dir / split, size, pool_dir / f"{split}-{size}.npy") for split in ("train", "val")]

