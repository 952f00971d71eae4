"""Which models the demo serves: the one place that loads them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from onetok import hub
from onetok.errors import ModelLoadError
from onetok.pipeline import Pipeline, shipped_generator_exists


@dataclass
class LoadedTokenizer:
    name: str
    pipeline: Pipeline  # tokenizer only: what the Reconstruct tab runs

    @property
    def num_tokens(self) -> int:
        return self.pipeline.num_tokens

    @property
    def codebook_size(self) -> int:
        return self.pipeline.codebook_size

    @property
    def crop_size(self) -> int:
        return self.pipeline.image_size

    @property
    def label(self) -> str:
        return f"{self.num_tokens} tokens · {self.name}"


@dataclass
class LoadedGenerator:
    name: str
    pipeline: Pipeline  # the generator with the tokenizer that decodes its ids
    tokenizer: LoadedTokenizer

    @property
    def class_names(self) -> list[str]:
        return self.pipeline.class_names

    @property
    def sampling(self) -> dict:
        """The generator's configured settings: the page's starting values."""
        return self.pipeline.sampling


@dataclass
class AppModels:
    tokenizers: list[LoadedTokenizer]  # fewest tokens first
    generator: LoadedGenerator | None = None
    examples: list[Path] = field(default_factory=list)

    def tokenizer(self, label: str) -> LoadedTokenizer:
        for tokenizer in self.tokenizers:
            if tokenizer.label == label:
                return tokenizer
        raise ModelLoadError(f"no tokenizer named {label!r} is loaded")


def _name(spec: str) -> str:
    return Path(spec).name or spec


def wrap_tokenizer(model: torch.nn.Module, name: str) -> LoadedTokenizer:
    config = model.config
    if config.is_vae:
        raise ModelLoadError(f"{name} is a continuous (VAE) tokenizer; the app shows discrete token ids")
    if config.is_stage1:
        raise ModelLoadError(f"{name} is a stage-1 tokenizer: it predicts proxy codes, not pixels")
    return LoadedTokenizer(name, Pipeline(model, tokenizer_name=name))


def wrap_generator(model: torch.nn.Module, name: str, tokenizers: list[LoadedTokenizer]) -> LoadedGenerator:
    """Pair a generator with the first loaded tokenizer whose ids it predicts (the Pipeline's check)."""
    problem = f"generator {name}: no tokenizer is loaded"
    for tokenizer in tokenizers:
        try:
            pipeline = Pipeline(tokenizer.pipeline.tokenizer, model, tokenizer.pipeline.device,
                                tokenizer.pipeline.requested_precision, tokenizer.name, name)
        except ValueError as err:  # this tokenizer does not fit; try the next
            problem = str(err)
            continue
        return LoadedGenerator(name, pipeline, tokenizer)
    raise ModelLoadError(f"{problem}; load a tokenizer with the same (--tokenizer)")


def load_models(tokenizer_specs: list[str], generator_spec: str | None) -> AppModels:
    """Load checkpoint folders or hub ids; with none given, the tokenizer and generator shipped with onetok."""
    from onetok import MaskGIT, TiTok

    if not tokenizer_specs:
        try:
            tokenizer_specs = [str(hub.default_tokenizer_path())]
        except ValueError:
            raise ModelLoadError("no default tokenizer is shipped in this build: pass --tokenizer FOLDER_OR_HUB_ID") from None
        generator_spec = generator_spec or shipped_generator()
    tokenizers = sorted(
        (wrap_tokenizer(TiTok.from_pretrained(spec), _name(spec)) for spec in tokenizer_specs),
        key=lambda tokenizer: tokenizer.num_tokens,
    )
    generator = None
    if generator_spec:
        generator = wrap_generator(MaskGIT.from_pretrained(generator_spec), _name(generator_spec), tokenizers)
    return AppModels(tokenizers, generator, hub.example_photos())


def shipped_generator() -> str | None:
    """The shipped generator's folder; None in a build without one (the page has no Generate tab)."""
    return str(hub.default_generator_path()) if shipped_generator_exists() else None


def shipped_models_note() -> str:
    """One sentence on what the models shipped with onetok are, read from the shipped tokenizer."""
    from math import prod

    from safetensors import safe_open

    from onetok.models import TiTok

    folder = Path(hub.default_tokenizer_path())
    config = TiTok.config_class.from_dict(json.loads((folder / "config.json").read_text()))
    with safe_open(folder / "model.safetensors", "pt") as weights:
        params = sum(prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return (f"The models shipped with onetok are deliberately small: a {params / 1e6:.1f}M-parameter tokenizer of "
            f"{config.crop_size} px images into {config.num_latent_tokens} tokens, and a generator on its tokens, "
            "both trained on a CPU from a few hundred photos; the released ImageNet checkpoints load by folder or "
            "hub id (`onetok app --tokenizer yucornetto/tokenizer_titok_l32_imagenet`).")
