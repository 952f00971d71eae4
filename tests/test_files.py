"""onetok.files: atomic writes and the one cache folder."""
import os

import numpy as np
import pytest
import torch

from onetok import files
from onetok.evaluation import inception
from onetok.training import convnext


def test_atomic_writes_get_normal_permissions(tmp_path):
    files.atomic_write_bytes(tmp_path / "x.bin", b"data")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.npy"
    files.atomic_save_npy(target, np.arange(3))
    with pytest.raises((TypeError, AttributeError)):
        files.atomic_torch_save(lambda: None, target)  # a lambda cannot be pickled
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_every_weights_file_lives_under_onetok_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path / "cache"))
    assert files.cache_root() == tmp_path / "cache"
    assert convnext.cached_weights_path().parent == tmp_path / "cache"
    assert files.cached_file(inception.FID_WEIGHTS_NAME).parent == tmp_path / "cache"
    monkeypatch.delenv("ONETOK_CACHE")
    assert files.cache_root() == files.Path.home() / ".cache" / "onetok"


def test_download_reads_the_cached_copy_and_fails_in_one_line_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path))
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    state = files.download_state_dict("http://127.0.0.1:9/weights/w.pth")  # cached: no network touched
    assert torch.equal(state["w"], torch.ones(2))
    with pytest.raises(OSError, match="could not download http://127.0.0.1:9/weights/missing.pth"):
        files.download_state_dict("http://127.0.0.1:9/weights/missing.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # nothing half-written left behind


def test_fetch_file_prefers_the_cache_then_the_other_places(tmp_path, monkeypatch):
    monkeypatch.setenv("ONETOK_CACHE", str(tmp_path / "cache"))
    elsewhere = tmp_path / "wheel" / "vgg.pth"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"heads")
    url = "http://127.0.0.1:9/v0.1/vgg.pth"
    assert files.fetch_file(url, "lpips_vgg.pth", elsewhere=[tmp_path / "absent.pth", elsewhere]) == elsewhere
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "lpips_vgg.pth").write_bytes(b"cached")
    assert files.fetch_file(url, "lpips_vgg.pth", elsewhere=[elsewhere]) == tmp_path / "cache" / "lpips_vgg.pth"
    with pytest.raises(OSError, match="could not download http://127.0.0.1:9/v0.1/vgg.pth"):
        files.fetch_file(url, sha256="00" * 32)
