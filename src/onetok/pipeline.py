"""`onetok.Pipeline`: a tokenizer (and optionally a generator) with every shared decision made once.

    from onetok import Pipeline
    pipe = Pipeline.from_pretrained()            # the models shipped with onetok (offline)
    ids = pipe.tokenize("photo.jpg")             # (1, K) token ids
    images = pipe.reconstruct(["a.jpg", "b.jpg"])  # (2, 3, H, W) in [0, 1]
    samples = pipe.generate(["tuxpaint-food", 3], seed=7)

The decisions every front-end (CLI, app, demo, `onetok sample`, model cards) takes from here:
  * the pairing check: a generator fits a tokenizer with its token count, codebook size
    (`onetok.config.check_pairing`) and, when recorded, the tokenizer fingerprint;
  * precision: the path each task runs on (`onetok.backends`); None / "auto" pick per task the
    fastest path that stays faithful to fp32, from a probe cached per machine and model;
  * sampling: settings default to the generator's config, keyword arguments override them;
  * seeding: sample i of a call seeded s draws all its noise from `sample_seed(s, first_index + i)`,
    so its pixels depend neither on `batch_size` nor on the other samples of the call;
  * class ids or names, checked against the generator's classes with a one-line error.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .backends import TASKS, GeneratorPath, TokenizerPath, check_path, choose_paths
from .config import check_pairing
from .data.images import load_image, pil_to_tensor, resize_center_crop, to_rgb
from .data.tokens import model_fingerprint
from .errors import PipelineError
from .fast import optimize_for_inference
from .hub import default_generator_path, default_tokenizer_path
from .models import MaskGIT, TiTok
from .sampling import SAMPLING_KEYS, sample_seed

ImageInput = str | os.PathLike | Image.Image | torch.Tensor | Sequence


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def recorded_class_names(generator: MaskGIT) -> list[str] | None:
    """Class names a generator's config records (model.generator or dataset section), if complete."""
    tree, count = generator.config.to_dict(), generator.config.condition_num_classes
    for section in (tree.get("model", {}).get("generator", {}), tree.get("dataset", {})):
        names = section.get("class_names") if isinstance(section, dict) else None
        if isinstance(names, list) and len(names) == count:
            return [str(name) for name in names]
    return None


def check_fingerprint(tokenizer: TiTok, generator: MaskGIT, tokenizer_name: str, generator_name: str) -> None:
    """A generator whose config records the tokenizer it was trained on accepts only that one."""
    recorded = generator.config.extra.get("dataset", {}).get("tokenizer_fingerprint")
    if recorded is not None and recorded != model_fingerprint(tokenizer):
        raise PipelineError(f"generator {generator_name} was trained on tokens of tokenizer {recorded[:12]}, "
                            f"not on those of tokenizer {tokenizer_name}")


def load_model(cls, spec, fallback, device: str):
    """(model on `device` ready for inference, display name) from a model, a path / hub id or None."""
    if isinstance(spec, torch.nn.Module):
        return optimize_for_inference(spec.to(device)), type(spec).__name__
    path = fallback() if spec is None else spec
    name = f"{path} (shipped default)" if spec is None else str(spec)
    return optimize_for_inference(cls.from_pretrained(path).to(device)), name


