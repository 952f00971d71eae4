"""onetok.Pipeline on the shipped models and the example photos: inputs, seeding, classes, pairing."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from onetok import MaskGIT, Pipeline, precision
from onetok.config import ConfigError
from onetok.errors import PipelineError

EXAMPLES = sorted((Path(__file__).parents[1] / "src/onetok/assets/examples").glob("*.jpg"))


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained()


def test_generate_is_seeded_per_sample(pipe):
    """Sample i of a call seeded s depends on (class, s, i) only, not on batch_size or later samples."""
    three = pipe.generate([3, 5, 3], seed=7)
    assert three.shape == (3, 3, pipe.image_size, pipe.image_size) and 0 <= three.min() and three.max() <= 1
    assert torch.equal(three[0], pipe.generate([3], seed=7)[0])
    assert torch.equal(three, pipe.generate([3, 5, 3], seed=7, batch_size=1))
    assert not torch.equal(three[0], three[2])  # same class, different sample index
    assert not torch.equal(three[0], pipe.generate([3], seed=8)[0])
    # first_index: the tail of a run drawn on its own is the same tail
    assert torch.equal(three[1:], pipe.generate([5, 3], seed=7, first_index=1))


def test_generate_takes_class_names_and_config_sampling(pipe):
    name = pipe.class_names[3]
    assert torch.equal(pipe.generate([name], seed=2), pipe.generate(3, seed=2))
    assert torch.equal(pipe.generate(["3"], seed=2), pipe.generate([3], seed=2))
    cfg = pipe.generator.config
    assert pipe.sampling["guidance_scale"] == cfg.guidance_scale
    assert pipe.sampling["num_sample_steps"] == cfg.num_steps
    # a keyword overrides the config; None keeps it
    assert torch.equal(pipe.generate([1], guidance_scale=None), pipe.generate([1]))
    assert not torch.equal(pipe.generate([1], guidance_scale=cfg.guidance_scale + 3), pipe.generate([1]))


@pytest.mark.parametrize("classes, message", [
    ([99], r"class id 99 is outside the generator's classes 0\.\.21"),
    ([-1], "class id -1 is outside"),
    (["no-such-class"], "'no-such-class' is neither a class id nor one of the generator's class names"),
    ([], "no classes given"),
])
def test_bad_classes_are_one_line_errors(pipe, classes, message):
    with pytest.raises(PipelineError, match=message) as err:
        pipe.generate(classes)
    assert "\n" not in str(err.value)


def test_bad_arguments_are_clear(pipe):
    with pytest.raises(PipelineError, match="unknown sampling settings: guidance"):
        pipe.generate([0], guidance=2.0)
    with pytest.raises(PipelineError, match="batch size must be at least 1, got 0"):
        pipe.tokenize(EXAMPLES[0], batch_size=0)
    with pytest.raises(ValueError, match="no such file"):
        pipe.tokenize("missing.jpg")


def test_every_image_input_gives_the_same_ids(pipe):
    paths = EXAMPLES[:2]
    from_paths = pipe.tokenize([str(p) for p in paths])
    assert from_paths.shape == (2, pipe.num_tokens) and from_paths.dtype == torch.long
    assert torch.equal(pipe.tokenize(paths[0]), from_paths[:1])
    assert torch.equal(pipe.tokenize([Image.open(p) for p in paths]), from_paths)
    assert torch.equal(pipe.tokenize(pipe.load_images(paths)), from_paths)
    assert torch.equal(pipe.tokenize(pipe.load_images(paths)[0]), from_paths[:1])
    assert torch.equal(pipe.tokenize(paths, batch_size=1), from_paths)


def test_reconstruct_is_detokenize_of_tokenize(pipe):
    originals = pipe.load_images(EXAMPLES)
    recon = pipe.reconstruct(EXAMPLES, batch_size=3)
    assert recon.shape == originals.shape and 0 <= recon.min() and recon.max() <= 1
    assert torch.allclose(recon, pipe.detokenize(pipe.tokenize(EXAMPLES)), atol=1e-6)
    # a real reconstruction: far closer to its own photo than to another one
    own = (recon - originals).pow(2).mean(dim=(1, 2, 3))
    other = (recon - originals.roll(1, 0)).pow(2).mean(dim=(1, 2, 3))
    assert (own < other / 2).all()
    # one row of ids (a list) decodes too
    ids = pipe.tokenize(EXAMPLES[0])
    assert torch.equal(pipe.detokenize(ids[0].tolist()), pipe.detokenize(ids))


def test_properties(pipe):
    assert pipe.bits_per_image == pipe.num_tokens * 12 == 768  # 64 tokens from a 4096-entry codebook
    assert len(pipe.class_names) == pipe.num_classes == 22 and pipe.class_names[0] == "gcompris-categorization"
    assert pipe.precision == precision.resolve_precision("auto", "cpu")


def test_precision_auto_follows_the_one_rule(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: "fpu avx2")
    assert Pipeline.from_pretrained(precision=None).precision == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: "avx512f avx512_bf16")
    assert Pipeline.from_pretrained(precision="auto").precision == "bf16"
    assert Pipeline.from_pretrained(precision="fp32").precision == "fp32"


def test_tokenizer_only_pipeline(pipe, tmp_path):
    pipe.tokenizer.save_pretrained(tmp_path / "tok")
    alone = Pipeline.from_pretrained(tokenizer=tmp_path / "tok", precision="fp32")
    assert alone.generator is None and alone.class_names == []
    assert alone.reconstruct(EXAMPLES[0]).shape == (1, 3, 128, 128)
    with pytest.raises(PipelineError, match="this pipeline has no generator"):
        alone.generate([0])


def test_pairing_check_names_both_models(tmp_path):
    MaskGIT.from_config("generator_titok_tiny").save_pretrained(tmp_path / "tiny_gen")
    with pytest.raises(ConfigError) as err:
        Pipeline.from_pretrained(generator=tmp_path / "tiny_gen")
    message = str(err.value)
    assert "tiny_gen" in message and "default_tokenizer" in message and "codebook of" in message
    assert "\n" not in message


def test_maskgit_generate_defaults_to_its_config(pipe):
    generator, condition = pipe.generator, torch.tensor([2, 4])
    torch.manual_seed(5)
    implicit = generator.generate(condition)
    torch.manual_seed(5)
    explicit = generator.generate(condition, **generator.config.sampling)
    assert torch.equal(implicit, explicit)
    torch.manual_seed(5)
    assert not torch.equal(implicit, generator.generate(condition, guidance_scale=3.0, guidance_decay="constant",
                                                        randomize_temperature=4.5))
