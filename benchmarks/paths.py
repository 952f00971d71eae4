"""The paths the benchmark compares, each built on the reference model's own weights.

fp32 is the reference computation: float32 eager, NCHW, the two guidance passes of the
reference code. The others: bf16 autocast with channels_last convolutions and batched guidance;
int8 Linear layers (torchao) with the rest in bf16 where native; ONNX Runtime fp32 and int8
(the exported graphs of `onetok export`).
"""
from __future__ import annotations

import copy
import tempfile

import torch

from onetok import MaskGIT, TiTok
from onetok.export import export_onnx, with_onnx_step
from onetok.fast import optimize_for_inference
from onetok.sampling import default_sampling

PATHS = ("fp32", "bf16", "int8", "ort-fp32", "ort-int8")


def twin(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A fast copy: bf16 shares every weight but the 4-D (conv) ones, which go channels_last; int8 owns its Linears."""
    if precision == "int8":
        return optimize_for_inference(copy.deepcopy(model), precision="int8")
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()] if t.dim() != 4}
    return optimize_for_inference(copy.deepcopy(model, shared))


def onnx_folder(tokenizer: TiTok | None = None, generator: MaskGIT | None = None) -> str:
    """A temporary export (fp32 and int8 graphs); removed when the process ends."""
    folder = tempfile.TemporaryDirectory(prefix="onetok-bench-")
    export_onnx(folder.name, tokenizer, generator, int8=True)
    _KEEP.append(folder)
    return folder.name


_KEEP: list = []


def tokenizer_paths(model: TiTok, wanted: tuple[str, ...]) -> dict[str, tuple]:
    """path -> (tokenize(images), detokenize(ids)) callables."""
    from onetok.onnx import OnnxTokenizer

    out = {"fp32": (model.tokenize, model.detokenize)}
    for precision in ("bf16", "int8"):
        if precision in wanted:
            fast = twin(model, precision)
            out[precision] = (lambda x, m=fast, p=precision: m.tokenize(x, precision=p),
                              lambda i, m=fast, p=precision: m.detokenize(i, precision=p))
    if {"ort-fp32", "ort-int8"} & set(wanted):
        folder = onnx_folder(tokenizer=model)
        for name, int8 in (("ort-fp32", False), ("ort-int8", True)):
            if name in wanted:
                onnx = OnnxTokenizer(folder, int8=int8, threads=torch.get_num_threads())
                out[name] = (lambda x, o=onnx: o.tokenize(x.numpy()), lambda i, o=onnx: o.detokenize(i.numpy()))
    return out


def generator_paths(model: MaskGIT, steps: int, seed: int, wanted: tuple[str, ...]) -> dict[str, object]:
    """path -> generate(classes) callable, each seeded alike (ONNX Runtime: its step inside torch's loop)."""
    from onetok.onnx import OnnxGenerator

    settings = {**default_sampling(model), "num_sample_steps": steps}

    def torch_path(net, batched: bool, precision: str):
        def run(classes):
            torch.manual_seed(seed)
            return net.generate(classes, batched_guidance=batched, precision=precision, **settings)
        return run

    out = {"fp32": torch_path(model, False, "fp32")}
    if "bf16" in wanted:
        out["bf16"] = torch_path(twin(model, "bf16"), True, "bf16")
    if "int8" in wanted:
        out["int8"] = torch_path(twin(model, "int8"), True, "int8")
    if {"ort-fp32", "ort-int8"} & set(wanted):
        folder = onnx_folder(generator=model)
        for name, int8 in (("ort-fp32", False), ("ort-int8", True)):
            if name in wanted:
                step = OnnxGenerator(folder, int8=int8, threads=torch.get_num_threads())
                out[name] = torch_path(with_onnx_step(model, step), True, "fp32")
    return out
