"""What the free-form config sections (`model`, `losses`, `dataset`) may hold, per experiment.task.

The keys and their types are read from the code that consumes them: the model config
dataclasses (TiTokConfig, GeneratorConfig, VQGANConfig, WarmStartConfig), the loss modules'
arguments, and the dataset dataclasses below (which the CLI reads the dataset section through).
`check_sections` runs before a run writes anything, so a typo or a wrong type is one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import GeneratorConfig, TiTokConfig, VQGANConfig
from .config import ConfigError, Schema, TrainConfig, check_section, dataclass_schema, signature_schema
from .losses import MaskedTokenLoss, ProxyCodeLoss, ReconstructionLoss
from .tokenizer_task import TokenDropConfig
from .warm_start import WarmStartConfig

IMAGE_TASKS = ("titok_stage1", "titok_stage2", "titok_single_stage", "vqgan")
TASKS = (*IMAGE_TASKS, "maskgit")


@dataclass
class PreprocessingConfig:
    crop_size: int = 256
    resize_shorter_edge: int | None = None  # None: the crop size
    random_crop: bool = True
    random_flip: bool = True
    random_resized_crop_scale: tuple[float, float] | None = None  # area range of a random-resized crop


@dataclass
class ImageDataConfig:
    """`dataset` of the tokenizer tasks."""

    train: str = ""  # a folder, file list, .npy array or shard pattern
    eval: str | None = None  # held-out images for `onetok eval`; training does not read them
    shuffle_buffer: int = 1000  # WebDataset shards: samples mixed across shards (0: shard order only)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)


@dataclass
class TokenDataConfig:
    """`dataset` of the generator (maskgit): see training/generator_task.py."""

    tokens: str = ""
    tokenizer: str | None = None
    preview_classes: list[int] | None = None
    preview_seeds: list[int] | None = None
    # the reference layout of the images the tokens describe (pretokenize decides the crops)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)


def image_data(config: TrainConfig) -> ImageDataConfig:
    """The dataset section of a tokenizer run, typed (run `check_sections` first)."""
    values = dict(config.dataset)
    preprocessing = PreprocessingConfig(**values.pop("preprocessing", None) or {})
    return ImageDataConfig(**values, preprocessing=preprocessing)


def _titok_schema() -> Schema:
    return dataclass_schema(TiTokConfig, exclude=("extra", "crop_size"))


def _model_schema(task: str) -> Schema:
    if task == "maskgit":
        generator = dataclass_schema(GeneratorConfig, exclude=("extra", "codebook_size"))
        generator["condition_num_classes"] = int | Literal["auto"]  # "auto": the token folder's classes
        vq = {"codebook_size": int, "num_latent_tokens": int}  # filled in from the token folder
        return {"generator": generator, "vq_model": vq}
    if task == "vqgan":
        return {"vqgan": dataclass_schema(VQGANConfig)}
    schema: Schema = {"vq_model": _titok_schema()}
    if task in ("titok_stage1", "titok_stage2"):
        schema["teacher"] = str | None  # the MaskGIT-VQGAN: a file, folder or hub id (None: the released one)
    if task in ("titok_stage2", "titok_single_stage"):
        schema["init_weight"] = str  # stage 2: the stage-1 run; single stage: weights to fine-tune from
    schema["token_drop"] = dataclass_schema(TokenDropConfig)
    if task in ("titok_single_stage", "titok_stage2"):
        schema["warm_start"] = dataclass_schema(WarmStartConfig)
    if task == "titok_single_stage":
        schema["freeze_encoder"] = bool  # decoder-only fine-tuning: the ids of init_weight stay
    return schema


def _losses_schema(task: str) -> Schema:
    if task == "maskgit":
        return signature_schema(MaskedTokenLoss)
    if task == "titok_stage1":
        return signature_schema(ProxyCodeLoss)
    return signature_schema(ReconstructionLoss)


def _dataset_schema(task: str) -> Schema:
    return dataclass_schema(TokenDataConfig if task == "maskgit" else ImageDataConfig)


def check_sections(config: TrainConfig) -> None:
    """Refuse unknown keys and wrongly typed values in model / losses / dataset (in place: values
    are converted to their types, e.g. `64.0` -> 64)."""
    task = config.experiment.task
    if task not in TASKS:
        raise ConfigError(f"experiment.task must be one of {', '.join(TASKS)}, got {task!r}")
    for name, schema in (("model", _model_schema(task)), ("losses", _losses_schema(task)),
                         ("dataset", _dataset_schema(task))):
        section = check_section(getattr(config, name), schema, name)
        setattr(config, name, _restore_lists(section))


def _restore_lists(value: Any) -> Any:
    """Tuples back to lists: the sections stay plain YAML data (consumers index and copy them)."""
    if isinstance(value, dict):
        return {k: _restore_lists(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_restore_lists(v) for v in value]
    return value

