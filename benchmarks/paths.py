"""The paths the benchmark compares, each built on the reference model's own weights.

fp32 is the reference computation: float32 eager, NCHW, the two guidance passes of the
reference code. The others are the library's own (`onetok.backends`, what a Pipeline runs):
bf16 autocast with channels_last convolutions and batched guidance; int8 Linear layers
(torchao) with the rest in bf16 where native; ONNX Runtime fp32 and int8 on the graphs
`onetok export` writes. "auto" is not a path of its own: the report names the path
`Pipeline(precision="auto")` picks (`backends.probe`, run here on the same model).
"""
from __future__ import annotations

import copy

import torch

from onetok import MaskGIT, TiTok
from onetok.backends import PATHS, GeneratorPath, TokenizerPath
from onetok.fast import optimize_for_inference
from onetok.sampling import default_sampling, generate_seeded

__all__ = ["PATHS", "generator_paths", "tokenizer_paths"]


def twin(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A fast copy: bf16 shares every weight but the 4-D (conv) ones, which go channels_last; int8 owns its Linears."""
    if precision == "int8":
        return optimize_for_inference(copy.deepcopy(model))
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()] if t.dim() != 4}
    return optimize_for_inference(copy.deepcopy(model, shared))


def runner(cls, model: torch.nn.Module, path: str):
    """The library's runner of `path`; ONNX Runtime reads the float model, the torch paths a fast twin."""
    return cls(model if path.startswith("onnx") else twin(model, path), path)


def tokenizer_paths(model: TiTok, wanted: tuple[str, ...]) -> dict[str, tuple]:
    """path -> (tokenize(images), detokenize(ids)) callables."""
    out = {"fp32": (model.tokenize, model.detokenize)}
    for path in wanted:
        if path != "fp32":
            r = runner(TokenizerPath, model, path)
            out[path] = (r.tokenize, r.detokenize)
    return out


def generator_paths(model: MaskGIT, steps: int, seed: int, wanted: tuple[str, ...]) -> dict[str, object]:
    """path -> generate(classes) callable, each seeded alike (ONNX Runtime: its step inside torch's loop)."""
    settings = {**default_sampling(model), "num_sample_steps": steps}

    def seeds(classes):
        return [seed + i for i in range(len(classes))]

    # the reference's two guidance passes; the same per-sample seeds as every other path
    out = {"fp32": lambda classes: generate_seeded(model, classes, seeds(classes), batched_guidance=False, **settings)}
    for path in wanted:
        if path != "fp32":
            r = runner(GeneratorPath, model, path)
            out[path] = (lambda classes, r=r: r.generate(classes, seeds(classes), **settings))
    return out
