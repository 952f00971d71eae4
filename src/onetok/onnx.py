"""Run models exported by `onetok export --format onnx` with ONNX Runtime: numpy in, numpy out.

This module imports only numpy and onnxruntime (no torch, nothing else from onetok), so an
exported folder runs on a machine without PyTorch:

    tokenizer = OnnxTokenizer("exported")        # encoder.onnx, decoder.onnx, onetok_onnx.json
    ids = tokenizer.tokenize(images)             # (B, 3, H, W) float32 in [0, 1] -> (B, K) int64
    images = tokenizer.detokenize(ids)           # (B, K) -> (B, 3, H, W) float32 in [0, 1]
    ids = OnnxGenerator("exported").generate(np.array([3, 5]), seed=0)

The methods mirror TiTok.tokenize / detokenize and MaskGIT.generate (same settings, same
sampling loop); the generator draws its noise from numpy, so at a temperature above 0 its
samples differ from torch's at the same seed (at temperature 0 they agree).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

META_NAME = "onetok_onnx.json"
GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")


class OnnxModelError(ValueError):
    """An exported folder that cannot be used, or inputs of the wrong shape or range."""


def read_meta(folder: str | os.PathLike) -> dict:
    path = Path(folder) / META_NAME
    if not path.is_file():
        raise OnnxModelError(f"{folder}: no {META_NAME}; export the model with `onetok export MODEL -o DIR`")
    return json.loads(path.read_text())


def session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session; `threads` defaults to ONNX Runtime's own choice (one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_files(folder: Path, part: dict, what: str, int8: bool) -> dict:
    """The file names of one precision of an exported part."""
    kind = "int8" if int8 else "fp32"
    if kind not in part["files"]:
        raise OnnxModelError(f"{folder}: no int8 {what} was exported; export again with --int8")
    return part["files"][kind]


def open_part(folder: str | os.PathLike, what: str, int8: bool, threads: int | None) -> tuple[dict, dict]:
    """(the meta of the exported part `what`, one ONNX Runtime session per graph of it)."""
    meta = read_meta(folder)
    if what not in meta:
        raise OnnxModelError(f"{folder}: this export holds no {what}")
    files = graph_files(Path(folder), meta[what], what, int8)
    return meta[what], {name: session(Path(folder) / file, threads) for name, file in files.items()}


class OnnxTokenizer:
    """Encoder (images -> ids, nearest-code search in float32) and decoder (ids -> images)."""

    def __init__(self, folder: str | os.PathLike, int8: bool = False, threads: int | None = None):
        self.folder = Path(folder)
        self.meta, sessions = open_part(folder, "tokenizer", int8, threads)
        self.crop_size, self.num_tokens = self.meta["crop_size"], self.meta["num_tokens"]
        self.codebook_size = self.meta["codebook_size"]
        self.variable_length = self.meta.get("variable_length", False)
        self.encoder, self.decoder = sessions["encoder"], sessions["decoder"]

    def tokenize(self, images, num_tokens: int | None = None) -> np.ndarray:
        """(B, 3, H, W) floats in [0, 1] -> ids (B, k) int64, the first k = num_tokens (default all K)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = self.crop_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise OnnxModelError(f"expected images of shape (B, 3, {size}, {size}), got {images.shape}")
        k = self.num_tokens if num_tokens is None else num_tokens
        if not 1 <= k <= self.num_tokens:
            raise OnnxModelError(f"num_tokens must lie in [1, {self.num_tokens}], got {k}")
        return self.encoder.run(None, {"images": images})[0][:, :k]

    def detokenize(self, ids) -> np.ndarray:
        """Ids (B, K) -> images (B, 3, H, W) float32 in [0, 1]; a variable-length model takes (B, k), 1 <= k <= K."""
        ids = np.asarray(ids)
        full = self.num_tokens
        length = f"k, 1 <= k <= {full}" if self.variable_length else str(full)
        fits = ids.ndim == 2 and (1 <= ids.shape[1] <= full if self.variable_length else ids.shape[1] == full)
        if not fits or not np.issubdtype(ids.dtype, np.integer):
            raise OnnxModelError(f"expected integer token ids of shape (B, {length}), got {ids.shape} {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.codebook_size):
            raise OnnxModelError(f"token ids must lie in [0, {self.codebook_size - 1}]")
        ids = ids.astype(np.int64)
        if not self.variable_length:
            return self.decoder.run(None, {"ids": ids})[0]
        padded = np.zeros((ids.shape[0], full), dtype=np.int64)  # the padding is replaced by the null token
        padded[:, : ids.shape[1]] = ids
        lengths = np.full(ids.shape[0], ids.shape[1], dtype=np.int64)
        return self.decoder.run(None, {"ids": padded, "num_tokens": lengths})[0]


def _gumbel(uniform: np.ndarray) -> np.ndarray:
    return -np.log(np.maximum(-np.log(np.maximum(uniform, 1e-20)), 1e-20))


class OnnxGenerator:
    """MaskGIT sampling around an exported step: (ids, classes, guidance weight) -> guided logits."""

    def __init__(self, folder: str | os.PathLike, int8: bool = False, threads: int | None = None):
        self.folder = Path(folder)
        self.meta, sessions = open_part(folder, "generator", int8, threads)
        self.step = sessions["step"]
        self.num_tokens, self.num_classes = self.meta["num_tokens"], self.meta["num_classes"]
        self.mask_token_id = self.meta["mask_token_id"]

    def guided_logits(self, ids: np.ndarray, classes: np.ndarray, weight: float) -> np.ndarray:
        """cond + (cond - uncond) * weight, both passes in one batch (float32 logits (B, K, N))."""
        weights = np.full(ids.shape[0], weight, dtype=np.float32)
        return self.step.run(None, {"ids": ids, "classes": classes, "guidance": weights})[0]

    def generate(self, condition, guidance_scale: float | None = None, guidance_decay: str | None = None,
                 guidance_scale_pow: float | None = None, randomize_temperature: float | None = None,
                 softmax_temperature_annealing: bool = False, num_sample_steps: int | None = None,
                 seed: int = 0) -> np.ndarray:
        """Class ids (B,) -> code ids (B, K); settings left None come from the generator's config."""
        s = self.meta["sampling"]
        guidance_scale = s["guidance_scale"] if guidance_scale is None else guidance_scale
        guidance_decay = guidance_decay or s["guidance_decay"]
        power = s["guidance_scale_pow"] if guidance_scale_pow is None else guidance_scale_pow
        temperature0 = s["randomize_temperature"] if randomize_temperature is None else randomize_temperature
        steps = num_sample_steps or s["num_sample_steps"]
        condition = np.asarray(condition)
        if guidance_decay not in GUIDANCE_DECAYS:
            raise OnnxModelError(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {guidance_decay!r}")
        if condition.ndim != 1 or not np.issubdtype(condition.dtype, np.integer):
            raise OnnxModelError(f"condition must be integer class ids of shape (B,), got {condition.shape}")
        if condition.size and (condition.min() < 0 or condition.max() >= self.num_classes):
            raise OnnxModelError(f"class ids must lie in [0, {self.num_classes - 1}]")
        condition = condition.astype(np.int64)
        rng = np.random.default_rng(seed)
        k = self.num_tokens
        ids = np.full((condition.shape[0], k), self.mask_token_id, dtype=np.int64)
        cfg_scale = guidance_scale if guidance_decay == "constant" else 0.0
        for step in range(steps):
            ratio = (step + 1) / steps
            temperature = temperature0 * (1.0 - ratio)
            is_mask = ids == self.mask_token_id
            if guidance_decay == "power-cosine":
                # the model computes uncond + (cond - uncond) * s = cond + (cond - uncond) * (s - 1)
                s_step = (1 - math.cos(((step / steps) ** power) * math.pi)) * 0.5
                weight = (guidance_scale - 1) * s_step
            else:
                weight = cfg_scale
            logits = self.guided_logits(ids, condition, weight)
            if softmax_temperature_annealing:
                logits = logits / (0.5 + 0.8 * (1 - ratio))
            noisy = logits + temperature * _gumbel(rng.random(logits.shape, dtype=np.float32))
            sampled = noisy.argmax(axis=-1)
            sampled_logits = np.take_along_axis(logits, sampled[..., None], axis=-1)[..., 0]
            sampled = np.where(is_mask, sampled, ids)
            confidence = np.where(is_mask, sampled_logits, np.inf).astype(np.float32)
            wanted = math.floor(k * np.arccos(ratio) / (math.pi * 0.5))
            num_masked = max(min(int(is_mask[0].sum()) - 1, wanted), 1)
            confidence = confidence + temperature * _gumbel(rng.random(confidence.shape, dtype=np.float32))
            cut_off = np.sort(confidence, axis=-1)[:, num_masked - 1 : num_masked]
            ids = sampled if step == steps - 1 else np.where(confidence <= cut_off, self.mask_token_id, sampled)
            if guidance_decay == "linear":
                cfg_scale = ratio * guidance_scale
        return ids
