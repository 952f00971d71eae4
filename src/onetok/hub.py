"""The one place that reads and writes checkpoints and configs.

A checkpoint is a folder with ``config.json`` (the reference's config tree) and
``model.safetensors`` or ``pytorch_model.bin``; a hub id is downloaded into the
Hugging Face cache first. Models get ``from_pretrained`` / ``from_config`` /
``save_pretrained`` by mixing in :class:`HubMixin`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import HUB_IDS, PRESETS, ConfigError, preset
from .files import atomic_torch_save, atomic_write_bytes
from .errors import CheckpointError

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
# keys some saved checkpoints carry that hold no weights
IGNORED_KEYS = ("model.embeddings.position_ids",)
VQGAN_HUB = ("fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin")


# ---------------------------------------------------------------- reading

def resolve_checkpoint(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder, a preset name or a hub id -> a local folder holding config.json."""
    path = Path(os.path.expanduser(str(path_or_id)))
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder: it has no {CONFIG_NAME}")
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder (config.json + model.safetensors)")
    repo_id = HUB_IDS.get(str(path_or_id), str(path_or_id))
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise CheckpointError(f"{path_or_id}: no such folder, preset or hub id (hub ids look like 'org/name')")
    return Path(_download_snapshot(repo_id, revision))


def _download_snapshot(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, revision=revision, allow_patterns=[CONFIG_NAME, SAFETENSORS_NAME, BIN_NAME]
        )
    except Exception as err:  # offline, unknown repo, ...: one line that says what to do
        raise CheckpointError(
            f"could not download '{repo_id}' from the Hugging Face Hub ({type(err).__name__}); "
            f"if you are offline, pass a local folder holding {CONFIG_NAME} and {SAFETENSORS_NAME}"
        ) from None


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG_NAME).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{folder / CONFIG_NAME} is not valid JSON: {err}") from None


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Weights from .safetensors or a .bin pickle (read with weights_only)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{file} could not be read as weights ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} does not hold a state dict")
    return state


def weights_file(folder: Path) -> Path:
    for name in (SAFETENSORS_NAME, BIN_NAME):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder} has no weights ({SAFETENSORS_NAME} or {BIN_NAME})")


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """Load every key, or fail naming the first mismatches."""
    state = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(parts))
    # weights stored in half precision (the shipped defaults) load into the model's float32
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()}, strict=True, assign=True)


# ---------------------------------------------------------------- writing

