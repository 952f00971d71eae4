"""The CLI end to end on the golden ImageNet photos, and each bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from onetok import MaskGIT, TiTok
from onetok.cli.main import main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    TiTok.from_config("titok_tiny").save_pretrained(root / "tokenizer")
    MaskGIT.from_config("generator_titok_tiny").save_pretrained(root / "generator")
    return root


def run(*args):
    return main([str(a) for a in args])


def test_tokenize_detokenize_reconstruct_generate(models, golden_images, tmp_path, capsys):
    tok = models / "tokenizer"
    assert run("tokenize", *golden_images, "--model", tok, "-o", tmp_path / "t.json", "--precision", "fp32") == 0
    record = json.loads((tmp_path / "t.json").read_text())
    assert len(record["tokens"]) == 2 and all(len(v) == 32 for v in record["tokens"].values())
    # the same ids as the Python API on the same preprocessing
    from onetok.data.images import load_image

    ids = TiTok.from_pretrained(tok).tokenize(torch.stack([load_image(p, 64) for p in golden_images]))
    assert list(record["tokens"].values()) == ids.tolist()

    assert run("tokenize", *golden_images, "--model", tok, "-o", tmp_path / "t.npy") == 0
    assert np.load(tmp_path / "t.npy").shape == (2, 32)

    assert run("detokenize", tmp_path / "t.json", "--model", tok, "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.stem + ".png" for p in golden_images)

    assert run("reconstruct", *golden_images, "--model", tok, "-o", tmp_path / "r.png") == 0
    assert "PSNR" in capsys.readouterr().out
    assert Image.open(tmp_path / "r.png").size[1] > 2 * 64

    assert run("generate", "--tokenizer", tok, "--generator", models / "generator", "--class", 3,
               "-n", 4, "--steps", 4, "-o", tmp_path / "g.png") == 0
    assert Image.open(tmp_path / "g.png").size[0] > 4 * 64

    assert run("info", tok) == 0
    assert "tokens per image: 32" in capsys.readouterr().out


def test_unreadable_image_is_listed_and_others_processed(models, golden_images, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code = run("tokenize", golden_images[0], bad, golden_images[1], "--model", models / "tokenizer",
               "-o", tmp_path / "t.json")
    assert code == 2
    assert len(json.loads((tmp_path / "t.json").read_text())["tokens"]) == 2
    err = capsys.readouterr().err
    assert "notes.png" in err and "Traceback" not in err


def test_rgba_and_grayscale_images_are_accepted(models, golden_images, tmp_path):
    photo = Image.open(golden_images[0])
    photo.convert("L").save(tmp_path / "gray.png")
    photo.convert("RGBA").resize((300, 200)).save(tmp_path / "rgba.png")
    assert run("tokenize", tmp_path / "gray.png", tmp_path / "rgba.png", "--model", models / "tokenizer",
               "-o", tmp_path / "t.json") == 0


@pytest.mark.parametrize("case", ["not_checkpoint", "mismatch", "bad_count", "bad_range", "unwritable", "folder_as_file"])
def test_user_errors_exit_2_with_one_line(models, golden_images, tmp_path, capsys, case):
    tok = models / "tokenizer"
    if case == "not_checkpoint":
        args, needle = ["info", tmp_path], "no config.json"
    elif case == "mismatch":
        broken = tmp_path / "broken"
        TiTok.from_config("titok_tiny").save_pretrained(broken)
        config = json.loads((broken / "config.json").read_text())
        config["model"]["vq_model"]["codebook_size"] = 128
        (broken / "config.json").write_text(json.dumps(config))
        args, needle = ["reconstruct", golden_images[0], "--model", broken, "-o", tmp_path / "r.png"], "quantize.embedding.weight"
    elif case in ("bad_count", "bad_range"):
        ids = [[1] * 31] if case == "bad_count" else [[300] * 32]
        (tmp_path / "t.json").write_text(json.dumps({"tokens": {"x.png": ids[0]}}))
        args = ["detokenize", tmp_path / "t.json", "--model", tok, "-o", tmp_path / "out"]
        needle = "32 tokens" if case == "bad_count" else "[0, 255]"
    elif case == "folder_as_file":  # -o names a PNG file, not a folder
        args, needle = ["reconstruct", golden_images[0], "--model", tok, "-o", tmp_path], "expected a file name ending in .png"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "file").write_text("x")
        args, needle = ["reconstruct", golden_images[0], "--model", tok, "-o", locked / "file" / "r.png"], "cannot write"
    assert run(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("onetok: error:")
