"""`onetok train tokenizer|vqgan|generator CONFIG [key=value ...] [--resume]`."""
from __future__ import annotations

from pathlib import Path


def _dataset(config, train: bool = True):
    from ..data.datasets import build_dataset
    from ..data.transforms import build_transform

    data = config.dataset
    if not data.get("train"):
        raise ValueError("the config needs dataset.train: a folder, file list, .npy array or shard pattern")
    crop = data.get("preprocessing", {}).get("crop_size", 256)
    pre = data.get("preprocessing", {})
    scale = pre.get("random_resized_crop_scale")
    transform = build_transform(
        train, crop, resize_shorter=pre.get("resize_shorter_edge"), random_crop=pre.get("random_crop", True),
        random_flip=pre.get("random_flip", True), scale=tuple(scale) if scale else None,
    )
    return build_dataset(Path(data["train"]).expanduser() if "://" not in data["train"] else data["train"],
                         transform=transform, seed=config.experiment.seed)


def run(args) -> int:
    from ..training.config import load_config
    from ..training.trainer import Trainer

    config = load_config(args.config, args.overrides)
    if args.what == "generator":
        from ..training.generator_task import build_run

        task, dataset = build_run(config)
    else:
        from ..training.tokenizer_task import build_task

        expected = ("vqgan",) if args.what == "vqgan" else ("titok_stage1", "titok_stage2", "titok_single_stage")
        if config.experiment.task not in expected:
            raise ValueError(f"`onetok train {args.what}` runs experiment.task in {expected}, "
                             f"the config says {config.experiment.task!r}")
        task, dataset = build_task(config), _dataset(config)
    finished = Trainer(config, task, dataset, resume=args.resume).train()
    print(f"{'finished' if finished else 'stopped (resume with --resume)'}: {config.experiment.output_dir}")
    return 0 if finished else 130


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a tokenizer, a 2D VQGAN teacher or a generator")
    p.add_argument("what", choices=["tokenizer", "vqgan", "generator"])
    p.add_argument("config", help="a YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.batch_size=8")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(func=run)
