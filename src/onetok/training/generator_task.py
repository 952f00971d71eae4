"""MaskGIT generator training on pretokenized TiTok ids (SPEC 3.2, 4.6), as a Trainer Task.

The config's sections:
  model.generator   the backbone and its sampling defaults (GeneratorConfig fields); the token
                    count, codebook size and number of classes are filled in from the token folder
  losses            label_smoothing (0.1), loss_weight_unmasked_token (0.1)
  dataset           tokens: a folder written by `onetok pretokenize`
                    tokenizer: the tokenizer checkpoint those tokens came from (checked against the
                      folder's fingerprint; decodes the previews). null: no previews, no check
                    preview_classes: class ids shown in previews (default: up to 8, spread out)
                    preview_seeds: one preview row per seed (default [0, 1])
A token folder with one class trains an unconditional model (no label dropout, no guidance).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from onetok.config import GeneratorConfig, check_pairing
from onetok.data.images import make_grid
from onetok.data.tokens import TokenDataset, model_fingerprint
from onetok.models import MaskGIT, TiTok
from onetok.sampling import generate_seeded, sample_seed
from onetok.training.config import TrainConfig
from onetok.training.logging import log
from onetok.training.losses import MaskedTokenLoss
from onetok.training.trainer import StepOutput, Task
from onetok.errors import GeneratorRunError

MAX_PREVIEW_CLASSES = 8


class GeneratorTask(Task):
    """Masked-token prediction with class-label dropout; previews are sampled grids."""

    def __init__(self, model_tree: dict, losses: dict[str, Any], tokenizer: TiTok | None = None,
                 preview_classes: list[int] | None = None, preview_seeds: list[int] | None = None):
        self.model_tree = model_tree
        self.class_label_dropout = float(model_tree["model"]["generator"].get("class_label_dropout", 0.1))
        self.loss = MaskedTokenLoss(label_smoothing=float(losses.get("label_smoothing", 0.1)),
                                    loss_weight_unmasked_token=float(losses.get("loss_weight_unmasked_token", 0.1)))
        self.tokenizer = tokenizer
        self.preview_classes = preview_classes or []
        self.preview_seeds = preview_seeds if preview_seeds is not None else [0, 1]

    def build_models(self) -> dict[str, nn.Module]:
        models: dict[str, nn.Module] = {"model": MaskGIT.from_config(self.model_tree)}
        if self.tokenizer is not None:
            models["tokenizer"] = self.tokenizer
        return models

    def training_step(self, batch: tuple[Tensor, Tensor], step: int) -> StepOutput:
        ids, labels = batch
        masked, mask = self.unwrap().masking_input_tokens(ids)
        logits = self.models["model"](masked, labels, cond_drop_prob=self.class_label_dropout)
        loss, logs = self.loss(logits, ids, mask)
        return loss, {"masked_accuracy": logs["masked_accuracy"].item()}

    def preview(self, batch: Any, step: int) -> Tensor | None:
        """Rows: seeds; columns: the preview classes; sampled with the config's settings."""
        if self.tokenizer is None or not self.preview_classes:
            return None
        model, tokenizer = self.unwrap(), self.unwrap("tokenizer")
        device = next(model.parameters()).device
        condition = torch.tensor(self.preview_classes * len(self.preview_seeds), device=device)
        seeds = [sample_seed(seed, column) for seed in self.preview_seeds for column in range(len(self.preview_classes))]
        ids = generate_seeded(model, condition, seeds)
        images = tokenizer.decode_tokens(ids).float().clamp(0, 1)
        return make_grid(images.cpu(), ncol=len(self.preview_classes))

    def export(self, output_dir: Path) -> None:
        """A MaskGIT checkpoint; its config names the tokenizer (fingerprint) and the classes."""
        self.unwrap().save_pretrained(output_dir)


