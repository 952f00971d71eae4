"""Loading the reference's tiny fixtures (../shared/golden/tiny)."""
import json

import torch
from safetensors.torch import load_file

from onetok import MaskGIT, MaskGITVQGAN, TiTok
from onetok.hub import load_state_strict

TOL = dict(rtol=1e-4, atol=1e-5)
# Pixels out of the MaskGIT-VQGAN decoder (about 30 stacked 3x3 convs, values up to ~6):
# recomputing it in float64 lands 3e-5 from the reference's float32 output, so that
# is the reference's own rounding; allow it, and no more.
VQGAN_PIXELS_TOL = dict(rtol=1e-4, atol=5e-5)


def load_fixture(golden_dir, name):
    meta = json.loads((golden_dir / "tiny" / f"{name}.json").read_text())
    weights = load_file(str(golden_dir / "tiny" / f"{name}.weights.safetensors"))
    io = load_file(str(golden_dir / "tiny" / f"{name}.io.safetensors"))
    return meta, weights, io


def build(meta, weights, kind):
    config = meta["config"]
    if kind == "vqgan":
        model = MaskGITVQGAN(**config["vqgan"], num_embeddings=config["codebook"][0], embedding_dim=config["codebook"][1])
    else:
        model = {"titok": TiTok, "maskgit": MaskGIT}[kind].from_config(config)
    load_state_strict(model, weights, "fixture")
    return model.eval()


def assert_close(actual, expected, tol=TOL):
    torch.testing.assert_close(actual.float(), expected.float(), **tol)
