"""`onetok shards make` and `onetok datasets fetch`, run through the `onetok` entry point."""
import numpy as np
import pytest

from onetok.cli.main import main
from onetok.data import debian_photos as dp
from onetok.data.shards import ShardDataset
from onetok.files import cache_root


def test_shards_make_cli(photo_folder, tmp_path, capsys):
    assert main(["shards", "make", str(photo_folder), "-o", str(tmp_path / "out"), "--shard-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote 6 images (2 classes) into 2 shards" in out
    pattern = out.split("pattern: ")[1].strip()
    assert sum(1 for _ in ShardDataset(pattern)) == 6
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["shard-00000.tar", "shard-00001.tar"]


def test_shards_make_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["shards", "make", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onetok: error:") and "\n" not in err


def test_datasets_fetch_cli_reports_counts_and_predecodes(photo_folder, tmp_path, capsys):
    # an existing pool is not fetched again: build a tiny one by hand
    pool = tmp_path / "root" / dp.POOL_NAME
    records = []
    for split in ("train", "val"):
        (pool / split).parent.mkdir(parents=True, exist_ok=True)
        (pool / split).symlink_to(photo_folder, target_is_directory=True)
        records += [f'{{"class": "{c}", "split": "{split}"}}\n' for c in ("a", "a", "b")]
    (pool / "manifest.jsonl").write_text("".join(records))
    argv = ["datasets", "fetch", "debian-photos", "--root", str(tmp_path / "root"), "--predecode", "24"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "a          2    2\n" in out and "total      3    3   (2 classes)" in out
    assert np.load(pool / "train-24.npy").shape == (6, 24, 24, 3)


CACHED_POOL_ROOT = cache_root() / "datasets"


@pytest.mark.skipif(not (CACHED_POOL_ROOT / dp.POOL_NAME / "manifest.jsonl").exists(),
                    reason="the debian-photos pool is not fetched on this machine")
def test_datasets_fetch_on_the_fetched_pool_is_quick_and_offline(capsys, monkeypatch):
    # a fetched pool is reported, never downloaded again: apt-get must not be reached
    monkeypatch.setattr(dp, "download_deb", lambda *a, **k: pytest.fail("fetched pool was downloaded again"))
    assert main(["datasets", "fetch", "debian-photos", "--root", str(CACHED_POOL_ROOT)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["class", "train", "val"]
    total = lines[-1].split()
    assert total[0] == "total" and int(total[1]) > 100 and int(total[2]) > 10