def write_checkpoint(model: torch.nn.Module, config_tree: dict, folder: str | os.PathLike,
                     safe_serialization: bool = True, dtype: torch.dtype | None = None) -> Path:
    """config.json + weights, each written atomically; `dtype` (e.g. float16) halves the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if safe_serialization:
        from safetensors.torch import save

        atomic_write_bytes(folder / SAFETENSORS_NAME, save(state, metadata={"format": "pt"}))
        (folder / BIN_NAME).unlink(missing_ok=True)
    else:
        atomic_torch_save(state, folder / BIN_NAME)
        (folder / SAFETENSORS_NAME).unlink(missing_ok=True)
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(config_tree, indent=2) + "\n").encode())
    return folder


# ---------------------------------------------------------------- mixin

class HubMixin:
    """``from_config`` / ``from_pretrained`` / ``save_pretrained`` for onetok models.

    A subclass sets ``config_class`` (a dataclass with ``from_dict`` / ``to_dict``)
    and may override ``_class_for`` to pick a concrete class from the config.
    """

    config_class: Any = None

    @classmethod
    def _class_for(cls, config) -> type:
        return cls

    @classmethod
    def parse_config(cls, config) -> Any:
        if isinstance(config, cls.config_class):
            return config
        if isinstance(config, str):
            if config not in PRESETS:
                raise ConfigError(f"unknown preset {config!r}; known: {', '.join(sorted(PRESETS))}")
            config = preset(config)
        if not isinstance(config, dict):
            raise ConfigError(f"expected a config dict, preset name or {cls.config_class.__name__}, got {type(config).__name__}")
        return cls.config_class.from_dict(config)

    @classmethod
    def from_config(cls, config):
        """A randomly initialised model from a config tree, preset name or config dataclass."""
        cfg = cls.parse_config(config)
        return cls._class_for(cfg)(cfg)

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, revision: str | None = None):
        folder = resolve_checkpoint(path_or_id, revision)
        try:
            cfg = cls.parse_config(read_config(folder))
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{folder / CONFIG_NAME}: {err}") from None
        with torch.device("meta"):  # no time spent initialising weights we overwrite
            model = cls._class_for(cfg)(cfg)
        file = weights_file(folder)
        load_state_strict(model, read_state_dict(file), file)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike, safe_serialization: bool = True,
                        dtype: torch.dtype | None = None) -> Path:
        return write_checkpoint(self, self.config.to_dict(), folder, safe_serialization, dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_vqgan(path: str | os.PathLike | None = None):
    """The MaskGIT-VQGAN from a raw .bin/.safetensors state dict, a folder, or the hub."""
    from .models.vqgan import MaskGITVQGAN

    if path is None:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(*VQGAN_HUB)
        except Exception as err:
            raise CheckpointError(
                f"could not download {VQGAN_HUB[1]} from '{VQGAN_HUB[0]}' ({type(err).__name__}); "
                "pass the local file with --teacher / load_vqgan(path)"
            ) from None
    path = Path(path)
    config = {}
    if path.is_dir():
        config = read_config(path) if (path / CONFIG_NAME).is_file() else {}
        path = weights_file(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with torch.device("meta"):
        model = MaskGITVQGAN.from_config(config)
    load_state_strict(model, read_state_dict(path), path)
    return model.eval()


# ---------------------------------------------------------------- shipped defaults and info

ASSETS = Path(__file__).parent / "assets"


def default_tokenizer_path() -> Path:
    path = ASSETS / "default_tokenizer"
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError("no default tokenizer is shipped in this build; pass --model FOLDER")
    return path


def default_generator_path() -> Path:
    path = ASSETS / "default_generator"
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError("no default generator is shipped in this build; pass --generator FOLDER")
    return path


def checkpoint_kind(folder: Path) -> str:
    """'tokenizer' or 'generator', from the weight names (released configs carry both sections)."""
    file = weights_file(folder)
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            keys = set(f.keys())
    else:
        keys = set(read_state_dict(file))
    return "tokenizer" if "latent_tokens" in keys else "generator"


def describe_checkpoint(path_or_id: str | os.PathLike) -> dict[str, Any]:
    from .models import MaskGIT, TiTok

    folder = resolve_checkpoint(path_or_id)
    kind = checkpoint_kind(folder)
    model = (TiTok if kind == "tokenizer" else MaskGIT).from_pretrained(folder)
    cfg = model.config
    info: dict[str, Any] = {"kind": kind, "class": type(model).__name__, "parameters": f"{model.num_parameters():,}"}
    if kind == "tokenizer":
        info |= {"image size": cfg.crop_size, "tokens per image": cfg.num_latent_tokens,
                 "encoder / decoder": f"{cfg.vit_enc_model_size} / {cfg.vit_dec_model_size}",
                 "quantizer": cfg.quantize_mode}
        if cfg.is_vae:
            info["latent per image"] = f"{cfg.num_latent_tokens} x {cfg.token_size} floats"
        else:
            bits = cfg.bits_per_image
            info |= {"codebook": f"{cfg.codebook_size} x {cfg.token_size}", "bits per image": f"{bits:g} ({bits / 8:g} bytes)"}
    else:
        info |= {"backbone": cfg.model_type, "tokens": cfg.image_seq_len, "codebook": cfg.codebook_size,
                 "classes": cfg.condition_num_classes, "sampling steps": cfg.num_steps,
                 "guidance": f"{cfg.guidance_scale} ({cfg.guidance_decay})"}
    info["config"] = json.dumps(cfg.to_dict())
    return info
