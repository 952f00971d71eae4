"""Typed training configuration read from YAML, with `a.b.c=value` command-line overrides.

The trainer's own settings live in typed dataclasses (`experiment`, `optimizer`, `lr_scheduler`,
`training`); the model family's settings (`model`, `losses`, `dataset`) stay free-form dicts in the
reference config-tree layout (`model.vq_model.*`, `dataset.preprocessing.crop_size`, ...).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from onetok.files import atomic_write_bytes
from onetok.errors import ConfigError


@dataclass
class ExperimentConfig:
    name: str = "onetok"
    task: str = ""  # which model family trains (the CLI dispatches on it), e.g. "titok_stage1"
    output_dir: str = "outputs/run"
    max_train_steps: int = 1000
    save_every: int = 500
    log_every: int = 10
    preview_every: int = 500
    keep_last: int = 3
    seed: int = 42
    log_with: str = "tensorboard"  # "tensorboard", "wandb" or "none"; CSV is always written


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    discriminator_lr: float | None = None  # None: same as lr


@dataclass
class LRSchedulerConfig:
    warmup_steps: int = 0
    end_lr: float = 0.0


@dataclass
class TrainingConfig:
    batch_size: int = 8  # per process and per micro-step
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no", "fp16" or "bf16"
    max_grad_norm: float | None = 1.0
    use_ema: bool = True
    ema_decay: float = 0.999
    num_workers: int = 0
    find_unused_parameters: bool = False


@dataclass
class TrainConfig:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    model: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config, apply `a.b.c=value` overrides, and return the typed config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        tree = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return config_from_dict(tree, overrides)


def config_from_dict(tree: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    config = _build(TrainConfig, tree, "")
    for override in overrides:
        apply_override(config, override)
    validate(config)
    return config


def apply_override(config: TrainConfig, override: str) -> None:
    """Set one `a.b.c=value` field; a leading `+` adds a key that is not yet in a free-form block."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form a.b.c=value")
    add = key.startswith("+")
    parts = key.lstrip("+").strip().split(".")
    node: Any = config
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]), create=add)
    name = parts[-1]
    if dataclasses.is_dataclass(node):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if name not in fields:
            raise unknown_key(key.lstrip("+"), fields)
        kind = _field_type(type(node), name)
        value = raw if kind is str else _parse_value(raw, key)  # a string field takes the text as written
        setattr(node, name, _coerce(value, kind, key))
    elif isinstance(node, dict):
        if name not in node and not add:
            raise ConfigError(f"unknown config key {key!r} (write +{key}=... to add a new key)")
        node[name] = _parse_value(raw, key)
    else:
        raise ConfigError(f"config key {key!r} goes inside a value that is not a mapping")


def _parse_value(raw: str, key: str) -> Any:
    try:
        return parse_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"the value of {key} ({raw!r}) is not valid YAML") from None


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically), e.g. next to the checkpoints."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_bytes(path, text.encode())


def validate(config: TrainConfig) -> None:
    t, e = config.training, config.experiment
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"training.mixed_precision must be no, fp16 or bf16, not {t.mixed_precision!r}")
    if e.log_with not in ("tensorboard", "wandb", "none"):
        raise ConfigError(f"experiment.log_with must be tensorboard, wandb or none, not {e.log_with!r}")
    positive = {
        "training.batch_size": t.batch_size,
        "training.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "experiment.save_every": e.save_every,
        "experiment.log_every": e.log_every,
        "experiment.preview_every": e.preview_every,
        "experiment.keep_last": e.keep_last,
    }
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if e.max_train_steps < 0 or config.lr_scheduler.warmup_steps < 0:
        raise ConfigError("experiment.max_train_steps and lr_scheduler.warmup_steps must not be negative")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"training.ema_decay must be in [0, 1), got {t.ema_decay}")


def _build(cls: type, tree: Any, prefix: str) -> Any:
    """Turn a (nested) dict into dataclass `cls`, type-checking every field."""
    if not isinstance(tree, dict):
        raise ConfigError(f"config section {prefix or 'top level'!r} must be a mapping, got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise unknown_key(f"{prefix}.{unknown[0]}" if prefix else unknown[0], fields)
    values = {}
    for name, value in tree.items():
        kind = _field_type(cls, name)
        path = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value or {}, path)
        else:
            values[name] = _coerce(value, kind, path)
    return cls(**values)


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check/convert one value to the annotated type (int, float, bool, str, tuple, list, Literal,
    optional or union, dict, a class)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, alternative, key)
            except ConfigError as err:
                errors.append(str(err).removeprefix(f"{key} must be ").split(", got ")[0])
        raise ConfigError(f"{key} must be {' or '.join(errors)}, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key} must be {' or '.join(repr(a) for a in args)}, got {value!r}")
    if origin is tuple:
        if args[-1:] == (Ellipsis,):
            args = args[:1] * len(value) if isinstance(value, (list, tuple)) else args[:1]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if origin is dict or kind is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if isinstance(kind, type) and not isinstance(value, kind):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}")
    return value


def unknown_key(key: str, known: typing.Iterable[str]) -> ConfigError:
    """The one-line error for a key that no consumer reads, with the nearest known name."""
    known = list(known)
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known: {', '.join(known)}")


Schema = dict[str, Any]  # key -> annotated type, or a nested Schema for a sub-mapping


def check_section(values: Any, schema: Schema, prefix: str) -> dict[str, Any]:
    """Check a free-form section against `schema`: every key known, every value of its type.

    Returns the section with the values converted (e.g. `64.0` -> 64, a list -> tuple); keys
    absent from `values` stay absent, so consumers keep their own defaults.
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix!r} must be a mapping, got {values!r}")
    checked = {}
    for name, value in values.items():
        key = f"{prefix}.{name}"
        if name not in schema:
            raise unknown_key(key, schema)
        kind = schema[name]
        checked[name] = check_section(value, kind, key) if isinstance(kind, dict) else _coerce(value, kind, key)
    return checked


def dataclass_schema(cls: type, exclude: typing.Container[str] = ()) -> Schema:
    """The keys of a config dataclass and their types (nested dataclasses become nested schemas)."""
    hints = typing.get_type_hints(cls)
    return {f.name: dataclass_schema(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else hints[f.name]
            for f in dataclasses.fields(cls) if f.name not in exclude}


def signature_schema(function: Any, exclude: typing.Container[str] = ()) -> Schema:
    """The keyword arguments of a function or class (its __init__) and their annotated types."""
    import inspect

    target = function.__init__ if isinstance(function, type) else function
    hints = typing.get_type_hints(target)
    return {name: hints.get(name, Any) for name, p in inspect.signature(function).parameters.items()
            if name not in exclude and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _child(node: Any, part: str, path: str, create: bool) -> Any:
    if dataclasses.is_dataclass(node):
        if part not in {f.name for f in dataclasses.fields(node)}:
            raise unknown_key(path, [f.name for f in dataclasses.fields(node)])
        return getattr(node, part)
    if isinstance(node, dict):
        if part not in node:
            if not create:
                raise ConfigError(f"unknown config key {path!r} (write +{path}...=... to add a new key)")
            node[part] = {}
        return node[part]
    raise ConfigError(f"config key {path!r} goes inside a value that is not a mapping")


def _plain(value: Any) -> Any:
    """Tuples to lists so that safe_dump writes plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
