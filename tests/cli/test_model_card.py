"""Shipping a tokenizer: held-out evaluation against the thumbnail baseline, card, half weights."""
import json

import numpy as np
import torch
from PIL import Image

from onetok import TiTok
from onetok.cli.model_card import main
from onetok.evaluation.baselines import thumbnail_baseline, thumbnail_side


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
