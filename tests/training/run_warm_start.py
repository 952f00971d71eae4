"""Train a tiny single-stage TiTok with the warm start in its own process (`accelerate launch`).

Each process writes its final weights (trained and EMA) to OUTPUT/rank-{i}.safetensors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import PhotoCrops, load_photos  # noqa: E402

from onetok.training.config import config_from_dict  # noqa: E402
from onetok.training.tokenizer_task import build_task  # noqa: E402
from onetok.training.trainer import Trainer  # noqa: E402

VQ = {"codebook_size": 16, "token_size": 12, "use_l2_norm": True, "vit_enc_model_size": "tiny",
      "vit_dec_model_size": "tiny", "vit_enc_patch_size": 16, "vit_dec_patch_size": 16, "num_latent_tokens": 4}


class Images(Dataset):
    def __init__(self, crops: PhotoCrops):
        self.crops = crops

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.crops[index]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--photos", required=True, help=".npz written by toy.save_photos")
    args = parser.parse_args()
    config = config_from_dict({
        "experiment": {"task": "titok_single_stage", "output_dir": args.output_dir, "max_train_steps": 6,
                       "save_every": 6, "log_every": 1, "preview_every": 100, "log_with": "none", "seed": 3},
        "model": {"vq_model": VQ, "warm_start": {"continuous_steps": 4, "kmeans_steps": 2}},
        "losses": {"perceptual_loss": "none", "discriminator_weight": 0.0},
        "dataset": {"preprocessing": {"crop_size": 32}},
        "training": {"batch_size": 2, "use_ema": True},
    })
    trainer = Trainer(config, build_task(config), Images(PhotoCrops(load_photos(args.photos))))
    trainer.train()
    weights = {f"model.{k}": v.detach().clone() for k, v in trainer.task.unwrap().state_dict().items()}
    weights |= {f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()}
    save_file(weights, Path(args.output_dir) / f"rank-{trainer.accelerator.process_index}.safetensors")


if __name__ == "__main__":
    main()
