"""`onetok pretokenize`: run a tokenizer over a dataset once, into token shards (data/tokens.py).

The work is cut into shards: fixed ranges of `--shard-size` source images, or one per WebDataset
tar. Process r of R (`accelerate launch`) tokenizes shards r, r+R, ... and writes each one itself;
shards already on disk are skipped, so an interrupted run resumes where it stopped. A tar that cannot
be read to its end (truncated, scrambled) is not written: the run names it and fails, and a rerun
after repairing it completes the folder. When every shard exists, the main process writes
manifest.json with the tokenizer's fingerprint.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..files import atomic_write_bytes
from ..data.shards import ShardDataset
from ..data.datasets import build_dataset
from ..data.tokens import finished_shards, model_fingerprint, save_token_shard, write_token_manifest
from ..data.transforms import EvalTransform
from ..precision import autocast
from ..processes import process_state
from ..errors import CorruptShardError, PretokenizeError

SETTINGS = "pretokenize.json"


def work_units(spec: str, size: int, shard_size: int) -> tuple[list[str], list[Dataset]]:
    """(class names, one source per token shard), images center-cropped to `size` (SPEC 4.6)."""
    transform = EvalTransform(size)
    dataset = build_dataset(spec, transform=transform)
    if isinstance(dataset, ShardDataset):
        units = [ShardDataset([url], transform=transform, rank=0, world_size=1, classes=dataset.classes, strict=True)
                 for url in dataset.urls]
    else:
        units = [Subset(dataset, range(start, min(start + shard_size, len(dataset))))
                 for start in range(0, len(dataset), shard_size)]
    return list(dataset.classes), units


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to mix shards made with other settings into `out`; record the settings otherwise."""
    path = out / SETTINGS
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in settings if previous.get(k) != settings[k])
        if changed:
            raise PretokenizeError(f"{out} holds tokens made with other settings ({', '.join(changed)} differ); "
                                   "use another output folder or delete it")
    else:
        atomic_write_bytes(path, json.dumps(settings, indent=1).encode())


@torch.inference_mode()
def tokenize_unit(tokenizer, unit: Dataset, flip: bool, batch_size: int, workers: int, precision: str,
                  progress: tqdm) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids (n, K) and labels (n,) of one shard; with `flip`, each batch's flipped copies follow its originals."""
    device = next(tokenizer.parameters()).device
    # a folder/list/array dataset hands out a neighbour in place of an unreadable image: drop those
    drop_substitutes = not isinstance(unit, ShardDataset)
    ids, labels = [], []
    for batch in DataLoader(unit, batch_size=batch_size, num_workers=workers):
        keep = batch["skipped"] == 0 if drop_substitutes else torch.ones_like(batch["label"], dtype=torch.bool)
        progress.update(len(batch["image"]))
        if not keep.any():
            continue
        images = batch["image"][keep].to(device)
        views = [images, images.flip(-1)] if flip else [images]
        with autocast(precision, device):
            ids += [tokenizer.tokenize(view).cpu() for view in views]
        labels += [batch["label"][keep]] * len(views)
    k = tokenizer.config.num_latent_tokens
    return (torch.cat(ids) if ids else torch.empty(0, k, dtype=torch.long),
            torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))


def check_sizes(shard_size: int, batch_size: int) -> None:
    for name, value in (("--shard-size", shard_size), ("--batch-size", batch_size)):
        if value < 1:
            raise PretokenizeError(f"{name} must be at least 1, got {value}")


def unit_size(unit: Dataset) -> int | None:
    return len(unit) if isinstance(unit, Subset) else None


