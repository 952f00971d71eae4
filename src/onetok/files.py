"""Files: atomic writes, and the one cache folder for everything onetok downloads or builds.

The cache folder is $ONETOK_CACHE, default ~/.cache/onetok: downloaded weights at its top
level, datasets in `datasets/`. Checkpoints from the Hugging Face Hub stay in
huggingface_hub's own cache (HF_HOME), where other tools find them too.
Imports only the standard library, numpy and torch, so every layer may use it.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def cache_root() -> Path:
    """$ONETOK_CACHE, default ~/.cache/onetok (read on every call, so tests can point it elsewhere)."""
    return Path(os.environ.get("ONETOK_CACHE") or Path.home() / ".cache" / "onetok").expanduser()


def cached_file(name: str) -> Path:
    """Where the cache keeps (and looks for) the file `name`."""
    return cache_root() / name


def fetch_file(url: str, name: str | None = None, sha256: str | None = None, elsewhere: Iterable[Path] = ()) -> Path:
    """The file `name` (default: the url's last part): the cached copy, else the first existing path of
    `elsewhere`, else downloaded into the cache. A download is checked against `sha256` (a digest or a
    prefix of one) and lands whole or not at all. OSError when it cannot be fetched.
    """
    target = cached_file(name or url.rsplit("/", 1)[1])
    for path in [target, *elsewhere]:
        if path.is_file():
            return path
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch downloads to a temporary file and moves it into place
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash is a RuntimeError
        raise OSError(f"could not download {url} ({err})") from None
    return target


def download_state_dict(url: str, file_name: str | None = None, check_hash: bool = False) -> dict[str, torch.Tensor]:
    """The state dict at `url`, downloaded once into the cache folder; OSError when it cannot be fetched.

    `check_hash`: the file name carries a SHA-256 prefix (`name-<hex>.pth`, torchvision's convention).
    """
    name = file_name or url.rsplit("/", 1)[1]
    prefix = re.search(r"-([a-f0-9]+)\.", name) if check_hash else None
    return torch.load(fetch_file(url, name, prefix and prefix.group(1)), map_location="cpu", weights_only=True)
