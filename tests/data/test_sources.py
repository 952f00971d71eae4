import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from onetok.data import sources
from onetok.data.images import load_image
from onetok.data.sources import (
    ArrayDataset, DatasetError, ImageFileDataset, build_dataset, predecode, read_file_list, scan_folder,
)
from onetok.data.transforms import EvalTransform, TrainTransform


def test_scan_folder_classes_sorted_recursive(photo_folder):
    samples, classes = scan_folder(photo_folder)
    assert classes == ["a", "b"]
    assert len(samples) == 6
    assert sorted(label for _, label in samples) == [0, 0, 0, 1, 1, 1]
    assert any("nested" in path for path, label in samples if label == 1)


def test_flat_folder_is_one_class(tmp_path, sample_photos):
    for i in range(2):
        Image.fromarray(sample_photos[i]).save(tmp_path / f"{i}.png")
    (tmp_path / ".hidden.png.tmp").write_bytes(b"")  # half-written temp files are ignored
    samples, classes = scan_folder(tmp_path)
    assert classes == [tmp_path.name] and len(samples) == 2


def test_folder_dataset_gives_the_folder_pixels(photo_folder):
    dataset = build_dataset(photo_folder, transform=EvalTransform(64))
    assert isinstance(dataset, ImageFileDataset)
    for index, (path, label) in enumerate(dataset.samples):
        sample = dataset[index]
        assert sample["label"] == label and sample["skipped"] == 0
        assert torch.equal(sample["image"], load_image(path, 64))


def test_corrupt_image_is_skipped_counted_and_logged(photo_folder, caplog):
    bad = photo_folder / "a" / "photo2b.jpg"  # sorts right after photo2.jpg: in the middle
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    dataset = build_dataset(photo_folder, transform=EvalTransform(32))
    paths = [p for p, _ in dataset.samples]
    bad_index = paths.index(str(bad))
    before = sources.skip_log.count
    with caplog.at_level(logging.WARNING, logger="onetok.data"):
        batches = list(DataLoader(dataset, batch_size=3))
    skipped = sum(int(b["skipped"].sum()) for b in batches)
    assert skipped == 1
    assert sum(len(b["image"]) for b in batches) == len(dataset)  # the batch shape never changes
    assert str(bad) in caplog.text
    assert sources.skip_log.count == before + 1 and str(bad) in sources.skip_log.paths
    # the stand-in is the next file's image
    assert torch.equal(dataset[bad_index]["image"], dataset[bad_index + 1]["image"])


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    dataset = build_dataset(tmp_path)
    with pytest.raises(DatasetError, match="none of its 1 images"):
        dataset[0]


def test_file_list_with_names_and_ints(photo_folder, tmp_path):
    samples, _ = scan_folder(photo_folder)
    named = tmp_path / "named.txt"
    rel = [p.replace(str(tmp_path) + "/", "") for p, _ in samples]
    named.write_text("# a comment\n" + "".join(f"{r}\t{'cat' if i % 2 else 'dog'}\n" for i, r in enumerate(rel)))
    got, classes = read_file_list(named)
    assert classes == ["cat", "dog"]
    assert [p for p, _ in got] == [p for p, _ in samples]  # relative to the list's folder
    assert [label for _, label in got] == [1 if i % 2 == 0 else 0 for i in range(6)]
    ints = tmp_path / "ints.txt"
    ints.write_text("".join(f"{p}\t{i % 3}\n" for i, (p, _) in enumerate(samples)))
    assert read_file_list(ints)[1] == ["0", "1", "2"]
    plain = tmp_path / "plain.lst"
    plain.write_text("\n".join(p for p, _ in samples))
    dataset = build_dataset(plain, transform=EvalTransform(32))
    assert len(dataset) == 6 and dataset.classes == ["plain"] and dataset[5]["image"].shape == (3, 32, 32)


def test_file_list_errors(tmp_path):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("a.png\t1\nb.png\n")
    with pytest.raises(DatasetError, match="not a mix"):
        read_file_list(mixed)
    with pytest.raises(DatasetError, match="no such file"):
        build_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="not a folder, file list"):
        (tmp_path / "x.csv").write_text("")
        build_dataset(tmp_path / "x.csv")


def test_predecode_array_matches_folder(photo_folder, tmp_path):
    out = predecode(photo_folder, 48, tmp_path / "train-48.npy")
    dataset = build_dataset(out, transform=EvalTransform(48))
    assert isinstance(dataset, ArrayDataset)
    folder = build_dataset(photo_folder, transform=EvalTransform(48))
    assert dataset.classes == folder.classes and len(dataset) == len(folder)
    for i in range(len(folder)):
        assert dataset[i]["label"] == folder[i]["label"]
        assert (dataset[i]["image"] - folder[i]["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert np.load(out, mmap_mode="r").dtype == np.uint8
    # works in DataLoader workers (the memory map is reopened there)
    batch = next(iter(DataLoader(dataset, batch_size=6, num_workers=1)))
    assert batch["image"].shape == (6, 3, 48, 48)


def test_position_keys_replay_augmentation(photo_folder):
    dataset = build_dataset(photo_folder, transform=TrainTransform(32, scale=(0.3, 1)), seed=5)
    keys = [(index, position) for position, index in enumerate([3, 1, 4, 0, 2, 5, 1, 3])]
    first = [dataset[k]["image"] for k in keys]
    again = [dataset[k]["image"] for k in keys]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    # the same photo at a later stream position (a later epoch) gets another crop
    assert not torch.equal(dataset[(3, 14)]["image"], first[0])


def test_split_folder_is_not_mistaken_for_classes(photo_folder, tmp_path):
    (tmp_path / "pool").mkdir()
    for split in ("train", "val"):
        (tmp_path / "pool" / split).symlink_to(photo_folder, target_is_directory=True)
    with pytest.raises(DatasetError, match="give .*train"):
        build_dataset(tmp_path / "pool")
