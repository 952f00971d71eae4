"""Checkpoint layout: released manifests, save/load round trips, clear load errors."""
import json

import pytest
import torch

from onetok import MaskGIT, MaskGITVQGAN, TiTok, TiTokConfig
from onetok.config import HUB_IDS, GeneratorConfig, preset
from onetok.hub import CheckpointError

TOKENIZER_MANIFESTS = [
    "tokenizer_titok_l32", "tokenizer_titok_b64", "tokenizer_titok_s128", "tokenizer_titok_bl64_vq8k",
    "tokenizer_titok_bl128_vq8k", "tokenizer_titok_sl256_vq8k", "tokenizer_titok_ll32_vae_c16",
    "tokenizer_titok_bl64_vae_c16", "tokenizer_titok_bl128_vae_c16",
]
GENERATOR_MANIFESTS = ["generator_titok_l32", "generator_titok_b64", "generator_titok_s128"]


def _manifest(golden_dir, name):
    return json.loads((golden_dir / "manifests" / f"{name}.json").read_text())


def _assert_layout(model, manifest):
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(actual) == list(manifest["state_dict"])  # same keys, same order
    assert actual == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


@pytest.mark.parametrize("name", TOKENIZER_MANIFESTS)
def test_tokenizer_layout_matches_release(golden_dir, name):
    manifest = _manifest(golden_dir, name)
    with torch.device("meta"):
        model = TiTok.from_config(manifest["config"])
    _assert_layout(model, manifest)
    # the named preset describes the same model
    assert TiTokConfig.from_dict(preset(name.removeprefix("tokenizer_"))) == model.config


@pytest.mark.parametrize("name", GENERATOR_MANIFESTS)
def test_generator_layout_matches_release(golden_dir, name):
    manifest = _manifest(golden_dir, name)
    with torch.device("meta"):
        model = MaskGIT.from_config(manifest["config"])
    _assert_layout(model, manifest)
    assert GeneratorConfig.from_dict(preset(name)) == model.config


def test_vqgan_layout_matches_release(golden_dir):
    manifest = _manifest(golden_dir, "maskgit_vqgan_imagenet")
    with torch.device("meta"):
        model = MaskGITVQGAN(**manifest["config"])
    _assert_layout(model, manifest)


def _one_d_piece_tree(size):
    """The facts of One-D-Piece's published configs (configs/one-d-piece_{l,b,s}256.yaml)."""
    vq = {"codebook_size": 4096, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
          "vit_enc_model_size": size, "vit_dec_model_size": size, "vit_enc_patch_size": 16,
          "vit_dec_patch_size": 16, "num_latent_tokens": 256, "finetune_decoder": True,
          "strict_length_assertion": False}
    return {"experiment": {"length": 256}, "model": {"type": "one_d_piece", "vq_model": vq},
            "dataset": {"preprocessing": {"crop_size": 256}}}


@pytest.mark.parametrize("name,size,titok,repo", [
    ("one_d_piece_l256", "large", "tokenizer_titok_l32", "turing-motors/One-D-Piece-L-256"),
    ("one_d_piece_b256", "base", "tokenizer_titok_b64", "turing-motors/One-D-Piece-B-256"),
    ("one_d_piece_s256", "small", "tokenizer_titok_s128", "turing-motors/One-D-Piece-S-256"),
])
def test_one_d_piece_layout_is_titok_with_256_tokens(golden_dir, name, size, titok, repo):
    """One-D-Piece ships TiTok's two-stage modules: the released TiTok layout, latent tables of 256 rows."""
    manifest = _manifest(golden_dir, titok)
    with torch.device("meta"):
        model = TiTok.from_config(_one_d_piece_tree(size))
    latent_tables = ("latent_tokens", "encoder.latent_token_positional_embedding",
                     "decoder.latent_token_positional_embedding")
    expected = {k: [256, v[1]] if k in latent_tables else v for k, v in manifest["state_dict"].items()}
    released_k, width = manifest["state_dict"]["latent_tokens"]
    _assert_layout(model, {"state_dict": expected,
                           "num_params": manifest["num_params"] + 3 * (256 - released_k) * width})
    assert not model.config.variable_length  # decodes a prefix alone, as it was trained
    assert TiTokConfig.from_dict(preset(name)) == model.config
    assert HUB_IDS[name] == repo


def test_config_json_round_trip(golden_dir):
    tree = _manifest(golden_dir, "tokenizer_titok_l32")["config"]
    assert TiTokConfig.from_dict(tree).to_dict() == tree
    assert GeneratorConfig.from_dict(tree).to_dict() == tree


def test_unresolved_interpolation_is_resolved():
    tree = preset("generator_titok_b64")
    tree["model"]["generator"]["image_seq_len"] = "${model.vq_model.num_latent_tokens}"
    config = GeneratorConfig.from_dict(tree)
    assert config.image_seq_len == 64
    assert config.to_dict()["model"]["generator"]["image_seq_len"] == "${model.vq_model.num_latent_tokens}"


@pytest.mark.parametrize("safe", [True, False])
def test_save_load_round_trip_is_bit_exact(tmp_path, safe):
    model = TiTok.from_config("titok_tiny").eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
    loaded = TiTok.from_pretrained(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(model.tokenize(images), loaded.tokenize(images))
    assert not loaded.training


def test_generator_round_trip(tmp_path):
    model = MaskGIT.from_config("generator_titok_tiny").eval()
    model.save_pretrained(tmp_path)
    loaded = MaskGIT.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    torch.manual_seed(1)
    a = model.generate(torch.tensor([0, 3]), num_sample_steps=4)
    torch.manual_seed(1)
    assert torch.equal(a, loaded.generate(torch.tensor([0, 3]), num_sample_steps=4))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        TiTok.from_pretrained(tmp_path)
    TiTok.from_config("titok_tiny").save_pretrained(tmp_path / "ok")
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["model"]["vq_model"]["num_latent_tokens"] = 16
    (tmp_path / "ok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="latent_tokens"):
        TiTok.from_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="no such folder"):
        TiTok.from_pretrained(tmp_path / "missing")


def test_hub_id_offline_says_how_to_use_a_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="local folder"):
        TiTok.from_pretrained("titok_l32")


def test_half_precision_checkpoint_loads_as_float32(tmp_path):
    model = TiTok.from_config("titok_tiny").eval()
    model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = TiTok.from_pretrained(tmp_path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.half().float(), b), k