class Pipeline:
    """A TiTok tokenizer, optionally with a MaskGIT generator over its ids, on one device and precision."""

    def __init__(self, tokenizer: TiTok, generator: MaskGIT | None = None, device: str | torch.device | None = None,
                 precision: str | None = None, tokenizer_name: str = "tokenizer", generator_name: str = "generator"):
        self.device = torch.device(device or default_device())
        self.tokenizer = optimize_for_inference(tokenizer.to(self.device))
        self.generator = None if generator is None else optimize_for_inference(generator.to(self.device))
        self.tokenizer_name, self.generator_name = tokenizer_name, generator_name
        config = self.tokenizer.config
        self.image_size, self.num_tokens, self.codebook_size = config.crop_size, config.num_latent_tokens, config.codebook_size
        self.bits_per_image = config.bits_per_image  # tokens x log2(codebook): the one formula
        if self.generator is not None:
            check_pairing(self.tokenizer.config, self.generator.config, tokenizer_name, generator_name)
            check_fingerprint(self.tokenizer, self.generator, tokenizer_name, generator_name)
        # after the checks, which read the float weights (int8 quantizes the models in place)
        self.requested_precision = precision or "auto"
        self.paths = self._choose_paths(self.requested_precision)
        self._runners, built = {}, {}  # tasks on the same path share one runner (one ONNX session)
        for task, path in self.paths.items():
            kind, model = (GeneratorPath, self.generator) if task == "generate" else (TokenizerPath, self.tokenizer)
            if (kind, path) not in built:
                built[kind, path] = kind(model, path)
            self._runners[task] = built[kind, path]

    def _choose_paths(self, precision: str) -> dict[str, str]:
        tasks = TASKS if self.generator is not None else ("tokenize", "detokenize")
        if precision == "auto":
            return choose_paths(self.tokenizer, self.generator, self.device)
        path = check_path(precision, self.device)
        return {task: path for task in tasks}

    @property
    def precision(self) -> str:
        """The path every task runs on ('bf16'), or each task's when "auto" chose several."""
        names = set(self.paths.values())
        if len(names) == 1:
            return names.pop()
        return ", ".join(f"{task} {path}" for task, path in self.paths.items())

    @classmethod
    def from_pretrained(cls, tokenizer: str | os.PathLike | TiTok | None = None,
                        generator: str | os.PathLike | MaskGIT | None | bool = None,
                        device: str | torch.device | None = None, precision: str | None = None) -> "Pipeline":
        """Load checkpoints (folders, hub ids or models); None means the models shipped with onetok.

        With `tokenizer` given and `generator` None, or with `generator=False`, the pipeline has no
        generator (the shipped one belongs to the shipped tokenizer); it tokenizes, detokenizes and
        reconstructs.
        `precision`: "fp32", "bf16", "int8" (Linear layers, onetok.int8; quantizes the models in place),
        "onnx" / "onnx-int8" (ONNX Runtime on the CPU, exported once into the onetok cache), or None /
        "auto": per task the fastest of these that stays faithful to fp32, measured once per machine
        and model (`onetok.backends`).
        """
        device = str(device or default_device())
        tokenizer_model, tokenizer_name = load_model(TiTok, tokenizer, default_tokenizer_path, device)
        generator_model, generator_name = None, "generator"
        wanted = generator is not False and (generator is not None or (tokenizer is None and shipped_generator_exists()))
        if wanted:
            generator_model, generator_name = load_model(MaskGIT, generator, default_generator_path, device)
        return cls(tokenizer_model, generator_model, device, precision, tokenizer_name, generator_name)

    # ------------------------------------------------------------ what the models are

    @property
    def num_classes(self) -> int:
        return 0 if self.generator is None else self.generator.config.condition_num_classes

    @property
    def class_names(self) -> list[str]:
        """The generator's class names ("class i" where none are recorded); [] without a generator."""
        if self.generator is None:
            return []
        return recorded_class_names(self.generator) or [f"class {i}" for i in range(self.num_classes)]

    @property
    def sampling(self) -> dict:
        """The generator's configured sampling settings (what `generate` uses unless told otherwise)."""
        return dict(self._need_generator().config.sampling)

    # ------------------------------------------------------------ inputs

    def load_images(self, images: ImageInput) -> torch.Tensor:
        """A path, PIL image, list of them, or float tensor (3, H, W) / (B, 3, H, W) in [0, 1] -> the
        (B, 3, S, S) batch the tokenizer reads; files and PIL images are resized and center-cropped."""
        size = self.image_size
        if torch.is_tensor(images):
            if not images.is_floating_point():
                raise PipelineError(f"images must be a float tensor in [0, 1], got {images.dtype}")
            return (images[None] if images.dim() == 3 else images).float()
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        if not items:
            raise PipelineError("no images given")
        loaded = []
        for item in items:
            if isinstance(item, Image.Image):
                loaded.append(pil_to_tensor(resize_center_crop(to_rgb(item), size)))
            elif isinstance(item, (str, os.PathLike)):
                loaded.append(load_image(Path(item), size))
            elif torch.is_tensor(item) and item.dim() == 3:
                loaded.append(item.float())
            else:
                raise PipelineError(f"cannot read an image from a {type(item).__name__}: "
                                    "give paths, PIL images or float tensors")
        return torch.stack(loaded)

    def class_ids(self, classes: int | str | Sequence[int | str]) -> list[int]:
        """Class ids or names -> ids, each checked against the generator's classes."""
        self._need_generator()
        items = [classes] if isinstance(classes, (int, str, np.integer)) else list(classes)
        names, count, ids = self.class_names, self.num_classes, []
        for item in items:
            if isinstance(item, str) and not item.strip().lstrip("-").isdigit():
                if item not in names:
                    raise PipelineError(f"{item!r} is neither a class id nor one of the generator's class names "
                                        f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
                ids.append(names.index(item))
                continue
            value = int(item)
            if not 0 <= value < count:
                raise PipelineError(f"class id {value} is outside the generator's classes 0..{count - 1}")
            ids.append(value)
        if not ids:
            raise PipelineError("no classes given")
        return ids

    # ------------------------------------------------------------ the work

    @torch.inference_mode()
    def tokenize(self, images: ImageInput, batch_size: int | None = None, num_tokens: int | None = None) -> torch.Tensor:
        """Images -> token ids (B, K) on the CPU (VAE tokenizers: latents (B, K, C)); with
        `num_tokens` k, the first k of them (B, k)."""
        tokenize = self._runners["tokenize"].tokenize
        return self._batches(lambda x: tokenize(x, num_tokens), self.load_images(images), batch_size)

    @torch.inference_mode()
    def detokenize(self, ids: torch.Tensor | np.ndarray | Sequence, batch_size: int | None = None) -> torch.Tensor:
        """Token ids (B, k) or (k,), any prefix 1 <= k <= K -> images (B, 3, H, W) in [0, 1] on the CPU."""
        tokens = torch.as_tensor(np.asarray(ids)) if not torch.is_tensor(ids) else ids
        tokens = self.tokenizer.check_tokens(tokens[None] if tokens.dim() == 1 else tokens)
        return self._batches(self._runners["detokenize"].detokenize, tokens, batch_size)

    @torch.inference_mode()
    def reconstruct(self, images: ImageInput, batch_size: int | None = None, num_tokens: int | None = None) -> torch.Tensor:
        """Images -> their reconstructions through the tokens (B, 3, H, W) in [0, 1] on the CPU
        (through the first `num_tokens` only, when given)."""
        def round_trip(x):
            return self._runners["detokenize"].detokenize(self._runners["tokenize"].tokenize(x, num_tokens))

        return self._batches(round_trip, self.load_images(images), batch_size)

    @torch.inference_mode()
    def generate(self, classes: int | str | Sequence[int | str], seed: int = 0, batch_size: int | None = None,
                 first_index: int = 0, **sampling) -> torch.Tensor:
        """Class ids or names -> generated images (B, 3, H, W) in [0, 1] on the CPU.

        Sample i draws its noise from `sample_seed(seed, first_index + i)` (`first_index` lets a
        caller draw part of a larger run). `sampling` overrides the generator's configured
        settings (`MaskGIT.generate`'s keywords); None values keep the configured ones.
        """
        self._need_generator()
        unknown = set(sampling) - set(SAMPLING_KEYS)
        if unknown:
            raise PipelineError(f"unknown sampling settings: {', '.join(sorted(unknown))}; use {', '.join(SAMPLING_KEYS)}")
        settings = self.sampling | {key: value for key, value in sampling.items() if value is not None}
        condition = torch.tensor(self.class_ids(classes), device=self.device)
        seeds = [sample_seed(seed, first_index + i) for i in range(len(condition))]

        def draw(rows: slice) -> torch.Tensor:
            ids = self._runners["generate"].generate(condition[rows], seeds[rows], **settings)
            return self._runners["detokenize"].detokenize(ids)

        return self._batches(draw, torch.arange(len(condition)), batch_size, by_slice=True)

    # ------------------------------------------------------------ helpers

    def _need_generator(self) -> MaskGIT:
        if self.generator is None:
            raise PipelineError("this pipeline has no generator: Pipeline.from_pretrained(generator=...)")
        return self.generator

    def _batches(self, fn, inputs: torch.Tensor, batch_size: int | None, by_slice: bool = False) -> torch.Tensor:
        empty = torch.empty(0, 3, self.image_size, self.image_size)
        return in_batches(fn, inputs, batch_size, self.device, by_slice) if len(inputs) else empty


def in_batches(fn, inputs: torch.Tensor, batch_size: int | None, device: str | torch.device = "cpu",
               by_slice: bool = False) -> torch.Tensor:
    """fn over `batch_size` rows of `inputs` at a time (moved to `device`; all at once for None), or
    over row slices with `by_slice`; the results concatenated on the CPU."""
    if batch_size is not None and batch_size < 1:
        raise PipelineError(f"batch size must be at least 1, got {batch_size}")
    step = batch_size or max(1, len(inputs))
    outputs = []
    for start in range(0, len(inputs), step):
        rows = slice(start, start + step)
        outputs.append(fn(rows if by_slice else inputs[rows].to(device)).cpu())
    return torch.cat(outputs)


def shipped_generator_exists() -> bool:
    try:
        default_generator_path()
    except ValueError:  # a build that ships only a tokenizer
        return False
    return True
