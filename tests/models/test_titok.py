"""TiTok against the reference's outputs on the tiny fixtures."""
import pytest
import torch

from onetok import TiTok
from onetok.models.titok import TokenizerError

from .golden import TOL, VQGAN_PIXELS_TOL, assert_close, build, load_fixture

VQ_FIXTURES = ["titok_vq_twostage", "titok_vq_stage1", "titok_vq_pixel"]


@pytest.mark.parametrize("name", VQ_FIXTURES)
def test_vq_tokenizer_matches_reference(golden_dir, name):
    meta, weights, io = load_fixture(golden_dir, name)
    model = build(meta, weights, "titok")
    pixels = io["pixel_values"]
    with torch.no_grad():
        assert_close(model.encoder(pixels, model.latent_tokens), io["encoder_output"])
        z_quantized, result = model.encode(pixels)
        assert_close(z_quantized, io["z_quantized"])
        assert torch.equal(result["min_encoding_indices"], io["token_ids"])
        for key, value in meta["quantizer_losses_eval"].items():
            assert result[key].item() == pytest.approx(value, rel=1e-4)
        tol = VQGAN_PIXELS_TOL if name == "titok_vq_twostage" else TOL
        assert_close(model.decode(z_quantized), io["decode"], tol)
        assert_close(model.decode_tokens(io["token_ids"]), io["decode_tokens"], tol)
        assert torch.equal(model.tokenize(pixels), io["token_ids"].flatten(1))


def test_vae_tokenizer_matches_reference(golden_dir):
    meta, weights, io = load_fixture(golden_dir, "titok_vae")
    model = build(meta, weights, "titok")
    with torch.no_grad():
        assert_close(model.encoder(io["pixel_values"], model.latent_tokens), io["encoder_output"])
        sample, posterior = model.encode(io["pixel_values"])
        assert_close(posterior.mean, io["posterior_mean"])
        assert_close(posterior.std, io["posterior_std"])
        assert_close(posterior.kl(), io["posterior_kl"])
        assert_close(model.decode(posterior.mode()), io["decode_mean"])
        means = model.tokenize(io["pixel_values"])
        assert means.shape == (3, 8, 16)
        assert_close(model.detokenize(means), io["decode_mean"].clamp(0, 1))


def test_quantizer_straight_through_gradient(golden_dir):
    meta, weights, io = load_fixture(golden_dir, "titok_vq_pixel")
    model = build(meta, weights, "titok")
    z = torch.randn(2, 16, 1, 8, requires_grad=True)
    z_quantized, result = model.quantize(z)
    # the forward value is the code, the gradient passes straight through to z
    assert torch.allclose(z_quantized, model.quantize.codebook()[result["min_encoding_indices"].flatten()].T.reshape(16, 2, 1, 8).permute(1, 0, 2, 3), atol=1e-6)
    (z_quantized * torch.arange(16.0).view(1, 16, 1, 1)).sum().backward()
    assert torch.equal(z.grad, torch.arange(16.0).view(1, 16, 1, 1).expand(2, 16, 1, 8))


@pytest.mark.parametrize("crop,tokens,legacy", [(32, 5, True), (48, 7, False)])
def test_any_crop_size_and_token_count(crop, tokens, legacy):
    config = {"model": {"vq_model": {"codebook_size": 64, "token_size": 8, "vit_enc_model_size": "tiny",
                                     "vit_dec_model_size": "tiny", "num_latent_tokens": tokens,
                                     "finetune_decoder": legacy, "is_legacy": legacy,
                                     "pixel_hidden_channels": 32, "pixel_z_channels": 16}},
              "dataset": {"preprocessing": {"crop_size": crop}}}
    model = TiTok.from_config(config).eval()
    ids = model.tokenize(torch.rand(2, 3, crop, crop))
    assert ids.shape == (2, tokens)
    images = model.detokenize(ids)
    assert images.shape == (2, 3, crop, crop) and images.min() >= 0 and images.max() <= 1


def test_bad_inputs_have_clear_errors():
    model = TiTok.from_config("titok_tiny").eval()
    with pytest.raises(TokenizerError, match="64x64"):
        model.tokenize(torch.rand(1, 3, 32, 32))
    with pytest.raises(TokenizerError, match="32 tokens"):
        model.detokenize(torch.zeros(1, 31, dtype=torch.long))
    with pytest.raises(TokenizerError, match=r"\[0, 255\]"):
        model.detokenize(torch.full((1, 32), 256))
    with pytest.raises(TokenizerError, match="integer"):
        model.detokenize(torch.zeros(1, 32))