def pretokenize(tokenizer, data: str, out: str | os.PathLike, flip: bool = False, batch_size: int = 64,
                shard_size: int = 10_000, workers: int = 0, precision: str = "fp32",
                state=None) -> dict | None:
    """Tokenize `data` into `out`; returns the manifest on the main process (None elsewhere)."""
    if tokenizer.config.is_vae:
        raise PretokenizeError("pretokenize needs a VQ tokenizer (discrete ids); this one is a VAE")
    check_sizes(shard_size, batch_size)
    state = state or process_state()
    out = Path(out)
    cfg = tokenizer.config
    fingerprint = model_fingerprint(tokenizer)
    class_names, units = work_units(data, cfg.crop_size, shard_size)
    settings = {"tokenizer_hash": fingerprint, "source": str(data), "flip": flip, "shard_size": shard_size,
                "num_shards": len(units)}
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, settings)
    state.wait_for_everyone()
    check_settings(out, settings)  # every process: the main one may have just written it

    done = set(finished_shards(out))
    broken: dict[int, str] = {}  # this process's unreadable tars: shard index -> "path: reason"
    mine = [i for i in range(state.process_index, len(units), state.num_processes) if i not in done]
    sizes = [unit_size(units[i]) for i in mine]
    total = None if None in sizes else sum(sizes)
    with tqdm(total=total, unit="img", desc=f"pretokenize [{state.process_index + 1}/{state.num_processes}]",
              disable=not state.is_main_process, dynamic_ncols=True) as progress:
        for index in mine:
            try:
                ids, labels = tokenize_unit(tokenizer, units[index], flip, batch_size, workers, precision, progress)
            except CorruptShardError as err:  # (from a DataLoader worker: with its traceback appended)
                broken[index] = str(err).strip().splitlines()[-1].removeprefix(f"{CorruptShardError.__module__}.CorruptShardError: ")
                continue
            save_token_shard(out, index, ids, labels, cfg.codebook_size)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    missing = sorted(set(range(len(units))) - set(finished_shards(out)))
    if missing:
        names = [broken.get(i) or (units[i].urls[0] if isinstance(units[i], ShardDataset) else f"shard {i}")
                 for i in missing]
        raise PretokenizeError(f"{len(missing)} of {len(units)} shards were not written to {out}: "
                               f"{'; '.join(names[:10])}{' ...' if len(names) > 10 else ''}; the others are done: "
                               "repair or replace these and run pretokenize again to complete the folder")
    return write_token_manifest(out, fingerprint, cfg.num_latent_tokens, cfg.codebook_size, class_names,
                                extra={"source": str(data), "flip": flip})


def cmd_pretokenize(args) -> int:
    from ..pipeline import Pipeline

    check_sizes(args.shard_size, args.batch_size)  # before the tokenizer loads
    state = process_state()
    # torch fp32 / bf16 only: tokens for training come from the float weights, in this module's own loop
    pipe = Pipeline.from_pretrained(args.tokenizer, generator=False, device=args.device or state.device,
                                    precision=args.precision)
    started = time.perf_counter()
    manifest = pretokenize(pipe.tokenizer, args.data, args.output, flip=args.flip, batch_size=args.batch_size,
                           shard_size=args.shard_size, workers=args.workers, precision=pipe.precision, state=state)
    if manifest is not None:
        seconds = time.perf_counter() - started
        print(f"{manifest['count']} token sequences ({len(manifest['class_names'])} classes) in "
              f"{len(manifest['shards'])} shards -> {args.output} ({seconds:.1f} s)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("pretokenize", help="tokenize a dataset once into token shards for generator training")
    p.add_argument("data", help="image folder (class subfolders), file list, .npy array or WebDataset shards")
    p.add_argument("--tokenizer", help="tokenizer checkpoint folder, preset or hub id (default: the shipped model)")
    p.add_argument("-o", "--output", required=True, help="token folder to write (resumes an unfinished one)")
    p.add_argument("--flip", action="store_true", help="also store each image's horizontally flipped copy")
    p.add_argument("--shard-size", type=int, default=10_000, help="source images per token shard")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes decoding images")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default: the ids an fp32 tokenizer gives) or bf16 autocast")
    p.add_argument("--device", help="default: this process's accelerator device")
    p.set_defaults(func=cmd_pretokenize)
