"""Typed model configs that read and write the reference config tree.

A released checkpoint's ``config.json`` is the reference's whole OmegaConf tree:
``{"experiment": ..., "model": {"vq_model": ..., "generator": ...},
"dataset": {"preprocessing": {"crop_size": ...}}}``. The dataclasses below hold the
fields our models use; everything else in the tree is kept verbatim so that a
save -> load round trip writes the same file back.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

# width, depth, heads of the ViT sizes (SPEC 1.1); `tiny` is for tests.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),
    "mini": (256, 4, 8),  # ours: CPU-trainable default models
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

QUANTIZE_MODES = ("vq", "vae")
DECODER_HEADS = ("linear", "conv")
GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")
GENERATOR_TYPES = ("ViT", "UViT")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _section(tree: dict, *path: str) -> dict:
    node = tree
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _pick(cls, values: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


@dataclass
class TiTokConfig:
    codebook_size: int = 4096
    token_size: int = 12
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    vit_enc_model_size: str = "large"
    vit_dec_model_size: str = "large"
    vit_enc_patch_size: int = 16
    vit_dec_patch_size: int = 16
    num_latent_tokens: int = 32
    finetune_decoder: bool = True
    is_legacy: bool = True
    quantize_mode: str = "vq"
    # MaskGIT-VQGAN pixel decoder width (released: 128 / 256; fixtures shrink them)
    pixel_hidden_channels: int = 128
    pixel_z_channels: int = 256
    crop_size: int = 256
    # ours, off in every released layout: a learned null token fills the positions past a
    # k-token prefix (models trained with tail-token drop decode any 1 <= k <= K)
    variable_length: bool = False
    # pixel head of a non-legacy decoder: the reference's per-patch linear map ("linear") or
    # ours, conv + pixel-shuffle stages that mix neighbouring patches (no tile seams)
    decoder_head: str = "linear"
    decoder_head_channels: int = 16
    # the rest of the reference tree (experiment, generator, ...), kept for round trips
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        _check_choice("quantize_mode", self.quantize_mode, QUANTIZE_MODES)
        _check_choice("decoder_head", self.decoder_head, DECODER_HEADS)
        if self.decoder_head == "conv":
            if self.is_legacy:
                raise ConfigError("decoder_head 'conv' needs a pixel decoder (is_legacy=False)")
            if self.vit_dec_patch_size % 4 or self.decoder_head_channels % 2 or self.decoder_head_channels < 2:
                raise ConfigError("decoder_head 'conv' needs vit_dec_patch_size divisible by 4 and an even "
                                  "decoder_head_channels >= 2")
        if self.finetune_decoder and self.quantize_mode != "vq":
            raise ConfigError("finetune_decoder=True needs quantize_mode 'vq'")
        for key in ("vit_enc_model_size", "vit_dec_model_size"):
            _check_choice(key, getattr(self, key), VIT_SIZES)
        for key in ("vit_enc_patch_size", "vit_dec_patch_size"):
            if self.crop_size % getattr(self, key):
                raise ConfigError(f"crop_size {self.crop_size} is not divisible by {key} {getattr(self, key)}")
        if self.num_latent_tokens < 1:
            raise ConfigError("num_latent_tokens must be >= 1")

    @property
    def is_vae(self) -> bool:
        return self.quantize_mode == "vae"

    @property
    def is_stage1(self) -> bool:
        """A two-stage TiTok before its decoder is fine-tuned: it predicts the teacher VQGAN's proxy
        codes, not pixels."""
        return self.is_legacy and not self.finetune_decoder

    @property
    def bits_per_token(self) -> float:
        import math

        return math.log2(self.codebook_size)

    @property
    def bits_per_image(self) -> float:
        """The information in one image's ids: tokens x log2(codebook size) (the one formula)."""
        return self.num_latent_tokens * self.bits_per_token

    @classmethod
    def from_dict(cls, tree: dict) -> "TiTokConfig":
        if not isinstance(tree, dict) or "model" not in tree or "vq_model" not in tree["model"]:
            raise ConfigError("a tokenizer config needs a 'model.vq_model' section")
        vq = dict(tree["model"]["vq_model"])
        crop = _section(tree, "dataset", "preprocessing").get("crop_size", 256)
        return cls(**_pick(cls, vq), crop_size=crop, extra=copy.deepcopy(tree))

    def to_dict(self) -> dict:
        tree = copy.deepcopy(self.extra)
        vq = tree.setdefault("model", {}).setdefault("vq_model", {})
        for f in dataclasses.fields(self):
            if f.name in ("extra", "crop_size"):
                continue
            value = getattr(self, f.name)
            # keep the reference's sparse trees sparse: only write keys it had or that differ
            if f.name in vq or value != f.default:
                vq[f.name] = value
        tree.setdefault("dataset", {}).setdefault("preprocessing", {})["crop_size"] = self.crop_size
        return tree


_INTERPOLATION = re.compile(r"^\$\{([^}]+)\}$")


