"""Generators against the reference: logits, the sampler's ids, the mask schedule."""
import json

import pytest
import torch

from onetok import MaskGIT, mask_schedule
from onetok.models.maskgit import GeneratorError

from .golden import assert_close, build, load_fixture

GENERATORS = ["imagebert", "uvitbert"]


@pytest.mark.parametrize("name", GENERATORS)
def test_logits_match_reference(golden_dir, name):
    meta, weights, io = load_fixture(golden_dir, name)
    model = build(meta, weights, "maskgit")
    with torch.no_grad():
        assert_close(model(io["input_ids"], io["condition"], cond_drop_prob=0.0), io["logits_cond"])
        assert_close(model(io["input_ids"], io["condition"], cond_drop_prob=1.0), io["logits_uncond"])


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("batched", [False, True])
def test_sampler_reproduces_reference_ids(golden_dir, name, batched):
    meta, weights, io = load_fixture(golden_dir, name)
    model = build(meta, weights, "maskgit")
    settings = meta["sample_settings"]
    torch.manual_seed(settings["seed"])
    ids = model.generate(
        io["condition"], guidance_scale=settings["guidance_scale"], guidance_decay=settings["guidance_decay"],
        randomize_temperature=settings["randomize_temperature"], num_sample_steps=settings["num_sample_steps"],
        batched_guidance=batched,
    )
    assert torch.equal(ids, io["sampled_ids"])


def test_mask_schedule_matches_reference(golden_dir):
    expected = json.loads((golden_dir / "tiny" / "mask_schedule.json").read_text())
    for key, counts in expected.items():
        tokens, steps = map(int, key.split("x"))
        assert mask_schedule(tokens, steps) == counts


def test_training_mask_counts():
    model = MaskGIT.from_config("generator_titok_tiny")
    tokens = torch.randint(0, 256, (64, 32))
    masked, mask = model.masking_input_tokens(tokens, generator=torch.Generator().manual_seed(0))
    assert mask.any(dim=1).all()  # at least one masked token per row
    assert torch.equal(masked[mask], torch.full_like(masked[mask], model.mask_token_id))
    assert torch.equal(masked[~mask], tokens[~mask])


def test_generate_rejects_bad_arguments():
    model = MaskGIT.from_config("generator_titok_tiny").eval()
    with pytest.raises(GeneratorError, match="guidance_decay"):
        model.generate(torch.tensor([1]), guidance_decay="cosine")
    with pytest.raises(GeneratorError, match=r"\[0, 9\]"):
        model.generate(torch.tensor([10]))
