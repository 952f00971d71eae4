"""int8 Linear layers (torchao) on the shipped models: the quantizer stays float32, ids stay close."""
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchao")

from onetok import MaskGIT, TiTok
from onetok.data.images import load_image
from onetok.fast import optimize_for_inference
from onetok.hub import default_generator_path, default_tokenizer_path
from onetok.int8 import is_int8
from onetok.models.quantizers import VectorQuantizer

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "src" / "onetok" / "assets" / "examples").glob("*.jpg"))


def test_int8_tokenizer_on_the_shipped_model():
    reference = TiTok.from_pretrained(default_tokenizer_path())
    model = optimize_for_inference(TiTok.from_pretrained(default_tokenizer_path()), precision="int8")
    assert is_int8(model)
    linear = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert all(type(m.weight).__name__ != "Parameter" for m in linear)  # every Linear holds int8 weights
    assert type(model.quantize) is VectorQuantizer and model.quantize.embedding.weight.dtype == torch.float32
    images = torch.stack([load_image(p, reference.config.crop_size) for p in EXAMPLES])
    ids = reference.tokenize(images)
    int8_ids = model.tokenize(images, precision="int8")
    # measured 94.5% identical ids here (bf16: 96.1%): below the 97% target, reported in the README speed section
    assert (int8_ids == ids).float().mean() >= 0.85
    mse = (model.detokenize(ids, precision="int8") - reference.detokenize(ids)).pow(2).mean().item()
    assert 10 * math.log10(1 / mse) >= 35


def test_int8_generator_on_the_shipped_model():
    reference = MaskGIT.from_pretrained(default_generator_path())
    model = optimize_for_inference(MaskGIT.from_pretrained(default_generator_path()), precision="int8")
    classes = torch.tensor([0, 3, 5, 21])
    settings = dict(guidance_scale=2.0, guidance_decay="linear", randomize_temperature=0.0, num_sample_steps=8)
    expected = reference.generate(classes, **settings)
    got = model.generate(classes, precision="int8", **settings)
    assert (got == expected).float().mean() >= 0.9  # measured 96.5% (temperature 0, 4 samples)


def test_pipeline_int8_on_the_shipped_models():
    from onetok.pipeline import Pipeline

    exact = Pipeline.from_pretrained(precision="fp32")
    int8 = Pipeline.from_pretrained(precision="int8")
    assert int8.precision == "int8" and is_int8(int8.tokenizer) and is_int8(int8.generator)
    paths = [str(p) for p in EXAMPLES]
    assert (int8.tokenize(paths) == exact.tokenize(paths)).float().mean() >= 0.85
    images = int8.generate([3, 5], seed=7)
    assert images.shape == exact.generate([3, 5], seed=7).shape and 0 <= images.min() <= images.max() <= 1
