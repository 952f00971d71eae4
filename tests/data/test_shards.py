import io
import json
import logging
import tarfile

import pytest
import torch
from torch.utils.data import DataLoader

from onetok.data import sources
from onetok.data.images import load_image
from onetok.data.shards import ShardDataset, expand_shard_spec, make_shards
from onetok.data.datasets import build_dataset
from onetok.data.sources import DatasetError, scan_folder
from onetok.data.transforms import EvalTransform


class KeyedShards(ShardDataset):
    """Test helper: the label becomes (label, key), the key being the index in the folder scan."""

    def _decode(self, raw, where):
        img, label = super()._decode(raw, where)
        return img, (label, int(raw["__key__"]))


def test_folder_to_shards_to_loader_gives_the_same_images(photo_folder, tmp_path):
    result = make_shards(photo_folder, tmp_path / "shards", shard_size=4)
    assert len(result["shards"]) == 2 and result["written"] == 6 and not result["skipped"]
    assert json.loads((tmp_path / "shards" / "classes.json").read_text()) == ["a", "b"]
    with tarfile.open(result["shards"][0]) as tar:
        exts = {name.split(".", 1)[1] for name in tar.getnames()}
    assert exts <= {"jpg", "png", "cls"}

    samples, _ = scan_folder(photo_folder)
    shards = KeyedShards(str(tmp_path / "shards" / "shard-{00000..00001}.tar"), transform=EvalTransform(64))
    assert shards.classes == ["a", "b"]
    got = {s["label"][1]: s for s in shards}
    assert sorted(got) == list(range(6))
    for key, sample in got.items():
        path, label = samples[key]
        assert sample["label"][0] == label
        assert torch.equal(sample["image"], load_image(path, 64))  # pixels identical to the folder's


def test_build_dataset_picks_shards(photo_folder, tmp_path):
    make_shards(photo_folder, tmp_path / "shards", shard_size=4)
    for spec in (tmp_path / "shards", str(tmp_path / "shards" / "shard-00000.tar"), [str(tmp_path / "shards" / "shard-00001.tar")]):
        assert isinstance(build_dataset(spec), ShardDataset)
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(str(tmp_path / "shards" / "shard-{00000..00009}.tar"))


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_corrupt_image_in_the_middle_is_skipped_and_reported(photo_folder, tmp_path, caplog):
    samples, _ = scan_folder(photo_folder)
    members = []
    for i, (path, label) in enumerate(samples):
        members += [(f"{i:04d}.png", open(path, "rb").read()), (f"{i:04d}.cls", str(label).encode())]
        if i == 2:
            members += [("0002x.jpg", b"\xff\xd8\xff truncated"), ("0002x.cls", b"0")]
    _tar(tmp_path / "mixed.tar", members)
    before = sources.skip_log.count
    with caplog.at_level(logging.WARNING, logger="onetok.data"):
        batches = list(DataLoader(ShardDataset(str(tmp_path / "mixed.tar"), transform=EvalTransform(32)), batch_size=2))
    assert sum(len(b["label"]) for b in batches) == 6  # every good image, and training went on
    assert sum(int(b["skipped"].sum()) for b in batches) == 1
    assert "mixed.tar:0002x" in caplog.text
    assert sources.skip_log.count == before + 1


def test_make_shards_skips_unreadable_files(photo_folder, tmp_path):
    (photo_folder / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = make_shards(photo_folder, tmp_path / "out", shard_size=100, shuffle=False)
    assert result["written"] == 6 and len(result["skipped"]) == 1 and result["skipped"][0].endswith("broken.png")


@pytest.fixture
def many_shards(photo_folder, tmp_path):
    result = make_shards(photo_folder, tmp_path / "shards", shard_size=1)  # 6 shards of 1 sample
    return result["shards"]


def test_two_processes_cover_every_sample_once(many_shards):
    seen = []
    for rank in range(2):
        dataset = KeyedShards(many_shards, rank=rank, world_size=2)
        keys = [s["label"][1] for s in dataset]
        assert len(keys) == 3
        seen += keys
    assert sorted(seen) == list(range(6))


def test_two_processes_with_two_workers_cover_every_sample_once(many_shards):
    seen = []
    for rank in range(2):
        dataset = ShardDataset(many_shards, transform=EvalTransform(16), rank=rank, world_size=2)
        loader = DataLoader(dataset, batch_size=1, num_workers=2)
        seen += [tuple(b["image"].flatten()[:64].tolist()) for b in loader]
    assert len(seen) == 6 and len(set(seen)) == 6


def test_too_few_shards_for_the_processes(many_shards):
    with pytest.raises(DatasetError, match="6 shards cannot be split over 8 processes"):
        next(iter(ShardDataset(many_shards, rank=0, world_size=8)))


def test_repeat_with_shuffle_buffer_streams_on(many_shards):
    dataset = ShardDataset(many_shards, transform=EvalTransform(16), repeat=True, shuffle_buffer=4, seed=1)
    it = iter(dataset)
    first = [next(it)["label"] for _ in range(15)]
    assert len(first) == 15  # more than one pass
    again = iter(ShardDataset(many_shards, transform=EvalTransform(16), repeat=True, shuffle_buffer=4, seed=1))
    assert [next(again)["label"] for _ in range(15)] == first  # seeded: the same stream


def test_brace_pattern_expands(tmp_path):
    for i in range(3):
        (tmp_path / f"train-{i:04d}.tar").write_bytes(b"")
    urls = expand_shard_spec(str(tmp_path / "train-{0000..0002}.tar"))
    assert [u.rsplit("/", 1)[1] for u in urls] == ["train-0000.tar", "train-0001.tar", "train-0002.tar"]
