"""`onetok shards make FOLDER -o OUTDIR`: convert a folder of images into WebDataset tar shards."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("shards", help="WebDataset tar shards")
    commands = parser.add_subparsers(dest="shards_command", required=True)
    make = commands.add_parser("make", help="convert a folder (ImageFolder layout) or a file list into shards")
    make.add_argument("source", type=Path, help="folder of images (first-level subfolders are classes) or .txt list")
    make.add_argument("-o", "--out", type=Path, required=True, help="output folder for the .tar shards")
    make.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: %(default)s)")
    make.add_argument("--prefix", default="shard", help="shard file names: PREFIX-00000.tar, ...")
    make.add_argument("--no-shuffle", action="store_true", help="keep the sorted file order instead of shuffling")
    make.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    make.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from onetok.data.shards import make_shards

    result = make_shards(args.source, args.out, args.shard_size, args.prefix, not args.no_shuffle, args.seed)
    shards = result["shards"]
    print(f"wrote {result['written']} images ({len(result['classes'])} classes) into {len(shards)} shards in {args.out}")
    if shards:
        print(f"pattern: {Path(shards[0]).parent}/{args.prefix}-{{00000..{len(shards) - 1:05d}}}.tar")
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} unreadable images: " + ", ".join(result["skipped"][:5]))
    return 0
