"""Export a tokenizer and a generator to ONNX files that `onetok.onnx` runs without PyTorch.

Three graphs, each with a dynamic batch dimension:

* encoder.onnx: images (B, 3, H, W) in [0, 1] -> ids (B, K); the nearest-code search is in
  the graph and stays float32.
* decoder.onnx: ids (B, K) -> images (B, 3, H, W) clamped to [0, 1]. A variable-length model's
  decoder also takes num_tokens (B,): positions from there on get the null token, so one
  fixed-shape graph decodes every prefix length (the runner pads the ids).
* generator_step.onnx: ids (B, K), classes (B,), guidance (B,) -> guided logits (B, K, N),
  the conditional and unconditional passes in one batch: cond + (cond - uncond) * guidance.

With ``int8=True`` each graph also gets an ``*.int8.onnx`` twin from ONNX Runtime's dynamic
quantization, restricted to the MatMuls that multiply by a weight (the Linear layers):
attention products and the quantizer's code search keep float32.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from .files import atomic_write_bytes
from .models import MaskGIT, TiTok
from .onnx import META_NAME, OnnxGenerator
from .sampling import default_sampling

OPSET = 17


class _Encoder(nn.Module):
    def __init__(self, model: TiTok):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = self.model.encoder(images, self.model.latent_tokens)
        return self.model.quantize(z)[1]["min_encoding_indices"].reshape(images.shape[0], -1)


class _Decoder(nn.Module):
    def __init__(self, model: TiTok):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.decode_tokens(ids).float().clamp(0.0, 1.0)


class _PrefixDecoder(_Decoder):
    def forward(self, ids: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
        # the keep mask takes the null-token path of decoding a (B, k) prefix, at a fixed shape
        keep = torch.arange(ids.shape[1], device=ids.device)[None, :] < num_tokens[:, None]
        return self.model.decode_tokens(ids, keep).float().clamp(0.0, 1.0)


class _GeneratorStep(nn.Module):
    def __init__(self, model: MaskGIT):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, classes: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        keep = torch.zeros_like(classes, dtype=torch.bool)
        both = self.model.forward_with_drop(torch.cat([ids, ids]), torch.cat([classes, classes]),
                                            torch.cat([keep, ~keep])).float()
        cond, uncond = both.chunk(2)
        return cond + (cond - uncond) * guidance[:, None, None]


@contextlib.contextmanager
def _staged(path: Path):
    """A private folder beside `path` to write `path.name` (and its `.data` file) into; on success both
    are renamed into place, the weights first, so readers never see half an export."""
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield stage / path.name
        data = stage / f"{path.name}.data"
        if data.exists():
            os.chmod(data, 0o644)
            os.replace(data, path.parent / data.name)
        else:
            (path.parent / data.name).unlink(missing_ok=True)
        os.chmod(stage / path.name, 0o644)  # the exported files are meant to be shared
        os.replace(stage / path.name, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _one_data_file(graph_path: Path) -> None:
    """ONNX files are protobufs, 2 GiB at most: torch writes a larger graph's weights one file each
    beside it. Gather them into one GRAPH.onnx.data."""
    import onnx

    if {p.name for p in graph_path.parent.iterdir()} <= {graph_path.name, f"{graph_path.name}.data"}:
        return
    model = onnx.load(str(graph_path))  # reads the per-weight files
    for other in graph_path.parent.iterdir():
        other.unlink()
    onnx.save_model(model, str(graph_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{graph_path.name}.data", size_threshold=1024)


def _export(module: nn.Module, inputs: tuple, names: list[str], output: str, path: Path) -> None:
    """torch.onnx.export, staged beside `path` (readers never see half a file)."""
    axes = {name: {0: "batch"} for name in [*names, output]}
    with _staged(path) as staged:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks
            torch.onnx.export(module.eval(), inputs, str(staged), input_names=names, output_names=[output],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        _one_data_file(staged)


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic int8 quantization of the weight MatMuls (Linear layers) only."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    linear = [n.name for n in graph.node
              if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in weights
              and "quantize" not in n.name]
    large = (source.parent / f"{source.name}.data").exists()
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the graph, printed per call
    try:
        with _staged(target) as staged:
            quantize_dynamic(str(source), str(staged), op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=linear,
                             per_channel=True, weight_type=QuantType.QInt8, use_external_data_format=large)
            if large:
                _one_data_file(staged)
    finally:
        logging.getLogger().setLevel(quiet)


def _with_int8(folder: Path, files: dict, int8: bool) -> dict:
    out = {"fp32": files}
    if int8:
        out["int8"] = {}
        for part, name in files.items():
            int8_name = name.replace(".onnx", ".int8.onnx")
            quantize_int8(folder / name, folder / int8_name)
            out["int8"][part] = int8_name
    return out


def exportable(model: TiTok | MaskGIT) -> bool:
    """Generators, and VQ tokenizers that decode to pixels (not VAEs, not stage-1 proxy-code models)."""
    cfg = model.config
    return isinstance(model, MaskGIT) or not (cfg.is_vae or cfg.is_stage1)


def export_tokenizer(model: TiTok, folder: Path, int8: bool = False) -> dict:
    cfg = model.config
    if not exportable(model):
        raise ValueError("only VQ tokenizers that decode to pixels can be exported")
    model = model.float().eval()
    images = torch.rand(2, 3, cfg.crop_size, cfg.crop_size)
    _export(_Encoder(model), (images,), ["images"], "ids", folder / "encoder.onnx")
    ids = model.tokenize(images)
    if cfg.variable_length:
        lengths = torch.tensor([cfg.num_latent_tokens, 1])
        _export(_PrefixDecoder(model), (ids, lengths), ["ids", "num_tokens"], "images", folder / "decoder.onnx")
    else:
        _export(_Decoder(model), (ids,), ["ids"], "images", folder / "decoder.onnx")
    files = _with_int8(folder, {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}, int8)
    return {"crop_size": cfg.crop_size, "num_tokens": cfg.num_latent_tokens, "codebook_size": cfg.codebook_size,
            "variable_length": cfg.variable_length, "files": files}


def export_generator(model: MaskGIT, folder: Path, int8: bool = False) -> dict:
    cfg = model.config
    model = model.float().eval()
    ids = torch.full((2, cfg.image_seq_len), cfg.mask_token_id, dtype=torch.long)
    classes, guidance = torch.zeros(2, dtype=torch.long), torch.ones(2)
    _export(_GeneratorStep(model), (ids, classes, guidance), ["ids", "classes", "guidance"], "logits",
            folder / "generator_step.onnx")
    return {"num_tokens": cfg.image_seq_len, "codebook_size": cfg.codebook_size,
            "num_classes": cfg.condition_num_classes, "mask_token_id": cfg.mask_token_id,
            "sampling": default_sampling(model),
            "files": _with_int8(folder, {"step": "generator_step.onnx"}, int8)}


def export_onnx(folder: str | os.PathLike, tokenizer: TiTok | None = None, generator: MaskGIT | None = None,
                int8: bool = False) -> Path:
    """Write the graphs and onetok_onnx.json (last, so a folder with it is complete)."""
    if tokenizer is None and generator is None:
        raise ValueError("nothing to export: give a tokenizer, a generator or both")
    if tokenizer is not None and generator is not None and generator.config.codebook_size != tokenizer.config.codebook_size:
        raise ValueError(f"the generator samples {generator.config.codebook_size} codes but the tokenizer has "
                         f"{tokenizer.config.codebook_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": 1, "opset": OPSET}
    if tokenizer is not None:
        meta["tokenizer"] = export_tokenizer(tokenizer, folder, int8)
    if generator is not None:
        meta["generator"] = export_generator(generator, folder, int8)
    atomic_write_bytes(folder / META_NAME, json.dumps(meta, indent=2).encode())
    return folder


def add_int8(folder: str | os.PathLike) -> Path:
    """Give an export without int8 twins its int8 graphs, quantized from the fp32 ones already there."""
    from .onnx import read_meta

    folder = Path(folder)
    meta = read_meta(folder)
    for part in ("tokenizer", "generator"):
        if part in meta and "int8" not in meta[part]["files"]:
            meta[part]["files"] = _with_int8(folder, meta[part]["files"]["fp32"], True)
    atomic_write_bytes(folder / META_NAME, json.dumps(meta, indent=2).encode())
    return folder


def with_onnx_step(model: MaskGIT, step: OnnxGenerator) -> MaskGIT:
    """A shallow copy of the generator whose guided logits come from the exported ONNX step.

    Its sampling loop, and so its random draws, stay torch's: the same seed (or per-row
    generators) gives the same noise as the torch model, so the samples match it.
    """
    twin = copy.copy(model)

    def guided_logits(ids, condition, cfg_scale, guidance_decay, batched, guided=None):
        # the graph computes cond + (cond - uncond) * w; power-cosine's uncond + (cond - uncond) * s has w = s - 1
        weight = float(cfg_scale) - 1 if guidance_decay == "power-cosine" else float(cfg_scale)
        return torch.from_numpy(step.guided_logits(ids.cpu().numpy(), condition.cpu().numpy(), weight)).to(ids.device)

    twin.guided_logits = guided_logits
    return twin
