"""onetok.pretrained: the checkpoint folder, the mixin on every model, one-line load errors
(the `onetok info` cases go through the CLI entry point)."""
import re

import pytest
import torch

from onetok import MaskGIT, MaskGITVQGAN, TiTok
from onetok.cli.main import main
from onetok.errors import CheckpointError
from onetok.pretrained import HubMixin, resolve_checkpoint

TINY_VQGAN = dict(channel_mult=(1, 2), num_resolutions=2, hidden_channels=32, z_channels=8,
                  num_embeddings=32, embedding_dim=8, resolution=32)


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("cls", [TiTok, MaskGIT, MaskGITVQGAN])
def test_every_model_class_has_the_mixin(cls):
    assert issubclass(cls, HubMixin)


def test_vqgan_round_trip_through_the_mixin(tmp_path):
    torch.manual_seed(0)
    model = MaskGITVQGAN.from_config(TINY_VQGAN).eval()
    model.save_pretrained(tmp_path / "vq")
    loaded = MaskGITVQGAN.from_pretrained(tmp_path / "vq")
    assert loaded.config == model.config and loaded.num_parameters() == model.num_parameters()
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixels)[0], loaded(pixels)[0])
    with pytest.raises(CheckpointError, match="no such file"):
        MaskGITVQGAN.from_pretrained(tmp_path / "raw.bin")


def test_generator_backbones_are_picked_by_model_type():
    assert type(MaskGIT.from_config("generator_titok_tiny")).__name__ == "ImageBert"
    assert set(MaskGIT.backbones) == {"ViT", "UViT"}


def test_info_on_truncated_weights_is_one_line_exit_2(tokenizer_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((tokenizer_folder / "config.json").read_bytes())
    data = (tokenizer_folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["info", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("onetok: error:") and "\n" not in err
    assert "model.safetensors could not be read as weights" in err
    assert main(["info", str(tokenizer_folder)]) == 0  # the intact one still answers


@pytest.mark.parametrize("typo", ["./no/such/dir", "no/such/dir/deeper", "outputs/run-typo"])
def test_a_local_path_typo_says_the_folder_does_not_exist(typo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "outputs").mkdir()  # so outputs/run-typo is a local path, not a hub id
    assert main(["info", typo]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such folder" in err and "download" not in err and "\n" not in err


def test_the_missing_part_of_a_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"'runs' is not in {tmp_path})")):
        resolve_checkpoint(tmp_path / "runs" / "no" / "such")
    (tmp_path / "runs").mkdir()
    with pytest.raises(CheckpointError, match=re.escape(f"'no' is not in {tmp_path / 'runs'})")):
        resolve_checkpoint(tmp_path / "runs" / "no" / "such")


def test_an_unknown_hub_id_offline_says_it_is_no_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="'someone/model' is no local folder and could not be downloaded"):
        resolve_checkpoint("someone/model")
