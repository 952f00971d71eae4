"""Named and shipped models: the defaults inside the package, and what a checkpoint holds.

The checkpoint folder format and `from_pretrained` / `save_pretrained` live in
`onetok.pretrained`, below `models/`; this module sits above `models/` and may use them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .pretrained import CONFIG_NAME, resolve_checkpoint, weight_names, weights_file
from .pretrained import load_state_strict  # noqa: F401  (re-exported: the parity tests load weights through it)

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


def example_photos() -> list[Path]:
    """The example photos shipped under onetok/assets/examples."""
    return sorted(p for p in (ASSETS / "examples").glob("*") if p.suffix.lower() in {".jpg", ".png", ".webp"})


def checkpoint_kind(folder: Path) -> str:
    """'tokenizer' or 'generator', from the weight names (released configs carry both sections)."""
    return "tokenizer" if "latent_tokens" in weight_names(weights_file(folder)) else "generator"


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
