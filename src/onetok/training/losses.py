"""Training losses: stage 1 (proxy codes), stage 2 / single stage (pixels + GAN), MaskGIT.

Numbers and formulas follow SPEC 3.2 and 4.2-4.4.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from onetok.training.discriminator import NLayerDiscriminator
from onetok.training.perceptual import PerceptualLoss, perceptual_in_use
from onetok.errors import LossConfigError


# --------------------------------------------------------------------------- GAN terms


def hinge_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


class LeCAM(nn.Module):
    """LeCAM regulariser: keeps D's batch-mean logits near the EMA of the other side's.

    penalty = relu(mean D(real) - ema_fake)^2 + relu(ema_real - mean D(fake))^2,
    computed with the EMAs as they were before this step, which then absorb this batch.
    """

    def __init__(self, decay: float = 0.999):
        super().__init__()
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def penalty(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> torch.Tensor:
        return F.relu(real_mean - self.ema_fake).pow(2) + F.relu(self.ema_real - fake_mean).pow(2)

    @torch.no_grad()
    def update(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> None:
        self.ema_real.lerp_(real_mean.detach().float(), 1.0 - self.decay)
        self.ema_fake.lerp_(fake_mean.detach().float(), 1.0 - self.decay)

    def forward(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
        real_mean, fake_mean = logits_real.mean(), logits_fake.mean()
        loss = self.penalty(real_mean, fake_mean)
        self.update(real_mean, fake_mean)
        return loss


# --------------------------------------------------------------------------- stage 1


class ProxyCodeLoss(nn.Module):
    """Stage 1: CE of the decoder's proxy-code logits against the teacher VQGAN's codes."""

    def __init__(self, quantizer_weight: float = 1.0):
        super().__init__()
        self.quantizer_weight = quantizer_weight

    def forward(
        self, logits: torch.Tensor, target_codes: torch.Tensor, quantizer_result: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """logits (B, V, h, w) or (B, V, L); target_codes (B, h*w) or (B, h, w) ids in [0, V)."""
        logits = logits.reshape(logits.shape[0], logits.shape[1], -1).float()
        targets = target_codes.reshape(target_codes.shape[0], -1).long()
        if logits.shape[0] != targets.shape[0] or logits.shape[2] != targets.shape[1]:
            raise LossConfigError(
                f"proxy-code logits {tuple(logits.shape)} do not match target codes {tuple(target_codes.shape)}"
            )
        ce = F.cross_entropy(logits, targets)
        quantizer_loss = self.quantizer_weight * quantizer_result["quantizer_loss"]
        total = ce + quantizer_loss
        logs = {"total_loss": total, "reconstruction_loss": ce, "quantizer_loss": quantizer_loss}
        logs.update(_optional_logs(quantizer_result, ("commitment_loss", "codebook_loss")))
        return total, _detached(logs)


# --------------------------------------------------------------------------- stage 2 / single stage


class ReconstructionLoss(nn.Module):
    """Pixel reconstruction + perceptual + quantizer (or KL) + hinge GAN with LeCAM.

    Argument names are the reference YAML's `losses` fields. Stage 2 defaults (SPEC 4.3);
    perceptual_loss 'auto' picks convnext_s when its weights are on disk, else the offline
    'inception' loss (see perceptual.py). The single-stage recipe uses perceptual
    'lpips-convnext_s-1.0-0.1', perceptual_weight 1.1, quantizer_weight 1.0,
    discriminator_weight 0.1, discriminator_start 200000; the VAE adds kl_weight 1e-6.

    Call forward(..., mode="generator") for the model's loss and mode="discriminator" for
    D's (on real images and detached reconstructions; it updates the LeCAM EMAs): going
    through forward lets a DDP-wrapped copy sync D.
    Losses are computed in float32 with autocast off.
    """

    def __init__(
        self,
        reconstruction_loss: str = "l2",
        reconstruction_weight: float = 1.0,
        perceptual_loss: str | nn.Module | None = "auto",
        perceptual_weight: float = 0.1,
        quantizer_weight: float = 0.0,
        discriminator_weight: float = 0.01,
        discriminator_factor: float = 1.0,
        discriminator_start: int = 20_000,
        lecam_regularization_weight: float = 0.001,
        lecam_ema_decay: float = 0.999,
        quantize_mode: str = "vq",
        kl_weight: float = 1e-6,
    ):
        super().__init__()
        if reconstruction_loss not in ("l1", "l2"):
            raise LossConfigError(f"reconstruction_loss must be 'l1' or 'l2', got {reconstruction_loss!r}")
        if quantize_mode not in ("vq", "vae"):
            raise LossConfigError(f"quantize_mode must be 'vq' or 'vae', got {quantize_mode!r}")
        self.reconstruction_loss = reconstruction_loss
        self.reconstruction_weight = reconstruction_weight
        self.perceptual_weight = perceptual_weight
        self.quantizer_weight = quantizer_weight
        self.discriminator_weight = discriminator_weight
        self.discriminator_factor = discriminator_factor
        self.discriminator_start = discriminator_start
        self.lecam_weight = lecam_regularization_weight
        self.quantize_mode = quantize_mode
        self.kl_weight = kl_weight

        if not perceptual_in_use(perceptual_loss, perceptual_weight):
            perceptual_loss = None
        elif isinstance(perceptual_loss, str):
            perceptual_loss = PerceptualLoss(perceptual_loss)
        self.perceptual = perceptual_loss
        self.discriminator = NLayerDiscriminator() if discriminator_weight > 0 else None
        self.lecam = LeCAM(lecam_ema_decay)

    def gan_factor(self, step: int) -> float:
        return self.discriminator_factor if step >= self.discriminator_start else 0.0

    def should_train_discriminator(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.discriminator_start

    def forward(
        self,
        images: torch.Tensor,
        reconstructions: torch.Tensor,
        extra: Mapping | object | None = None,
        step: int = 0,
        mode: str = "generator",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images, reconstructions (B, 3, H, W) in [0, 1].

        extra: the quantizer's result dict ('quantizer_loss', ...) for VQ; for the VAE the
        posterior (anything with .kl() -> (B, ...)) or a dict holding it under 'posterior'.
        """
        if mode not in ("generator", "discriminator"):
            raise LossConfigError(f"mode must be 'generator' or 'discriminator', got {mode!r}")
        if images.shape != reconstructions.shape:
            raise LossConfigError(
                f"images {tuple(images.shape)} and reconstructions {tuple(reconstructions.shape)} differ in shape"
            )
        with torch.autocast(device_type=images.device.type, enabled=False):
            images, reconstructions = images.float(), reconstructions.float()
            if mode == "generator":
                return self._generator_loss(images, reconstructions, extra, step)
            return self._discriminator_loss(images, reconstructions, step)

    def _generator_loss(self, images, reconstructions, extra, step):
        if self.reconstruction_loss == "l2":
            pixel = F.mse_loss(reconstructions, images)
        else:
            pixel = F.l1_loss(reconstructions, images)
        logs = {"reconstruction_loss": self.reconstruction_weight * pixel}
        total = logs["reconstruction_loss"]

        if self.perceptual is not None:
            logs["perceptual_loss"] = self.perceptual_weight * self.perceptual(images, reconstructions)
            total = total + logs["perceptual_loss"]

        if self.quantize_mode == "vq":
            quantizer_loss = _quantizer_loss(extra, images)
            logs["quantizer_loss"] = self.quantizer_weight * quantizer_loss
            logs.update(_optional_logs(extra, ("commitment_loss", "codebook_loss")))
            total = total + logs["quantizer_loss"]
        else:
            kl = _posterior(extra).kl()
            logs["kl_loss"] = self.kl_weight * kl.sum() / kl.shape[0]
            total = total + logs["kl_loss"]

        factor = self.gan_factor(step)
        logs["discriminator_factor"] = images.new_tensor(factor)
        if self.discriminator is not None and factor > 0:
            with _frozen(self.discriminator):
                gan_loss = generator_adversarial_loss(self.discriminator(reconstructions))
            logs["gan_loss"] = gan_loss
            logs["weighted_gan_loss"] = self.discriminator_weight * factor * gan_loss
            total = total + logs["weighted_gan_loss"]
        logs["total_loss"] = total
        return total, _detached(logs)

    def _discriminator_loss(self, images, reconstructions, step):
        if self.discriminator is None:
            raise LossConfigError("discriminator_weight is 0, so there is no discriminator to train")
        logits_real = self.discriminator(images.detach())
        logits_fake = self.discriminator(reconstructions.detach())
        hinge = self.gan_factor(step) * hinge_discriminator_loss(logits_real, logits_fake)
        lecam = self.lecam_weight * self.lecam(logits_real, logits_fake)
        total = hinge + lecam
        logs = {
            "discriminator_loss": total,
            "hinge_loss": hinge,
            "lecam_loss": lecam,
            "logits_real": logits_real.mean(),
            "logits_fake": logits_fake.mean(),
        }
        return total, _detached(logs)


