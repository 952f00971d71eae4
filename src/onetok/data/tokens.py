"""Token shards: a dataset turned into TiTok token ids once, for generator training.

Layout of a token folder:
    tokens-00000.npy   (n, K) ids, uint16 when the codebook has <= 65536 codes, else int32
    labels-00000.npy   (n,) int64 class labels
    ...
    manifest.json      tokenizer fingerprint, num_tokens, codebook_size, count, class_names

Shard i holds a fixed range of the source dataset, so an interrupted pretokenize run keeps its
finished shards (`finished_shards`) and redoes only the others. A shard counts as finished
once its tokens file exists: it is written atomically, after its labels, and only once its
source was read to the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..files import atomic_save_npy, atomic_write_bytes
from ..errors import TokenDatasetError, TokenizerMismatchError

MANIFEST = "manifest.json"
_SHARD = re.compile(r"tokens-(\d{5})\.npy$")


def tokenizer_fingerprint(config: dict, weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the config as canonical JSON (sorted keys, no spaces) and of a sample of the weights:
    each tensor's name, shape and first and last 1024 values (as float32). Equal tokenizers hash
    equal; a retrained one with the same config does not; hashing a large model takes milliseconds."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode())
    for name in sorted(weights):
        values = weights[name].detach().flatten()
        digest.update(f"{name}{tuple(values.shape)}".encode())
        for part in (values[:1024], values[-1024:]):
            digest.update(part.float().cpu().numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(model: torch.nn.Module) -> str:
    """`tokenizer_fingerprint` of a loaded model (a tokenizer, or any onetok model with a config)."""
    return tokenizer_fingerprint(model.config.to_dict(), model.state_dict())


def token_dtype(codebook_size: int) -> np.dtype:
    return np.dtype(np.uint16) if codebook_size <= 2**16 else np.dtype(np.int32)


def shard_paths(root: Path, index: int) -> tuple[Path, Path]:
    return root / f"tokens-{index:05d}.npy", root / f"labels-{index:05d}.npy"


def save_token_shard(root: str | os.PathLike, index: int, ids: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | Sequence[int], codebook_size: int) -> Path:
    """Write shard `index`: ids (n, K) and labels (n,). Returns the tokens file."""
    ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if ids.ndim != 2 or len(ids) != len(labels):
        raise TokenDatasetError(f"expected ids (n, K) and n labels, got {ids.shape} and {labels.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= codebook_size):
        raise TokenDatasetError(f"token ids must lie in [0, {codebook_size}), got [{ids.min()}, {ids.max()}]")
    tokens_path, labels_path = shard_paths(Path(root), index)
    atomic_save_npy(labels_path, labels)
    atomic_save_npy(tokens_path, ids.astype(token_dtype(codebook_size)))
    return tokens_path


def finished_shards(root: str | os.PathLike) -> list[int]:
    """Indices of the shards whose tokens file exists (complete, being written atomically)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _SHARD.match(p.name)))


def write_token_manifest(
    root: str | os.PathLike,
    tokenizer_hash: str,
    num_tokens: int,
    codebook_size: int,
    class_names: Sequence[str],
    extra: dict | None = None,
) -> dict:
    """Describe the finished shards in `manifest.json` (written atomically, last)."""
    root = Path(root)
    shards = []
    for index in finished_shards(root):
        tokens = np.load(shard_paths(root, index)[0], mmap_mode="r")
        if tokens.shape[1] != num_tokens:
            raise TokenDatasetError(f"shard {index} has {tokens.shape[1]} tokens per image, expected {num_tokens}")
        shards.append({"index": index, "count": int(tokens.shape[0])})
    manifest = {
        "tokenizer_hash": tokenizer_hash,
        "num_tokens": num_tokens,
        "codebook_size": codebook_size,
        "dtype": token_dtype(codebook_size).name,
        "count": sum(s["count"] for s in shards),
        "class_names": list(class_names),
        "shards": shards,
        **(extra or {}),
    }
    atomic_write_bytes(root / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def read_token_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise TokenDatasetError(f"{root}: no {MANIFEST}: not a token folder, or pretokenize has not finished")
    return json.loads(path.read_text())


class TokenDataset(Dataset):
    """Token shards, memory-mapped on first use (so workers share pages, nothing loads up front).

    Items are `(ids, label)`: a LongTensor (K,) and an int. Give `expected_hash` (the
    fingerprint of the generator's tokenizer) to refuse tokens made by another tokenizer.
    """

    def __init__(self, root: str | os.PathLike, expected_hash: str | None = None):
        self.root = Path(root)
        self.manifest = read_token_manifest(self.root)
        found = self.manifest["tokenizer_hash"]
        if expected_hash is not None and found != expected_hash:
            raise TokenizerMismatchError(
                f"{self.root}: tokens were made by tokenizer {found[:12]}, but this generator expects "
                f"tokenizer {expected_hash[:12]}; pretokenize the data again with the generator's tokenizer"
            )
        counts = [s["count"] for s in self.manifest["shards"]]
        self.shard_indices = [s["index"] for s in self.manifest["shards"]]
        self.offsets = np.cumsum([0, *counts])
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def num_tokens(self) -> int:
        return self.manifest["num_tokens"]

    @property
    def codebook_size(self) -> int:
        return self.manifest["codebook_size"]

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizer_hash(self) -> str:
        return self.manifest["tokenizer_hash"]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # each worker maps the files itself

    def _shard(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        if position not in self._arrays:
            tokens_path, labels_path = shard_paths(self.root, self.shard_indices[position])
            try:
                self._arrays[position] = (np.load(tokens_path, mmap_mode="r"), np.load(labels_path, mmap_mode="r"))
            except FileNotFoundError as err:
                raise TokenDatasetError(f"{self.root}: shard file {Path(err.filename).name} listed in the manifest is missing") from None
        return self._arrays[position]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} token sequences")
        index %= len(self)
        position = int(np.searchsorted(self.offsets, index, side="right")) - 1
        tokens, labels = self._shard(position)
        row = index - int(self.offsets[position])
        return torch.from_numpy(tokens[row].astype(np.int64)), int(labels[row])
