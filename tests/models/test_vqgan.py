import torch

from .golden import VQGAN_PIXELS_TOL, assert_close, build, load_fixture


def test_maskgit_vqgan_matches_reference(golden_dir):
    meta, weights, io = load_fixture(golden_dir, "maskgit_vqgan")
    model = build(meta, weights, "vqgan")
    with torch.no_grad():
        z, z_quantized, ids = model.encode_latents(io["pixel_values"])
        assert_close(z, io["encoder_output"])
        assert_close(z_quantized, io["z_quantized"])
        assert torch.equal(ids, io["token_ids"])
        assert torch.equal(model.encode(io["pixel_values"]), io["token_ids"])
        assert_close(model.decode(z_quantized), io["decode"], VQGAN_PIXELS_TOL)
        assert_close(model.decode_tokens(ids), io["decode"], VQGAN_PIXELS_TOL)
