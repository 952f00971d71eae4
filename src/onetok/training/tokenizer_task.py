"""Tokenizer training tasks: TiTok stage 1, stage 2, single stage, and the 2D VQGAN teacher.

Each task tells the Trainer what to build and how to compute one step's losses; the
recipes' numbers live in configs/*.yaml (SPEC 4.2-4.4).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..data.images import make_grid
from ..evaluation.codebook import codebook_summary
from ..models import MaskGITVQGAN, TiTok
from ..pretrained import read_state_dict, weights_file
from .config import TrainConfig
from .losses import ProxyCodeLoss, ReconstructionLoss
from .trainer import Task, TrainingError
from .warm_start import CodebookSeeder, WarmStartConfig, initialise

TASKS = ("titok_stage1", "titok_stage2", "titok_single_stage", "vqgan")
TOKEN_DROP_DISTRIBUTIONS = ("uniform", "short")


@dataclass
class TokenDropConfig:
    """`model.token_drop`: tail-token drop, so one model decodes any prefix of its K tokens.

    Each sample keeps its first k tokens, k drawn in [min_tokens, max_tokens (default K)]:
    "uniform", or "short" (p(k) ~ 1/k, weighted toward short prefixes); a further
    `full_length_fraction` of the samples keeps all K. The rest become the decoder's null token.
    """

    min_tokens: int = 1
    max_tokens: int | None = None
    distribution: str = "uniform"
    full_length_fraction: float = 0.0

    @classmethod
    def from_dict(cls, values: dict, num_latent_tokens: int) -> "TokenDropConfig":
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            unknown = sorted(set(values) - known) if isinstance(values, dict) else values
            raise TrainingError(f"model.token_drop: unknown keys {unknown}; known: {sorted(known)}")
        config = cls(**values)
        config.max_tokens = num_latent_tokens if config.max_tokens is None else config.max_tokens
        if not 1 <= config.min_tokens <= config.max_tokens <= num_latent_tokens:
            raise TrainingError(f"model.token_drop needs 1 <= min_tokens <= max_tokens <= {num_latent_tokens} "
                                f"(num_latent_tokens), got {config.min_tokens}..{config.max_tokens}")
        if config.distribution not in TOKEN_DROP_DISTRIBUTIONS:
            raise TrainingError(f"model.token_drop.distribution must be one of {TOKEN_DROP_DISTRIBUTIONS}, "
                                f"got {config.distribution!r}")
        if not 0.0 <= config.full_length_fraction <= 1.0:
            raise TrainingError("model.token_drop.full_length_fraction must lie in [0, 1]")
        return config

    def keep_mask(self, batch_size: int, num_latent_tokens: int, device) -> torch.Tensor:
        """(B, K) bool, True on each sample's kept prefix; drawn from the global RNG (resumes exactly)."""
        lengths = torch.arange(self.min_tokens, self.max_tokens + 1, dtype=torch.float64)
        weights = torch.ones_like(lengths) if self.distribution == "uniform" else 1.0 / lengths
        k = lengths[torch.multinomial(weights, batch_size, replacement=True)].long()
        full = torch.rand(batch_size) < self.full_length_fraction
        k = torch.where(full, num_latent_tokens, k)
        return (torch.arange(num_latent_tokens)[None, :] < k[:, None]).to(device)


def titok_tree(config: TrainConfig, **vq: object) -> tuple[dict, TokenDropConfig | None]:
    """The run's TiTok config tree (`vq` fixed) and its tail-token drop.

    `model.token_drop` switches the model's null token on (`variable_length`).
    """
    tree = model_tree(config)
    tree["model"]["vq_model"].update(vq)
    values = config.model.get("token_drop")
    if values is None:
        return tree, None
    tree["model"]["vq_model"]["variable_length"] = True
    return tree, TokenDropConfig.from_dict(values, tree["model"]["vq_model"].get("num_latent_tokens", 32))


class _TokenDropMixin:
    token_drop: TokenDropConfig | None = None

    def keep_mask(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
        """A training batch's (B, K) keep mask; None without token drop or while evaluating (full length)."""
        if self.token_drop is None or not model.training:
            return None
        k = self.unwrap().config.num_latent_tokens
        return self.token_drop.keep_mask(images.shape[0], k, images.device)


def load_matching(titok: TiTok, folder: Path) -> list[str]:
    """Copy the weights of `folder` whose names and shapes match; return the names left as initialised."""
    state = read_state_dict(weights_file(folder))
    own = titok.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise TrainingError(f"model.init_weight {folder}: no weight matches this model's layout")
    titok.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))


