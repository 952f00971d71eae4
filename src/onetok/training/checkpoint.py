"""Atomic training checkpoints on top of accelerate's save_state / load_state.

A checkpoint is the folder `checkpoint-{step}` holding accelerate's state (models, optimizers, grad
scaler, per-process RNG states, registered stateful objects: schedulers, EMA, data position, loss
modules), the unwrapped weights under `unwrapped_model/`, and last a completion marker
`checkpoint.json`. Everything is written into `.tmp-checkpoint-{step}` first and renamed when complete,
so a crash mid-save never leaves a `checkpoint-*` folder behind; a `checkpoint-*` folder without the
marker (e.g. a partial copy) is ignored with a warning.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn

from onetok.files import atomic_write_bytes
from onetok.errors import CheckpointError

PREFIX = "checkpoint-"
MARKER = "checkpoint.json"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


class IncompleteCheckpointWarning(UserWarning):
    """A checkpoint folder without its completion marker was skipped."""


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first."""
    root = Path(root)
    found = []
    for path in root.glob(f"{PREFIX}*") if root.is_dir() else []:
        match = _NAME.match(path.name)
        if not match or not path.is_dir():
            continue
        if not (path / MARKER).is_file():
            warnings.warn(f"ignoring {path}: no {MARKER} marker (partial checkpoint)", IncompleteCheckpointWarning)
            continue
        found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(
    accelerator: Accelerator,
    root: str | os.PathLike,
    step: int,
    unwrapped: dict[str, nn.Module],
    keep_last: int | None = None,
) -> Path:
    """Save the full training state as `root/checkpoint-{step}`; call on every process."""
    root = Path(root)
    final, tmp = root / f"{PREFIX}{step}", root / f".tmp-{PREFIX}{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left over by a crash during an earlier save
    accelerator.wait_for_everyone()

    accelerator.save_state(str(tmp))
    for name, model in unwrapped.items():
        weights = accelerator.get_state_dict(model)  # a collective under FSDP: every process calls it
        if accelerator.is_main_process:
            (tmp / "unwrapped_model").mkdir(exist_ok=True)
            weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
            save_file(weights, tmp / "unwrapped_model" / f"{name}.safetensors")
    accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        marker = {"step": step, "num_processes": accelerator.num_processes, "time": time.time()}
        atomic_write_bytes(tmp / MARKER, json.dumps(marker).encode())
        _replace_dir(tmp, final)
        if keep_last is not None:
            prune_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike) -> int:
    """Restore the state saved by `save_checkpoint` (same objects registered, same order); returns its step."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER})")
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run: {first_line}") from err
    marker = json.loads((path / MARKER).read_text())
    if marker["num_processes"] != accelerator.num_processes:
        warnings.warn(f"{path} was saved by {marker['num_processes']} processes and is resumed by "
                      f"{accelerator.num_processes}: the data order will differ from an uninterrupted run")
    return int(marker["step"])


def prune_checkpoints(root: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints."""
    for _, path in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def preserve_rng() -> Iterator[None]:
    """Run the body without disturbing the python / numpy / torch RNG streams of training.

    Previews, logging and saving happen inside it, so that a run with previews every 10 steps draws
    the same random numbers for training as one without (and a resumed run as an uninterrupted one).
    """
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename src to dst; an existing dst is moved aside first and removed after."""
    trash = None
    if dst.exists():
        trash = dst.with_name(f".old-{dst.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(dst, trash)
    os.replace(src, dst)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
