"""Shipping a tokenizer: held-out evaluation against the thumbnail baseline, card, half weights."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from onetok import MaskGIT, TiTok
from onetok.cli.main import main as onetok_main
from onetok.config import preset
from onetok.evaluation.baselines import thumbnail_baseline, thumbnail_side


def main(argv: list[str]) -> int:
    """`onetok card ARGV`, through the entry point."""
    return onetok_main(["card", *argv])


def test_thumbnail_baseline_spends_the_byte_budget(sample_photos):
    assert thumbnail_side(48) == 4 and thumbnail_side(32) == 3
    images = torch.stack([torch.from_numpy(np.array(Image.fromarray(p).resize((64, 64)))).permute(2, 0, 1) / 255
                          for p in sample_photos[:2]])
    thumbs, side = thumbnail_baseline(images, 48)
    assert side == 4 and thumbs.shape == images.shape
    # a 4x4 thumbnail keeps the colours: closer to the photo than a flat grey image
    assert ((thumbs - images) ** 2).mean() < ((0.5 - images) ** 2).mean()


def test_card_compares_with_the_thumbnail(tmp_path, sample_photos):
    TiTok.from_config("titok_tiny").save_pretrained(tmp_path / "run" / "final")
    val = np.stack([np.asarray(Image.fromarray(p).resize((64, 64))) for p in sample_photos])
    np.save(tmp_path / "val.npy", val)
    assert main(["tokenizer", str(tmp_path / "run"), "--val", str(tmp_path / "val.npy"),
                 "--dest", str(tmp_path / "asset")]) == 0
    metrics = json.loads((tmp_path / "asset" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"model", "thumbnail"}
    # a random tokenizer loses to the thumbnail, and the card says by how much
    assert metrics["model"]["psnr"] < metrics["thumbnail"]["psnr"]
    assert "Model minus thumbnail" in (tmp_path / "asset" / "README.md").read_text()
    loaded = TiTok.from_pretrained(tmp_path / "asset")
    assert loaded.latent_tokens.dtype == torch.float32
    assert (tmp_path / "asset" / "heldout_reconstructions.png").is_file()


def test_variable_length_card_has_the_rate_quality_table(tmp_path, sample_photos):
    tree = preset("titok_tiny")
    tree["model"]["vq_model"]["variable_length"] = True
    TiTok.from_config(tree).save_pretrained(tmp_path / "run" / "final")
    val = np.stack([np.asarray(Image.fromarray(p).resize((64, 64))) for p in sample_photos])
    np.save(tmp_path / "val.npy", val)
    assert main(["tokenizer", str(tmp_path / "run"), "--val", str(tmp_path / "val.npy"),
                 "--dest", str(tmp_path / "asset")]) == 0
    rows = json.loads((tmp_path / "asset" / "metrics.json").read_text())["rate_quality"]
    assert [r["num_tokens"] for r in rows] == [4, 8, 16, 32]  # K/8, K/4, K/2, K
    assert [r["bytes_per_image"] for r in rows] == [k * 8 / 8 for k in (4, 8, 16, 32)]  # 256 codes: 8 bits each
    card = (tmp_path / "asset" / "README.md").read_text()
    assert "| 4 | 4 |" in card and "| 32 | 32 |" in card
    for picture in ("rate_quality.png", "prefix_reconstructions.png"):
        assert Image.open(tmp_path / "asset" / picture).size[0] > 100


def test_generator_card_scores_samples_beside_reference_rows(tmp_path, sample_photos):
    torch.manual_seed(0)
    tokenizer = TiTok.from_config("titok_tiny")
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    MaskGIT.from_config("generator_titok_tiny").save_pretrained(tmp_path / "run" / "final")
    size = tokenizer.config.crop_size
    photos = np.stack([np.asarray(Image.fromarray(p).resize((size, size))) for p in sample_photos])
    np.save(tmp_path / "val.npy", photos)
    np.save(tmp_path / "val.labels.npy", np.arange(len(photos)) % 2)
    np.save(tmp_path / "train.npy", photos[::-1].copy())
    assert main(["generator", str(tmp_path / "run"), "--val", str(tmp_path / "val.npy"), "--train",
                 str(tmp_path / "train.npy"), "--tokenizer", str(tmp_path / "tokenizer"), "--per-class", "2",
                 "--dest", str(tmp_path / "asset")]) == 0
    result = json.loads((tmp_path / "asset" / "metrics.json").read_text())
    assert result["num_samples"] == 4 and result["num_classes"] == 2
    assert set(result["metrics"]) == {"samples", "train photos", "train reconstructions"}
    # real photos sit closer to other real photos than a random model's samples do
    assert result["metrics"]["train photos"]["fid"] < result["metrics"]["samples"]["fid"]
    assert MaskGIT.from_pretrained(tmp_path / "asset").config.image_seq_len == tokenizer.config.num_latent_tokens
    assert (tmp_path / "asset" / "samples.png").is_file() and "KID" in (tmp_path / "asset" / "README.md").read_text()


def test_generator_card_needs_its_tokenizer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generator", str(tmp_path), "--val", "v.npy", "--dest", str(tmp_path / "d")])
    assert "--tokenizer" in capsys.readouterr().err