def freeze_encoder_side(titok: TiTok) -> None:
    """Encoder, latent tokens and codebook frozen: every image keeps the ids of the loaded weights, so a
    generator trained on them stays valid. Frozen parameters and an input without grad: autograd
    records nothing for the encoder."""
    for part in (titok.encoder, titok.quantize):
        part.requires_grad_(False)
    titok.latent_tokens.requires_grad_(False)


def model_tree(config: TrainConfig) -> dict:
    """The reference config tree ({model: {vq_model}, dataset: {preprocessing}}) of the run.

    Only `model.vq_model` describes the model; the recipe's keys beside it (init_weight, teacher,
    warm_start, token_drop) stay out of the config.json the run exports.
    """
    tree = {"model": {"vq_model": copy.deepcopy(config.model.get("vq_model", {}))}}
    crop = config.dataset.get("preprocessing", {}).get("crop_size", config.dataset.get("crop_size", 256))
    tree["dataset"] = {"preprocessing": {"crop_size": crop}}
    return tree


def codebook_logs(quantizer_result) -> dict[str, float]:
    """This batch's codebook usage: a collapsing codebook shows here first."""
    if not isinstance(quantizer_result, dict) or "min_encoding_indices" not in quantizer_result:
        return {}
    ids = quantizer_result["min_encoding_indices"]
    usage = codebook_summary(torch.bincount(ids.flatten(), minlength=int(ids.max()) + 1))
    return {"codes_used": usage["used_codes"], "code_perplexity": usage["perplexity"]}


