"""Run a per-batch function over a dataset split across processes, and gather in item order.

Batches are fixed by the item order (batch b holds items b*B .. b*B+B-1) and dealt out
round-robin to the processes, so every item is computed in the same batch whatever the
number of processes: gathered results are identical to a single-process run.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from onetok.processes import process_state


def global_batches(num_items: int, batch_size: int) -> list[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return [list(range(start, min(start + batch_size, num_items))) for start in range(0, num_items, batch_size)]


def sharded_map(
    dataset: Dataset,
    batch_size: int,
    batch_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, np.ndarray]],
    num_workers: int = 0,
    desc: str = "evaluating",
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """batch_fn(items, indices) -> arrays whose first axis is the batch; returns them (plus
    "index") for all items, in dataset order, on every process. The dataset yields (item, index)."""
    state = process_state()
    batches = global_batches(len(dataset), batch_size)[state.process_index :: state.num_processes]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers)
    parts: dict[str, list[np.ndarray]] = {}
    bar = tqdm(loader, desc=desc, disable=not (progress and state.is_main_process), unit="batch")
    for items, indices in bar:
        results = {**batch_fn(items, indices), "index": indices.numpy()}
        for key, value in results.items():
            parts.setdefault(key, []).append(np.asarray(value))
    local = {key: np.concatenate(values) for key, values in parts.items()}
    return _gather_in_order(local, state)


def _gather_in_order(local: dict[str, np.ndarray], state) -> dict[str, np.ndarray]:
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        shards = [shard for shard in gather_object([local]) if shard]
    else:
        shards = [local] if local else []
    if not shards:
        return {}
    merged = {key: np.concatenate([s[key] for s in shards]) for key in shards[0]}
    order = np.argsort(merged["index"], kind="stable")
    return {key: value[order] for key, value in merged.items()}


def broadcast_from_main(obj):
    """The main process's object, on every process."""
    state = process_state()
    if state.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]
