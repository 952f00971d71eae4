import argparse

import numpy as np

from onetok.cli import datasets as datasets_cli
from onetok.cli import shards as shards_cli
from onetok.data import debian_photos as dp
from onetok.data.shards import ShardDataset


def _parse(module, argv):
    parser = argparse.ArgumentParser(prog="onetok")
    module.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_shards_make_cli(photo_folder, tmp_path, capsys):
    args = _parse(shards_cli, ["shards", "make", str(photo_folder), "-o", str(tmp_path / "out"), "--shard-size", "4"])
    assert shards_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "wrote 6 images (2 classes) into 2 shards" in out
    pattern = out.split("pattern: ")[1].strip()
    assert sum(1 for _ in ShardDataset(pattern)) == 6


def test_datasets_fetch_cli_reports_counts_and_predecodes(photo_folder, tmp_path, capsys):
    # an existing pool is not fetched again: build a tiny one by hand
    pool = tmp_path / "root" / dp.POOL_NAME
    records = []
    for split in ("train", "val"):
        (pool / split).parent.mkdir(parents=True, exist_ok=True)
        (pool / split).symlink_to(photo_folder, target_is_directory=True)
        records += [f'{{"class": "{c}", "split": "{split}"}}\n' for c in ("a", "a", "b")]
    (pool / "manifest.jsonl").write_text("".join(records))
    args = _parse(datasets_cli, ["datasets", "fetch", "debian-photos", "--root", str(tmp_path / "root"), "--predecode", "24"])
    assert datasets_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "a          2    2\n" in out and "total      3    3   (2 classes)" in out
    assert np.load(pool / "train-24.npy").shape == (6, 24, 24, 3)
