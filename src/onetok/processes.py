"""Which process this is, how many were launched, and the seeds derived from a run's seed.

One rule for the device of launched processes: where no GPU-like device exists they join
through gloo on the CPU. One seed mixer: `mix_seed(seed, *keys)` gives well-mixed 63-bit
seeds for a sample, an epoch or a process, so nothing depends on which others share a batch.
"""
from __future__ import annotations

import os

import numpy as np
import torch


def launched_processes() -> int:
    """How many processes `accelerate launch` / torchrun started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_only() -> bool:
    """True where there is no CUDA, XPU or MPS device: processes then run and talk on the CPU."""
    return not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
                or torch.backends.mps.is_available())


def process_state():
    """Accelerate's view of this process (one process unless launched by `accelerate launch` or torchrun)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_only())


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed (as set up by Accelerate),
    else the RANK / WORLD_SIZE variables of a launcher, else a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), launched_processes()


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integers (e.g. run seed, epoch, process, position)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a run seeded `seed`."""
    return mix_seed(seed, index)
