"""Atomic training checkpoints on top of accelerate's save_state / load_state.

A checkpoint is the folder `checkpoint-{step}` holding accelerate's state (models, optimizers, grad
scaler, per-process RNG states, registered stateful objects: schedulers, EMA, data position, loss
modules), the unwrapped weights under `unwrapped_model/`, and last a completion marker
`checkpoint.json`. Everything is written into `.tmp-checkpoint-{step}` first and renamed when complete,
so a crash mid-save never leaves a `checkpoint-*` folder behind; a `checkpoint-*` folder without the
marker (e.g. a partial copy) is ignored with a warning. Pruning renames a checkpoint to a hidden name
before deleting it, so a crash mid-prune leaves only a hidden husk, removed by the next save.

`OutputLock` keeps one run per output folder.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import random
import re
import shutil
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from onetok.files import atomic_write_bytes
from onetok.errors import CheckpointError, OutputInUseError

PREFIX = "checkpoint-"
MARKER = "checkpoint.json"
LOCK = ".train.lock"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
_HUSK = re.compile(rf"^\.(tmp|old|pruned)-{PREFIX}\d+$")  # hidden leftovers of an interrupted save / prune

log = logging.getLogger("onetok.training")


class IncompleteCheckpointWarning(UserWarning):
    """A checkpoint folder without its completion marker was skipped."""


class InexactResumeWarning(UserWarning):
    """A resume that cannot continue exactly as the uninterrupted run would have."""


class OutputLock:
    """An exclusive lock on `root/.train.lock`, held while a run trains in `root`.

    It is a flock, so the kernel drops it when its process dies however it dies; the file names
    the holder. A file that still names a holder while nobody holds the lock was left by a
    killed run: it is taken over, with a warning saying so.
    """

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self._file.close()
            raise OutputInUseError(f"{self.path.parent} is in use by a running training ({holder or 'unknown process'}); "
                                   "wait for it to finish or use another output_dir") from None
        previous = self._holder()
        if previous:
            log.warning("taking over %s: the run that held it (%s) is no longer running", self.path, previous)
        self._file.truncate(0)
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._file.flush()

    def _holder(self) -> str:
        self._file.seek(0)
        return self._file.read().strip()

    def release(self) -> None:
        if self._file.closed:
            return
        self._file.truncate(0)  # the file stays (deleting it would race a run opening it)
        self._file.close()


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
    settings: dict | None = None,
) -> Path:
    """Save the full training state as `root/checkpoint-{step}`; call on every process.
    `settings` (e.g. the batch size) go into the marker; `load_checkpoint` compares them."""
    root = Path(root)
    final, tmp = root / f"{PREFIX}{step}", root / f".tmp-{PREFIX}{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        remove_husks(root)  # left over by a crash during an earlier save or prune
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
        marker = {"step": step, "num_processes": accelerator.num_processes, "time": time.time(), **(settings or {})}
        atomic_write_bytes(tmp / MARKER, json.dumps(marker).encode())
        _replace_dir(tmp, final)
        if keep_last is not None:
            prune_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str | os.PathLike, expected: dict | None = None) -> int:
    """Restore the state saved by `save_checkpoint` (same objects registered, same order); returns its step.

    Warns (InexactResumeWarning) when the resume cannot continue exactly: the process's random
    states are unreadable, or `expected` settings differ from the ones recorded at save time.
    """
    path = Path(path)
    if not (path / MARKER).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER})")
    random_states = path / f"random_states_{accelerator.process_index}.pkl"
    try:
        torch.load(random_states, weights_only=False)  # accelerate skips unreadable ones silently
    except Exception as err:  # noqa: BLE001 - whatever unpickling raises, the states are lost
        warnings.warn(f"{random_states} is unreadable ({_first_line(err)}): the random streams start afresh, "
                      "so this resume will not match an uninterrupted run", InexactResumeWarning)
    try:
        accelerator.load_state(str(path))
    except (SafetensorError, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"checkpoint {path} is damaged ({_first_line(err)}); delete it to resume "
                              "from the one before") from err
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this run: {_first_line(err)}") from err
    marker = json.loads((path / MARKER).read_text())
    if marker["num_processes"] != accelerator.num_processes:
        warnings.warn(f"{path} was saved by {marker['num_processes']} processes and is resumed by "
                      f"{accelerator.num_processes}: the data order will differ from an uninterrupted run",
                      InexactResumeWarning)
    for name, value in (expected or {}).items():
        if name != "num_processes" and marker.get(name, value) != value:
            warnings.warn(f"{path} was saved with training.{name} {marker[name]} and is resumed with {value}: "
                          "the data order and the losses will differ from an uninterrupted run", InexactResumeWarning)
    return int(marker["step"])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def prune_checkpoints(root: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints (each renamed to a hidden name first)."""
    for _, path in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        husk = path.with_name(f".pruned-{path.name}")
        os.replace(path, husk)
        shutil.rmtree(husk, ignore_errors=True)


def remove_husks(root: str | os.PathLike) -> None:
    """Delete the hidden folders an interrupted save or prune left in `root`."""
    for path in Path(root).iterdir() if Path(root).is_dir() else []:
        if _HUSK.match(path.name) and path.is_dir():
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