class _ReconstructionTask(_TokenDropMixin, Task):
    """Shared by the pixel-space tasks: reconstruction loss, optional discriminator, previews."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.loss = ReconstructionLoss(**config.losses)
        self.discriminator_start = self.loss.discriminator_start
        self._reconstructions: list[torch.Tensor] = []

    def loss_models(self) -> dict[str, nn.Module]:
        # the loss module owns the discriminator; it is trained as the "discriminator" entry
        return {"discriminator": self.loss} if self.loss.discriminator is not None else {"loss": self.loss}

    def reconstruct(self, model: nn.Module, images: torch.Tensor, step: int):
        return model(images)

    def export(self, output_dir: Path):
        self.unwrap().save_pretrained(output_dir)

    def training_step(self, batch, step):
        images = batch["image"]
        reconstructions, extra = self.reconstruct(self.models["model"], images, step)
        if self.loss.discriminator is not None:
            self._reconstructions.append(reconstructions.detach())
        loss_fn = self.unwrap("discriminator") if "discriminator" in self.models else self.models["loss"]
        loss, logs = loss_fn(images, reconstructions, extra, step=step, mode="generator")
        return loss, logs | codebook_logs(extra)

    def discriminator_step(self, batch, step):
        reconstructions = self._reconstructions.pop(0) if self._reconstructions else None
        if reconstructions is None or not self.loss.should_train_discriminator(step):
            self._reconstructions.clear()
            return None
        return self.models["discriminator"](batch["image"], reconstructions, step=step, mode="discriminator")

    @torch.no_grad()
    def preview(self, batch, step):
        images = batch["image"][:8]
        reconstructions, _ = self.reconstruct(self.unwrap(), images, step)
        return make_grid(torch.cat([images, reconstructions.float().clamp(0, 1)]), ncol=len(images))


class SingleStageTask(_ReconstructionTask):
    """TiTok whose decoder outputs pixels (vq8k / VAE recipe, and our CPU quickstart).

    `model.warm_start` (see training/warm_start.py) adds the short-budget warm start;
    `model.freeze_encoder` (with `model.init_weight`) trains only the decoder side.
    """

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        warm_start = config.model.get("warm_start")
        self.warm_start = WarmStartConfig.from_dict(warm_start) if warm_start is not None else None
        self.seeder = None
        if self.warm_start is not None and self.warm_start.continuous_steps:
            self.seeder = CodebookSeeder(self.warm_start, config.experiment.seed)

    def build_models(self):
        tree, self.token_drop = titok_tree(self.config, finetune_decoder=False, is_legacy=False)
        self.titok = TiTok.from_config(tree)
        if self.warm_start is not None:
            initialise(self.titok, self.warm_start)
        init = self.config.model.get("init_weight")
        if init:  # fine-tune from a trained model; new parts (null token, another head) keep their init
            fresh = load_matching(self.titok, Path(init))
            if fresh:
                print(f"model.init_weight {init}: newly initialised {', '.join(fresh)}")
        if self.config.model.get("freeze_encoder"):
            if not init:
                raise TrainingError("model.freeze_encoder needs model.init_weight: the run whose ids to keep")
            freeze_encoder_side(self.titok)
        if self.titok.config.is_vae:
            self.seeder = None  # no codebook to seed: a VAE trains continuously from the start
        return {"model": self.titok, **self.loss_models()}

    def reconstruct(self, model: nn.Module, images: torch.Tensor, step: int):
        keep = self.keep_mask(model, images)
        if self.seeder is None:
            return model(images, keep=keep)
        if not self.seeder.quantize(step):
            reconstructions, extra = model(images, quantize=False, keep=keep)
            if model.training:
                self.seeder.collect(extra.pop("latents"), step, self.accelerator)
            return reconstructions, extra
        if self.seeder.latents:  # first quantized step: seed the codebook from the collected latents
            self.seeder.seed_codebook(self.unwrap(), self.accelerator, self.ema)
        return model(images, keep=keep)

    def stateful_objects(self):
        return {"codebook_seeder": self.seeder} if self.seeder is not None else {}


class Stage2Task(SingleStageTask):
    """Decoder fine-tuning through the MaskGIT-VQGAN pixel decoder; encoder side frozen."""

    def build_models(self):
        tree, self.token_drop = titok_tree(self.config, finetune_decoder=True, is_legacy=True)
        titok = TiTok.from_config(tree)
        init = self.config.model.get("init_weight")
        if not init:
            raise TrainingError("stage 2 needs model.init_weight: the stage-1 checkpoint folder")
        stage1 = read_state_dict(weights_file(Path(init)))
        teacher = MaskGITVQGAN.from_pretrained(self.config.model.get("teacher"))
        state = {**stage1,
                 **{f"pixel_decoder.{k}": v for k, v in teacher.decoder.state_dict().items()},
                 "pixel_quantize.embedding.weight": teacher.quantize.embedding.weight}
        own = titok.state_dict()
        if "decoder.null_token" in own:  # new in stage 2 when stage 1 trained without token drop
            state.setdefault("decoder.null_token", own["decoder.null_token"])
        missing = set(titok.state_dict()) - set(state)
        if missing:
            raise TrainingError(f"stage-1 + teacher weights do not cover the stage-2 model: {sorted(missing)[:3]}")
        titok.load_state_dict({k: state[k] for k in titok.state_dict()})
        freeze_encoder_side(titok)
        return {"model": titok, **self.loss_models()}


class Stage1Task(_TokenDropMixin, Task):
    """Proxy codes: the decoder predicts a frozen MaskGIT-VQGAN's code at each grid position."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.loss = ProxyCodeLoss(config.losses.get("quantizer_weight", 1.0))

    def build_models(self):
        tree, self.token_drop = titok_tree(self.config, finetune_decoder=False, is_legacy=True)
        teacher_path = self.config.model.get("teacher")
        return {"model": TiTok.from_config(tree), "teacher": MaskGITVQGAN.from_pretrained(teacher_path)}

    def training_step(self, batch, step):
        images = batch["image"]
        with torch.no_grad():
            codes = self.models["teacher"].encode(images)
        model = self.models["model"]
        logits, result = model(images, keep=self.keep_mask(model, images))
        loss, logs = self.loss(logits, codes, result)
        return loss, logs | codebook_logs(result)

    @torch.no_grad()
    def preview(self, batch, step):
        # stage-1 reconstructions: argmax proxy codes decoded by the frozen teacher (SPEC 5.3)
        images = batch["image"][:8]
        logits, _ = self.unwrap()(images)
        recon = self.models["teacher"].decode_tokens(logits.argmax(dim=1).flatten(1)).clamp(0, 1)
        return make_grid(torch.cat([images, recon]), ncol=len(images))

    def export(self, output_dir: Path):
        self.unwrap().save_pretrained(output_dir)


class VQGANTask(_ReconstructionTask):
    """A 2D MaskGIT-VQGAN trained here, the stage-1 teacher for users without the released file."""

    def build_models(self):
        vqgan_config = dict(self.config.model.get("vqgan", {}))
        self.vqgan = MaskGITVQGAN.from_config(vqgan_config)
        return {"model": self.vqgan, **self.loss_models()}


def build_task(config: TrainConfig) -> Task:
    tasks = {"titok_stage1": Stage1Task, "titok_stage2": Stage2Task,
             "titok_single_stage": SingleStageTask, "vqgan": VQGANTask}
    name = config.experiment.task
    if name not in tasks:
        raise TrainingError(f"experiment.task must be one of {TASKS}, got {name!r}")
    return tasks[name](config)
