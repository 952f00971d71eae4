"""`onetok datasets fetch debian-photos`: build the offline photo pool in a cache folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from onetok.data.debian_photos import DEFAULT_ROOT

    parser = subparsers.add_parser("datasets", help="fetch datasets that install offline")
    commands = parser.add_subparsers(dest="datasets_command", required=True)
    fetch = commands.add_parser("fetch", help="download and build a dataset in the cache folder")
    fetch.add_argument("name", choices=["debian-photos"], help="which dataset")
    fetch.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="cache folder (default: %(default)s)")
    fetch.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of each class")
    fetch.add_argument("--min-class-size", type=int, default=5, help="smaller classes are merged into <source>-other")
    fetch.add_argument("--predecode", type=int, action="append", default=[], metavar="SIZE",
                       help="also write uint8 train-SIZE.npy / val-SIZE.npy arrays (repeatable)")
    fetch.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    fetch.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from onetok.data.debian_photos import class_counts, fetch_debian_photos, predecode_pool

    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pool = fetch_debian_photos(args.root, args.val_fraction, args.min_class_size, force=args.force)
    counts = class_counts(pool)
    width = max(len("total"), *(len(name) for name in counts))
    print(f"{'class':<{width}}  train  val")
    for name, split in counts.items():
        print(f"{name:<{width}}  {split['train']:5d}  {split['val']:3d}")
    total_train = sum(c["train"] for c in counts.values())
    total_val = sum(c["val"] for c in counts.values())
    print(f"{'total':<{width}}  {total_train:5d}  {total_val:3d}   ({len(counts)} classes) in {pool}")
    for size in args.predecode:
        for path in predecode_pool(pool, size):
            print(f"wrote {path}")
    return 0