def build_run(config: TrainConfig) -> tuple[GeneratorTask, TokenDataset]:
    """The task and token dataset that `onetok train generator CONFIG` trains."""
    data = config.dataset
    if not data.get("tokens"):
        raise GeneratorRunError("dataset.tokens must name a token folder written by `onetok pretokenize`")
    tokenizer = TiTok.from_pretrained(data["tokenizer"]) if data.get("tokenizer") else None
    if tokenizer is not None and tokenizer.config.is_vae:
        raise GeneratorRunError(f"dataset.tokenizer {data['tokenizer']} is a VAE: MaskGIT needs a VQ tokenizer")
    expected = model_fingerprint(tokenizer) if tokenizer is not None else None
    dataset = TokenDataset(data["tokens"], expected_hash=expected)
    if tokenizer is None:
        log.info("dataset.tokenizer is not set: no previews, and the token folder's fingerprint is trusted")
    tree = generator_tree(config, dataset, data.get("tokenizer"), crop_size=tokenizer.config.crop_size if tokenizer else None)
    if tokenizer is not None:  # the previews decode the generator's ids with it
        check_pairing(tokenizer.config, GeneratorConfig.from_dict(tree), data["tokenizer"], config.experiment.name)
    classes = tree["model"]["generator"]["condition_num_classes"]
    task = GeneratorTask(tree, config.losses, tokenizer, preview_classes=_preview_classes(data, classes),
                         preview_seeds=data.get("preview_seeds"))
    return task, dataset


def generator_tree(config: TrainConfig, dataset: TokenDataset, tokenizer_path: str | None,
                   crop_size: int | None = None) -> dict:
    """The generator's config tree: the YAML's model section completed from the token folder."""
    model = copy.deepcopy(config.model)
    if "generator" not in model:
        raise GeneratorRunError("the config needs a model.generator section")
    gen, vq = model["generator"], model.setdefault("vq_model", {})
    _fill(vq, "codebook_size", dataset.codebook_size, "model.vq_model.codebook_size")
    _fill(vq, "num_latent_tokens", dataset.num_tokens, "model.vq_model.num_latent_tokens")
    _fill(gen, "image_seq_len", dataset.num_tokens, "model.generator.image_seq_len")
    num_classes = dataset.num_classes
    if gen.get("condition_num_classes") in (None, "auto"):
        gen["condition_num_classes"] = num_classes
    elif gen["condition_num_classes"] < num_classes:
        raise GeneratorRunError(f"model.generator.condition_num_classes is {gen['condition_num_classes']}, "
                                f"but the token folder has {num_classes} classes")
    if gen["condition_num_classes"] == 1:  # unconditional: nothing to drop, nothing to guide with
        gen.update(class_label_dropout=0.0, guidance_scale=0.0, guidance_decay="constant")
    dataset_section = {"class_names": dataset.class_names, "tokenizer_fingerprint": dataset.tokenizer_hash}
    if crop_size is not None:
        dataset_section["preprocessing"] = {"crop_size": crop_size}
    experiment = {"name": config.experiment.name}
    if tokenizer_path:
        experiment["tokenizer_checkpoint"] = str(tokenizer_path)
    return {"experiment": experiment, "model": model, "dataset": dataset_section}


def _fill(section: dict, key: str, value: int, name: str) -> None:
    if section.get(key) is not None and section[key] != value:
        raise GeneratorRunError(f"{name} is {section[key]} but the token folder has {value}; "
                                "leave it out to take the token folder's value")
    section[key] = value


def _preview_classes(data: dict, num_classes: int) -> list[int]:
    classes = data.get("preview_classes")
    if classes is None:
        count = min(MAX_PREVIEW_CLASSES, num_classes)
        return sorted({int(c) for c in np.linspace(0, num_classes - 1, count).round()})
    bad = [c for c in classes if not isinstance(c, int) or not 0 <= c < num_classes]
    if bad:
        raise GeneratorRunError(f"dataset.preview_classes: {bad[0]!r} is not a class id in [0, {num_classes - 1}]")
    return list(classes)
