"""Train the toy task in its own process (plain python or `accelerate launch`); used by the tests.

Each process writes its final weights (trained and EMA) to OUTPUT/rank-{i}.safetensors.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy import PhotoCrops, ToyTask, load_photos, toy_config  # noqa: E402

from onetok.training.trainer import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--photos", required=True, help=".npz written by toy.save_photos")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--discriminator", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()

    config = toy_config(args.output_dir, **dict(o.split("=", 1) for o in args.overrides))
    trainer = Trainer(config, ToyTask(discriminator=args.discriminator), PhotoCrops(load_photos(args.photos)),
                      resume=args.resume)
    trainer.train()
    model = trainer.task.unwrap()
    weights = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    weights |= {f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()}
    save_file(weights, Path(args.output_dir) / f"rank-{trainer.accelerator.process_index}.safetensors")


if __name__ == "__main__":
    main()