def resolve_interpolations(tree: dict) -> dict:
    """Resolve OmegaConf-style ``${a.b.c}`` strings (the reference saves them unresolved)."""

    def lookup(path: str):
        node: Any = tree
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ConfigError(f"config interpolation ${{{path}}} points nowhere")
            node = node[key]
        return node

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str) and (m := _INTERPOLATION.match(node)):
            return walk(lookup(m.group(1)))
        return node

    return walk(tree)


@dataclass
class GeneratorConfig:
    model_type: str = "ViT"
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1
    attn_drop: float = 0.1
    num_steps: int = 8
    class_label_dropout: float = 0.1
    image_seq_len: int = 32
    condition_num_classes: int = 1000
    randomize_temperature: float = 9.5
    guidance_scale: float = 4.5
    guidance_decay: str = "linear"
    guidance_scale_pow: float = 3.0
    # from model.vq_model: the token vocabulary the generator predicts
    codebook_size: int = 4096
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        _check_choice("generator.model_type", self.model_type, GENERATOR_TYPES)
        _check_choice("guidance_decay", self.guidance_decay, GUIDANCE_DECAYS)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError("hidden_size must be divisible by num_attention_heads")

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def sampling(self) -> dict:
        """The sampling settings this generator was configured with (`MaskGIT.generate`'s keywords)."""
        return {"guidance_scale": self.guidance_scale, "guidance_decay": self.guidance_decay,
                "guidance_scale_pow": self.guidance_scale_pow, "randomize_temperature": self.randomize_temperature,
                "softmax_temperature_annealing": False, "num_sample_steps": self.num_steps}

    @property
    def vocab_size(self) -> int:
        # codes, mask, classes, null class
        return self.codebook_size + 1 + self.condition_num_classes + 1

    @classmethod
    def from_dict(cls, tree: dict) -> "GeneratorConfig":
        if not isinstance(tree, dict) or "generator" not in tree.get("model", {}):
            raise ConfigError("a generator config needs a 'model.generator' section")
        resolved = resolve_interpolations(tree)
        gen = dict(resolved["model"]["generator"])
        vq = _section(resolved, "model", "vq_model")
        gen.setdefault("image_seq_len", vq.get("num_latent_tokens", 32))
        return cls(**_pick(cls, gen), codebook_size=vq.get("codebook_size", 4096), extra=copy.deepcopy(tree))

    def to_dict(self) -> dict:
        tree = copy.deepcopy(self.extra)
        model = tree.setdefault("model", {})
        gen = model.setdefault("generator", {})
        for f in dataclasses.fields(self):
            if f.name in ("extra", "codebook_size"):
                continue
            value = getattr(self, f.name)
            if f.name == "image_seq_len" and isinstance(gen.get(f.name), str):
                continue  # keep an unresolved interpolation as the reference wrote it
            if f.name in gen or value != f.default:
                gen[f.name] = value
        model.setdefault("vq_model", {})["codebook_size"] = self.codebook_size
        return tree


@dataclass
class VQGANConfig:
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_resolutions: int = 5
    dropout: float = 0.0
    hidden_channels: int = 128
    num_channels: int = 3
    num_res_blocks: int = 2
    resolution: int = 256
    z_channels: int = 256
    num_embeddings: int = 1024
    embedding_dim: int = 256

    def __post_init__(self):
        self.channel_mult = tuple(self.channel_mult)
        if len(self.channel_mult) != self.num_resolutions:
            raise ConfigError("channel_mult needs one entry per resolution")

    @classmethod
    def from_dict(cls, values: dict) -> "VQGANConfig":
        return cls(**_pick(cls, values))

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["channel_mult"] = list(self.channel_mult)
        return out


# ---------------------------------------------------------------- presets

def _tokenizer_tree(name: str, vq: dict, generator: dict | None = None, ckpt: str | None = None) -> dict:
    experiment = {"tokenizer_checkpoint": ckpt or f"tokenizer_{name}.bin"}
    if generator:
        experiment["generator_checkpoint"] = f"generator_{name}.bin"
    experiment["output_dir"] = name
    tree = {"experiment": experiment, "model": {"vq_model": vq}}
    if generator:
        tree["model"]["generator"] = generator
    tree["dataset"] = {"preprocessing": {"crop_size": 256}}
    return tree


def _legacy_vq(size: str, tokens: int) -> dict:
    return {
        "codebook_size": 4096, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
        "vit_enc_model_size": size, "vit_dec_model_size": size, "vit_enc_patch_size": 16,
        "vit_dec_patch_size": 16, "num_latent_tokens": tokens, "finetune_decoder": True,
    }


def _generator(model_type, hidden, layers, mlp, steps, tokens, temp, scale, decay) -> dict:
    return {
        "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": 16, "intermediate_size": mlp, "dropout": 0.1, "attn_drop": 0.1,
        "num_steps": steps, "class_label_dropout": 0.1, "image_seq_len": tokens,
        "condition_num_classes": 1000, "randomize_temperature": temp, "guidance_scale": scale,
        "guidance_decay": decay,
    }


