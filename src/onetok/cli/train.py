"""`onetok train tokenizer|vqgan|generator CONFIG [key=value ...] [--resume]`."""
from __future__ import annotations

from pathlib import Path


def _dataset(config, train: bool = True):
    from ..data.sources import build_dataset
    from ..data.transforms import build_transform
    from ..training.sections import image_data

    data = image_data(config)
    if not data.train:
        raise ValueError("the config needs dataset.train: a folder, file list, .npy array or shard pattern")
    pre = data.preprocessing
    scale = pre.random_resized_crop_scale
    transform = build_transform(
        train, pre.crop_size, resize_shorter=pre.resize_shorter_edge, random_crop=pre.random_crop,
        random_flip=pre.random_flip, scale=tuple(scale) if scale else None,
    )
    # shards stream endlessly, each pass in a new order with new crops (the Trainer never restarts them)
    return build_dataset(Path(data.train).expanduser() if "://" not in data.train else data.train,
                         transform=transform, seed=config.experiment.seed, repeat=True,
                         shuffle_buffer=data.shuffle_buffer)


def run(args) -> int:
    from ..training.config import load_config
    from ..training.sections import check_sections
    from ..training.trainer import Trainer

    config = load_config(args.config, args.overrides)
    check_sections(config)  # every key and type, before anything is built or written
    if args.what == "generator":
        from ..training.generator_task import build_run

        if config.experiment.task != "maskgit":
            raise ValueError(f"`onetok train generator` runs experiment.task 'maskgit', "
                             f"the config says {config.experiment.task!r}")
        task, dataset = build_run(config)
    else:
        from ..training.tokenizer_task import build_task

        expected = ("vqgan",) if args.what == "vqgan" else ("titok_stage1", "titok_stage2", "titok_single_stage")
        if config.experiment.task not in expected:
            raise ValueError(f"`onetok train {args.what}` runs experiment.task in {expected}, "
                             f"the config says {config.experiment.task!r}")
        task, dataset = build_task(config), _dataset(config)
    trainer = Trainer(config, task, dataset, resume=args.resume)
    if trainer.resumed_from is not None:
        print(f"resuming {trainer.resumed_from} at step {trainer.state.step}")
    finished = trainer.train()
    print(f"{'finished' if finished else 'stopped (resume with --resume)'}: {config.experiment.output_dir}")
    return 0 if finished else 130


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a tokenizer, a 2D VQGAN teacher or a generator")
    p.add_argument("what", choices=["tokenizer", "vqgan", "generator"])
    p.add_argument("config", help="a YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.batch_size=8")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.set_defaults(func=run)