@contextmanager
def _frozen(module: nn.Module):
    """Stop gradients reaching a module's parameters inside the block (its inputs still get them)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _quantizer_loss(extra, like: torch.Tensor) -> torch.Tensor:
    if isinstance(extra, Mapping) and "quantizer_loss" in extra:
        return extra["quantizer_loss"].float()
    if extra is None:
        return like.new_zeros(())
    raise LossConfigError("quantize_mode 'vq' needs the quantizer's result dict with a 'quantizer_loss'")


def _posterior(extra):
    if isinstance(extra, Mapping):
        extra = extra.get("posterior")
    if not callable(getattr(extra, "kl", None)):
        raise LossConfigError("quantize_mode 'vae' needs the posterior (an object with .kl()), or a dict with one")
    return extra


# --------------------------------------------------------------------------- MaskGIT


class MaskedTokenLoss(nn.Module):
    """MaskGIT loss: label-smoothed CE on all K positions, weight 1 on masked and
    `loss_weight_unmasked_token` on unmasked ones, normalised by the weights' sum."""

    def __init__(self, label_smoothing: float = 0.1, loss_weight_unmasked_token: float = 0.1):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.unmasked_weight = loss_weight_unmasked_token

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """logits (B, K, V), targets (B, K) ids, mask (B, K) True where the input was masked."""
        if logits.ndim != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
            raise LossConfigError(
                f"expected logits (B, K, V) with targets and mask (B, K), got {tuple(logits.shape)}, "
                f"{tuple(targets.shape)}, {tuple(mask.shape)}"
            )
        logits = logits.float()
        ce = F.cross_entropy(
            rearrange(logits, "b k v -> b v k"), targets, label_smoothing=self.label_smoothing, reduction="none"
        )
        masked = mask.float()
        weights = masked + self.unmasked_weight * (1.0 - masked)
        loss = (weights * ce).sum() / weights.sum().clamp_min(1e-8)
        correct = (logits.argmax(dim=-1) == targets).float()
        accuracy = ((correct * masked).sum(dim=1) / masked.sum(dim=1).clamp_min(1.0)).mean()
        return loss, {"loss": loss.detach(), "masked_accuracy": accuracy}


# --------------------------------------------------------------------------- helpers


def _optional_logs(result, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if not isinstance(result, Mapping):
        return {}
    return {k: result[k] for k in keys if k in result}


def _detached(logs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in logs.items()}
