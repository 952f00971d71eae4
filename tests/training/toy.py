"""A tiny Task for trainer tests: a conv autoencoder (with dropout, so the RNG matters) on random crops
of real photos, optionally with a patch discriminator and a LeCAM-like running mean as loss state."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

from onetok.data.images import make_grid, pil_to_tensor, resize_center_crop
from onetok.training.config import TrainConfig, config_from_dict
from onetok.training.trainer import Task




def save_photos(photos: list[np.ndarray], path: Path) -> Path:
    """Photos for a subprocess, so that it need not import scikit-image / scikit-learn (seconds each)."""
    np.savez(path, *photos)
    return path


def load_photos(path: Path | str) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


class PhotoCrops(Dataset):
    """Random `size` crops with random flips of the photos resized to `base` (augmentation uses torch's RNG)."""

    def __init__(self, photos: list[np.ndarray], size: int = 32, base: int = 48):
        self.images = [pil_to_tensor(resize_center_crop(Image.fromarray(p), base)) for p in photos]
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index]
        top, left = torch.randint(0, image.shape[-1] - self.size + 1, (2,)).tolist()
        crop = image[:, top : top + self.size, left : left + self.size]
        return crop.flip(-1) if torch.rand(()) < 0.5 else crop


class Autoencoder(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 4, stride=2, padding=1), nn.GELU(),
                                     nn.Conv2d(width, width, 3, padding=1))
        self.norm = nn.GroupNorm(4, width)
        self.dropout = nn.Dropout(0.1)
        self.decoder = nn.ConvTranspose2d(width, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.dropout(self.norm(self.encoder(x))))


class RunningMean:
    """Stateful loss helper, like LeCAM's EMA of discriminator logits."""

    def __init__(self):
        self.value = 0.0

    def update(self, x: float) -> None:
        self.value = 0.9 * self.value + 0.1 * x

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


class ToyTask(Task):
    def __init__(self, discriminator: bool = False, discriminator_start: int = 0, stop_at: int | None = None,
                 stop_signal: int = signal.SIGTERM):
        self.use_discriminator = discriminator
        self.discriminator_start = discriminator_start
        self.stop_at = stop_at  # signal ourselves during this step: Ctrl-C (SIGINT) or preemption (SIGTERM)
        self.stop_signal = stop_signal
        self.lecam = RunningMean()

    def build_models(self) -> dict[str, nn.Module]:
        models = {"model": Autoencoder()}
        if self.use_discriminator:
            models["discriminator"] = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2), nn.LeakyReLU(0.1), nn.Conv2d(8, 1, 3))
        return models

    def training_step(self, batch: torch.Tensor, step: int):
        if step == self.stop_at:
            os.kill(os.getpid(), self.stop_signal)
            self.stop_at = None  # once: a second Ctrl-C would abort without saving
        recon = self.models["model"](batch)
        mse = F.mse_loss(recon, batch)
        loss = mse
        if self.use_discriminator and step >= self.discriminator_start:
            loss = loss - 0.01 * self.models["discriminator"](recon).mean()
        return loss, {"mse": mse.item()}

    def discriminator_step(self, batch: torch.Tensor, step: int):
        if not self.use_discriminator or step < self.discriminator_start:
            return None
        with torch.no_grad():
            fake = self.unwrap()(batch)
        real_logits, fake_logits = self.models["discriminator"](torch.cat([batch, fake])).chunk(2)
        hinge = 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
        loss = hinge + 0.001 * (real_logits.mean() - self.lecam.value) ** 2
        self.lecam.update(real_logits.mean().item())
        return loss, {"hinge": hinge.item()}

    def preview(self, batch: torch.Tensor, step: int) -> torch.Tensor:
        recon = self.unwrap()(batch).clamp(0, 1)
        return make_grid(torch.cat([batch, recon]), ncol=len(batch))

    def export(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_file(self.unwrap().state_dict(), output_dir / "model.safetensors")

    def stateful_objects(self) -> dict[str, Any]:
        return {"lecam": self.lecam}


def toy_config(output_dir: Path | str, **overrides: Any) -> TrainConfig:
    """A small run: override with keys like `experiment.max_train_steps=20`."""
    tree = {
        "experiment": {"output_dir": str(output_dir), "max_train_steps": 8, "save_every": 4, "log_every": 1,
                       "preview_every": 3, "keep_last": 2, "seed": 7, "log_with": "tensorboard"},
        "optimizer": {"lr": 3e-3, "betas": [0.9, 0.99], "weight_decay": 1e-4},
        "lr_scheduler": {"warmup_steps": 2, "end_lr": 1e-4},
        "training": {"batch_size": 2, "gradient_accumulation_steps": 2, "max_grad_norm": 1.0,
                     "use_ema": True, "ema_decay": 0.999},
    }
    return config_from_dict(tree, [f"{k}={v}" for k, v in overrides.items()])