def _single_stage(enc: str, tokens: int, mode: str) -> dict:
    vq = {"quantize_mode": "vae", "token_size": 16} if mode == "vae" else {
        "codebook_size": 8192, "token_size": 64, "use_l2_norm": False, "commitment_cost": 0.25}
    return {**vq, "vit_enc_model_size": enc, "vit_dec_model_size": "large", "vit_enc_patch_size": 16,
            "vit_dec_patch_size": 16, "num_latent_tokens": tokens, "finetune_decoder": False,
            "is_legacy": False}


_LEGACY = {
    "titok_l32": ("large", 32, _generator("ViT", 768, 24, 3072, 8, 32, 9.5, 4.5, "linear")),
    "titok_b64": ("base", 64, _generator("ViT", 768, 24, 3072, 8, 64, 11.0, 3.0, "linear")),
    "titok_s128": ("small", 128, _generator("UViT", 1024, 20, 4096, 64, 128, 2.8, 6.9, "power-cosine")),
}

PRESETS: dict[str, dict] = {}
for _name, (_size, _k, _gen) in _LEGACY.items():
    PRESETS[_name] = _tokenizer_tree(_name, _legacy_vq(_size, _k), _gen)
    PRESETS[f"generator_{_name}"] = PRESETS[_name]
for _name, (_enc, _k, _mode) in {
    "titok_bl64_vq8k": ("base", 64, "vq"), "titok_bl128_vq8k": ("base", 128, "vq"),
    "titok_sl256_vq8k": ("small", 256, "vq"), "titok_ll32_vae_c16": ("large", 32, "vae"),
    "titok_bl64_vae_c16": ("base", 64, "vae"), "titok_bl128_vae_c16": ("base", 128, "vae"),
}.items():
    _ckpt = f"tokenizer_{_name}.bin" if _mode == "vq" else f"{_name}.bin"
    PRESETS[_name] = _tokenizer_tree(_name, _single_stage(_enc, _k, _mode), ckpt=_ckpt)

# One-D-Piece (Turing Inc.): TiTok's two-stage modules with 256 tokens, trained with tail-token
# drop and decoded from a k-token prefix alone (their `strict_length_assertion: false`)
ONE_D_PIECE = {"one_d_piece_l256": "large", "one_d_piece_b256": "base", "one_d_piece_s256": "small"}
for _name, _size in ONE_D_PIECE.items():
    PRESETS[_name] = _tokenizer_tree(_name, {**_legacy_vq(_size, 256), "strict_length_assertion": False})

# tiny models for tests and CPU quickstarts
PRESETS["titok_tiny"] = {
    "model": {
        "vq_model": {
            "codebook_size": 256, "token_size": 12, "use_l2_norm": True, "commitment_cost": 0.25,
            "vit_enc_model_size": "tiny", "vit_dec_model_size": "tiny", "vit_enc_patch_size": 16,
            "vit_dec_patch_size": 16, "num_latent_tokens": 32, "finetune_decoder": False, "is_legacy": False,
        },
        "generator": {
            "model_type": "ViT", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 256, "dropout": 0.1, "attn_drop": 0.1, "num_steps": 8,
            "class_label_dropout": 0.1, "image_seq_len": 32, "condition_num_classes": 10,
            "randomize_temperature": 2.0, "guidance_scale": 2.0, "guidance_decay": "linear",
        },
    },
    "dataset": {"preprocessing": {"crop_size": 64}},
}
PRESETS["generator_titok_tiny"] = PRESETS["titok_tiny"]

# Hugging Face repos of the released models
HUB_IDS: dict[str, str] = {
    **{n: f"yucornetto/tokenizer_{n}_imagenet" for n in PRESETS if n.startswith("titok_") and n != "titok_tiny"},
    **{f"generator_{n}": f"yucornetto/generator_{n}_imagenet" for n in _LEGACY},
    **{n: f"turing-motors/One-D-Piece-{size[0].upper()}-256" for n, size in ONE_D_PIECE.items()},
}


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])


def check_pairing(tokenizer: TiTokConfig, generator: GeneratorConfig,
                  tokenizer_name: str = "the tokenizer", generator_name: str = "the generator") -> None:
    """A generator decodes only through a tokenizer with its token count and codebook size."""
    if tokenizer.is_vae:
        raise ConfigError(f"generator {generator_name} predicts token ids, but tokenizer {tokenizer_name} "
                          "is a continuous (VAE) tokenizer")
    if (generator.image_seq_len, generator.codebook_size) != (tokenizer.num_latent_tokens, tokenizer.codebook_size):
        raise ConfigError(
            f"generator {generator_name} makes {generator.image_seq_len} ids from a codebook of "
            f"{generator.codebook_size}, but tokenizer {tokenizer_name} uses {tokenizer.num_latent_tokens} "
            f"tokens from a codebook of {tokenizer.codebook_size}")
