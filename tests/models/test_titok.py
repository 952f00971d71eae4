"""TiTok against the reference's outputs on the tiny fixtures."""
import json

import pytest
import torch

from onetok import TiTok
from onetok.config import ConfigError, preset
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
    with pytest.raises(TokenizerError, match="1 to 32 tokens"):
        model.detokenize(torch.zeros(1, 33, dtype=torch.long))
    for bad in (0, 33, 2.0, True):
        with pytest.raises(TokenizerError, match=r"num_tokens must be an integer in \[1, 32\]"):
            model.tokenize(torch.rand(1, 3, 64, 64), num_tokens=bad)
    with pytest.raises(TokenizerError, match=r"\[0, 255\]"):
        model.detokenize(torch.full((1, 32), 256))
    with pytest.raises(TokenizerError, match="integer"):
        model.detokenize(torch.zeros(1, 32))


@pytest.mark.parametrize("name", ["titok_vq_pixel", "titok_vq_twostage", "titok_vae"])
def test_prefix_of_a_released_layout(golden_dir, name):
    """A model without the option: the first k ids of tokenize(), and any (B, k) decodes."""
    meta, weights, io = load_fixture(golden_dir, name)
    model = build(meta, weights, "titok")
    assert not model.config.variable_length and "decoder.null_token" not in model.state_dict()
    pixels = io["pixel_values"]
    full = model.tokenize(pixels)
    big_k = model.config.num_latent_tokens
    for k in (1, big_k // 2, big_k):
        prefix = model.tokenize(pixels, num_tokens=k)
        assert torch.equal(prefix, full[:, :k])
        images = model.detokenize(prefix)
        assert images.shape == pixels.shape and torch.isfinite(images).all()
    assert torch.equal(model.detokenize(full), model.detokenize(model.tokenize(pixels, num_tokens=big_k)))


def _tiny(**vq):
    tree = preset("titok_tiny")
    tree["model"]["vq_model"].update(vq)
    return TiTok.from_config(tree).eval()


def test_null_token_fills_the_positions_past_the_prefix():
    torch.manual_seed(0)
    model = _tiny(variable_length=True)
    with torch.no_grad():
        model.decoder.null_token.normal_()
    ids = model.tokenize(torch.rand(2, 3, 64, 64))
    z = model.quantize.get_codebook_entry(ids[:, :5].reshape(-1)).reshape(2, 5, -1).permute(0, 2, 1)[:, :, None]
    keep = torch.arange(32)[None].expand(2, -1) < 5
    padded = torch.cat([z, torch.zeros(2, z.shape[1], 1, 27)], dim=3)  # garbage past k, masked out
    with torch.no_grad():
        # a (B, k) prefix decodes exactly as the full-shape graph with the tail masked (training's path)
        assert_close(model.decode_tokens(ids[:, :5]), model.decode(padded, keep))
        assert not torch.allclose(model.decode_tokens(ids[:, :5]), model.decode_tokens(ids))


def test_variable_length_and_conv_head_round_trip_config_json(tmp_path):
    model = _tiny(variable_length=True, decoder_head="conv", decoder_head_channels=8)
    model.save_pretrained(tmp_path)
    vq = json.loads((tmp_path / "config.json").read_text())["model"]["vq_model"]
    assert (vq["variable_length"], vq["decoder_head"], vq["decoder_head_channels"]) == (True, "conv", 8)
    again = TiTok.from_pretrained(tmp_path)
    assert again.config == model.config
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    # off by default: released config trees gain no key
    assert "variable_length" not in TiTok.from_config("titok_tiny").config.to_dict()["model"]["vq_model"]


def test_conv_head_has_no_tile_seams_by_construction():
    """Each output pixel of the conv head depends on neighbouring patches, unlike the linear one."""
    for head, crosses in (("linear", False), ("conv", True)):
        model = _tiny(decoder_head=head)
        grid = torch.zeros(1, 64, 4, 4, requires_grad=True)
        pixels = model.decoder.conv_out(model.decoder.ffn(grid))
        assert pixels.shape == (1, 3, 64, 64)
        pixels[0, :, 20, 20].sum().backward()  # pixel (20, 20) lies in patch (1, 1), 4 px from its corner
        reach = grid.grad.abs().sum(dim=(0, 1)) > 0
        assert bool(reach[1, 1]) and bool(reach[0, 0]) is crosses


def test_conv_head_config_is_checked():
    with pytest.raises(ConfigError, match="decoder_head"):
        _tiny(decoder_head="mlp")
    with pytest.raises(ConfigError, match="is_legacy"):
        _tiny(decoder_head="conv", is_legacy=True, finetune_decoder=True)
