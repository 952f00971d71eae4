"""Every command and sub-command is reachable through the `onetok` entry point."""
import argparse

import pytest

from onetok.cli.main import build_parser, main

# every command line users can type, up to its last sub-command; the walk below must find exactly these
COMMANDS = [
    ("app",),
    ("datasets",),
    ("datasets", "fetch"),
    ("detokenize",),
    ("eval",),
    ("eval", "recon"),
    ("eval", "samples"),
    ("eval", "stats"),
    ("eval", "throughput"),
    ("generate",),
    ("info",),
    ("pretokenize",),
    ("reconstruct",),
    ("sample",),
    ("shards",),
    ("shards", "make"),
    ("tokenize",),
    ("train",),
]


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    """(path, parser) for every sub-parser below `parser`, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield prefix + (name,), child
                yield from _subcommands(child, prefix + (name,))


def _leaves(parser):
    return [path for path, child in _subcommands(parser)
            if not any(isinstance(a, argparse._SubParsersAction) for a in child._actions)]


def test_the_table_lists_every_command():
    assert sorted(path for path, _ in _subcommands(build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_exits_0_and_names_the_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage.startswith(f"usage: onetok {' '.join(command)}")


@pytest.mark.parametrize("command", _leaves(build_parser()), ids=" ".join)
def test_every_leaf_command_has_a_handler(command):
    """A sub-command without a handler would print the top-level help and exit 2 (the bug this guards)."""
    parser = build_parser()
    child = dict(_subcommands(parser))[command]
    assert callable(child.get_default("func")), f"`onetok {' '.join(command)}` sets no handler"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: onetok")
