"""The CLI end to end on the golden ImageNet photos, and each bad input."""
import json
from pathlib import Path

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
        ids = [[1] * 33] if case == "bad_count" else [[300] * 32]  # a prefix of 1..32 is fine
        (tmp_path / "t.json").write_text(json.dumps({"tokens": {"x.png": ids[0]}}))
        args = ["detokenize", tmp_path / "t.json", "--model", tok, "-o", tmp_path / "out"]
        needle = "1 to 32 tokens" if case == "bad_count" else "[0, 255]"
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


# ---------------------------------------------------------------- the shipped models, through the entry point

EXAMPLES = sorted((Path(__file__).parents[2] / "src/onetok/assets/examples").glob("*.jpg"))


def test_shipped_models_end_to_end(tmp_path, capsys):
    """tokenize / detokenize / reconstruct / generate / info on the shipped models and example photos."""
    from onetok import Pipeline

    pipe = Pipeline.from_pretrained()
    assert run("tokenize", *EXAMPLES, "-o", tmp_path / "t.json") == 0
    record = json.loads((tmp_path / "t.json").read_text())
    assert list(record["tokens"]) == [str(p) for p in EXAMPLES]
    assert list(record["tokens"].values()) == pipe.tokenize(EXAMPLES).tolist()  # same precision rule
    assert f"wrote {len(EXAMPLES)} x 64 tokens" in capsys.readouterr().out

    assert run("detokenize", tmp_path / "t.json", "-o", tmp_path / "out") == 0
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == sorted(p.stem + ".png" for p in EXAMPLES)
    decoded = np.asarray(Image.open(tmp_path / "out" / f"{EXAMPLES[0].stem}.png"))
    expected = (pipe.reconstruct(EXAMPLES[0])[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(decoded - expected).max() <= 1

    assert run("reconstruct", *EXAMPLES[:2], "-o", tmp_path / "r.png") == 0
    out = capsys.readouterr().out
    assert out.count("PSNR") == 2 and "64 tokens per image (96 bytes)" in out
    assert Image.open(tmp_path / "r.png").size == (2 * 128 + 3 * 2, 2 * 128 + 3 * 2)

    name = pipe.class_names[3]
    assert run("generate", "--class", name, "-n", 2, "--seed", 7, "-o", tmp_path / "g.png") == 0
    assert name in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "g.png"))[2:130, 2:130]
    expected = (pipe.generate([3], seed=7)[0].permute(1, 2, 0) * 255).round().numpy()
    assert np.abs(grid - expected).max() <= 1
    assert run("generate", "--class", 3, "-n", 2, "--seed", 7, "-o", tmp_path / "g3.png") == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g3.png")), np.asarray(Image.open(tmp_path / "g.png")))

    assert run("info", "src/onetok/assets/default_generator") == 0
    assert "classes: 22" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["generate", "--class", "99", "-n", "1"], "class id 99 is outside the generator's classes 0..21"),
    (["generate", "--class", "zebra", "-n", "1"], "'zebra' is neither a class id nor one of the generator's class names"),
    (["generate", "-n", "0"], "-n/--num must be at least 1, got 0"),
    (["generate", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["tokenize", str(EXAMPLES[0]), "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["reconstruct", str(EXAMPLES[0]), "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
])
def test_shipped_model_argument_errors_are_one_line(tmp_path, capsys, args, needle):
    assert run(*args, "-o", tmp_path / "x.png" if args[0] != "tokenize" else tmp_path / "t.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not any(tmp_path.iterdir())


def test_tokenize_nothing_readable_leaves_existing_output_alone(tmp_path, capsys):
    existing = tmp_path / "existing.json"
    existing.write_bytes(b'{"keep": "me"}\n')
    assert run("tokenize", tmp_path / "missing.jpg", "-o", existing) == 2
    assert existing.read_bytes() == b'{"keep": "me"}\n'
    err = capsys.readouterr().err
    assert "missing.jpg: no such file" in err and "nothing was written" in err


def test_tokenize_counts_a_repeated_path_once(tmp_path, capsys):
    assert run("tokenize", EXAMPLES[0], EXAMPLES[0], "-o", tmp_path / "t.json") == 0
    assert len(json.loads((tmp_path / "t.json").read_text())["tokens"]) == 1
    captured = capsys.readouterr()
    assert "wrote 1 x 64 tokens" in captured.out and "1 repeated path(s) were read once" in captured.err
    assert run("tokenize", EXAMPLES[0], EXAMPLES[0], "-o", tmp_path / "t.npy") == 0
    assert np.load(tmp_path / "t.npy").shape == (1, 64)


def test_detokenize_keeps_inputs_with_the_same_stem_apart(tmp_path, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.open(EXAMPLES[0 if folder == "a" else 1]).save(tmp_path / folder / "photo.png")
    assert run("tokenize", tmp_path / "a/photo.png", tmp_path / "b/photo.png", "-o", tmp_path / "t.json") == 0
    assert run("detokenize", tmp_path / "t.json", "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png", "photo_2.png"]
    assert "wrote 2 images" in capsys.readouterr().out
    first, second = (np.asarray(Image.open(tmp_path / "out" / n)) for n in ("photo.png", "photo_2.png"))
    assert not np.array_equal(first, second)


def test_detokenize_onto_an_existing_file_is_refused_before_decoding(tmp_path, capsys):
    assert run("tokenize", EXAMPLES[0], "-o", tmp_path / "t.json") == 0
    target = tmp_path / "taken.png"
    target.write_bytes(b"precious")
    capsys.readouterr()
    assert run("detokenize", tmp_path / "t.json", "-o", target) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "taken.png is a file" in err[0]
    assert target.read_bytes() == b"precious"
