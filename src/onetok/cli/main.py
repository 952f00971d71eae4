"""`onetok` command line: one sub-command per job; user errors exit 2 with one line."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# modules under onetok.cli that contribute sub-commands through add_parser(subparsers)
COMMAND_MODULES = ["core", "app", "shards", "datasets", "train", "eval", "pretokenize", "sample", "demo", "model_card",
                   "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onetok", description="TiTok 1D image tokenizers and MaskGIT generators")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"onetok.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"onetok.cli.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(subparsers)
    return parser


def user_error_types() -> tuple[type[BaseException], ...]:
    return (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except user_error_types() as err:
        if os.environ.get("ONETOK_DEBUG"):
            raise
        print(f"onetok: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onetok: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
