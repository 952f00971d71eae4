"""Loading the models the app serves from checkpoint folders."""
import shutil

import pytest

import onetok
from onetok.app.logic import preprocess_upload
from onetok.errors import ModelLoadError
from onetok.app.models import load_models, wrap_generator, wrap_tokenizer
from onetok.hub import example_photos

from .conftest import tiny_tree


def test_load_models_from_folders(checkpoint_folders):
    models = load_models(
        [checkpoint_folders["tokenizer_32"], checkpoint_folders["tokenizer_16"]], checkpoint_folders["generator"]
    )
    assert [t.num_tokens for t in models.tokenizers] == [16, 32]  # fewest tokens first
    assert [t.label for t in models.tokenizers] == ["16 tokens · titok_tiny_16", "32 tokens · titok_tiny_32"]
    assert models.tokenizer("32 tokens · titok_tiny_32").crop_size == 64
    generator = models.generator
    assert generator.tokenizer is models.tokenizers[1]  # the one whose ids it predicts
    assert generator.class_names[:2] == ["thing 0", "thing 1"] and len(generator.class_names) == 10
    assert not generator.pipeline.generator.training and not models.tokenizers[0].pipeline.tokenizer.training
    assert generator.pipeline.tokenizer is models.tokenizers[1].pipeline.tokenizer
    with pytest.raises(ModelLoadError, match="no tokenizer named"):
        models.tokenizer("64 tokens")


def test_generator_needs_a_matching_tokenizer(checkpoint_folders):
    with pytest.raises(ModelLoadError, match="makes 32 ids from a codebook of 256"):
        load_models([checkpoint_folders["tokenizer_16"]], checkpoint_folders["generator"])


def test_bad_specs_give_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder, preset or hub id"):
        load_models(["not/a/real/../path"], None)
    with pytest.raises(ValueError, match="no config.json"):
        load_models([str(tmp_path)], None)


@pytest.mark.parametrize(
    "changes, message",
    [({"quantize_mode": "vae", "finetune_decoder": False}, "continuous \\(VAE\\) tokenizer"),
     ({"is_legacy": True, "finetune_decoder": False}, "stage-1 tokenizer")],
)
def test_tokenizers_without_ids_or_pixels_are_refused(changes, message):
    tree = tiny_tree(32)
    tree["model"]["vq_model"].update(changes)
    with pytest.raises(ModelLoadError, match=message):
        wrap_tokenizer(onetok.TiTok.from_config(tree), "odd")


def test_class_names_fall_back_to_numbers():
    generator = onetok.MaskGIT.from_config(tiny_tree(32))
    loaded = wrap_generator(generator, "g", [wrap_tokenizer(onetok.TiTok.from_config(tiny_tree(32)), "t")])
    assert loaded.class_names[-1] == "class 9" and loaded.sampling["guidance_decay"] == "linear"


def test_defaults_are_the_shipped_models(checkpoint_folders, monkeypatch, tmp_path):
    from onetok import hub

    monkeypatch.setattr(hub, "ASSETS", tmp_path)
    with pytest.raises(ModelLoadError, match="no default tokenizer is shipped in this build: pass --tokenizer"):
        load_models([], None)
    shutil.copytree(checkpoint_folders["tokenizer_32"], tmp_path / "default_tokenizer")
    assert load_models([], None).generator is None  # no generator shipped: no Generate tab
    shutil.copytree(checkpoint_folders["generator"], tmp_path / "default_generator")
    models = load_models([], None)
    assert [t.name for t in models.tokenizers] == ["default_tokenizer"] and models.generator.name == "default_generator"


def test_example_photos_are_shipped_and_readable():
    photos = example_photos()
    assert [path.name for path in photos] == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    for path in photos:
        assert preprocess_upload(path, 256).shape == (3, 256, 256)


def test_shipped_models_compute_what_the_cli_computes(tmp_path):
    """The app's token grid and samples on the shipped models are the CLI's (same precision, same seeds)."""
    import json

    import numpy as np
    from PIL import Image

    from onetok.app import logic
    from onetok.cli.main import main

    models = load_models([], None)
    photo = example_photos()[1]
    result = logic.reconstruct(models.tokenizers[0].pipeline, preprocess_upload(photo, models.tokenizers[0].crop_size))
    assert main(["tokenize", str(photo), "-o", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["tokens"][str(photo)] == result.ids

    generated = logic.generate(models.generator.pipeline, logic.GenerationSettings(class_id=3, seed=7, num_images=1))
    assert main(["generate", "--class", "3", "-n", "1", "--seed", "7", "-o", str(tmp_path / "g.png")]) == 0
    cli_image = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))[2:-2, 2:-2]
    np.testing.assert_array_equal(cli_image, generated.images[0])
